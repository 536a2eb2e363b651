//! blocklist: is the name, or any parent domain, in a category this group is
//! kept from? Locked categories come first and nothing un-blocks them; then
//! the group's deny and allow overrides; then its categories. The same check
//! runs on CNAME targets of upstream answers (answer inspection), so a
//! harmless-looking name cannot alias its way to a blocked one.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::answer::{Answer, ExtendedError};
use super::decision::{Decision, Listing};
use super::identify::Client;
use crate::lists::compiled::CompiledLists;
use crate::policy::category::{self, Category, CategorySet};
use crate::policy::{BlockAnswer, GroupPolicy, OverrideMatch};

/// TTL of synthesised block answers: short, so policy changes apply quickly.
pub const BLOCK_TTL: u32 = 60;
/// RFC 8914 info code "Blocked".
const EDE_BLOCKED: u16 = 15;

/// What the blocklist stage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not listed in any category this group is kept from.
    Pass,
    /// A group allow override lets it through; `overrode` is the listing in
    /// a category the group is kept from, when there is one.
    Allowed {
        rule: OverrideMatch,
        overrode: Option<Block>,
    },
    Blocked(Block),
}

/// Why a name is blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The category, or None for a deny override.
    pub category: Option<&'static Category>,
    /// The list that listed it (or "deny override").
    pub list: String,
    /// The listed domain or override rule that fired.
    pub rule: String,
    /// True when the rule is the queried name itself, false for a parent domain.
    pub exact: bool,
    /// True when the category is locked (nothing un-blocks it).
    pub locked: bool,
}

impl Block {
    pub fn describe(&self, name: &str) -> String {
        let how =
            if self.exact { "listed exactly".to_string() } else { format!("parent domain {} is listed", self.rule) };
        match self.category {
            Some(category) => format!("{name} is in category {} ({how} in list {})", category.id, self.list),
            None => format!("{name} is denied for this group by override {:?}", self.rule),
        }
    }

    /// Where the name was found, as a decision names it.
    pub fn listing(&self) -> Listing<'_> {
        Listing { category: self.category.map(|category| category.id), list: &self.list, rule: &self.rule }
    }

    fn is_bypass(&self) -> bool {
        self.category.is_some_and(|category| category.kind == category::CategoryKind::Bypass)
    }

    /// The decision for `name` (the queried name, dotted) blocked by this
    /// block. A bypass category's block is the bypass stage's work.
    pub fn decision(&self, client: &Client, name: &str) -> Decision {
        let reason = self.describe(name);
        if self.category.is_none() {
            Decision::blocked_by_deny_override(client, &self.rule, reason)
        } else if self.locked {
            Decision::blocked_by_locked_category(client, self.listing(), reason)
        } else if self.is_bypass() {
            Decision::bypass_listed(client, self.listing(), reason)
        } else {
            Decision::blocked_by_category(client, self.listing(), reason)
        }
    }

    /// The decision for an answer whose CNAME target `target` this block hit.
    pub fn cname_decision(&self, client: &Client, target: &str) -> Decision {
        let reason = format!("CNAME target {}", self.describe(target));
        Decision::blocked_on_cname_target(client, self.listing(), self.is_bypass(), reason)
    }
}

/// Decides one name for one group.
pub fn check(lists: &CompiledLists, policy: &GroupPolicy, locked: CategorySet, name: &[u8]) -> Verdict {
    let listed = lists.lookup(name);
    let locked_hits = listed.intersection(locked);
    if !locked_hits.is_empty() {
        return Verdict::Blocked(Block { locked: true, ..explain(lists, name, locked_hits) });
    }
    let text = std::str::from_utf8(name).unwrap_or_default();
    if let Some(rule) = policy.deny.find(text) {
        return Verdict::Blocked(Block {
            category: None,
            list: "deny override".into(),
            rule: rule.rule,
            exact: rule.exact,
            locked: false,
        });
    }
    let hits = listed.intersection(policy.blocked);
    if let Some(rule) = policy.allow.find(text) {
        // Slow path, for allowed names only: which listing the override overrode.
        let overrode = (!hits.is_empty()).then(|| explain(lists, name, hits));
        return Verdict::Allowed { rule, overrode };
    }
    if hits.is_empty() { Verdict::Pass } else { Verdict::Blocked(explain(lists, name, hits)) }
}

/// The most specific listing of the first of `categories` (slow path: only
/// for names that are blocked).
fn explain(lists: &CompiledLists, name: &[u8], categories: CategorySet) -> Block {
    let first = categories.indexes().next().expect("a non-empty set");
    let category = category::by_index(first);
    let found = lists.explain(name).into_iter().find(|m| m.blocks.contains(first) && !m.allows.contains(first));
    match found {
        Some(found) => Block {
            category,
            list: found.source.unwrap_or_else(|| "(unknown list)".into()),
            rule: found.domain,
            exact: found.exact,
            locked: false,
        },
        None => Block {
            category,
            list: "(unknown list)".into(),
            rule: String::from_utf8_lossy(name).into_owned(),
            exact: true,
            locked: false,
        },
    }
}

/// The answer a group gets for a blocked name, carrying `decision` (made
/// by [`Block::decision`] or [`Block::cname_decision`]).
pub fn block_answer(
    policy: &GroupPolicy,
    qname: &Name,
    record_type: RecordType,
    block: &Block,
    decision: Decision,
) -> Answer {
    let record = |data: RData| Record::from_rdata(qname.clone(), BLOCK_TTL, data);
    let (response_code, answers) = match (policy.block_answer, record_type) {
        (BlockAnswer::NxDomain, _) => (ResponseCode::NXDomain, vec![]),
        (BlockAnswer::NullAddress, RecordType::A) => {
            (ResponseCode::NoError, vec![record(RData::A(A(Ipv4Addr::UNSPECIFIED)))])
        }
        (BlockAnswer::NullAddress, RecordType::AAAA) => {
            (ResponseCode::NoError, vec![record(RData::AAAA(AAAA(Ipv6Addr::UNSPECIFIED)))])
        }
        (BlockAnswer::BlockPage { ipv4, .. }, RecordType::A) => {
            (ResponseCode::NoError, vec![record(RData::A(A(ipv4)))])
        }
        (BlockAnswer::BlockPage { ipv6: Some(ipv6), .. }, RecordType::AAAA) => {
            (ResponseCode::NoError, vec![record(RData::AAAA(AAAA(ipv6)))])
        }
        _ => (ResponseCode::NoError, vec![]),
    };
    let text = match block.category {
        Some(category) => format!("blocked by Hedgerow: category {} (list {})", category.id, block.list),
        None => "blocked by Hedgerow: school deny override".to_string(),
    };
    let mut answer = Answer::empty(response_code, decision);
    answer.answers = answers;
    answer.extended_error = Some(ExtendedError { info_code: EDE_BLOCKED, text });
    answer
}
