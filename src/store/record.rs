//! What the DNS path hands the query log for each answered query.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// One answered query, as the DNS path saw it. Built from the answer's
/// `Decision`; the writer adds the device name, owner and privacy treatment.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    /// UTC Unix milliseconds.
    pub time_ms: i64,
    pub client: IpAddr,
    pub network: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    /// The query name, lower case, no trailing dot.
    pub name: String,
    pub record_type: u16,
    /// One of [`DECISIONS`].
    pub decision: &'static str,
    pub category: Option<Arc<str>>,
    pub list: Option<Arc<str>>,
    pub response_code: u16,
    pub upstream_ms: Option<u32>,
    pub cache_hit: bool,
    /// The stage that settled the answer (`Stage::as_str`), and the
    /// decision's reason; `None` for rows from before they were kept.
    pub stage: Option<&'static str>,
    pub reason: Option<Cow<'static, str>>,
}

/// Every decision kind the log records (the words of `DecisionKind::as_str`).
pub const DECISIONS: [&str; 6] = ["allowed", "blocked", "safesearch", "bypass", "refused", "error"];
