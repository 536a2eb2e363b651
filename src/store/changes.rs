//! The change-control log: every policy change with who, when, what,
//! old -> new and why, and the config file text last recorded (so a hand
//! edit of the file is noticed and recorded, never silently taken in).
//!
//! Every write is on a short-lived `synchronous=FULL` connection, like the
//! device table: a change recorded has reached the disk.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};

/// A change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChange {
    pub time_ms: i64,
    /// Who made it: a dashboard user, "(file)" for a hand edit, "hedgerow" for a lapse.
    pub user: String,
    /// What kind: "category", "safesearch", "youtube", "bypass", "block-answer",
    /// "override-add", "override-remove", "schedule-add", "schedule-remove",
    /// "file-edit", "lapse".
    pub kind: String,
    pub group: Option<String>,
    /// What changed, in words ("games for pupil").
    pub subject: String,
    pub old: String,
    pub new: String,
    pub reason: String,
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub id: i64,
    pub time_ms: i64,
    pub user: String,
    pub kind: String,
    pub group: Option<String>,
    pub subject: String,
    pub old: String,
    pub new: String,
    pub reason: String,
}

/// Which changes to list; every filter is optional. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// From this instant, inclusive.
    pub from_ms: Option<i64>,
    /// Before this instant.
    pub to_ms: Option<i64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    /// At most this many rows (0: no limit).
    pub limit: usize,
    pub offset: usize,
}

impl ChangeFilter {
    fn where_clause(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = Vec::new();
        let mut values = Vec::new();
        if let Some(from) = self.from_ms {
            clauses.push("time_ms >= ?");
            values.push(Value::Integer(from));
        }
        if let Some(to) = self.to_ms {
            clauses.push("time_ms < ?");
            values.push(Value::Integer(to));
        }
        for (column, value) in [("user_name", &self.user), ("group_name", &self.group), ("kind", &self.kind)] {
            if let Some(value) = value {
                clauses.push(match column {
                    "user_name" => "user_name = ?",
                    "group_name" => "group_name = ?",
                    _ => "kind = ?",
                });
                values.push(Value::Text(value.clone()));
            }
        }
        let clause = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        (clause, values)
    }
}

/// The change log in the database `database`.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    database: PathBuf,
}

/// The columns [`read_change`] reads, in its order.
const COLUMNS: &str = "id, time_ms, user_name, kind, group_name, subject, old_value, new_value, reason";

/// One change_log row selected with [`COLUMNS`].
fn read_change(row: &rusqlite::Row<'_>) -> rusqlite::Result<Change> {
    Ok(Change {
        id: row.get(0)?,
        time_ms: row.get(1)?,
        user: row.get(2)?,
        kind: row.get(3)?,
        group: row.get(4)?,
        subject: row.get(5)?,
        old: row.get(6)?,
        new: row.get(7)?,
        reason: row.get(8)?,
    })
}

impl ChangeLog {
    /// Opens (creating and migrating when needed) the database.
    pub fn open(database: &Path) -> Result<ChangeLog, StoreError> {
        drop(schema::open(database, Purpose::Config)?);
        Ok(ChangeLog { database: database.to_path_buf() })
    }

    /// Records `change` and `config_text` as the config last recorded, in
    /// one transaction that is on disk when this returns.
    pub fn record(&self, change: &NewChange, config_text: &str) -> Result<Change, StoreError> {
        self.write(change, Some(config_text))
    }

    /// Records a change without touching the config snapshot (a lapse).
    pub fn record_only(&self, change: &NewChange) -> Result<Change, StoreError> {
        self.write(change, None)
    }

    /// Sets the config text last recorded, with no change row (the first
    /// start, when there is nothing to compare with).
    pub fn set_snapshot(&self, time_ms: i64, config_text: &str) -> Result<(), StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        conn.execute(
            "INSERT INTO config_snapshots (id, time_ms, config_text) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET time_ms = excluded.time_ms, config_text = excluded.config_text",
            params![time_ms, config_text],
        )
        .map_err(StoreError::sqlite(db, "save the config snapshot"))?;
        Ok(())
    }

    fn write(&self, change: &NewChange, config_text: Option<&str>) -> Result<Change, StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        tx.execute(
            "INSERT INTO change_log (time_ms, user_name, kind, group_name, subject, old_value, new_value, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                change.time_ms,
                change.user,
                change.kind,
                change.group,
                change.subject,
                change.old,
                change.new,
                change.reason
            ],
        )
        .map_err(StoreError::sqlite(db, "record the change"))?;
        let id = tx.last_insert_rowid();
        if let Some(text) = config_text {
            tx.execute(
                "INSERT INTO config_snapshots (id, time_ms, config_text) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET time_ms = excluded.time_ms, config_text = excluded.config_text",
                params![change.time_ms, text],
            )
            .map_err(StoreError::sqlite(db, "save the config snapshot"))?;
        }
        tx.commit().map_err(StoreError::sqlite(db, "save the change"))?;
        Ok(Change {
            id,
            time_ms: change.time_ms,
            user: change.user.clone(),
            kind: change.kind.clone(),
            group: change.group.clone(),
            subject: change.subject.clone(),
            old: change.old.clone(),
            new: change.new.clone(),
            reason: change.reason.clone(),
        })
    }

    /// The changes `filter` selects, newest first.
    pub fn search(&self, filter: &ChangeFilter) -> Result<Vec<Change>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let (clause, mut values) = filter.where_clause();
        let limit = if filter.limit == 0 { -1 } else { filter.limit as i64 };
        values.push(rusqlite::types::Value::Integer(limit));
        values.push(rusqlite::types::Value::Integer(filter.offset as i64));
        let sql = format!("SELECT {COLUMNS} FROM change_log{clause} ORDER BY time_ms DESC, id DESC LIMIT ? OFFSET ?");
        let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "search the change log"))?;
        let rows = statement
            .query_map(params_from_iter(values), read_change)
            .map_err(StoreError::sqlite(db, "search the change log"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::sqlite(db, "read the change log"))
    }

    /// The change numbered `id`, if any.
    pub fn get(&self, id: i64) -> Result<Option<Change>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(&format!("SELECT {COLUMNS} FROM change_log WHERE id = ?1"), params![id], read_change)
            .optional()
            .map_err(StoreError::sqlite(db, "read the change log"))
    }

    /// How many changes `filter` selects (limit and offset ignored).
    pub fn count(&self, filter: &ChangeFilter) -> Result<u64, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let (clause, values) = filter.where_clause();
        let count: i64 = conn
            .query_row(&format!("SELECT COUNT(*) FROM change_log{clause}"), params_from_iter(values), |row| row.get(0))
            .map_err(StoreError::sqlite(db, "count the change log"))?;
        Ok(count as u64)
    }

    /// The config file text last recorded, if any.
    pub fn last_config_text(&self) -> Result<Option<String>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row("SELECT config_text FROM config_snapshots WHERE id = 1", [], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "read the config snapshot"))
    }

    /// Whether a change of `kind` for `group` about `subject` whose old
    /// value is `old` is already recorded (one lapse row per override).
    pub fn has(&self, kind: &str, group: &str, subject: &str, old: &str) -> Result<bool, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(
            "SELECT 1 FROM change_log WHERE kind = ?1 AND group_name = ?2 AND subject = ?3 AND old_value = ?4 LIMIT 1",
            params![kind, group, subject, old],
            |_| Ok(()),
        )
        .optional()
        .map(|found| found.is_some())
        .map_err(StoreError::sqlite(db, "search the change log"))
    }
}
