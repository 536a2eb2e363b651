//! The regular checks (issue 15): the built-in self-test's runs and their
//! results, and the manual checks a DSL or admin records. Tables of
//! migration 0009 (`selftest_runs`, `selftest_results`, `manual_checks`).
//! A run and all its results are written in one transaction; every write is
//! on a short-lived `synchronous=FULL` connection, as for alerts.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::schema::{self, Purpose};

/// What started a self-test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Dashboard,
    Cli,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Dashboard => "dashboard",
            Trigger::Cli => "cli",
            Trigger::Schedule => "schedule",
        }
    }

    pub fn parse(word: &str) -> Option<Trigger> {
        match word {
            "dashboard" => Some(Trigger::Dashboard),
            "cli" => Some(Trigger::Cli),
            "schedule" => Some(Trigger::Schedule),
            _ => None,
        }
    }
}

/// One question of a run: what a group got against what its policy says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestResult {
    pub group: String,
    /// "category", "safesearch" or "bypass".
    pub kind: String,
    /// The category id, the search engine, or the bypass mechanism.
    pub subject: String,
    pub name: String,
    pub expected: String,
    pub got: String,
    pub passed: bool,
}

/// A run, as stored (results apart: [`ChecksStore::results`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelftestRun {
    pub id: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub trigger: Trigger,
    pub user: String,
    pub checks: i64,
    pub failures: i64,
    /// Set when the run could not ask at all.
    pub error: String,
}

impl SelftestRun {
    /// Passed: no failure and no error.
    pub fn passed(&self) -> bool {
        self.failures == 0 && self.error.is_empty()
    }
}

/// A stored run with its results (failures first): what the control
/// socket, the dashboard and the API return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    pub run: SelftestRun,
    pub results: Vec<SelftestResult>,
}

/// The self-test as the running server runs it (`serve::run_selftest`),
/// handed to the control socket and the dashboard: started by `trigger`,
/// for the dashboard user named (empty otherwise); the stored run.
pub type RunFn = std::sync::Arc<
    dyn Fn(Trigger, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<RunReport, String>> + Send>>
        + Send
        + Sync,
>;

/// A run to store: when, who, and every result (or why it could not ask).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub started_ms: i64,
    pub finished_ms: i64,
    pub trigger: Trigger,
    pub user: String,
    pub results: Vec<SelftestResult>,
    pub error: String,
}

impl NewRun {
    pub fn failures(&self) -> usize {
        self.results.iter().filter(|result| !result.passed).count()
    }
}

/// Whether a manual check went as expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    AsExpected,
    Problem,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::AsExpected => "as-expected",
            Outcome::Problem => "problem",
        }
    }

    pub fn parse(word: &str) -> Option<Outcome> {
        match word {
            "as-expected" => Some(Outcome::AsExpected),
            "problem" => Some(Outcome::Problem),
            _ => None,
        }
    }

    /// In words, for pages and exports.
    pub fn words(self) -> &'static str {
        match self {
            Outcome::AsExpected => "as expected",
            Outcome::Problem => "problem",
        }
    }
}

/// A manual check to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewManualCheck {
    pub checked_ms: i64,
    pub checked_by: String,
    pub device: String,
    pub network: String,
    pub group: String,
    pub tested: String,
    pub outcome: Outcome,
    pub result: String,
    pub action: String,
}

/// A manual check as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManualCheck {
    pub id: i64,
    #[serde(flatten)]
    pub check: NewManualCheck,
    pub recorded_by: String,
    pub recorded_ms: i64,
}

/// The checks' tables in the dashboard's database.
#[derive(Debug, Clone)]
pub struct ChecksStore {
    database: PathBuf,
}

const RUN_COLUMNS: &str = "id, started_ms, finished_ms, trigger, user_name, checks, failures, error";

fn read_run(row: &rusqlite::Row<'_>) -> rusqlite::Result<SelftestRun> {
    let trigger: String = row.get(3)?;
    Ok(SelftestRun {
        id: row.get(0)?,
        started_ms: row.get(1)?,
        finished_ms: row.get(2)?,
        trigger: Trigger::parse(&trigger).unwrap_or(Trigger::Cli),
        user: row.get(4)?,
        checks: row.get(5)?,
        failures: row.get(6)?,
        error: row.get(7)?,
    })
}

const MANUAL_COLUMNS: &str = "id, checked_ms, checked_by, device, network, group_name, tested, outcome, result, \
                              action, recorded_by, recorded_ms";

fn read_manual(row: &rusqlite::Row<'_>) -> rusqlite::Result<ManualCheck> {
    let outcome: String = row.get(7)?;
    Ok(ManualCheck {
        id: row.get(0)?,
        check: NewManualCheck {
            checked_ms: row.get(1)?,
            checked_by: row.get(2)?,
            device: row.get(3)?,
            network: row.get(4)?,
            group: row.get(5)?,
            tested: row.get(6)?,
            outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Problem),
            result: row.get(8)?,
            action: row.get(9)?,
        },
        recorded_by: row.get(10)?,
        recorded_ms: row.get(11)?,
    })
}

impl ChecksStore {
    /// Opens (creating and migrating when needed) the database.
    pub fn open(database: &Path) -> Result<ChecksStore, StoreError> {
        drop(schema::open(database, Purpose::Config)?);
        Ok(ChecksStore { database: database.to_path_buf() })
    }

    pub fn database(&self) -> &Path {
        &self.database
    }

    /// Stores a run and all its results in one transaction; returns the run.
    pub fn record_run(&self, run: &NewRun) -> Result<SelftestRun, StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        tx.execute(
            "INSERT INTO selftest_runs (started_ms, finished_ms, trigger, user_name, checks, failures, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run.started_ms,
                run.finished_ms,
                run.trigger.as_str(),
                run.user,
                run.results.len() as i64,
                run.failures() as i64,
                run.error
            ],
        )
        .map_err(StoreError::sqlite(db, "store a self-test run"))?;
        let id = tx.last_insert_rowid();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO selftest_results (run_id, group_name, kind, subject, name, expected, got, passed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(StoreError::sqlite(db, "store a self-test result"))?;
            for result in &run.results {
                insert
                    .execute(params![
                        id,
                        result.group,
                        result.kind,
                        result.subject,
                        result.name,
                        result.expected,
                        result.got,
                        result.passed
                    ])
                    .map_err(StoreError::sqlite(db, "store a self-test result"))?;
            }
        }
        let stored = tx
            .query_row(&format!("SELECT {RUN_COLUMNS} FROM selftest_runs WHERE id = ?1"), [id], read_run)
            .map_err(StoreError::sqlite(db, "read the new run"))?;
        tx.commit().map_err(StoreError::sqlite(db, "save the self-test run"))?;
        Ok(stored)
    }

    /// The newest runs first, at most `limit`.
    pub fn runs(&self, limit: usize) -> Result<Vec<SelftestRun>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let mut statement = conn
            .prepare(&format!("SELECT {RUN_COLUMNS} FROM selftest_runs ORDER BY started_ms DESC, id DESC LIMIT ?1"))
            .map_err(StoreError::sqlite(db, "read self-test runs"))?;
        let rows = statement
            .query_map([limit as i64], read_run)
            .map_err(StoreError::sqlite(db, "read self-test runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite(db, "read self-test runs"))?;
        Ok(rows)
    }

    /// Runs started in `[from_ms, to_ms)`, oldest first (exports, the review).
    pub fn runs_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<SelftestRun>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let mut statement = conn
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM selftest_runs WHERE started_ms >= ?1 AND started_ms < ?2
                 ORDER BY started_ms, id"
            ))
            .map_err(StoreError::sqlite(db, "read self-test runs"))?;
        let rows = statement
            .query_map([from_ms, to_ms], read_run)
            .map_err(StoreError::sqlite(db, "read self-test runs"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite(db, "read self-test runs"))?;
        Ok(rows)
    }

    /// One run.
    pub fn run(&self, id: i64) -> Result<Option<SelftestRun>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        conn.query_row(&format!("SELECT {RUN_COLUMNS} FROM selftest_runs WHERE id = ?1"), [id], read_run)
            .optional()
            .map_err(StoreError::sqlite(db, "read a self-test run"))
    }

    /// A run's results: failures first, then by group, kind and subject.
    pub fn results(&self, run_id: i64) -> Result<Vec<SelftestResult>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let mut statement = conn
            .prepare(
                "SELECT group_name, kind, subject, name, expected, got, passed FROM selftest_results
                 WHERE run_id = ?1 ORDER BY passed, group_name, kind, subject, name",
            )
            .map_err(StoreError::sqlite(db, "read self-test results"))?;
        let rows = statement
            .query_map([run_id], |row| {
                Ok(SelftestResult {
                    group: row.get(0)?,
                    kind: row.get(1)?,
                    subject: row.get(2)?,
                    name: row.get(3)?,
                    expected: row.get(4)?,
                    got: row.get(5)?,
                    passed: row.get(6)?,
                })
            })
            .map_err(StoreError::sqlite(db, "read self-test results"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite(db, "read self-test results"))?;
        Ok(rows)
    }

    /// Records a manual check; returns its id.
    pub fn record_manual(&self, check: &NewManualCheck, recorded_by: &str, now_ms: i64) -> Result<i64, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        conn.execute(
            "INSERT INTO manual_checks (checked_ms, checked_by, device, network, group_name, tested, outcome, result,
                                        action, recorded_by, recorded_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                check.checked_ms,
                check.checked_by,
                check.device,
                check.network,
                check.group,
                check.tested,
                check.outcome.as_str(),
                check.result,
                check.action,
                recorded_by,
                now_ms
            ],
        )
        .map_err(StoreError::sqlite(db, "record a manual check"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Manual checks, newest first, at most `limit`.
    pub fn manual_checks(&self, limit: usize) -> Result<Vec<ManualCheck>, StoreError> {
        self.manual_where("1 = 1 ORDER BY checked_ms DESC, id DESC LIMIT ?1", [limit as i64])
    }

    /// Manual checks done in `[from_ms, to_ms)`, oldest first.
    pub fn manual_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<ManualCheck>, StoreError> {
        self.manual_where("checked_ms >= ?1 AND checked_ms < ?2 ORDER BY checked_ms, id", [from_ms, to_ms])
    }

    fn manual_where(&self, filter: &str, values: impl rusqlite::Params) -> Result<Vec<ManualCheck>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let mut statement = conn
            .prepare(&format!("SELECT {MANUAL_COLUMNS} FROM manual_checks WHERE {filter}"))
            .map_err(StoreError::sqlite(db, "read manual checks"))?;
        let rows = statement
            .query_map(values, read_manual)
            .map_err(StoreError::sqlite(db, "read manual checks"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite(db, "read manual checks"))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(group: &str, passed: bool) -> SelftestResult {
        SelftestResult {
            group: group.into(),
            kind: "category".into(),
            subject: "pornography".into(),
            name: "testfiltering.pornhub.com".into(),
            expected: "blocked".into(),
            got: if passed { "blocked (NXDOMAIN)".into() } else { "allowed".into() },
            passed,
        }
    }

    #[test]
    fn a_run_and_its_results_are_stored_together_failures_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChecksStore::open(&dir.path().join("h.db")).unwrap();
        let run = NewRun {
            started_ms: 1_000,
            finished_ms: 2_000,
            trigger: Trigger::Cli,
            user: String::new(),
            results: vec![result("pupil", true), result("staff", false)],
            error: String::new(),
        };
        let stored = store.record_run(&run).unwrap();
        assert_eq!((stored.checks, stored.failures, stored.passed()), (2, 1, false));
        let results = store.results(stored.id).unwrap();
        assert_eq!(results.len(), 2);
        assert!(!results[0].passed && results[0].group == "staff");
        assert_eq!(store.runs(10).unwrap(), vec![stored.clone()]);
        assert_eq!(store.run(stored.id).unwrap(), Some(stored));
        assert!(store.run(99).unwrap().is_none());
    }

    #[test]
    fn manual_checks_are_kept_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChecksStore::open(&dir.path().join("h.db")).unwrap();
        let check = |at: i64| NewManualCheck {
            checked_ms: at,
            checked_by: "Dee Esel".into(),
            device: "pupil laptop 4".into(),
            network: "pupils".into(),
            group: "pupil".into(),
            tested: "testfiltering.com all tests".into(),
            outcome: Outcome::AsExpected,
            result: "all blocked".into(),
            action: String::new(),
        };
        store.record_manual(&check(10), "dsl", 50).unwrap();
        store.record_manual(&check(20), "dsl", 60).unwrap();
        let listed = store.manual_checks(10).unwrap();
        assert_eq!(listed.iter().map(|c| c.check.checked_ms).collect::<Vec<_>>(), vec![20, 10]);
        assert_eq!(listed[0].recorded_by, "dsl");
        assert_eq!(store.manual_between(0, 15).unwrap().len(), 1);
    }
}
