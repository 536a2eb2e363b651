//! Alert rules and incidents: which attempts raise an alert, and how
//! further attempts join it rather than raising new ones.
//!
//! - **High-risk**: any attempt at one of its categories (by default `csam`,
//!   `terrorism`, `extremism`, `self-harm`) raises an alert at once.
//! - **Repeated**: `count` blocked lookups in one category by one device
//!   within `window` raise one.
//! - **Bypass**: any bypass attempt (a bypass decision, or a block in a
//!   bypass category such as `encrypted-dns` or `vpn-proxy`).
//!
//! One incident is one alert: while an incident of a rule is open for a
//! device (and category), that device's further matching attempts join it,
//! counted with the names tried, until it has been quiet for `quiet`; only
//! then can the same rule raise a new one for that device. Memory is bounded
//! by the devices active within the longest window.

use std::collections::{BTreeSet, HashMap, VecDeque};

pub use crate::config::alerts::{Rule, Severity, Trigger, default_rules};

/// One blocked or bypass lookup, as the observer hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub time_ms: i64,
    /// The client as the log names it (an address, or a guest's pseudonym).
    pub client: String,
    pub name: String,
    pub category: Option<String>,
    /// A bypass decision, or a block in a bypass category.
    pub bypass: bool,
}

/// What an attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new incident: raise an alert.
    Raised(Incident),
    /// The attempt joined the open incident with this key.
    Joined { key: IncidentKey, count: usize },
}

/// Which incident an attempt belongs to: one rule, one device, one category
/// (none for bypass attempts of any kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentKey {
    pub rule: String,
    pub client: String,
    pub category: Option<String>,
}

/// An open incident: its first and last attempt, how many, and the names tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub key: IncidentKey,
    pub severity: Severity,
    pub first_ms: i64,
    pub last_ms: i64,
    pub count: usize,
    pub names: BTreeSet<String>,
}

/// The rules and the incidents open now.
pub struct Engine {
    rules: Vec<Rule>,
    /// An incident closes after this long without a matching attempt.
    quiet_ms: i64,
    open: HashMap<IncidentKey, Incident>,
    /// Recent attempt times per (rule, client) for repeated rules.
    recent: HashMap<(usize, String), VecDeque<i64>>,
}

impl Engine {
    pub fn new(rules: Vec<Rule>, quiet_ms: i64) -> Engine {
        Engine { rules, quiet_ms, open: HashMap::new(), recent: HashMap::new() }
    }

    /// Takes up an incident raised before (a restart): further attempts join it.
    pub fn resume(&mut self, incident: Incident) {
        self.open.insert(incident.key.clone(), incident);
    }

    /// Runs `rules` from now on. Open incidents stay open; counts towards
    /// repeated rules start again (a changed threshold counts afresh).
    pub fn set_rules(&mut self, rules: Vec<Rule>, quiet_ms: i64) {
        self.rules = rules;
        self.quiet_ms = quiet_ms;
        self.recent.clear();
    }

    /// Runs every rule on `attempt`; attempts must come in time order.
    pub fn observe(&mut self, attempt: &Attempt) -> Vec<Outcome> {
        self.close_quiet(attempt.time_ms);
        let mut outcomes = Vec::new();
        for index in 0..self.rules.len() {
            let rule = &self.rules[index];
            if !rule.enabled {
                continue;
            }
            let (matches, category) = match &rule.trigger {
                Trigger::AnyAttempt { categories } => {
                    (attempt.category.as_ref().is_some_and(|c| categories.contains(c)), attempt.category.clone())
                }
                Trigger::Repeated { category, .. } => {
                    (attempt.category.as_deref() == Some(category.as_str()), attempt.category.clone())
                }
                Trigger::Bypass => (attempt.bypass, None),
                // Rises are counted per group from the hourly roll-ups, not per lookup.
                Trigger::Rise { .. } => (false, None),
            };
            if !matches {
                continue;
            }
            let key = IncidentKey { rule: rule.id.clone(), client: attempt.client.clone(), category };
            if let Some(open) = self.open.get_mut(&key) {
                open.count += 1;
                open.last_ms = attempt.time_ms;
                // An alert keeps only its first names: an incident of a
                // busy device must not grow without bound.
                if open.names.len() < crate::store::alerts::NAMES_KEPT {
                    open.names.insert(attempt.name.clone());
                }
                outcomes.push(Outcome::Joined { key, count: open.count });
                continue;
            }
            let (count, first_ms) = match rule.trigger {
                Trigger::Repeated { count, window_ms, .. } => {
                    let times = self.recent.entry((index, attempt.client.clone())).or_default();
                    times.push_back(attempt.time_ms);
                    while times.front().is_some_and(|&t| t <= attempt.time_ms - window_ms) {
                        times.pop_front();
                    }
                    if times.len() < count {
                        continue;
                    }
                    let first = times.front().copied().unwrap_or(attempt.time_ms);
                    let seen = times.len();
                    times.clear();
                    (seen, first)
                }
                _ => (1, attempt.time_ms),
            };
            let incident = Incident {
                key: key.clone(),
                severity: rule.severity,
                first_ms,
                last_ms: attempt.time_ms,
                count,
                names: BTreeSet::from([attempt.name.clone()]),
            };
            self.open.insert(key, incident.clone());
            outcomes.push(Outcome::Raised(incident));
        }
        outcomes
    }

    /// The incidents open now, oldest first.
    pub fn open_incidents(&self) -> Vec<&Incident> {
        let mut open: Vec<&Incident> = self.open.values().collect();
        open.sort_by_key(|incident| (incident.first_ms, incident.key.clone()));
        open
    }

    /// Closes incidents quiet for `quiet_ms` by `now_ms`, and forgets
    /// attempt times older than every window.
    fn close_quiet(&mut self, now_ms: i64) {
        let quiet = self.quiet_ms;
        self.open.retain(|_, incident| now_ms - incident.last_ms < quiet);
        let longest = self
            .rules
            .iter()
            .filter_map(|rule| match rule.trigger {
                Trigger::Repeated { window_ms, .. } => Some(window_ms),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        self.recent.retain(|_, times| times.back().is_some_and(|&last| now_ms - last < longest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn attempt(minute: i64, client: &str, name: &str, category: &str) -> Attempt {
        Attempt {
            time_ms: minute * MINUTE,
            client: client.into(),
            name: name.into(),
            category: Some(category.into()),
            bypass: false,
        }
    }

    fn raised(outcomes: &[Outcome]) -> Vec<&Incident> {
        outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Outcome::Raised(incident) => Some(incident),
                Outcome::Joined { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_high_risk_attempt_raises_at_once_and_more_attempts_join_it() {
        let mut engine = Engine::new(default_rules(), 30 * MINUTE);
        let first = engine.observe(&attempt(0, "10.0.0.5", "a.example", "self-harm"));
        let incident = raised(&first)[0];
        assert_eq!((incident.key.rule.as_str(), incident.severity, incident.count), ("high-risk", Severity::High, 1));
        let joined = engine.observe(&attempt(5, "10.0.0.5", "b.example", "self-harm"));
        assert_eq!(joined, [Outcome::Joined { key: incident.key.clone(), count: 2 }]);
        assert_eq!(engine.open_incidents()[0].names.len(), 2);
        // A busy device's incident counts every attempt but keeps only the names an alert keeps.
        for second in 0..500 {
            engine.observe(&attempt(5 + second / 100, "10.0.0.5", &format!("n{second}.example"), "self-harm"));
        }
        assert_eq!(engine.open_incidents()[0].count, 502);
        assert_eq!(engine.open_incidents()[0].names.len(), crate::store::alerts::NAMES_KEPT);
        // Another device is another incident.
        assert_eq!(raised(&engine.observe(&attempt(6, "10.0.0.6", "a.example", "self-harm"))).len(), 1);
        // Quiet for longer than `quiet`: the next attempt is a new incident.
        let later = engine.observe(&attempt(40, "10.0.0.5", "c.example", "self-harm"));
        assert_eq!(raised(&later)[0].count, 1);
    }

    #[test]
    fn repeated_attempts_raise_only_at_the_threshold_within_the_window() {
        let rules = vec![Rule {
            id: "repeated-gambling".into(),
            trigger: Trigger::Repeated { category: "gambling".into(), count: 3, window_ms: 10 * MINUTE },
            severity: Severity::Medium,
            enabled: true,
            why: String::new(),
        }];
        let mut engine = Engine::new(rules, 30 * MINUTE);
        // Two in ten minutes, then a gap: the window forgets them.
        assert!(engine.observe(&attempt(0, "c", "bet1", "gambling")).is_empty());
        assert!(engine.observe(&attempt(5, "c", "bet2", "gambling")).is_empty());
        assert!(engine.observe(&attempt(20, "c", "bet3", "gambling")).is_empty());
        assert!(engine.observe(&attempt(21, "c", "bet4", "gambling")).is_empty());
        // Another category and another device do not count towards it.
        assert!(engine.observe(&attempt(22, "c", "game", "games")).is_empty());
        assert!(engine.observe(&attempt(22, "d", "bet", "gambling")).is_empty());
        let third = engine.observe(&attempt(23, "c", "bet5", "gambling"));
        let incident = raised(&third)[0];
        assert_eq!((incident.count, incident.first_ms), (3, 20 * MINUTE));
        // Once raised, further attempts join it.
        assert!(matches!(
            engine.observe(&attempt(24, "c", "bet6", "gambling"))[..],
            [Outcome::Joined { count: 4, .. }]
        ));
    }

    #[test]
    fn bypass_attempts_are_one_incident_per_device_whatever_the_kind() {
        let mut engine = Engine::new(default_rules(), 30 * MINUTE);
        let bypass = |minute, name: &str| Attempt {
            time_ms: minute * MINUTE,
            client: "10.0.0.9".into(),
            name: name.into(),
            category: Some("encrypted-dns".into()),
            bypass: true,
        };
        let first = engine.observe(&bypass(0, "use-application-dns.net"));
        assert_eq!(raised(&first)[0].severity, Severity::Medium);
        assert!(matches!(engine.observe(&bypass(1, "dns.google"))[..], [Outcome::Joined { count: 2, .. }]));
    }
}
