//! Compiling the TOML shapes (`shapes.rs`) into [`Config`]. Serde catches
//! unknown keys and wrong types (with a span); the checks here catch what
//! serde cannot (a network naming a group that does not exist, a forwarder
//! without a TLS name), using `Spanned` values for the line.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::shapes::{
    BlockAnswerKind, RawCache, RawConfig, RawDns, RawGroup, RawLog, RawMode, RawNetwork, RawOverride, RawSchedule,
    RawServer, RawUpstream, Word, Words, Youtube,
};
use super::timed::{self, OverrideEntry, OverrideKind, Schedule};

use super::{
    CacheSettings, ConditionalForward, Config, ConfigError, ForwardProtocol, ForwardServer, Network, RateLimit,
    TcpSettings, Upstream,
};
use super::{LeasesFormat, LogConfig};
use crate::download::FetchSettings;
use crate::lists::sources::ListSettings;
use crate::name::normalise;
use crate::policy::category::{self, CategorySet};
use crate::policy::group::{self, BlockAnswer, GroupPolicy, Overrides, YoutubeMode};
use crate::store::{LogSettings, Privacy};

/// The configuration `hedgerow serve` runs on when given no file. It needs no
/// root and no network set-up: one loopback address per demo group.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The IANA root servers (IPv4 and IPv6), used when `root_hints` is not set.
const IANA_ROOT_HINTS: &[&str] = &[
    "198.41.0.4",
    "170.247.170.2",
    "192.33.4.12",
    "199.7.91.13",
    "192.203.230.10",
    "192.5.5.241",
    "192.112.36.4",
    "198.97.190.53",
    "192.36.148.17",
    "192.58.128.30",
    "193.0.14.129",
    "199.7.83.42",
    "202.12.27.33",
    "2001:503:ba3e::2:30",
    "2801:1b8:10::b",
    "2001:500:2::c",
    "2001:500:2d::d",
    "2001:500:a8::e",
    "2001:7fe::53",
    "2001:503:c27::2:30",
    "2001:7fd::1",
    "2001:500:9f::42",
    "2001:dc3::35",
];

/// Groups every school has; a config may describe them or add others.
const STANDARD_GROUPS: &[(&str, &str)] =
    &[("pupil", "Pupil devices"), ("staff", "Staff devices"), ("guest", "Guest and BYOD devices")];

/// Turns byte spans into line numbers and builds errors.
struct Source<'a> {
    text: &'a str,
    name: &'a str,
}

impl Source<'_> {
    fn line_of(&self, span: &Range<usize>) -> Option<usize> {
        if span.start == 0 && span.end == 0 {
            return None; // a default value: it has no place in the file
        }
        Some(crate::text::line_at(self.text, span.start))
    }

    fn error(&self, span: Option<&Range<usize>>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            source_name: self.name.to_string(),
            line: span.and_then(|span| self.line_of(span)),
            message: message.into(),
        }
    }
}

pub(super) fn compile(text: &str, source_name: &str) -> Result<Config, ConfigError> {
    let source = Source { text, name: source_name };
    let raw: RawConfig = toml::from_str(text).map_err(|error| {
        let message = error.message().trim().to_string();
        let message = match error.span() {
            Some(span) if message.starts_with("invalid type") || message.starts_with("invalid value") => {
                plain_type_error(text, &span, &message)
            }
            _ if message.contains("unknown field") => {
                format!("{message}; remove it or correct its spelling (see examples/hedgerow.toml for every key)")
            }
            _ => message,
        };
        source.error(error.span().as_ref(), message)
    })?;

    let listen = compile_listen(&source, &raw.dns.listen)?;

    let tcp = compile_tcp(&source, &raw.dns)?;

    // First: sources, groups and locks may name a school's own category.
    let mut custom_categories = Vec::with_capacity(raw.categories.custom.len());
    for decl in &raw.categories.custom {
        let registered = category::register(decl.get_ref().clone())
            .map_err(|why| source.error(Some(&decl.span()), format!("[[categories.custom]] {why}")))?;
        custom_categories.push(registered);
    }
    let mut locked = category::locked();
    for custom in custom_categories.iter().filter(|custom| custom.locked) {
        locked = locked.union(CategorySet::of(custom.bit));
    }
    for id in &raw.categories.lock {
        let index = category_index(&source, id)?;
        locked = locked.union(CategorySet::of(index));
    }
    let (timezone, timezone_name) = compile_timezone(&source, raw.timezone.as_ref())?;
    let (groups, overrides, schedules) = compile_groups(&source, raw.groups, locked)?;
    let networks = compile_networks(&source, raw.networks, &groups, raw.dns.allow_open_resolver)?;
    let upstream = compile_upstream(&source, raw.upstream)?;
    let cache = compile_cache(&source, raw.cache)?;
    let log = compile_log(&source, raw.log, &raw.data_dir, &groups)?;
    let dashboard = super::dashboard::compile(raw.dashboard, text, source_name)?;
    let metrics = super::metrics::compile(raw.metrics, text, source_name)?;
    let alerts = super::alerts::compile(raw.alerts, text, source_name)?;
    let block_page = super::block_page::compile(raw.block_page, text, source_name)?;
    let selftest = super::selftest::compile(raw.selftest, text, source_name)?;
    let school = super::school::compile(raw.school);
    let sync = super::sync::compile(raw.sync, text, source_name)?;

    let ipv6_prefix = *raw.rate_limit.ipv6_prefix.get_ref();
    if !(1..=128).contains(&ipv6_prefix) {
        return Err(source.error(
            Some(&raw.rate_limit.ipv6_prefix.span()),
            format!("`rate_limit.ipv6_prefix = {ipv6_prefix}` is not a prefix length from 1 to 128; 64 (one SLAAC subnet) suits most networks, 128 counts each IPv6 address alone"),
        ));
    }
    let rate_limit = match raw.rate_limit.queries_per_second {
        Some(qps) if *qps.get_ref() == 0 => {
            return Err(source.error(
                Some(&qps.span()),
                "`rate_limit.queries_per_second` must be at least 1; remove the key to turn the limit off",
            ));
        }
        Some(qps) => {
            let qps = *qps.get_ref();
            RateLimit {
                queries_per_second: Some(qps),
                burst: raw.rate_limit.burst.unwrap_or(qps.saturating_mul(2)).max(1),
                exempt_loopback: raw.rate_limit.exempt_loopback,
                ipv6_prefix,
            }
        }
        None => RateLimit {
            queries_per_second: None,
            burst: 0,
            exempt_loopback: raw.rate_limit.exempt_loopback,
            ipv6_prefix,
        },
    };

    // Last, so a mistake elsewhere in a new file is reported first.
    if networks.is_empty() {
        return Err(source.error(
            None,
            "there are no [[networks]], so every query would be refused; add one per subnet, e.g.\n\
             [[networks]]\nname = \"pupil-wifi\"\ncidrs = [\"10.1.0.0/16\"]\ngroup = \"pupil\"",
        ));
    }

    Ok(Config {
        source: source_name.to_string(),
        file: None,
        listen,
        tcp,
        data_dir: raw.data_dir,
        networks,
        groups,
        timezone,
        timezone_name,
        overrides,
        schedules,
        locked,
        custom_categories,
        allow_open_resolver: raw.dns.allow_open_resolver,
        lists: ListSettings {
            dir_line: source.line_of(&raw.lists.dir.span()),
            dir: raw.lists.dir.into_inner(),
            enable: raw.lists.enable,
            disable: raw.lists.disable,
            compiler: Default::default(),
        },
        list_update_interval: (raw.lists.update_hours > 0).then(|| Duration::from_secs(raw.lists.update_hours * 3600)),
        downloads: FetchSettings {
            timeout: Duration::from_secs(raw.lists.download_timeout_secs.max(1)),
            max_bytes: raw.lists.download_max_mb.max(1) * 1024 * 1024,
            ..FetchSettings::default()
        },
        upstream,
        cache,
        rate_limit,
        log,
        dashboard,
        metrics,
        alerts,
        block_page,
        selftest,
        school,
        sync,
    })
}

fn category_index(source: &Source<'_>, id: &Spanned<String>) -> Result<u8, ConfigError> {
    category::index_of(id.get_ref()).ok_or_else(|| {
        let known = category::known_ids();
        source.error(
            Some(&id.span()),
            format!("unknown category {:?}; the categories are {}", id.get_ref(), known.join(", ")),
        )
    })
}

/// The default time zone when the config names none.
pub const DEFAULT_TIMEZONE: &str = "Europe/London";

fn compile_timezone(
    source: &Source<'_>,
    written: Option<&Spanned<String>>,
) -> Result<(jiff::tz::TimeZone, String), ConfigError> {
    let name = written.map_or(DEFAULT_TIMEZONE, |name| name.get_ref().as_str());
    let zone = jiff::tz::TimeZone::get(name).map_err(|_| {
        source.error(
            written.map(|name| name.span()).as_ref(),
            format!(
                "timezone = {name:?} is not a known time zone; use an IANA name, e.g. timezone = \"Europe/London\""
            ),
        )
    })?;
    Ok((zone, name.to_string()))
}

type CompiledGroups = (BTreeMap<String, GroupPolicy>, Vec<OverrideEntry>, Vec<Schedule>);

fn compile_groups(
    source: &Source<'_>,
    raw: BTreeMap<Spanned<String>, RawGroup>,
    locked: CategorySet,
) -> Result<CompiledGroups, ConfigError> {
    let mut entries = Vec::new();
    let mut schedules = Vec::new();
    let standard = |name: &str, description: &str| {
        let (safesearch, youtube, bypass) = group::default_search_settings(name);
        GroupPolicy {
            name: name.to_string(),
            description: description.to_string(),
            blocked: group::default_blocked(name).union(locked),
            allow: Overrides::default(),
            deny: Overrides::default(),
            block_answer: BlockAnswer::NxDomain,
            safesearch,
            youtube,
            bypass,
        }
    };
    let mut groups: BTreeMap<String, GroupPolicy> =
        STANDARD_GROUPS.iter().map(|(name, description)| (name.to_string(), standard(name, description))).collect();
    for (name, raw_group) in raw {
        let valid = !name.get_ref().is_empty()
            && name.get_ref().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(source.error(
                Some(&name.span()),
                format!("group name {:?} may use only lower-case letters, digits and '-'", name.get_ref()),
            ));
        }
        let mut policy = groups.remove(name.get_ref()).unwrap_or_else(|| standard(name.get_ref(), ""));
        if !raw_group.description.is_empty() {
            policy.description = raw_group.description;
        }
        if let Some(block) = &raw_group.block {
            policy.blocked = compile_block_list(source, name.get_ref(), block.get_ref(), locked)?;
        }
        policy.allow = compile_overrides(source, name.get_ref(), OverrideKind::Allow, &raw_group.allow, &mut entries)?;
        policy.deny = compile_overrides(source, name.get_ref(), OverrideKind::Deny, &raw_group.deny, &mut entries)?;
        for schedule in &raw_group.schedule {
            schedules.push(compile_schedule(source, name.get_ref(), schedule.get_ref(), locked)?);
        }
        policy.block_answer = match raw_group.block_answer.as_ref().map(|a| (a, a.get_ref())) {
            None | Some((_, Word::Known(BlockAnswerKind::NxDomain))) => BlockAnswer::NxDomain,
            Some((_, Word::Known(BlockAnswerKind::Null))) => BlockAnswer::NullAddress,
            Some((answer, Word::Known(BlockAnswerKind::BlockPage))) => match raw_group.block_page_ipv4 {
                Some(ipv4) => BlockAnswer::BlockPage { ipv4, ipv6: raw_group.block_page_ipv6 },
                None => {
                    return Err(source.error(
                        Some(&answer.span()),
                        "block_answer = \"block-page\" needs block_page_ipv4 = \"...\" (the block page's address; block_page_ipv6 is optional)",
                    ));
                }
            },
            Some((answer, Word::Other(other))) => {
                return Err(source.error(
                    Some(&answer.span()),
                    format!("block_answer {other:?} is not one of {}", BlockAnswerKind::listed(", ")),
                ));
            }
        };
        if let Some(safesearch) = raw_group.safesearch {
            policy.safesearch = safesearch;
        }
        if let Some(bypass) = raw_group.bypass {
            policy.bypass = bypass;
        }
        if let Some(youtube) = &raw_group.youtube {
            policy.youtube = match youtube.get_ref() {
                Word::Known(Youtube::Strict) => YoutubeMode::Strict,
                Word::Known(Youtube::Moderate) => YoutubeMode::Moderate,
                Word::Known(Youtube::Off) => YoutubeMode::Off,
                Word::Other(other) => {
                    return Err(source.error(
                        Some(&youtube.span()),
                        format!("youtube = {other:?} is not one of {}", Youtube::listed(", ")),
                    ));
                }
            };
        }
        groups.insert(name.into_inner(), policy);
    }
    Ok((groups, entries, schedules))
}

const SCHEDULE_EXAMPLE: &str = "[[groups.pupil.schedule]]\ncategory = \"games\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nfrom = \"12:00\"\nto = \"13:00\"";

/// A `[[groups.<g>.schedule]]` window: a known, unlocked category, known
/// days, and `from` before `to` on one day.
fn compile_schedule(
    source: &Source<'_>,
    group_name: &str,
    raw: &RawSchedule,
    locked: CategorySet,
) -> Result<Schedule, ConfigError> {
    let bit = category::index_of(raw.category.get_ref()).ok_or_else(|| {
        source.error(
            Some(&raw.category.span()),
            format!(
                "schedule for group {group_name:?}: unknown category {:?}; the categories are {}. For example:\n{SCHEDULE_EXAMPLE}",
                raw.category.get_ref(),
                category::known_ids().join(", ")
            ),
        )
    })?;
    if locked.contains(bit) {
        return Err(source.error(
            Some(&raw.category.span()),
            format!(
                "schedule for group {group_name:?}: category {:?} is locked (always blocked for every group), so no schedule can open it; remove this schedule",
                raw.category.get_ref()
            ),
        ));
    }
    let mut days = Vec::new();
    for day in raw.days.get_ref() {
        let Some((_, weekday)) = timed::DAYS.iter().find(|(word, _)| *word == day.get_ref().as_str()) else {
            return Err(source.error(
                Some(&day.span()),
                format!(
                    "schedule for group {group_name:?}: {:?} is not a day; write days as \"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\", e.g. days = [\"mon\", \"fri\"]",
                    day.get_ref()
                ),
            ));
        };
        if !days.contains(weekday) {
            days.push(*weekday);
        }
    }
    if days.is_empty() {
        return Err(source.error(
            Some(&raw.days.span()),
            format!("schedule for group {group_name:?} names no days; e.g. days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]"),
        ));
    }
    let clock = |written: &Spanned<String>, key: &str| {
        timed::parse_clock(written.get_ref()).ok_or_else(|| {
            source.error(
                Some(&written.span()),
                format!(
                    "schedule for group {group_name:?}: {key} = {:?} is not a time of day; write 24-hour \"HH:MM\", e.g. {key} = \"12:00\"",
                    written.get_ref()
                ),
            )
        })
    };
    let (from_minute, to_minute) = (clock(&raw.from, "from")?, clock(&raw.to, "to")?);
    if from_minute >= to_minute {
        return Err(source.error(
            Some(&raw.from.span()),
            format!(
                "schedule for group {group_name:?}: from = {:?} is not before to = {:?}; a window lies within one day, e.g. from = \"12:00\" and to = \"13:00\"",
                raw.from.get_ref(),
                raw.to.get_ref()
            ),
        ));
    }
    Ok(Schedule {
        group: group_name.to_string(),
        category: raw.category.get_ref().clone(),
        bit,
        days,
        from_minute,
        to_minute,
    })
}

/// `["default", "!games", "streaming"]` -> a category set, locked ones added.
fn compile_block_list(
    source: &Source<'_>,
    group_name: &str,
    entries: &[Spanned<String>],
    locked: CategorySet,
) -> Result<CategorySet, ConfigError> {
    let mut blocked = CategorySet::EMPTY;
    let mut removed = CategorySet::EMPTY;
    for entry in entries {
        let text = entry.get_ref().as_str();
        if let Some(id) = text.strip_prefix('!') {
            let index = category_index(source, &Spanned::new(entry.span(), id.to_string()))?;
            if locked.contains(index) {
                return Err(source.error(
                    Some(&entry.span()),
                    format!("category {id:?} is locked: it is always blocked for every group and cannot be taken away; remove {text:?}"),
                ));
            }
            removed = removed.union(CategorySet::of(index));
            continue;
        }
        blocked = blocked.union(match text {
            "default" => group::default_blocked(group_name),
            "uksic" => category::uksic(),
            "bypass" => category::bypass(),
            _ => CategorySet::of(category_index(source, entry)?),
        });
    }
    Ok(blocked.without(removed).union(locked))
}

fn compile_overrides(
    source: &Source<'_>,
    group_name: &str,
    kind: OverrideKind,
    rules: &[Spanned<RawOverride>],
    entries: &mut Vec<OverrideEntry>,
) -> Result<Overrides, ConfigError> {
    let mut overrides = Overrides::default();
    for rule in rules {
        let (reason, until_ms) = match rule.get_ref() {
            RawOverride::Name(_) => (String::new(), None),
            RawOverride::Entry(entry) => {
                let until_ms = match &entry.until {
                    None => None,
                    Some(until) => Some(timed::parse_instant(until).ok_or_else(|| {
                        source.error(
                            Some(&rule.span()),
                            format!(
                                "{} override {:?}: until = {until:?} is not an RFC 3339 time; write it with a zone, e.g. until = \"2026-12-07T16:00:00Z\"",
                                kind.key(),
                                entry.name
                            ),
                        )
                    })?),
                };
                (entry.reason.clone(), until_ms)
            }
        };
        let text = rule.get_ref().name().trim();
        let (exact, name) = match text.strip_prefix('=') {
            Some(name) => (true, name),
            None => (false, text.strip_prefix("*.").unwrap_or(text)),
        };
        let name = normalise(name).map_err(|error| {
            source.error(
                Some(&rule.span()),
                format!("{text:?} is not a domain name ({error}); write \"example.com\" for the domain and its subdomains, or \"=www.example.com\" for one name"),
            )
        })?;
        let normalised = if exact { format!("={name}") } else { name };
        overrides.insert(&normalised);
        entries.push(OverrideEntry { group: group_name.to_string(), kind, rule: normalised, reason, until_ms });
    }
    Ok(overrides)
}

fn compile_networks(
    source: &Source<'_>,
    raw: Vec<RawNetwork>,
    groups: &BTreeMap<String, GroupPolicy>,
    allow_open_resolver: bool,
) -> Result<Vec<Network>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut seen_cidrs: BTreeMap<IpNet, String> = BTreeMap::new();
    let mut networks = Vec::new();
    for network in raw {
        let name = network.name.get_ref();
        if !names.insert(name.clone()) {
            return Err(source.error(
                Some(&network.name.span()),
                format!("network {name:?} is declared twice; give each [[networks]] entry its own name"),
            ));
        }
        if !groups.contains_key(network.group.get_ref()) {
            let known: Vec<&str> = groups.keys().map(String::as_str).collect();
            return Err(source.error(
                Some(&network.group.span()),
                format!(
                    "network {name:?} names group {:?}, which does not exist; use one of {} or declare it under [groups.{}]",
                    network.group.get_ref(),
                    known.join(", "),
                    network.group.get_ref()
                ),
            ));
        }
        if network.cidrs.get_ref().is_empty() {
            return Err(source.error(
                Some(&network.cidrs.span()),
                format!("network {name:?} has no cidrs; list its subnets, e.g. [\"10.1.0.0/16\"]"),
            ));
        }
        let mut cidrs = Vec::new();
        for written in network.cidrs.get_ref() {
            let cidr = parse_cidr(source, written)?;
            if covers_the_internet(&cidr) && !allow_open_resolver {
                return Err(source.error(
                    Some(&written.span()),
                    format!(
                        "network {name:?} has {:?}, which covers the whole internet (or a large part of it): anyone \
                         who can reach this server could use it (an open resolver, used in DNS amplification \
                         attacks) and would get group {:?}'s policy. List the school's own subnets, e.g. \
                         cidrs = [\"10.1.0.0/16\"]; if this is really meant, set allow_open_resolver = true under [dns]",
                        written.get_ref(),
                        network.group.get_ref()
                    ),
                ));
            }
            // Store the network address (10.1.2.3/16 -> 10.1.0.0/16) so equal
            // subnets written differently are recognised as the same.
            let cidr = cidr.trunc();
            if let Some(other) = seen_cidrs.insert(cidr, name.clone()) {
                return Err(source.error(
                    Some(&network.cidrs.span()),
                    format!("subnet {cidr} is in both network {other:?} and network {name:?}; a subnet belongs to one network"),
                ));
            }
            cidrs.push(cidr);
        }
        networks.push(Network { name: name.clone(), cidrs, group: network.group.into_inner() });
    }
    Ok(networks)
}

/// A subnet shorter than /8 (IPv4) or /7 (IPv6) reaches far beyond any
/// school: 0.0.0.0/0, ::/0, their halves, 2000::/3 (all global IPv6). 10/8
/// and the IPv6 unique-local fc00::/7 are still allowed.
pub fn covers_the_internet(cidr: &IpNet) -> bool {
    match cidr {
        IpNet::V4(net) => net.prefix_len() < 8,
        IpNet::V6(net) => net.prefix_len() < 7,
    }
}

fn parse_cidr(source: &Source<'_>, written: &Spanned<String>) -> Result<IpNet, ConfigError> {
    let text = written.get_ref().trim();
    text.parse::<IpNet>().map_err(|_| {
        let why = match text.split_once('/') {
            None if text.parse::<IpAddr>().is_ok() => format!(
                "it has no prefix length; for one address write \"{text}/{}\"",
                if text.contains(':') { 128 } else { 32 }
            ),
            Some((ip, len)) if ip.parse::<IpAddr>().is_ok() => {
                let most = if ip.contains(':') { 128 } else { 32 };
                format!("the prefix length /{len} is not 0-{most}")
            }
            _ => "it is not an IP subnet".to_string(),
        };
        source.error(
            Some(&written.span()),
            format!("cidrs = [{text:?}]: {why}; write a subnet like \"10.1.0.0/16\" or \"fd00:1::/64\""),
        )
    })
}

/// `dns.listen`: each entry an address with a port, none twice.
fn compile_listen(source: &Source<'_>, listen: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<SocketAddr>, ConfigError> {
    if listen.get_ref().is_empty() {
        return Err(source
            .error(Some(&listen.span()), "`dns.listen` is empty; give at least one address such as \"0.0.0.0:53\""));
    }
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for written in listen.get_ref() {
        let text = written.get_ref().trim();
        let address = text.parse::<SocketAddr>().map_err(|_| {
            let why = match text.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => format!("it has no port; write \"{text}:53\""),
                Ok(IpAddr::V6(_)) => format!("it has no port; write \"[{text}]:53\""),
                Err(_) => "it is not an IP address and port".to_string(),
            };
            source.error(
                Some(&written.span()),
                format!("listen = [{text:?}]: {why}; write addresses like \"0.0.0.0:53\" or \"[::]:53\""),
            )
        })?;
        if addresses.contains(&address) {
            return Err(source.error(
                Some(&written.span()),
                format!("`dns.listen` has {address} twice; remove one (a second socket on the same address cannot be opened)"),
            ));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// Keys taking one of a few words, with what they take and an example.
fn word_key(key: &str) -> Option<(String, String)> {
    fn one_of<T: Words>(key: &str, example: T) -> Option<(String, String)> {
        let expected = match T::ALL.len() {
            2 => T::listed(" or "),
            _ => format!("one of {}", T::listed(", ")),
        };
        Some((expected, format!("{key} = {:?}", example.word())))
    }
    match key {
        "youtube" => one_of(key, Youtube::Strict),
        "block_answer" => one_of(key, BlockAnswerKind::NxDomain),
        "mode" => one_of(key, RawMode::Forward),
        "protocol" => one_of(key, ForwardProtocol::Tls),
        _ => None,
    }
}

/// Other keys whose values a person most often writes in the wrong type,
/// with what they take and an example.
const KEY_EXAMPLES: &[(&str, &str, &str)] = &[
    ("safesearch", "true or false", "safesearch = true"),
    ("bypass", "true or false", "bypass = true"),
    ("enabled", "true or false", "enabled = true"),
    ("allow_open_resolver", "true or false", "allow_open_resolver = false"),
    ("exempt_loopback", "true or false", "exempt_loopback = true"),
    ("listen", "a list of addresses with ports", "listen = [\"0.0.0.0:53\"]"),
    ("cidrs", "a list of subnets", "cidrs = [\"10.1.0.0/16\"]"),
    ("block", "a list of category ids", "block = [\"default\", \"games\"]"),
    ("allow", "a list of domain names", "allow = [\"bbc.co.uk\"]"),
    ("deny", "a list of domain names", "deny = [\"example.com\"]"),
    ("enable", "a list of source ids", "enable = [\"ut1-gambling\"]"),
    ("disable", "a list of source ids", "disable = [\"hedgerow-games\"]"),
    ("lock", "a list of category ids", "lock = [\"pornography\"]"),
    ("dir", "a folder path in quotes", "dir = \"/usr/share/hedgerow/lists\""),
    ("data_dir", "a folder path in quotes", "data_dir = \"/var/lib/hedgerow\""),
    ("size", "a whole number", "size = 100000"),
];

/// serde's "invalid type: boolean `true`, expected a string" as a person
/// would put it: `youtube = true: expected one of "strict", ..., e.g. youtube = "strict"`.
fn plain_type_error(text: &str, span: &Range<usize>, message: &str) -> String {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let value = text[start..end].trim();
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let key = line.split_once('=').map(|(key, _)| key.trim().trim_matches('"')).filter(|key| !key.is_empty());
    let serde_expected = message.split_once("expected ").map_or("another type", |(_, expected)| expected).trim();
    match key {
        Some(key) => {
            let known = word_key(key).or_else(|| {
                KEY_EXAMPLES
                    .iter()
                    .find(|(name, _, _)| *name == key)
                    .map(|(_, expected, example)| (expected.to_string(), example.to_string()))
            });
            match known {
                Some((expected, example)) => format!("{key} = {value}: expected {expected}, e.g. {example}"),
                None => format!("{key} = {value}: expected {serde_expected}"),
            }
        }
        None => format!("{value}: expected {serde_expected}"),
    }
}

fn compile_upstream(source: &Source<'_>, raw: RawUpstream) -> Result<Upstream, ConfigError> {
    if raw.timeout_ms == 0 {
        return Err(source.error(None, "`upstream.timeout_ms` must be at least 1 (2000 is a good value)"));
    }
    let timeout = Duration::from_millis(raw.timeout_ms);
    match raw.mode.get_ref() {
        RawMode::Forward => {
            if let Some(hints) = &raw.root_hints {
                return Err(source.error(
                    Some(&hints.span()),
                    "`root_hints` applies only to mode = \"recursive\"; remove it or change the mode",
                ));
            }
            if !raw.conditional.is_empty() {
                return Err(source.error(
                    Some(&raw.conditional[0].zone.span()),
                    "conditional forwarding applies only to mode = \"recursive\"; in forward mode every name goes to `servers`",
                ));
            }
            if raw.servers.get_ref().is_empty() {
                return Err(source.error(
                    Some(&raw.mode.span()),
                    "mode = \"forward\" needs at least one [[upstream.servers]] entry with an `address`",
                ));
            }
            let servers = compile_servers(source, raw.servers.into_inner())?;
            Ok(Upstream::Forward { servers, timeout })
        }
        RawMode::Recursive => {
            if !raw.servers.get_ref().is_empty() {
                return Err(source.error(
                    Some(&raw.servers.span()),
                    "`upstream.servers` applies only to mode = \"forward\"; remove it or set mode = \"forward\"",
                ));
            }
            let root_hints = match raw.root_hints {
                Some(hints) if hints.get_ref().is_empty() => {
                    return Err(source
                        .error(Some(&hints.span()), "`root_hints` is empty; remove it to use the IANA root servers"));
                }
                Some(hints) => hints.into_inner(),
                None => IANA_ROOT_HINTS.iter().map(|ip| ip.parse().expect("valid root hint")).collect(),
            };
            let mut conditional = Vec::new();
            for entry in raw.conditional {
                let zone = normalise_zone(entry.zone.get_ref());
                if zone.is_empty() || zone.contains("..") {
                    return Err(source.error(
                        Some(&entry.zone.span()),
                        format!("{:?} is not a domain name; write it like \"school.internal\"", entry.zone.get_ref()),
                    ));
                }
                if entry.servers.get_ref().is_empty() {
                    return Err(source
                        .error(Some(&entry.servers.span()), format!("conditional zone {zone:?} lists no servers")));
                }
                let servers = compile_servers(source, entry.servers.into_inner())?;
                conditional.push(ConditionalForward { zone, servers });
            }
            Ok(Upstream::Recursive { root_hints, conditional, timeout })
        }
    }
}

fn normalise_zone(zone: &str) -> String {
    zone.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn compile_servers(source: &Source<'_>, raw: Vec<RawServer>) -> Result<Vec<ForwardServer>, ConfigError> {
    raw.into_iter()
        .map(|server| {
            let default_port = match server.protocol {
                ForwardProtocol::Udp | ForwardProtocol::Tcp => 53,
                ForwardProtocol::Tls => 853,
                ForwardProtocol::Https => 443,
            };
            let text = server.address.get_ref().trim();
            let address = text
                .parse::<SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, default_port)))
                .map_err(|_| {
                    source.error(
                        Some(&server.address.span()),
                        format!(
                            "{text:?} is not an IP address; write \"192.0.2.1\", \"192.0.2.1:53\" or \"[2001:db8::1]:53\" (names cannot be used: they would need DNS to find DNS)"
                        ),
                    )
                })?;
            let needs_name = matches!(server.protocol, ForwardProtocol::Tls | ForwardProtocol::Https);
            if needs_name && server.tls_name.is_none() {
                return Err(source.error(
                    Some(&server.address.span()),
                    format!("server {text:?} uses TLS; add tls_name = \"...\" with the name on its certificate (e.g. \"dns.quad9.net\")"),
                ));
            }
            Ok(ForwardServer { address, protocol: server.protocol, tls_name: server.tls_name })
        })
        .collect()
}

fn compile_log(
    source: &Source<'_>,
    raw: RawLog,
    data_dir: &std::path::Path,
    groups: &BTreeMap<String, GroupPolicy>,
) -> Result<LogConfig, ConfigError> {
    let days = *raw.retention_days.get_ref();
    if !(1..=365).contains(&days) {
        return Err(source.error(
            Some(&raw.retention_days.span()),
            format!("retention_days = {days}: keep raw query rows from 1 to 365 days (daily roll-ups are kept for years regardless)"),
        ));
    }
    let privacy = match raw.guest_privacy.get_ref() {
        Word::Known(privacy) => *privacy,
        Word::Other(other) => {
            let explained = |privacy: &Privacy| match privacy {
                Privacy::Full => format!("{:?}", privacy.word()),
                Privacy::Truncate => format!("{:?} (network only)", privacy.word()),
                Privacy::Hash => format!("{:?} (a daily pseudonym)", privacy.word()),
            };
            let choices: Vec<String> = Privacy::ALL.iter().map(explained).collect();
            return Err(source.error(
                Some(&raw.guest_privacy.span()),
                format!("guest_privacy = {other:?} is not one of {}", choices.join(", ")),
            ));
        }
    };
    if let Some(unknown) = raw.private_groups.iter().find(|g| !groups.contains_key(*g)) {
        return Err(source.error(None, format!("[log] private_groups names {unknown:?}, which is not a group")));
    }
    let leases_format: LeasesFormat = match raw.leases_format.get_ref() {
        Word::Known(format) => *format,
        Word::Other(other) => {
            let why = other.parse::<LeasesFormat>().err().unwrap_or_default();
            return Err(source.error(Some(&raw.leases_format.span()), format!("leases_format = {why}")));
        }
    };
    Ok(LogConfig {
        enabled: raw.enabled,
        database: data_dir.join(&raw.database),
        database_setting: raw.database,
        settings: LogSettings {
            retention_days: days,
            guest_privacy: privacy,
            private_groups: raw.private_groups,
            ..LogSettings::default()
        },
        leases: raw.leases_file.map(|file| (file, leases_format)),
    })
}

fn compile_tcp(source: &Source<'_>, raw: &RawDns) -> Result<TcpSettings, ConfigError> {
    let max_connections = *raw.tcp_max_connections.get_ref();
    let per_client = *raw.tcp_per_client.get_ref();
    if max_connections == 0 {
        return Err(source.error(
            Some(&raw.tcp_max_connections.span()),
            "`dns.tcp_max_connections` must be at least 1 (1000 suits a school); clients need TCP for truncated answers",
        ));
    }
    if per_client == 0 || per_client > max_connections {
        return Err(source.error(
            Some(&raw.tcp_per_client.span()),
            format!("`dns.tcp_per_client = {per_client}` must be from 1 to `dns.tcp_max_connections` ({max_connections}); 16 suits a school"),
        ));
    }
    Ok(TcpSettings { max_connections, per_client })
}

fn compile_cache(source: &Source<'_>, raw: RawCache) -> Result<CacheSettings, ConfigError> {
    if *raw.size.get_ref() == 0 {
        return Err(source.error(Some(&raw.size.span()), "`cache.size` must be at least 1 (100000 suits a school)"));
    }
    let memory_mb = *raw.memory_mb.get_ref();
    if memory_mb == 0 || memory_mb > 1 << 20 {
        return Err(source.error(
            Some(&raw.memory_mb.span()),
            format!("`cache.memory_mb = {memory_mb}` must be from 1 to 1048576 (megabytes); 128 suits a school"),
        ));
    }
    if raw.min_ttl_secs > *raw.max_ttl_secs.get_ref() {
        return Err(source.error(
            Some(&raw.max_ttl_secs.span()),
            "`cache.max_ttl_secs` is below `cache.min_ttl_secs`; raise the maximum or lower the minimum",
        ));
    }
    Ok(CacheSettings {
        size: *raw.size.get_ref(),
        memory_bytes: usize::try_from(memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
        min_ttl: Duration::from_secs(raw.min_ttl_secs),
        max_ttl: Duration::from_secs(*raw.max_ttl_secs.get_ref()),
        negative_max_ttl: Duration::from_secs(raw.negative_max_ttl_secs),
        serve_stale_for: Duration::from_secs(raw.serve_stale_secs),
        stale_answer_after: Duration::from_millis(raw.stale_answer_after_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::super::render::render;
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_declares_demo_networks() {
        let config = compile(DEFAULT_CONFIG, "embedded default").unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        let groups: Vec<(&str, &str)> =
            config.networks.iter().map(|n| (n.cidrs[0].to_string().leak() as &str, n.group.as_str())).collect();
        assert_eq!(groups, vec![("127.0.0.1/32", "pupil"), ("127.0.0.2/32", "staff"), ("127.0.0.3/32", "guest")]);
    }

    #[test]
    fn unknown_key_names_its_line() {
        let text = "data_dir = \"x\"\n\n[cache]\nsize = 10\nsizes = 3\n";
        let error = compile(text, "school.toml").unwrap_err();
        assert_eq!(error.line, Some(5), "{error}");
        assert!(error.to_string().starts_with("school.toml:5:"), "{error}");
        assert!(error.message.contains("sizes"), "{error}");
    }

    #[test]
    fn network_with_unknown_group_names_the_group_line() {
        let text = "[[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupils\"\n";
        let error = compile(text, "school.toml").unwrap_err();
        assert_eq!(error.line, Some(4), "{error}");
        assert!(error.message.contains("pupils") && error.message.contains("pupil"), "{error}");
    }

    #[test]
    fn bad_cidr_names_its_line() {
        let text = "[[networks]]\nname = \"a\"\n\ncidrs = [\"10.0.0.0/33\"]\ngroup = \"pupil\"\n";
        let error = compile(text, "school.toml").unwrap_err();
        assert_eq!(error.line, Some(4), "{error}");
    }

    #[test]
    fn ipv6_networks_and_forwarders_compile() {
        let text = r#"
[upstream]
mode = "forward"
[[upstream.servers]]
address = "2001:db8::53"
[[upstream.servers]]
address = "192.0.2.1"
protocol = "tls"
tls_name = "dns.example"

[[networks]]
name = "pupil-v6"
cidrs = ["fd00:1::/64", "10.1.0.0/16"]
group = "pupil"
"#;
        let config = compile(text, "t").unwrap();
        let Upstream::Forward { servers, .. } = &config.upstream else { panic!("forward mode") };
        assert_eq!(servers[0].address, "[2001:db8::53]:53".parse().unwrap());
        assert_eq!(servers[1].address, "192.0.2.1:853".parse().unwrap());
        assert_eq!(config.networks[0].cidrs[0], "fd00:1::/64".parse::<IpNet>().unwrap());
    }

    #[test]
    fn tls_forwarder_without_name_is_an_error() {
        let text =
            "[upstream]\nmode = \"forward\"\n[[upstream.servers]]\naddress = \"192.0.2.1\"\nprotocol = \"tls\"\n";
        let error = compile(text, "t").unwrap_err();
        assert_eq!(error.line, Some(4));
        assert!(error.message.contains("tls_name"));
    }

    #[test]
    fn same_subnet_in_two_networks_is_an_error() {
        let text = "[[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n[[networks]]\nname = \"b\"\ncidrs = [\"10.0.0.1/8\"]\ngroup = \"staff\"\n";
        let error = compile(text, "t").unwrap_err();
        assert_eq!(error.line, Some(7));
    }

    #[test]
    fn group_policies_default_and_compose() {
        let text = r#"
[categories]
lock = ["pornography"]

[groups.staff]
block = ["default", "streaming", "!vpn-proxy"]
allow = ["BBC.co.uk", "=www.Example.org"]
deny = ["*.tiktok.com"]
block_answer = "block-page"
block_page_ipv4 = "10.0.0.2"

[[networks]]
name = "staff-lan"
cidrs = ["10.2.0.0/16"]
group = "staff"
"#;
        let config = compile(text, "t").unwrap();
        let staff = &config.groups["staff"];
        let has = |set: CategorySet, id: &str| set.contains(category::index_of(id).unwrap());
        assert!(has(staff.blocked, "streaming") && has(staff.blocked, "gambling"));
        assert!(!has(staff.blocked, "vpn-proxy"));
        assert!(has(staff.blocked, "csam") && has(staff.blocked, "pornography"));
        assert!(has(config.groups["guest"].blocked, "pornography"), "a locked category applies to every group");
        assert!(staff.allow.find("www.bbc.co.uk").is_some());
        assert!(staff.allow.find("www.example.org").is_some() && staff.allow.find("a.www.example.org").is_none());
        assert!(staff.deny.find("tiktok.com").is_some());
        assert_eq!(staff.block_answer, BlockAnswer::BlockPage { ipv4: "10.0.0.2".parse().unwrap(), ipv6: None });
        let again = compile(&render(&config), "rendered").unwrap();
        assert_eq!(again.groups, config.groups);
        assert_eq!(again.locked, config.locked);
    }

    #[test]
    fn a_locked_category_cannot_be_taken_away() {
        let text = "[groups.staff]\nblock = [\"default\",\n  \"!malware\"]\n";
        let error = compile(text, "t").unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("locked"), "{error}");
    }

    #[test]
    fn unknown_category_and_bad_override_name_their_lines() {
        let error = compile("[groups.pupil]\nblock = [\"gamblin\"]\n", "t").unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(error.message.contains("gambling"), "lists the real ids: {error}");
        let error = compile("[groups.pupil]\n\nallow = [\"not a name\"]\n", "t").unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
    }

    /// A network, without which a config is refused.
    const NETWORK: &str = "[[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n";

    #[test]
    fn tcp_limits_cache_memory_and_ipv6_prefix_have_defaults_and_checks() {
        let config = compile(DEFAULT_CONFIG, "embedded default").unwrap();
        assert_eq!(config.tcp, TcpSettings { max_connections: 1_000, per_client: 16 });
        assert_eq!(config.cache.memory_bytes, 128 * 1024 * 1024);
        assert_eq!(config.rate_limit.ipv6_prefix, 64);

        let text = "[dns]\nlisten = [\"127.0.0.1:53\"]\ntcp_max_connections = 8\ntcp_per_client = 2\n[cache]\nmemory_mb = 4\n[rate_limit]\nqueries_per_second = 5\nipv6_prefix = 56\n".to_string() + NETWORK;
        let config = compile(&text, "t").unwrap();
        assert_eq!(config.tcp, TcpSettings { max_connections: 8, per_client: 2 });
        assert_eq!(config.cache.memory_bytes, 4 * 1024 * 1024);
        assert_eq!(config.rate_limit.ipv6_prefix, 56);
        let again = compile(&render(&config), "rendered").unwrap();
        assert_eq!((again.tcp, again.cache.memory_bytes, again.rate_limit.ipv6_prefix), (config.tcp, 4 << 20, 56));

        let error = compile("[rate_limit]\n\nipv6_prefix = 0\n", "t").unwrap_err();
        assert_eq!(error.line, Some(3), "{error}");
        assert!(error.message.contains("ipv6_prefix") && error.message.contains("64"), "{error}");
        let error = compile("[dns]\nlisten = [\"127.0.0.1:53\"]\ntcp_max_connections = 4\ntcp_per_client = 5\n", "t")
            .unwrap_err();
        assert_eq!(error.line, Some(4), "{error}");
        let error = compile("[cache]\nmemory_mb = 0\n", "t").unwrap_err();
        assert_eq!(error.line, Some(2), "{error}");
        assert!(error.message.contains("memory_mb"), "{error}");
    }
}
