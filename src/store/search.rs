//! Reading the query log: filtered search with paging, and tail.
//!
//! Each call opens its own read-only connection. In WAL mode a reader sees a
//! snapshot and takes no lock the writer waits for, so a long search never
//! stalls logging (Pi-hole's known failure).
//!
//! Every index is `(column, time_ms)`, so the one filter that drives a search
//! also serves its time range and its newest-first order. The most selective
//! filter drives (client, then name, category, decision, else time alone); the
//! others are written `+column` so SQLite, which has no statistics on a fresh
//! log, cannot pick a worse index.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params_from_iter};
use serde::Serialize;

use super::StoreError;
use super::record::{DECISIONS, reversed_name};
use super::schema::{self, Purpose};

/// A query-log search. Build with `..Search::default()` (limit 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// An IP address (exact), or else a device name, owner label or stored
    /// client token (`192.168.3.0/24`, `anon-...`); names are case-insensitive.
    pub client: Option<String>,
    /// A domain: matches the name itself and every name under it
    /// (`example.com` matches `www.example.com`).
    pub name: Option<String>,
    pub category: Option<String>,
    /// One of `allowed`, `blocked`, `safesearch`, `bypass`, `refused`, `error`.
    pub decision: Option<String>,
    /// Rows at or after this time (UTC Unix ms).
    pub since_ms: Option<i64>,
    /// Rows before this time (exclusive).
    pub until_ms: Option<i64>,
    pub limit: usize,
    /// Paging: the `id` of the last row of the previous page. The next page
    /// holds the rows after it in newest-first order (time, then id).
    pub before_id: Option<i64>,
}

impl Default for Search {
    fn default() -> Search {
        Search {
            client: None,
            name: None,
            category: None,
            decision: None,
            since_ms: None,
            until_ms: None,
            limit: 100,
            before_id: None,
        }
    }
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
}

const COLUMNS: &str = "id, time_ms, client, device, owner, network, group_name, name, record_type, decision, \
                       category, list, response_code, upstream_ms, cache_hit";

fn log_row(row: &Row<'_>) -> rusqlite::Result<LogRow> {
    Ok(LogRow {
        id: row.get(0)?,
        time_ms: row.get(1)?,
        client: row.get(2)?,
        device: row.get(3)?,
        owner: row.get(4)?,
        network: row.get(5)?,
        group: row.get(6)?,
        name: row.get(7)?,
        record_type: row.get(8)?,
        decision: row.get(9)?,
        category: row.get(10)?,
        list: row.get(11)?,
        response_code: row.get(12)?,
        upstream_ms: row.get(13)?,
        cache_hit: row.get(14)?,
    })
}

/// The rows matching every given filter, newest first, at most `limit`.
pub fn search(db: &Path, query: &Search) -> Result<Vec<LogRow>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let (mut sql, mut values) = match plan(query) {
        Ok(plan) => plan,
        Err(message) => return Err(StoreError::Invalid(message)),
    };
    if let Some(before_id) = query.before_id {
        let time: Option<i64> = conn
            .query_row("SELECT time_ms FROM query_log WHERE id = ?1", [before_id], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "search the query log"))?;
        match time {
            Some(time) => {
                // The plain bound lets the index skip the rows already shown.
                sql.push_str(" AND time_ms <= ? AND (time_ms, id) < (?, ?)");
                values.extend([Value::Integer(time), Value::Integer(time), Value::Integer(before_id)]);
            }
            // Gone (retention deletes the oldest rows first): fall back to ids.
            None => {
                sql.push_str(" AND id < ?");
                values.push(Value::Integer(before_id));
            }
        }
    }
    sql.push_str(" ORDER BY time_ms DESC, id DESC LIMIT ?");
    values.push(Value::Integer(i64::try_from(query.limit).unwrap_or(i64::MAX)));
    let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "search the query log"))?;
    let rows = statement
        .query_map(params_from_iter(values), log_row)
        .map_err(StoreError::sqlite(db, "search the query log"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "search the query log"))
}

/// The newest rows after `after_id`, at most `limit`, oldest first. A
/// follower passes the last id it printed; if more than `limit` rows arrived
/// meanwhile it skips to the newest ones. `after_id = 0` gives the last
/// `limit` rows.
pub fn tail(db: &Path, after_id: i64, limit: usize) -> Result<Vec<LogRow>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let sql = format!("SELECT {COLUMNS} FROM query_log WHERE id > ?1 ORDER BY id DESC LIMIT ?2");
    let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "read the query log"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(rusqlite::params![after_id, limit], log_row)
        .map_err(StoreError::sqlite(db, "read the query log"))?;
    let mut rows: Vec<LogRow> = rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the query log"))?;
    rows.reverse();
    Ok(rows)
}

/// The SQL (without paging, order and limit) and its parameters.
fn plan(query: &Search) -> Result<(String, Vec<Value>), String> {
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|value| !value.is_empty())
    }
    // The first filter present drives; later ones are plain row filters.
    let mut driven = false;
    let mut column = |name: &str| {
        let prefix = if driven { "+" } else { "" };
        driven = true;
        format!("{prefix}{name}")
    };

    if let Some(client) = text(&query.client) {
        match client.parse::<IpAddr>() {
            Ok(ip) => {
                conditions.push(format!("{} = ?", column("client")));
                values.push(Value::Text(ip.to_canonical().to_string()));
            }
            Err(_) => {
                let _ = column("device");
                conditions.push("(device = ? OR owner = ? OR client = ?)".into());
                values.extend(std::iter::repeat_n(Value::Text(client.to_string()), 3));
            }
        }
    }
    if let Some(name) = text(&query.name) {
        let name = name.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err("the name to search for is empty".into());
        }
        let reversed = reversed_name(&name);
        let rname = column("rname");
        conditions.push(format!("({rname} = ? OR ({rname} >= ? AND {rname} < ?))"));
        values.extend([
            Value::Text(reversed.clone()),
            Value::Text(format!("{reversed}.")),
            Value::Text(format!("{reversed}/")),
        ]);
    }
    if let Some(category) = text(&query.category) {
        conditions.push(format!("{} = ?", column("category")));
        values.push(Value::Text(category.to_ascii_lowercase()));
    }
    if let Some(decision) = text(&query.decision) {
        let decision = decision.to_ascii_lowercase();
        if !DECISIONS.contains(&decision.as_str()) {
            return Err(format!("decision {decision:?} is not one of {}", DECISIONS.join(", ")));
        }
        conditions.push(format!("{} = ?", column("decision")));
        values.push(Value::Text(decision));
    }
    if let Some(since) = query.since_ms {
        conditions.push("time_ms >= ?".into());
        values.push(Value::Integer(since));
    }
    if let Some(until) = query.until_ms {
        conditions.push("time_ms < ?".into());
        values.push(Value::Integer(until));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM query_log WHERE 1");
    for condition in &conditions {
        sql.push_str(" AND ");
        sql.push_str(condition);
    }
    Ok((sql, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_filter_drives_and_the_rest_are_plain() {
        let query = Search {
            client: Some("10.0.0.7".into()),
            name: Some("Example.COM.".into()),
            decision: Some("blocked".into()),
            ..Search::default()
        };
        let (sql, values) = plan(&query).unwrap();
        assert!(sql.contains("AND client = ?"), "{sql}");
        assert!(sql.contains("+rname = ?"), "{sql}");
        assert!(sql.contains("+decision = ?"), "{sql}");
        assert_eq!(values[1], Value::Text("com.example".into()));
    }

    #[test]
    fn rejects_unknown_decisions() {
        let query = Search { decision: Some("maybe".into()), ..Search::default() };
        assert!(plan(&query).unwrap_err().contains("allowed, blocked"));
    }
}
