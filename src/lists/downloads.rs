//! The downloads folder's layout, the one place it is written down.
//!
//! `data_dir/downloads/` holds, for each source `<id>`:
//! - `<id>.txt`: its last good copy (a URL source's download, already
//!   extracted; a local `path` source's last copy that passed the checks),
//!   which every compile reads;
//! - `<id>.state.json`: what the last checks found (validators, dates, the
//!   last error);
//!
//! and `.update.lock`, held while copies are written, so two updates never
//! write one copy's temporary file at once.

use std::path::{Path, PathBuf};

/// The folder's name inside the data folder.
pub const FOLDER: &str = "downloads";

/// The downloads folder of a data folder.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join(FOLDER)
}

/// A source's last good copy in the downloads folder `dir`.
pub fn copy(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.txt"))
}

/// A source's state file in the downloads folder `dir`.
pub fn state(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.state.json"))
}

/// The lock file updates of the downloads folder `dir` hold.
pub fn lock(dir: &Path) -> PathBuf {
    dir.join(".update.lock")
}
