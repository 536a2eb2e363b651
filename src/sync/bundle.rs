//! The policy bundle: what a secondary takes from its primary. It holds the
//! primary's config file as written, every file of its lists folder (the
//! declarations, the local lists, the SafeSearch map) and the dashboard's
//! users with their roles and password hashes. Not the query log, alerts,
//! devices or anything else that is each server's own.
//!
//! On the wire it is JSON, signed as a whole (`SyncKey`); `content` is the
//! SHA-256 of the policy part alone, so the same policy issued twice is
//! known as the same and a secondary asks "have you anything newer than
//! this?" with it.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::SyncKey;
use crate::config::Config;
use crate::store::user_sync::SyncedUser;

/// The bundle format this build writes and reads.
pub const FORMAT: u32 = 1;
/// The config file's name in an unpacked bundle.
pub const CONFIG_FILE: &str = "hedgerow.toml";
/// The lists folder's name in an unpacked bundle.
pub const LISTS_FOLDER: &str = "lists";

/// A bundle as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub format: u32,
    /// When the primary issued it; a secondary never goes back to an older one.
    pub issued_ms: i64,
    /// The primary's name for itself.
    pub primary: String,
    pub hedgerow_version: String,
    /// SHA-256 (hex) of `policy` as serialised.
    pub content: String,
    pub policy: Policy,
    /// What did not travel, for the people at both ends.
    pub notes: Vec<String>,
}

/// The policy itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policy {
    /// The primary's config file, as written.
    pub config: String,
    /// The lists folder's files (`None`: the primary uses the lists built
    /// into the binary, and so will the secondary).
    pub lists: Option<Vec<PolicyFile>>,
    pub users: Vec<SyncedUser>,
}

/// One file of the lists folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyFile {
    /// Relative to the lists folder, `/`-separated.
    pub path: String,
    /// The bytes, base64 (a list need not be UTF-8).
    pub base64: String,
}

/// The primary's bundle of the policy `config` describes, issued now.
pub fn build(config: &Config, primary: &str, now_ms: i64) -> Result<Bundle, String> {
    let text = match &config.file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the config file {} ({error})", path.display()))?,
        None => crate::config::DEFAULT_CONFIG.to_string(),
    };
    let mut notes = Vec::new();
    let mut sources = Vec::new();
    let lists_dir = crate::policy_files::lists_sources(config, &mut sources, &mut notes)?;
    let lists = match lists_dir {
        None => None,
        Some(_) => {
            let mut files = Vec::new();
            for source in sources {
                let Some(path) = source.name.strip_prefix("lists/") else {
                    notes.push(format!(
                        "{} is outside the lists folder and is not sent to secondaries: move it into the lists folder \
                         so both servers filter with it",
                        source.path.display()
                    ));
                    continue;
                };
                let bytes = std::fs::read(&source.path)
                    .map_err(|error| format!("cannot read {} ({error})", source.path.display()))?;
                files.push(PolicyFile {
                    path: path.to_string(),
                    base64: base64::engine::general_purpose::STANDARD.encode(bytes),
                });
            }
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Some(files)
        }
    };
    let users = crate::store::Users::open(&config.log.database)
        .and_then(|users| users.export())
        .map_err(|error| format!("cannot read the dashboard's users ({error})"))?;
    let policy = Policy { config: text, lists, users };
    Ok(Bundle {
        format: FORMAT,
        issued_ms: now_ms,
        primary: primary.to_string(),
        hedgerow_version: env!("CARGO_PKG_VERSION").to_string(),
        content: content_of(&policy),
        policy,
        notes,
    })
}

/// SHA-256 (hex) of the policy as serialised.
pub fn content_of(policy: &Policy) -> String {
    let bytes = serde_json::to_vec(policy).expect("a policy serialises");
    super::hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
}

/// The bytes sent for `bundle`.
pub fn encode(bundle: &Bundle) -> Vec<u8> {
    serde_json::to_vec(bundle).expect("a bundle serialises")
}

/// The bundle in `bytes` when `signature` is `key`'s signature of them and
/// it is whole: a format this build reads, its content hash right, every
/// list file's name a plain relative path and its bytes base64. Nothing is
/// read from a bundle before its signature verifies.
pub fn open(bytes: &[u8], signature: &str, key: &SyncKey) -> Result<Bundle, String> {
    if !key.verifies(bytes, signature) {
        return Err("its signature does not verify with this server's [sync] key: it was altered on the way, or \
                    the two servers have different keys"
            .into());
    }
    let bundle: Bundle = serde_json::from_slice(bytes).map_err(|error| format!("it cannot be read: {error}"))?;
    if bundle.format != FORMAT {
        return Err(format!(
            "it is format {} and this Hedgerow ({}) reads format {FORMAT}: run the same version on both servers",
            bundle.format,
            env!("CARGO_PKG_VERSION")
        ));
    }
    if content_of(&bundle.policy) != bundle.content {
        return Err("its content does not match its content hash".into());
    }
    for file in bundle.policy.lists.iter().flatten() {
        if !safe_list_path(&file.path) {
            return Err(format!("it names a list file {:?}, which is not a plain relative path", file.path));
        }
        decode(file)?;
    }
    Ok(bundle)
}

fn safe_list_path(path: &str) -> bool {
    crate::policy_files::safe_relative(Path::new(path)) && !path.split('/').any(|part| part.starts_with('.'))
}

fn decode(file: &PolicyFile) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(&file.base64)
        .map_err(|error| format!("its list file {} cannot be decoded: {error}", file.path))
}

/// Writes an opened bundle's config and lists into the new folder `folder`
/// (each file synced to disk).
pub fn unpack(bundle: &Bundle, folder: &Path) -> Result<(), String> {
    let write = |path: &PathBuf, bytes: &[u8]| -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| format!("cannot create {} ({error})", parent.display()))?;
        }
        crate::files::write_atomically(path, |file| std::io::Write::write_all(file, bytes))
            .map_err(|error| format!("cannot write {} ({error})", path.display()))
    };
    std::fs::create_dir_all(folder).map_err(|error| format!("cannot create {} ({error})", folder.display()))?;
    write(&folder.join(CONFIG_FILE), bundle.policy.config.as_bytes())?;
    if let Some(files) = &bundle.policy.lists {
        std::fs::create_dir_all(folder.join(LISTS_FOLDER))
            .map_err(|error| format!("cannot create {} ({error})", folder.display()))?;
        for file in files {
            write(&folder.join(LISTS_FOLDER).join(&file.path), &decode(file)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SyncKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        super::super::make_key(&path).unwrap();
        SyncKey::read(&path).unwrap()
    }

    fn bundle() -> Bundle {
        let policy = Policy {
            config: "[[networks]]\n".into(),
            lists: Some(vec![PolicyFile { path: "seed/games.txt".into(), base64: "Z2FtZS50ZXN0Cg==".into() }]),
            users: Vec::new(),
        };
        Bundle {
            format: FORMAT,
            issued_ms: 1,
            primary: "p".into(),
            hedgerow_version: "0".into(),
            content: content_of(&policy),
            policy,
            notes: Vec::new(),
        }
    }

    #[test]
    fn only_a_whole_signed_bundle_opens() {
        let key = key();
        let bytes = encode(&bundle());
        let signature = key.sign(&bytes);
        let opened = open(&bytes, &signature, &key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack(&opened, &dir.path().join("p")).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("p/lists/seed/games.txt")).unwrap(), "game.test\n");

        let mut tampered = bytes.clone();
        let at = tampered.windows(7).position(|w| w == b"network").unwrap();
        tampered[at] = b'N';
        assert!(open(&tampered, &signature, &key).unwrap_err().contains("signature"));
        assert!(open(&bytes, &signature, &self::key()).unwrap_err().contains("signature"), "another key");

        for (path, why) in [("../etc/passwd", "plain relative"), (".hidden", "plain relative")] {
            let mut bad = bundle();
            bad.policy.lists.as_mut().unwrap()[0].path = path.into();
            bad.content = content_of(&bad.policy);
            let bytes = encode(&bad);
            assert!(open(&bytes, &key.sign(&bytes), &key).unwrap_err().contains(why), "{path}");
        }
        let mut wrong = bundle();
        wrong.content = "0".repeat(64);
        let bytes = encode(&wrong);
        assert!(open(&bytes, &key.sign(&bytes), &key).unwrap_err().contains("content hash"));
    }
}
