//! The watch thread: sightings from the DNS path go through the rule
//! engine; a new incident becomes an alert in the database with its
//! messages (one transaction), further attempts are added to it about once
//! a second, and once an hour each group's blocks are compared with its
//! usual level (the rise rule).
//!
//! Off the DNS path: it reads its own channel ([`super::feed`]), and a
//! stall here only fills that channel. It names a client as the query log
//! does (`store::privacy`): a hashed guest by its pseudonym, and keeps
//! device names and owners off alerts of private groups.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::feed::Sighting;
use super::message;
use super::rules::{Attempt, Engine, Incident, IncidentKey, Outcome};
use crate::config::Config;
use crate::config::alerts::{Rule, Trigger};
use crate::store::StoreError;
use crate::store::alerts::{AlertFilter, AlertStore, NewAlert};
use crate::store::privacy::PrivacyRules;
use crate::store::schema::{self, Purpose};
use crate::time::{HOUR_MS, now_ms};

/// The configuration in force now (the server's last good reload).
pub type ConfigFn = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

/// How often further attempts are written to their alerts.
const JOIN_EVERY: Duration = Duration::from_secs(1);
/// How long the thread sleeps when no sighting is waiting.
const POLL: Duration = Duration::from_millis(50);

/// A rise is looked for this long after its hour ends (the hour's last
/// rows are committed within a second; this leaves room for a busy writer).
const RISE_AFTER_MS: i64 = 90_000;

/// The running watch thread.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    raised: Arc<AtomicU64>,
}

impl Watch {
    /// Alerts raised since start.
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// Writes what is pending and stops.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("alerts: the watch thread panicked");
        }
    }
}

/// Starts the watch thread on `receiver`, writing alerts to `store`.
pub fn spawn(receiver: Receiver<Sighting>, store: AlertStore, config: ConfigFn) -> Result<Watch, StoreError> {
    let stop = Arc::new(AtomicBool::new(false));
    let raised = Arc::new(AtomicU64::new(0));
    let mut watcher = Watcher::new(store, config, raised.clone())?;
    let thread = std::thread::Builder::new()
        .name("hedgerow-alerts".into())
        .spawn({
            let stop = stop.clone();
            move || watcher.run(&receiver, &stop)
        })
        .map_err(|source| StoreError::Io {
            path: PathBuf::from("(thread)"),
            action: "start the alerts thread",
            source,
        })?;
    Ok(Watch { stop, thread: Some(thread), raised })
}

/// Attempts joined to an alert, not yet written.
#[derive(Default)]
struct Joined {
    last_ms: i64,
    attempts: i64,
    names: Vec<String>,
}

struct Watcher {
    store: AlertStore,
    config: ConfigFn,
    /// The rules the engine runs (to notice a reload that changed them).
    rules: Vec<Rule>,
    quiet_ms: i64,
    engine: Engine,
    /// The stored alert of each open incident.
    alert_ids: HashMap<IncidentKey, i64>,
    joined: HashMap<i64, Joined>,
    last_join_write: Instant,
    privacy: PrivacyRules,
    /// A writable connection for the privacy keys (shared with the log writer
    /// through the database, so a guest has one pseudonym a day in both).
    conn: rusqlite::Connection,
    /// The last hour (number) a rise was looked for.
    rise_checked: i64,
    raised: Arc<AtomicU64>,
}

impl Watcher {
    fn new(store: AlertStore, config: ConfigFn, raised: Arc<AtomicU64>) -> Result<Watcher, StoreError> {
        let current = config();
        let conn = schema::open(store.database(), Purpose::Config)?;
        let mut watcher = Watcher {
            rules: current.alerts.rules.clone(),
            quiet_ms: current.alerts.quiet_ms,
            engine: Engine::new(current.alerts.rules.clone(), current.alerts.quiet_ms),
            alert_ids: HashMap::new(),
            joined: HashMap::new(),
            last_join_write: Instant::now(),
            privacy: PrivacyRules::new(&current.log.settings),
            conn,
            // The hour before this one is looked at once at start (a rise
            // already raised for it is not raised again).
            rise_checked: (now_ms() - RISE_AFTER_MS).div_euclid(HOUR_MS) - 2,
            raised,
            store,
            config,
        };
        watcher.resume()?;
        Ok(watcher)
    }

    /// Takes up the incidents still open in the database (after a restart,
    /// or a change of rules), so their attempts keep joining them.
    fn resume(&mut self) -> Result<(), StoreError> {
        for alert in self.store.recent_unresolved(now_ms() - self.quiet_ms)? {
            if !self.rules.iter().any(|rule| rule.id == alert.rule && !matches!(rule.trigger, Trigger::Rise { .. })) {
                continue;
            }
            let key = IncidentKey {
                rule: alert.rule.clone(),
                client: alert.client.clone(),
                category: (!alert.category.is_empty()).then(|| alert.category.clone()),
            };
            self.alert_ids.insert(key.clone(), alert.id);
            self.engine.resume(Incident {
                key,
                severity: crate::config::alerts::Severity::parse(&alert.severity)
                    .unwrap_or(crate::config::alerts::Severity::Medium),
                first_ms: alert.first_ms,
                last_ms: alert.last_ms,
                count: usize::try_from(alert.attempts).unwrap_or(usize::MAX),
                names: alert.names.into_iter().collect(),
            });
        }
        Ok(())
    }

    fn run(&mut self, receiver: &Receiver<Sighting>, stop: &AtomicBool) {
        loop {
            match receiver.try_recv() {
                Ok(sighting) => {
                    self.take_up_rules();
                    self.see(&sighting);
                    // Whatever else is waiting, without a wait per sighting.
                    for sighting in receiver.try_iter().take(10_000) {
                        self.see(&sighting);
                    }
                }
                // Asleep, not waiting on the channel (as the log writer):
                // a waiting receiver costs the DNS thread a wake-up per
                // sighting (a context switch each, thousands a second when a
                // device hammers a blocked category); a sleeping one costs it
                // nothing. A sighting waits at most `POLL`.
                Err(TryRecvError::Empty) => {
                    std::thread::sleep(POLL);
                    self.take_up_rules();
                }
                Err(TryRecvError::Disconnected) => {
                    self.write_joined();
                    return;
                }
            }
            if self.last_join_write.elapsed() >= JOIN_EVERY {
                self.write_joined();
            }
            self.look_for_rises(now_ms());
            if stop.load(Ordering::Relaxed) {
                for sighting in receiver.try_iter() {
                    self.see(&sighting);
                }
                self.write_joined();
                return;
            }
        }
    }

    /// A reload that changed the rules: the engine runs the new ones, and
    /// open incidents carry on.
    fn take_up_rules(&mut self) {
        let current = (self.config)();
        if current.alerts.rules != self.rules || current.alerts.quiet_ms != self.quiet_ms {
            self.rules = current.alerts.rules.clone();
            self.quiet_ms = current.alerts.quiet_ms;
            self.engine.set_rules(self.rules.clone(), self.quiet_ms);
        }
    }

    fn see(&mut self, sighting: &Sighting) {
        let config = (self.config)();
        if !config.alerts.enabled {
            return;
        }
        let private = match self.privacy.client_name(
            &self.conn,
            self.store.database(),
            sighting.source,
            sighting.group.as_deref(),
            sighting.time_ms,
        ) {
            Ok(name) => name,
            Err(error) => {
                tracing::warn!("alerts: {error}");
                None
            }
        };
        let client = private.clone().unwrap_or_else(|| sighting.source.to_string());
        let attempt = Attempt {
            time_ms: sighting.time_ms,
            client,
            name: sighting.name.clone(),
            category: sighting.category.as_deref().map(str::to_string),
            bypass: sighting.bypass,
        };
        for outcome in self.engine.observe(&attempt) {
            match outcome {
                Outcome::Raised(incident) => {
                    let device = if private.is_some() { None } else { self.device_of(sighting.source) };
                    self.raise(&incident, sighting, device, &config);
                }
                Outcome::Joined { key, count } => {
                    if let Some(&id) = self.alert_ids.get(&key) {
                        let joined = self.joined.entry(id).or_default();
                        joined.last_ms = joined.last_ms.max(attempt.time_ms);
                        joined.attempts = i64::try_from(count).unwrap_or(i64::MAX);
                        // The store keeps NAMES_KEPT names an alert: no more
                        // are gathered (nor scanned, per sighting).
                        if joined.names.len() < crate::store::alerts::NAMES_KEPT
                            && !joined.names.contains(&attempt.name)
                        {
                            joined.names.push(attempt.name.clone());
                        }
                    }
                }
            }
        }
    }

    /// The device table's name and owner for `ip`, if it has one.
    fn device_of(&self, ip: IpAddr) -> Option<(String, String)> {
        let devices = crate::store::devices::find_devices(self.store.database(), &ip.to_string()).ok()?;
        let device = devices.into_iter().next()?;
        Some((device.name, device.owner.unwrap_or_default()))
    }

    fn raise(&mut self, incident: &Incident, sighting: &Sighting, device: Option<(String, String)>, config: &Config) {
        let Some(rule) = self.rules.iter().find(|rule| rule.id == incident.key.rule) else { return };
        let (device, owner) = device.unwrap_or_default();
        let alert = NewAlert {
            rule: rule.id.clone(),
            severity: rule.severity.as_str().to_string(),
            category: incident.key.category.clone(),
            client: incident.key.client.clone(),
            device,
            owner,
            network: sighting.network.as_deref().unwrap_or("").to_string(),
            group: sighting.group.as_deref().unwrap_or("").to_string(),
            first_ms: incident.first_ms,
            last_ms: incident.last_ms,
            attempts: i64::try_from(incident.count).unwrap_or(i64::MAX),
            names: incident.names.iter().cloned().collect(),
            summary: rule.describe(),
        };
        match self.store.raise(&alert, now_ms(), |stored| message::alert_messages(stored, config)) {
            Ok(stored) => {
                self.raised.fetch_add(1, Ordering::Relaxed);
                tracing::info!(alert = stored.id, rule = %stored.rule, severity = %stored.severity, "alert raised");
                self.alert_ids.insert(incident.key.clone(), stored.id);
            }
            Err(error) => {
                tracing::error!("alerts: could not store an alert ({error}); it is retried on its next attempt")
            }
        }
    }

    /// Writes the attempts joined since the last write; forgets the alert
    /// ids of incidents the engine has closed.
    fn write_joined(&mut self) {
        self.last_join_write = Instant::now();
        for (id, joined) in std::mem::take(&mut self.joined) {
            if let Err(error) = self.store.join(id, joined.last_ms, joined.attempts, &joined.names) {
                tracing::warn!("alerts: could not add attempts to alert {id} ({error})");
            }
        }
        let open: std::collections::HashSet<&IncidentKey> =
            self.engine.open_incidents().into_iter().map(|incident| &incident.key).collect();
        self.alert_ids.retain(|key, _| open.contains(key));
    }

    /// Once an hour has ended (and its rows are in), compares each group's
    /// blocks in it with the same hour on the last 7 days.
    fn look_for_rises(&mut self, now: i64) {
        let hour = (now - RISE_AFTER_MS).div_euclid(HOUR_MS) - 1;
        if hour <= self.rise_checked {
            return;
        }
        self.rise_checked = hour;
        let config = (self.config)();
        if !config.alerts.enabled {
            return;
        }
        let rises: Vec<Rule> = self.rules.iter().filter(|rule| rule.enabled).cloned().collect();
        for rule in &rises {
            let Trigger::Rise { factor, minimum } = rule.trigger else { continue };
            if let Err(error) = self.raise_rises(rule, hour, factor, minimum, &config) {
                tracing::warn!("alerts: could not look for a rise in blocks ({error})");
            }
        }
    }

    fn raise_rises(
        &mut self,
        rule: &Rule,
        hour: i64,
        factor: u32,
        minimum: u64,
        config: &Config,
    ) -> Result<(), StoreError> {
        let db = self.store.database().to_path_buf();
        let counts = crate::store::counts::hourly_by_group(&db, hour - 7 * 24, hour + 1)?;
        let mut groups: HashMap<String, (u64, Vec<Option<u64>>)> = HashMap::new();
        for count in counts {
            let Some(group) = count.group else { continue };
            let entry = groups.entry(group).or_insert_with(|| (0, vec![None; 7]));
            let back = hour - count.hour;
            if back == 0 {
                entry.0 = count.blocked;
            } else if back % 24 == 0 && (1..=7).contains(&(back / 24)) && count.lookups > 0 {
                entry.1[(back / 24 - 1) as usize] = Some(count.blocked);
            }
        }
        for (group, (blocked, history)) in groups {
            let Some(usual) = rise(blocked, &history, factor, minimum) else { continue };
            let client = format!("group:{group}");
            let start = hour * HOUR_MS;
            let already = AlertFilter {
                device: Some(client.clone()),
                from_ms: Some(start),
                to_ms: Some(start + 1),
                ..AlertFilter::default()
            };
            if self.store.count(&already)? > 0 {
                continue;
            }
            let local = jiff::Timestamp::from_millisecond(start)
                .map(|t| t.to_zoned(config.timezone.clone()).strftime("%H:%M").to_string())
                .unwrap_or_default();
            let alert = NewAlert {
                rule: rule.id.clone(),
                severity: rule.severity.as_str().to_string(),
                category: None,
                client,
                group: group.clone(),
                first_ms: start,
                last_ms: start + HOUR_MS - 1,
                attempts: i64::try_from(blocked).unwrap_or(i64::MAX),
                summary: format!(
                    "{blocked} blocked lookups by {group} in the hour from {local}, against a usual {usual} for that \
                     hour ({})",
                    rule.describe()
                ),
                ..NewAlert::default()
            };
            let stored = self.store.raise(&alert, now_ms(), |stored| message::alert_messages(stored, config))?;
            self.raised.fetch_add(1, Ordering::Relaxed);
            tracing::info!(alert = stored.id, group = %group, blocked, usual, "alert raised: a rise in blocks");
        }
        Ok(())
    }
}

/// Whether `blocked` in an hour is a rise against `history` (the same hour
/// on each of the last 7 days; `None` where the group had no lookups then):
/// at least `minimum`, and at least `factor` times the usual level (the mean
/// of the days with lookups, at least 1). Needs 3 such days, so a new
/// install or a group's first week raises nothing. Returns the usual level.
pub fn rise(blocked: u64, history: &[Option<u64>], factor: u32, minimum: u64) -> Option<u64> {
    let days: Vec<u64> = history.iter().flatten().copied().collect();
    if days.len() < 3 || blocked < minimum {
        return None;
    }
    let usual = (days.iter().sum::<u64>() / days.len() as u64).max(1);
    (blocked >= usual.saturating_mul(u64::from(factor))).then_some(usual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rise_needs_history_the_minimum_and_the_factor() {
        let week = [Some(20), Some(30), None, Some(25), Some(0), Some(25), None];
        // usual = (20 + 30 + 25 + 0 + 25) / 5 = 20
        assert_eq!(rise(60, &week, 3, 50), Some(20));
        assert_eq!(rise(59, &week, 3, 50), None);
        assert_eq!(rise(40, &week, 2, 50), None, "under the minimum");
        assert_eq!(rise(500, &[Some(10), Some(10), None, None, None, None, None], 3, 50), None, "two days is no usual");
        assert_eq!(rise(50, &[Some(0); 7], 3, 50), Some(1));
    }
}
