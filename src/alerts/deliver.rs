//! The outbox worker: one thread, in the idle class so it never takes CPU
//! from DNS, that sends what the outbox holds and queues the digests.
//!
//! ```text
//! every second (or sooner, when a retry falls due):
//!   digests: a daily / weekly time passed in the school's zone?
//!            -> the alerts since the last digest's `upto` -> queue_digest (one txn)
//!   due messages, oldest first -> SMTP / webhook with the config in force now
//!            -> delivered, or attempt_failed with the next try (or given up)
//! ```
//!
//! A failed message is tried again after 30 s, 1 min, 2, 5, 10 and 30 min,
//! then every hour: given up at its 55th failure, about 48 hours after the
//! first ([`retry_at`]). A message whose channel is no longer configured is
//! given up at once, saying so. Given-up messages stay in the outbox, shown
//! in the dashboard and in `/metrics`, until someone queues them again.
//! Everything is in SQLite, so a restart carries on where it stopped.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::config::Config;
use crate::config::alerts::DigestTime;
use crate::store::alerts::{AlertFilter, AlertStore, Channel, OutboxMessage};
use crate::time::now_ms;

/// Waits after the first, second, ... failure; then [`LATER_MS`].
pub const BACKOFF_MS: [i64; 6] = [30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000];
/// The wait after the seventh and later failures.
pub const LATER_MS: i64 = 3_600_000;
/// A message is given up at this failure: the waits before it add up to
/// 48 h 48 min of trying.
pub const GIVE_UP_AT_FAILURE: i64 = 55;
/// The longest the worker sleeps: a new message goes within a second.
const POLL: Duration = Duration::from_secs(1);
/// Messages taken from the outbox at a time.
const BATCH: usize = 20;

/// When to try a message again after its `failures`-th failed attempt
/// (counting this one) at `now_ms`; `None`: give it up.
pub fn retry_at(failures: i64, now_ms: i64) -> Option<i64> {
    if failures >= GIVE_UP_AT_FAILURE {
        return None;
    }
    let wait = usize::try_from(failures - 1).ok().and_then(|i| BACKOFF_MS.get(i).copied()).unwrap_or(LATER_MS);
    Some(now_ms + wait)
}

/// The running worker; stopped by [`Delivery::stop`] or when dropped.
pub struct Delivery {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Delivery {
    /// Stops the worker and waits for it (at most one send's timeout).
    pub fn stop(mut self) {
        self.signal();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn signal(&self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
        wake.notify_all();
    }
}

impl Drop for Delivery {
    /// Asks the thread to stop without waiting for it.
    fn drop(&mut self) {
        self.signal();
    }
}

/// Starts the worker on `store`; `config` gives the config in force at
/// each step (a reload changes recipients, servers and secrets at once).
pub fn spawn(store: AlertStore, config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>) -> Delivery {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let thread = std::thread::Builder::new()
        .name("alert-delivery".into())
        .spawn({
            let stop = stop.clone();
            move || {
                crate::priority::yield_to_dns();
                run(&store, &*config, &stop);
            }
        })
        .expect("the alert delivery thread starts");
    Delivery { stop, thread: Some(thread) }
}

fn run(store: &AlertStore, config: &(dyn Fn() -> Arc<Config> + Send + Sync), stop: &(Mutex<bool>, Condvar)) {
    let mut failing: Option<String> = None;
    loop {
        let wait = match step(store, &config(), now_ms()) {
            Ok(full) => {
                if failing.take().is_some() {
                    tracing::info!("alert delivery can read and write its database again");
                }
                if full {
                    Duration::ZERO
                } else {
                    match store.next_due() {
                        Ok(Some(next)) => {
                            Duration::from_millis((next - now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
                        }
                        _ => POLL,
                    }
                }
            }
            Err(error) => {
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(%error, "alert delivery cannot use its database; trying again every second");
                    failing = Some(error);
                }
                POLL
            }
        };
        let (stopped, wake) = stop;
        let guard = stopped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (guard, _) =
            wake.wait_timeout_while(guard, wait, |stopped| !*stopped).unwrap_or_else(|poisoned| poisoned.into_inner());
        if *guard {
            return;
        }
    }
}

/// One round at `now_ms`: queues due digests, then sends up to a batch of
/// due messages with `config`. True when the batch was full (more may be
/// waiting). An error is the database's.
pub fn step(store: &AlertStore, config: &Config, now_ms: i64) -> Result<bool, String> {
    // A digest that cannot be queued must not hold up the alerts: it is
    // reported after them, and tried again next round.
    let digests = queue_due_digests(store, config, now_ms);
    let due = store.due(now_ms, BATCH).map_err(|error| error.to_string())?;
    // A server that cannot be reached is not tried again for the rest of
    // this round: its other messages get the same failure, not one more
    // time-out each.
    let mut unreachable: Vec<(Channel, String)> = Vec::new();
    for message in &due {
        let known = unreachable.iter().find(|(channel, _)| *channel == message.channel);
        let result = match known {
            Some((_, error)) => Err(Failure::Retry(error.clone())),
            None => send(config, message).inspect_err(|failure| {
                if let Failure::Server(error) = failure {
                    unreachable.push((message.channel, error.clone()));
                }
            }),
        };
        let now = crate::time::now_ms();
        match result {
            Ok(()) => {
                tracing::info!(id = message.id, channel = message.channel.as_str(), kind = %message.kind, "alert message sent");
                store.delivered(message.id, now).map_err(|error| error.to_string())?;
            }
            Err(Failure::Unconfigured(error)) => {
                tracing::warn!(id = message.id, %error, "alert message given up");
                store.attempt_failed(message.id, &error, None, now).map_err(|error| error.to_string())?;
            }
            Err(Failure::Retry(error) | Failure::Server(error)) => {
                let next = retry_at(message.attempts + 1, now);
                match next {
                    Some(_) => {
                        tracing::warn!(id = message.id, %error, attempts = message.attempts + 1, "alert message not sent; will try again")
                    }
                    None => tracing::error!(id = message.id, %error, "alert message given up after two days of trying"),
                }
                store.attempt_failed(message.id, &error, next, now).map_err(|error| error.to_string())?;
            }
        }
    }
    digests.map_err(|error| format!("cannot queue a digest: {error}"))?;
    Ok(due.len() == BATCH)
}

enum Failure {
    /// Tried and failed: try again later.
    Retry(String),
    /// The server could not be reached: try again later, and no other
    /// message to it this round.
    Server(String),
    /// The channel is no longer configured: give up.
    Unconfigured(String),
}

fn send(config: &Config, message: &OutboxMessage) -> Result<(), Failure> {
    match message.channel {
        Channel::Email => match &config.alerts.email {
            Some(email) => super::smtp::send(email, message).map_err(|error| {
                if error.whole_server { Failure::Server(error.message) } else { Failure::Retry(error.message) }
            }),
            None => Err(Failure::Unconfigured("e-mail is no longer configured ([alerts.email] removed)".into())),
        },
        Channel::Webhook => match &config.alerts.webhook {
            Some(webhook) => {
                let timestamp = crate::time::unix_now();
                // Every call goes to the one URL: any failure is the receiver's.
                super::webhook::send(webhook, &message.body, timestamp).map_err(Failure::Server)
            }
            None => Err(Failure::Unconfigured("the webhook is no longer configured ([alerts.webhook] removed)".into())),
        },
    }
}

/// Queues each digest whose time has come: the alerts first seen since
/// the last digest's `upto` and before the latest digest time, with the
/// new `upto` in the same transaction, so a restart neither repeats nor
/// skips one. A server that was off across several digest times sends one
/// digest covering all of them. The first time a digest is on, it only
/// records the latest digest time: it starts counting from there.
pub fn queue_due_digests(store: &AlertStore, config: &Config, now_ms: i64) -> Result<(), crate::store::StoreError> {
    let Some(email) = &config.alerts.email else { return Ok(()) };
    if !config.alerts.enabled {
        return Ok(());
    }
    for (kind, time) in [("daily", email.daily_digest), ("weekly", email.weekly_digest)] {
        let Some(time) = time else { continue };
        let Some(latest) = latest_digest_at_or_before(time, &config.timezone, now_ms) else { continue };
        match store.digest_upto(kind)? {
            None => store.queue_digest(kind, latest, &[], now_ms)?,
            Some(upto) if upto < latest => {
                let filter = AlertFilter { from_ms: Some(upto), to_ms: Some(latest), ..AlertFilter::default() };
                let alerts = store.search(&filter)?;
                let messages =
                    super::message::digest_messages(kind, &alerts, upto, latest, &config.alerts, &config.timezone);
                tracing::info!(kind, alerts = alerts.len(), "alert digest queued");
                store.queue_digest(kind, latest, &messages, now_ms)?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The digest times (daily, or weekly on its day) within a few days of
/// `around_ms`, as UTC milliseconds. A time that a clock change skips is
/// taken as the same wall-clock time after the change (01:30 on the spring
/// morning -> 02:30 BST); one it repeats, the first time.
fn digest_times_near(time: DigestTime, timezone: &TimeZone, around_ms: i64) -> Vec<i64> {
    let Ok(around) = Timestamp::from_millisecond(around_ms) else { return Vec::new() };
    let today = around.to_zoned(timezone.clone()).date();
    let clock = jiff::civil::Time::new((time.minute / 60) as i8, (time.minute % 60) as i8, 0, 0)
        .unwrap_or(jiff::civil::Time::midnight());
    (-8..=8)
        .filter_map(|offset: i64| today.checked_add(offset.days()).ok())
        .filter(|date| time.day.is_none_or(|day: Weekday| date.weekday() == day))
        .filter_map(|date| date.to_datetime(clock).to_zoned(timezone.clone()).ok())
        .map(|zoned| zoned.timestamp().as_millisecond())
        .collect()
}

/// The first digest time strictly after `after_ms`.
pub fn next_digest_after(time: DigestTime, timezone: &TimeZone, after_ms: i64) -> Option<i64> {
    digest_times_near(time, timezone, after_ms).into_iter().filter(|at| *at > after_ms).min()
}

/// The last digest time at or before `now_ms`.
pub fn latest_digest_at_or_before(time: DigestTime, timezone: &TimeZone, now_ms: i64) -> Option<i64> {
    digest_times_near(time, timezone, now_ms).into_iter().filter(|at| *at <= now_ms).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn retries_back_off_then_go_hourly_and_give_up_after_two_days() {
        let waits: Vec<i64> = (1..=8).map(|failures| retry_at(failures, 0).unwrap()).collect();
        assert_eq!(waits, [30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000, 3_600_000]);
        let trying: i64 = (1..GIVE_UP_AT_FAILURE).map(|failures| retry_at(failures, 0).unwrap()).sum();
        assert!((48 * 3_600_000..49 * 3_600_000).contains(&trying), "{trying}");
        assert_eq!(retry_at(GIVE_UP_AT_FAILURE, 0), None);
    }

    #[test]
    fn digest_times_follow_the_school_clock_across_its_changes() {
        let london = TimeZone::get("Europe/London").unwrap();
        let daily = DigestTime { minute: 7 * 60 + 30, day: None };
        // Clocks go back on Sunday 2026-10-25: 07:30 is BST (06:30Z) on the
        // Saturday and GMT (07:30Z) on the Sunday, 25 hours apart.
        assert_eq!(next_digest_after(daily, &london, at("2026-10-24T07:00:00Z")), Some(at("2026-10-25T07:30:00Z")));
        assert_eq!(next_digest_after(daily, &london, at("2026-10-23T12:00:00Z")), Some(at("2026-10-24T06:30:00Z")));
        assert_eq!(
            latest_digest_at_or_before(daily, &london, at("2026-10-25T07:29:59Z")),
            Some(at("2026-10-24T06:30:00Z"))
        );
        assert_eq!(
            latest_digest_at_or_before(daily, &london, at("2026-10-25T07:30:00Z")),
            Some(at("2026-10-25T07:30:00Z"))
        );
        // Clocks go forward on Sunday 2026-03-29: 01:30 does not exist, so
        // that day's digest goes at 02:30 BST (01:30Z).
        let night = DigestTime { minute: 90, day: None };
        assert_eq!(next_digest_after(night, &london, at("2026-03-28T12:00:00Z")), Some(at("2026-03-29T01:30:00Z")));
        // Weekly on Monday at 07:30, from a Wednesday in BST to the Monday after the change.
        let weekly = DigestTime { minute: 7 * 60 + 30, day: Some(Weekday::Monday) };
        assert_eq!(next_digest_after(weekly, &london, at("2026-10-21T12:00:00Z")), Some(at("2026-10-26T07:30:00Z")));
        assert_eq!(
            latest_digest_at_or_before(weekly, &london, at("2026-10-26T07:00:00Z")),
            Some(at("2026-10-19T06:30:00Z"))
        );
    }
}
