//! The alerts' own way in from the DNS path: a [`Sighting`] of each blocked
//! or bypass lookup that some rule watches, through its own bounded channel
//! to the watch thread ([`super::watch`]).
//!
//! It is apart from the query log's channel on purpose: under overload the
//! log sheds ordinary rows, but the few lookups that can raise an alert
//! still get through (allowed lookups and blocks no rule watches never
//! enter this channel). The observer itself (`impl Observer for AlertFeed`)
//! is in `dns/pipeline.rs`, beside the query log's: the DNS side knows the
//! alerts, never the reverse.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use arc_swap::ArcSwap;

use crate::config::alerts::{Rule, Trigger};
use crate::policy::category::{self, CategoryKind};

/// Sightings that may wait for the watch thread. Alert candidates are a small
/// share of lookups; this holds several seconds of a blocked-lookup flood.
pub const CAPACITY: usize = 65_536;

/// One blocked or bypass lookup a rule watches.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub time_ms: i64,
    pub source: IpAddr,
    pub name: String,
    pub category: Option<Arc<str>>,
    /// A bypass decision, or a block in a bypass category.
    pub bypass: bool,
    pub network: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
}

/// What the rules in force watch: checked on the DNS path, so a plain list.
#[derive(Debug, Default)]
struct Watched {
    categories: Vec<String>,
    bypass: bool,
    /// The bypass categories' ids (found once here, not per lookup).
    bypass_categories: Vec<&'static str>,
}

/// The sending half, held by the pipeline.
pub struct AlertFeed {
    sender: SyncSender<Sighting>,
    watched: ArcSwap<Watched>,
    dropped: Arc<AtomicU64>,
}

impl AlertFeed {
    /// A feed watching what `rules` match, and the receiving end for the
    /// watch thread.
    pub fn new(rules: &[Rule]) -> (AlertFeed, Receiver<Sighting>) {
        let (sender, receiver) = sync_channel(CAPACITY);
        let feed = AlertFeed { sender, watched: ArcSwap::from_pointee(Watched::default()), dropped: Arc::default() };
        feed.watch(rules);
        (feed, receiver)
    }

    /// Watches what `rules` match from now on (after a reload).
    pub fn watch(&self, rules: &[Rule]) {
        let mut watched = Watched {
            bypass_categories: category::all().filter(|c| c.kind == CategoryKind::Bypass).map(|c| c.id).collect(),
            ..Watched::default()
        };
        for rule in rules.iter().filter(|rule| rule.enabled) {
            match &rule.trigger {
                Trigger::AnyAttempt { categories } => watched.categories.extend(categories.iter().cloned()),
                Trigger::Repeated { category, .. } => watched.categories.push(category.clone()),
                Trigger::Bypass => watched.bypass = true,
                Trigger::Rise { .. } => {}
            }
        }
        watched.categories.sort();
        watched.categories.dedup();
        self.watched.store(Arc::new(watched));
    }

    /// Whether a lookup blocked in `category` (or a bypass decision) is
    /// watched by some rule, and whether it counts as a bypass attempt.
    #[inline]
    pub fn wants(&self, category: Option<&str>, bypass_decision: bool) -> Option<bool> {
        let watched = self.watched.load();
        let bypass = bypass_decision || category.is_some_and(|c| watched.bypass_categories.iter().any(|b| *b == c));
        let watched_category = category.is_some_and(|c| watched.categories.iter().any(|w| w == c));
        (watched_category || (bypass && watched.bypass)).then_some(bypass)
    }

    /// Queues a sighting; never blocks. A full channel drops and counts it.
    pub fn offer(&self, sighting: Sighting) {
        match self.sender.try_send(sighting) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sightings dropped because the watch thread was behind (or stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::default_rules;

    #[test]
    fn only_what_a_rule_watches_is_wanted() {
        let (feed, _receiver) = AlertFeed::new(&default_rules());
        assert_eq!(feed.wants(Some("self-harm"), false), Some(false));
        assert_eq!(feed.wants(Some("ads"), false), None);
        assert_eq!(feed.wants(None, false), None);
        assert_eq!(feed.wants(Some("encrypted-dns"), false), Some(true));
        assert_eq!(feed.wants(None, true), Some(true));
        let mut rules = default_rules();
        rules.retain(|rule| rule.id != "bypass");
        feed.watch(&rules);
        assert_eq!(feed.wants(Some("encrypted-dns"), false), None);
    }
}
