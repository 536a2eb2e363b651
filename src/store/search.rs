//! Reading the query log: filtered search with paging, and tail.
//!
//! Each call opens its own read-only connection. In WAL mode a reader sees a
//! snapshot and takes no lock the writer waits for, so a long search never
//! stalls logging (Pi-hole's known failure).
//!
//! Rows are in blocks ([`super::block`], read by [`super::read`]): an
//! unsealed hour's blocks (`log_fresh`) mix every client's rows; a sealed
//! hour keeps each client's rows in its own key range (`log_sealed`) and
//! says in its postings which clients asked for which names
//! (`log_name_postings`) and had which outcomes other than a plain allowed
//! answer (`log_outcome_postings`). A search turns its filters into
//! dictionary ids once (clients by address, or by device, owner or stored
//! client text; a name and its subdomains by their reversed-name range;
//! outcomes by category and decision), then walks its window's hours,
//! newest first:
//! - an hour's fresh blocks are decoded whole and filtered (only hours from
//!   the oldest fresh one on have any);
//! - of a sealed hour, only the blocks of the clients every indexed filter
//!   allows: the client filter's ids, the clients the name postings give for
//!   the names, and those the outcome postings give for the outcomes (their
//!   intersection); with none of these (no filter, or `allowed` without a
//!   category, which has no postings) every block of the hour.
//!
//! The walk stops after the hour in which the page filled. An hour without a
//! candidate costs an index seek or two, and hours after the filtered
//! names' or clients' last use (their `last_day`) are not visited. Rows come
//! newest first by time, then id. A page after `before_id` starts below
//! that row, found first in its id's hour (a row's id says when it was
//! written, [`block::row_id`]; only a row written late sits in an earlier
//! hour, and is looked for further back); a row that is gone (retention) or
//! not of this search stands at its id's time.

use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::StoreError;
use super::block::{self, BlockRow};
use super::read::{self, Blocks, Dictionaries};
use super::record::DECISIONS;
pub use super::record::LogRow;
use super::schema::{self, Purpose};
use super::time::{DAY_MS, HOUR_MS, day_number};
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
    /// A group (`pupil`, `staff`, ...): rows of clients in it.
    pub group: Option<String>,
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
            group: None,
            decision: None,
            since_ms: None,
            until_ms: None,
            limit: 100,
            before_id: None,
        }
    }
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

/// Name ids above this many are matched against an hour's whole postings
/// (one range scan) rather than with one index seek each.
const NAME_SEEKS_MAX: usize = 500;

/// The rows matching every given filter, newest first (by time, then id),
/// at most `limit`.
pub fn search(db: &Path, query: &Search) -> Result<Vec<LogRow>, StoreError> {
    let filters = Filters::parse(query).map_err(StoreError::Invalid)?;
    let conn = schema::open(db, Purpose::Read)?;
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let blocks = Blocks::new(&conn, db);
    let since = query.since_ms.unwrap_or(i64::MIN);
    let mut until = query.until_ms.unwrap_or(i64::MAX);
    if let Some(id) = query.before_id {
        // A row's time is never after its id's (block::row_id).
        until = until.min(block::id_time_ms(id).saturating_add(1));
    }
    let Some(mut hours) = read::clamp(blocks.hours()?, since, until) else { return Ok(Vec::new()) };
    let Some(plan) = Plan::new(&conn, db, &filters, query.since_ms)? else { return Ok(Vec::new()) };
    if let Some(newest) = plan.newest_hour {
        hours.end = hours.end.min(newest + 1);
    }
    let walk =
        Walk { blocks: &blocks, plan: &plan, window: since..until, hours, oldest_fresh: blocks.oldest_fresh_hour()? };
    let rows = match query.before_id {
        None => walk.run(Cursor::None, query.limit)?,
        Some(id) => match walk.run(Cursor::Find(id), query.limit)? {
            Some(rows) => Some(rows),
            // Gone (retention: its hour is no longer walked), or not a row of
            // this search (found nowhere in the window): its id's time.
            None => walk.run(Cursor::At(block::id_time_ms(id), id), query.limit)?,
        },
    };
    let mut dictionaries = Dictionaries::new(&conn, db);
    rows.unwrap_or_default().iter().map(|row| dictionaries.log_row(row)).collect()
}

/// Where a page starts.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The newest rows.
    None,
    /// The rows after this one (newest first): where it is, is found first.
    Find(i64),
    /// The rows before this time and id.
    At(i64, i64),
}

/// A search's walk over its hours, newest first.
struct Walk<'a> {
    blocks: &'a Blocks<'a>,
    plan: &'a Plan,
    window: Range<i64>,
    hours: Range<i64>,
    oldest_fresh: Option<i64>,
}

impl Walk<'_> {
    /// Up to `limit` matching rows after `cursor`, newest first; `None` when
    /// the cursor's row is not a row of this search.
    fn run(&self, cursor: Cursor, limit: usize) -> Result<Option<Vec<BlockRow>>, StoreError> {
        let matches = |row: &BlockRow| self.window.contains(&row.time_ms) && self.plan.keeps(row);
        let (mut looking_for, mut position) = match cursor {
            Cursor::None => (None, (i64::MAX, i64::MAX)),
            Cursor::Find(id) => (Some(id), (i64::MAX, i64::MAX)),
            Cursor::At(time_ms, id) => (None, (time_ms, id)),
        };
        let mut found: Vec<BlockRow> = Vec::new();
        let mut hour_rows = Vec::new();
        for hour in self.hours.clone().rev() {
            // Once the cursor's place is known, an hour needs only its rows
            // before it, and only as many as the page still wants.
            let (finding, before) = (looking_for.is_some(), position);
            let newest = (!finding).then(|| limit.saturating_sub(found.len()));
            let mut keep = |row: &BlockRow| matches(row) && (finding || (row.time_ms, row.id) < before);
            self.hour(hour, &mut keep, &mut hour_rows, newest)?;
            if let Some(id) = looking_for {
                // No row of a later hour comes after the cursor's row.
                match hour_rows.iter().find(|row| row.id == id) {
                    None => continue,
                    Some(row) => {
                        position = (row.time_ms, row.id);
                        looking_for = None;
                    }
                }
            }
            found.extend(hour_rows.iter().filter(|row| (row.time_ms, row.id) < position));
            // The hour is done: a page never splits an hour's rows by where
            // their blocks happened to be.
            if found.len() >= limit {
                break;
            }
        }
        if looking_for.is_some() {
            return Ok(None);
        }
        // Newest first; only the page's rows are sorted (an hour with no
        // filter holds hundreds of thousands).
        let newest_first = |a: &BlockRow, b: &BlockRow| (b.time_ms, b.id).cmp(&(a.time_ms, a.id));
        if found.len() > limit {
            found.select_nth_unstable_by(limit, newest_first);
            found.truncate(limit);
        }
        found.sort_unstable_by(newest_first);
        Ok(Some(found))
    }

    /// The matching rows of one hour, in no order, into `rows` (cleared
    /// first): all, or at least the `newest` newest ([`read::keep_newest`]).
    fn hour(
        &self,
        hour: i64,
        matches: &mut impl FnMut(&BlockRow) -> bool,
        rows: &mut Vec<BlockRow>,
        newest: Option<usize>,
    ) -> Result<(), StoreError> {
        rows.clear();
        if self.oldest_fresh.is_some_and(|oldest| hour >= oldest) {
            self.blocks.fresh_where(hour..hour + 1, i64::MIN, matches, rows, newest)?;
        }
        self.plan.sealed(self.blocks, hour, matches, rows, newest)
    }
}

/// Every row of `query` (its `limit` is the size of each batch; paging is
/// ignored), newest first, handed to `each` a batch at a time until it
/// returns false. Each hour is read once and only one hour's rows are held,
/// so a 30-day export of a busy school streams in bounded memory and does
/// not read an hour again for each page, as paging with [`search`] would.
pub fn export(db: &Path, query: &Search, mut each: impl FnMut(Vec<LogRow>) -> bool) -> Result<(), StoreError> {
    let filters = Filters::parse(query).map_err(StoreError::Invalid)?;
    let conn = schema::open(db, Purpose::Read)?;
    let blocks = Blocks::new(&conn, db);
    let window = query.since_ms.unwrap_or(i64::MIN)..query.until_ms.unwrap_or(i64::MAX);
    let Some(mut hours) = read::clamp(blocks.hours()?, window.start, window.end) else { return Ok(()) };
    let Some(plan) = Plan::new(&conn, db, &filters, query.since_ms)? else { return Ok(()) };
    if let Some(newest) = plan.newest_hour {
        hours.end = hours.end.min(newest + 1);
    }
    let mut matches = |row: &BlockRow| window.contains(&row.time_ms) && plan.keeps(row);
    let walk =
        Walk { blocks: &blocks, plan: &plan, window: window.clone(), hours, oldest_fresh: blocks.oldest_fresh_hour()? };
    let mut dictionaries = Dictionaries::new(&conn, db);
    let mut hour_rows = Vec::new();
    for hour in walk.hours.clone().rev() {
        walk.hour(hour, &mut matches, &mut hour_rows, None)?;
        hour_rows.sort_unstable_by(|a, b| (b.time_ms, b.id).cmp(&(a.time_ms, a.id)));
        for batch in hour_rows.chunks(query.limit.max(1)) {
            let rows = batch.iter().map(|row| dictionaries.log_row(row)).collect::<Result<Vec<_>, _>>()?;
            if !each(rows) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The newest rows after `after_id`, at most `limit`, oldest first. A
/// follower passes the last id it printed; if more than `limit` rows arrived
/// meanwhile it skips to the newest ones. `after_id = 0` gives the last
/// `limit` rows. Order and `after_id` are by id, that is by arrival; rows
/// are looked for from the hour of `after_id`'s time on, so a row written
/// late into an earlier hour (the clock stepped back) is left to `search`.
pub fn tail(db: &Path, after_id: i64, limit: usize) -> Result<Vec<LogRow>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let blocks = Blocks::new(&conn, db);
    let Some(hours) = blocks.hours()? else { return Ok(Vec::new()) };
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Rows after `after_id` were written at or after its time.
    let first = hours.start.max(block::id_time_ms(after_id).div_euclid(HOUR_MS));
    let mut found: Vec<BlockRow> = Vec::new();
    let mut after = |row: &BlockRow| row.id > after_id;
    for hour in (first..hours.end).rev() {
        // Only the fresh blocks holding a row after `after_id`: a follower
        // reads what arrived since it last looked, not the whole hour.
        blocks.fresh_where(hour..hour + 1, after_id, &mut after, &mut found, Some(limit))?;
        blocks.sealed_where(block::hour_keys(hour), &mut after, &mut found, Some(limit))?;
        if found.len() >= limit {
            break;
        }
    }
    let newest_first = |a: &BlockRow, b: &BlockRow| b.id.cmp(&a.id);
    if found.len() > limit {
        found.select_nth_unstable_by(limit, newest_first);
        found.truncate(limit);
    }
    found.sort_unstable_by(newest_first);
    found.reverse();
    let mut dictionaries = Dictionaries::new(&conn, db);
    found.iter().map(|row| dictionaries.log_row(row)).collect()
}

/// Dictionary ids, sorted, for membership tests by binary search.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ids(Vec<u32>);

impl Ids {
    fn new(mut ids: Vec<u32>) -> Ids {
        ids.sort_unstable();
        ids.dedup();
        Ids(ids)
    }

    fn contains(&self, id: u32) -> bool {
        self.0.binary_search(&id).is_ok()
    }

    /// The ids in both.
    fn and(&self, other: &Ids) -> Ids {
        Ids(self.0.iter().copied().filter(|&id| other.contains(id)).collect())
    }
}

/// A search's filters as dictionary ids, and how to find an hour's
/// candidate blocks.
#[derive(Debug)]
struct Plan {
    clients: Option<Ids>,
    names: Option<Ids>,
    outcomes: Option<Ids>,
    /// Every outcome of `outcomes` has postings (none is a plain allowed
    /// answer), so the outcome postings can pick the blocks.
    outcomes_posted: bool,
    /// No hour after this holds a row of the filtered clients or names
    /// (their `last_day`).
    newest_hour: Option<i64>,
}

impl Plan {
    /// `None` when a filter matches nothing in the dictionaries, so no row
    /// can match.
    fn new(conn: &Connection, db: &Path, filters: &Filters, since_ms: Option<i64>) -> Result<Option<Plan>, StoreError> {
        let failed = || StoreError::sqlite(db, "read the query log's dictionaries");
        // Dictionary entries last used before the window cannot match.
        let first_day = since_ms.map_or(i64::MIN, day_number);
        let mut newest_day: Option<i64> = None;
        let mut ids = |sql: &str, values: &[&dyn rusqlite::ToSql]| -> Result<Option<Ids>, StoreError> {
            let mut statement = conn.prepare(sql).map_err(failed())?;
            let rows = statement
                .query_map(values, |row| Ok((row.get::<_, u32>(0)?, row.get::<_, i64>(1)?)))
                .map_err(failed())?;
            let mut found = Vec::new();
            let mut last = None;
            for row in rows {
                let (id, last_day) = row.map_err(failed())?;
                if last_day >= first_day {
                    found.push(id);
                    last = last.max(Some(last_day));
                }
            }
            if found.is_empty() {
                return Ok(None);
            }
            if let Some(last) = last {
                newest_day = Some(newest_day.map_or(last, |newest| newest.min(last)));
            }
            Ok(Some(Ids::new(found)))
        };
        let clients = match &filters.client {
            None => None,
            Some(Ok(ip)) => {
                let ip = ip.to_canonical().to_string();
                match ids("SELECT id, last_day FROM log_clients WHERE client = ?1", &[&ip])? {
                    None => return Ok(None),
                    found => found,
                }
            }
            // The conditions on '' let SQLite use the partial indexes.
            Some(Err(label)) => match ids(
                "SELECT id, last_day FROM log_clients WHERE device = ?1 AND device != '' \
                 UNION SELECT id, last_day FROM log_clients WHERE owner = ?1 AND owner != '' \
                 UNION SELECT id, last_day FROM log_clients WHERE client = ?1",
                &[label],
            )? {
                None => return Ok(None),
                found => found,
            },
        };
        let clients = match &filters.group {
            None => clients,
            Some(group) => match ids("SELECT id, last_day FROM log_clients WHERE group_name = ?1", &[group])? {
                None => return Ok(None),
                Some(in_group) => match clients {
                    None => Some(in_group),
                    Some(clients) => {
                        let both = clients.and(&in_group);
                        if both.0.is_empty() {
                            return Ok(None);
                        }
                        Some(both)
                    }
                },
            },
        };
        let names = match &filters.name {
            None => None,
            Some(reversed) => match ids(
                "SELECT id, last_day FROM log_names WHERE rname = ?1 \
                 UNION ALL SELECT id, last_day FROM log_names WHERE rname >= ?2 AND rname < ?3",
                &[reversed, &format!("{reversed}."), &format!("{reversed}/")],
            )? {
                None => return Ok(None),
                found => found,
            },
        };
        let (mut outcomes, mut outcomes_posted) = (None, false);
        if filters.category.is_some() || filters.decision.is_some() {
            // Through the (decision, category, ..) unique index: one range,
            // or one per decision for a category alone. Outcomes carry their
            // reason, so a school has tens of thousands.
            let decisions = match &filters.decision {
                Some(decision) => vec![decision.as_str()],
                None => DECISIONS.to_vec(),
            };
            let marks = vec!["?"; decisions.len()].join(", ");
            let mut values: Vec<&str> = decisions;
            let mut sql = format!("SELECT id, decision, category FROM log_outcomes WHERE decision IN ({marks})");
            if let Some(category) = &filters.category {
                sql.push_str(" AND category = ?");
                values.push(category);
            }
            let mut statement = conn.prepare(&sql).map_err(failed())?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(values), |row| {
                    Ok((row.get::<_, u32>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
                })
                .map_err(failed())?;
            let mut found = Vec::new();
            outcomes_posted = true;
            for row in rows {
                let (id, decision, category) = row.map_err(failed())?;
                if filters.decision.as_ref().is_some_and(|wanted| *wanted != decision)
                    || filters.category.as_ref().is_some_and(|wanted| *wanted != category)
                {
                    continue;
                }
                // As the sealer posts them: not a plain allowed answer.
                outcomes_posted &= decision != "allowed" || !category.is_empty();
                found.push(id);
            }
            if found.is_empty() {
                return Ok(None);
            }
            outcomes = Some(Ids::new(found));
        }
        let hours_per_day = DAY_MS / HOUR_MS;
        let newest_hour = newest_day.map(|day| (day + 1) * hours_per_day - 1);
        Ok(Some(Plan { clients, names, outcomes, outcomes_posted, newest_hour }))
    }

    /// Whether a row of a candidate block matches every filter.
    fn keeps(&self, row: &BlockRow) -> bool {
        self.clients.as_ref().is_none_or(|ids| ids.contains(row.client))
            && self.names.as_ref().is_none_or(|ids| ids.contains(row.name))
            && self.outcomes.as_ref().is_none_or(|ids| ids.contains(row.outcome))
    }

    /// Appends the rows of the sealed blocks of `hour` that may hold a
    /// match: those of the clients every filter with an index allows.
    fn sealed(
        &self,
        blocks: &Blocks<'_>,
        hour: i64,
        keep: &mut dyn FnMut(&BlockRow) -> bool,
        out: &mut Vec<BlockRow>,
        newest: Option<usize>,
    ) -> Result<(), StoreError> {
        let mut candidates = self.clients.clone();
        if let Some(names) = &self.names {
            let posted = self.posted_clients(blocks, hour, PostingKind::Name, names)?;
            candidates = Some(candidates.map_or(posted.clone(), |clients| clients.and(&posted)));
        }
        if self.outcomes_posted
            && let Some(outcomes) = &self.outcomes
            && candidates.as_ref().is_none_or(|clients| !clients.0.is_empty())
        {
            let posted = self.posted_clients(blocks, hour, PostingKind::Outcome, outcomes)?;
            candidates = Some(candidates.map_or(posted.clone(), |clients| clients.and(&posted)));
        }
        match candidates {
            None => blocks.sealed_where(block::hour_keys(hour), keep, out, newest),
            Some(clients) => {
                for client in clients.0 {
                    blocks.sealed_where(block::client_hour_keys(hour, client), keep, out, newest)?;
                }
                Ok(())
            }
        }
    }

    /// The clients with a posting in `hour` for any of `ids`.
    fn posted_clients(&self, blocks: &Blocks<'_>, hour: i64, kind: PostingKind, ids: &Ids) -> Result<Ids, StoreError> {
        let (table, column) = match kind {
            PostingKind::Name => ("log_name_postings", "name_id"),
            PostingKind::Outcome => ("log_outcome_postings", "outcome_id"),
        };
        let failed = || StoreError::sqlite(blocks.path(), "read the query log's postings");
        let conn = blocks.connection();
        let mut clients = Vec::new();
        if ids.0.len() > NAME_SEEKS_MAX {
            let sql = format!("SELECT {column}, client_id FROM {table} WHERE hour = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(failed())?;
            let mut rows = statement.query([hour]).map_err(failed())?;
            while let Some(row) = rows.next().map_err(failed())? {
                if ids.contains(row.get(0).map_err(failed())?) {
                    clients.push(row.get(1).map_err(failed())?);
                }
            }
        } else {
            let sql = format!("SELECT client_id FROM {table} WHERE hour = ?1 AND {column} = ?2");
            let mut statement = conn.prepare_cached(&sql).map_err(failed())?;
            for &id in &ids.0 {
                let mut rows = statement.query(rusqlite::params![hour, id]).map_err(failed())?;
                while let Some(row) = rows.next().map_err(failed())? {
                    clients.push(row.get(0).map_err(failed())?);
                }
            }
        }
        Ok(Ids::new(clients))
    }
}

/// Which postings table.
#[derive(Debug, Clone, Copy)]
enum PostingKind {
    Name,
    Outcome,
}

/// A search's filters, checked and normalised.
#[derive(Debug)]
struct Filters {
    client: Option<Result<IpAddr, String>>,
    /// Reversed.
    name: Option<String>,
    category: Option<String>,
    group: Option<String>,
    decision: Option<String>,
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
            group: text(&query.group).map(str::to_string),
            decision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_normalised() {
        let query = Search {
            client: Some(" 10.0.0.7 ".into()),
            name: Some("*.Example.COM.".into()),
            category: Some("Games".into()),
            decision: Some("BLOCKED".into()),
            ..Search::default()
        };
        let filters = Filters::parse(&query).unwrap();
        assert_eq!(filters.client, Some(Ok("10.0.0.7".parse().unwrap())));
        assert_eq!(filters.name.as_deref(), Some("com.example"));
        assert_eq!(filters.category.as_deref(), Some("games"));
        assert_eq!(filters.decision.as_deref(), Some("blocked"));
        let label = Filters::parse(&Search { client: Some("LIB-PC".into()), ..Search::default() }).unwrap();
        assert_eq!(label.client, Some(Err("LIB-PC".to_string())));
    }

    #[test]
    fn rejects_unknown_decisions() {
        let query = Search { decision: Some("maybe".into()), ..Search::default() };
        assert!(Filters::parse(&query).unwrap_err().contains("allowed, blocked"));
    }

    #[test]
    fn id_sets_intersect() {
        let ids = Ids::new(vec![9, 3, 3, 7]);
        assert_eq!(ids.0, [3, 7, 9]);
        assert!(ids.contains(7) && !ids.contains(8));
        assert_eq!(ids.and(&Ids::new(vec![9, 1, 3])).0, [3, 9]);
    }
}
