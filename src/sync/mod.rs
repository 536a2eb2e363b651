//! Two servers, one policy (`[sync]`, `config::sync`): the primary owns the
//! policy and serves it as a signed bundle; a secondary pulls it on a
//! schedule and when the primary tells it something changed, verifies it
//! with the key both were given, and puts it in force with the whole
//! reload. Each keeps its own query log.
//!
//! - `bundle.rs`: what a bundle holds (the config, the lists folder, the
//!   users and roles), built on the primary, checked and unpacked on the
//!   secondary;
//! - `follow.rs`: the secondary: pull, verify, apply, record, and its status;
//! - `peers.rs`: the primary's view of its secondaries (their reports).
//!
//! Every message between the two is signed: HMAC-SHA256 under the shared
//! key over the exact bytes sent, in [`SIGNATURE_HEADER`]. A request also
//! carries its time, and one older than [`FRESH_MS`] is refused, so a
//! recorded request cannot be replayed later; a bundle carries the time
//! it was issued, and a secondary never applies one older than its own.

pub mod bundle;
pub mod follow;
pub mod peers;

use std::io::Write;
use std::path::Path;

use ring::hmac;
use serde::{Deserialize, Serialize};

/// The header holding a message's signature (lower-case hex).
pub const SIGNATURE_HEADER: &str = "x-hedgerow-signature";
/// Where a secondary asks the primary for the bundle (POST, signed).
pub const PULL_PATH: &str = "/sync/pull";
/// Where the primary tells a secondary to ask now (POST, signed).
pub const NOTIFY_PATH: &str = "/sync/notify";
/// How old a signed request may be (either way, for clocks a little apart).
pub const FRESH_MS: i64 = 5 * 60 * 1000;
/// The largest request body either side reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The key shared by the primary and its secondaries.
#[derive(Clone)]
pub struct SyncKey(hmac::Key);

impl std::fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncKey(..)")
    }
}

impl SyncKey {
    /// Reads the key file: one line of at least 32 characters (surrounding
    /// white space ignored).
    pub fn read(path: &Path) -> Result<SyncKey, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "cannot read the [sync] key_file {} ({error}); make one on the primary with `hedgerow sync-key {}` and \
                 copy it to each secondary",
                path.display(),
                path.display()
            )
        })?;
        SyncKey::from_text(&text).map_err(|why| format!("the [sync] key_file {}: {why}", path.display()))
    }

    /// The key written in `text` (surrounding white space ignored).
    pub fn from_text(text: &str) -> Result<SyncKey, String> {
        let key = text.trim();
        if key.len() < 32 {
            return Err(format!(
                "it holds {} characters; a key needs at least 32 (make one with `hedgerow sync-key`)",
                key.len()
            ));
        }
        Ok(SyncKey(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())))
    }

    /// The signature of `bytes`, as sent in [`SIGNATURE_HEADER`].
    pub fn sign(&self, bytes: &[u8]) -> String {
        hex(hmac::sign(&self.0, bytes).as_ref())
    }

    /// True when `signature` is this key's signature of `bytes` (compared in
    /// constant time).
    pub fn verifies(&self, bytes: &[u8], signature: &str) -> bool {
        let Some(tag) = unhex(signature.trim()) else { return false };
        hmac::verify(&self.0, bytes, &tag).is_ok()
    }
}

/// Writes a new random key to `path` (mode 0600, refusing to replace one).
pub fn make_key(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|error| {
            format!("cannot create {} ({error}); a key already there is never replaced", path.display())
        })?;
    writeln!(file, "{}", hex(&bytes))
        .and_then(|()| file.sync_all())
        .map_err(|error| format!("cannot write {} ({error})", path.display()))
}

/// This server's part in a pair, for the dashboard and the control socket.
#[derive(Clone, Default)]
pub enum Side {
    /// No `[sync]`.
    #[default]
    Alone,
    /// Serves the bundle; hears from its secondaries.
    Primary { key: SyncKey, peers: std::sync::Arc<peers::Peers> },
    /// Follows its primary.
    Secondary(std::sync::Arc<follow::Follower>),
}

impl Side {
    /// The follower, on a secondary.
    pub fn follower(&self) -> Option<&follow::Follower> {
        match self {
            Side::Secondary(follower) => Some(follower),
            _ => None,
        }
    }
}

/// What a secondary says about itself when it asks for the bundle: the
/// primary's dashboard shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The secondary's name for itself (its host name).
    pub name: String,
    /// Its DNS listen addresses.
    pub dns: String,
    pub hedgerow_version: String,
    pub started_ms: i64,
    /// The bundle in force there: its content hash and when it was issued.
    pub content: String,
    pub issued_ms: i64,
    /// DNS answers given since it started.
    pub answered: u64,
    /// Its lists as "ok", or what is wrong.
    pub lists: String,
    /// Why its last sync failed, if it did.
    pub last_error: String,
}

/// A secondary's request for the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    pub sent_ms: i64,
    pub report: Report,
}

/// The primary's word that the policy changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub sent_ms: i64,
    pub primary: String,
}

/// True when `sent_ms` is close enough to `now_ms` for a request to count.
pub fn fresh(sent_ms: i64, now_ms: i64) -> bool {
    (now_ms - sent_ms).abs() <= FRESH_MS
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok()).collect()
}

/// An HTTP client for the other server: no proxy on loopback, no redirects,
/// every status handed back (not an error).
pub(crate) fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("hedgerow/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_bytes_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.key");
        make_key(&path).unwrap();
        assert!(make_key(&path).is_err(), "an existing key is never replaced");
        let key = SyncKey::read(&path).unwrap();
        let signature = key.sign(b"policy");
        assert!(key.verifies(b"policy", &signature));
        assert!(!key.verifies(b"policy!", &signature));
        assert!(!key.verifies(b"policy", &signature[2..]));
        assert!(!key.verifies(b"policy", "zz"));
        std::fs::write(dir.path().join("other.key"), "another key of at least thirty-two characters").unwrap();
        let other = SyncKey::read(&dir.path().join("other.key")).unwrap();
        assert!(!other.verifies(b"policy", &signature));
        std::fs::write(dir.path().join("short.key"), "short\n").unwrap();
        assert!(SyncKey::read(&dir.path().join("short.key")).unwrap_err().contains("at least 32"));
        assert!(SyncKey::read(&dir.path().join("missing.key")).unwrap_err().contains("hedgerow sync-key"));
    }
}
