//! What the DNS path hands the query log for each answered query, and what
//! the log gives back for each row.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

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

/// One query-log row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRow {
    pub id: i64,
    /// UTC Unix milliseconds.
    pub time_ms: i64,
    /// The client address, or its privacy form for private groups.
    pub client: String,
    /// The device name and owner when the row was written.
    pub device: Option<String>,
    pub owner: Option<String>,
    pub network: Option<String>,
    pub group: Option<String>,
    pub name: String,
    pub record_type: u16,
    pub decision: String,
    pub category: Option<String>,
    pub list: Option<String>,
    pub response_code: u16,
    pub upstream_ms: Option<u32>,
    pub cache_hit: bool,
    /// The stage that settled the answer and the decision's reason (`None`
    /// in rows written before they were kept).
    pub stage: Option<String>,
    pub reason: Option<String>,
}

/// Every decision kind the log records (the words of `DecisionKind::as_str`).
pub const DECISIONS: [&str; 6] = ["allowed", "blocked", "safesearch", "bypass", "refused", "error"];

/// Stands for the row's own name in a stored outcome reason. The pipeline's
/// reasons name the query ("x.example is in category games (listed exactly
/// in list ...)"); stored as they are, every blocked name would make its own
/// outcome. With the name replaced by this mark (a private-use character no
/// reason carries), one outcome serves every name it was given for, and the
/// reader puts the row's name back.
pub const NAME_MARK: char = '\u{E000}';

/// The reason as `log_outcomes` stores it: `name` replaced by [`NAME_MARK`]
/// (a mark already in the text, which no real reason has, becomes U+FFFD so
/// reading back never invents the name where it was not).
pub fn reason_template<'a>(reason: &'a str, name: &str) -> Cow<'a, str> {
    if name.is_empty() || !reason.contains(name) && !reason.contains(NAME_MARK) {
        return Cow::Borrowed(reason);
    }
    Cow::Owned(reason.replace(NAME_MARK, "\u{FFFD}").replace(name, &NAME_MARK.to_string()))
}

/// The reason of a row named `name`, from its stored template.
pub fn reason_for<'a>(template: &'a str, name: &str) -> Cow<'a, str> {
    if template.contains(NAME_MARK) { Cow::Owned(template.replace(NAME_MARK, name)) } else { Cow::Borrowed(template) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_words_without_their_name() {
        let name = "www.games.example";
        let reason = "www.games.example is in category games (parent domain games.example is listed in list g)";
        let template = reason_template(reason, name);
        assert_eq!(template, "\u{E000} is in category games (parent domain games.example is listed in list g)");
        assert_eq!(reason_template("other.example is in category games", name), "other.example is in category games");
        assert_eq!(reason_for(&template, name), reason);
        assert_eq!(reason_for(&reason_template("answered from the cache", name), name), "answered from the cache");
        // A stray mark is not turned into the name on the way back.
        assert_eq!(reason_for(&reason_template("odd \u{E000} text", name), name), "odd \u{FFFD} text");
    }
}

/// An allowed pupil lookup of `name` at `time_ms` from 10.1.0.5, for the
/// store's own tests.
#[cfg(test)]
pub(crate) fn allowed_row(time_ms: i64, name: &str) -> QueryRecord {
    QueryRecord {
        time_ms,
        client: "10.1.0.5".parse().unwrap(),
        network: None,
        group: Some("pupil".into()),
        name: name.into(),
        record_type: 1,
        decision: "allowed",
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: None,
        cache_hit: false,
        stage: None,
        reason: None,
    }
}
