//! Reading the query log's blocks back into [`LogRow`]s.
//!
//! Rows live in two places (schema 6, `migrations/0006_log_blocks.sql`):
//! the unsealed hours in `log_fresh` (one block per writer commit and hour,
//! rows of many clients) and the sealed hours in `log_sealed` (one client's
//! rows of one hour per block, keyed by [`block::sealed_key`]). [`Blocks`]
//! fetches and decodes either; [`Dictionaries`] turns a row's name, client
//! and outcome ids back into text, looking each id up once per call.
//!
//! [`rows_between`] and [`count_rows`] read everything (tests, the upgrade's
//! check, the benchmarks); `search` reads only the blocks its filters need.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;
use super::block::{self, BlockRow};
use super::record::{LogRow, reason_for};
use super::schema::{self, Purpose};
use super::time::HOUR_MS;
use crate::name::reversed_name;

/// Every row with `from_ms <= time_ms < to_ms`, oldest first (by time,
/// then id).
pub fn rows_between(db: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<LogRow>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let blocks = Blocks::new(&conn, db);
    let mut rows = Vec::new();
    if let Some(hours) = clamp(blocks.hours()?, from_ms, to_ms) {
        blocks.sealed(block::sealed_key(hours.start, 0, 0)..block::sealed_key(hours.end, 0, 0), &mut rows)?;
        blocks.fresh(hours, &mut rows)?;
    }
    rows.retain(|row| (from_ms..to_ms).contains(&row.time_ms));
    rows.sort_unstable_by_key(|row| (row.time_ms, row.id));
    let mut dictionaries = Dictionaries::new(&conn, db);
    rows.iter().map(|row| dictionaries.log_row(row)).collect()
}

/// How many rows the log holds: the sealed blocks' counts plus the fresh
/// blocks' headers.
pub fn count_rows(db: &Path) -> Result<u64, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let failed = StoreError::sqlite;
    let sealed: i64 = conn
        .query_row("SELECT coalesce(sum(rows), 0) FROM log_sealed", [], |row| row.get(0))
        .map_err(failed(db, "count the query log's sealed rows"))?;
    let mut statement =
        conn.prepare("SELECT data FROM log_fresh").map_err(failed(db, "count the query log's fresh rows"))?;
    let mut fresh = statement.query([]).map_err(failed(db, "count the query log's fresh rows"))?;
    let mut total = u64::try_from(sealed).unwrap_or(0);
    while let Some(row) = fresh.next().map_err(failed(db, "count the query log's fresh rows"))? {
        let data = row.get_ref(0).and_then(|value| Ok(value.as_blob()?)).map_err(failed(db, "read a fresh block"))?;
        total += block::row_count(data).map_err(|error| damaged(db, error))? as u64;
    }
    Ok(total)
}

/// The hours of `hours` that `from_ms..to_ms` touches, if any.
pub(crate) fn clamp(hours: Option<Range<i64>>, from_ms: i64, to_ms: i64) -> Option<Range<i64>> {
    let hours = hours?;
    let first = from_ms.div_euclid(HOUR_MS).max(hours.start);
    let end = to_ms.saturating_sub(1).div_euclid(HOUR_MS).saturating_add(1).min(hours.end);
    (first < end && to_ms > from_ms).then_some(first..end)
}

/// A damaged block, as a store error naming the file.
fn damaged(db: &Path, error: block::BlockError) -> StoreError {
    StoreError::Invalid(format!("{}: {error}", db.display()))
}

/// Fetching and decoding blocks on one connection.
pub(crate) struct Blocks<'c> {
    conn: &'c Connection,
    path: &'c Path,
}

impl<'c> Blocks<'c> {
    pub(crate) fn new(conn: &'c Connection, path: &'c Path) -> Blocks<'c> {
        Blocks { conn, path }
    }

    fn failed(&self) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
        StoreError::sqlite(self.path, "read the query log")
    }

    /// The hours holding rows, oldest to newest (end exclusive), or `None`
    /// for an empty log: four index seeks.
    pub(crate) fn hours(&self) -> Result<Option<Range<i64>>, StoreError> {
        // One query each: SQLite seeks for min() or max() alone, but scans for both.
        let one = |sql: &str| -> Result<Option<i64>, StoreError> {
            self.conn.query_row(sql, [], |row| row.get(0)).map_err(self.failed())
        };
        let sealed_hour = |key: Option<i64>| key.map(|key| block::split_sealed_key(key).0);
        let oldest = [one("SELECT min(hour) FROM log_fresh")?, sealed_hour(one("SELECT min(key) FROM log_sealed")?)];
        let newest = [one("SELECT max(hour) FROM log_fresh")?, sealed_hour(one("SELECT max(key) FROM log_sealed")?)];
        let oldest = oldest.into_iter().flatten().min();
        let newest = newest.into_iter().flatten().max();
        Ok(oldest.zip(newest).map(|(oldest, newest)| oldest..newest + 1))
    }

    pub(crate) fn connection(&self) -> &'c Connection {
        self.conn
    }

    pub(crate) fn path(&self) -> &'c Path {
        self.path
    }

    /// The oldest hour with fresh blocks (no hour before it has any).
    pub(crate) fn oldest_fresh_hour(&self) -> Result<Option<i64>, StoreError> {
        self.conn.query_row("SELECT min(hour) FROM log_fresh", [], |row| row.get(0)).map_err(self.failed())
    }

    /// Appends the rows of every fresh block of `hours`.
    pub(crate) fn fresh(&self, hours: Range<i64>, out: &mut Vec<BlockRow>) -> Result<(), StoreError> {
        self.fresh_where(hours, i64::MIN, &mut |_| true, out, None)
    }

    /// Appends the rows of every sealed block with a key in `keys` (see
    /// [`block::hour_keys`], [`block::client_hour_keys`]).
    pub(crate) fn sealed(&self, keys: Range<i64>, out: &mut Vec<BlockRow>) -> Result<(), StoreError> {
        self.sealed_where(keys, &mut |_| true, out, None)
    }

    /// Appends the rows `keep` keeps of the fresh blocks of `hours` that
    /// hold a row with an id above `after_id`. Each block is decoded into a
    /// small buffer and filtered at once, so an hour of a million rows is
    /// never held whole. With `newest`, `out` keeps only its newest rows
    /// past that many (see [`keep_newest`]).
    pub(crate) fn fresh_where(
        &self,
        hours: Range<i64>,
        after_id: i64,
        keep: &mut dyn FnMut(&BlockRow) -> bool,
        out: &mut Vec<BlockRow>,
        newest: Option<usize>,
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT data FROM log_fresh WHERE hour >= ?1 AND hour < ?2 AND last_row_id > ?3")
            .map_err(self.failed())?;
        let mut rows = statement.query([hours.start, hours.end, after_id]).map_err(self.failed())?;
        let mut decoded = Vec::new();
        while let Some(row) = rows.next().map_err(self.failed())? {
            let data = row.get_ref(0).and_then(|value| Ok(value.as_blob()?)).map_err(self.failed())?;
            decoded.clear();
            block::decode(data, 0, &mut decoded).map_err(|error| damaged(self.path, error))?;
            out.extend(decoded.iter().filter(|row| keep(row)));
            keep_newest(out, newest);
        }
        Ok(())
    }

    /// Appends the rows `keep` keeps of the sealed blocks with a key in `keys`.
    pub(crate) fn sealed_where(
        &self,
        keys: Range<i64>,
        keep: &mut dyn FnMut(&BlockRow) -> bool,
        out: &mut Vec<BlockRow>,
        newest: Option<usize>,
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT key, data FROM log_sealed WHERE key >= ?1 AND key < ?2")
            .map_err(self.failed())?;
        let mut rows = statement.query([keys.start, keys.end]).map_err(self.failed())?;
        let mut decoded = Vec::new();
        while let Some(row) = rows.next().map_err(self.failed())? {
            let key: i64 = row.get(0).map_err(self.failed())?;
            let data = row.get_ref(1).and_then(|value| Ok(value.as_blob()?)).map_err(self.failed())?;
            let (_, client, _) = block::split_sealed_key(key);
            decoded.clear();
            block::decode(data, client, &mut decoded).map_err(|error| damaged(self.path, error))?;
            out.extend(decoded.iter().filter(|row| keep(row)));
            keep_newest(out, newest);
        }
        Ok(())
    }
}

/// With `newest = Some(n)`, cuts `rows` to its `n` newest (by time, then
/// id) once it holds at least twice as many (and 4,096): a page of a search
/// needs no older row, and an unfiltered hour of a busy school holds
/// millions, which the explorer's first screen must not hold at once. The
/// cut is amortised: each row is moved a constant number of times.
pub(crate) fn keep_newest(rows: &mut Vec<BlockRow>, newest: Option<usize>) {
    let Some(cap) = newest else { return };
    if rows.len() < cap.saturating_mul(2).max(4096) {
        return;
    }
    rows.select_nth_unstable_by(cap, |a, b| (b.time_ms, b.id).cmp(&(a.time_ms, a.id)));
    rows.truncate(cap);
}

/// Who asked, as `log_clients` has it ('' as `None`).
#[derive(Debug, Clone)]
struct Client {
    client: String,
    device: Option<String>,
    owner: Option<String>,
    network: Option<String>,
    group: Option<String>,
}

/// Why the answer was what it was, as `log_outcomes` has it.
#[derive(Debug, Clone)]
struct Outcome {
    decision: String,
    category: Option<String>,
    list: Option<String>,
    stage: Option<String>,
    reason: Option<String>,
    response_code: u16,
}

/// '' stands for "none" in the dictionaries.
fn some(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The dictionaries of names, clients and outcomes, each id read once.
pub(crate) struct Dictionaries<'c> {
    conn: &'c Connection,
    path: &'c Path,
    /// Dotted names.
    names: HashMap<u32, String>,
    clients: HashMap<u32, Client>,
    outcomes: HashMap<u32, Outcome>,
}

impl<'c> Dictionaries<'c> {
    pub(crate) fn new(conn: &'c Connection, path: &'c Path) -> Dictionaries<'c> {
        Dictionaries { conn, path, names: HashMap::new(), clients: HashMap::new(), outcomes: HashMap::new() }
    }

    /// A row with its ids replaced by what they stand for.
    pub(crate) fn log_row(&mut self, row: &BlockRow) -> Result<LogRow, StoreError> {
        let name = self.name(row.name)?.to_string();
        let client = self.client(row.client)?.clone();
        let outcome = self.outcome(row.outcome)?.clone();
        Ok(LogRow {
            id: row.id,
            time_ms: row.time_ms,
            client: client.client,
            device: client.device,
            owner: client.owner,
            network: client.network,
            group: client.group,
            record_type: row.record_type,
            decision: outcome.decision,
            category: outcome.category,
            list: outcome.list,
            response_code: outcome.response_code,
            upstream_ms: row.upstream_ms,
            cache_hit: row.cache_hit,
            stage: outcome.stage,
            reason: outcome.reason.map(|template| reason_for(&template, &name).into_owned()),
            name,
        })
    }

    fn missing(&self, what: &str, id: u32) -> StoreError {
        StoreError::Invalid(format!(
            "{}: a query-log row refers to {what} {id}, which is not in the database (damaged?); \
             `PRAGMA integrity_check` or a backup may help",
            self.path.display()
        ))
    }

    fn name(&mut self, id: u32) -> Result<&str, StoreError> {
        if !self.names.contains_key(&id) {
            let rname: Option<String> = self
                .conn
                .prepare_cached("SELECT rname FROM log_names WHERE id = ?1")
                .and_then(|mut statement| statement.query_row([id], |row| row.get(0)).optional())
                .map_err(StoreError::sqlite(self.path, "read the query log's names"))?;
            let rname = rname.ok_or_else(|| self.missing("name", id))?;
            self.names.insert(id, reversed_name(&rname));
        }
        Ok(&self.names[&id])
    }

    fn client(&mut self, id: u32) -> Result<&Client, StoreError> {
        if !self.clients.contains_key(&id) {
            let client = self
                .conn
                .prepare_cached("SELECT client, device, owner, network, group_name FROM log_clients WHERE id = ?1")
                .and_then(|mut statement| {
                    statement
                        .query_row([id], |row| {
                            Ok(Client {
                                client: row.get(0)?,
                                device: some(row.get(1)?),
                                owner: some(row.get(2)?),
                                network: some(row.get(3)?),
                                group: some(row.get(4)?),
                            })
                        })
                        .optional()
                })
                .map_err(StoreError::sqlite(self.path, "read the query log's clients"))?;
            let client = client.ok_or_else(|| self.missing("client", id))?;
            self.clients.insert(id, client);
        }
        Ok(&self.clients[&id])
    }

    fn outcome(&mut self, id: u32) -> Result<&Outcome, StoreError> {
        if !self.outcomes.contains_key(&id) {
            let outcome = self
                .conn
                .prepare_cached(
                    "SELECT decision, category, list, stage, reason, response_code FROM log_outcomes WHERE id = ?1",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row([id], |row| {
                            Ok(Outcome {
                                decision: row.get(0)?,
                                category: some(row.get(1)?),
                                list: some(row.get(2)?),
                                stage: some(row.get(3)?),
                                reason: some(row.get(4)?),
                                response_code: row.get(5)?,
                            })
                        })
                        .optional()
                })
                .map_err(StoreError::sqlite(self.path, "read the query log's outcomes"))?;
            let outcome = outcome.ok_or_else(|| self.missing("outcome", id))?;
            self.outcomes.insert(id, outcome);
        }
        Ok(&self.outcomes[&id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::Purpose;

    const HOUR: i64 = 490_000;

    fn row(time_ms: i64, seq: i64, client: u32, name: u32, outcome: u32) -> BlockRow {
        BlockRow {
            id: time_ms * block::ID_PER_MS + seq,
            time_ms,
            client,
            name,
            record_type: 1,
            outcome,
            cache_hit: seq == 1,
            upstream_ms: (seq == 0).then_some(12),
        }
    }

    /// A database with two clients, two names and two outcomes; one sealed
    /// hour (one block per client) and one fresh hour (two blocks).
    fn database() -> (tempfile::TempDir, std::path::PathBuf, Vec<BlockRow>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let conn = schema::open(&path, Purpose::Log).unwrap();
        conn.execute_batch(
            "INSERT INTO log_names (id, rname, last_day) VALUES (1, 'com.example.www', 0), (2, 'net.games', 0);
             INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day)
                 VALUES (1, '10.0.0.7', 'LIB-PC-04', 'J. Smith', 'pupil-wifi', 'pupil', 0),
                        (2, 'anon-0123456789ab', '', '', 'guest', 'guest', 0);
             INSERT INTO log_outcomes (id, decision, category, list, stage, reason, response_code)
                 VALUES (1, 'allowed', '', '', 'upstream', '', 0),
                        (2, 'blocked', 'games', 'hedgerow-games', 'blocklist', 'in games', 3);",
        )
        .unwrap();
        let start = HOUR * HOUR_MS;
        let sealed_one = vec![row(start + 10, 0, 1, 1, 1), row(start + 500, 0, 1, 2, 2), row(start + 500, 1, 1, 2, 2)];
        let sealed_two = vec![row(start + 20, 0, 2, 1, 1)];
        let next = start + HOUR_MS;
        let fresh_one = vec![row(next + 5, 0, 2, 2, 2), row(next + 7, 0, 1, 1, 1)];
        let fresh_two = vec![row(next + 9, 0, 1, 2, 1)];
        for (client, rows) in [(1, &sealed_one), (2, &sealed_two)] {
            let mut data = Vec::new();
            block::encode(rows, false, &mut data);
            conn.execute(
                "INSERT INTO log_sealed (key, rows, data) VALUES (?1, ?2, ?3)",
                rusqlite::params![block::sealed_key(HOUR, client, 0), rows.len() as i64, data],
            )
            .unwrap();
        }
        for rows in [&fresh_one, &fresh_two] {
            let mut data = Vec::new();
            block::encode(rows, true, &mut data);
            conn.execute(
                "INSERT INTO log_fresh (hour, last_row_id, data) VALUES (?1, ?2, ?3)",
                rusqlite::params![HOUR + 1, rows.last().unwrap().id, data],
            )
            .unwrap();
        }
        let mut all: Vec<BlockRow> = [sealed_one, sealed_two, fresh_one, fresh_two].concat();
        all.sort_by_key(|row| row.id);
        (dir, path, all)
    }

    #[test]
    fn rows_between_reads_sealed_and_fresh_blocks_in_time_order() {
        let (_dir, path, all) = database();
        let rows = rows_between(&path, i64::MIN, i64::MAX).unwrap();
        assert_eq!(rows.iter().map(|row| row.id).collect::<Vec<_>>(), all.iter().map(|row| row.id).collect::<Vec<_>>());

        let blocked = rows.iter().find(|row| row.id == all[2].id).unwrap();
        assert_eq!(blocked.name, "games.net");
        assert_eq!(blocked.client, "10.0.0.7");
        assert_eq!(blocked.device.as_deref(), Some("LIB-PC-04"));
        assert_eq!(blocked.owner.as_deref(), Some("J. Smith"));
        assert_eq!(blocked.network.as_deref(), Some("pupil-wifi"));
        assert_eq!(blocked.group.as_deref(), Some("pupil"));
        assert_eq!(blocked.decision, "blocked");
        assert_eq!(blocked.category.as_deref(), Some("games"));
        assert_eq!(blocked.list.as_deref(), Some("hedgerow-games"));
        assert_eq!(blocked.stage.as_deref(), Some("blocklist"));
        assert_eq!(blocked.reason.as_deref(), Some("in games"));
        assert_eq!(blocked.response_code, 3);
        assert_eq!(blocked.upstream_ms, Some(12));

        let guest = rows.iter().find(|row| row.client.starts_with("anon-")).unwrap();
        assert_eq!((guest.device.as_deref(), guest.owner.as_deref()), (None, None));
        assert_eq!(guest.name, "www.example.com");
        assert_eq!((guest.category.as_deref(), guest.list.as_deref(), guest.reason.as_deref()), (None, None, None));
    }

    #[test]
    fn rows_between_keeps_to_its_window() {
        let (_dir, path, all) = database();
        let start = HOUR * HOUR_MS;
        let ids = |from, to| rows_between(&path, from, to).unwrap().into_iter().map(|row| row.id).collect::<Vec<_>>();
        // to_ms is exclusive; the window cuts through both hours.
        let expected: Vec<i64> = all
            .iter()
            .filter(|row| (start + 20..start + HOUR_MS + 7).contains(&row.time_ms))
            .map(|row| row.id)
            .collect();
        assert_eq!(expected.len(), 4);
        assert_eq!(ids(start + 20, start + HOUR_MS + 7), expected);
        assert!(ids(start + 2 * HOUR_MS, i64::MAX).is_empty());
        assert!(ids(0, start).is_empty());
        assert!(ids(start + 50, start + 50).is_empty());
    }

    #[test]
    fn count_rows_adds_sealed_and_fresh_rows() {
        let (_dir, path, all) = database();
        assert_eq!(count_rows(&path).unwrap(), all.len() as u64);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.db");
        drop(schema::open(&empty, Purpose::Log).unwrap());
        assert_eq!(count_rows(&empty).unwrap(), 0);
        assert!(rows_between(&empty, i64::MIN, i64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_row_whose_name_is_missing_is_an_error_not_a_guess() {
        let (_dir, path, _) = database();
        let conn = schema::open(&path, Purpose::Log).unwrap();
        conn.execute("DELETE FROM log_names WHERE id = 2", []).unwrap();
        let error = rows_between(&path, i64::MIN, i64::MAX).unwrap_err();
        assert!(error.to_string().contains("name 2"), "{error}");
    }
}
