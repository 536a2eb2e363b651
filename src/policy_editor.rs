//! Policy changes made while the server runs (the dashboard's): each one is
//! written into the config file (the one source of truth), recorded in the
//! change log, and put in force by the whole-policy reload, in that order
//! and one at a time, so a change acknowledged survives a crash the next
//! moment and no change is lost or silently undone by a hand edit:
//!
//! 1. read the config file; if it differs from the text last recorded (a
//!    hand edit), record that first as a `file-edit` with its line diff;
//! 2. [`edit::apply`] (the new text, checked by the config compiler), and the
//!    new allow overrides checked against the locked categories' names;
//! 3. write it with [`files::write_atomically`] (file and folder fsynced);
//! 4. record the change with the new text as the snapshot (`synchronous=FULL`);
//! 5. the whole reload (the server's, handed in by `serve`).
//!
//! The editor holds the server's reload lock, so an edit and a reload
//! (SIGHUP, `hedgerow reload`, the policy clock) never interleave.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crate::config::edit::{self, EditError, PolicyEdit};
use crate::config::{Config, OverrideEntry};
use crate::files;
use crate::store::StoreError;
use crate::store::changes::{Change, ChangeLog, NewChange};

/// The user a hand edit of the config file is recorded as.
pub const FILE_USER: &str = "(file)";
/// The user a lapse is recorded as.
pub const SERVER_USER: &str = "hedgerow";

/// The server's whole reload, run with its lock already held.
pub type ReloadFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;
/// Checks a new configuration against what is loaded (its allow overrides
/// against the locked categories' names in the lists in use).
pub type CheckFn = Arc<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Applies policy edits to a running server's config file.
pub struct PolicyEditor {
    config_path: PathBuf,
    database: PathBuf,
    /// The server's reload lock: edits and reloads one at a time.
    lock: Arc<tokio::sync::Mutex<()>>,
    reload: ReloadFn,
    check: CheckFn,
}

impl PolicyEditor {
    /// The editor for a server started from `config`: `None` when it was not
    /// started from a file, or the file or its folder cannot be written.
    pub fn for_server(
        config: &Config,
        lock: Arc<tokio::sync::Mutex<()>>,
        reload: ReloadFn,
        check: CheckFn,
    ) -> Option<PolicyEditor> {
        let path = config.file.clone()?;
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !writable(&path) || !writable(&folder) {
            tracing::warn!(file = %path.display(), "the config file cannot be written: policy changes from the dashboard are off");
            return None;
        }
        Some(PolicyEditor { config_path: path, database: config.log.database.clone(), lock, reload, check })
    }

    /// The config file edits are written to.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The change log the edits are recorded in.
    pub fn change_log(&self) -> Result<ChangeLog, StoreError> {
        ChangeLog::open(&self.database)
    }

    /// Writes `edit` into the config file, records it as made by `user`
    /// for `reason`, and puts it in force. A refused edit changes neither
    /// the file nor the policy.
    pub async fn apply(&self, edit: PolicyEdit, user: &str, reason: &str) -> Result<Change, EditError> {
        let reason = reason.trim().to_string();
        if reason.is_empty() {
            return Err(EditError {
                field: Some("reason"),
                message: "say why this change is made; the reason is kept in the change log".to_string(),
            });
        }
        let _one_at_a_time = self.lock.lock().await;
        let check = self.check.clone();
        let (path, database, user) = (self.config_path.clone(), self.database.clone(), user.to_string());
        let change = tokio::task::spawn_blocking(move || -> Result<Change, EditError> {
            let failed = |what: &str, error: &dyn std::fmt::Display| EditError {
                field: None,
                message: format!("cannot {what} ({error}); nothing was changed"),
            };
            let text = std::fs::read_to_string(&path).map_err(|error| failed("read the config file", &error))?;
            notice_file_edit(&path, &database, Some(&text)).map_err(|error| failed("read the change log", &error))?;
            let file_name = path.display().to_string();
            let edited = edit::apply(&text, &file_name, &edit)?;
            let config = Config::parse(&edited.text, &file_name)
                .map_err(|error| EditError { field: None, message: error.to_string() })?;
            check(&config).map_err(|error| EditError { field: Some("name"), message: error.to_string() })?;
            files::write_atomically(&path, |file| file.write_all(edited.text.as_bytes()))
                .map_err(|error| failed("write the config file", &error))?;
            let change = NewChange {
                time_ms: crate::time::now_ms(),
                user,
                kind: edited.kind.to_string(),
                group: edited.group,
                subject: edited.subject,
                old: edited.old,
                new: edited.new,
                reason,
            };
            let recorded = ChangeLog::open(&database).and_then(|log| log.record(&change, &edited.text));
            recorded.or_else(|error| {
                // A change not recorded is not made: the file is put back as
                // it was (a full disk under the database is the usual cause).
                let why = if error.is_disk_full() {
                    "the disk holding the database is full, so the change cannot be recorded in the change log"
                        .to_string()
                } else {
                    format!("the change cannot be recorded in the change log ({error})")
                };
                match files::write_atomically(&path, |file| file.write_all(text.as_bytes())) {
                    Ok(()) => Err(EditError { field: None, message: format!("{why}; nothing was changed") }),
                    Err(restore) => Err(EditError {
                        field: None,
                        message: format!(
                            "{why}, and the config file could not be put back ({restore}): the change is in the \
                             file but not in force; the next reload or restart puts it in force as a hand edit"
                        ),
                    }),
                }
            })
        })
        .await
        .map_err(|error| EditError { field: None, message: format!("the edit failed ({error})") })??;
        (self.reload)().await.map_err(|error| EditError {
            field: None,
            message: format!("the change is saved and recorded, but could not be put in force yet: {error}"),
        })?;
        Ok(change)
    }
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access only reads the NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

/// Compares the config file (its `text` when already read) with the text
/// last recorded in the change log at `database`. A difference is recorded
/// as a `file-edit` by "(file)" with the line diff as its new value, and the
/// file's text becomes the snapshot; with no snapshot yet, the text becomes
/// the first one (no change row). Returns the change recorded, if any.
pub fn notice_file_edit(path: &Path, database: &Path, text: Option<&str>) -> Result<Option<Change>, StoreError> {
    let read;
    let text = match text {
        Some(text) => text,
        None => {
            read = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                action: "read the config file",
                source,
            })?;
            &read
        }
    };
    let log = ChangeLog::open(database)?;
    let now = crate::time::now_ms();
    let Some(last) = log.last_config_text()? else {
        log.set_snapshot(now, text)?;
        return Ok(None);
    };
    if last == text {
        return Ok(None);
    }
    let diff = similar::TextDiff::from_lines(last.as_str(), text)
        .unified_diff()
        .context_radius(1)
        .header("as last recorded", "as now")
        .to_string();
    let change = NewChange {
        time_ms: now,
        user: FILE_USER.to_string(),
        kind: "file-edit".to_string(),
        group: None,
        subject: path.display().to_string(),
        old: "the file as last recorded".to_string(),
        new: diff,
        reason: "edited by hand".to_string(),
    };
    tracing::info!(file = %path.display(), "the config file was edited by hand; recorded in the change log");
    log.record(&change, text).map(Some)
}

/// Records a `lapse` by "hedgerow" for each of `lapsed` not recorded yet.
pub fn record_lapses(config: &Config, lapsed: &[OverrideEntry]) -> Result<usize, StoreError> {
    let log = ChangeLog::open(&config.log.database)?;
    let mut recorded = 0;
    for entry in lapsed {
        let Some(until) = entry.until_ms else { continue };
        let subject = format!("{} {} for {}", entry.kind.key(), entry.rule, entry.group);
        let old = config.override_words(entry.kind, Some(until), &entry.reason);
        if log.has("lapse", &entry.group, &subject, &old)? {
            continue;
        }
        log.record_only(&NewChange {
            time_ms: crate::time::now_ms(),
            user: SERVER_USER.to_string(),
            kind: "lapse".to_string(),
            group: Some(entry.group.clone()),
            subject,
            old,
            new: "lapsed (no longer in force; still in the file until removed)".to_string(),
            reason: format!("expired at {}", config.local_time_text(until)),
        })?;
        recorded += 1;
    }
    Ok(recorded)
}
