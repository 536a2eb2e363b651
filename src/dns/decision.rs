//! The `Decision` every answer carries: which stage settled it and why. The
//! log, the metrics, `hedgerow check` and the dashboard all read this one value.
//!
//! A decision is made once, by the constructor for its outcome, and never
//! changed afterwards: the fields are public to read, and nothing on the
//! query path writes them. Each constructor that has an identified client
//! takes it, so the network, group and device are always filled the same way.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::identify::Client;

/// What happened to a query, in the words the query log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// Answered from the cache or upstream, unchanged.
    Allowed,
    /// Kept from the client by policy.
    Blocked,
    /// Rewritten to a search engine's safe host.
    SafeSearch,
    /// An attempt to get round the filter (encrypted DNS, relay, VPN).
    Bypass,
    /// Not served: unknown network or rate limit.
    Refused,
    /// The query was malformed or no upstream could answer it.
    Error,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allowed => "allowed",
            DecisionKind::Blocked => "blocked",
            DecisionKind::SafeSearch => "safesearch",
            DecisionKind::Bypass => "bypass",
            DecisionKind::Refused => "refused",
            DecisionKind::Error => "error",
        }
    }
}

/// The stage of the query path that settled the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Parse,
    Access,
    Identify,
    Bypass,
    SafeSearch,
    Blocklist,
    /// ANY (RFC 8482) and meta types, answered without going upstream.
    QueryType,
    Cache,
    Upstream,
    /// The CNAME targets of an upstream answer, re-checked by the blocklist stage.
    Inspection,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Access => "access",
            Stage::Identify => "identify",
            Stage::Bypass => "bypass",
            Stage::SafeSearch => "safesearch",
            Stage::Blocklist => "blocklist",
            Stage::QueryType => "query-type",
            Stage::Inspection => "inspection",
            Stage::Cache => "cache",
            Stage::Upstream => "upstream",
        }
    }
}

/// Why an answer is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: DecisionKind,
    pub stage: Stage,
    /// The client's network and group, once identified.
    pub network: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    /// The category and list that blocked the name, or that an allow
    /// override overrode.
    pub category: Option<Arc<str>>,
    pub list: Option<Arc<str>>,
    /// The listed domain or override rule that fired (an allow override's
    /// decision names the override rule here).
    pub rule: Option<Arc<str>>,
    pub reason: Cow<'static, str>,
    /// The device-table entry whose `group` chose `group` (else the group is
    /// the network's).
    pub device: Option<Arc<str>>,
}

/// Where a name was found: the category (none for a deny override), the
/// list, and the listed domain or override rule.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    pub category: Option<&'a str>,
    pub list: &'a str,
    pub rule: &'a str,
}

impl Decision {
    /// The one place a decision's fields are filled.
    fn made(
        kind: DecisionKind,
        stage: Stage,
        client: Option<&Client>,
        reason: impl Into<Cow<'static, str>>,
    ) -> Decision {
        Decision {
            kind,
            stage,
            network: client.map(|client| client.network.clone()),
            group: client.map(|client| client.group.clone()),
            category: None,
            list: None,
            rule: None,
            reason: reason.into(),
            device: client.and_then(|client| client.device.clone()),
        }
    }

    fn listed(mut self, listing: Listing<'_>) -> Decision {
        self.category = listing.category.map(Arc::from);
        self.list = Some(Arc::from(listing.list));
        self.rule = Some(Arc::from(listing.rule));
        self
    }

    // -- allowed -----------------------------------------------------------

    /// Not stopped by policy, answered from a fresh cache entry.
    pub fn allowed_from_cache(client: &Client) -> Decision {
        Decision::made(DecisionKind::Allowed, Stage::Cache, Some(client), "answered from the cache")
    }

    /// Not stopped by policy, answered by upstream (`upstream` describes it).
    pub fn allowed_from_upstream(client: &Client, upstream: &'static str) -> Decision {
        Decision::made(DecisionKind::Allowed, Stage::Upstream, Some(client), upstream)
    }

    /// What `hedgerow check` says of a name no policy stage stops (nothing
    /// is sent upstream by `check`; a live query's answer says where it came from).
    pub fn not_stopped(client: &Client) -> Decision {
        let reason = format!("no policy stage stops this name for group {}", client.group);
        Decision::made(DecisionKind::Allowed, Stage::Upstream, Some(client), reason)
    }

    /// Listed (or not) but let through by the group's allow override `rule`;
    /// `overrode` is the category and list it overrode, when it was listed in
    /// one the group is kept from. The answer that follows, from the cache
    /// or upstream, carries this decision.
    pub fn allowed_by_override(client: &Client, name: &str, rule: &str, overrode: Option<Listing<'_>>) -> Decision {
        let reason = match overrode {
            Some(Listing { category: Some(category), list, .. }) => format!(
                "{name} is in category {category} (list {list}), but allowed for group {} by override {rule:?}",
                client.group
            ),
            _ => format!("{name} is allowed for group {} by override {rule:?}", client.group),
        };
        let mut decision = Decision::made(DecisionKind::Allowed, Stage::Blocklist, Some(client), reason);
        if let Some(overrode) = overrode {
            decision = decision.listed(overrode);
        }
        decision.rule = Some(Arc::from(rule));
        decision
    }

    /// ANY answered with the RFC 8482 minimal answer.
    pub fn any_minimal(client: &Client) -> Decision {
        Decision::made(
            DecisionKind::Allowed,
            Stage::QueryType,
            Some(client),
            "ANY answered with a synthesized HINFO \"RFC8482\" (RFC 8482 section 4.2): ask for the record type you need",
        )
    }

    /// An expired answer served (RFC 8767), and why.
    pub fn served_stale(client: &Client, why: &str) -> Decision {
        let reason = format!("served stale from the cache (RFC 8767): {why}");
        Decision::made(DecisionKind::Allowed, Stage::Cache, Some(client), reason)
    }

    // -- blocked -----------------------------------------------------------

    /// Listed in a category the group is kept from (`reason` says how).
    pub fn blocked_by_category(client: &Client, listing: Listing<'_>, reason: String) -> Decision {
        Decision::made(DecisionKind::Blocked, Stage::Blocklist, Some(client), reason).listed(listing)
    }

    /// Denied for the group by its deny override `rule`.
    pub fn blocked_by_deny_override(client: &Client, rule: &str, reason: String) -> Decision {
        let listing = Listing { category: None, list: "deny override", rule };
        Decision::made(DecisionKind::Blocked, Stage::Blocklist, Some(client), reason).listed(listing)
    }

    /// Listed in a locked category: nothing un-blocks it.
    pub fn blocked_by_locked_category(client: &Client, listing: Listing<'_>, reason: String) -> Decision {
        let reason = format!("{reason}; the category is locked, so no override or group setting allows it");
        Decision::made(DecisionKind::Blocked, Stage::Blocklist, Some(client), reason).listed(listing)
    }

    /// A CNAME target in the upstream answer is blocked for the group
    /// (`bypass` when the target's category is a bypass one).
    pub fn blocked_on_cname_target(client: &Client, listing: Listing<'_>, bypass: bool, reason: String) -> Decision {
        let kind = if bypass { DecisionKind::Bypass } else { DecisionKind::Blocked };
        Decision::made(kind, Stage::Inspection, Some(client), reason).listed(listing)
    }

    // -- rewritten, bypass -------------------------------------------------

    /// A search host rewritten to its safe host.
    pub fn safesearch(client: &Client, reason: String) -> Decision {
        Decision::made(DecisionKind::SafeSearch, Stage::SafeSearch, Some(client), reason)
    }

    /// The safe host of a rewrite did not resolve: SERVFAIL, never the
    /// unrestricted address.
    pub fn safesearch_failed(client: &Client, rewrite: &str, failure: impl fmt::Display) -> Decision {
        let reason = format!(
            "{rewrite}; the safe host did not resolve ({failure}), so SERVFAIL rather than the unrestricted address"
        );
        Decision::made(DecisionKind::Error, Stage::SafeSearch, Some(client), reason)
    }

    /// An attempt to get round the filter, answered by the bypass stage
    /// (a canary name, or a name in a bypass category).
    pub fn bypass(client: &Client, reason: String) -> Decision {
        Decision::made(DecisionKind::Bypass, Stage::Bypass, Some(client), reason)
    }

    /// A name listed in a bypass category.
    pub fn bypass_listed(client: &Client, listing: Listing<'_>, reason: String) -> Decision {
        Decision::bypass(client, reason).listed(listing)
    }

    // -- refused -----------------------------------------------------------

    /// The source is in no configured network (never an open resolver).
    pub fn outsider() -> Decision {
        Decision::made(DecisionKind::Refused, Stage::Access, None, "source address is in no configured network")
    }

    /// The client asked faster than its rate limit.
    pub fn rate_limited(client: &Client) -> Decision {
        Decision::made(DecisionKind::Refused, Stage::Access, Some(client), "client is over its rate limit")
    }

    /// `hedgerow check --group` named a group that is not configured.
    pub fn unknown_group(group: &str) -> Decision {
        Decision::made(DecisionKind::Refused, Stage::Identify, None, format!("no group named {group:?}"))
    }

    /// A meta query type (`type_name`), answered NOTIMP.
    pub fn meta_type(client: &Client, type_name: &str) -> Decision {
        let reason = format!(
            "query type {type_name} is a meta type, not data a resolver serves: NOTIMP (RFC 1035 section 4.1.1, RFC 6895 section 3.1)"
        );
        Decision::made(DecisionKind::Refused, Stage::QueryType, Some(client), reason)
    }

    // -- error -------------------------------------------------------------

    /// No upstream answer (and no stale one to serve).
    pub fn upstream_failed(client: &Client, error: impl fmt::Display) -> Decision {
        Decision::made(DecisionKind::Error, Stage::Upstream, Some(client), format!("no upstream answer: {error}"))
    }

    /// The listener could not answer the query (before any policy ran).
    pub fn unanswerable(reason: &'static str) -> Decision {
        Decision::made(DecisionKind::Error, Stage::Parse, None, reason)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at stage {}", self.kind.as_str(), self.stage.as_str())?;
        if let Some(network) = &self.network {
            write!(f, ", network {network}")?;
        }
        if let Some(group) = &self.group {
            write!(f, ", group {group}")?;
            if let Some(device) = &self.device {
                write!(f, " (from the device table: {device})")?;
            }
        }
        if let Some(category) = &self.category {
            write!(f, ", category {category}")?;
        }
        if let Some(list) = &self.list {
            write!(f, ", list {list}")?;
        }
        write!(f, ": {}", self.reason)
    }
}
