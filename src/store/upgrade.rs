//! Converting a schema-5 query log (one `query_log` row per query, with the
//! `name_hours` and `client_labels` sighting tables) into schema 6's blocks.
//!
//! Runs on the first writable open after migration 0006 (from
//! [`schema::open`](super::schema::open)). One hour per transaction: the
//! hour's rows are read in (time, old id) order, given new time-ordered ids,
//! interned into the dictionaries and written as sealed blocks with their
//! postings and hourly counts; the hour after it is recorded in
//! `store_state`, so an interrupted upgrade (or a second process opening the
//! file meanwhile) carries on where it stopped and converts no row twice.
//! Then the old tables are dropped. Memory holds one hour's rows.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::StoreError;
use super::block::{self, BlockRow};
use super::dict::{ClientFields, Dictionary, OutcomeFields};
use super::record::reason_template;
use super::seal;
use super::time::{HOUR_MS, day_number};

/// `store_state` key: rows before this time (ms) are converted.
const PROGRESS: &str = "log_upgrade_next_ms";

/// Converts and drops the old query-log tables if the file still has them.
/// Returns the rows converted.
pub(crate) fn upgrade(conn: &mut Connection, path: &Path) -> Result<u64, StoreError> {
    let failed = |action| StoreError::sqlite(path, action);
    if !has_table(conn, "query_log").map_err(failed("look for the old query log"))? {
        return Ok(0);
    }
    // A new file has the old (empty) tables from migration 0001: no news.
    let has_rows: Option<i64> = conn
        .query_row("SELECT 1 FROM query_log LIMIT 1", [], |row| row.get(0))
        .optional()
        .map_err(failed("read the old query log"))?;
    if has_rows.is_some() {
        tracing::info!(db = %path.display(), "query log: converting the old query log to the block format");
    }
    let mut converted = 0u64;
    let mut last_id = 0;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed("start a query-log upgrade step"))?;
        if !has_table(&tx, "query_log").map_err(failed("look for the old query log"))? {
            // Another process finished it.
            return Ok(converted);
        }
        let from: i64 = tx
            .query_row("SELECT value FROM store_state WHERE key = ?1", [PROGRESS], |row| row.get(0))
            .optional()
            .map_err(failed("read the query-log upgrade's progress"))?
            .unwrap_or(i64::MIN);
        let first: Option<i64> = tx
            .query_row("SELECT min(time_ms) FROM query_log WHERE time_ms >= ?1", [from], |row| row.get(0))
            .map_err(failed("read the old query log"))?;
        let Some(first) = first else {
            tx.execute_batch(
                "DROP TABLE query_log; DROP TABLE IF EXISTS name_hours; DROP TABLE IF EXISTS client_labels;",
            )
            .map_err(failed("drop the old query-log tables"))?;
            tx.execute("DELETE FROM store_state WHERE key = ?1", [PROGRESS])
                .map_err(failed("finish the query-log upgrade"))?;
            tx.commit().map_err(failed("finish the query-log upgrade"))?;
            break;
        };
        let hour = first.div_euclid(HOUR_MS);
        // A new dictionary each step: another process may have interned
        // (and taken ids) between this process's steps.
        let mut dict = Dictionary::default();
        let mut rows =
            hour_rows(&tx, &mut dict, hour, &mut last_id).map_err(failed("convert an hour of the old query log"))?;
        seal::write_sealed_hour(&tx, hour, &mut rows, true).map_err(failed("write an hour of the converted log"))?;
        tx.execute(
            "INSERT INTO store_state (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![PROGRESS, (hour + 1) * HOUR_MS],
        )
        .map_err(failed("record the query-log upgrade's progress"))?;
        tx.commit().map_err(failed("commit a query-log upgrade step"))?;
        converted += rows.len() as u64;
    }
    // The old tables' pages are free now; VACUUM is left to the operator
    // (it needs as much free disk as the file).
    if has_rows.is_some() {
        tracing::info!(
            db = %path.display(),
            rows = converted,
            "query log: converted the old query log to the block format ({converted} rows); the old tables are dropped"
        );
    }
    Ok(converted)
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1", [name], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
}

/// The old rows of `hour` as block rows, interning as it goes.
fn hour_rows(
    conn: &Connection,
    dict: &mut Dictionary,
    hour: i64,
    last_id: &mut i64,
) -> rusqlite::Result<Vec<BlockRow>> {
    let mut statement = conn.prepare(
        "SELECT time_ms, client, coalesce(device, ''), coalesce(owner, ''), coalesce(network, ''), \
         coalesce(group_name, ''), name, record_type, decision, coalesce(category, ''), coalesce(list, ''), \
         response_code, upstream_ms, cache_hit, coalesce(stage, ''), coalesce(reason, '') \
         FROM query_log WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, id",
    )?;
    let mut found = statement.query([hour * HOUR_MS, (hour + 1) * HOUR_MS])?;
    let mut rows = Vec::new();
    while let Some(row) = found.next()? {
        let time_ms: i64 = row.get(0)?;
        let day = day_number(time_ms);
        let text = |index| row.get_ref(index).and_then(|value| value.as_str().map_err(Into::into));
        let client = dict.client(
            conn,
            ClientFields { client: text(1)?, device: text(2)?, owner: text(3)?, network: text(4)?, group: text(5)? },
            day,
        )?;
        let name = dict.name(conn, text(6)?, day)?;
        let outcome = dict.outcome(
            conn,
            OutcomeFields {
                decision: text(8)?,
                category: text(9)?,
                list: text(10)?,
                stage: text(14)?,
                reason: &reason_template(text(15)?, text(6)?),
                response_code: row.get(11)?,
            },
        )?;
        *last_id = block::row_id(time_ms, *last_id);
        rows.push(BlockRow {
            id: *last_id,
            time_ms,
            client,
            name,
            record_type: row.get(7)?,
            outcome,
            cache_hit: row.get(13)?,
            upstream_ms: row.get(12)?,
        });
    }
    Ok(rows)
}
