//! Server-side dashboard sessions.
//!
//! The browser holds a raw session id (32 random bytes as hex, URL-safe);
//! the table holds only its SHA-256, so a copy of the database opens no
//! session. Each session has its own CSRF token for forms.
//!
//! A session ends when it has been idle too long, when it is older than the
//! absolute limit, when its user is disabled, on logout ([`Sessions::delete`])
//! and when the user's password is set ([`Sessions::delete_for_user`]; the
//! user store does this itself). `last_seen` is written at most once a
//! minute, so a page's many requests cost one write at most.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::StoreError;
use super::users::{User, begin, connect, random_token, token_hash, user_by};

/// `last_seen_ms` is rewritten only when it is at least this old.
pub const TOUCH_EVERY_MS: i64 = 60_000;

/// A session just made: the raw id goes in the cookie, never in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub raw_id: String,
    pub csrf_token: String,
}

/// A live session and its (enabled) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf_token: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// The client address the session was made from.
    pub address: String,
}

/// The sessions table of one database.
#[derive(Debug, Clone)]
pub struct Sessions {
    database: PathBuf,
}

impl Sessions {
    /// The sessions of `database`, creating it or bringing its schema up to date.
    pub fn open(database: &Path) -> Result<Sessions, StoreError> {
        connect(database)?;
        Ok(Sessions { database: database.to_path_buf() })
    }

    /// Starts a session for `user_id` made from `address`.
    pub fn create(&self, user_id: i64, address: &str, now_ms: i64) -> Result<NewSession, StoreError> {
        let session = NewSession { raw_id: random_token(), csrf_token: random_token() };
        let conn = connect(&self.database)?;
        conn.execute(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_ms, last_seen_ms, address)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![token_hash(&session.raw_id), user_id, session.csrf_token, now_ms, address],
        )
        .map_err(StoreError::sqlite(&self.database, "save the session"))?;
        Ok(session)
    }

    /// The live session with this raw id. A session idle for more than
    /// `idle_ms`, older than `absolute_ms`, or whose user is disabled or gone
    /// is deleted and `None` is returned. Marks the session seen (at most
    /// once a minute).
    pub fn lookup(
        &self,
        raw_id: &str,
        now_ms: i64,
        idle_ms: i64,
        absolute_ms: i64,
    ) -> Result<Option<Session>, StoreError> {
        let id_hash = token_hash(raw_id);
        let mut conn = connect(&self.database)?;
        let found: Option<(i64, String, i64, i64, String)> = conn
            .query_row(
                "SELECT user_id, csrf_token, created_ms, last_seen_ms, address FROM sessions WHERE id_hash = ?1",
                [&id_hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
            )
            .optional()
            .map_err(StoreError::sqlite(&self.database, "read the session"))?;
        let Some((user_id, csrf_token, created_ms, last_seen_ms, address)) = found else {
            return Ok(None);
        };
        let user = user_by(&conn, &self.database, "id = ?1", &user_id)?;
        let expired = now_ms.saturating_sub(last_seen_ms) > idle_ms || now_ms.saturating_sub(created_ms) > absolute_ms;
        let user = match user {
            Some(user) if !user.disabled && !expired => user,
            _ => {
                conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [&id_hash])
                    .map_err(StoreError::sqlite(&self.database, "end the session"))?;
                return Ok(None);
            }
        };
        let mut session = Session { user, csrf_token, created_ms, last_seen_ms, address };
        if now_ms.saturating_sub(last_seen_ms) >= TOUCH_EVERY_MS {
            let tx = begin(&mut conn, &self.database)?;
            tx.execute("UPDATE sessions SET last_seen_ms = ?1 WHERE id_hash = ?2", params![now_ms, id_hash])
                .map_err(StoreError::sqlite(&self.database, "mark the session seen"))?;
            tx.commit().map_err(StoreError::sqlite(&self.database, "mark the session seen"))?;
            session.last_seen_ms = now_ms;
        }
        Ok(Some(session))
    }

    /// Ends the session with this raw id (logout); false if there was none.
    pub fn delete(&self, raw_id: &str) -> Result<bool, StoreError> {
        let conn = connect(&self.database)?;
        let deleted = conn
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [token_hash(raw_id)])
            .map_err(StoreError::sqlite(&self.database, "end the session"))?;
        Ok(deleted > 0)
    }

    /// Ends every session of a user; returns how many there were.
    pub fn delete_for_user(&self, user_id: i64) -> Result<usize, StoreError> {
        let conn = connect(&self.database)?;
        conn.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])
            .map_err(StoreError::sqlite(&self.database, "end the user's sessions"))
    }

    /// Deletes every session past its idle or absolute limit; returns how
    /// many (a tidy-up: [`Sessions::lookup`] never returns them anyway).
    pub fn delete_expired(&self, now_ms: i64, idle_ms: i64, absolute_ms: i64) -> Result<usize, StoreError> {
        let conn = connect(&self.database)?;
        conn.execute(
            "DELETE FROM sessions WHERE last_seen_ms < ?1 OR created_ms < ?2",
            params![now_ms.saturating_sub(idle_ms), now_ms.saturating_sub(absolute_ms)],
        )
        .map_err(StoreError::sqlite(&self.database, "end expired sessions"))
    }

    /// How many sessions a user has.
    pub fn count_for_user(&self, user_id: i64) -> Result<u64, StoreError> {
        let conn = connect(&self.database)?;
        conn.query_row("SELECT count(*) FROM sessions WHERE user_id = ?1", [user_id], |row| row.get::<_, i64>(0))
            .map(|count| count as u64)
            .map_err(StoreError::sqlite(&self.database, "count the user's sessions"))
    }
}
