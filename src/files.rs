//! Writing files so that a crash or a full disk never leaves a half-written
//! one: the one home of [`write_atomically`]. A leaf: it depends on no other
//! module.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `out` through a temporary file in the same folder (hidden, named
/// for this process and call, so concurrent writers never share one),
/// fsyncs it, renames it over `out` and fsyncs the folder (best effort: not
/// every filesystem can). A reader sees the old file or the whole new one,
/// never part of either; on an error the temporary file is removed and
/// `out` is untouched. The folder must exist.
pub fn write_atomically<T>(out: &Path, write: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
    let folder = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temporary = folder.join(format!(".{name}.{}.{unique}.tmp", std::process::id()));
    let result = (|| {
        let mut file = File::create(&temporary)?;
        let value = write(&mut file)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, out)?;
        sync_folder(&folder);
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Moves a finished temporary file over `path` durably: fsyncs it, renames
/// it, fsyncs the folder (best effort).
pub fn replace_with(temporary: &Path, path: &Path) -> io::Result<()> {
    File::open(temporary)?.sync_all()?;
    fs::rename(temporary, path)?;
    if let Some(folder) = path.parent() {
        sync_folder(folder);
    }
    Ok(())
}

/// Makes a rename in `folder` durable. Best effort: some filesystems refuse
/// to fsync a directory, and the data is already safe.
fn sync_folder(folder: &Path) {
    let _ = File::open(folder).and_then(|dir| dir.sync_all());
}
