//! upstream: where a name goes when the cache cannot answer. Either forwarded
//! to configured servers (UDP/TCP, DoT, DoH, with failover), or resolved
//! recursively from the root hints with hickory's recursor, with internal
//! zones sent to named servers (conditional forwarding).
//!
//! Identical questions in flight at once (same name in any case, type and DO
//! bit) are merged: one upstream query, its answer handed to every asker.
//! That saves upstream work when many clients ask one name at once, and
//! takes away the birthday attack on the cache (many queries in flight for
//! one name, each a chance for a forged reply to match).
//!
//! Negative answers (NXDOMAIN, NODATA) are answers, not failures: hickory
//! reports them as errors carrying the SOA, and they are mapped back here so
//! they can be cached and passed on. Only real failures (timeouts, SERVFAIL,
//! REFUSED) are errors, which is what lets the cache serve stale.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::recursor::{Recursor, RecursorError, RecursorOptions};
use tokio::sync::oneshot;

use super::answer::{UpstreamAnswer, UpstreamError};
use super::forward::UdpUpstream;
use crate::config::{self, ForwardProtocol, ForwardServer};

/// Longest a recursive resolution may take in all; it walks several servers.
const RECURSION_DEADLINE_FACTOR: u32 = 4;

/// What an upstream query comes to: an answer, or why there is none.
pub type Outcome = Result<UpstreamAnswer, UpstreamError>;

pub struct Upstream {
    route: Route,
    in_flight: InFlight,
}

enum Route {
    Forward(Forwarder),
    Recursive {
        recursor: Recursor<TokioRuntimeProvider>,
        /// Internal zones and the servers that answer each, most specific first.
        conditional: Vec<(LowerName, Forwarder)>,
        deadline: Duration,
    },
}

impl Upstream {
    pub fn new(settings: &config::Upstream) -> Result<Upstream, UpstreamError> {
        let route = match settings {
            config::Upstream::Forward { servers, timeout } => Route::Forward(Forwarder::new(servers, *timeout)?),
            config::Upstream::Recursive { root_hints, conditional, timeout } => {
                let mut options = RecursorOptions::default();
                // hickory refuses to recurse to loopback and private servers by
                // default (a rebinding defence). A root on a private address is
                // an operator's private root (a lab or the tests), whose whole
                // tree lives on such addresses, so the filter must go.
                if root_hints.iter().any(|ip| is_private(*ip)) {
                    options.deny_server.clear();
                }
                let recursor = Recursor::with_options(root_hints, options, TokioRuntimeProvider::default())
                    .map_err(|error| UpstreamError::Setup(error.to_string()))?;
                let mut zones = Vec::new();
                for entry in conditional {
                    let zone = Name::from_ascii(format!("{}.", entry.zone))
                        .map_err(|error| UpstreamError::Setup(format!("zone {:?}: {error}", entry.zone)))?;
                    zones.push((LowerName::from(zone), Forwarder::new(&entry.servers, *timeout)?));
                }
                zones.sort_by_key(|(zone, _)| std::cmp::Reverse(zone.num_labels()));
                Route::Recursive { recursor, conditional: zones, deadline: *timeout * RECURSION_DEADLINE_FACTOR }
            }
        };
        Ok(Upstream { route, in_flight: InFlight::default() })
    }

    /// A short description for `hedgerow check` and logs.
    pub fn describe(&self) -> &'static str {
        match self.route {
            Route::Forward(_) => "forwarded to the configured upstream servers",
            Route::Recursive { .. } => "resolved recursively from the root",
        }
    }

    /// True when every server that would be asked for `name` is marked down
    /// (it failed within the last 30 s). They are still asked, last; this
    /// only lets serve-stale answer without waiting for them. Recursion has
    /// no single server to mark, so it is never "down".
    pub fn is_down_for(&self, name: &LowerName) -> bool {
        let now = Instant::now();
        match &self.route {
            Route::Forward(forwarder) => forwarder.all_down(now),
            Route::Recursive { conditional, .. } => conditional
                .iter()
                .find(|(zone, _)| zone.zone_of(name))
                .is_some_and(|(_, forwarder)| forwarder.all_down(now)),
        }
    }

    /// Resolves one question. If the same question is already in flight, waits
    /// for that query's outcome instead of sending another. `on_answer` runs
    /// once, only for the query really sent, before anyone waiting on it is
    /// woken (the pipeline stores the answer in the cache there, so a client
    /// that asks again at once finds it).
    pub async fn resolve(
        &self,
        name: &LowerName,
        record_type: RecordType,
        dnssec_ok: bool,
        on_answer: impl FnOnce(&UpstreamAnswer),
    ) -> Outcome {
        let key = merge_key(name, record_type, dnssec_ok);
        loop {
            match self.in_flight.turn(&key) {
                Turn::Wait(outcome) => match outcome.await {
                    Ok(outcome) => return outcome,
                    // The query in flight was abandoned (its asker went
                    // away): ask again, perhaps as the one who sends it.
                    Err(_) => continue,
                },
                Turn::Ask(turn) => {
                    let outcome = self.route.resolve(name, record_type, dnssec_ok).await;
                    if let Ok(answer) = &outcome {
                        on_answer(answer);
                    }
                    for waiter in turn.finish() {
                        let _ = waiter.send(outcome.clone());
                    }
                    return outcome;
                }
            }
        }
    }
}

/// The merge key: DO bit, type, lower-case wire name.
fn merge_key(name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + 64);
    key.push(u8::from(dnssec_ok));
    key.extend_from_slice(&u16::from(record_type).to_be_bytes());
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key
}

/// Questions in flight upstream, each with whoever is waiting for its
/// outcome besides the task that asked. One lock taken twice per upstream
/// query (join, finish); nothing per cached answer.
#[derive(Default)]
struct InFlight {
    waiting: Mutex<HashMap<Box<[u8]>, Vec<oneshot::Sender<Outcome>>>>,
}

enum Turn<'a> {
    /// Nobody is asking this yet: ask, then hand the outcome on.
    Ask(AskTurn<'a>),
    /// Someone is: wait for their outcome.
    Wait(oneshot::Receiver<Outcome>),
}

impl InFlight {
    fn turn<'a>(&'a self, key: &'a [u8]) -> Turn<'a> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(waiters) = waiting.get_mut(key) {
            let (sender, receiver) = oneshot::channel();
            waiters.push(sender);
            return Turn::Wait(receiver);
        }
        waiting.insert(Box::from(key), Vec::new());
        Turn::Ask(AskTurn { in_flight: self, key, finished: false })
    }

    fn take(&self, key: &[u8]) -> Vec<oneshot::Sender<Outcome>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.remove(key).unwrap_or_default()
    }
}

/// The right to ask upstream for one question. Dropped unfinished (the
/// asking task was cancelled), it removes the question, and those waiting
/// see their channel closed and ask again themselves.
struct AskTurn<'a> {
    in_flight: &'a InFlight,
    key: &'a [u8],
    finished: bool,
}

impl AskTurn<'_> {
    /// Ends the turn: who was waiting for the outcome.
    fn finish(mut self) -> Vec<oneshot::Sender<Outcome>> {
        self.finished = true;
        self.in_flight.take(self.key)
    }
}

impl Drop for AskTurn<'_> {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.in_flight.take(self.key));
        }
    }
}

impl Route {
    async fn resolve(&self, name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> Outcome {
        match self {
            Route::Forward(forwarder) => forwarder.resolve(name, record_type, dnssec_ok).await,
            Route::Recursive { recursor, conditional, deadline } => {
                if let Some((_, forwarder)) = conditional.iter().find(|(zone, _)| zone.zone_of(name)) {
                    return forwarder.resolve(name, record_type, dnssec_ok).await;
                }
                let query = Query::query(Name::from(name), record_type);
                let resolution = recursor.resolve(query, Instant::now(), dnssec_ok);
                match tokio::time::timeout(*deadline, resolution).await {
                    Err(_) => Err(UpstreamError::Timeout),
                    Ok(Ok(message)) => match message.response_code {
                        ResponseCode::NoError | ResponseCode::NXDomain => Ok(UpstreamAnswer {
                            response_code: message.response_code,
                            answers: message.answers.clone(),
                            authorities: message.authorities.clone(),
                        }),
                        code => Err(UpstreamError::Failed(code)),
                    },
                    Ok(Err(error)) => recursion_error(error),
                }
            }
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

/// How long a server that failed to answer is passed over before it is
/// tried first again.
const DOWN_FOR: Duration = Duration::from_secs(30);

/// Forwarding servers in order of preference, with failover.
///
/// hickory's server pool bounds a whole request by one timeout, so a dead
/// first server would time every query out before the second is tried.
/// Instead each server has its own resolver and timeout; one that fails is
/// marked down and passed over (tried last) until `DOWN_FOR` has gone by.
pub struct Forwarder {
    targets: Vec<ForwardTarget>,
    /// What `down_until` counts from.
    epoch: Instant,
}

struct ForwardTarget {
    transport: Transport,
    /// Milliseconds after `Forwarder::epoch` until which the server is
    /// passed over; 0 when it is up. Atomic: read on every upstream query.
    down_until: AtomicU64,
}

/// How queries reach one forwarding server.
enum Transport {
    /// Plain DNS: Hedgerow's own lean forwarder (see `dns/forward.rs`).
    Udp(UdpUpstream),
    /// TCP, DNS-over-TLS, DNS-over-HTTPS: hickory's resolver.
    Hickory(TokioResolver),
}

impl Forwarder {
    pub fn new(servers: &[ForwardServer], timeout: Duration) -> Result<Forwarder, UpstreamError> {
        let targets = servers
            .iter()
            .map(|server| {
                let transport = match server.protocol {
                    ForwardProtocol::Udp => Transport::Udp(UdpUpstream::new(server.address, timeout)),
                    _ => Transport::Hickory(forwarding_resolver(server, timeout)?),
                };
                Ok(ForwardTarget { transport, down_until: AtomicU64::new(0) })
            })
            .collect::<Result<_, UpstreamError>>()?;
        Ok(Forwarder { targets, epoch: Instant::now() })
    }

    fn millis(&self, at: Instant) -> u64 {
        // +1 so that no real time is 0, which means "up".
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    fn is_down(&self, target: &ForwardTarget, now: u64) -> bool {
        now < target.down_until.load(Ordering::Relaxed)
    }

    /// Every server is marked down.
    fn all_down(&self, now: Instant) -> bool {
        let now = self.millis(now);
        !self.targets.is_empty() && self.targets.iter().all(|target| self.is_down(target, now))
    }

    pub async fn resolve(&self, name: &LowerName, record_type: RecordType, dnssec_ok: bool) -> Outcome {
        // Which servers are down, read once before asking any (a failure
        // below marks one down, which must not put it in the queue again).
        // A bit per server: schools list two or three, never 64.
        let now = self.millis(Instant::now());
        let down = self
            .targets
            .iter()
            .take(64)
            .enumerate()
            .fold(0u64, |mask, (index, target)| if self.is_down(target, now) { mask | 1 << index } else { mask });
        let is_down = |index: usize| index < 64 && down & (1 << index) != 0;
        let count = self.targets.len();
        let order = (0..count).filter(|&index| !is_down(index)).chain((0..count).filter(|&index| is_down(index)));
        let mut last_error = UpstreamError::Other("no upstream servers".into());
        for target in order.map(|index| &self.targets[index]) {
            let result = match &target.transport {
                Transport::Udp(upstream) => upstream.query(name, record_type, dnssec_ok).await,
                Transport::Hickory(resolver) => forward(resolver, name, record_type).await,
            };
            match result {
                Ok(answer) => {
                    if target.down_until.load(Ordering::Relaxed) != 0 {
                        target.down_until.store(0, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                // It answered, so it is up; another server may still do better.
                Err(error @ UpstreamError::Failed(_)) => last_error = error,
                // Not the server's fault: try the next without marking it.
                Err(error @ UpstreamError::Local(_)) => {
                    tracing::warn!(%error, "cannot query an upstream server");
                    last_error = error;
                }
                Err(error) => {
                    tracing::warn!(%error, "upstream server failed; trying the next");
                    let until = self.millis(Instant::now() + DOWN_FOR);
                    target.down_until.store(until, Ordering::Relaxed);
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }
}

/// A resolver for one forwarding server.
fn forwarding_resolver(server: &ForwardServer, timeout: Duration) -> Result<TokioResolver, UpstreamError> {
    let name_servers = std::iter::once(server)
        .map(|server| {
            let tls_name = || Arc::<str>::from(server.tls_name.clone().unwrap_or_default());
            let mut connections = match server.protocol {
                ForwardProtocol::Udp => vec![ConnectionConfig::udp(), ConnectionConfig::tcp()],
                ForwardProtocol::Tcp => vec![ConnectionConfig::tcp()],
                ForwardProtocol::Tls => vec![ConnectionConfig::tls(tls_name())],
                ForwardProtocol::Https => vec![ConnectionConfig::https(tls_name(), None)],
            };
            for connection in &mut connections {
                connection.port = server.address.port();
            }
            let mut name_server = NameServerConfig::udp_and_tcp(server.address.ip());
            name_server.connections = connections;
            // Pass NXDOMAIN on as the answer instead of trying the next server.
            name_server.trust_negative_responses = true;
            name_server
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = timeout;
    options.attempts = 1;
    // Hedgerow has its own cache (with serve-stale) in front of this one.
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.num_concurrent_reqs = 1;
    options.max_active_requests = 4096;
    options.preserve_intermediates = true;
    options.try_tcp_on_error = true;
    TokioResolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|error| UpstreamError::Setup(error.to_string()))
}

async fn forward(
    resolver: &TokioResolver,
    name: &LowerName,
    record_type: RecordType,
) -> Result<UpstreamAnswer, UpstreamError> {
    match resolver.lookup(Name::from(name), record_type).await {
        Ok(lookup) => Ok(UpstreamAnswer {
            response_code: lookup.message().response_code,
            answers: lookup.answers().to_vec(),
            authorities: lookup.authorities().to_vec(),
        }),
        Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => Ok(negative_answer(no_records)),
        Err(NetError::Dns(DnsError::ResponseCode(code))) => Err(UpstreamError::Failed(code)),
        Err(NetError::Timeout) => Err(UpstreamError::Timeout),
        Err(error) => Err(UpstreamError::Other(error.to_string())),
    }
}

fn negative_answer(no_records: NoRecords) -> UpstreamAnswer {
    let mut authorities: Vec<Record> = no_records.authorities.map(|records| records.to_vec()).unwrap_or_default();
    if let Some(soa) = no_records.soa
        && !authorities.iter().any(|r| r.record_type() == RecordType::SOA)
    {
        authorities.push(soa.into_record_of_rdata());
    }
    let response_code = match no_records.response_code {
        ResponseCode::NXDomain => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    };
    UpstreamAnswer { response_code, answers: Vec::new(), authorities }
}

fn recursion_error(error: RecursorError) -> Result<UpstreamAnswer, UpstreamError> {
    match error {
        RecursorError::Negative(data) => Ok(negative_answer(NoRecords::from(data))),
        RecursorError::Net(NetError::Dns(DnsError::NoRecordsFound(no_records))) => Ok(negative_answer(no_records)),
        RecursorError::Net(NetError::Timeout) | RecursorError::Timeout => Err(UpstreamError::Timeout),
        RecursorError::Net(NetError::Dns(DnsError::ResponseCode(code))) => Err(UpstreamError::Failed(code)),
        other => Err(UpstreamError::Other(other.to_string())),
    }
}
