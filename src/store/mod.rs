//! SQLite storage: the query log and the device table.
//!
//! One database file (WAL mode) holds two kinds of data with different lives:
//!
//! - **Configuration state** (`devices`; dashboard `users`, `sessions`, the
//!   login `audit` and setup tokens; policy changes and alerts later):
//!   written on short-lived connections with `synchronous=FULL`, so a
//!   committed change survives a power cut.
//! - **The query log**: one writer thread ([`log::QueryLog`]) drains a bounded
//!   channel and commits batches (`synchronous=NORMAL`, a checkpoint a
//!   second): a crash of the process loses nothing committed, a power cut at
//!   most the last second, and the DNS path never waits on SQLite. Raw rows
//!   are kept for `retention_days`; daily roll-ups ([`retention`]) are kept for
//!   years and are all the annual review reads.
//!
//! ```text
//! DNS path --record()--> bounded channel --> writer thread --batch txn--> log_fresh (one block per hour)
//!                        (full: drop+count)   attributes client IP -> device (devices table)
//!                                             applies guest privacy
//!                                             interns names, clients, outcomes (dict)
//!                                             adds log_hourly (same txn)
//!                                             seals (slices of) hours -> log_sealed + postings
//!                                               + log_hourly_blocked (seal, same txn)
//! retention thread (hourly): roll_up(complete, sealed UTC days) -> daily_* tables
//!                            then delete whole hours older than retention, one per txn
//! search / tail / annual_review: their own read connections (WAL readers never block the writer)
//! ```
//!
//! Rows are packed into blocks with dictionary ids ([`block`]): about 10
//! bytes a row instead of about 150. Names and outcomes are found through
//! the sealed hours' postings, counts through the hourly roll-ups.
//!
//! The schema is built by numbered migrations in `src/store/migrations/`, never
//! edited once released; `PRAGMA user_version` records how far a file has got
//! ([`schema`]).

pub mod alerts;
pub mod audit;
pub mod block;
pub mod changes;
pub mod checks;
pub mod counts;
pub mod device_history;
pub mod devices;
pub mod leases;
pub mod log;
pub mod privacy;
pub mod read;
pub mod record;
pub mod retention;
pub mod review;
pub mod schema;
pub mod seal;
pub mod search;
pub mod sessions;
pub mod settings;
pub mod unblock;
pub mod user_sync;
pub mod users;
pub use crate::time;

pub mod csv;
mod dict;
mod upgrade;
mod writer;

use std::path::{Path, PathBuf};

pub use audit::{AuditEntry, AuditEvent, LoginAudit};
pub use devices::{Device, ImportReport};
pub use leases::Lease;
pub use log::{LogState, QueryLog};
pub use record::QueryRecord;
pub use search::{LogRow, Search};
pub use sessions::{NewSession, Session, Sessions};
pub use settings::{LogSettings, Privacy};
pub use users::{Role, SetupError, SetupTokens, User, UserError, Users};

/// What went wrong in the store. Each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: cannot {action} ({source})")]
    Sqlite {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path}: this database was written by a newer Hedgerow (schema {found}, this binary knows {known}): upgrade hedgerow or restore a backup"
    )]
    NewerSchema { path: PathBuf, found: u32, known: u32 },
    #[error("{path}: no such database; start `hedgerow serve` once to create it, or check the path")]
    Missing { path: PathBuf },
    #[error("{path}: cannot {action} ({source})")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// True when the disk (or the file system's quota) is full: SQLite's
    /// SQLITE_FULL, or ENOSPC from a file write.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source: rusqlite::Error::SqliteFailure(failure, _), .. } => {
                failure.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }

    pub(crate) fn sqlite(path: &Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + use<> {
        let path = path.to_path_buf();
        move |source| StoreError::Sqlite { path, action, source }
    }
}

/// Whether the server can still write `path` (readiness): its folder and
/// the file exist, the file is not marked read-only (checked by its mode, so
/// it holds for root too), and SQLite opens it for writing and can take the
/// write lock (waiting at most a second for the log writer).
pub fn check_writable(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let folder = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        return Err(format!("the folder of {shown} is gone"));
    }
    let metadata = std::fs::metadata(path).map_err(|error| format!("{shown}: {error}"))?;
    if metadata.permissions().readonly() {
        return Err(format!("{shown} is read-only (chmod u+w it)"));
    }
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|error| format!("{shown}: {error}"))?;
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err(format!("{shown} opens read-only"));
    }
    conn.busy_timeout(std::time::Duration::from_secs(1)).map_err(|error| format!("{shown}: {error}"))?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").map_err(|error| format!("{shown} cannot be written: {error}"))
}
