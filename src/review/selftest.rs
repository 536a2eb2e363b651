//! The built-in self-test: for each group in force, the running server asks
//! its own DNS listener over a real socket, as that group, for known test
//! names (lists/selftest/names.toml: SWGfL's testfiltering.com names and one
//! shipped name per category, one name per SafeSearch engine, the bypass
//! canaries), and compares each real answer with what the *config* says the
//! group should get. The expectation never comes from the pipeline's own
//! decision, so a list that failed to load shows as a failure ("pornography
//! should block testfiltering.pornhub.com for pupil but it resolved").
//!
//! The queries are internal queries ([`Pipeline::register_internal`]): each
//! from its own socket on the listener's address, registered with its
//! group, so they are neither counted, logged nor seen by the alerts.
//!
//! [`plan`] says what to ask and expect; [`ask_all`] asks. The server runs
//! both (`serve::run_selftest`: one function for the CLI, the dashboard and
//! the schedule) and stores the run (`store::checks`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};
use serde::Deserialize;

use crate::config::Config;
use crate::dns::Pipeline;
use crate::dns::bypass::{CANARIES, CanaryAnswer};
use crate::policy::category::{self, CategorySet};
use crate::policy::safesearch::Target;
use crate::policy::{GroupPolicy, SafeSearchMap};
use crate::store::checks::SelftestResult;

/// The shipped test names, built into the binary.
pub const SHIPPED_TEXT: &str = include_str!("../../lists/selftest/names.toml");

/// How long one question may wait for its answer (an allowed name goes
/// upstream): past it the check is "could not check", not a pass.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// Questions in flight at once.
const CONCURRENCY: usize = 8;

/// RFC 8914 "Blocked": Hedgerow's block answers carry it.
const EDE_BLOCKED: u16 = 15;

/// lists/selftest/names.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestNames {
    #[serde(default)]
    pub category: Vec<CategoryNames>,
    #[serde(default)]
    pub safesearch: Vec<EngineName>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryNames {
    pub id: String,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineName {
    pub service: String,
    pub name: String,
}

/// The shipped test names (a unit test proves the file parses).
pub fn shipped() -> &'static TestNames {
    static NAMES: LazyLock<TestNames> =
        LazyLock::new(|| toml::from_str(SHIPPED_TEXT).expect("lists/selftest/names.toml parses (unit-tested)"));
    &NAMES
}

/// Every shipped seed list's names, by category bit (the SafeSearch map and
/// declarations apart), for the names a test name is also listed under.
fn seed_names() -> &'static Vec<(u8, Vec<String>)> {
    static SEEDS: LazyLock<Vec<(u8, Vec<String>)>> = LazyLock::new(|| {
        crate::lists::floor::FILES
            .iter()
            .filter_map(|(path, text)| {
                let id = path.strip_prefix("seed/")?.strip_suffix(".txt")?;
                let bit = category::index_of(id)?;
                let format = if text.starts_with("[Adblock") {
                    crate::lists::parse::Format::Adblock
                } else {
                    crate::lists::parse::Format::Domains
                };
                let names = crate::lists::parse::parse(text, format)
                    .rules
                    .into_iter()
                    .filter_map(|rule| match rule {
                        crate::lists::parse::Rule::Block(name) => Some(name),
                        crate::lists::parse::Rule::Allow(_) => None,
                    })
                    .collect();
                Some((bit, names))
            })
            .collect()
    });
    &SEEDS
}

/// The shipped categories whose seed list covers `name` (the name or a parent).
pub fn seed_categories(name: &str) -> CategorySet {
    let mut set = CategorySet::default();
    for (bit, names) in seed_names() {
        if crate::policy::group::parents(name).any(|parent| names.iter().any(|listed| listed == parent)) {
            set = set.union(CategorySet::of(*bit));
        }
    }
    set
}

/// What a group should get for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Blocked,
    Allowed,
    /// SafeSearch: a CNAME to this host.
    Cname(String),
    /// SafeSearch: this address.
    Address(Ipv4Addr),
    NxDomain,
    NoData,
}

impl Expect {
    pub fn words(&self) -> String {
        match self {
            Expect::Blocked => "blocked".into(),
            Expect::Allowed => "allowed".into(),
            Expect::Cname(host) => format!("CNAME to {host}"),
            Expect::Address(address) => format!("resolved to {address}"),
            Expect::NxDomain => "NXDOMAIN".into(),
            Expect::NoData => "no records (NODATA)".into(),
        }
    }
}

/// One question to ask, as one group, and what its policy says it should get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub group: String,
    /// "category", "safesearch" or "bypass".
    pub kind: &'static str,
    pub subject: String,
    pub name: String,
    pub record_type: RecordType,
    pub expect: Expect,
}

/// Every question for every group in force at `now_ms`, with what the
/// config says each should get. `safesearch` is the SafeSearch map the
/// server loads (its targets are data).
pub fn plan(config: &Config, safesearch: &SafeSearchMap, now_ms: i64) -> Vec<Planned> {
    let names = shipped();
    let mut planned = Vec::new();
    for (group, policy) in config.groups_at(now_ms) {
        for entry in &names.category {
            let Some(bit) = category::index_of(&entry.id) else { continue };
            for name in &entry.names {
                let expect = category_expectation(config.locked, &policy, bit, name);
                planned.push(Planned {
                    group: group.clone(),
                    kind: "category",
                    subject: entry.id.clone(),
                    name: name.clone(),
                    record_type: RecordType::A,
                    expect,
                });
            }
        }
        for engine in &names.safesearch {
            let Some(rewrite) = safesearch.find(&engine.name, &policy) else { continue };
            let expect = match &rewrite.target {
                Target::Host(host) => Expect::Cname(host.clone()),
                Target::Address(address) => Expect::Address(*address),
            };
            planned.push(Planned {
                group: group.clone(),
                kind: "safesearch",
                subject: engine.service.clone(),
                name: engine.name.clone(),
                record_type: RecordType::A,
                expect,
            });
        }
        if policy.bypass {
            for canary in CANARIES {
                let (subject, record_type) = match canary.name {
                    "use-application-dns.net" => ("Firefox DNS-over-HTTPS canary", RecordType::A),
                    "_dns.resolver.arpa" => ("encrypted resolver discovery (DDR)", RecordType::SVCB),
                    _ => ("iCloud Private Relay", RecordType::A),
                };
                planned.push(Planned {
                    group: group.clone(),
                    kind: "bypass",
                    subject: subject.into(),
                    name: canary.name.into(),
                    record_type,
                    expect: match canary.answer {
                        CanaryAnswer::NxDomain => Expect::NxDomain,
                        CanaryAnswer::NoData => Expect::NoData,
                    },
                });
            }
        }
    }
    planned
}

/// Blocked when a category listing the name is locked, a deny override
/// covers it, or (no allow override covering it) a category listing it is
/// on for the group; else allowed. The categories listing it: its own and
/// any other shipped seed list naming it.
fn category_expectation(locked: CategorySet, policy: &GroupPolicy, bit: u8, name: &str) -> Expect {
    let listed = CategorySet::of(bit).union(seed_categories(name));
    if !listed.intersection(locked.union(category::locked())).is_empty() || policy.deny.find(name).is_some() {
        return Expect::Blocked;
    }
    if policy.allow.find(name).is_some() {
        return Expect::Allowed;
    }
    if listed.intersection(policy.blocked).is_empty() { Expect::Allowed } else { Expect::Blocked }
}

/// A real answer, as the self-test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub code: ResponseCode,
    /// Hedgerow's block mark (RFC 8914 code 15) and its text.
    pub blocked: Option<String>,
    pub cname: Option<String>,
    pub addresses: Vec<String>,
    pub records: usize,
}

impl Got {
    /// From a reply's bytes.
    pub fn read(bytes: &[u8]) -> Result<Got, String> {
        let message = Message::from_vec(bytes).map_err(|error| format!("an unreadable answer ({error})"))?;
        let blocked = message.edns.as_ref().and_then(|edns| match edns.option(EdnsCode::from(EDE_BLOCKED)) {
            Some(EdnsOption::Unknown(EDE_BLOCKED, data)) if data.len() >= 2 => (u16::from_be_bytes([data[0], data[1]])
                == EDE_BLOCKED)
                .then(|| String::from_utf8_lossy(&data[2..]).into_owned()),
            _ => None,
        });
        let cname = message.answers.iter().find_map(|record| match &record.data {
            RData::CNAME(target) => Some(target.0.to_ascii().trim_end_matches('.').to_lowercase()),
            _ => None,
        });
        let addresses = message
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(aaaa) => Some(aaaa.0.to_string()),
                _ => None,
            })
            .collect();
        Ok(Got { code: message.metadata.response_code, blocked, cname, addresses, records: message.answers.len() })
    }

    /// The answer in words.
    pub fn words(&self) -> String {
        if self.blocked.is_some() {
            let shape = match self.addresses.first() {
                Some(address) => format!("address {address}"),
                None => code_words(self.code),
            };
            return format!("blocked ({shape})");
        }
        if let Some(cname) = &self.cname {
            return format!("CNAME to {cname}");
        }
        match (self.code, self.addresses.first()) {
            (ResponseCode::NoError, Some(address)) => format!("resolved to {address}"),
            (ResponseCode::NoError, None) if self.records == 0 => "no records (NODATA)".into(),
            (ResponseCode::NoError, None) => "answered with other records".into(),
            (code, _) => code_words(code),
        }
    }

    /// The upstream failed to answer an allowed name: the check says
    /// nothing about filtering.
    fn upstream_failed(&self) -> bool {
        self.blocked.is_none() && matches!(self.code, ResponseCode::ServFail | ResponseCode::Refused)
    }
}

fn code_words(code: ResponseCode) -> String {
    match code {
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => other.to_str().to_string(),
    }
}

/// Whether `got` is what `expect` says, and the got text to store.
pub fn judge(expect: &Expect, got: &Result<Got, String>) -> (bool, String) {
    let got = match got {
        Ok(got) => got,
        Err(why) => return (false, format!("could not check: {why}")),
    };
    let words = got.words();
    let passed = match expect {
        Expect::Blocked => got.blocked.is_some(),
        Expect::Allowed => {
            if got.upstream_failed() {
                return (false, format!("could not check: {words} from upstream"));
            }
            got.blocked.is_none()
        }
        Expect::Cname(host) => got.cname.as_deref() == Some(host.as_str()) && got.blocked.is_none(),
        Expect::Address(address) => {
            got.cname.is_none() && got.blocked.is_none() && got.addresses == [address.to_string()]
        }
        Expect::NxDomain => got.code == ResponseCode::NXDomain && got.blocked.is_none(),
        Expect::NoData => got.code == ResponseCode::NoError && got.records == 0 && got.blocked.is_none(),
    };
    if !passed && matches!(expect, Expect::Cname(_) | Expect::Address(_)) && got.upstream_failed() {
        return (false, format!("could not check: {words} (the safe host did not resolve)"));
    }
    (passed, words)
}

/// One line per failure, as alerts and the CLI say it:
/// "pornography should block testfiltering.pornhub.com for pupil but it resolved to ...".
pub fn describe_failure(result: &SelftestResult) -> String {
    let should = match result.expected.as_str() {
        "blocked" => "should block".to_string(),
        "allowed" => "should allow".to_string(),
        other => format!("should answer {other} for"),
    };
    format!("{} {should} {} for {} but got {}", result.subject, result.name, result.group, result.got)
}

/// Asks every planned question of the server's own listener, each from its
/// own socket registered as an internal query of its group, at most
/// [`CONCURRENCY`] at once. Fails only when there is no listener to ask.
pub async fn ask_all(pipeline: &Arc<Pipeline>, planned: &[Planned]) -> Result<Vec<SelftestResult>, String> {
    let Some(target) = pipeline.probe_target() else {
        return Err("no DNS listener is running".into());
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, question) in planned.iter().enumerate() {
        let (pipeline, limit, question) = (pipeline.clone(), limit.clone(), question.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("the semaphore is never closed");
            let got = ask_one(&pipeline, target, &question).await;
            (index, got)
        });
    }
    let mut answers: BTreeMap<usize, Result<Got, String>> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, got)) => {
                answers.insert(index, got);
            }
            Err(error) => return Err(format!("a self-test question failed: {error}")),
        }
    }
    Ok(planned
        .iter()
        .enumerate()
        .map(|(index, question)| {
            let got = answers.remove(&index).unwrap_or_else(|| Err("not asked".into()));
            let (passed, got) = judge(&question.expect, &got);
            SelftestResult {
                group: question.group.clone(),
                kind: question.kind.to_string(),
                subject: question.subject.clone(),
                name: question.name.clone(),
                expected: question.expect.words(),
                got,
                passed,
            }
        })
        .collect())
}

/// One question as `question.group`, over UDP from a registered socket.
async fn ask_one(pipeline: &Pipeline, target: SocketAddr, question: &Planned) -> Result<Got, String> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(target.ip(), 0))
        .await
        .map_err(|error| format!("cannot open a socket: {error}"))?;
    let port = socket.local_addr().map_err(|error| format!("cannot open a socket: {error}"))?.port();
    let _registered = pipeline.register_internal(port, Some(&question.group));
    let id: u16 = rand::random();
    let query = query_bytes(id, &question.name, question.record_type);
    socket.send_to(&query, target).await.map_err(|error| format!("cannot send to {target}: {error}"))?;
    let mut buffer = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv_from(&mut buffer)).await {
            Err(_) => return Err(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())),
            Ok(Err(error)) => return Err(format!("no answer: {error}")),
            Ok(Ok((length, from))) if from == target && length >= 12 && buffer[..2] == id.to_be_bytes() => {
                return Got::read(&buffer[..length]);
            }
            Ok(Ok(_)) => continue,
        }
    }
}

/// A recursive query for `name` with EDNS (so the answer carries
/// Hedgerow's Extended DNS Error).
fn query_bytes(id: u16, name: &str, record_type: RecordType) -> Vec<u8> {
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01]);
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&u16::from(record_type).to_be_bytes());
    query.extend_from_slice(&[0x00, 0x01]);
    // OPT: root name, type 41, UDP size 1232, no extended flags, no options.
    query.extend_from_slice(&[0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_name_is_in_its_categorys_seed_list() {
        let names = shipped();
        assert!(names.category.len() >= 20, "one entry per shipped category");
        for entry in &names.category {
            let bit = category::index_of(&entry.id).unwrap_or_else(|| panic!("{} is not a category", entry.id));
            assert!(!entry.names.is_empty());
            for name in &entry.names {
                assert!(
                    seed_categories(name).contains(bit),
                    "{name} is not in lists/seed/{}.txt: the self-test must ask for names Hedgerow ships",
                    entry.id
                );
            }
        }
        for swgfl in ["iwf.testfiltering.com", "ctiru.testfiltering.com", "testfiltering.pornhub.com"] {
            assert!(names.category.iter().any(|entry| entry.names.iter().any(|n| n == swgfl)), "{swgfl}");
        }
        // Every shipped category has a test name (custom categories other
        // tests register in this process are not shipped).
        for known in category::parse_declarations(category::SHIPPED_TEXT).unwrap() {
            assert!(names.category.iter().any(|entry| entry.id == known.id), "no test name for {}", known.id);
        }
    }

    #[test]
    fn every_safesearch_engine_has_a_name_the_shipped_map_rewrites() {
        let map = crate::lists::floor::safesearch();
        let strict = crate::policy::GroupPolicy {
            safesearch: true,
            youtube: crate::policy::group::YoutubeMode::Strict,
            ..crate::config::Config::embedded_default().groups["pupil"].clone()
        };
        for engine in &shipped().safesearch {
            let rewrite = map.find(&engine.name, &strict).unwrap_or_else(|| panic!("{} is not rewritten", engine.name));
            assert_eq!(rewrite.service, engine.service);
        }
    }

    #[test]
    fn expectations_follow_the_config_and_overrides() {
        let config = crate::config::Config::embedded_default();
        let plan = plan(&config, &crate::lists::floor::safesearch(), crate::time::now_ms());
        let find = |group: &str, name: &str| {
            plan.iter().find(|p| p.group == group && p.name == name).unwrap_or_else(|| panic!("{group} {name}"))
        };
        assert_eq!(find("pupil", "testfiltering.pornhub.com").expect, Expect::Blocked);
        assert_eq!(find("pupil", "roblox.com").expect, Expect::Blocked);
        assert_eq!(find("staff", "iwf.testfiltering.com").expect, Expect::Blocked);
        assert_eq!(find("staff", "roblox.com").expect, Expect::Allowed);
        assert_eq!(find("pupil", "www.google.com").expect, Expect::Cname("forcesafesearch.google.com".into()));
        assert_eq!(find("staff", "www.youtube.com").expect, Expect::Cname("restrictmoderate.youtube.com".into()));
        assert_eq!(find("pupil", "use-application-dns.net").expect, Expect::NxDomain);
        assert!(!plan.iter().any(|p| p.group == "staff" && p.kind == "bypass"), "staff have bypass off");
        // stormfront.org is also an extremism name: blocked wherever either is on.
        let mut staff = config.groups["staff"].clone();
        staff.allow.insert("roblox.com");
        assert_eq!(
            category_expectation(config.locked, &staff, category::index_of("games").unwrap(), "x.roblox.com"),
            Expect::Allowed
        );
        staff.allow.insert("iwf.testfiltering.com");
        let csam = category::index_of("csam").unwrap();
        assert_eq!(category_expectation(config.locked, &staff, csam, "iwf.testfiltering.com"), Expect::Blocked);
    }

    #[test]
    fn answers_are_judged_from_the_wire() {
        let blocked = Got {
            code: ResponseCode::NXDomain,
            blocked: Some("blocked by Hedgerow".into()),
            cname: None,
            addresses: vec![],
            records: 0,
        };
        assert_eq!(judge(&Expect::Blocked, &Ok(blocked.clone())), (true, "blocked (NXDOMAIN)".into()));
        assert!(!judge(&Expect::Allowed, &Ok(blocked.clone())).0);
        // The upstream's own NXDOMAIN (no block mark) is not a block.
        let upstream_nx = Got { blocked: None, ..blocked.clone() };
        assert!(!judge(&Expect::Blocked, &Ok(upstream_nx.clone())).0);
        assert!(judge(&Expect::Allowed, &Ok(upstream_nx)).0);
        let servfail = Got { code: ResponseCode::ServFail, blocked: None, ..blocked.clone() };
        let (passed, got) = judge(&Expect::Allowed, &Ok(servfail));
        assert!(!passed && got.starts_with("could not check"), "{got}");
        let (passed, got) = judge(&Expect::Blocked, &Err("no answer within 3 s".into()));
        assert!(!passed && got.starts_with("could not check"));
        let resolved = Got {
            code: ResponseCode::NoError,
            blocked: None,
            cname: Some("forcesafesearch.google.com".into()),
            addresses: vec!["192.0.2.1".into()],
            records: 2,
        };
        assert!(judge(&Expect::Cname("forcesafesearch.google.com".into()), &Ok(resolved.clone())).0);
        assert!(!judge(&Expect::Cname("strict.bing.com".into()), &Ok(resolved)).0);
    }
}
