//! `hedgerow backup` and `hedgerow restore`: one `.tar.gz` file holding a
//! school's configuration, its lists' declarations and local lists, the last
//! good downloads and a consistent copy of the database, and putting it back
//! into a fresh directory.
//!
//! The archive's entries:
//! - `hedgerow.toml`: the config file as it is;
//! - `lists/...`: every file under `[lists] dir` (the declarations, the
//!   local lists, `safesearch/rewrites.toml`), at its path relative to it (nothing when the
//!   server uses the lists built into the binary: the manifest says so);
//! - `outside/<id>/<file>`: a local `path` source declared outside the lists
//!   folder (restored there; its declaration must be edited to point at it);
//! - `data/<database file>`: the database, copied with `VACUUM INTO` (one
//!   statement in one read transaction: a consistent snapshot while the
//!   server keeps writing; SQLite's step-wise backup API restarts whenever
//!   another process writes the source, which a busy server always does);
//! - `data/downloads/...`: the last good copies of URL sources (without them
//!   a restored server with no internet has no lists);
//! - `manifest.json` (last): format, versions, time, the file list with
//!   sizes and SHA-256.
//!
//! Not in it: the compiled lists (rebuilt from the lists at start), the lock,
//! the control socket, the health file.
//!
//! A restore checks everything (manifest format, each file's size and
//! SHA-256, no unexpected entry, the database's `PRAGMA integrity_check`, the
//! restored config with its lists) in a staging folder beside the target
//! before the target is touched, then renames the staging folder into place.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::policy_files::{Source, lists_sources, safe_relative};

/// The archive format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's entry name (the last entry of the archive).
pub const MANIFEST: &str = "manifest.json";
/// The config's entry name, and its name in a restored directory.
pub const CONFIG: &str = "hedgerow.toml";

/// What an archive holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub hedgerow_version: String,
    /// When the backup was taken (RFC 3339, UTC).
    pub created: String,
    /// The config's `data_dir` as the backed-up server had it.
    pub data_dir: String,
    /// The config file that was backed up.
    pub config_file: String,
    /// The `[lists] dir` that was copied into `lists/`, or `None` when the
    /// server used the lists built into the binary (nothing to copy).
    pub lists_dir: Option<String>,
    /// The database's entry name (`data/<file>`).
    pub database: String,
    /// Things a person should know (built-in lists, sources outside the lists folder).
    pub notes: Vec<String>,
    pub files: Vec<FileEntry>,
}

/// One archived file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// A backup or restore that could not be done, with what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, BackupError> {
    Err(BackupError(message.into()))
}

fn io_fail(path: &Path, doing: &str) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.display().to_string();
    let doing = doing.to_string();
    move |error| BackupError(format!("cannot {doing} {path}: {error}"))
}

/// Writes the backup of the server `config` describes (its file:
/// `config_file`) to `out`, through a temporary file beside it: `out` is the
/// whole archive or is not written. Returns the manifest.
pub fn backup(config: &Config, config_file: &Path, out: &Path) -> Result<Manifest, BackupError> {
    let mut notes = Vec::new();
    for (what, path) in [("data_dir", &config.data_dir), ("[lists] dir", &config.lists.dir)] {
        if path.is_relative() {
            let here = std::env::current_dir().map(|dir| dir.display().to_string()).unwrap_or_default();
            notes.push(format!(
                "{what} {} is relative: it was read from the folder the backup ran in ({here}); the server must \
                 run from the same folder for this to be its data",
                path.display()
            ));
        }
    }
    let mut files = vec![Source { name: CONFIG.into(), path: config_file.to_path_buf() }];
    let lists_dir = lists_sources(config, &mut files, &mut notes).map_err(BackupError)?;

    // The database snapshot, beside `out` (the same filesystem as the archive).
    let database = &config.log.database;
    if !database.is_file() {
        return fail(format!(
            "there is no database at {} (the config's data_dir and [log] database); has the server run with this config?",
            database.display()
        ));
    }
    let db_name = database.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or("hedgerow.db".into());
    let folder = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let snapshot = folder.join(format!(".hedgerow-backup-{}.db.tmp", std::process::id()));
    let _ = std::fs::remove_file(&snapshot);
    let result = (|| {
        snapshot_database(database, &snapshot)?;
        files.push(Source { name: format!("data/{db_name}"), path: snapshot.clone() });
        downloads_sources(&config.data_dir, &mut files)?;
        let manifest = Manifest {
            format: FORMAT,
            hedgerow_version: env!("CARGO_PKG_VERSION").into(),
            created: jiff::Timestamp::now().to_string(),
            data_dir: config.data_dir.display().to_string(),
            config_file: config_file.display().to_string(),
            lists_dir,
            database: format!("data/{db_name}"),
            notes,
            files: Vec::new(),
        };
        write_archive(out, &files, manifest)
    })();
    let _ = std::fs::remove_file(&snapshot);
    result
}

/// The last good downloads and their state files (not the hidden lock).
fn downloads_sources(data_dir: &Path, files: &mut Vec<Source>) -> Result<(), BackupError> {
    let folder = crate::lists::downloads::folder(data_dir);
    let Ok(entries) = std::fs::read_dir(&folder) else { return Ok(()) };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .filter(|path| path.file_name().is_some_and(|name| !name.to_string_lossy().starts_with('.')))
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().expect("a file").to_string_lossy().into_owned();
        files.push(Source { name: format!("data/{}/{name}", crate::lists::downloads::FOLDER), path });
    }
    Ok(())
}

/// A consistent copy of the live database at `to` (`VACUUM INTO`).
fn snapshot_database(database: &Path, to: &Path) -> Result<(), BackupError> {
    use rusqlite::OpenFlags;
    let connection = rusqlite::Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| BackupError(format!("cannot open the database {}: {error}", database.display())))?;
    connection
        .busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|error| BackupError(format!("cannot set up the database connection: {error}")))?;
    connection
        .execute("VACUUM INTO ?1", [to.to_string_lossy().as_ref()])
        .map_err(|error| BackupError(format!("cannot copy the database {}: {error}", database.display())))?;
    Ok(())
}

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    digest: ring::digest::Context,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digest.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(jiff::Timestamp::now().as_second().max(0) as u64);
    header
}

fn write_archive(out: &Path, files: &[Source], mut manifest: Manifest) -> Result<Manifest, BackupError> {
    let written = crate::files::write_atomically(out, |file| {
        // It holds the query log and the users' password hashes: the owner's only.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut archive = tar::Builder::new(gzip);
        for source in files {
            // The size of the file opened: a download replaced by a rename
            // meanwhile does not change what this handle reads.
            let opened = File::open(&source.path)
                .map_err(|error| io::Error::new(error.kind(), format!("{}: {error}", source.path.display())))?;
            let size = opened.metadata()?.len();
            let mut reader = Hashing {
                inner: opened.take(size),
                digest: ring::digest::Context::new(&ring::digest::SHA256),
                bytes: 0,
            };
            archive.append_data(&mut header(size), &source.name, &mut reader)?;
            if reader.bytes != size {
                return Err(io::Error::other(format!("{} changed size while it was read", source.path.display())));
            }
            let digest = reader.digest.finish();
            manifest.files.push(FileEntry { name: source.name.clone(), size, sha256: hex(digest.as_ref()) });
        }
        let text = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?;
        archive.append_data(&mut header(text.len() as u64), MANIFEST, text.as_slice())?;
        archive.into_inner()?.finish()?.flush()?;
        Ok(())
    });
    written.map_err(|error| BackupError(format!("cannot write the backup {}: {error}", out.display())))?;
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// The restored config file (`<into>/hedgerow.toml`).
    pub config: PathBuf,
    /// Where an existing directory was moved (`--force`).
    pub previous: Option<PathBuf>,
}

/// True when a server holds the lock of data folder `dir`.
fn locked(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = File::open(dir.join(crate::control::LOCK_FILE)) else { return false };
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if taken {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    !taken
}

/// Restores `archive` into the directory `into`: `into/hedgerow.toml` (its
/// `data_dir` set to `into/data`, its `[lists] dir` to `into/lists`),
/// `into/lists/`, `into/data/` (database and downloads). Everything is
/// checked in a staging folder beside `into` first; nothing is touched when
/// a check fails. A directory already at `into` is refused unless `force`,
/// and then moved aside (`into.replaced-<time>`), never deleted; it is
/// refused always when a server runs on it.
pub fn restore(archive: &Path, into: &Path, force: bool) -> Result<Restored, BackupError> {
    let into = std::path::absolute(into).map_err(io_fail(into, "find"))?;
    let Some(parent) = into.parent().map(Path::to_path_buf) else {
        return fail("restore into a directory, not the root");
    };
    if !parent.is_dir() {
        return fail(format!("{} does not exist; create it first", parent.display()));
    }
    let check_running = || -> Result<(), BackupError> {
        for data in [into.join("data"), into.clone()] {
            if locked(&data) {
                return fail(format!(
                    "a Hedgerow server is running on {} (it holds {}): stop the server first; a running \
                     server's data is never overwritten",
                    data.display(),
                    crate::control::LOCK_FILE
                ));
            }
        }
        Ok(())
    };
    check_running()?;
    if into.exists() && !force {
        return fail(format!(
            "{} already exists; restore into a new directory, or give --force to move it aside (to {}.replaced-<time>) \
             and restore in its place",
            into.display(),
            into.display()
        ));
    }
    let name = into.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or("hedgerow".into());
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        let manifest = unpack_and_check(archive, &staging)?;
        write_config(&staging, &staging, &manifest)?;
        check_config(&staging.join(CONFIG))?;
        write_config(&staging, &into, &manifest)?;
        // Checked again just before the move: a server may have started meanwhile.
        check_running()?;
        let previous = if into.exists() {
            let aside = parent.join(format!("{name}.replaced-{}", jiff::Timestamp::now().as_second()));
            std::fs::rename(&into, &aside).map_err(io_fail(&into, "move aside"))?;
            Some(aside)
        } else {
            None
        };
        std::fs::rename(&staging, &into).map_err(io_fail(&into, "move the restored files to"))?;
        Ok(Restored { manifest, config: into.join(CONFIG), previous })
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Reads the whole archive into `staging` (a new folder) and checks it
/// against its manifest; returns the manifest.
pub fn unpack_and_check(archive: &Path, staging: &Path) -> Result<Manifest, BackupError> {
    std::fs::create_dir(staging).map_err(io_fail(staging, "create the staging folder"))?;
    let file = File::open(archive).map_err(io_fail(archive, "open the backup"))?;
    let mut reader = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut found: Vec<FileEntry> = Vec::new();
    let mut manifest_text: Option<Vec<u8>> = None;
    let bad = |why: String| BackupError(format!("{} is not a usable Hedgerow backup: {why}", archive.display()));
    let entries = reader.entries().map_err(|error| bad(error.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| bad(error.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad("it holds something other than plain files".into()));
        }
        let path = entry.path().map_err(|error| bad(error.to_string()))?.into_owned();
        if !safe_relative(&path) {
            return Err(bad(format!("an entry has an unsafe name: {}", path.display())));
        }
        let name = path.to_string_lossy().into_owned();
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(|error| bad(error.to_string()))?;
            manifest_text = Some(text);
            continue;
        }
        if found.iter().any(|known| known.name == name) {
            return Err(bad(format!("{name} is in it twice")));
        }
        let target = staging.join(&path);
        if let Some(folder) = target.parent() {
            std::fs::create_dir_all(folder).map_err(io_fail(folder, "create"))?;
        }
        let mut out = File::create(&target).map_err(io_fail(&target, "write"))?;
        let mut hashing =
            Hashing { inner: &mut entry, digest: ring::digest::Context::new(&ring::digest::SHA256), bytes: 0 };
        io::copy(&mut hashing, &mut out).map_err(|error| bad(format!("{name}: {error}")))?;
        out.sync_all().map_err(io_fail(&target, "write"))?;
        found.push(FileEntry { name, size: hashing.bytes, sha256: hex(hashing.digest.finish().as_ref()) });
    }
    let text = manifest_text.ok_or_else(|| bad(format!("it has no {MANIFEST}")))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|error| bad(format!("its {MANIFEST} cannot be read: {error}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "its format is {} and this Hedgerow ({}) reads format {FORMAT}",
            manifest.format,
            env!("CARGO_PKG_VERSION")
        )));
    }
    for listed in &manifest.files {
        match found.iter().find(|entry| entry.name == listed.name) {
            None => return Err(bad(format!("{} is listed but missing", listed.name))),
            Some(entry) if entry != listed => {
                return Err(bad(format!(
                    "{} does not match its checksum (damaged or altered): {} bytes sha256 {}, the manifest says {} \
                     bytes sha256 {}",
                    listed.name, entry.size, entry.sha256, listed.size, listed.sha256
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.iter().find(|entry| !manifest.files.iter().any(|listed| listed.name == entry.name)) {
        return Err(bad(format!("{} is in it but not in its manifest", extra.name)));
    }
    if !manifest.files.iter().any(|listed| listed.name == CONFIG) {
        return Err(bad(format!("it has no {CONFIG}")));
    }
    let database = staging.join(&manifest.database);
    if !manifest.files.iter().any(|listed| listed.name == manifest.database)
        || !safe_relative(Path::new(&manifest.database))
    {
        return Err(bad("it has no database".into()));
    }
    let check: Result<String, rusqlite::Error> = (|| {
        let connection = rusqlite::Connection::open_with_flags(&database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        connection.query_row("PRAGMA integrity_check", [], |row| row.get(0))
    })();
    match check {
        Ok(answer) if answer == "ok" => {}
        Ok(answer) => return Err(bad(format!("its database fails SQLite's integrity check: {answer}"))),
        Err(error) => return Err(bad(format!("its database cannot be opened: {error}"))),
    }
    Ok(manifest)
}

/// Rewrites `<staging>/hedgerow.toml` (as backed up, or as last rewritten)
/// for a directory at `root`: `data_dir = root/data`, `[lists] dir =
/// root/lists` when lists were copied, `[log] database` the restored file.
fn write_config(staging: &Path, root: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let file = staging.join(CONFIG);
    let text = std::fs::read_to_string(&file).map_err(io_fail(&file, "read"))?;
    let mut doc: toml_edit::DocumentMut =
        text.parse().map_err(|error| BackupError(format!("the backed-up config cannot be read: {error}")))?;
    doc["data_dir"] = toml_edit::value(root.join("data").display().to_string());
    if manifest.lists_dir.is_some() {
        if !doc.contains_table("lists") {
            doc["lists"] = toml_edit::table();
        }
        doc["lists"]["dir"] = toml_edit::value(root.join("lists").display().to_string());
    }
    let database = manifest.database.trim_start_matches("data/");
    let written = doc.get("log").and_then(|log| log.get("database")).and_then(|value| value.as_str());
    if written.is_some_and(|written| written != database) {
        doc["log"]["database"] = toml_edit::value(database);
    }
    crate::files::write_atomically(&file, |out| out.write_all(doc.to_string().as_bytes()))
        .map_err(io_fail(&file, "write"))
}

/// What `hedgerow check-config` checks: the file and the lists it names.
fn check_config(file: &Path) -> Result<(), BackupError> {
    let config =
        Config::load(file).map_err(|error| BackupError(format!("the restored config would not be valid: {error}")))?;
    let lists = crate::serve::check_lists(&config);
    if !lists.errors.is_empty() {
        return fail(format!("the restored config's lists would not be valid: {}", lists.errors.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_lower_case_hex_sha256() {
        let digest = ring::digest::digest(&ring::digest::SHA256, b"abc");
        assert_eq!(hex(digest.as_ref()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
