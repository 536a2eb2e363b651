//! Daily roll-ups, retention of raw rows, and the annual review figures.
//!
//! A UTC day is rolled up once it is complete (plus [`ROLLUP_GRACE_MS`] for
//! the writer's last batch): its raw rows are read in a snapshot (no lock the
//! writer waits for) and the sums written in one short transaction that also
//! records the day in `rollup_days`, so re-running never counts a day twice.
//! Rows that arrive for a day after it was rolled up (a clock step back) stay
//! out of its roll-up.
//!
//! Retention deletes raw rows older than `retention_days`, but never rows of
//! a day not yet rolled up, in transactions of [`DELETE_BATCH`] rows with a
//! pause between them, so the writer waits for at most one small delete.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};
use super::time::{DAY_MS, day_number, day_string, now_ms, parse_day};
use super::writer::HOUR_MS;

/// How long after midnight (UTC) a day counts as complete.
pub const ROLLUP_GRACE_MS: i64 = 10 * 60 * 1000;
/// Names kept per day and group in `daily_top_blocked`.
pub const TOP_BLOCKED_PER_DAY: usize = 20;
/// Raw rows deleted per transaction.
pub const DELETE_BATCH: usize = 5_000;
/// The pause between delete transactions.
const DELETE_PAUSE: Duration = Duration::from_millis(20);
/// How often [`spawn_retention`] runs.
pub const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

/// What one retention run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub days_rolled_up: usize,
    pub rows_deleted: u64,
    /// Raw rows before this time (UTC Unix ms) are gone.
    pub deleted_before_ms: i64,
}

/// Rolls up every complete day that has raw rows and no roll-up yet.
/// Returns the number of days rolled up.
pub fn roll_up(db: &Path, now_ms: i64) -> Result<usize, StoreError> {
    let mut conn = schema::open(db, Purpose::Maintenance)?;
    let last_complete = day_number(now_ms - ROLLUP_GRACE_MS) - 1;
    let mut rolled = 0;
    let mut cursor = i64::MIN;
    while let Some(day) = next_day_with_rows(&conn, db, cursor)? {
        if day > last_complete {
            break;
        }
        if !is_rolled_up(&conn, db, day)? && roll_up_day(&mut conn, db, day, now_ms)? {
            rolled += 1;
        }
        cursor = (day + 1) * DAY_MS;
    }
    Ok(rolled)
}

/// Rolls up complete days, then deletes raw rows older than `retention_days`
/// (1..=365) in small transactions. Safe to run while the writer runs.
pub fn run_retention(db: &Path, retention_days: u32, now_ms: i64) -> Result<RetentionReport, StoreError> {
    if !(1..=365).contains(&retention_days) {
        return Err(StoreError::Invalid(format!("retention_days is {retention_days}; it must be from 1 to 365")));
    }
    let days_rolled_up = roll_up(db, now_ms)?;
    let conn = schema::open(db, Purpose::Maintenance)?;
    let mut cutoff = now_ms - i64::from(retention_days) * DAY_MS;
    // Never delete what no roll-up has counted.
    let mut cursor = i64::MIN;
    while let Some(day) = next_day_with_rows(&conn, db, cursor)? {
        if day * DAY_MS >= cutoff {
            break;
        }
        if !is_rolled_up(&conn, db, day)? {
            cutoff = day * DAY_MS;
            break;
        }
        cursor = (day + 1) * DAY_MS;
    }
    let rows_deleted = delete_in_batches(
        &conn,
        db,
        "DELETE FROM query_log WHERE id IN (SELECT id FROM query_log WHERE time_ms < ?1 \
         AND id < (SELECT max(id) FROM query_log) ORDER BY time_ms LIMIT ?2)",
        cutoff,
    )?;
    // The hour and day sightings of what is gone.
    delete_in_batches(
        &conn,
        db,
        "DELETE FROM name_hours WHERE (hour, rname) IN \
         (SELECT hour, rname FROM name_hours WHERE hour < ?1 LIMIT ?2)",
        cutoff.div_euclid(HOUR_MS),
    )?;
    delete_in_batches(
        &conn,
        db,
        "DELETE FROM client_labels WHERE (day, client, device, owner) IN \
         (SELECT day, client, device, owner FROM client_labels WHERE day < ?1 LIMIT ?2)",
        cutoff.div_euclid(DAY_MS),
    )?;
    // Keep the planner's statistics fresh (bounded work).
    conn.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize;")
        .map_err(StoreError::sqlite(db, "update the query planner's statistics"))?;
    Ok(RetentionReport { days_rolled_up, rows_deleted, deleted_before_ms: cutoff })
}

/// Runs `sql` (a DELETE of at most `?2` rows older than `?1`) until it
/// deletes fewer than [`DELETE_BATCH`], pausing between transactions so the
/// writer is never kept waiting long. Returns the rows deleted.
fn delete_in_batches(conn: &Connection, db: &Path, sql: &str, before: i64) -> Result<u64, StoreError> {
    let mut deleted_total = 0;
    loop {
        let deleted = conn
            .execute(sql, params![before, DELETE_BATCH as i64])
            .map_err(StoreError::sqlite(db, "delete old query-log rows"))?;
        deleted_total += deleted as u64;
        if deleted < DELETE_BATCH {
            return Ok(deleted_total);
        }
        std::thread::sleep(DELETE_PAUSE);
    }
}

/// Starts a daemon thread that runs [`run_retention`] at once and then every
/// hour, logging what it did; it runs until the process exits (its handle
/// never finishes). Failures are logged and retried at the next run.
pub fn spawn_retention(db: PathBuf, retention_days: u32) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("hedgerow-retention".into())
        .spawn(move || {
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

/// The first day at or after `from_ms` that has raw rows (one index seek).
fn next_day_with_rows(conn: &Connection, db: &Path, from_ms: i64) -> Result<Option<i64>, StoreError> {
    let time: Option<i64> = conn
        .query_row("SELECT min(time_ms) FROM query_log WHERE time_ms >= ?1", [from_ms], |row| row.get(0))
        .map_err(StoreError::sqlite(db, "find the days in the query log"))?;
    Ok(time.map(day_number))
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
    counts: HashMap<(String, String, String), u64>,
    blocked: HashMap<(String, String), u64>,
    clients: HashSet<String>,
}

/// Rolls up one day; false if another process did it first.
fn roll_up_day(conn: &mut Connection, db: &Path, day: i64, now_ms: i64) -> Result<bool, StoreError> {
    let read = StoreError::sqlite(db, "read a day of the query log");
    let mut sums = DaySums::default();
    {
        // A read transaction: one consistent snapshot, no lock the writer waits on.
        let tx = conn.transaction().map_err(StoreError::sqlite(db, "read a day of the query log"))?;
        let mut statement = tx
            .prepare(
                "SELECT coalesce(group_name, ''), coalesce(category, ''), decision, name, client \
                 FROM query_log WHERE time_ms >= ?1 AND time_ms < ?2",
            )
            .map_err(StoreError::sqlite(db, "read a day of the query log"))?;
        let mut rows = statement.query([day * DAY_MS, (day + 1) * DAY_MS]).map_err(read)?;
        while let Some(row) = rows.next().map_err(StoreError::sqlite(db, "read a day of the query log"))? {
            let text = |index| row.get_ref(index).map(|value| value.as_str().unwrap_or_default().to_string());
            let fields = (|| Ok::<_, rusqlite::Error>((text(0)?, text(1)?, text(2)?, text(3)?, text(4)?)))();
            let (group, category, decision, name, client) =
                fields.map_err(StoreError::sqlite(db, "read a day of the query log"))?;
            sums.raw_rows += 1;
            if decision == "blocked" {
                *sums.blocked.entry((group.clone(), name)).or_default() += 1;
            }
            *sums.counts.entry((group, category, decision)).or_default() += 1;
            sums.clients.insert(client);
        }
    }

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
        for ((group, category, decision), count) in &sums.counts {
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
        params![day_text, sums.clients.len() as i64],
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
