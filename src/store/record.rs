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

/// A name with its labels reversed (`www.example.com` -> `com.example.www`),
/// as stored in the `rname` column so that "this domain and everything under
/// it" is one index range: `rname = 'com.example' OR rname LIKE 'com.example.%'`
/// (searched as `>= 'com.example.' AND < 'com.example/'`).
pub fn reversed_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut reversed = String::with_capacity(name.len());
    for (index, label) in name.rsplit('.').enumerate() {
        if index > 0 {
            reversed.push('.');
        }
        reversed.push_str(label);
    }
    reversed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverses_labels() {
        assert_eq!(reversed_name("www.example.com"), "com.example.www");
        assert_eq!(reversed_name("example.com."), "com.example");
        assert_eq!(reversed_name("localhost"), "localhost");
        assert_eq!(reversed_name(""), "");
    }
}
