//! The TOML shapes as a school writes them: what serde reads (unknown keys
//! and wrong types are caught here, with a span) and what the effective
//! configuration is written back as (`render.rs`). Each setting that takes
//! one of a few words is an enum here, and its words are written once, in its
//! serde attributes: compiling, rendering and the error messages all use them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use toml::Spanned;

use crate::policy::category::CategoryDecl;
use crate::store::Privacy;

/// A setting's fixed set of words, each an enum variant named by serde.
pub(super) trait Words: Copy + Serialize + DeserializeOwned + 'static {
    /// Every variant, in the order messages list them.
    const ALL: &'static [Self];

    /// The word a file uses for this variant.
    fn word(self) -> String {
        match toml::Value::try_from(self) {
            Ok(toml::Value::String(word)) => word,
            _ => unreachable!("a Words enum serialises as a string"),
        }
    }

    /// The variant `text` names, if any.
    fn from_word(text: &str) -> Option<Self> {
        Self::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(text)).ok()
    }

    /// `"a", "b", "c"` (with `separator` between), for messages.
    fn listed(separator: &str) -> String {
        Self::ALL.iter().map(|variant| format!("{:?}", variant.word())).collect::<Vec<_>>().join(separator)
    }
}

/// A setting written as one of a few words. A word that is not one of them
/// is kept as written, so compiling can say so in the setting's own terms and
/// in the same order as every other check (serde's message would name no
/// key and come first).
pub(super) enum Word<T> {
    Known(T),
    Other(String),
}

impl<'de, T: Words> Deserialize<'de> for Word<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(T::from_word(&text).map_or(Word::Other(text), Word::Known))
    }
}

impl<T: Words> Serialize for Word<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Word::Known(known) => known.serialize(serializer),
            Word::Other(text) => serializer.serialize_str(text),
        }
    }
}

/// `[groups.*] youtube`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Youtube {
    Strict,
    Moderate,
    Off,
}

impl Words for Youtube {
    const ALL: &'static [Self] = &[Youtube::Strict, Youtube::Moderate, Youtube::Off];
}

/// `[groups.*] block_answer` (a block page also takes its addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub(super) enum BlockAnswerKind {
    #[serde(rename = "nxdomain")]
    NxDomain,
    #[serde(rename = "null")]
    Null,
    #[serde(rename = "block-page")]
    BlockPage,
}

impl Words for BlockAnswerKind {
    const ALL: &'static [Self] = &[BlockAnswerKind::NxDomain, BlockAnswerKind::Null, BlockAnswerKind::BlockPage];
}

/// `[log] guest_privacy`: the query log's own setting, written with its words.
impl Words for Privacy {
    const ALL: &'static [Self] = &[Privacy::Full, Privacy::Truncate, Privacy::Hash];
}

impl Words for RawMode {
    const ALL: &'static [Self] = &[RawMode::Recursive, RawMode::Forward];
}

/// How a forwarding server is reached (`[[upstream.servers]] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardProtocol {
    /// UDP, retried over TCP when the answer is truncated.
    Udp,
    Tcp,
    Tls,
    Https,
}

/// The DHCP leases file format (`[log] leases_format`, `--leases-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeasesFormat {
    Dnsmasq,
    Isc,
}

impl std::str::FromStr for LeasesFormat {
    type Err = String;

    /// `dnsmasq` or `isc` (the config's `leases_format` and the CLI's `--leases-format`).
    fn from_str(text: &str) -> Result<LeasesFormat, String> {
        LeasesFormat::from_word(text).ok_or_else(|| format!("{text:?} is not {}", LeasesFormat::listed(" or ")))
    }
}

impl Words for ForwardProtocol {
    const ALL: &'static [Self] =
        &[ForwardProtocol::Udp, ForwardProtocol::Tcp, ForwardProtocol::Tls, ForwardProtocol::Https];
}

impl Words for LeasesFormat {
    const ALL: &'static [Self] = &[LeasesFormat::Dnsmasq, LeasesFormat::Isc];
}

/// `[[categories.custom]]` as written: `CategoryDecl` reads it; this writes
/// it back in the same keys.
fn serialize_custom<S: Serializer>(custom: &[Spanned<CategoryDecl>], serializer: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Custom<'a> {
        id: &'a str,
        bit: u8,
        name: &'a str,
        description: &'a str,
        kind: &'a str,
        answers: &'a str,
        locked: bool,
        blocked_for: &'a [String],
    }
    serializer.collect_seq(custom.iter().map(|decl| {
        let decl = decl.get_ref();
        Custom {
            id: &decl.id,
            bit: decl.bit,
            name: &decl.name,
            description: &decl.description,
            kind: decl.kind.as_str(),
            answers: &decl.answers,
            locked: decl.locked,
            blocked_for: &decl.blocked_for,
        }
    }))
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_data_dir")]
    pub(super) data_dir: PathBuf,
    /// The school's time zone (schedules), an IANA name; Europe/London when absent.
    pub(super) timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dns: RawDns,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) cache: RawCache,
    #[serde(default)]
    pub(super) rate_limit: RawRateLimit,
    #[serde(default)]
    pub(super) lists: RawLists,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) categories: RawCategories,
    #[serde(default)]
    pub(super) groups: BTreeMap<Spanned<String>, RawGroup>,
    #[serde(default)]
    pub(super) networks: Vec<RawNetwork>,
    #[serde(default)]
    pub(super) dashboard: super::dashboard::RawDashboard,
    #[serde(default)]
    pub(super) metrics: super::metrics::RawMetrics,
    #[serde(default)]
    pub(super) alerts: super::alerts::RawAlerts,
    #[serde(default)]
    pub(super) block_page: super::block_page::RawBlockPage,
    #[serde(default)]
    pub(super) selftest: super::selftest::RawSelftest,
    #[serde(default)]
    pub(super) school: super::school::RawSchool,
    #[serde(default)]
    pub(super) sync: super::sync::RawSync,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    /// Read as text so a bad entry gets a plain message quoting it.
    pub(super) listen: Spanned<Vec<Spanned<String>>>,
    /// Networks may cover the whole address space (an open resolver).
    #[serde(default)]
    pub(super) allow_open_resolver: bool,
    #[serde(default = "default_tcp_max_connections")]
    pub(super) tcp_max_connections: Spanned<usize>,
    #[serde(default = "default_tcp_per_client")]
    pub(super) tcp_per_client: Spanned<usize>,
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            listen: Spanned::new(0..0, vec![Spanned::new(0..0, "127.0.0.1:5353".to_string())]),
            allow_open_resolver: false,
            tcp_max_connections: default_tcp_max_connections(),
            tcp_per_client: default_tcp_per_client(),
        }
    }
}

/// Enough for every device of a large school to hold a TCP connection for a
/// truncated answer at once; each costs a task and two small buffers.
fn default_tcp_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 1_000)
}
/// A stub resolver needs one or two TCP connections; 16 leaves room for a
/// busy machine while keeping one client from holding many.
fn default_tcp_per_client() -> Spanned<usize> {
    Spanned::new(0..0, 16)
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    #[serde(default)]
    pub(super) description: String,
    /// Categories kept from the group: ids, "uksic", "bypass", "default"
    /// (the shipped policy for this group), and "!id" to take one away.
    pub(super) block: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<RawOverride>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<RawOverride>>,
    pub(super) block_answer: Option<Spanned<Word<BlockAnswerKind>>>,
    pub(super) block_page_ipv4: Option<Ipv4Addr>,
    pub(super) block_page_ipv6: Option<Ipv6Addr>,
    pub(super) safesearch: Option<bool>,
    pub(super) youtube: Option<Spanned<Word<Youtube>>>,
    pub(super) bypass: Option<bool>,
    /// Weekly windows in which a category is not blocked for the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) schedule: Vec<Spanned<RawSchedule>>,
}

/// An allow or deny override: a plain name (`"bbc.co.uk"`), or a table with
/// a reason and an expiry
/// (`{ name = "bbc.co.uk", reason = "Year 9 project", until = "2026-12-07T16:00:00Z" }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawOverride {
    Name(String),
    Entry(RawOverrideEntry),
}

impl RawOverride {
    pub(super) fn name(&self) -> &str {
        match self {
            RawOverride::Name(name) => name,
            RawOverride::Entry(entry) => &entry.name,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverrideEntry {
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(super) reason: String,
    /// RFC 3339, e.g. "2026-12-07T16:00:00Z".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) until: Option<String>,
}

impl<'de> Deserialize<'de> for RawOverride {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawOverride;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a domain name, or a table { name = \"bbc.co.uk\", reason = \"...\", until = \"2026-12-07T16:00:00Z\" }")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RawOverride, E> {
                Ok(RawOverride::Name(text.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawOverride, A::Error> {
                RawOverrideEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawOverride::Entry)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for RawOverride {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RawOverride::Name(name) => serializer.serialize_str(name),
            RawOverride::Entry(entry) => entry.serialize(serializer),
        }
    }
}

/// `[[groups.<g>.schedule]]`: `category` is not blocked for the group on
/// `days` from `from` to `to` (local time in the configured time zone).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) category: Spanned<String>,
    pub(super) days: Spanned<Vec<Spanned<String>>>,
    pub(super) from: Spanned<String>,
    pub(super) to: Spanned<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLists {
    #[serde(default = "default_lists_dir")]
    pub(super) dir: Spanned<PathBuf>,
    #[serde(default)]
    pub(super) enable: Vec<String>,
    #[serde(default)]
    pub(super) disable: Vec<String>,
    #[serde(default = "default_update_hours")]
    pub(super) update_hours: u64,
    #[serde(default = "default_download_max_mb")]
    pub(super) download_max_mb: u64,
    #[serde(default = "default_download_timeout")]
    pub(super) download_timeout_secs: u64,
}

impl Default for RawLists {
    fn default() -> Self {
        RawLists {
            dir: default_lists_dir(),
            enable: Vec::new(),
            disable: Vec::new(),
            update_hours: default_update_hours(),
            download_max_mb: default_download_max_mb(),
            download_timeout_secs: default_download_timeout(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    #[serde(default = "default_true")]
    pub(super) enabled: bool,
    #[serde(default = "default_log_database")]
    pub(super) database: PathBuf,
    #[serde(default = "default_retention_days")]
    pub(super) retention_days: Spanned<u32>,
    #[serde(default = "default_privacy")]
    pub(super) guest_privacy: Spanned<Word<Privacy>>,
    #[serde(default = "default_private_groups")]
    pub(super) private_groups: Vec<String>,
    /// A DHCP leases file read on a schedule to name devices.
    pub(super) leases_file: Option<PathBuf>,
    #[serde(default = "default_leases_format")]
    pub(super) leases_format: Spanned<Word<LeasesFormat>>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            enabled: true,
            database: default_log_database(),
            retention_days: default_retention_days(),
            guest_privacy: default_privacy(),
            private_groups: default_private_groups(),
            leases_file: None,
            leases_format: default_leases_format(),
        }
    }
}

fn default_log_database() -> PathBuf {
    PathBuf::from("hedgerow.db")
}
fn default_retention_days() -> Spanned<u32> {
    Spanned::new(0..0, 30)
}
fn default_privacy() -> Spanned<Word<Privacy>> {
    Spanned::new(0..0, Word::Known(Privacy::Full))
}
fn default_private_groups() -> Vec<String> {
    vec!["guest".to_string()]
}
fn default_leases_format() -> Spanned<Word<LeasesFormat>> {
    Spanned::new(0..0, Word::Known(LeasesFormat::Dnsmasq))
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCategories {
    /// Categories to lock for every group, on top of those locked by default.
    #[serde(default)]
    pub(super) lock: Vec<Spanned<String>>,
    /// The school's own categories, declared like lists/categories.toml's.
    #[serde(default, serialize_with = "serialize_custom", skip_serializing_if = "Vec::is_empty")]
    pub(super) custom: Vec<Spanned<CategoryDecl>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    pub(super) name: Spanned<String>,
    /// Read as text so a bad subnet gets a plain message quoting it.
    pub(super) cidrs: Spanned<Vec<Spanned<String>>>,
    pub(super) group: Spanned<String>,
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMode {
    #[default]
    Recursive,
    Forward,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(default = "default_mode")]
    pub(super) mode: Spanned<RawMode>,
    #[serde(default = "default_timeout_ms")]
    pub(super) timeout_ms: u64,
    pub(super) root_hints: Option<Spanned<Vec<IpAddr>>>,
    #[serde(default = "no_servers", skip_serializing_if = "no_entries")]
    pub(super) servers: Spanned<Vec<RawServer>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) conditional: Vec<RawConditional>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            mode: default_mode(),
            timeout_ms: default_timeout_ms(),
            root_hints: None,
            servers: no_servers(),
            conditional: Vec::new(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) address: Spanned<String>,
    #[serde(default = "default_protocol")]
    pub(super) protocol: ForwardProtocol,
    pub(super) tls_name: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConditional {
    pub(super) zone: Spanned<String>,
    pub(super) servers: Spanned<Vec<RawServer>>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    #[serde(default = "default_cache_size")]
    pub(super) size: Spanned<usize>,
    #[serde(default = "default_cache_memory_mb")]
    pub(super) memory_mb: Spanned<u64>,
    #[serde(default)]
    pub(super) min_ttl_secs: u64,
    #[serde(default = "default_max_ttl")]
    pub(super) max_ttl_secs: Spanned<u64>,
    #[serde(default = "default_negative_max_ttl")]
    pub(super) negative_max_ttl_secs: u64,
    #[serde(default = "default_serve_stale")]
    pub(super) serve_stale_secs: u64,
    #[serde(default = "default_stale_answer_after")]
    pub(super) stale_answer_after_ms: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            size: default_cache_size(),
            memory_mb: default_cache_memory_mb(),
            min_ttl_secs: 0,
            max_ttl_secs: default_max_ttl(),
            negative_max_ttl_secs: default_negative_max_ttl(),
            serve_stale_secs: default_serve_stale(),
            stale_answer_after_ms: default_stale_answer_after(),
        }
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub(super) queries_per_second: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) burst: Option<u32>,
    #[serde(default = "default_true")]
    pub(super) exempt_loopback: bool,
    #[serde(default = "default_ipv6_prefix")]
    pub(super) ipv6_prefix: Spanned<u8>,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            queries_per_second: None,
            burst: None,
            exempt_loopback: true,
            ipv6_prefix: default_ipv6_prefix(),
        }
    }
}

/// A /64 is the smallest IPv6 subnet SLAAC hands out: a device can take any
/// address in it, so only the prefix identifies it.
fn default_ipv6_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}

fn default_lists_dir() -> Spanned<PathBuf> {
    Spanned::new(0..0, PathBuf::from("lists"))
}
fn default_update_hours() -> u64 {
    24
}
fn default_download_max_mb() -> u64 {
    200
}
fn default_download_timeout() -> u64 {
    60
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_mode() -> Spanned<RawMode> {
    Spanned::new(0..0, RawMode::Recursive)
}
fn no_servers() -> Spanned<Vec<RawServer>> {
    Spanned::new(0..0, Vec::new())
}
fn no_entries(servers: &Spanned<Vec<RawServer>>) -> bool {
    servers.get_ref().is_empty()
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_protocol() -> ForwardProtocol {
    ForwardProtocol::Udp
}
fn default_cache_size() -> Spanned<usize> {
    Spanned::new(0..0, 100_000)
}
/// 128 MB holds the default 100,000 entries at a typical answer's size (a
/// few records, about 1 KB with its encoded copy and bookkeeping), and caps
/// what a client asking for many large answers can make the cache hold.
fn default_cache_memory_mb() -> Spanned<u64> {
    Spanned::new(0..0, 128)
}
fn default_max_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 86_400)
}
fn default_negative_max_ttl() -> u64 {
    3_600
}
fn default_serve_stale() -> u64 {
    86_400
}
/// Stub resolvers commonly retry or give up after about a second (Windows
/// and Chrome after 1 s); RFC 8767 suggests 1.8 s, which many would not wait.
fn default_stale_answer_after() -> u64 {
    400
}
fn default_true() -> bool {
    true
}
