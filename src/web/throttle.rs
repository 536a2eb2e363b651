//! Failed logins, counted per account and per address: after
//! [`MAX_FAILURES`] failures within [`WINDOW_MS`], that account (or address)
//! is refused for [`LOCK_MS`], even with the right password. Kept in memory:
//! a restart forgives, which an attacker cannot cause from the login form.

use std::collections::HashMap;
use std::sync::Mutex;

pub const MAX_FAILURES: usize = 5;
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
pub const LOCK_MS: i64 = 15 * 60 * 1000;
/// Past this many keys, those with nothing recent are forgotten.
const TIDY_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Entry>>,
}

#[derive(Default)]
struct Entry {
    failures: Vec<i64>,
    locked_until: Option<i64>,
}

/// What a failed login did to the throttle.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Counted,
    /// This failure locked the account or the address (audit it once).
    NowLocked,
}

fn keys(name: &str, address: &str) -> [String; 2] {
    [format!("account:{}", name.trim().to_lowercase()), format!("address:{address}")]
}

impl Throttle {
    /// When the account or the address is locked, until when (ms).
    pub fn locked_until(&self, name: &str, address: &str, now_ms: i64) -> Option<i64> {
        let map = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys(name, address)
            .iter()
            .filter_map(|key| map.get(key).and_then(|entry| entry.locked_until))
            .filter(|until| *until > now_ms)
            .max()
    }

    /// Counts a failed login for the account and the address.
    pub fn failed(&self, name: &str, address: &str, now_ms: i64) -> Failure {
        let mut map = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > TIDY_ABOVE {
            map.retain(|_, entry| {
                entry.locked_until.is_some_and(|until| until > now_ms)
                    || entry.failures.iter().any(|time| now_ms - time < WINDOW_MS)
            });
        }
        let mut outcome = Failure::Counted;
        for key in keys(name, address) {
            let entry = map.entry(key).or_default();
            entry.failures.retain(|time| now_ms - time < WINDOW_MS);
            entry.failures.push(now_ms);
            let locked = entry.locked_until.is_some_and(|until| until > now_ms);
            if !locked && entry.failures.len() >= MAX_FAILURES {
                entry.locked_until = Some(now_ms + LOCK_MS);
                entry.failures.clear();
                outcome = Failure::NowLocked;
            }
        }
        outcome
    }

    /// A good login clears the account's count (not the address's).
    pub fn succeeded(&self, name: &str) {
        let mut map = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&keys(name, "")[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_for_fifteen_minutes() {
        let throttle = Throttle::default();
        for n in 0..4 {
            assert_eq!(throttle.failed("Ann", "10.0.0.1", n), Failure::Counted);
        }
        assert_eq!(throttle.locked_until("ann", "10.0.0.9", 10), None);
        assert_eq!(throttle.failed("ann", "10.0.0.1", 10), Failure::NowLocked);
        assert_eq!(throttle.locked_until("ANN", "10.0.0.9", 11), Some(10 + LOCK_MS), "per account");
        assert_eq!(throttle.locked_until("bob", "10.0.0.1", 11), Some(10 + LOCK_MS), "per address");
        assert_eq!(throttle.locked_until("bob", "10.0.0.2", 11), None);
        assert_eq!(throttle.locked_until("ann", "10.0.0.1", 10 + LOCK_MS), None, "lifts after 15 minutes");
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let throttle = Throttle::default();
        for n in 0..4 {
            throttle.failed("ann", "a", n);
        }
        assert_eq!(throttle.failed("ann", "a", WINDOW_MS + 5), Failure::Counted);
        assert_eq!(throttle.locked_until("ann", "a", WINDOW_MS + 6), None);
    }
}
