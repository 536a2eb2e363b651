//! Sealing: an hour's rows as one client's sorted blocks in `log_sealed`,
//! with the hour's postings (`log_name_postings`, `log_outcome_postings`).
//!
//! The writer seals each hour once it is over, and the current hour in
//! slices of minutes ([`seal_fresh`]): fresh blocks are decoded, rewritten
//! as sealed blocks (a slice's blocks are chunks after the hour's earlier
//! ones), their blocked rows counted into `log_hourly_blocked`, and deleted,
//! in one transaction, so a row is always in exactly one place and counted
//! once. Bulk loads (the upgrade of an old database, the synthetic school)
//! write sealed hours directly with [`write_sealed_hour`] and `count = true`,
//! which also adds the rows to both hourly roll-ups.
//!
//! Why blocked rows are counted when sealed, not when written fresh (as
//! `log_hourly` is): the writer's every batch upserted each of its distinct
//! blocked (client, name) pairs, spread over the whole hour's table, so each
//! commit rewrote most of that table's pages; at 32,000 queries/s on the
//! loopback bed that was half the writer's CPU. Readers add the fresh rows'
//! blocked counts ([`fresh_blocked`]) in the same read transaction.

use hashbrown::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::block::{self, BlockRow, SEALED_BLOCK_ROWS};
use super::time::HOUR_MS;

const LAST_CHUNK: &str = "SELECT max(key) FROM log_sealed WHERE key >= ?1 AND key < ?2";
const INSERT_SEALED: &str = "INSERT INTO log_sealed (key, rows, data) VALUES (?1, ?2, ?3)";
const INSERT_NAME_POSTING: &str =
    "INSERT OR IGNORE INTO log_name_postings (hour, name_id, client_id) VALUES (?1, ?2, ?3)";
const INSERT_OUTCOME_POSTING: &str =
    "INSERT OR IGNORE INTO log_outcome_postings (hour, outcome_id, client_id) VALUES (?1, ?2, ?3)";
const ADD_HOURLY: &str = "INSERT INTO log_hourly (hour, group_name, category, decision, count) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE SET count = count + excluded.count";
const ADD_HOURLY_BLOCKED: &str = "INSERT INTO log_hourly_blocked (hour, client_id, name_id, category, count) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO UPDATE SET count = count + excluded.count";

/// Writes rows of one hour (any order, any clients; dictionary ids must
/// exist) as sealed blocks and postings; with `count` also adds them to
/// `log_hourly` / `log_hourly_blocked` (the bulk path: the writer's own rows
/// were counted when written fresh). Blocks go after the highest chunk a
/// client already has in the hour. `rows` is left sorted by client, then id.
// `&mut Vec` (not a slice) is the signature the bulk loaders were promised.
#[allow(clippy::ptr_arg)]
pub fn write_sealed_hour(
    tx: &Transaction<'_>,
    hour: i64,
    rows: &mut Vec<BlockRow>,
    count: bool,
) -> rusqlite::Result<()> {
    write_sealed(tx, hour, rows, count, &mut Posted::default(), &mut Meanings::default())
}

/// [`write_sealed_hour`], putting in only the postings `posted` does not
/// hold (and noting those it puts in, for [`Posted::keep`]).
fn write_sealed(
    tx: &Transaction<'_>,
    hour: i64,
    rows: &mut [BlockRow],
    count: bool,
    posted: &mut Posted,
    meanings: &mut Meanings,
) -> rusqlite::Result<()> {
    posted.pending.clear();
    if rows.is_empty() {
        return Ok(());
    }
    let share = share_of_hour(hour, rows);
    rows.sort_unstable_by_key(|row| (row.client, row.id));
    let mut last_chunk = tx.prepare_cached(LAST_CHUNK)?;
    let mut insert_sealed = tx.prepare_cached(INSERT_SEALED)?;
    let mut data = Vec::with_capacity(SEALED_BLOCK_ROWS * 10);
    let mut names: Vec<(u32, u32)> = Vec::with_capacity(rows.len() / 4);
    let mut outcomes: Vec<(u32, u32)> = Vec::new();
    for client_rows in rows.chunk_by(|a, b| a.client == b.client) {
        let client = client_rows[0].client;
        let keys = block::client_hour_keys(hour, client);
        let highest: Option<i64> = last_chunk.query_row(params![keys.start, keys.end], |row| row.get(0))?;
        let first_chunk = highest.map_or(0, |key| block::split_sealed_key(key).2 + 1);
        let free = block::CHUNKS_PER_CLIENT_HOUR - first_chunk;
        if let (0, Some(last)) = (free, highest) {
            // Every chunk of this client's hour is taken: the rows join the last block.
            merge_into_block(tx, last, client, client_rows, &mut data)?;
        } else {
            // Blocks grow past SEALED_BLOCK_ROWS only for a client that would
            // otherwise run out of chunks before the hour ends.
            let per_block = SEALED_BLOCK_ROWS.max(client_rows.len().div_ceil(chunk_allowance(free, share)));
            for (chunk, block_rows) in (first_chunk..).zip(client_rows.chunks(per_block)) {
                data.clear();
                block::encode(block_rows, false, &mut data);
                insert_sealed.execute(params![
                    block::sealed_key(hour, client, chunk),
                    block_rows.len() as i64,
                    data.as_slice()
                ])?;
            }
        }
        for row in client_rows {
            names.push((row.name, client));
            if meanings.outcome(tx, row.outcome)?.posted() {
                outcomes.push((row.outcome, client));
            }
        }
    }
    insert_pairs(tx, INSERT_NAME_POSTING, hour, &mut names, posted, Posting::Name)?;
    insert_pairs(tx, INSERT_OUTCOME_POSTING, hour, &mut outcomes, posted, Posting::Outcome)?;
    if count {
        add_hourly(tx, hour, rows, meanings)?;
        let mut blocked = BlockedCounts::default();
        blocked.count(tx, rows, meanings)?;
        blocked.add(tx, hour, meanings)?;
    }
    Ok(())
}

/// The part of what is left of `hour`, from its oldest row on, that `rows`
/// cover (1 for a whole hour or the rest of one; a few thousandths for a
/// slice of seconds of the current hour).
fn share_of_hour(hour: i64, rows: &[BlockRow]) -> f64 {
    let first = rows.iter().map(|row| row.time_ms).min().unwrap_or(0);
    let last = rows.iter().map(|row| row.time_ms).max().unwrap_or(0);
    let left = ((hour + 1) * HOUR_MS - first).max(1);
    ((last - first + 1) as f64 / left as f64).min(1.0)
}

/// Chunks a client may take for rows covering `share` of what is left of
/// the hour, when `free` are left: half its share of them (at least one),
/// so a busy client's chunks last the hour however many slices it is sealed
/// in, and an hour sealed whole keeps half for rows that come late.
fn chunk_allowance(free: u32, share: f64) -> usize {
    ((f64::from(free) * share / 2.0) as usize).max(1)
}

/// Rewrites the sealed block `key` of `client` with `rows` added, in id order.
fn merge_into_block(
    tx: &Transaction<'_>,
    key: i64,
    client: u32,
    rows: &[BlockRow],
    data: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    let old: Vec<u8> = tx.query_row("SELECT data FROM log_sealed WHERE key = ?1", [key], |row| row.get(0))?;
    let mut merged = Vec::with_capacity(block::row_count(&old).unwrap_or(0) + rows.len());
    block::decode(&old, client, &mut merged)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(error)))?;
    merged.extend_from_slice(rows);
    merged.sort_unstable_by_key(|row| row.id);
    data.clear();
    block::encode(&merged, false, data);
    tx.execute(
        "UPDATE log_sealed SET rows = ?2, data = ?3 WHERE key = ?1",
        params![key, merged.len() as i64, &data[..]],
    )
    .map(drop)
}

/// Inserts distinct `(first, client)` pairs of `hour` that `posted` does not
/// hold, in key order (the cheapest order for a WITHOUT ROWID table).
fn insert_pairs(
    tx: &Transaction<'_>,
    sql: &str,
    hour: i64,
    pairs: &mut Vec<(u32, u32)>,
    posted: &mut Posted,
    kind: Posting,
) -> rusqlite::Result<()> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut insert = tx.prepare_cached(sql)?;
    for &(first, client) in pairs.iter() {
        let posting = (kind, first, client);
        if posted.hour == hour && posted.held.contains(&posting) {
            continue;
        }
        insert.execute(params![hour, first, client])?;
        posted.pending.push(posting);
    }
    Ok(())
}

/// What a posting pair points from: a name or an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Posting {
    Name,
    Outcome,
}

/// Pairs [`Posted`] holds at most; past it, it starts again.
const POSTINGS_HELD: usize = 1_000_000;

/// The postings already in the table for one hour (the one the writer is
/// sealing in slices), so each slice puts in only new pairs: at 44,000
/// queries/s a slice comes every two seconds, and putting the same tens of
/// thousands of (name, client) pairs in again each time cost the writer a
/// third more than the rows themselves.
#[derive(Default)]
pub(crate) struct Posted {
    hour: i64,
    held: HashSet<(Posting, u32, u32)>,
    /// Put in by the transaction under way: held once it commits.
    pending: Vec<(Posting, u32, u32)>,
}

impl Posted {
    /// The transaction that put in the pending pairs of `hour` committed.
    fn keep(&mut self, hour: i64) {
        if self.hour != hour || self.held.len() + self.pending.len() > POSTINGS_HELD {
            self.held.clear();
            self.hour = hour;
        }
        self.held.extend(self.pending.drain(..));
    }
}

/// Adds `rows` (all of `hour`) to `log_hourly`.
pub(crate) fn add_hourly(
    tx: &Transaction<'_>,
    hour: i64,
    rows: &[BlockRow],
    meanings: &mut Meanings,
) -> rusqlite::Result<()> {
    let mut by_client_outcome: HashMap<(u32, u32), i64> = HashMap::new();
    for row in rows {
        *by_client_outcome.entry((row.client, row.outcome)).or_default() += 1;
    }
    // (group, category, decision) -> rows.
    let mut hourly: HashMap<[Arc<str>; 3], i64> = HashMap::new();
    for ((client, outcome), count) in by_client_outcome {
        let group = meanings.group(tx, client)?;
        let outcome = meanings.outcome(tx, outcome)?;
        *hourly.entry([group, outcome.category.clone(), outcome.decision.clone()]).or_default() += count;
    }
    let mut add = tx.prepare_cached(ADD_HOURLY)?;
    for ([group, category, decision], count) in hourly {
        add.execute(params![hour, &*group, &*category, &*decision, count])?;
    }
    Ok(())
}

/// Blocked rows by client, name and outcome, as `log_hourly_blocked` counts
/// them (by category).
#[derive(Default)]
pub(crate) struct BlockedCounts(HashMap<(u32, u32, u32), i64>);

impl BlockedCounts {
    /// Counts the blocked rows of `rows`.
    pub(crate) fn count(
        &mut self,
        conn: &Connection,
        rows: &[BlockRow],
        meanings: &mut Meanings,
    ) -> rusqlite::Result<()> {
        for row in rows {
            if meanings.outcome(conn, row.outcome)?.blocked() {
                *self.0.entry((row.client, row.name, row.outcome)).or_default() += 1;
            }
        }
        Ok(())
    }

    /// The counts by (client, name, category).
    fn by_category(
        &self,
        conn: &Connection,
        meanings: &mut Meanings,
    ) -> rusqlite::Result<HashMap<(u32, u32, Arc<str>), i64>> {
        let mut counts: HashMap<(u32, u32, Arc<str>), i64> = HashMap::new();
        for (&(client, name, outcome), &count) in &self.0 {
            let category = meanings.outcome(conn, outcome)?.category.clone();
            *counts.entry((client, name, category)).or_default() += count;
        }
        Ok(counts)
    }

    /// Adds the counts (all of `hour`) to `log_hourly_blocked`.
    fn add(&self, tx: &Transaction<'_>, hour: i64, meanings: &mut Meanings) -> rusqlite::Result<()> {
        let mut add = tx.prepare_cached(ADD_HOURLY_BLOCKED)?;
        for ((client, name, category), count) in self.by_category(tx, meanings)? {
            add.execute(params![hour, client, name, &*category, count])?;
        }
        Ok(())
    }
}

/// Blocked lookups of the fresh rows in `hours`, which `log_hourly_blocked`
/// counts only once they are sealed: by hour, then (client, name, category).
/// Read in the same transaction as the table, so a seal between the two
/// reads neither drops nor doubles a row.
pub(crate) fn fresh_blocked(
    conn: &Connection,
    hours: std::ops::Range<i64>,
) -> rusqlite::Result<Vec<(i64, HashMap<(u32, u32, Arc<str>), i64>)>> {
    let mut statement = conn.prepare_cached(
        "SELECT hour, data FROM log_fresh WHERE hour >= ?1 AND hour < ?2 AND blocked_counted = 0 ORDER BY hour",
    )?;
    let mut blocks = statement.query([hours.start, hours.end])?;
    let mut meanings = Meanings::default();
    let mut by_hour: Vec<(i64, BlockedCounts)> = Vec::new();
    let mut rows = Vec::new();
    while let Some(block) = blocks.next()? {
        let hour: i64 = block.get(0)?;
        rows.clear();
        block::decode(block.get_ref(1)?.as_blob()?, 0, &mut rows)
            .map_err(|error| rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, Box::new(error)))?;
        if by_hour.last().is_none_or(|(last, _)| *last != hour) {
            by_hour.push((hour, BlockedCounts::default()));
        }
        if let Some((_, counts)) = by_hour.last_mut() {
            counts.count(conn, &rows, &mut meanings)?;
        }
    }
    by_hour.into_iter().map(|(hour, counts)| Ok((hour, counts.by_category(conn, &mut meanings)?))).collect()
}

/// An outcome's decision and category ('' for none).
#[derive(Debug, Clone)]
pub(crate) struct OutcomeMeaning {
    pub(crate) decision: Arc<str>,
    pub(crate) category: Arc<str>,
}

impl OutcomeMeaning {
    /// Outcomes with postings: anything but a plain allowed answer.
    fn posted(&self) -> bool {
        &*self.decision != "allowed" || !self.category.is_empty()
    }

    fn blocked(&self) -> bool {
        &*self.decision == "blocked"
    }
}

/// Client groups and outcome meanings by id, read from the dictionaries on
/// first use (ids never change meaning, so a cache may live long).
#[derive(Default)]
pub(crate) struct Meanings {
    groups: HashMap<u32, Arc<str>>,
    outcomes: HashMap<u32, OutcomeMeaning>,
}

impl Meanings {
    /// Records what the caller already knows (the writer's interning).
    pub(crate) fn know_group(&mut self, client: u32, group: &str) {
        self.groups.entry(client).or_insert_with(|| Arc::from(group));
    }

    pub(crate) fn know_outcome(&mut self, outcome: u32, decision: &str, category: &str) {
        self.outcomes
            .entry(outcome)
            .or_insert_with(|| OutcomeMeaning { decision: Arc::from(decision), category: Arc::from(category) });
    }

    fn group(&mut self, conn: &Connection, client: u32) -> rusqlite::Result<Arc<str>> {
        if let Some(group) = self.groups.get(&client) {
            return Ok(group.clone());
        }
        let group: String = conn
            .prepare_cached("SELECT group_name FROM log_clients WHERE id = ?1")?
            .query_row([client], |row| row.get(0))
            .optional()?
            .ok_or_else(|| missing("log_clients", client))?;
        let group: Arc<str> = Arc::from(group);
        self.groups.insert(client, group.clone());
        Ok(group)
    }

    fn outcome(&mut self, conn: &Connection, outcome: u32) -> rusqlite::Result<&OutcomeMeaning> {
        if !self.outcomes.contains_key(&outcome) {
            let (decision, category): (String, String) = conn
                .prepare_cached("SELECT decision, category FROM log_outcomes WHERE id = ?1")?
                .query_row([outcome], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
                .ok_or_else(|| missing("log_outcomes", outcome))?;
            self.know_outcome(outcome, &decision, &category);
        }
        Ok(&self.outcomes[&outcome])
    }
}

/// A row naming a dictionary id that is not there.
fn missing(table: &'static str, id: u32) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("query-log row refers to {table} id {id}, which is missing").into())
}

/// Rows one transaction of [`seal_fresh`] takes at most (whole blocks, so
/// up to a writer batch more): it bounds the memory a seal holds (40 bytes a
/// decoded row) and, as the writer seals the current hour whenever this many
/// rows have come, how long the DNS path's rows wait in the channel meanwhile.
/// A slice of 5 minutes at 71,000 queries/s was 21 million rows, about 1 GB and
/// seconds of the writer's time, during which the channel overflowed.
pub(crate) const SEAL_STEP_ROWS: usize = 100_000;

/// Seals the fresh blocks of every hour before `before_hour`, and the
/// blocks whose rows all have ids below `before_id` (the writer seals the
/// current hour in slices, so a search of it decodes minutes of rows, not an
/// hour). Moves the rows, writes postings and deletes the blocks, in
/// transactions of about [`SEAL_STEP_ROWS`] rows, oldest blocks first.
/// Returns the rows sealed.
pub(crate) fn seal_fresh(
    conn: &mut Connection,
    before_hour: i64,
    before_id: i64,
    posted: &mut Posted,
) -> rusqlite::Result<u64> {
    const DUE: &str = "(hour < ?1 OR last_row_id < ?2)";
    let mut sealed = 0;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(hour) = tx
            .prepare_cached(&format!("SELECT min(hour) FROM log_fresh WHERE {DUE}"))?
            .query_row([before_hour, before_id], |row| row.get::<_, Option<i64>>(0))?
        else {
            return Ok(sealed);
        };
        let mut rows = Vec::new();
        let mut last_block = 0;
        let mut meanings = Meanings::default();
        let mut blocked = BlockedCounts::default();
        let mut statement = tx.prepare_cached(&format!(
            "SELECT id, data, blocked_counted FROM log_fresh WHERE hour = ?3 AND {DUE} ORDER BY id"
        ))?;
        let mut blocks = statement.query([before_hour, before_id, hour])?;
        while rows.len() < SEAL_STEP_ROWS
            && let Some(block) = blocks.next()?
        {
            last_block = block.get::<_, i64>(0)?;
            let first = rows.len();
            block::decode(block.get_ref(1)?.as_blob()?, 0, &mut rows)
                .map_err(|error| rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, Box::new(error)))?;
            // Blocks an older version wrote were counted then.
            if !block.get::<_, bool>(2)? {
                blocked.count(&tx, &rows[first..], &mut meanings)?;
            }
        }
        drop(blocks);
        drop(statement);
        write_sealed(&tx, hour, &mut rows, false, posted, &mut meanings)?;
        blocked.add(&tx, hour, &mut meanings)?;
        tx.execute(
            &format!("DELETE FROM log_fresh WHERE hour = ?3 AND {DUE} AND id <= ?4"),
            params![before_hour, before_id, hour, last_block],
        )?;
        tx.commit()?;
        posted.keep(hour);
        sealed += rows.len() as u64;
        tracing::debug!(hour, rows = rows.len(), "query log: fresh rows sealed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{self, Purpose};

    const HOUR: i64 = 490_000;

    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema::open(&dir.path().join("log.db"), Purpose::Log).unwrap();
        conn.execute_batch(
            "INSERT INTO log_names (id, rname, last_day) VALUES (1, 'com.example', 0), (2, 'com.games', 0);
             INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day)
                 VALUES (1, '10.0.0.1', '', '', '', 'pupils', 0), (2, '10.0.0.2', '', '', '', '', 0);
             INSERT INTO log_outcomes (id, decision, category, list, stage, reason, response_code)
                 VALUES (1, 'allowed', '', '', '', '', 0), (2, 'blocked', 'games', 'games', '', '', 3),
                        (3, 'allowed', 'social', '', '', '', 0);",
        )
        .unwrap();
        (dir, conn)
    }

    fn rows(hour: i64, count: usize) -> Vec<BlockRow> {
        let mut last = 0;
        (0..count)
            .map(|n| {
                let time_ms = hour * 3_600_000 + (n as i64 * 7_919) % 3_600_000;
                last = block::row_id(time_ms, last);
                let n = n as u32;
                BlockRow {
                    id: last,
                    time_ms,
                    client: 1 + n % 2,
                    name: if n % 5 == 0 { 2 } else { 1 },
                    record_type: 1,
                    outcome: if n % 5 == 0 {
                        2
                    } else if n % 7 == 0 {
                        3
                    } else {
                        1
                    },
                    cache_hit: false,
                    upstream_ms: None,
                }
            })
            .collect()
    }

    fn sealed(conn: &Connection, hour: i64) -> Vec<BlockRow> {
        let keys = block::hour_keys(hour);
        let mut statement =
            conn.prepare("SELECT key, rows, data FROM log_sealed WHERE key >= ?1 AND key < ?2").unwrap();
        let mut found = Vec::new();
        let mut blocks = statement.query([keys.start, keys.end]).unwrap();
        while let Some(block) = blocks.next().unwrap() {
            let (key, count, data): (i64, i64, Vec<u8>) =
                (block.get(0).unwrap(), block.get(1).unwrap(), block.get(2).unwrap());
            let before = found.len();
            block::decode(&data, block::split_sealed_key(key).1, &mut found).unwrap();
            let count = count as usize;
            assert_eq!(found.len() - before, count);
            let ids: Vec<i64> = found[before..].iter().map(|row| row.id).collect();
            assert!(ids.is_sorted(), "a sealed block is in id order");
        }
        found
    }

    fn sorted(mut rows: Vec<BlockRow>) -> Vec<BlockRow> {
        rows.sort_by_key(|row| row.id);
        rows
    }

    fn pairs(conn: &Connection, sql: &str) -> Vec<(i64, u32, u32)> {
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_bulk_hour_is_sealed_with_postings_and_counts_and_late_rows_append_chunks() {
        let (_dir, mut conn) = database();
        let first = rows(HOUR, 1_000);
        let late = rows(HOUR, 300).into_iter().map(|row| BlockRow { id: row.id + 500, ..row }).collect::<Vec<_>>();
        let tx = conn.transaction().unwrap();
        write_sealed_hour(&tx, HOUR, &mut first.clone(), true).unwrap();
        write_sealed_hour(&tx, HOUR, &mut late.clone(), true).unwrap();
        tx.commit().unwrap();
        let mut all = first.clone();
        all.extend(&late);
        assert_eq!(sorted(sealed(&conn, HOUR)), sorted(all.clone()));
        let biggest: i64 = conn.query_row("SELECT max(rows) FROM log_sealed", [], |row| row.get(0)).unwrap();
        assert!(biggest as usize <= SEALED_BLOCK_ROWS, "an ordinary client's blocks keep to the usual size");
        // Each client's second write went after its first write's chunks.
        let chunks: Vec<(i64, u32, u32)> = pairs(&conn, "SELECT key, 0, 0 FROM log_sealed ORDER BY key")
            .into_iter()
            .map(|(key, ..)| block::split_sealed_key(key))
            .collect();
        assert_eq!(chunks.iter().filter(|(_, client, _)| *client == 1).count(), 2 + 1);
        assert_eq!(chunks.iter().filter(|(_, client, _)| *client == 1).map(|c| c.2).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            pairs(&conn, "SELECT hour, name_id, client_id FROM log_name_postings ORDER BY 1, 2, 3"),
            [(HOUR, 1, 1), (HOUR, 1, 2), (HOUR, 2, 1), (HOUR, 2, 2)]
        );
        assert_eq!(
            pairs(&conn, "SELECT hour, outcome_id, client_id FROM log_outcome_postings ORDER BY 1, 2, 3"),
            [(HOUR, 2, 1), (HOUR, 2, 2), (HOUR, 3, 1), (HOUR, 3, 2)]
        );
        let hourly: Vec<(String, String, String, i64)> = conn
            .prepare("SELECT group_name, category, decision, count FROM log_hourly ORDER BY 1, 2, 3")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expect = |client: u32, outcome: u32| {
            all.iter().filter(|r| r.client == client && r.outcome == outcome).count() as i64
        };
        let wanted = vec![
            (String::new(), String::new(), "allowed".into(), expect(2, 1)),
            (String::new(), "games".into(), "blocked".into(), expect(2, 2)),
            (String::new(), "social".into(), "allowed".into(), expect(2, 3)),
            ("pupils".into(), String::new(), "allowed".into(), expect(1, 1)),
            ("pupils".into(), "games".into(), "blocked".into(), expect(1, 2)),
            ("pupils".into(), "social".into(), "allowed".into(), expect(1, 3)),
        ];
        assert_eq!(hourly, wanted);
        assert_eq!(hourly.iter().map(|h| h.3).sum::<i64>(), 1_300);
        let blocked: i64 = conn
            .query_row(
                "SELECT sum(count) FROM log_hourly_blocked WHERE category = 'games' AND name_id = 2",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(blocked, all.iter().filter(|row| row.outcome == 2).count() as i64);
    }

    #[test]
    fn sealing_moves_fresh_hours_before_the_given_one_only() {
        let (_dir, mut conn) = database();
        let (early, later, current) = (rows(HOUR, 600), rows(HOUR + 1, 400), rows(HOUR + 2, 50));
        for (hour, rows) in [(HOUR, &early), (HOUR + 1, &later), (HOUR + 2, &current)] {
            for part in rows.chunks(170) {
                let mut data = Vec::new();
                block::encode(part, true, &mut data);
                conn.execute(
                    "INSERT INTO log_fresh (hour, last_row_id, data) VALUES (?1, ?2, ?3)",
                    params![hour, part.last().unwrap().id, data],
                )
                .unwrap();
            }
        }
        assert_eq!(seal_fresh(&mut conn, HOUR + 2, 0, &mut Posted::default()).unwrap(), 1_000);
        assert_eq!(sorted(sealed(&conn, HOUR)), sorted(early.clone()));
        assert_eq!(sorted(sealed(&conn, HOUR + 1)), sorted(later.clone()));
        assert!(sealed(&conn, HOUR + 2).is_empty());
        let fresh: Vec<i64> = conn
            .prepare("SELECT DISTINCT hour FROM log_fresh")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(fresh, [HOUR + 2]);
        let posted: i64 =
            conn.query_row("SELECT count(DISTINCT hour) FROM log_name_postings", [], |row| row.get(0)).unwrap();
        assert_eq!(posted, 2);
        // Sealing counts the blocked rows (log_hourly counted them all when
        // they were written fresh).
        let counted: i64 = conn.query_row("SELECT count(*) FROM log_hourly", [], |row| row.get(0)).unwrap();
        assert_eq!(counted, 0);
        let blocked = |hour: i64| -> i64 {
            conn.query_row(
                "SELECT coalesce(sum(count), 0) FROM log_hourly_blocked WHERE hour = ?1 AND category = 'games'",
                [hour],
                |row| row.get(0),
            )
            .unwrap()
        };
        let games = |rows: &[BlockRow]| rows.iter().filter(|row| row.outcome == 2).count() as i64;
        assert_eq!((blocked(HOUR), blocked(HOUR + 1), blocked(HOUR + 2)), (games(&early), games(&later), 0));
        assert_eq!(
            seal_fresh(&mut conn, HOUR + 2, 0, &mut Posted::default()).unwrap(),
            0,
            "sealing again finds nothing"
        );
    }

    /// Blocked rows are counted once: as they are sealed, except in blocks an
    /// older version wrote (it counted them when written); until then
    /// readers find them with `fresh_blocked`.
    #[test]
    fn blocked_rows_are_counted_once_when_sealed_and_read_from_fresh_blocks_until_then() {
        let (_dir, mut conn) = database();
        let current = rows(HOUR, 600);
        let (old, new) = current.split_at(200);
        for (part, counted) in [(old, true), (new, false)] {
            let mut data = Vec::new();
            block::encode(part, true, &mut data);
            conn.execute(
                "INSERT INTO log_fresh (hour, last_row_id, data, blocked_counted) VALUES (?1, ?2, ?3, ?4)",
                params![HOUR, part.last().unwrap().id, data, counted],
            )
            .unwrap();
        }
        let games = |rows: &[BlockRow], client: u32| {
            rows.iter().filter(|row| row.outcome == 2 && row.client == client).count() as i64
        };
        // Before sealing: the new block's blocked rows, by client and name.
        let fresh = fresh_blocked(&conn, HOUR..HOUR + 1).unwrap();
        assert_eq!(fresh.len(), 1);
        let (hour, counts) = &fresh[0];
        assert_eq!(*hour, HOUR);
        let games_key = |client: u32| (client, 2, Arc::from("games"));
        assert_eq!(counts.len(), 2, "blocked rows of two clients, one name: {:?}", counts.keys().collect::<Vec<_>>());
        assert_eq!(counts[&games_key(1)], games(new, 1));
        assert_eq!(counts[&games_key(2)], games(new, 2));
        assert!(fresh_blocked(&conn, HOUR + 1..HOUR + 2).unwrap().is_empty());

        assert_eq!(seal_fresh(&mut conn, HOUR + 1, 0, &mut Posted::default()).unwrap(), 600);
        let table: Vec<(i64, u32, u32, String, i64)> = conn
            .prepare("SELECT hour, client_id, name_id, category, count FROM log_hourly_blocked ORDER BY client_id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            table,
            [(HOUR, 1, 2, "games".to_string(), games(new, 1)), (HOUR, 2, 2, "games".to_string(), games(new, 2))],
            "the old block's rows are not counted again"
        );
        assert!(fresh_blocked(&conn, HOUR..HOUR + 1).unwrap().is_empty(), "nothing fresh is left to add");
    }

    #[test]
    fn the_current_hour_is_sealed_in_slices_of_whole_blocks() {
        let (_dir, mut conn) = database();
        let current = rows(HOUR, 500);
        for part in current.chunks(100) {
            let mut data = Vec::new();
            block::encode(part, true, &mut data);
            conn.execute(
                "INSERT INTO log_fresh (hour, last_row_id, data) VALUES (?1, ?2, ?3)",
                params![HOUR, part.last().unwrap().id, data],
            )
            .unwrap();
        }
        // Up to the third block's newest row: the first three blocks go.
        let mut posted = Posted::default();
        let boundary = current[299].id + 1;
        assert_eq!(seal_fresh(&mut conn, HOUR, boundary, &mut posted).unwrap(), 300);
        assert_eq!(sorted(sealed(&conn, HOUR)), sorted(current[..300].to_vec()));
        let fresh: i64 = conn.query_row("SELECT count(*) FROM log_fresh", [], |row| row.get(0)).unwrap();
        assert_eq!(fresh, 2);
        // The next slice appends chunks; every row is sealed once.
        assert_eq!(seal_fresh(&mut conn, HOUR, i64::MAX, &mut posted).unwrap(), 200);
        assert_eq!(sorted(sealed(&conn, HOUR)), sorted(current.clone()));
        // The second slice put in only the pairs the first had not, and
        // together they are every pair of the hour's rows.
        let mut expected: Vec<(i64, u32, u32)> = current.iter().map(|row| (HOUR, row.name, row.client)).collect();
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(pairs(&conn, "SELECT hour, name_id, client_id FROM log_name_postings ORDER BY 1, 2, 3"), expected);
    }

    #[test]
    fn a_client_with_more_rows_than_chunks_gets_bigger_blocks_and_loses_none() {
        let (_dir, conn) = database();
        let tx = conn.unchecked_transaction().unwrap();
        // Every chunk but one already taken by earlier slices of the hour.
        let last_free = block::CHUNKS_PER_CLIENT_HOUR - 1;
        let early = rows(HOUR, 3);
        let client = early[0].client;
        let mut data = Vec::new();
        block::encode(&early[..1], false, &mut data);
        tx.execute(
            "INSERT INTO log_sealed (key, rows, data) VALUES (?1, 1, ?2)",
            params![block::sealed_key(HOUR, client, last_free - 1), data],
        )
        .unwrap();
        let mut later: Vec<BlockRow> = early[1..].iter().map(|row| BlockRow { client, ..*row }).collect();
        later.extend(rows(HOUR, 2_000).into_iter().map(|row| BlockRow { client, id: row.id + 10_000_000, ..row }));
        let expected_rows = 1 + later.len();
        write_sealed_hour(&tx, HOUR, &mut later.clone(), false).unwrap();
        // No chunk is left now: the next rows join the last block.
        let mut more = vec![BlockRow { id: later.last().unwrap().id + 1, ..later[0] }];
        write_sealed_hour(&tx, HOUR, &mut more, false).unwrap();
        tx.commit().unwrap();
        let keys: Vec<i64> = conn
            .prepare("SELECT key FROM log_sealed ORDER BY key")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(keys.len(), 2, "one block in the last free chunk, after the earlier one");
        assert!(keys.iter().all(|&key| block::split_sealed_key(key).1 == client));
        let found = sealed(&conn, HOUR);
        assert_eq!(found.len(), expected_rows + 1);
        let mut ids: Vec<i64> = found.iter().map(|row| row.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), found.len(), "no row twice");
    }
}
