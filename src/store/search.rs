//! Reading the query log: filtered search with paging, and tail.
//!
//! Each call opens its own read-only connection. In WAL mode a reader sees a
//! snapshot and takes no lock the writer waits for, so a long search never
//! stalls logging (Pi-hole's known failure).
//!
//! How a search finds its rows (the first filter present leads):
//! - client address: the `(client, time_ms)` index;
//! - device name or owner: the addresses that carried it on those days
//!   (`client_labels`), then the client index;
//! - name (and every name under it): the hours it was asked for in
//!   (`name_hours`), then only those stretches of the `(time_ms, rname)` index;
//! - category, decision: their `(column, time_ms)` indexes;
//! - otherwise the time index.
//!
//! Every index ends in `time_ms`, so the leading filter also serves the time
//! range and the newest-first order. Other equality filters are written
//! `+column` so SQLite, with no statistics on a young log, cannot pick a
//! worse index.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use serde::Serialize;

use super::StoreError;
use super::record::DECISIONS;
use super::schema::{self, Purpose};
use super::time::DAY_MS;
use super::writer::HOUR_MS;
use crate::name::reversed_name;

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
    /// The stage that settled the answer and the decision's reason (`None`
    /// in rows written before they were kept).
    pub stage: Option<String>,
    pub reason: Option<String>,
}

/// A log row as `hedgerow log` exports it: JSON and CSV carry these fields,
/// with these names, in this order, in the same forms (time ISO 8601 UTC,
/// type and rcode as text; a missing value is JSON `null`, an empty CSV cell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportRow {
    pub id: i64,
    /// `2026-11-23T08:30:00.250Z`.
    pub time: String,
    pub client: String,
    pub device: Option<String>,
    pub owner: Option<String>,
    pub network: Option<String>,
    pub group: Option<String>,
    pub name: String,
    /// `A`, `AAAA`, `HTTPS`, ... (`TYPE65534` for unnamed types).
    #[serde(rename = "type")]
    pub record_type: String,
    pub decision: String,
    pub category: Option<String>,
    pub list: Option<String>,
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, ... (`RCODE12` for others).
    pub rcode: String,
    pub upstream_ms: Option<u32>,
    pub cache_hit: bool,
    /// The stage that settled the answer: `blocklist`, `inspection`, `cache`, ...
    pub stage: Option<String>,
    /// The decision's reason, in the words `hedgerow check` prints.
    pub reason: Option<String>,
}

impl ExportRow {
    /// The field names, in order: the CSV header and the JSON keys.
    pub const FIELDS: [&'static str; 17] = [
        "id",
        "time",
        "client",
        "device",
        "owner",
        "network",
        "group",
        "name",
        "type",
        "decision",
        "category",
        "list",
        "rcode",
        "upstream_ms",
        "cache_hit",
        "stage",
        "reason",
    ];

    pub fn from_row(row: LogRow) -> ExportRow {
        ExportRow {
            id: row.id,
            time: super::time::format_utc(row.time_ms),
            client: row.client,
            device: row.device,
            owner: row.owner,
            network: row.network,
            group: row.group,
            name: row.name,
            record_type: hickory_proto::rr::RecordType::from(row.record_type).to_string(),
            decision: row.decision,
            category: row.category,
            list: row.list,
            rcode: rcode_name(row.response_code),
            upstream_ms: row.upstream_ms,
            cache_hit: row.cache_hit,
            stage: row.stage,
            reason: row.reason,
        }
    }

    /// The CSV cells, in [`FIELDS`](Self::FIELDS) order; `None` is empty.
    pub fn cells(&self) -> [String; 17] {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        [
            self.id.to_string(),
            self.time.clone(),
            self.client.clone(),
            text(&self.device),
            text(&self.owner),
            text(&self.network),
            text(&self.group),
            self.name.clone(),
            self.record_type.clone(),
            self.decision.clone(),
            text(&self.category),
            text(&self.list),
            self.rcode.clone(),
            self.upstream_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            self.cache_hit.to_string(),
            text(&self.stage),
            text(&self.reason),
        ]
    }
}

/// The mnemonic of a DNS response code, as `dig` prints it.
pub fn rcode_name(code: u16) -> String {
    let name = match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        23 => "BADCOOKIE",
        other => return format!("RCODE{other}"),
    };
    name.to_string()
}

const COLUMNS: &str = "id, time_ms, client, device, owner, network, group_name, name, record_type, decision, \
                       category, list, response_code, upstream_ms, cache_hit, stage, reason";

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
        stage: row.get(15)?,
        reason: row.get(16)?,
    })
}

/// The rows matching every given filter, newest first, at most `limit`.
pub fn search(db: &Path, query: &Search) -> Result<Vec<LogRow>, StoreError> {
    let filters = Filters::parse(query).map_err(StoreError::Invalid)?;
    let conn = schema::open(db, Purpose::Read)?;
    let failed = |source| StoreError::Sqlite { path: db.to_path_buf(), action: "search the query log", source };
    // Paging: the rows after the last one shown, in (time, id) order.
    let cursor = match query.before_id {
        None => None,
        Some(id) => {
            let time: Option<i64> = conn
                .query_row("SELECT time_ms FROM query_log WHERE id = ?1", [id], |row| row.get(0))
                .optional()
                .map_err(failed)?;
            Some((time, id))
        }
    };
    let mut base = filters.conditions();
    match cursor {
        Some((Some(time), id)) => {
            // The plain bound lets an index skip the rows already shown.
            base.push("time_ms <= ? AND (time_ms, id) < (?, ?)", [Value::Integer(time), time.into(), id.into()]);
        }
        // Gone (retention deletes the oldest rows first): fall back to ids.
        Some((None, id)) => base.push("id < ?", [Value::Integer(id)]),
        None => {}
    }
    let until_ms = match cursor {
        Some((Some(time), _)) => Some(query.until_ms.map_or(time + 1, |until| until.min(time + 1))),
        _ => query.until_ms,
    };

    match filters.driver() {
        Driver::Label(label) => {
            // The addresses that carried this device or owner in the period,
            // then the client index; the label test keeps only exact rows.
            let mut clients = label_clients(&conn, label, query.since_ms, until_ms).map_err(failed)?;
            clients.push(label.to_string());
            let mut conditions = base;
            let marks = vec!["?"; clients.len()].join(", ");
            conditions.push(&format!("client IN ({marks})"), clients.into_iter().map(Value::Text));
            conditions.push(
                "(+device = ? OR +owner = ? OR client = ?)",
                std::iter::repeat_n(Value::Text(label.to_string()), 3),
            );
            select(&conn, &conditions, query.limit).map_err(failed)
        }
        Driver::Name(reversed) => {
            // The hours in which the name (or a name under it) was asked for,
            // newest first, then only those stretches of the time index.
            let hours = name_hours(&conn, reversed, query.since_ms, until_ms).map_err(failed)?;
            let mut rows = Vec::new();
            for (first, last) in stretches(&hours) {
                if rows.len() >= query.limit {
                    break;
                }
                let mut conditions = base.clone();
                conditions
                    .push("time_ms >= ? AND time_ms < ?", [first * HOUR_MS, (last + 1) * HOUR_MS].map(Value::from));
                rows.extend(select(&conn, &conditions, query.limit - rows.len()).map_err(failed)?);
            }
            Ok(rows)
        }
        Driver::Index => select(&conn, &base, query.limit).map_err(failed),
    }
}

/// Runs `SELECT .. WHERE conditions ORDER BY time_ms DESC, id DESC LIMIT limit`.
fn select(conn: &Connection, conditions: &Conditions, limit: usize) -> rusqlite::Result<Vec<LogRow>> {
    let mut sql = format!("SELECT {COLUMNS} FROM query_log WHERE 1");
    for condition in &conditions.sql {
        sql.push_str(" AND ");
        sql.push_str(condition);
    }
    sql.push_str(" ORDER BY time_ms DESC, id DESC LIMIT ?");
    let mut values = conditions.values.clone();
    values.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(params_from_iter(values), log_row)?;
    rows.collect()
}

/// Client addresses that carried `label` as device name or owner on the
/// days of `since_ms..until_ms`.
fn label_clients(
    conn: &Connection,
    label: &str,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> rusqlite::Result<Vec<String>> {
    let first_day = since_ms.map_or(i64::MIN, |since| since.div_euclid(DAY_MS));
    let last_day = until_ms.map_or(i64::MAX, |until| (until - 1).div_euclid(DAY_MS));
    let mut statement = conn.prepare(
        "SELECT client FROM client_labels WHERE device = ?1 AND day BETWEEN ?2 AND ?3 \
         UNION SELECT client FROM client_labels WHERE owner = ?1 AND day BETWEEN ?2 AND ?3",
    )?;
    let clients = statement.query_map(rusqlite::params![label, first_day, last_day], |row| row.get(0))?;
    clients.collect()
}

/// The hours (newest first) in which `reversed` or a name under it was
/// asked for, within `since_ms..until_ms`: one index probe per hour.
fn name_hours(
    conn: &Connection,
    reversed: &str,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> rusqlite::Result<Vec<i64>> {
    // Two queries: SQLite seeks for min() or max() alone, but scans for both.
    let oldest: Option<i64> = conn.query_row("SELECT min(hour) FROM name_hours", [], |row| row.get(0))?;
    let newest: Option<i64> = conn.query_row("SELECT max(hour) FROM name_hours", [], |row| row.get(0))?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else { return Ok(Vec::new()) };
    let first = since_ms.map_or(oldest, |since| since.div_euclid(HOUR_MS).max(oldest));
    let last = until_ms.map_or(newest, |until| (until - 1).div_euclid(HOUR_MS).min(newest));
    let mut probe = conn.prepare(
        "SELECT EXISTS (SELECT 1 FROM name_hours WHERE hour = ?1 AND rname = ?2) \
             OR EXISTS (SELECT 1 FROM name_hours WHERE hour = ?1 AND rname >= ?3 AND rname < ?4)",
    )?;
    let (under_from, under_to) = (format!("{reversed}."), format!("{reversed}/"));
    let mut hours = Vec::new();
    for hour in (first..=last).rev() {
        if probe.query_row(rusqlite::params![hour, reversed, under_from, under_to], |row| row.get(0))? {
            hours.push(hour);
        }
    }
    Ok(hours)
}

/// Runs of consecutive hours, newest first: `[9, 8, 7, 3]` -> `(7, 9), (3, 3)`.
fn stretches(hours: &[i64]) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &hour in hours {
        match runs.last_mut() {
            Some((first, _)) if *first == hour + 1 => *first = hour,
            _ => runs.push((hour, hour)),
        }
    }
    runs
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

/// SQL conditions and their parameters, joined with AND.
#[derive(Debug, Clone, Default)]
struct Conditions {
    sql: Vec<String>,
    values: Vec<Value>,
}

impl Conditions {
    fn push(&mut self, sql: &str, values: impl IntoIterator<Item = Value>) {
        self.sql.push(sql.to_string());
        self.values.extend(values);
    }
}

/// What leads a search to its rows.
#[derive(Debug, PartialEq, Eq)]
enum Driver<'a> {
    /// A device name, owner or client token: through `client_labels`.
    Label(&'a str),
    /// A domain (reversed): through `name_hours`.
    Name(&'a str),
    /// An index of `query_log` (client address, category, decision or time).
    Index,
}

/// A search's filters, checked and normalised.
#[derive(Debug)]
struct Filters {
    client: Option<Result<IpAddr, String>>,
    /// Reversed.
    name: Option<String>,
    category: Option<String>,
    decision: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
}

impl Filters {
    fn parse(query: &Search) -> Result<Filters, String> {
        fn text(value: &Option<String>) -> Option<&str> {
            value.as_deref().map(str::trim).filter(|value| !value.is_empty())
        }
        let name = match text(&query.name) {
            None => None,
            Some(name) => {
                let name = name.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err("the name to search for is empty".into());
                }
                Some(reversed_name(&name))
            }
        };
        let decision = match text(&query.decision) {
            None => None,
            Some(decision) => {
                let decision = decision.to_ascii_lowercase();
                if !DECISIONS.contains(&decision.as_str()) {
                    return Err(format!("decision {decision:?} is not one of {}", DECISIONS.join(", ")));
                }
                Some(decision)
            }
        };
        Ok(Filters {
            client: text(&query.client).map(|client| client.parse::<IpAddr>().map_err(|_| client.to_string())),
            name,
            category: text(&query.category).map(str::to_ascii_lowercase),
            decision,
            since_ms: query.since_ms,
            until_ms: query.until_ms,
        })
    }

    /// The client leads, then the name, then the category or decision
    /// indexes, then time.
    fn driver(&self) -> Driver<'_> {
        match (&self.client, &self.name) {
            (Some(Ok(_)), _) => Driver::Index,
            (Some(Err(label)), _) => Driver::Label(label),
            (None, Some(reversed)) => Driver::Name(reversed),
            (None, None) => Driver::Index,
        }
    }

    /// The row conditions. Equality filters other than the leading one are
    /// written `+column`, so SQLite uses the index the driver chose.
    fn conditions(&self) -> Conditions {
        let mut conditions = Conditions::default();
        let mut led = self.client.is_some() || self.name.is_some();
        let mut column = |name: &str| {
            let prefix = if led { "+" } else { "" };
            led = true;
            format!("{prefix}{name}")
        };
        if let Some(Ok(ip)) = &self.client {
            conditions.push("client = ?", [Value::Text(ip.to_canonical().to_string())]);
        }
        if let Some(reversed) = &self.name {
            conditions.push(
                "(rname = ? OR (rname >= ? AND rname < ?))",
                [reversed.clone(), format!("{reversed}."), format!("{reversed}/")].map(Value::Text),
            );
        }
        if let Some(category) = &self.category {
            conditions.push(&format!("{} = ?", column("category")), [Value::Text(category.clone())]);
        }
        match self.decision.as_deref() {
            None => {}
            // Most rows: the decision index leaves them out; time leads.
            Some("allowed") => conditions.push("+decision = 'allowed'", []),
            // The partial index's own condition, spelled out so SQLite may use it.
            Some(decision) => conditions.push(
                &format!("{} = ? AND decision != 'allowed'", column("decision")),
                [Value::Text(decision.to_string())],
            ),
        }
        if let Some(since) = self.since_ms {
            conditions.push("time_ms >= ?", [Value::Integer(since)]);
        }
        if let Some(until) = self.until_ms {
            conditions.push("time_ms < ?", [Value::Integer(until)]);
        }
        conditions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(query: Search) -> Filters {
        Filters::parse(&query).unwrap()
    }

    #[test]
    fn the_client_leads_and_other_equality_filters_are_plain() {
        let query = Search {
            client: Some("10.0.0.7".into()),
            name: Some("Example.COM.".into()),
            decision: Some("blocked".into()),
            ..Search::default()
        };
        let filters = filters(query);
        assert_eq!(filters.driver(), Driver::Index);
        let conditions = filters.conditions();
        assert_eq!(conditions.sql[0], "client = ?");
        assert!(conditions.sql[1].starts_with("(rname = ?"));
        assert_eq!(conditions.sql[2], "+decision = ? AND decision != 'allowed'");
        assert_eq!(conditions.values[1], Value::Text("com.example".into()));
    }

    #[test]
    fn drivers() {
        assert_eq!(
            filters(Search { client: Some("LIB-PC".into()), ..Search::default() }).driver(),
            Driver::Label("LIB-PC")
        );
        let name = filters(Search { name: Some("*.example.com".into()), ..Search::default() });
        assert_eq!(name.driver(), Driver::Name("com.example"));
        let category =
            filters(Search { category: Some("Games".into()), decision: Some("blocked".into()), ..Search::default() });
        assert_eq!(category.driver(), Driver::Index);
        assert_eq!(category.conditions().sql, ["category = ?", "+decision = ? AND decision != 'allowed'"]);
    }

    #[test]
    fn rejects_unknown_decisions() {
        let query = Search { decision: Some("maybe".into()), ..Search::default() };
        assert!(Filters::parse(&query).unwrap_err().contains("allowed, blocked"));
    }

    #[test]
    fn hours_group_into_stretches() {
        assert_eq!(stretches(&[9, 8, 7, 3, 1, 0]), vec![(7, 9), (3, 3), (0, 1)]);
        assert!(stretches(&[]).is_empty());
    }
}
