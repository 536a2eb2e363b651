//! A group's policy: which categories it is kept from, its allow and deny
//! overrides, and how a block is answered. Pure data; the blocklist stage in
//! `dns/blocklist.rs` applies it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::category::{self, CategorySet};

/// How a blocked name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAnswer {
    /// NXDOMAIN: the name does not exist (the default; clients fail fast).
    NxDomain,
    /// 0.0.0.0 for A and :: for AAAA; no records for other types.
    NullAddress,
    /// The address of the school's block page (AAAA only if an IPv6 address is set).
    BlockPage { ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr> },
}

/// Names that override the category lists for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// "example.com": the domain and every name below it.
    domains: HashSet<String>,
    /// "=www.example.com": that name only.
    exact: HashSet<String>,
}

/// The override rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideMatch {
    pub rule: String,
    pub exact: bool,
}

impl Overrides {
    /// Adds a normalised rule: a leading '=' means the exact name only.
    pub fn insert(&mut self, rule: &str) {
        match rule.strip_prefix('=') {
            Some(name) => self.exact.insert(name.to_string()),
            None => self.domains.insert(rule.to_string()),
        };
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.exact.is_empty()
    }

    /// The rule covering `name` (lower case, no trailing dot), if any.
    pub fn find(&self, name: &str) -> Option<OverrideMatch> {
        if self.is_empty() {
            return None;
        }
        if self.exact.contains(name) {
            return Some(OverrideMatch { rule: format!("={name}"), exact: true });
        }
        parents(name)
            .find(|parent| self.domains.contains(*parent))
            .map(|parent| OverrideMatch { rule: parent.to_string(), exact: parent.len() == name.len() })
    }

    /// Every rule, for display.
    pub fn rules(&self) -> impl Iterator<Item = String> + '_ {
        self.domains.iter().cloned().chain(self.exact.iter().map(|name| format!("={name}")))
    }
}

/// `www.example.com`, `example.com`, `com`.
pub fn parents(name: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(name), |name| name.split_once('.').map(|(_, rest)| rest)).filter(|n| !n.is_empty())
}

/// The group's YouTube restriction (a setting apart from web search).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YoutubeMode {
    Strict,
    Moderate,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    pub name: String,
    pub description: String,
    /// Categories this group is kept from (locked categories are always added).
    pub blocked: CategorySet,
    pub allow: Overrides,
    pub deny: Overrides,
    pub block_answer: BlockAnswer,
    /// SafeSearch forced on web search engines.
    pub safesearch: bool,
    pub youtube: YoutubeMode,
    /// The bypass stage: encrypted-DNS canaries, Private Relay and DDR discovery answered so clients stay on Hedgerow.
    pub bypass: bool,
}

/// The shipped SafeSearch, YouTube and bypass settings for a group: pupils
/// and guests strict with the bypass stage on; staff with web SafeSearch,
/// YouTube moderate and the bypass stage off. Other groups start as pupils.
pub fn default_search_settings(group: &str) -> (bool, YoutubeMode, bool) {
    match group {
        "staff" => (true, YoutubeMode::Moderate, false),
        _ => (true, YoutubeMode::Strict, true),
    }
}

/// The default categories for a group, as the project ships them: each
/// category's `blocked_for` in lists/categories.toml names the shipped groups
/// that block it. Pupils are kept from every UKSIC category, the bypass
/// categories, social media, dating, chat, games and AI chat; staff from
/// UKSIC (except misinformation) and bypass; guests as pupils but allowed
/// games. Any other group starts as strict as pupils.
pub fn default_blocked(group: &str) -> CategorySet {
    let group = if category::DEFAULT_GROUPS.contains(&group) { group } else { "pupil" };
    CategorySet::from_predicate(|c| c.blocked_for.contains(&group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_match_domains_and_exact_names() {
        let mut overrides = Overrides::default();
        overrides.insert("example.com");
        overrides.insert("=only.example.org");
        assert_eq!(overrides.find("www.example.com").unwrap().rule, "example.com");
        assert!(overrides.find("example.com").unwrap().exact);
        assert!(overrides.find("notexample.com").is_none());
        assert!(overrides.find("only.example.org").is_some());
        assert!(overrides.find("sub.only.example.org").is_none());
        assert!(overrides.find("example.org").is_none());
    }

    #[test]
    fn default_policies_differ_by_group() {
        let has = |set: CategorySet, id: &str| set.contains(category::index_of(id).unwrap());
        assert!(has(default_blocked("pupil"), "games") && has(default_blocked("pupil"), "social-media"));
        assert!(!has(default_blocked("guest"), "games") && has(default_blocked("guest"), "dating"));
        assert!(!has(default_blocked("staff"), "social-media") && has(default_blocked("staff"), "vpn-proxy"));
        assert!(has(default_blocked("staff"), "pornography"));
        assert!(has(default_blocked("new-group"), "chat"));
    }
}
