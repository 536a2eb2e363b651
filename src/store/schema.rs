//! Opening the database: numbered migrations, the schema version check and
//! the per-connection settings of each kind of use.
//!
//! Migrations live in `src/store/migrations/NNNN_name.sql` and are applied in
//! order, each in its own transaction that also sets `PRAGMA user_version`.
//! A released migration is never edited (a unit test pins their checksums):
//! change the schema by adding the next file. A database whose version is
//! newer than this binary knows is refused, never downgraded.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::StoreError;

/// One schema step.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order; `version` is the position plus one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_init", sql: include_str!("migrations/0001_init.sql") },
    Migration {
        version: 2,
        name: "0002_name_hours_by_hour",
        sql: include_str!("migrations/0002_name_hours_by_hour.sql"),
    },
    Migration {
        version: 3,
        name: "0003_query_log_stage_reason",
        sql: include_str!("migrations/0003_query_log_stage_reason.sql"),
    },
    Migration { version: 4, name: "0004_users_sessions", sql: include_str!("migrations/0004_users_sessions.sql") },
    Migration { version: 5, name: "0005_change_log", sql: include_str!("migrations/0005_change_log.sql") },
    Migration { version: 6, name: "0006_log_blocks", sql: include_str!("migrations/0006_log_blocks.sql") },
    Migration { version: 7, name: "0007_device_audit", sql: include_str!("migrations/0007_device_audit.sql") },
    Migration { version: 8, name: "0008_alerts", sql: include_str!("migrations/0008_alerts.sql") },
    Migration { version: 9, name: "0009_review", sql: include_str!("migrations/0009_review.sql") },
    Migration {
        version: 10,
        name: "0010_blocked_counted_at_seal",
        sql: include_str!("migrations/0010_blocked_counted_at_seal.sql"),
    },
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How long a connection waits for another's write lock before giving up.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection is for; decides its durability and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Configuration state (devices, later users and policy): every commit is
    /// on disk before it returns (`synchronous=FULL`).
    Config,
    /// The query-log writer: `synchronous=NORMAL` (WAL), so a process crash
    /// loses nothing committed and a power cut at most the last moments.
    Log,
    /// Roll-ups and retention: like the writer.
    Maintenance,
    /// Searches and reports: `query_only`, and the file must already exist.
    Read,
}

/// Opens `path` for `purpose`, creating it (mode 0600: it holds personal data)
/// and applying pending migrations.
pub(crate) fn open(path: &Path, purpose: Purpose) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    if purpose == Purpose::Read {
        if !path.exists() {
            return Err(StoreError::Missing { path: path.to_path_buf() });
        }
    } else {
        create_private(path)?;
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(StoreError::sqlite(path, "open the database"))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(StoreError::sqlite(path, "set the busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(StoreError::sqlite(path, "switch the database to WAL mode (is it a Hedgerow database?)"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Invalid(format!(
            "{}: the database stays in {mode} journal mode, not WAL; is it on a network file system?",
            path.display()
        )));
    }
    let synchronous = if purpose == Purpose::Config { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous).map_err(StoreError::sqlite(path, "set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", true).map_err(StoreError::sqlite(path, "enable foreign keys"))?;
    migrate(&mut conn, path)?;
    if purpose != Purpose::Read {
        // A schema-5 query log is converted by the first writable open.
        super::upgrade::upgrade(&mut conn, path)?;
    }
    if purpose == Purpose::Read {
        conn.pragma_update(None, "query_only", true)
            .map_err(StoreError::sqlite(path, "make the connection read-only"))?;
    }
    Ok(conn)
}

/// Brings the schema of `conn` up to [`SCHEMA_VERSION`]; a no-op when it is there.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = user_version(conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: path.to_path_buf(), found, known: SCHEMA_VERSION });
    }
    for migration in MIGRATIONS.iter().filter(|migration| migration.version > found) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite(path, "start a schema migration"))?;
        // Another process may have migrated while this one waited for the lock.
        let now = user_version(&tx, path)?;
        if now > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: path.to_path_buf(), found: now, known: SCHEMA_VERSION });
        }
        if now >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            action: "apply a schema migration",
            source,
        })?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(StoreError::sqlite(path, "record the schema version"))?;
        tx.commit().map_err(StoreError::sqlite(path, "commit a schema migration"))?;
        tracing::info!(db = %path.display(), migration = migration.name, "applied schema migration");
    }
    Ok(())
}

/// The schema version recorded in the file (0 for a new file).
pub fn user_version(conn: &Connection, path: &Path) -> Result<u32, StoreError> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(StoreError::sqlite(path, "read the schema version (is it a Hedgerow database?)"))
}

/// Creates an empty file readable by its owner only, unless it exists.
/// SQLite gives the `-wal` and `-shm` files the same permissions.
fn create_private(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
            path: parent.to_path_buf(),
            action: "create the database directory",
            source,
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), action: "create the database", source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a of a migration's text.
    fn checksum(text: &str) -> u64 {
        text.bytes()
            .filter(|&byte| byte != b'\r')
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)), "{}", migration.name);
        }
    }

    /// A released migration must never change: databases in schools have
    /// already applied it. If this fails, undo the edit and add a new
    /// migration instead; append the new file's checksum here.
    #[test]
    fn released_migrations_are_unchanged() {
        let pinned: &[u64] = &[
            PINNED_0001,
            PINNED_0002,
            PINNED_0003,
            PINNED_0004,
            PINNED_0005,
            PINNED_0006,
            PINNED_0007,
            PINNED_0008,
            PINNED_0009,
            PINNED_0010,
        ];
        let found: Vec<u64> = MIGRATIONS.iter().map(|migration| checksum(migration.sql)).collect();
        assert_eq!(&found[..pinned.len()], pinned, "a released migration was edited");
    }

    const PINNED_0001: u64 = 0xf729fa549007dbe2;
    const PINNED_0002: u64 = 0x5ec25d3d6716abbd;
    const PINNED_0003: u64 = 0xed0fe62a489e9a36;
    const PINNED_0004: u64 = 0x890517c032cd4db5;
    const PINNED_0005: u64 = 0x73032288251e432e;
    const PINNED_0006: u64 = 0x9d7254f66c6614bc;
    const PINNED_0007: u64 = 0x32290b26383867fa;
    const PINNED_0008: u64 = 0x86fdaa74d01257e0;
    const PINNED_0009: u64 = 0x385dd26d6129cc0e;
    const PINNED_0010: u64 = 0xde2d93f8cde775ec;

    #[test]
    fn a_fresh_database_gets_every_migration_and_reopening_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/hedgerow.db");
        let conn = open(&path, Purpose::Config).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), SCHEMA_VERSION);
        drop(conn);
        let conn = open(&path, Purpose::Read).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), SCHEMA_VERSION);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    /// A database a school made with the first release (schema 1) is brought
    /// up to date in place, and keeps what it held.
    #[test]
    fn a_version_1_database_migrates_and_keeps_its_name_sightings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 1; INSERT INTO name_hours (rname, hour) VALUES ('com.example', 490000);",
            )
            .unwrap();
        }
        // A read-only open migrates but leaves the old query log to the
        // first writable open (store::upgrade), which drops `name_hours`.
        let conn = open(&path, Purpose::Read).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), SCHEMA_VERSION);
        let kept: (i64, String) =
            conn.query_row("SELECT hour, rname FROM name_hours", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap();
        assert_eq!(kept, (490000, "com.example".to_string()));
        // The primary key now leads with the hour.
        let first_key: String = conn
            .query_row("SELECT name FROM pragma_table_info('name_hours') WHERE pk = 1", [], |row| row.get(0))
            .unwrap();
        assert_eq!(first_key, "hour");
    }

    #[test]
    fn reading_a_missing_database_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let error = open(&dir.path().join("none.db"), Purpose::Read).unwrap_err();
        assert!(matches!(error, StoreError::Missing { .. }), "{error}");
    }
}
