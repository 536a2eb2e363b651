//! Daily roll-ups, retention of raw rows, and the annual review figures.
//!
//! A UTC day is rolled up once it is complete (plus [`ROLLUP_GRACE_MS`] for
//! the writer's last batch) and all its hours are sealed (the roll-up seals
//! any the writer has not yet, as the writer would). Its sums come from the
//! hourly roll-ups (`log_hourly`, `log_hourly_blocked`, exact because they
//! are written with the rows) and the distinct clients from the sealed
//! blocks' keys, read in one snapshot (no lock the writer waits for), and are
//! written in one short transaction that also records the day in
//! `rollup_days`, so re-running never counts a day twice. Rows that arrive
//! for a day after it was rolled up (a clock step back) stay out of its
//! roll-up.
//!
//! Retention deletes whole hours older than `retention_days` (never an hour
//! of a day not yet rolled up): the hour's sealed blocks (one key range),
//! postings and hourly roll-ups, one hour per transaction with a pause
//! between, so the writer waits for at most one hour's delete; then the
//! names and clients no kept row uses (`last_day` before the first kept day).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::block;
use super::schema::{self, Purpose};
use super::seal;
use super::time::{DAY_MS, day_number, day_string, now_ms, parse_day};
use super::writer::HOUR_MS;
use crate::name::reversed_name;

/// How long after midnight (UTC) a day counts as complete.
pub const ROLLUP_GRACE_MS: i64 = 10 * 60 * 1000;
/// Names kept per day and group in `daily_top_blocked`.
pub const TOP_BLOCKED_PER_DAY: usize = 20;
/// Unused names and clients are deleted walking ten times this many ids per
/// transaction (a few ms of reading each; see `delete_unused`).
pub const DELETE_BATCH: usize = 5_000;
/// The pause between delete transactions.
const DELETE_PAUSE: Duration = Duration::from_millis(20);
/// How often [`spawn_retention`] runs.
pub const RETENTION_PERIOD: Duration = Duration::from_secs(3600);
/// Hours in a UTC day.
const DAY_HOURS: i64 = DAY_MS / HOUR_MS;

/// What one retention run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub days_rolled_up: usize,
    pub rows_deleted: u64,
    /// Raw rows before this time (UTC Unix ms) are gone.
    pub deleted_before_ms: i64,
}

/// Rolls up every complete day that has rows and no roll-up yet, sealing
/// its hours first if the writer has not. Returns the number of days rolled up.
pub fn roll_up(db: &Path, now_ms: i64) -> Result<usize, StoreError> {
    let mut conn = schema::open(db, Purpose::Maintenance)?;
    let last_complete = day_number(now_ms - ROLLUP_GRACE_MS) - 1;
    seal::seal_fresh(&mut conn, (last_complete + 1) * DAY_HOURS, 0, &mut seal::Posted::default())
        .map_err(StoreError::sqlite(db, "seal the hours of complete days"))?;
    let mut rolled = 0;
    let mut cursor = i64::MIN;
    while let Some(day) = next_day_with_rows(&conn, db, cursor)? {
        if day > last_complete {
            break;
        }
        if !is_rolled_up(&conn, db, day)? && roll_up_day(&mut conn, db, day, now_ms)? {
            rolled += 1;
        }
        cursor = day + 1;
    }
    Ok(rolled)
}

/// Rolls up complete days, then deletes the hours older than
/// `retention_days` (1..=365), one hour per transaction. Safe to run while
/// the writer runs.
pub fn run_retention(db: &Path, retention_days: u32, now_ms: i64) -> Result<RetentionReport, StoreError> {
    if !(1..=365).contains(&retention_days) {
        return Err(StoreError::Invalid(format!("retention_days is {retention_days}; it must be from 1 to 365")));
    }
    let days_rolled_up = roll_up(db, now_ms)?;
    let mut conn = schema::open(db, Purpose::Maintenance)?;
    // Whole hours: the hour the cutoff falls in is kept.
    let mut cutoff_hour = (now_ms - i64::from(retention_days) * DAY_MS).div_euclid(HOUR_MS);
    // Never delete what no roll-up has counted.
    let mut cursor = i64::MIN;
    while let Some(day) = next_day_with_rows(&conn, db, cursor)? {
        if day * DAY_HOURS >= cutoff_hour {
            break;
        }
        if !is_rolled_up(&conn, db, day)? {
            cutoff_hour = day * DAY_HOURS;
            break;
        }
        cursor = day + 1;
    }
    let mut rows_deleted = 0;
    while let Some(hour) = oldest_hour(&conn, db)?.filter(|&hour| hour < cutoff_hour) {
        rows_deleted += delete_hour(&mut conn, db, hour)?;
        std::thread::sleep(DELETE_PAUSE);
    }
    // Names and clients that only deleted rows used.
    let first_kept_day = day_number(cutoff_hour * HOUR_MS);
    for table in ["log_names", "log_clients"] {
        delete_unused(&conn, db, table, first_kept_day)?;
    }
    // Keep the planner's statistics fresh (bounded work).
    conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize;")
        .map_err(StoreError::sqlite(db, "update the query planner's statistics"))?;
    Ok(RetentionReport { days_rolled_up, rows_deleted, deleted_before_ms: cutoff_hour * HOUR_MS })
}

/// The oldest hour with sealed blocks or hourly counts.
fn oldest_hour(conn: &Connection, db: &Path) -> Result<Option<i64>, StoreError> {
    let read = StoreError::sqlite(db, "find the oldest hour of the query log");
    let sealed: Option<i64> = conn.query_row("SELECT min(key) FROM log_sealed", [], |row| row.get(0)).map_err(read)?;
    let counted: Option<i64> = conn
        .query_row("SELECT min(hour) FROM log_hourly", [], |row| row.get(0))
        .map_err(StoreError::sqlite(db, "find the oldest hour of the query log"))?;
    let sealed = sealed.map(|key| block::split_sealed_key(key).0);
    Ok([sealed, counted].into_iter().flatten().min())
}

/// Deletes one hour's sealed blocks, postings and hourly counts in one
/// transaction; returns its rows.
fn delete_hour(conn: &mut Connection, db: &Path, hour: i64) -> Result<u64, StoreError> {
    let delete = |action| StoreError::sqlite(db, action);
    let keys = block::hour_keys(hour);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(delete("start a delete"))?;
    let rows: i64 = tx
        .query_row(
            "SELECT coalesce(sum(rows), 0) FROM log_sealed WHERE key >= ?1 AND key < ?2",
            [keys.start, keys.end],
            |row| row.get(0),
        )
        .map_err(delete("count an old hour's rows"))?;
    tx.execute("DELETE FROM log_sealed WHERE key >= ?1 AND key < ?2", [keys.start, keys.end])
        .map_err(delete("delete an old hour's rows"))?;
    // Late rows of the hour not sealed yet (its day is rolled up without them).
    let mut late = 0;
    {
        let mut statement =
            tx.prepare("SELECT data FROM log_fresh WHERE hour = ?1").map_err(delete("read an old hour's late rows"))?;
        let mut blocks = statement.query([hour]).map_err(delete("read an old hour's late rows"))?;
        while let Some(found) = blocks.next().map_err(delete("read an old hour's late rows"))? {
            let data = found
                .get_ref(0)
                .and_then(|value| Ok(value.as_blob()?))
                .map_err(delete("read an old hour's late rows"))?;
            late += block::row_count(data).unwrap_or(0) as i64;
        }
    }
    tx.execute("DELETE FROM log_fresh WHERE hour = ?1", [hour]).map_err(delete("delete an old hour's late rows"))?;
    for table in ["log_name_postings", "log_outcome_postings", "log_hourly", "log_hourly_blocked"] {
        tx.execute(&format!("DELETE FROM {table} WHERE hour = ?1"), [hour])
            .map_err(delete("delete an old hour's postings and counts"))?;
    }
    tx.commit().map_err(delete("commit a delete"))?;
    Ok((rows + late) as u64)
}

/// Deletes the rows of `table` whose `last_day` is before `first_kept_day`,
/// walking the ids ten [`DELETE_BATCH`]es at a time (no index on `last_day`:
/// each step reads one id range), with a pause between transactions.
fn delete_unused(conn: &Connection, db: &Path, table: &str, first_kept_day: i64) -> Result<u64, StoreError> {
    let failed = StoreError::sqlite(db, "delete unused names and clients");
    let max: Option<i64> =
        conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |row| row.get(0)).map_err(failed)?;
    let mut deleted = 0;
    let mut from = 0;
    while from <= max.unwrap_or(-1) {
        let to = from + 10 * DELETE_BATCH as i64;
        deleted += conn
            .execute(
                &format!("DELETE FROM {table} WHERE id >= ?1 AND id < ?2 AND last_day < ?3"),
                params![from, to, first_kept_day],
            )
            .map_err(StoreError::sqlite(db, "delete unused names and clients"))? as u64;
        from = to;
        if from <= max.unwrap_or(-1) {
            std::thread::sleep(DELETE_PAUSE);
        }
    }
    Ok(deleted)
}

/// Starts a daemon thread that runs [`run_retention`] at once and then every
/// hour, logging what it did; it runs until the process exits (its handle
/// never finishes). Failures are logged and retried at the next run.
pub fn spawn_retention(db: PathBuf, retention_days: u32) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("hedgerow-retention".into())
        .spawn(move || {
            // Deleting a day takes a second or two of CPU: DNS answers first.
            crate::priority::yield_to_dns();
            loop {
                match run_retention(&db, retention_days, now_ms()) {
                    Ok(report) => tracing::info!(
                        days_rolled_up = report.days_rolled_up,
                        rows_deleted = report.rows_deleted,
                        "query log retention"
                    ),
                    Err(error) => tracing::warn!(%error, "query log retention failed; retrying in an hour"),
                }
                std::thread::sleep(RETENTION_PERIOD);
            }
        })
        .expect("the operating system starts a thread")
}

/// The first day at or after `from_day` that has rows (one seek in the
/// hourly roll-up, which counts every row, fresh or sealed).
fn next_day_with_rows(conn: &Connection, db: &Path, from_day: i64) -> Result<Option<i64>, StoreError> {
    let hour: Option<i64> = conn
        .query_row("SELECT min(hour) FROM log_hourly WHERE hour >= ?1", [from_day.saturating_mul(DAY_HOURS)], |row| {
            row.get(0)
        })
        .map_err(StoreError::sqlite(db, "find the days in the query log"))?;
    Ok(hour.map(|hour| hour.div_euclid(DAY_HOURS)))
}

fn is_rolled_up(conn: &Connection, db: &Path, day: i64) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM rollup_days WHERE day = ?1", [day_string(day)], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .map_err(StoreError::sqlite(db, "read the roll-up days"))
}

/// The sums of one day.
#[derive(Default)]
struct DaySums {
    raw_rows: u64,
    counts: Vec<(String, String, String, u64)>,
    /// (group, name) -> blocked lookups.
    blocked: HashMap<(String, String), u64>,
    clients: usize,
}

/// Reads one day's sums from the hourly roll-ups and the sealed keys.
/// `None` if some hour of the day is not sealed yet.
fn day_sums(conn: &Connection, day: i64) -> rusqlite::Result<Option<DaySums>> {
    let (first, end) = (day * DAY_HOURS, (day + 1) * DAY_HOURS);
    let fresh: Option<i64> = conn
        .query_row("SELECT 1 FROM log_fresh WHERE hour >= ?1 AND hour < ?2 LIMIT 1", [first, end], |row| row.get(0))
        .optional()?;
    if fresh.is_some() {
        return Ok(None);
    }
    let mut sums = DaySums::default();
    let mut statement = conn.prepare(
        "SELECT group_name, category, decision, sum(count) FROM log_hourly \
         WHERE hour >= ?1 AND hour < ?2 GROUP BY 1, 2, 3",
    )?;
    for row in statement.query_map([first, end], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))? {
        let (group, category, decision, count): (String, String, String, i64) = row?;
        sums.raw_rows += count as u64;
        sums.counts.push((group, category, decision, count as u64));
    }
    let mut statement = conn.prepare(
        "SELECT c.group_name, n.rname, sum(b.count) FROM log_hourly_blocked b \
         JOIN log_clients c ON c.id = b.client_id JOIN log_names n ON n.id = b.name_id \
         WHERE b.hour >= ?1 AND b.hour < ?2 GROUP BY 1, 2",
    )?;
    for row in statement.query_map([first, end], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))? {
        let (group, rname, count): (String, String, i64) = row?;
        *sums.blocked.entry((group, reversed_name(&rname))).or_default() += count as u64;
    }
    // Distinct client addresses (or privacy forms), as the old log counted
    // them: a client id is an address with one device label, so several ids
    // may share an address.
    let mut ids = HashSet::new();
    let mut statement = conn.prepare("SELECT key FROM log_sealed WHERE key >= ?1 AND key < ?2")?;
    let keys = (block::hour_keys(first).start, block::hour_keys(end - 1).end);
    for key in statement.query_map([keys.0, keys.1], |row| row.get::<_, i64>(0))? {
        ids.insert(block::split_sealed_key(key?).1);
    }
    let mut client_of = conn.prepare("SELECT client FROM log_clients WHERE id = ?1")?;
    let mut clients = HashSet::new();
    for id in ids {
        if let Some(client) = client_of.query_row([id], |row| row.get::<_, String>(0)).optional()? {
            clients.insert(client);
        }
    }
    sums.clients = clients.len();
    Ok(Some(sums))
}

/// Rolls up one day; false if another process did it first or an hour of
/// it is not sealed yet.
fn roll_up_day(conn: &mut Connection, db: &Path, day: i64, now_ms: i64) -> Result<bool, StoreError> {
    let sums = {
        // A read transaction: one consistent snapshot, no lock the writer waits on.
        let tx = conn.transaction().map_err(StoreError::sqlite(db, "read a day of the query log"))?;
        let sums = day_sums(&tx, day).map_err(StoreError::sqlite(db, "read a day of the query log"))?;
        match sums {
            Some(sums) => sums,
            None => return Ok(false),
        }
    };

    let day_text = day_string(day);
    let write = |action| StoreError::sqlite(db, action);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(write("start a roll-up"))?;
    let done: Option<i64> = tx
        .query_row("SELECT 1 FROM rollup_days WHERE day = ?1", [&day_text], |row| row.get(0))
        .optional()
        .map_err(write("read the roll-up days"))?;
    if done.is_some() {
        return Ok(false);
    }
    for table in ["daily_counts", "daily_top_blocked", "daily_devices"] {
        tx.execute(&format!("DELETE FROM {table} WHERE day = ?1"), [&day_text]).map_err(write("clear a roll-up"))?;
    }
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO daily_counts (day, group_name, category, decision, count) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(write("write a roll-up"))?;
        for (group, category, decision, count) in &sums.counts {
            insert
                .execute(params![day_text, group, category, decision, *count as i64])
                .map_err(write("write a roll-up"))?;
        }
        let mut by_group: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
        for ((group, name), count) in &sums.blocked {
            by_group.entry(group).or_default().push((name, *count));
        }
        let mut insert = tx
            .prepare("INSERT INTO daily_top_blocked (day, group_name, name, count) VALUES (?1, ?2, ?3, ?4)")
            .map_err(write("write a roll-up"))?;
        for (group, mut names) in by_group {
            names.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for (name, count) in names.into_iter().take(TOP_BLOCKED_PER_DAY) {
                insert.execute(params![day_text, group, name, count as i64]).map_err(write("write a roll-up"))?;
            }
        }
    }
    tx.execute(
        "INSERT INTO daily_devices (day, distinct_devices) VALUES (?1, ?2)",
        params![day_text, sums.clients as i64],
    )
    .map_err(write("write a roll-up"))?;
    tx.execute(
        "INSERT INTO rollup_days (day, raw_rows, rolled_up_ms) VALUES (?1, ?2, ?3)",
        params![day_text, sums.raw_rows as i64, now_ms],
    )
    .map_err(write("write a roll-up"))?;
    tx.commit().map_err(write("commit a roll-up"))?;
    Ok(true)
}

/// The figures of the annual filtering review, from roll-ups and config tables only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnualFigures {
    pub from_day: String,
    pub to_day: String,
    /// Days in the range that have roll-ups (days the resolver ran).
    pub days_rolled_up: u64,
    pub totals: Vec<DecisionCount>,
    pub by_month: Vec<MonthCount>,
    pub by_group: Vec<GroupCount>,
    /// Categorised queries (blocked, and any other decision that carried a category).
    pub by_category: Vec<CategoryCount>,
    /// The most blocked names, summed over each day's top 20 per group (so a
    /// name blocked a little every day but never in a day's top 20 is missed).
    pub top_blocked: Vec<NameCount>,
    /// Distinct client identities per day, averaged over days with traffic.
    pub devices_per_day_average: f64,
    pub devices_busiest_day: u64,
    /// Entries in the device table now.
    pub registered_devices: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionCount {
    pub decision: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonthCount {
    /// `YYYY-MM`.
    pub month: String,
    pub decision: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupCount {
    /// Empty for queries from no group (refused outsiders).
    pub group: String,
    pub decision: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub category: String,
    pub decision: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameCount {
    pub name: String,
    pub count: u64,
}

/// How many names [`AnnualFigures::top_blocked`] lists.
pub const TOP_BLOCKED_IN_REVIEW: usize = 50;

/// The review figures for the days `from_day..=to_day` (`YYYY-MM-DD`, UTC).
pub fn annual_review(db: &Path, from_day: &str, to_day: &str) -> Result<AnnualFigures, StoreError> {
    let (Some(from), Some(to)) = (parse_day(from_day), parse_day(to_day)) else {
        return Err(StoreError::Invalid(format!("{from_day:?} or {to_day:?} is not a date (YYYY-MM-DD)")));
    };
    if from > to {
        return Err(StoreError::Invalid(format!("the review starts ({from_day}) after it ends ({to_day})")));
    }
    let (from, to) = (day_string(from), day_string(to));
    let conn = schema::open(db, Purpose::Read)?;
    let read = |action| StoreError::sqlite(db, action);
    let triples = |sql: &str| -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut statement = conn.prepare(sql).map_err(read("read the roll-ups"))?;
        let rows = statement
            .query_map([&from, &to], |row| Ok((row.get(0)?, row.get(1)?, row.get::<_, i64>(2)? as u64)))
            .map_err(read("read the roll-ups"))?;
        rows.collect::<Result<_, _>>().map_err(read("read the roll-ups"))
    };
    let totals = triples(
        "SELECT decision, '', sum(count) FROM daily_counts WHERE day BETWEEN ?1 AND ?2 GROUP BY decision ORDER BY 3 DESC",
    )?
    .into_iter()
    .map(|(decision, _, count)| DecisionCount { decision, count })
    .collect();
    let by_month = triples(
        "SELECT substr(day, 1, 7), decision, sum(count) FROM daily_counts WHERE day BETWEEN ?1 AND ?2 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )?
    .into_iter()
    .map(|(month, decision, count)| MonthCount { month, decision, count })
    .collect();
    let by_group = triples(
        "SELECT group_name, decision, sum(count) FROM daily_counts WHERE day BETWEEN ?1 AND ?2 \
         GROUP BY 1, 2 ORDER BY 1, 2",
    )?
    .into_iter()
    .map(|(group, decision, count)| GroupCount { group, decision, count })
    .collect();
    let by_category = triples(
        "SELECT category, decision, sum(count) FROM daily_counts WHERE day BETWEEN ?1 AND ?2 AND category != '' \
         GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
    )?
    .into_iter()
    .map(|(category, decision, count)| CategoryCount { category, decision, count })
    .collect();
    let top_blocked = triples(&format!(
        "SELECT name, '', sum(count) FROM daily_top_blocked WHERE day BETWEEN ?1 AND ?2 \
         GROUP BY name ORDER BY 3 DESC, 1 LIMIT {TOP_BLOCKED_IN_REVIEW}"
    ))?
    .into_iter()
    .map(|(name, _, count)| NameCount { name, count })
    .collect();
    let (average, busiest): (Option<f64>, Option<i64>) = conn
        .query_row(
            "SELECT avg(distinct_devices), max(distinct_devices) FROM daily_devices \
             WHERE day BETWEEN ?1 AND ?2 AND distinct_devices > 0",
            [&from, &to],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(read("read the roll-ups"))?;
    let days_rolled_up: i64 = conn
        .query_row("SELECT count(*) FROM rollup_days WHERE day BETWEEN ?1 AND ?2", [&from, &to], |row| row.get(0))
        .map_err(read("read the roll-ups"))?;
    let registered_devices: i64 =
        conn.query_row("SELECT count(*) FROM devices", [], |row| row.get(0)).map_err(read("read the device table"))?;
    Ok(AnnualFigures {
        from_day: from,
        to_day: to,
        days_rolled_up: days_rolled_up as u64,
        totals,
        by_month,
        by_group,
        by_category,
        top_blocked,
        devices_per_day_average: average.unwrap_or(0.0),
        devices_busiest_day: busiest.unwrap_or(0) as u64,
        registered_devices: registered_devices as u64,
    })
}
