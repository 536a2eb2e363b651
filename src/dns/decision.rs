//! The `Decision` every answer carries: which stage settled it and why. The
//! log, the metrics, `hedgerow check` and the dashboard all read this one value.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

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
    AnswerInspection,
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
            Stage::AnswerInspection => "answer-inspection",
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
    /// Filled by the blocklist stage (a later issue): the category and list.
    pub category: Option<Arc<str>>,
    pub list: Option<Arc<str>>,
    pub reason: Cow<'static, str>,
    /// The device-table entry whose `group` chose `group` (else the group is
    /// the network's).
    pub device: Option<Arc<str>>,
}

impl Decision {
    pub fn new(kind: DecisionKind, stage: Stage, reason: impl Into<Cow<'static, str>>) -> Decision {
        Decision {
            kind,
            stage,
            network: None,
            group: None,
            category: None,
            list: None,
            reason: reason.into(),
            device: None,
        }
    }

    /// Adds the client's identity (network and group).
    pub fn for_client(mut self, network: &Arc<str>, group: &Arc<str>) -> Decision {
        self.network = Some(network.clone());
        self.group = Some(group.clone());
        self
    }

    /// Adds the client's identity: network, group, and the device-table
    /// entry that chose the group, if one did.
    pub fn identified(self, client: &super::identify::Client) -> Decision {
        let mut decision = self.for_client(&client.network, &client.group);
        decision.device = client.device.clone();
        decision
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
