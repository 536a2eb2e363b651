//! The server's counters: what `/metrics` exports and the dashboard's
//! overview shows. A leaf: it knows no DNS type; the pipeline's one observer
//! of finished answers feeds it (`dns::pipeline`), reloads count themselves
//! (`serve`), and the figures the server already keeps elsewhere (cache
//! size, query log rows, list health) are read when a [`Snapshot`] is taken,
//! through the [`Gauges`] function `serve` installs.
//!
//! On the DNS path everything is a relaxed atomic add: no lock, no
//! allocation. A group is found in a small list loaded through an `ArcSwap`;
//! the groups of every policy are registered when it is swapped in, so the
//! query path only ever reads the list.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// The decisions counted, in the words the query log uses
/// (`DecisionKind::as_str`), in the order of their counter index.
pub const DECISIONS: [&str; 6] = ["allowed", "blocked", "safesearch", "bypass", "refused", "error"];

/// The index of "blocked" in [`DECISIONS`].
pub const BLOCKED: usize = 1;

/// The group label of answers given before a client was identified
/// (outsiders, malformed queries).
pub const NO_GROUP: &str = "none";

/// Upper bounds of the upstream latency histogram, in seconds: a LAN or ISP
/// resolver answers in 1-50 ms, a recursion from the root in 50-500 ms, and
/// 5 s is past every timeout.
pub const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// One group's lookups by decision.
struct GroupCounters {
    name: Arc<str>,
    by_decision: [AtomicU64; DECISIONS.len()],
}

impl GroupCounters {
    fn new(name: &str) -> GroupCounters {
        GroupCounters { name: Arc::from(name), by_decision: Default::default() }
    }
}

/// What one finished answer was, for the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup<'a> {
    /// The client's group; `None` before a client was identified.
    pub group: Option<&'a str>,
    /// Index into [`DECISIONS`].
    pub decision: usize,
    /// Answered from a fresh cache entry.
    pub cache_hit: bool,
    /// An expired answer served (RFC 8767).
    pub stale: bool,
    /// No upstream answer (and none stale): SERVFAIL.
    pub upstream_failed: bool,
    /// Refused: over the client's rate limit.
    pub rate_limited: bool,
    /// Refused: the source is in no configured network.
    pub outsider: bool,
    /// How long upstream took, when it was asked.
    pub upstream_latency: Option<Duration>,
}

/// Figures kept by other parts of the server, read when a snapshot is
/// taken: filled in by the function `serve` installs ([`Metrics::set_gauges`]).
pub type Gauges = Box<dyn Fn(&mut Snapshot) + Send + Sync>;

/// The counters of one running server.
pub struct Metrics {
    started: Instant,
    groups: ArcSwap<Vec<Arc<GroupCounters>>>,
    /// Held only to add a group (never on the query path once a policy's
    /// groups are registered).
    adding: Mutex<()>,
    cache_hits: AtomicU64,
    stale_answers: AtomicU64,
    upstream_failures: AtomicU64,
    rate_limited: AtomicU64,
    outsiders: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    gauges: OnceLock<Gauges>,
    /// Readiness's last look at the answer count: when, and the count.
    last_seen: Mutex<Option<(Instant, u64)>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            groups: ArcSwap::from_pointee(vec![Arc::new(GroupCounters::new(NO_GROUP))]),
            adding: Mutex::new(()),
            cache_hits: AtomicU64::new(0),
            stale_answers: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            outsiders: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            gauges: OnceLock::new(),
            last_seen: Mutex::new(None),
        }
    }

    /// Registers groups (a new policy's), keeping every group seen before:
    /// counters never go back.
    pub fn register_groups<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let _adding = self.adding.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.groups.load();
        let mut next: Vec<Arc<GroupCounters>> = current.iter().cloned().collect();
        for name in names {
            if !next.iter().any(|group| &*group.name == name) {
                next.push(Arc::new(GroupCounters::new(name)));
            }
        }
        if next.len() != current.len() {
            self.groups.store(Arc::new(next));
        }
    }

    /// Counts one finished answer. Lock-free unless its group was never
    /// registered (a safety net: every policy's groups are registered first).
    pub fn record(&self, lookup: &Lookup<'_>) {
        let group = lookup.group.unwrap_or(NO_GROUP);
        let decision = lookup.decision.min(DECISIONS.len() - 1);
        let counted = {
            let groups = self.groups.load();
            match groups.iter().find(|counters| &*counters.name == group) {
                Some(counters) => {
                    counters.by_decision[decision].fetch_add(1, Relaxed);
                    true
                }
                None => false,
            }
        };
        if !counted {
            self.register_groups([group]);
            if let Some(counters) = self.groups.load().iter().find(|counters| &*counters.name == group) {
                counters.by_decision[decision].fetch_add(1, Relaxed);
            }
        }
        let add = |counter: &AtomicU64, yes: bool| {
            if yes {
                counter.fetch_add(1, Relaxed);
            }
        };
        add(&self.cache_hits, lookup.cache_hit);
        add(&self.stale_answers, lookup.stale);
        add(&self.upstream_failures, lookup.upstream_failed);
        add(&self.rate_limited, lookup.rate_limited);
        add(&self.outsiders, lookup.outsider);
        if let Some(latency) = lookup.upstream_latency {
            self.observe_upstream(latency);
        }
    }

    /// One upstream round trip into the latency histogram.
    pub fn observe_upstream(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.latency_buckets[bucket].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// A whole reload (config and lists, or lists alone) finished: swapped
    /// in (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        if ok { &self.reloads_ok } else { &self.reloads_failed }.fetch_add(1, Relaxed);
    }

    /// Every answer counted so far, over all groups.
    pub fn lookups(&self) -> u64 {
        self.groups.load().iter().flat_map(|group| group.by_decision.iter()).map(|count| count.load(Relaxed)).sum()
    }

    /// Readiness: how many answers were counted since the last call, if
    /// that was at most `within` ago (`None`: no recent call, or none
    /// counted). Never called on the DNS path.
    pub fn answers_since_last_look(&self, within: Duration) -> Option<(u64, Duration)> {
        let mut last = self.last_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = (Instant::now(), self.lookups());
        let moved = match *last {
            Some((at, seen)) if now.1 > seen && at.elapsed() <= within => Some((now.1 - seen, at.elapsed())),
            _ => None,
        };
        *last = Some(now);
        moved
    }

    /// Installs the function that reads the figures other parts keep (once;
    /// later calls are ignored).
    pub fn set_gauges(&self, gauges: Gauges) {
        let _ = self.gauges.set(gauges);
    }

    /// Every figure now, as plain numbers.
    pub fn snapshot(&self) -> Snapshot {
        let groups = self.groups.load();
        let groups: Vec<GroupFigures> = groups
            .iter()
            .map(|counters| GroupFigures {
                group: counters.name.to_string(),
                by_decision: std::array::from_fn(|index| counters.by_decision[index].load(Relaxed)),
            })
            .collect();
        let mut cumulative = 0;
        let upstream_buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.latency_buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Relaxed);
                (bound, cumulative)
            })
            .collect();
        let upstream_count = self.latency_count.load(Relaxed).max(cumulative);
        let mut snapshot = Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.started.elapsed().as_secs(),
            lookups: groups.iter().map(GroupFigures::lookups).sum(),
            blocked: groups.iter().map(GroupFigures::blocked).sum(),
            groups,
            cache_hits: self.cache_hits.load(Relaxed),
            cache_entries: 0,
            cache_bytes: 0,
            upstream_p50_seconds: quantile(&upstream_buckets, upstream_count, 0.5),
            upstream_p99_seconds: quantile(&upstream_buckets, upstream_count, 0.99),
            upstream_buckets,
            upstream_count,
            upstream_sum_seconds: self.latency_sum_us.load(Relaxed) as f64 / 1e6,
            upstream_failures: self.upstream_failures.load(Relaxed),
            stale_answers: self.stale_answers.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            refused_outsiders: self.outsiders.load(Relaxed),
            log_enabled: false,
            log_written: 0,
            log_dropped: 0,
            log_state: "ok",
            log_not_written_since_ms: None,
            lists: Vec::new(),
            lists_checked_at: None,
            lists_error: None,
            listed_names: 0,
            reloads_ok: self.reloads_ok.load(Relaxed),
            reloads_failed: self.reloads_failed.load(Relaxed),
            alert_messages: None,
            alerts_by_state: None,
            alert_lookups_dropped: 0,
        };
        if let Some(gauges) = self.gauges.get() {
            gauges(&mut snapshot);
        }
        snapshot
    }
}

/// The `q` quantile estimated from cumulative buckets as Prometheus's
/// `histogram_quantile` does (linear within the bucket); `None` with no
/// observations. Past the last bound it says the last bound.
pub fn quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let in_bucket = (cumulative - lower.1) as f64;
            let fraction = if in_bucket > 0.0 { (rank - lower.1 as f64) / in_bucket } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * fraction.clamp(0.0, 1.0));
        }
        lower = (bound, cumulative);
    }
    buckets.last().map(|&(bound, _)| bound)
}

/// One group's lookups, by decision (indexed as [`DECISIONS`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupFigures {
    pub group: String,
    pub by_decision: [u64; DECISIONS.len()],
}

impl GroupFigures {
    pub fn lookups(&self) -> u64 {
        self.by_decision.iter().sum()
    }
    pub fn blocked(&self) -> u64 {
        self.by_decision[BLOCKED]
    }
    /// The count for a decision word of [`DECISIONS`] (0 for another word).
    pub fn decision(&self, word: &str) -> u64 {
        DECISIONS.iter().position(|&known| known == word).map_or(0, |index| self.by_decision[index])
    }
}

/// One list source as the last load or reload left it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ListFigures {
    pub id: String,
    pub category: String,
    /// "ok", "degraded" or "missing".
    pub state: &'static str,
    /// Names in the copy in force, when known.
    pub entries: Option<u64>,
    /// Seconds since the copy in force was taken, when known.
    pub age_seconds: Option<u64>,
    /// Unix seconds since when the source has been failing.
    pub failing_since: Option<u64>,
    /// The last failure's reason, while failing.
    pub last_failure: Option<String>,
}

/// Every figure of a running server at one moment: plain numbers (the
/// dashboard's overview and `/metrics` read it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    pub uptime_seconds: u64,
    /// Every answer, and the blocked ones, over all groups since start.
    pub lookups: u64,
    pub blocked: u64,
    /// Per group (including [`NO_GROUP`]), every group any policy since
    /// start had, in the order first seen.
    pub groups: Vec<GroupFigures>,
    pub cache_hits: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    /// Upstream round trips: cumulative counts per bound (seconds), their
    /// number and total time, and p50/p99 estimated from the buckets.
    pub upstream_buckets: Vec<(f64, u64)>,
    pub upstream_count: u64,
    pub upstream_sum_seconds: f64,
    pub upstream_p50_seconds: Option<f64>,
    pub upstream_p99_seconds: Option<f64>,
    /// Answers that got no upstream answer (SERVFAIL).
    pub upstream_failures: u64,
    /// Expired answers served (RFC 8767).
    pub stale_answers: u64,
    /// Refused: over a rate limit / from no configured network.
    pub rate_limited: u64,
    pub refused_outsiders: u64,
    pub log_enabled: bool,
    pub log_written: u64,
    pub log_dropped: u64,
    /// Whether the query log is being written: "ok", "disk_full" or
    /// "write_failing", and since when it has not been (Unix ms).
    pub log_state: &'static str,
    pub log_not_written_since_ms: Option<i64>,
    pub lists: Vec<ListFigures>,
    /// Unix seconds of the last list check, and why the lists could not be
    /// rebuilt at all then (the last good ones stay).
    pub lists_checked_at: Option<u64>,
    pub lists_error: Option<String>,
    /// Names in the compiled lists in force.
    pub listed_names: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The alert outbox by state, read from the database when the snapshot
    /// is taken; `None` without a database.
    pub alert_messages: Option<AlertMessageFigures>,
    /// Alerts open, acknowledged and resolved (from the database), and the
    /// lookups that could have raised one but found the alerts' channel full.
    pub alerts_by_state: Option<[u64; 3]>,
    pub alert_lookups_dropped: u64,
}

/// The alert outbox's messages in each state; the states do not overlap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AlertMessageFigures {
    /// Waiting for their first attempt.
    pub pending: u64,
    /// Failed at least once, to be tried again.
    pub retrying: u64,
    /// Given up: shown in the dashboard until someone queues them again.
    pub failed: u64,
    pub sent: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_count_by_group_and_decision() {
        let metrics = Metrics::new();
        metrics.register_groups(["pupil", "staff"]);
        metrics.record(&Lookup { group: Some("pupil"), decision: BLOCKED, ..Lookup::default() });
        metrics.record(&Lookup { group: Some("pupil"), decision: 0, cache_hit: true, ..Lookup::default() });
        metrics.record(&Lookup { group: None, decision: 4, outsider: true, ..Lookup::default() });
        metrics.record(&Lookup { group: Some("late"), decision: 0, ..Lookup::default() });
        let snapshot = metrics.snapshot();
        let pupil = snapshot.groups.iter().find(|group| group.group == "pupil").unwrap();
        assert_eq!((pupil.lookups(), pupil.blocked(), pupil.decision("allowed")), (2, 1, 1));
        assert_eq!((snapshot.lookups, snapshot.blocked, snapshot.cache_hits, snapshot.refused_outsiders), (4, 1, 1, 1));
        assert!(snapshot.groups.iter().any(|group| group.group == "late" && group.lookups() == 1));
        assert!(snapshot.groups.iter().any(|group| group.group == "staff" && group.lookups() == 0));
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let metrics = Metrics::new();
        for _ in 0..98 {
            metrics.observe_upstream(Duration::from_micros(1_500));
        }
        metrics.observe_upstream(Duration::from_millis(400));
        metrics.observe_upstream(Duration::from_secs(9));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.upstream_count, 100);
        let p50 = snapshot.upstream_p50_seconds.unwrap();
        assert!((0.001..=0.0025).contains(&p50), "{p50}");
        let p99 = snapshot.upstream_p99_seconds.unwrap();
        assert!((0.25..=0.5).contains(&p99), "{p99}");
        assert_eq!(snapshot.upstream_buckets.last(), Some(&(5.0, 99)));
        assert_eq!(quantile(&[], 0, 0.5), None);
    }
}
