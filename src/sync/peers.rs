//! The primary's side: the secondaries it has heard from (each asks with a
//! report of its health), and telling the configured ones at once when
//! the policy changed. Kept in memory: after a restart the list fills again
//! within one interval.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use super::{NOTIFY_PATH, Notice, Report, SIGNATURE_HEADER, SyncKey};

/// How long telling one secondary may take.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// One secondary as last heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub report: Report,
    /// The address its request came from.
    pub address: IpAddr,
    pub seen_ms: i64,
}

/// The secondaries heard from, by name and address.
#[derive(Debug, Default)]
pub struct Peers {
    seen: Mutex<BTreeMap<(String, IpAddr), Peer>>,
}

impl Peers {
    /// Notes a secondary's report.
    pub fn heard(&self, report: Report, address: IpAddr, now_ms: i64) {
        let mut seen = self.seen.lock().expect("the peers lock is never poisoned");
        seen.insert((report.name.clone(), address), Peer { report, address, seen_ms: now_ms });
    }

    /// Every secondary heard from, by name.
    pub fn list(&self) -> Vec<Peer> {
        self.seen.lock().expect("the peers lock is never poisoned").values().cloned().collect()
    }
}

/// Tells each of `secondaries` (dashboard URLs) to ask for the policy now.
/// A secondary that cannot be told asks at its next interval anyway, so a
/// failure is only logged.
pub fn notify_all(secondaries: &[String], key: &SyncKey, primary: &str) {
    let notice = Notice { sent_ms: crate::time::now_ms(), primary: primary.to_string() };
    let body = serde_json::to_vec(&notice).expect("a notice serialises");
    let signature = key.sign(&body);
    for secondary in secondaries {
        let sent = super::agent(NOTIFY_TIMEOUT)
            .post(&format!("{secondary}{NOTIFY_PATH}"))
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .send(&body[..]);
        match sent {
            Ok(response) if response.status().is_success() => {
                tracing::info!(%secondary, "SYNC: told the secondary the policy changed")
            }
            Ok(response) => {
                tracing::warn!(%secondary, status = %response.status(), "SYNC: the secondary refused the notice; it asks at its interval")
            }
            Err(error) => {
                tracing::warn!(%secondary, %error, "SYNC: cannot tell the secondary; it asks at its interval")
            }
        }
    }
}
