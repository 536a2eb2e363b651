//! The annual filtering review (issue 15): the review of one academic year
//! and the actions it agreed ([`ReviewStore`], tables `reviews` and
//! `review_actions`), and the counts the review page reads from the other
//! issue-15 tables (unblock requests, self-test runs, manual checks) and the
//! daily roll-ups.
//!
//! A complete review is a signed-off record: every write here first checks
//! the review's state in the same transaction and refuses with
//! [`ReviewError::Complete`]; the migration's triggers refuse the same
//! change from any other writer, SQL included.
//!
//! Every figure is a count (or a time). Nothing here returns a requested
//! name, a client or a device name: the page built from it is a governor's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::checks::ChecksStore;
use super::schema::{self, Purpose};

/// What a complete review's refusal says (the triggers' words too).
pub const COMPLETE_MESSAGE: &str = "this review is complete and cannot be changed";

/// Why a change to a review was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The review is signed off.
    #[error("the {0} review was marked complete, so it is a signed-off record and cannot be changed")]
    Complete(String),
    /// No such action in this review.
    #[error("there is no such action in this review (it may have been removed); reload the page")]
    NoSuchAction,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One agreed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewAction {
    pub id: i64,
    pub position: i64,
    pub action: String,
    pub owner: String,
    /// `YYYY-MM-DD`.
    pub due: String,
}

/// The review of one academic year, draft or complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// `YYYY-MM-DD`, the year's first day.
    pub year_start: String,
    pub year_end: String,
    /// Who took part, one per line.
    pub participants: String,
    /// Limitation id -> what the school does about it.
    pub limitations: BTreeMap<String, String>,
    pub notes: String,
    /// `YYYY-MM-DD` or "".
    pub next_review: String,
    pub complete: bool,
    pub updated_by: String,
    pub updated_ms: i64,
    pub completed_by: Option<String>,
    pub completed_ms: Option<i64>,
    /// The review as signed off (JSON), once complete.
    pub snapshot: Option<String>,
    pub actions: Vec<ReviewAction>,
}

impl Review {
    /// A review not yet saved: empty.
    pub fn empty(year_start: &str, year_end: &str) -> Review {
        Review {
            year_start: year_start.to_string(),
            year_end: year_end.to_string(),
            participants: String::new(),
            limitations: BTreeMap::new(),
            notes: String::new(),
            next_review: String::new(),
            complete: false,
            updated_by: String::new(),
            updated_ms: 0,
            completed_by: None,
            completed_ms: None,
            snapshot: None,
            actions: Vec::new(),
        }
    }
}

/// The meeting's form: everything but the actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewForm {
    pub participants: String,
    pub limitations: BTreeMap<String, String>,
    pub notes: String,
    pub next_review: String,
}

/// The reviews of one database.
#[derive(Debug, Clone)]
pub struct ReviewStore {
    database: PathBuf,
}

const REVIEW_COLUMNS: &str = "year_start, year_end, participants, limitations, notes, next_review, state, updated_by, \
                              updated_ms, completed_by, completed_ms, snapshot";

fn review_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Review> {
    let limitations: String = row.get(3)?;
    let state: String = row.get(6)?;
    Ok(Review {
        year_start: row.get(0)?,
        year_end: row.get(1)?,
        participants: row.get(2)?,
        limitations: serde_json::from_str(&limitations).unwrap_or_default(),
        notes: row.get(4)?,
        next_review: row.get(5)?,
        complete: state == "complete",
        updated_by: row.get(7)?,
        updated_ms: row.get(8)?,
        completed_by: row.get(9)?,
        completed_ms: row.get(10)?,
        snapshot: row.get(11)?,
        actions: Vec::new(),
    })
}

fn read_review(conn: &Connection, year_start: &str) -> rusqlite::Result<Option<Review>> {
    let found = conn
        .query_row(&format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE year_start = ?1"), [year_start], review_row)
        .optional()?;
    let Some(mut review) = found else { return Ok(None) };
    let mut statement = conn.prepare(
        "SELECT id, position, action, owner, due FROM review_actions WHERE year_start = ?1 ORDER BY position, id",
    )?;
    review.actions = statement
        .query_map([year_start], |row| {
            Ok(ReviewAction {
                id: row.get(0)?,
                position: row.get(1)?,
                action: row.get(2)?,
                owner: row.get(3)?,
                due: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(review))
}

impl ReviewStore {
    /// The reviews in `database`, creating its tables when missing.
    pub fn open(database: &Path) -> Result<ReviewStore, StoreError> {
        drop(schema::open(database, Purpose::Config)?);
        Ok(ReviewStore { database: database.to_path_buf() })
    }

    /// The review of the year starting `year_start`, if one was saved.
    pub fn get(&self, year_start: &str) -> Result<Option<Review>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        read_review(&conn, year_start).map_err(StoreError::sqlite(db, "read a review"))
    }

    /// The first days of the years that have a review, newest first.
    pub fn years(&self) -> Result<Vec<String>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let mut statement = conn
            .prepare("SELECT year_start FROM reviews ORDER BY year_start DESC")
            .map_err(StoreError::sqlite(db, "list the reviews"))?;
        let rows = statement.query_map([], |row| row.get(0)).map_err(StoreError::sqlite(db, "list the reviews"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "list the reviews"))
    }

    /// Runs `change` on the draft of `year_start` (created when missing) in
    /// one immediate transaction; refuses a complete review before writing.
    fn change<T>(
        &self,
        year_start: &str,
        year_end: &str,
        by: &str,
        now_ms: i64,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, ReviewError>,
    ) -> Result<T, ReviewError> {
        let db = &self.database;
        let write = |action| StoreError::sqlite(db, action);
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(write("start a review change"))?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM reviews WHERE year_start = ?1", [year_start], |row| row.get(0))
            .optional()
            .map_err(write("read a review"))?;
        match state.as_deref() {
            Some("complete") => return Err(ReviewError::Complete(academic_year_label(year_start))),
            Some(_) => {}
            None => {
                tx.execute("INSERT INTO reviews (year_start, year_end) VALUES (?1, ?2)", [year_start, year_end])
                    .map_err(write("start a review"))?;
            }
        }
        tx.execute(
            "UPDATE reviews SET updated_by = ?2, updated_ms = ?3 WHERE year_start = ?1",
            params![year_start, by, now_ms],
        )
        .map_err(write("save a review"))?;
        let out = change(&tx)?;
        tx.commit().map_err(write("save a review"))?;
        Ok(out)
    }

    /// Saves the meeting's form into the draft.
    pub fn save(
        &self,
        year_start: &str,
        year_end: &str,
        form: &ReviewForm,
        by: &str,
        now_ms: i64,
    ) -> Result<(), ReviewError> {
        let db = self.database.clone();
        let limitations = serde_json::to_string(&form.limitations).unwrap_or_else(|_| "{}".to_string());
        self.change(year_start, year_end, by, now_ms, |tx| {
            tx.execute(
                "UPDATE reviews SET participants = ?2, limitations = ?3, notes = ?4, next_review = ?5 \
                 WHERE year_start = ?1",
                params![year_start, form.participants, limitations, form.notes, form.next_review],
            )
            .map_err(StoreError::sqlite(&db, "save a review"))?;
            Ok(())
        })
    }

    /// Adds an action at the end of the list; its id.
    #[allow(clippy::too_many_arguments)]
    pub fn add_action(
        &self,
        year_start: &str,
        year_end: &str,
        action: &str,
        owner: &str,
        due: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<i64, ReviewError> {
        let db = self.database.clone();
        self.change(year_start, year_end, by, now_ms, |tx| {
            let write = |action| StoreError::sqlite(&db, action);
            let next: i64 = tx
                .query_row(
                    "SELECT coalesce(max(position), 0) + 1 FROM review_actions WHERE year_start = ?1",
                    [year_start],
                    |row| row.get(0),
                )
                .map_err(write("add an action"))?;
            tx.execute(
                "INSERT INTO review_actions (year_start, position, action, owner, due) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![year_start, next, action, owner, due],
            )
            .map_err(write("add an action"))?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Changes one action.
    #[allow(clippy::too_many_arguments)]
    pub fn edit_action(
        &self,
        year_start: &str,
        id: i64,
        action: &str,
        owner: &str,
        due: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<(), ReviewError> {
        let db = self.database.clone();
        let year_end = self.year_end_of(year_start)?;
        self.change(year_start, &year_end, by, now_ms, |tx| {
            let changed = tx
                .execute(
                    "UPDATE review_actions SET action = ?3, owner = ?4, due = ?5 WHERE year_start = ?1 AND id = ?2",
                    params![year_start, id, action, owner, due],
                )
                .map_err(StoreError::sqlite(&db, "change an action"))?;
            if changed == 0 { Err(ReviewError::NoSuchAction) } else { Ok(()) }
        })
    }

    /// Removes one action.
    pub fn remove_action(&self, year_start: &str, id: i64, by: &str, now_ms: i64) -> Result<(), ReviewError> {
        let db = self.database.clone();
        let year_end = self.year_end_of(year_start)?;
        self.change(year_start, &year_end, by, now_ms, |tx| {
            let changed = tx
                .execute("DELETE FROM review_actions WHERE year_start = ?1 AND id = ?2", params![year_start, id])
                .map_err(StoreError::sqlite(&db, "remove an action"))?;
            if changed == 0 { Err(ReviewError::NoSuchAction) } else { Ok(()) }
        })
    }

    /// Marks the review complete with `snapshot` (the review as shown, JSON):
    /// from then on it is a signed-off record.
    pub fn complete(
        &self,
        year_start: &str,
        year_end: &str,
        by: &str,
        snapshot: &str,
        now_ms: i64,
    ) -> Result<(), ReviewError> {
        let db = self.database.clone();
        self.change(year_start, year_end, by, now_ms, |tx| {
            tx.execute(
                "UPDATE reviews SET state = 'complete', completed_by = ?2, completed_ms = ?3, snapshot = ?4 \
                 WHERE year_start = ?1",
                params![year_start, by, now_ms, snapshot],
            )
            .map_err(StoreError::sqlite(&db, "complete a review"))?;
            Ok(())
        })
    }

    /// A saved review's last day (for changes to an action, which exists
    /// only in a saved review); a missing review has no actions.
    fn year_end_of(&self, year_start: &str) -> Result<String, ReviewError> {
        match self.get(year_start)? {
            Some(review) => Ok(review.year_end),
            None => Err(ReviewError::NoSuchAction),
        }
    }
}

/// "2025-26" for a year starting on `2025-09-01`.
pub fn academic_year_label(year_start: &str) -> String {
    let first: i32 = year_start.get(..4).and_then(|year| year.parse().ok()).unwrap_or(0);
    format!("{first}-{:02}", (first + 1) % 100)
}

// ---------------------------------------------------------------- the figures

/// Blocked, SafeSearch and bypass lookups of one month, group and category
/// (from the daily roll-ups).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthCell {
    /// `YYYY-MM`.
    pub month: String,
    pub group: String,
    pub category: String,
    /// "blocked", "safesearch" or "bypass".
    pub decision: String,
    pub count: u64,
}

/// The roll-ups' blocked, SafeSearch and bypass counts for the days
/// `from_day..=to_day`, by month, group and category.
pub fn month_cells(db: &Path, from_day: &str, to_day: &str) -> Result<Vec<MonthCell>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let read = StoreError::sqlite(db, "read the roll-ups");
    let mut statement = conn
        .prepare(
            "SELECT substr(day, 1, 7), group_name, category, decision, sum(count) FROM daily_counts \
             WHERE day BETWEEN ?1 AND ?2 AND decision IN ('blocked', 'safesearch', 'bypass') \
             GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
        )
        .map_err(StoreError::sqlite(db, "read the roll-ups"))?;
    let rows = statement
        .query_map([from_day, to_day], |row| {
            Ok(MonthCell {
                month: row.get(0)?,
                group: row.get(1)?,
                category: row.get(2)?,
                decision: row.get(3)?,
                count: row.get::<_, i64>(4)? as u64,
            })
        })
        .map_err(StoreError::sqlite(db, "read the roll-ups"))?;
    rows.collect::<Result<_, _>>().map_err(read)
}

/// The academic years (first calendar year) that have roll-ups, a review,
/// a request, a check or a self-test run, newest first. Days and times are
/// taken in UTC (a year's edge is a day either way).
pub fn data_years(db: &Path) -> Result<Vec<i16>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let sql = "SELECT DISTINCT y FROM (
            SELECT CAST(substr(day, 1, 4) AS INTEGER) - (substr(day, 6, 2) < '09') AS y FROM rollup_days
            UNION SELECT CAST(substr(year_start, 1, 4) AS INTEGER) FROM reviews
            UNION SELECT CAST(strftime('%Y', created_ms / 1000, 'unixepoch') AS INTEGER)
                         - (strftime('%m', created_ms / 1000, 'unixepoch') < '09') FROM unblock_requests
            UNION SELECT CAST(strftime('%Y', checked_ms / 1000, 'unixepoch') AS INTEGER)
                         - (strftime('%m', checked_ms / 1000, 'unixepoch') < '09') FROM manual_checks
            UNION SELECT CAST(strftime('%Y', started_ms / 1000, 'unixepoch') AS INTEGER)
                         - (strftime('%m', started_ms / 1000, 'unixepoch') < '09') FROM selftest_runs
        ) ORDER BY y DESC";
    let mut statement = conn.prepare(sql).map_err(StoreError::sqlite(db, "list the years"))?;
    let rows = statement.query_map([], |row| row.get::<_, i64>(0)).map_err(StoreError::sqlite(db, "list the years"))?;
    let years: Vec<i64> = rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "list the years"))?;
    Ok(years.into_iter().filter_map(|year| i16::try_from(year).ok()).collect())
}

/// One manual check as the review lists it: without the device (a device
/// name is not for governors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRow {
    pub checked_ms: i64,
    pub checked_by: String,
    pub network: String,
    pub group: String,
    pub tested: String,
    /// "as-expected" or "problem".
    pub outcome: String,
    pub result: String,
    pub action: String,
}

/// Manual checks done in `[from_ms, to_ms)`, oldest first, without their
/// device.
pub fn manual_checks(db: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<CheckRow>, StoreError> {
    let checks = ChecksStore::open(db)?.manual_between(from_ms, to_ms)?;
    Ok(checks
        .into_iter()
        .map(|manual| {
            let check = manual.check;
            CheckRow {
                checked_ms: check.checked_ms,
                checked_by: check.checked_by,
                network: check.network,
                group: check.group,
                tested: check.tested,
                outcome: check.outcome.as_str().to_string(),
                result: check.result,
                action: check.action,
            }
        })
        .collect())
}

/// Self-test runs of one month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestMonth {
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub runs: u64,
    /// Runs with a failure or an error.
    pub failed_runs: u64,
    pub checks: u64,
    pub failures: u64,
}

/// The self-test's history in a period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestFigures {
    pub runs: u64,
    pub failed_runs: u64,
    pub checks: u64,
    pub failures: u64,
    pub last_run_ms: Option<i64>,
    /// The last run found every check as the policy says.
    pub last_run_passed: Option<bool>,
    pub months: Vec<SelftestMonth>,
}

/// Self-test runs started in `[from_ms, to_ms)`, by UTC month.
pub fn selftest_figures(db: &Path, from_ms: i64, to_ms: i64) -> Result<SelftestFigures, StoreError> {
    let runs = ChecksStore::open(db)?.runs_between(from_ms, to_ms)?;
    let mut months: BTreeMap<String, SelftestMonth> = BTreeMap::new();
    for run in &runs {
        let month = crate::time::format_utc(run.started_ms)[..7].to_string();
        let line = months.entry(month.clone()).or_insert_with(|| SelftestMonth { month, ..SelftestMonth::default() });
        line.runs += 1;
        line.failed_runs += u64::from(!run.passed());
        line.checks += run.checks.max(0) as u64;
        line.failures += run.failures.max(0) as u64;
    }
    let months: Vec<SelftestMonth> = months.into_values().collect();
    let last = runs.last();
    Ok(SelftestFigures {
        runs: months.iter().map(|month| month.runs).sum(),
        failed_runs: months.iter().map(|month| month.failed_runs).sum(),
        checks: months.iter().map(|month| month.checks).sum(),
        failures: months.iter().map(|month| month.failures).sum(),
        last_run_ms: last.map(|run| run.started_ms),
        last_run_passed: last.map(|run| run.passed()),
        months,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_is_saved_and_a_complete_review_refuses_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hedgerow.db");
        let store = ReviewStore::open(&db).unwrap();
        let (start, end) = ("2025-09-01", "2026-08-31");
        assert_eq!(store.get(start).unwrap(), None);
        let mut form = ReviewForm { participants: "Gill, governor".into(), ..Default::default() };
        form.limitations.insert("urls".into(), "we teach it".into());
        store.save(start, end, &form, "dee", 1).unwrap();
        let id = store.add_action(start, end, "Buy the IWF list", "Ian", "2026-01-31", "dee", 2).unwrap();
        let second = store.add_action(start, end, "Train staff", "Dee", "2026-02-28", "dee", 3).unwrap();
        store.edit_action(start, id, "Buy the IWF and CTIRU lists", "Ian", "2026-01-31", "ann", 4).unwrap();
        store.remove_action(start, second, "ann", 5).unwrap();
        assert!(matches!(store.remove_action(start, second, "ann", 5), Err(ReviewError::NoSuchAction)));
        let review = store.get(start).unwrap().unwrap();
        assert_eq!(review.participants, "Gill, governor");
        assert_eq!(review.limitations["urls"], "we teach it");
        assert_eq!(review.actions.len(), 1);
        assert_eq!(review.actions[0].action, "Buy the IWF and CTIRU lists");
        assert_eq!((review.updated_by.as_str(), review.updated_ms), ("ann", 5));

        store.complete(start, end, "ann", "{\"x\":1}", 6).unwrap();
        let done = store.get(start).unwrap().unwrap();
        assert!(done.complete);
        assert_eq!((done.completed_by.as_deref(), done.completed_ms), (Some("ann"), Some(6)));
        assert_eq!(done.snapshot.as_deref(), Some("{\"x\":1}"));
        assert!(matches!(store.save(start, end, &ReviewForm::default(), "dee", 7), Err(ReviewError::Complete(_))));
        assert!(matches!(
            store.add_action(start, end, "a", "b", "2026-01-01", "dee", 7),
            Err(ReviewError::Complete(_))
        ));
        assert!(matches!(
            store.edit_action(start, id, "a", "b", "2026-01-01", "dee", 7),
            Err(ReviewError::Complete(_))
        ));
        assert!(matches!(store.remove_action(start, id, "dee", 7), Err(ReviewError::Complete(_))));
        assert!(matches!(store.complete(start, end, "dee", "{}", 7), Err(ReviewError::Complete(_))));
        assert_eq!(store.get(start).unwrap().unwrap(), done);
        assert_eq!(store.years().unwrap(), vec![start.to_string()]);
        assert_eq!(academic_year_label(start), "2025-26");
    }
}
