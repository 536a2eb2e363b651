//! Alerts for the DSL, kept in the database: the incidents (one alert
//! each), the DSL's notes on them, and the outbox of messages to send.
//!
//! An alert and the messages that report it are written in one
//! transaction, so an alert is never raised without its messages nor a
//! message queued for an alert that is not there. Every write is on a
//! short-lived `synchronous=FULL` connection, as for the change log: an
//! acknowledgement the DSL was told was saved survives a power cut.
//!
//! The outbox keeps every message after it is sent or given up; the
//! delivery worker takes the due ones ([`AlertStore::due`]) and records each
//! attempt ([`AlertStore::delivered`], [`AlertStore::attempt_failed`]).

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params, params_from_iter};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};

/// At most this many names tried are kept on an alert.
pub const NAMES_KEPT: usize = 100;

/// A new alert, as the rule engine raises it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewAlert {
    pub rule: String,
    /// "low", "medium" or "high".
    pub severity: String,
    pub category: Option<String>,
    /// The address as the log names it, a guest's pseudonym, or "group:<name>".
    pub client: String,
    pub device: String,
    pub owner: String,
    pub network: String,
    pub group: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub attempts: i64,
    pub names: Vec<String>,
    /// The rule that fired, in words.
    pub summary: String,
}

/// Where an alert is in the DSL's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(word: &str) -> Option<AlertState> {
        match word {
            "open" => Some(AlertState::Open),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: i64,
    pub rule: String,
    pub severity: String,
    /// "" for a bypass attempt or a rise.
    pub category: String,
    pub client: String,
    pub device: String,
    pub owner: String,
    pub network: String,
    pub group: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub attempts: i64,
    pub names: Vec<String>,
    pub summary: String,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
    pub acknowledged_ms: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolved_ms: Option<i64>,
}

/// One entry of the DSL's record on an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertNote {
    pub time_ms: i64,
    pub user: String,
    /// "note", "acknowledged", "resolved" or "reopened".
    pub action: String,
    pub text: String,
}

/// Which alerts to list; every filter is optional. Newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub state: Option<AlertState>,
    pub severity: Option<String>,
    pub category: Option<String>,
    pub group: Option<String>,
    /// The client (address or pseudonym) or the device's name.
    pub device: Option<String>,
    /// First attempt from this instant, inclusive.
    pub from_ms: Option<i64>,
    /// First attempt before this instant.
    pub to_ms: Option<i64>,
    /// At most this many (0: no limit).
    pub limit: usize,
    pub offset: usize,
}

/// One row of the governors' figures: alerts raised in a month, category
/// and severity, and how quickly they were acknowledged. No device, no name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertCount {
    /// The UTC month of the first attempt, "2026-11".
    pub month: String,
    /// "" for bypass attempts and rises.
    pub category: String,
    pub severity: String,
    pub raised: i64,
    pub acknowledged: i64,
    pub resolved: i64,
    /// Mean milliseconds from the alert to its acknowledgement (acknowledged ones only).
    pub mean_ms_to_acknowledge: Option<i64>,
}

/// What channel a message goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    fn parse(word: &str) -> Channel {
        if word == "webhook" { Channel::Webhook } else { Channel::Email }
    }
}

/// A message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub channel: Channel,
    /// "alert", "digest" or "test".
    pub kind: &'static str,
    /// The addresses (e-mail); empty for a webhook.
    pub recipients: Vec<String>,
    pub subject: String,
    /// The text body (e-mail) or the JSON body (webhook).
    pub body: String,
}

/// A queued, sent or given-up message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    pub id: i64,
    pub channel: Channel,
    pub kind: String,
    pub alert_id: Option<i64>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub body: String,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_error: Option<String>,
    /// "pending", "sent" or "failed" (given up).
    pub state: String,
    pub done_ms: Option<i64>,
}

/// The outbox's counts, for the dashboard and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: i64,
    /// Pending messages that have failed at least once (being retried).
    pub retrying: i64,
    pub sent: i64,
    pub failed: i64,
}

/// The alerts in the database `database`.
#[derive(Debug, Clone)]
pub struct AlertStore {
    database: PathBuf,
}

const ALERT_COLUMNS: &str = "id, rule, severity, category, client, device, owner, network, group_name, first_ms, \
     last_ms, attempts, names, summary, state, acknowledged_by, acknowledged_ms, resolved_by, resolved_ms";

fn read_alert(row: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    let names: String = row.get(12)?;
    let state: String = row.get(14)?;
    Ok(Alert {
        id: row.get(0)?,
        rule: row.get(1)?,
        severity: row.get(2)?,
        category: row.get(3)?,
        client: row.get(4)?,
        device: row.get(5)?,
        owner: row.get(6)?,
        network: row.get(7)?,
        group: row.get(8)?,
        first_ms: row.get(9)?,
        last_ms: row.get(10)?,
        attempts: row.get(11)?,
        names: names.lines().map(str::to_string).collect(),
        summary: row.get(13)?,
        state: AlertState::parse(&state).unwrap_or(AlertState::Open),
        acknowledged_by: row.get(15)?,
        acknowledged_ms: row.get(16)?,
        resolved_by: row.get(17)?,
        resolved_ms: row.get(18)?,
    })
}

const OUTBOX_COLUMNS: &str = "id, channel, kind, alert_id, recipients, subject, body, created_ms, attempts, next_ms, \
     last_error, state, done_ms";

fn read_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxMessage> {
    let channel: String = row.get(1)?;
    let recipients: String = row.get(4)?;
    Ok(OutboxMessage {
        id: row.get(0)?,
        channel: Channel::parse(&channel),
        kind: row.get(2)?,
        alert_id: row.get(3)?,
        recipients: recipients.lines().map(str::to_string).collect(),
        subject: row.get(5)?,
        body: row.get(6)?,
        created_ms: row.get(7)?,
        attempts: row.get(8)?,
        next_ms: row.get(9)?,
        last_error: row.get(10)?,
        state: row.get(11)?,
        done_ms: row.get(12)?,
    })
}

fn queue(
    tx: &rusqlite::Connection,
    db: &Path,
    messages: &[NewMessage],
    alert_id: Option<i64>,
    now_ms: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(messages.len());
    for message in messages {
        tx.execute(
            "INSERT INTO alert_outbox (channel, kind, alert_id, recipients, subject, body, created_ms, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                message.channel.as_str(),
                message.kind,
                alert_id,
                message.recipients.join("\n"),
                message.subject,
                message.body,
                now_ms
            ],
        )
        .map_err(StoreError::sqlite(db, "queue an alert message"))?;
        ids.push(tx.last_insert_rowid());
    }
    Ok(ids)
}

impl AlertStore {
    /// Opens (creating and migrating when needed) the database.
    pub fn open(database: &Path) -> Result<AlertStore, StoreError> {
        drop(schema::open(database, Purpose::Config)?);
        Ok(AlertStore { database: database.to_path_buf() })
    }

    pub fn database(&self) -> &Path {
        &self.database
    }

    /// Stores a new alert and queues `messages` about it, in one transaction.
    /// `build` gets the new alert (with its id) and returns the messages.
    pub fn raise(
        &self,
        alert: &NewAlert,
        now_ms: i64,
        build: impl FnOnce(&Alert) -> Vec<NewMessage>,
    ) -> Result<Alert, StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        let names: Vec<&str> = alert.names.iter().take(NAMES_KEPT).map(String::as_str).collect();
        tx.execute(
            "INSERT INTO alerts (rule, severity, category, client, device, owner, network, group_name, first_ms,
                                 last_ms, attempts, names, summary)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                alert.rule,
                alert.severity,
                alert.category.as_deref().unwrap_or(""),
                alert.client,
                alert.device,
                alert.owner,
                alert.network,
                alert.group,
                alert.first_ms,
                alert.last_ms,
                alert.attempts,
                names.join("\n"),
                alert.summary
            ],
        )
        .map_err(StoreError::sqlite(db, "store an alert"))?;
        let id = tx.last_insert_rowid();
        let stored = tx
            .query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id], read_alert)
            .map_err(StoreError::sqlite(db, "read the new alert"))?;
        queue(&tx, db, &build(&stored), Some(id), now_ms)?;
        tx.commit().map_err(StoreError::sqlite(db, "save the alert"))?;
        Ok(stored)
    }

    /// Adds further attempts to an alert: its new last attempt and count,
    /// and names not yet on it (up to [`NAMES_KEPT`]).
    pub fn join(&self, id: i64, last_ms: i64, attempts: i64, names: &[String]) -> Result<(), StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        let kept: Option<String> = tx
            .query_row("SELECT names FROM alerts WHERE id = ?1", [id], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "read an alert's names"))?;
        let Some(kept) = kept else { return Ok(()) };
        let mut all: Vec<String> = kept.lines().map(str::to_string).collect();
        for name in names {
            if all.len() >= NAMES_KEPT {
                break;
            }
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        tx.execute(
            "UPDATE alerts SET last_ms = max(last_ms, ?2), attempts = max(attempts, ?3), names = ?4 WHERE id = ?1",
            params![id, last_ms, attempts, all.join("\n")],
        )
        .map_err(StoreError::sqlite(db, "add attempts to an alert"))?;
        tx.commit().map_err(StoreError::sqlite(db, "save the alert"))?;
        Ok(())
    }

    /// One alert.
    pub fn get(&self, id: i64) -> Result<Option<Alert>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"), [id], read_alert)
            .optional()
            .map_err(StoreError::sqlite(db, "read an alert"))
    }

    /// An alert's record: notes, acknowledgement, resolution, oldest first.
    pub fn notes(&self, id: i64) -> Result<Vec<AlertNote>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(
                "SELECT time_ms, user_name, action, text FROM alert_notes WHERE alert_id = ?1 ORDER BY time_ms, id",
            )
            .map_err(StoreError::sqlite(db, "read an alert's notes"))?;
        let rows = statement
            .query_map([id], |row| {
                Ok(AlertNote { time_ms: row.get(0)?, user: row.get(1)?, action: row.get(2)?, text: row.get(3)? })
            })
            .map_err(StoreError::sqlite(db, "read an alert's notes"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read an alert's notes"))
    }

    fn where_clause(filter: &AlertFilter) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses: Vec<&str> = Vec::new();
        let mut values = Vec::new();
        if let Some(state) = filter.state {
            clauses.push("state = ?");
            values.push(Value::Text(state.as_str().into()));
        }
        if let Some(severity) = &filter.severity {
            clauses.push("severity = ?");
            values.push(Value::Text(severity.clone()));
        }
        if let Some(category) = &filter.category {
            clauses.push("category = ?");
            values.push(Value::Text(category.clone()));
        }
        if let Some(group) = &filter.group {
            clauses.push("group_name = ?");
            values.push(Value::Text(group.clone()));
        }
        if let Some(device) = &filter.device {
            clauses.push("(client = ? OR device = ? COLLATE NOCASE)");
            values.push(Value::Text(device.clone()));
            values.push(Value::Text(device.clone()));
        }
        if let Some(from) = filter.from_ms {
            clauses.push("first_ms >= ?");
            values.push(Value::Integer(from));
        }
        if let Some(to) = filter.to_ms {
            clauses.push("first_ms < ?");
            values.push(Value::Integer(to));
        }
        let clause = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
        (clause, values)
    }

    /// The alerts `filter` selects, newest first.
    pub fn search(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let (clause, mut values) = Self::where_clause(filter);
        values.push(rusqlite::types::Value::Integer(if filter.limit == 0 { -1 } else { filter.limit as i64 }));
        values.push(rusqlite::types::Value::Integer(filter.offset as i64));
        let sql =
            format!("SELECT {ALERT_COLUMNS} FROM alerts{clause} ORDER BY first_ms DESC, id DESC LIMIT ? OFFSET ?");
        let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "search the alerts"))?;
        let rows = statement
            .query_map(params_from_iter(values), read_alert)
            .map_err(StoreError::sqlite(db, "search the alerts"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "search the alerts"))
    }

    /// How many alerts `filter` selects (its limit and offset ignored).
    pub fn count(&self, filter: &AlertFilter) -> Result<i64, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let (clause, values) = Self::where_clause(filter);
        conn.query_row(&format!("SELECT count(*) FROM alerts{clause}"), params_from_iter(values), |row| row.get(0))
            .map_err(StoreError::sqlite(db, "count the alerts"))
    }

    /// Moves an alert to `state` (acknowledged, resolved, or open again),
    /// recording who and when, with `note` (may be empty) in its record.
    /// Returns false when there is no such alert.
    pub fn set_state(
        &self,
        id: i64,
        state: AlertState,
        user: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        // Resolving an alert nobody acknowledged acknowledges it too, so the
        // time to acknowledge is never missing for a handled alert.
        let sql = match state {
            AlertState::Acknowledged => {
                "UPDATE alerts SET state = 'acknowledged', acknowledged_by = coalesce(acknowledged_by, ?2),
                        acknowledged_ms = coalesce(acknowledged_ms, ?3) WHERE id = ?1"
            }
            AlertState::Resolved => {
                "UPDATE alerts SET state = 'resolved', acknowledged_by = coalesce(acknowledged_by, ?2),
                        acknowledged_ms = coalesce(acknowledged_ms, ?3), resolved_by = ?2, resolved_ms = ?3
                 WHERE id = ?1"
            }
            AlertState::Open => {
                "UPDATE alerts SET state = 'open', resolved_by = NULL, resolved_ms = NULL
                 WHERE id = ?1 AND ?2 IS NOT NULL AND ?3 IS NOT NULL"
            }
        };
        let changed = tx.execute(sql, params![id, user, now_ms]).map_err(StoreError::sqlite(db, "update an alert"))?;
        if changed == 0 {
            return Ok(false);
        }
        let action = match state {
            AlertState::Open => "reopened",
            other => other.as_str(),
        };
        tx.execute(
            "INSERT INTO alert_notes (alert_id, time_ms, user_name, action, text) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now_ms, user, action, note],
        )
        .map_err(StoreError::sqlite(db, "record on an alert"))?;
        tx.commit().map_err(StoreError::sqlite(db, "save the alert"))?;
        Ok(true)
    }

    /// Adds a note to an alert's record. Returns false when there is no such alert.
    pub fn add_note(&self, id: i64, user: &str, text: &str, now_ms: i64) -> Result<bool, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let changed = conn
            .execute(
                "INSERT INTO alert_notes (alert_id, time_ms, user_name, action, text)
                 SELECT id, ?2, ?3, 'note', ?4 FROM alerts WHERE id = ?1",
                params![id, now_ms, user, text],
            )
            .map_err(StoreError::sqlite(db, "record a note on an alert"))?;
        Ok(changed == 1)
    }

    /// Alerts whose last attempt is at or after `since_ms` and which are not
    /// resolved: what the rule engine resumes after a restart, so attempts
    /// keep joining the alert they belong to.
    pub fn recent_unresolved(&self, since_ms: i64) -> Result<Vec<Alert>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE last_ms >= ?1 AND state != 'resolved' ORDER BY first_ms"
            ))
            .map_err(StoreError::sqlite(db, "read recent alerts"))?;
        let rows = statement.query_map([since_ms], read_alert).map_err(StoreError::sqlite(db, "read recent alerts"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read recent alerts"))
    }

    /// The governors' figures for alerts first seen in `[from_ms, to_ms)`:
    /// by UTC month, category and severity. Never a device or a name.
    pub fn counts(&self, from_ms: i64, to_ms: i64) -> Result<Vec<AlertCount>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(
                "SELECT strftime('%Y-%m', first_ms / 1000, 'unixepoch') AS month, category, severity, count(*),
                        count(acknowledged_ms), count(resolved_ms),
                        CAST(avg(acknowledged_ms - first_ms) AS INTEGER)
                 FROM alerts WHERE first_ms >= ?1 AND first_ms < ?2
                 GROUP BY month, category, severity ORDER BY month, category, severity",
            )
            .map_err(StoreError::sqlite(db, "count the alerts"))?;
        let rows = statement
            .query_map([from_ms, to_ms], |row| {
                Ok(AlertCount {
                    month: row.get(0)?,
                    category: row.get(1)?,
                    severity: row.get(2)?,
                    raised: row.get(3)?,
                    acknowledged: row.get(4)?,
                    resolved: row.get(5)?,
                    mean_ms_to_acknowledge: row.get(6)?,
                })
            })
            .map_err(StoreError::sqlite(db, "count the alerts"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "count the alerts"))
    }

    /// How many alerts are open, acknowledged and resolved (for `/metrics`).
    pub fn state_counts(&self) -> Result<[i64; 3], StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(
            "SELECT count(*) FILTER (WHERE state = 'open'), count(*) FILTER (WHERE state = 'acknowledged'),
                    count(*) FILTER (WHERE state = 'resolved')
             FROM alerts",
            [],
            |row| Ok([row.get(0)?, row.get(1)?, row.get(2)?]),
        )
        .map_err(StoreError::sqlite(db, "count the alerts"))
    }

    /// Queues messages not about one alert (a digest, a test). Returns their ids.
    pub fn enqueue(&self, messages: &[NewMessage], now_ms: i64) -> Result<Vec<i64>, StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        let ids = queue(&tx, db, messages, None, now_ms)?;
        tx.commit().map_err(StoreError::sqlite(db, "queue messages"))?;
        Ok(ids)
    }

    /// Pending messages due by `now_ms`, oldest first.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE state = 'pending' AND next_ms <= ?1
                 ORDER BY next_ms, id LIMIT ?2"
            ))
            .map_err(StoreError::sqlite(db, "read the outbox"))?;
        let rows = statement
            .query_map(params![now_ms, limit as i64], read_message)
            .map_err(StoreError::sqlite(db, "read the outbox"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the outbox"))
    }

    /// When the next pending message is due, if any.
    pub fn next_due(&self) -> Result<Option<i64>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row("SELECT min(next_ms) FROM alert_outbox WHERE state = 'pending'", [], |row| row.get(0))
            .map_err(StoreError::sqlite(db, "read the outbox"))
    }

    /// Records that message `id` was delivered.
    pub fn delivered(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        conn.execute(
            "UPDATE alert_outbox SET state = 'sent', attempts = attempts + 1, done_ms = ?2, last_error = NULL
             WHERE id = ?1",
            params![id, now_ms],
        )
        .map_err(StoreError::sqlite(db, "record a delivery"))?;
        Ok(())
    }

    /// Records a failed attempt at message `id`: tried again at `retry_at_ms`,
    /// or given up (`None`), with `error` shown in the dashboard either way.
    pub fn attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        match retry_at_ms {
            Some(next) => conn.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![id, next, error],
            ),
            None => conn.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, state = 'failed', done_ms = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, now_ms, error],
            ),
        }
        .map_err(StoreError::sqlite(db, "record a failed delivery"))?;
        Ok(())
    }

    /// Puts a given-up message back in the queue, due now (the dashboard's
    /// "try again"). Returns false when it is not a given-up message.
    pub fn retry(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        let changed = conn
            .execute(
                "UPDATE alert_outbox SET state = 'pending', next_ms = ?2, done_ms = NULL
                 WHERE id = ?1 AND state = 'failed'",
                params![id, now_ms],
            )
            .map_err(StoreError::sqlite(db, "queue a message again"))?;
        Ok(changed == 1)
    }

    /// The outbox, newest first: messages not yet sent (pending and given
    /// up) and the last `sent_limit` sent.
    pub fn outbox(&self, sent_limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE state != 'sent'
                 UNION ALL
                 SELECT * FROM (SELECT {OUTBOX_COLUMNS} FROM alert_outbox WHERE state = 'sent'
                                ORDER BY id DESC LIMIT ?1)
                 ORDER BY id DESC"
            ))
            .map_err(StoreError::sqlite(db, "read the outbox"))?;
        let rows = statement
            .query_map([sent_limit as i64], read_message)
            .map_err(StoreError::sqlite(db, "read the outbox"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the outbox"))
    }

    /// The outbox's counts.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                    count(*) FILTER (WHERE state = 'pending' AND attempts > 0),
                    count(*) FILTER (WHERE state = 'sent'),
                    count(*) FILTER (WHERE state = 'failed')
             FROM alert_outbox",
            [],
            |row| {
                Ok(OutboxCounts { pending: row.get(0)?, retrying: row.get(1)?, sent: row.get(2)?, failed: row.get(3)? })
            },
        )
        .map_err(StoreError::sqlite(db, "count the outbox"))
    }

    /// Up to when the `kind` digest ("daily" or "weekly") last reported.
    pub fn digest_upto(&self, kind: &str) -> Result<Option<i64>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row("SELECT upto_ms FROM alert_digests WHERE kind = ?1", [kind], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "read the digests"))
    }

    /// Queues a digest's messages and records that it reported up to
    /// `upto_ms`, in one transaction (a restart neither repeats nor skips it).
    pub fn queue_digest(
        &self,
        kind: &str,
        upto_ms: i64,
        messages: &[NewMessage],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        queue(&tx, db, messages, None, now_ms)?;
        tx.execute(
            "INSERT INTO alert_digests (kind, upto_ms) VALUES (?1, ?2)
             ON CONFLICT (kind) DO UPDATE SET upto_ms = excluded.upto_ms",
            params![kind, upto_ms],
        )
        .map_err(StoreError::sqlite(db, "record a digest"))?;
        tx.commit().map_err(StoreError::sqlite(db, "queue a digest"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_alert(client: &str, severity: &str, first_ms: i64) -> NewAlert {
        NewAlert {
            rule: "high-risk".into(),
            severity: severity.into(),
            category: Some("self-harm".into()),
            client: client.into(),
            device: "ipad-7".into(),
            owner: "Year 9".into(),
            network: "pupil-wifi".into(),
            group: "pupil".into(),
            first_ms,
            last_ms: first_ms,
            attempts: 1,
            names: vec!["a.example".into()],
            summary: "any attempt at a high-risk category".into(),
        }
    }

    fn email(subject: &str) -> NewMessage {
        NewMessage {
            channel: Channel::Email,
            kind: "alert",
            recipients: vec!["dsl@school.example".into()],
            subject: subject.into(),
            body: "body".into(),
        }
    }

    #[test]
    fn an_alert_is_stored_with_its_messages_and_joined_and_handled() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
        let alert =
            store.raise(&new_alert("10.0.0.5", "high", 1_000), 1_000, |a| vec![email(&format!("#{}", a.id))]).unwrap();
        assert_eq!(alert.state, AlertState::Open);
        let due = store.due(1_000, 10).unwrap();
        assert_eq!((due.len(), due[0].alert_id, due[0].subject.clone()), (1, Some(alert.id), format!("#{}", alert.id)));

        store.join(alert.id, 5_000, 3, &["b.example".into(), "a.example".into()]).unwrap();
        let joined = store.get(alert.id).unwrap().unwrap();
        assert_eq!((joined.last_ms, joined.attempts, joined.names.len()), (5_000, 3, 2));

        assert!(store.set_state(alert.id, AlertState::Acknowledged, "dsl", "", 61_000).unwrap());
        assert!(store.set_state(alert.id, AlertState::Resolved, "dsl2", "Spoke to the pupil", 90_000).unwrap());
        let handled = store.get(alert.id).unwrap().unwrap();
        assert_eq!(handled.acknowledged_by.as_deref(), Some("dsl"));
        assert_eq!((handled.state, handled.resolved_ms), (AlertState::Resolved, Some(90_000)));
        let notes = store.notes(alert.id).unwrap();
        assert_eq!(notes.iter().map(|n| n.action.as_str()).collect::<Vec<_>>(), ["acknowledged", "resolved"]);
        assert!(!store.set_state(999, AlertState::Resolved, "dsl", "", 1).unwrap());

        let counts = store.counts(0, i64::MAX).unwrap();
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].raised, counts[0].mean_ms_to_acknowledge), (1, Some(60_000)));
        assert_eq!(counts[0].month, "1970-01");
    }

    #[test]
    fn filters_pick_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
        for (client, severity, at) in [("10.0.0.5", "high", 1), ("10.0.0.6", "medium", 2), ("10.0.0.5", "medium", 3)] {
            store.raise(&new_alert(client, severity, at), at, |_| Vec::new()).unwrap();
        }
        let medium = AlertFilter { severity: Some("medium".into()), ..AlertFilter::default() };
        assert_eq!(store.count(&medium).unwrap(), 2);
        let device = AlertFilter { device: Some("10.0.0.5".into()), ..AlertFilter::default() };
        assert_eq!(store.search(&device).unwrap().iter().map(|a| a.first_ms).collect::<Vec<_>>(), [3, 1]);
        let by_name = AlertFilter { device: Some("IPAD-7".into()), from_ms: Some(2), ..AlertFilter::default() };
        assert_eq!(store.count(&by_name).unwrap(), 2);
        assert_eq!(store.recent_unresolved(2).unwrap().len(), 2);
    }

    #[test]
    fn failed_deliveries_are_retried_then_given_up_and_can_be_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(&dir.path().join("h.db")).unwrap();
        let ids = store.enqueue(&[email("test")], 100).unwrap();
        store.attempt_failed(ids[0], "connection refused", Some(5_100), 100).unwrap();
        assert!(store.due(1_000, 10).unwrap().is_empty());
        assert_eq!(store.next_due().unwrap(), Some(5_100));
        assert_eq!(store.outbox_counts().unwrap(), OutboxCounts { pending: 1, retrying: 1, sent: 0, failed: 0 });
        store.attempt_failed(ids[0], "connection refused", None, 5_100).unwrap();
        assert_eq!(store.outbox_counts().unwrap().failed, 1);
        assert!(store.retry(ids[0], 6_000).unwrap());
        store.delivered(ids[0], 6_001).unwrap();
        let outbox = store.outbox(10).unwrap();
        assert_eq!((outbox[0].state.as_str(), outbox[0].attempts), ("sent", 3));

        store.queue_digest("daily", 86_400_000, &[email("digest")], 7_000).unwrap();
        assert_eq!(store.digest_upto("daily").unwrap(), Some(86_400_000));
        assert_eq!(store.digest_upto("weekly").unwrap(), None);
    }
}
