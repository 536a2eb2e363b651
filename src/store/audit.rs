//! The login audit: every login, failure, logout and lock-out, and every
//! change to an account (added, password, roles, disabled, enabled, setup),
//! with time, user name and address (`cli` for the command line). Admins
//! read it newest first.

use std::path::{Path, PathBuf};

use rusqlite::params;
use serde::Serialize;

use super::StoreError;
use super::users::connect;

/// What happened to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditEvent {
    Login,
    Failure,
    Logout,
    Lockout,
    /// The first admin made through a setup link.
    Setup,
    Password,
    Roles,
    Disabled,
    Enabled,
    Added,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 10] = [
        AuditEvent::Login,
        AuditEvent::Failure,
        AuditEvent::Logout,
        AuditEvent::Lockout,
        AuditEvent::Setup,
        AuditEvent::Password,
        AuditEvent::Roles,
        AuditEvent::Disabled,
        AuditEvent::Enabled,
        AuditEvent::Added,
    ];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Login => "login",
            AuditEvent::Failure => "failure",
            AuditEvent::Logout => "logout",
            AuditEvent::Lockout => "lockout",
            AuditEvent::Setup => "setup",
            AuditEvent::Password => "password",
            AuditEvent::Roles => "roles",
            AuditEvent::Disabled => "disabled",
            AuditEvent::Enabled => "enabled",
            AuditEvent::Added => "added",
        }
    }

    /// The event a stored word names.
    pub fn parse(word: &str) -> Option<AuditEvent> {
        AuditEvent::ALL.into_iter().find(|event| event.as_str() == word)
    }
}

impl std::fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub time_ms: i64,
    /// As typed at login (an unknown name is recorded as given).
    pub user_name: String,
    pub address: String,
    pub event: AuditEvent,
}

/// The login audit of one database.
#[derive(Debug, Clone)]
pub struct LoginAudit {
    database: PathBuf,
}

impl LoginAudit {
    /// The audit of `database`, creating it or bringing its schema up to date.
    pub fn open(database: &Path) -> Result<LoginAudit, StoreError> {
        connect(database)?;
        Ok(LoginAudit { database: database.to_path_buf() })
    }

    /// Appends one row.
    pub fn record(&self, event: AuditEvent, user_name: &str, address: &str, now_ms: i64) -> Result<(), StoreError> {
        let conn = connect(&self.database)?;
        conn.execute(
            "INSERT INTO login_audit (time_ms, user_name, address, event) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms, user_name, address, event.as_str()],
        )
        .map_err(StoreError::sqlite(&self.database, "record a login audit row"))?;
        Ok(())
    }

    /// Rows newest first (by time, then by order of writing), `offset` rows skipped.
    pub fn list(&self, limit: usize, offset: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = connect(&self.database)?;
        let mut statement = conn
            .prepare(
                "SELECT id, time_ms, user_name, address, event FROM login_audit
                 ORDER BY time_ms DESC, id DESC LIMIT ?1 OFFSET ?2",
            )
            .map_err(StoreError::sqlite(&self.database, "list the login audit"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(params![limit, offset], |row| {
                let word: String = row.get(4)?;
                Ok(AuditEntry {
                    id: row.get(0)?,
                    time_ms: row.get(1)?,
                    user_name: row.get(2)?,
                    address: row.get(3)?,
                    // The table's CHECK admits only known words.
                    event: AuditEvent::parse(&word).unwrap_or(AuditEvent::Failure),
                })
            })
            .map_err(StoreError::sqlite(&self.database, "list the login audit"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(&self.database, "list the login audit"))
    }

    /// How many rows there are.
    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = connect(&self.database)?;
        conn.query_row("SELECT count(*) FROM login_audit", [], |row| row.get::<_, i64>(0))
            .map(|count| count as u64)
            .map_err(StoreError::sqlite(&self.database, "count the login audit"))
    }

    /// Failed logins since `since_ms` for this user name (any case) or, when
    /// given, from this address: for throttling that survives a restart.
    pub fn failures_since(
        &self,
        user_name: Option<&str>,
        address: Option<&str>,
        since_ms: i64,
    ) -> Result<u64, StoreError> {
        let conn = connect(&self.database)?;
        conn.query_row(
            "SELECT count(*) FROM login_audit WHERE event = 'failure' AND time_ms >= ?1
             AND (?2 IS NULL OR user_name = ?2 COLLATE NOCASE) AND (?3 IS NULL OR address = ?3)",
            params![since_ms, user_name, address],
            |row| row.get::<_, i64>(0),
        )
        .map(|count| count as u64)
        .map_err(StoreError::sqlite(&self.database, "count failed logins"))
    }
}
