//! A primary and a secondary (`[sync]`) for the real binary: the shared
//! key, the primary's files (the test school of `server.rs` with `[sync]
//! role = "primary"`) and the secondary's own file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::server::{SchoolFiles, free_port};

/// A key file in `dir`, made by the real `hedgerow sync-key`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_hedgerow")).arg("sync-key").arg(&path).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    path
}

/// The primary: the shared test school, with `[sync] role = "primary"`.
pub fn primary_files(dir: &Path, upstream: SocketAddr, key: &Path, secondaries: &[String]) -> SchoolFiles {
    let files = SchoolFiles::write(dir, upstream, true);
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(&format!(
        "\n[sync]\nrole = \"primary\"\nkey_file = {:?}\nsecondaries = {secondaries:?}\n",
        key.display().to_string()
    ));
    std::fs::write(&files.config, text).unwrap();
    files
}

/// A secondary's own file: its listeners, data_dir and `[sync]` only.
pub fn secondary_files(dir: &Path, primary: &str, key: &Path, interval_seconds: u64) -> SchoolFiles {
    let data_dir = dir.join("data");
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dashboard = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.join("secondary.toml");
    std::fs::write(
        &config,
        format!(
            "# The secondary: policy comes from the primary.\ndata_dir = {:?}\n[dns]\nlisten = [\"{dns}\"]\n\
             [dashboard]\nlisten = [\"{dashboard}\"]\n[sync]\nrole = \"secondary\"\nprimary = \"{primary}\"\n\
             key_file = {:?}\ninterval_seconds = {interval_seconds}\n",
            data_dir.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    SchoolFiles { config, data_dir, dns, dashboard: Some(dashboard) }
}

/// A temporary folder holding `primary/`, `secondary/` and the key both use.
pub struct PairDirs {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
}

impl PairDirs {
    pub fn new() -> PairDirs {
        let dir = tempfile::tempdir().unwrap();
        let key = key_file(dir.path(), "sync.key");
        std::fs::create_dir(dir.path().join("primary")).unwrap();
        std::fs::create_dir(dir.path().join("secondary")).unwrap();
        PairDirs { dir, key }
    }

    pub fn primary(&self) -> PathBuf {
        self.dir.path().join("primary")
    }

    pub fn secondary(&self) -> PathBuf {
        self.dir.path().join("secondary")
    }
}
