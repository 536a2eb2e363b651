//! The query path: the one place the order of the stages lives.
//!
//! ```text
//! access     source in a configured network, under its rate limit? else REFUSED
//! identify   network -> group (shares access's lookup: one walk of the subnets)
//! bypass     encrypted-DNS canaries, Private Relay, DDR discovery (groups with bypass on)
//! safesearch search hosts -> CNAME to the safe host + its records (A/AAAA/HTTPS/SVCB)
//! blocklist  name or a parent in a category the group is kept from? -> block answer
//! query-type ANY -> RFC 8482 HINFO; meta types (0, OPT, AXFR, IXFR, MAILA, ...) -> NOTIMP
//! cache      fresh answer? (a stale one is kept in hand for serve-stale)
//! upstream   forward or recurse; on failure, the stale answer or SERVFAIL
//! inspection CNAME targets in the answer re-checked by the blocklist stage
//! ```
//!
//! Each stage returns either a final answer or the value the next stage
//! needs. The synchronous part ([`Pipeline::answer_now`]) runs on the
//! listener's own task and settles most queries (policy answers and cache
//! hits); only what must go upstream is handed to [`Pipeline::resolve`].
//! [`Pipeline::decide`] runs the policy stages alone, which is what
//! `hedgerow check` prints without sending anything upstream.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::access::{self, ClientRateLimiter};
use super::answer::{Answer, Question, UpstreamAnswer, UpstreamError};
use super::blocklist::{self, Verdict};
use super::bypass;
use super::cache::{AnswerCache, CacheKey, CacheLookup, CachedAnswer};
use super::decision::{Decision, DecisionKind, Stage};
use super::finished::{Finished, Observer};
use super::identify::{Client, DeviceGroup, DeviceGroupsReport, NetworkMap};
use super::query_type;
use super::upstream::Upstream;
use crate::alerts::feed::{AlertFeed, Sighting};
use crate::config::{Config, RateLimit};
use crate::lists::compiled::CompiledLists;
use crate::metrics::{Lookup, Metrics};
use crate::name;
use crate::policy::safesearch::Target;
use crate::policy::{CategorySet, GroupPolicy, SafeSearchMap};
use crate::store::{QueryLog, QueryRecord};

/// Who is asking: a real source address, or (for `hedgerow check --group`) a
/// group named directly.
#[derive(Debug, Clone)]
pub enum Requester<'a> {
    Source(IpAddr),
    Group(&'a str),
}

/// The outcome of the policy stages.
pub enum Flow {
    /// Policy settled the answer.
    Final(Answer),
    /// Policy lets the query through: resolve it.
    Resolve(Pending),
}

/// A query policy let through, waiting for the cache or upstream.
pub struct Pending {
    pub client: Arc<Client>,
    /// SafeSearch: resolve the safe host instead, and answer with a CNAME to it.
    pub rewrite: Option<SafeRewrite>,
    /// The decision of an allow override that let it through: the answer
    /// that follows, from the cache or upstream, carries it. `None` when no
    /// policy stage had anything to say (the cache or upstream decides).
    pub allowed: Option<Decision>,
    /// The policy that let it through, taken when the query leaves the
    /// synchronous stages (a cache hit never pays for it): inspection after
    /// upstream uses the same policy even if a reload swapped in another.
    policy: Option<Arc<PolicySnapshot>>,
}

impl Pending {
    /// What policy decided, as `hedgerow check` shows it (nothing is sent
    /// upstream): the rewrite, the allow override, or that nothing stops it.
    pub fn policy_decision(&self) -> Decision {
        match (&self.rewrite, &self.allowed) {
            (Some(rewrite), _) => rewrite.decision.clone(),
            (None, Some(allowed)) => allowed.clone(),
            (None, None) => Decision::not_stopped(&self.client),
        }
    }
}

/// A SafeSearch rewrite to a safe host.
#[derive(Debug, Clone)]
pub struct SafeRewrite {
    pub target: LowerName,
    pub decision: Decision,
}

/// What the synchronous stages could settle.
pub enum Immediate {
    /// Settled by policy (or a rewrite answered from the cache).
    Answer(Answer),
    /// A fresh cache entry, to be written with its TTLs counted down by `age` seconds.
    Cached { entry: Arc<CachedAnswer>, age: u32, decision: Decision },
    /// Must go upstream (the asynchronous part).
    Upstream(Pending),
}

/// When a query arrived. The listeners read the clocks once per batch of
/// datagrams (reading them is a measurable share of answering from the
/// cache): the cache counts TTLs from `at`, the log stamps rows with `unix_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// UTC Unix milliseconds.
    pub unix_ms: i64,
}

impl Arrival {
    pub fn now() -> Arrival {
        Arrival { at: Instant::now(), unix_ms: crate::time::now_ms() }
    }
}

/// Everything policy decides with, swapped whole on reload: a query loads it
/// once and answers with that one snapshot, old or new, never a mix.
#[derive(Clone)]
pub struct PolicySnapshot {
    networks: Arc<NetworkMap>,
    policies: HashMap<Arc<str>, Arc<GroupPolicy>>,
    locked: CategorySet,
    lists: Arc<CompiledLists>,
    safesearch: Arc<SafeSearchMap>,
    rate_limiter: Option<Arc<ClientRateLimiter>>,
    rate_limit: RateLimit,
}

impl PolicySnapshot {
    fn new(config: &Config, lists: Arc<CompiledLists>, safesearch: Arc<SafeSearchMap>) -> PolicySnapshot {
        let policies: HashMap<Arc<str>, Arc<GroupPolicy>> =
            config.groups.iter().map(|(name, policy)| (Arc::from(name.as_str()), Arc::new(policy.clone()))).collect();
        PolicySnapshot {
            networks: Arc::new(NetworkMap::new(&config.networks, &policies)),
            rate_limiter: ClientRateLimiter::new(&config.rate_limit).map(Arc::new),
            rate_limit: config.rate_limit.clone(),
            policies,
            locked: config.locked,
            lists,
            safesearch,
        }
    }
}

pub struct Pipeline {
    /// Swapped whole on reload; readers keep the snapshot they loaded.
    policy: ArcSwap<PolicySnapshot>,
    /// The device table's groups last applied: a new policy re-applies them.
    /// Held by whoever replaces the policy (never on the query path), so a
    /// device update and a reload cannot lose each other's change.
    devices: std::sync::Mutex<Vec<DeviceGroup>>,
    /// Shared with background refreshes of stale answers.
    cache: Arc<AnswerCache>,
    upstream: Arc<Upstream>,
    /// The query log: an observer that never changes an answer or waits.
    log: Option<QueryLog>,
    /// The counters `/metrics` and the overview read: atomics, fed by `finish`.
    metrics: Arc<Metrics>,
    /// The alerts' feed: blocked and bypass lookups some rule watches, through
    /// their own channel (set once by `serve` when the query log is on).
    alerts: std::sync::OnceLock<AlertFeed>,
    /// The UDP addresses the listeners bound (readiness probes the first).
    listeners: std::sync::OnceLock<Vec<std::net::SocketAddr>>,
    /// The server's own queries in flight (the readiness probe, the
    /// self-test): ports registered on the probe target's address. Their
    /// answers are not a school's traffic: no observer sees them.
    internal: InternalPorts,
}

/// The ports of the server's own sockets asking its listener ("internal
/// queries": the readiness probe, the self-test), each with the group it
/// asks as (`None`: decided by its source address, as any query). Only the
/// server process registers ports, and only of sockets it bound on
/// [`Pipeline::probe_target`]'s address, so no outside query can pass as one.
///
/// The DNS fast path pays one relaxed atomic load while none is in flight
/// (`in_flight == 0`); the map's lock is taken only while one is (and then
/// only for queries from the probe target's address). A port is registered
/// before its socket sends and removed after its answers are read; the
/// listener marks the query internal when it reads it
/// (`WireQuery::internal`), so its answer reaches no observer however late
/// it is finished.
#[derive(Default)]
struct InternalPorts {
    in_flight: std::sync::atomic::AtomicUsize,
    ports: std::sync::RwLock<HashMap<u16, Option<Arc<str>>>>,
}

/// An internal query's port, registered with the pipeline until dropped.
pub struct InternalPort<'p> {
    pipeline: &'p Pipeline,
    port: u16,
}

impl Drop for InternalPort<'_> {
    fn drop(&mut self) {
        let internal = &self.pipeline.internal;
        let mut ports = internal.ports.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ports.remove(&self.port).is_some() {
            internal.in_flight.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// What the pipeline knows of an internal query's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Internal {
    /// The group it asks as, or `None`: by its source address.
    pub group: Option<Arc<str>>,
}

impl Pipeline {
    pub fn new(
        config: &Config,
        lists: CompiledLists,
        safesearch: SafeSearchMap,
        log: Option<QueryLog>,
    ) -> Result<Pipeline, UpstreamError> {
        let policy = PolicySnapshot::new(config, Arc::new(lists), Arc::new(safesearch));
        let metrics = Arc::new(Metrics::new());
        metrics.register_groups(config.groups.keys().map(String::as_str));
        Ok(Pipeline {
            policy: ArcSwap::from_pointee(policy),
            devices: std::sync::Mutex::new(Vec::new()),
            cache: Arc::new(AnswerCache::new(&config.cache)),
            upstream: Arc::new(Upstream::new(&config.upstream)?),
            log,
            metrics,
            alerts: std::sync::OnceLock::new(),
            listeners: std::sync::OnceLock::new(),
            internal: InternalPorts::default(),
        })
    }

    /// Hands a finished answer to the observers (the metrics' atomic
    /// counters, the alerts' feed, then the query log). Never waits: a full
    /// channel drops and counts; the alerts' channel is its own, so log
    /// shedding never loses an alert.
    pub fn finish(&self, finished: &Finished<'_>) {
        self.metrics.finished(finished);
        if let Some(alerts) = self.alerts.get() {
            alerts.finished(finished);
        }
        if let Some(log) = &self.log {
            log.finished(finished);
        }
    }

    /// Subscribes the alerts' feed (once; a second call is ignored).
    pub fn set_alert_feed(&self, feed: AlertFeed) {
        let _ = self.alerts.set(feed);
    }

    /// The alerts' feed, if alerts are on.
    pub fn alert_feed(&self) -> Option<&AlertFeed> {
        self.alerts.get()
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The UDP addresses its listeners bound (empty before they start).
    pub fn listeners(&self) -> &[std::net::SocketAddr] {
        self.listeners.get().map_or(&[], Vec::as_slice)
    }

    /// Registers `port` (a socket the server bound on
    /// [`Self::probe_target`]'s address) as an internal query's until the
    /// returned guard is dropped: its queries are asked as `group` (or by
    /// their source address when `None`) and their answers reach no
    /// observer. A port already registered is replaced.
    pub fn register_internal(&self, port: u16, group: Option<&str>) -> InternalPort<'_> {
        let mut ports = self.internal.ports.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ports.insert(port, group.map(Arc::from)).is_none() {
            self.internal.in_flight.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        InternalPort { pipeline: self, port }
    }

    /// Where the server's own queries ask: the first UDP listener's address,
    /// or loopback for a wildcard. They are sent from the same address, so
    /// their answers are known by address and port ([`Self::internal`]).
    pub fn probe_target(&self) -> Option<std::net::SocketAddr> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        let listener = *self.listeners().first()?;
        Some(match listener.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listener.port()),
            IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listener.port()),
            _ => listener,
        })
    }

    /// The internal query from `source`, if it is one: sent from a
    /// registered port on the address the server's own queries ask
    /// ([`Self::probe_target`]). One relaxed load when none is in flight.
    #[inline]
    pub fn internal(&self, source: std::net::SocketAddr) -> Option<Internal> {
        if self.internal.in_flight.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return None;
        }
        self.internal_slow(source)
    }

    #[cold]
    fn internal_slow(&self, source: std::net::SocketAddr) -> Option<Internal> {
        if self.probe_target().is_none_or(|target| target.ip() != source.ip()) {
            return None;
        }
        let ports = self.internal.ports.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        ports.get(&source.port()).map(|group| Internal { group: group.clone() })
    }

    /// Records the listeners' UDP addresses (once, by `DnsServer::start`).
    pub fn set_listeners(&self, addresses: Vec<std::net::SocketAddr>) {
        let _ = self.listeners.set(addresses);
    }

    /// The answer cache's entries and weight in bytes now.
    pub fn cache_size(&self) -> (usize, u64) {
        (self.cache.len(), self.cache.weight())
    }

    /// The query log, if logging is on.
    pub fn log(&self) -> Option<&QueryLog> {
        self.log.as_ref()
    }

    /// Swaps in new compiled lists and SafeSearch map. Queries in progress
    /// finish with what they started with; none waits.
    pub fn replace_lists(&self, lists: CompiledLists, safesearch: SafeSearchMap) {
        let _writer = self.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = PolicySnapshot::clone(&self.policy.load());
        next.lists = Arc::new(lists);
        next.safesearch = Arc::new(safesearch);
        self.policy.store(Arc::new(next));
    }

    /// Swaps in a whole new policy: `config`'s networks, groups, locks and
    /// rate limits with `lists` and `safesearch`, and the device table's
    /// groups last applied, resolved against the new groups. One swap:
    /// each query answers wholly by the old policy or wholly by the new.
    /// Rate-limit buckets carry over unless the limits changed. The cache,
    /// upstream and log are not part of the policy and stay.
    pub fn replace_policy(
        &self,
        config: &Config,
        lists: CompiledLists,
        safesearch: SafeSearchMap,
    ) -> DeviceGroupsReport {
        self.swap_policy(config, |_| (Arc::new(lists), Arc::new(safesearch)))
    }

    /// Swaps in `config`'s policy (as [`Pipeline::replace_policy`]) keeping
    /// the lists and SafeSearch map in use: the policy clock's swap when a
    /// schedule window opens or closes or an override lapses.
    pub fn replace_policy_keeping_lists(&self, config: &Config) -> DeviceGroupsReport {
        self.swap_policy(config, |current| (current.lists.clone(), current.safesearch.clone()))
    }

    /// The one swap of a whole policy: `config`'s, with the lists `lists_of`
    /// picks given the snapshot in force, and the device groups re-applied.
    fn swap_policy(
        &self,
        config: &Config,
        lists_of: impl FnOnce(&PolicySnapshot) -> (Arc<CompiledLists>, Arc<SafeSearchMap>),
    ) -> DeviceGroupsReport {
        let devices = self.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.policy.load();
        let (lists, safesearch) = lists_of(&current);
        let mut next = PolicySnapshot::new(config, lists, safesearch);
        self.metrics.register_groups(config.groups.keys().map(String::as_str));
        if let Some(alerts) = self.alerts.get() {
            alerts.watch(&config.alerts.rules);
        }
        if next.rate_limit == current.rate_limit {
            next.rate_limiter = current.rate_limiter.clone();
        }
        let (networks, report) = next.networks.with_device_groups(&devices);
        next.networks = Arc::new(networks);
        self.policy.store(Arc::new(next));
        report
    }

    /// The list set in use now.
    pub fn lists(&self) -> Arc<CompiledLists> {
        self.policy.load().lists.clone()
    }

    fn policy<'c>(&self, client: &'c Client) -> &'c GroupPolicy {
        &client.policy
    }

    /// Answers one question from one source: every stage, in order.
    pub async fn answer(&self, source: IpAddr, question: &Question) -> Answer {
        match self.answer_now(source, question) {
            Immediate::Answer(answer) => answer,
            Immediate::Cached { entry, decision, .. } => {
                let mut answer = Answer::from_upstream(entry.answer_at(Instant::now()), decision);
                answer.cache_hit = true;
                answer
            }
            Immediate::Upstream(pending) => self.resolve(&pending, question).await,
        }
    }

    /// The stages that need no waiting: policy, then the cache.
    pub fn answer_now(&self, source: IpAddr, question: &Question) -> Immediate {
        self.answer_now_at(source, question, Instant::now())
    }

    /// [`answer_now`](Self::answer_now) with the clock already read (the
    /// listeners read it once per batch of datagrams).
    pub fn answer_now_at(&self, source: IpAddr, question: &Question, now: Instant) -> Immediate {
        self.answer_now_as(Requester::Source(source), question, now)
    }

    /// [`answer_now_at`](Self::answer_now_at) for any requester: an
    /// internal query registered with a group asks as that group.
    pub fn answer_now_as(&self, requester: Requester<'_>, question: &Question, now: Instant) -> Immediate {
        let snapshot = self.policy.load();
        let mut pending = match self.decide_in(&snapshot, requester, question, true) {
            Flow::Final(answer) => return Immediate::Answer(answer),
            Flow::Resolve(pending) => pending,
        };
        if let Some(rewrite) = &pending.rewrite {
            let target = Question { name: rewrite.target.clone(), ..question.clone() };
            return match self.cache.get(&cache_key(&target), now) {
                CacheLookup::Fresh(entry) => {
                    let target = Fetched { answer: entry.answer_at(now), cache_hit: true, upstream_latency: None };
                    Immediate::Answer(rewritten(&pending.client, question, rewrite, Ok(target)))
                }
                CacheLookup::Stale(_) | CacheLookup::Miss => {
                    pending.policy = Some(Arc::clone(&snapshot));
                    Immediate::Upstream(pending)
                }
            };
        }
        match self.cache.get(&cache_key(question), now) {
            CacheLookup::Fresh(entry) => {
                if let Some(blocked) = self.inspect(&snapshot, &pending.client, question, entry.records_to_inspect()) {
                    return Immediate::Answer(blocked);
                }
                let decision = match pending.allowed.take() {
                    Some(allowed) => allowed,
                    None => Decision::allowed_from_cache(&pending.client),
                };
                Immediate::Cached { age: entry.age(now), entry, decision }
            }
            // A stale entry is fetched again in `resolve`, which keeps it for
            // serve-stale if upstream fails.
            CacheLookup::Stale(_) | CacheLookup::Miss => {
                pending.policy = Some(Arc::clone(&snapshot));
                Immediate::Upstream(pending)
            }
        }
    }

    /// The policy stages alone. `count_towards_rate_limit` is false for
    /// `hedgerow check`, which must not spend a client's tokens.
    pub fn decide(&self, requester: Requester<'_>, question: &Question, count_towards_rate_limit: bool) -> Flow {
        let snapshot = self.policy.load();
        match self.decide_in(&snapshot, requester, question, count_towards_rate_limit) {
            Flow::Resolve(mut pending) => {
                pending.policy = Some(Arc::clone(&snapshot));
                Flow::Resolve(pending)
            }
            settled => settled,
        }
    }

    /// [`decide`](Self::decide) by one policy snapshot, loaded once by the caller.
    fn decide_in(
        &self,
        snapshot: &PolicySnapshot,
        requester: Requester<'_>,
        question: &Question,
        count_towards_rate_limit: bool,
    ) -> Flow {
        // access + identify
        let client = match requester {
            Requester::Source(source) => {
                let limiter = snapshot.rate_limiter.as_deref().filter(|_| count_towards_rate_limit);
                match access::admit(&snapshot.networks, limiter, source) {
                    Ok(client) => snapshot.networks.with_device_group(source, client),
                    Err(decision) => return Flow::Final(Answer::empty(ResponseCode::Refused, decision)),
                }
            }
            Requester::Group(group) => match snapshot.policies.get_key_value(group) {
                Some((group, policy)) => Arc::new(Client {
                    network: Arc::from("(named group)"),
                    group: group.clone(),
                    policy: policy.clone(),
                    device: None,
                }),
                None => {
                    return Flow::Final(Answer::empty(ResponseCode::Refused, Decision::unknown_group(group)));
                }
            },
        };
        let policy = self.policy(&client);
        let mut buffer = [0u8; 256];
        let name = name::dotted(&question.name, &mut buffer);

        // bypass
        if policy.bypass
            && let Some(canary) = bypass::canary(name)
        {
            let decision = Decision::bypass(&client, canary.reason.to_string());
            return Flow::Final(Answer::empty(canary.answer.response_code(), decision));
        }

        // safesearch
        let rewritable =
            matches!(question.record_type, RecordType::A | RecordType::AAAA | RecordType::HTTPS | RecordType::SVCB);
        if rewritable && let Some(rewrite) = snapshot.safesearch.find(&String::from_utf8_lossy(name), policy) {
            let decision = Decision::safesearch(&client, format!("{rewrite} (group {})", client.group));
            match &rewrite.target {
                Target::Address(address) => {
                    let mut answer = Answer::empty(ResponseCode::NoError, decision);
                    if question.record_type == RecordType::A {
                        answer.answers.push(Record::from_rdata(
                            Name::from(&question.name),
                            REWRITE_TTL,
                            RData::A(A(*address)),
                        ));
                    }
                    return Flow::Final(answer);
                }
                Target::Host(host) => match Name::from_ascii(format!("{host}.")) {
                    Ok(target) => {
                        let rewrite = SafeRewrite { target: LowerName::from(target), decision };
                        return Flow::Resolve(Pending { client, rewrite: Some(rewrite), allowed: None, policy: None });
                    }
                    Err(_) => return Flow::Final(Answer::empty(ResponseCode::ServFail, decision)),
                },
            }
        }

        // blocklist
        let allowed = match blocklist::check(&snapshot.lists, policy, snapshot.locked, name) {
            Verdict::Blocked(block) => {
                let decision = block.decision(&client, &String::from_utf8_lossy(name));
                let answer = blocklist::block_answer(policy, &question.name, question.record_type, &block, decision);
                return Flow::Final(answer);
            }
            Verdict::Allowed { rule, overrode } => {
                let listing = overrode.as_ref().map(blocklist::Block::listing);
                Some(Decision::allowed_by_override(&client, &String::from_utf8_lossy(name), &rule.rule, listing))
            }
            Verdict::Pass => None,
        };

        // query-type: after policy (a blocked name stays blocked whatever the
        // type), before the cache and upstream (which never see ANY or meta types)
        if let Some(answer) = query_type::answer(question, &client) {
            return Flow::Final(answer);
        }

        Flow::Resolve(Pending { client, rewrite: None, allowed, policy: None })
    }

    /// The cache and upstream stages, for a query policy let through.
    pub async fn resolve(&self, pending: &Pending, question: &Question) -> Answer {
        let current;
        let policy = match &pending.policy {
            Some(policy) => policy,
            None => {
                current = self.policy.load_full();
                &current
            }
        };
        match &pending.rewrite {
            Some(rewrite) => {
                let target = Question { name: rewrite.target.clone(), ..question.clone() };
                let answer = self.resolve_name(policy, &pending.client, &target, None).await;
                let fetched = match answer.response_code {
                    ResponseCode::NoError => Ok(Fetched {
                        answer: UpstreamAnswer {
                            response_code: answer.response_code,
                            answers: answer.answers,
                            authorities: answer.authorities,
                        },
                        cache_hit: answer.cache_hit,
                        upstream_latency: answer.upstream_latency,
                    }),
                    failed => Err(failed),
                };
                rewritten(&pending.client, question, rewrite, fetched)
            }
            None => self.resolve_name(policy, &pending.client, question, pending.allowed.as_ref()).await,
        }
    }

    /// The cache and upstream for one name; `allowed` is the allow
    /// override's decision, which an allowed answer then carries.
    async fn resolve_name(
        &self,
        policy: &PolicySnapshot,
        client: &Client,
        question: &Question,
        allowed: Option<&Decision>,
    ) -> Answer {
        let key = cache_key(question);
        let now = Instant::now();
        let stale = match self.cache.get(&key, now) {
            CacheLookup::Fresh(entry) => {
                if let Some(blocked) = self.inspect(policy, client, question, entry.records_to_inspect()) {
                    return blocked;
                }
                let decision = allowed.cloned().unwrap_or_else(|| Decision::allowed_from_cache(client));
                let mut answer = Answer::from_upstream(entry.answer_at(now), decision);
                answer.cache_hit = true;
                return answer;
            }
            CacheLookup::Stale(entry) => entry,
            CacheLookup::Miss => {
                // The common case: ask on this task, no spawn. A question
                // already in flight is merged with it inside `Upstream`.
                let started = Instant::now();
                let result = self
                    .upstream
                    .resolve(&question.name, question.record_type, question.dnssec_ok, |answer| {
                        self.cache.insert(&key, &question.name, question.record_type, answer.clone(), Instant::now())
                    })
                    .await;
                return self.upstream_answer(policy, client, question, allowed, result, started.elapsed());
            }
        };
        self.refresh_or_serve_stale(policy, client, question, allowed, key, stale, now).await
    }

    /// Answer inspection: a CNAME in the answer whose target is blocked for
    /// this group blocks the whole answer.
    fn inspect(
        &self,
        snapshot: &PolicySnapshot,
        client: &Client,
        question: &Question,
        records: &[Record],
    ) -> Option<Answer> {
        if !records.iter().any(|record| matches!(record.data, RData::CNAME(_))) {
            return None; // the common case: nothing to inspect
        }
        let policy = self.policy(client);
        let lists = &snapshot.lists;
        let mut buffer = [0u8; 256];
        records.iter().find_map(|record| {
            let RData::CNAME(target) = &record.data else { return None };
            let target_name = name::dotted(&target.0, &mut buffer);
            let Verdict::Blocked(block) = blocklist::check(lists, policy, snapshot.locked, target_name) else {
                return None;
            };
            let decision = block.cname_decision(client, &String::from_utf8_lossy(target_name));
            Some(blocklist::block_answer(policy, &question.name, question.record_type, &block, decision))
        })
    }

    /// True when `source` is in a configured network (the TCP listener
    /// keeps outsiders out of its connection slots).
    pub fn is_insider(&self, source: IpAddr) -> bool {
        self.policy.load().networks.identify(source).is_some()
    }

    /// Periodic upkeep: forget rate-limit buckets of idle clients.
    pub fn tidy(&self) {
        if let Some(limiter) = &self.policy.load().rate_limiter {
            limiter.forget_idle_clients();
        }
    }

    pub fn upstream_description(&self) -> &'static str {
        self.upstream.describe()
    }

    /// Swaps in the device table's groups (see `identify`) as a new policy
    /// snapshot; queries in progress keep the identity they started with.
    pub fn replace_device_groups(&self, devices: &[DeviceGroup]) -> DeviceGroupsReport {
        let mut applied = self.devices.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *applied = devices.to_vec();
        let mut next = PolicySnapshot::clone(&self.policy.load());
        let (networks, report) = next.networks.with_device_groups(devices);
        next.networks = Arc::new(networks);
        self.policy.store(Arc::new(next));
        report
    }

    /// How many devices have a group of their own now.
    pub fn device_groups(&self) -> usize {
        self.policy.load().networks.device_groups()
    }

    /// The configured group names, sorted.
    pub fn group_names(&self) -> Vec<String> {
        self.policy.load().networks.group_names().into_iter().map(String::from).collect()
    }
}

/// TTL of synthesised SafeSearch records: short enough that a change of
/// policy or of the engine's safe host is picked up soon.
const REWRITE_TTL: u32 = 300;

/// The safe host's records as the cache or upstream gave them.
struct Fetched {
    answer: UpstreamAnswer,
    cache_hit: bool,
    upstream_latency: Option<Duration>,
}

/// The answer to a rewritten name: a CNAME to the safe host, then the safe
/// host's own records. If the safe host could not be resolved (`Err` with
/// its response code) the answer is SERVFAIL, never the unrestricted address.
fn rewritten(
    client: &Client,
    question: &Question,
    rewrite: &SafeRewrite,
    target: Result<Fetched, ResponseCode>,
) -> Answer {
    let target = match target {
        Ok(target) => target,
        Err(failed) => {
            let decision = Decision::safesearch_failed(client, &rewrite.decision.reason, failed);
            return Answer::empty(ResponseCode::ServFail, decision);
        }
    };
    let ttl = target.answer.answers.iter().map(|r| r.ttl).min().unwrap_or(REWRITE_TTL).min(REWRITE_TTL);
    let cname = Record::from_rdata(Name::from(&question.name), ttl, RData::CNAME(CNAME(Name::from(&rewrite.target))));
    let mut answer = Answer::empty(ResponseCode::NoError, rewrite.decision.clone());
    answer.answers = std::iter::once(cname).chain(target.answer.answers).collect();
    answer.cache_hit = target.cache_hit;
    answer.upstream_latency = target.upstream_latency;
    answer
}

fn cache_key(question: &Question) -> CacheKey {
    CacheKey::new(&question.name, question.record_type, question.dnssec_ok)
}

/// RFC 8767 failure recheck: after a refresh of a stale answer fails, the
/// stale answer is served at once, without asking upstream again, this long.
const FAILURE_RECHECK: Duration = Duration::from_secs(30);

impl Pipeline {
    /// An expired answer is in hand (RFC 8767). Refresh it from upstream, and
    /// answer with the fresh copy if it comes within the client response
    /// timer (`cache.stale_answer_after_ms`); otherwise answer stale (TTL 30)
    /// and let the refresh finish in the background, updating the cache.
    /// When every upstream server is marked down, answer stale at once (still
    /// refreshing); when a refresh of this answer failed within the failure
    /// recheck time, answer stale at once and do not ask.
    async fn refresh_or_serve_stale(
        &self,
        policy: &PolicySnapshot,
        client: &Client,
        question: &Question,
        allowed: Option<&Decision>,
        key: CacheKey,
        stale: Arc<CachedAnswer>,
        now: Instant,
    ) -> Answer {
        if let Some(failed) = stale.refresh_failed_at()
            && now.saturating_duration_since(failed) < FAILURE_RECHECK
        {
            let ago = now.saturating_duration_since(failed).as_secs();
            let why = format!(
                "refreshing it failed {ago} s ago, so upstream is not asked again for {} s (RFC 8767 failure recheck)",
                FAILURE_RECHECK.as_secs()
            );
            return self.stale_answer(policy, client, question, &stale, why, None);
        }
        let started = Instant::now();
        let refresh = self.spawn_refresh(question, key, stale.clone());
        if self.upstream.is_down_for(&question.name) {
            let why =
                "every upstream server is marked down (failed within the last 30 s); refreshing in the background";
            return self.stale_answer(policy, client, question, &stale, why.to_string(), None);
        }
        let wait = self.cache.stale_answer_after();
        match tokio::time::timeout(wait, refresh).await {
            Ok(Ok(Ok(upstream))) => {
                self.upstream_answer(policy, client, question, allowed, Ok(upstream), started.elapsed())
            }
            Ok(Ok(Err(error))) => {
                let why = format!("every upstream failed: {error}");
                self.stale_answer(policy, client, question, &stale, why, Some(started.elapsed()))
            }
            Ok(Err(error)) => {
                let why = format!("the refresh stopped: {error}");
                self.stale_answer(policy, client, question, &stale, why, Some(started.elapsed()))
            }
            Err(_) => {
                let why = format!(
                    "upstream did not answer within {} ms (cache.stale_answer_after_ms); refreshing in the background",
                    wait.as_millis()
                );
                self.stale_answer(policy, client, question, &stale, why, Some(started.elapsed()))
            }
        }
    }

    /// Asks upstream for a stale answer's question on a task of its own, so
    /// it can finish (and update the cache) after the client was answered.
    /// Only stale answers pay for the spawn; a plain miss asks inline.
    fn spawn_refresh(
        &self,
        question: &Question,
        key: CacheKey,
        stale: Arc<CachedAnswer>,
    ) -> tokio::task::JoinHandle<Result<UpstreamAnswer, UpstreamError>> {
        let (upstream, cache, question) = (self.upstream.clone(), self.cache.clone(), question.clone());
        tokio::spawn(async move {
            let outcome = upstream
                .resolve(&question.name, question.record_type, question.dnssec_ok, |answer| {
                    cache.insert(&key, &question.name, question.record_type, answer.clone(), Instant::now())
                })
                .await;
            if let Err(error) = &outcome {
                tracing::debug!(name = %question.name, %error, "refreshing a stale answer failed");
                stale.note_failed_refresh(Instant::now());
            }
            outcome
        })
    }

    /// The answer from upstream (already cached), after inspection, or
    /// SERVFAIL when there is none. An allowed answer carries the allow
    /// override's decision when one let the name through.
    fn upstream_answer(
        &self,
        policy: &PolicySnapshot,
        client: &Client,
        question: &Question,
        allowed: Option<&Decision>,
        result: Result<UpstreamAnswer, UpstreamError>,
        latency: Duration,
    ) -> Answer {
        let mut answer = match result {
            Ok(upstream) => {
                if let Some(blocked) = self.inspect(policy, client, question, &upstream.answers) {
                    return blocked;
                }
                let decision = allowed
                    .cloned()
                    .unwrap_or_else(|| Decision::allowed_from_upstream(client, self.upstream.describe()));
                Answer::from_upstream(upstream, decision)
            }
            Err(error) => {
                tracing::debug!(name = %question.name, %error, "upstream failed");
                Answer::empty(ResponseCode::ServFail, Decision::upstream_failed(client, error))
            }
        };
        answer.upstream_latency = Some(latency);
        answer
    }

    /// The stale answer (TTL 30, RFC 8767), after inspection; its decision
    /// says it was served stale and why.
    fn stale_answer(
        &self,
        policy: &PolicySnapshot,
        client: &Client,
        question: &Question,
        stale: &CachedAnswer,
        why: String,
        waited: Option<Duration>,
    ) -> Answer {
        if let Some(blocked) = self.inspect(policy, client, question, stale.records_to_inspect()) {
            return blocked;
        }
        tracing::debug!(name = %question.name, %why, "serving a stale answer (RFC 8767)");
        let decision = Decision::served_stale(client, &why);
        let mut answer = Answer::from_upstream(stale.answer_at(Instant::now()), decision);
        answer.cache_hit = true;
        answer.upstream_latency = waited;
        answer
    }
}

/// The counters observe every finished answer: a few atomic adds.
impl Observer for Metrics {
    fn finished(&self, finished: &Finished<'_>) {
        let decision = finished.decision;
        let kind = decision.kind;
        let stale = decision.stage == Stage::Cache && decision.reason.starts_with("served stale");
        self.record(&Lookup {
            group: decision.group.as_deref(),
            decision: match kind {
                DecisionKind::Allowed => 0,
                DecisionKind::Blocked => 1,
                DecisionKind::SafeSearch => 2,
                DecisionKind::Bypass => 3,
                DecisionKind::Refused => 4,
                DecisionKind::Error => 5,
            },
            // A fresh cache entry: answered from the cache (its own decision,
            // or an allow override's), with no upstream asked.
            cache_hit: finished.cache_hit
                && !stale
                && kind == DecisionKind::Allowed
                && matches!(decision.stage, Stage::Cache | Stage::Blocklist),
            stale,
            upstream_failed: kind == DecisionKind::Error && decision.stage == Stage::Upstream,
            rate_limited: kind == DecisionKind::Refused && decision.stage == Stage::Access && decision.group.is_some(),
            outsider: kind == DecisionKind::Refused && decision.stage == Stage::Access && decision.group.is_none(),
            upstream_latency: if stale { None } else { finished.upstream_latency },
        });
    }
}

/// The alerts observe blocked and bypass answers that some rule watches:
/// for every other answer, a kind check and at most a short list compare.
impl Observer for AlertFeed {
    fn finished(&self, finished: &Finished<'_>) {
        let decision = finished.decision;
        let bypass_decision = decision.kind == DecisionKind::Bypass;
        if decision.kind != DecisionKind::Blocked && !bypass_decision {
            return;
        }
        let Some(bypass) = self.wants(decision.category.as_deref(), bypass_decision) else { return };
        let mut buffer = [0u8; 256];
        self.offer(Sighting {
            time_ms: finished.time_ms,
            source: finished.source.to_canonical(),
            name: String::from_utf8_lossy(name::dotted(finished.name, &mut buffer)).into_owned(),
            category: decision.category.clone(),
            bypass,
            network: decision.network.clone(),
            group: decision.group.clone(),
        });
    }
}

/// The query log observes every finished answer: a row is built only when
/// the log's channel has room (`QueryLog::record_with`).
impl Observer for QueryLog {
    fn finished(&self, finished: &Finished<'_>) {
        let decision = finished.decision;
        self.record_with(|| QueryRecord {
            time_ms: finished.time_ms,
            client: finished.source.to_canonical(),
            network: decision.network.clone(),
            group: decision.group.clone(),
            name: {
                let mut buffer = [0u8; 256];
                String::from_utf8_lossy(name::dotted(finished.name, &mut buffer)).into_owned()
            },
            record_type: u16::from(finished.record_type),
            decision: decision.kind.as_str(),
            category: decision.category.clone(),
            list: decision.list.clone(),
            response_code: u16::from(finished.response_code),
            upstream_ms: finished
                .upstream_latency
                .map(|latency| u32::try_from(latency.as_millis()).unwrap_or(u32::MAX)),
            cache_hit: finished.cache_hit,
            stage: Some(decision.stage.as_str()),
            reason: Some(decision.reason.clone()),
        });
    }
}
