//! The privacy treatment of private groups' clients (guests by default):
//! the name a client is given in the query log and in alerts. One home, so
//! an alert names a hashed guest by the same pseudonym as its log rows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ring::hmac;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::settings::{LogSettings, Privacy};
use super::time::{day_number, day_string, now_ms};

/// How clients of private groups are named.
pub struct PrivacyRules {
    privacy: Privacy,
    groups: Vec<String>,
    /// Hash keys by day number (at most a few days are ever held).
    keys: HashMap<i64, hmac::Key>,
}

impl PrivacyRules {
    pub fn new(settings: &LogSettings) -> PrivacyRules {
        PrivacyRules { privacy: settings.guest_privacy, groups: settings.private_groups.clone(), keys: HashMap::new() }
    }

    /// The name `ip` is given at `time_ms` when its group is private (its
    /// address, its /24 or /48, or the day's pseudonym); `None` for any other
    /// group, whose clients are named by address and their device.
    pub fn client_name(
        &mut self,
        conn: &Connection,
        path: &Path,
        ip: IpAddr,
        group: Option<&str>,
        time_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        if !group.is_some_and(|group| self.groups.iter().any(|g| g == group)) {
            return Ok(None);
        }
        Ok(Some(match self.privacy {
            Privacy::Full => ip.to_string(),
            Privacy::Truncate => truncate(ip).to_string(),
            Privacy::Hash => hashed(&self.key_for(conn, path, day_number(time_ms))?, ip),
        }))
    }

    /// The hash key of `day`, created (and older keys forgotten) when needed.
    /// Keys of days before yesterday are deleted from the database, so hashes
    /// from then can no longer be linked to addresses.
    fn key_for(&mut self, conn: &Connection, path: &Path, day: i64) -> Result<hmac::Key, StoreError> {
        if let Some(key) = self.keys.get(&day) {
            return Ok(key.clone());
        }
        let day_text = day_string(day);
        let fresh: [u8; 32] = rand::random();
        conn.execute("INSERT OR IGNORE INTO privacy_keys (day, key) VALUES (?1, ?2)", params![day_text, fresh])
            .map_err(StoreError::sqlite(path, "store a privacy key"))?;
        let bytes: Vec<u8> = conn
            .query_row("SELECT key FROM privacy_keys WHERE day = ?1", [&day_text], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(path, "read a privacy key"))?
            .unwrap_or_else(|| fresh.to_vec());
        let oldest_kept = day_number(now_ms()) - 1;
        conn.execute("DELETE FROM privacy_keys WHERE day < ?1", [day_string(oldest_kept)])
            .map_err(StoreError::sqlite(path, "forget old privacy keys"))?;
        self.keys.retain(|&kept, _| kept >= oldest_kept);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        self.keys.insert(day, key.clone());
        Ok(key)
    }
}

/// IPv4 to its /24, IPv6 to its /48: `192.168.3.0/24`.
pub(crate) fn truncate(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(v4, 24).expect("24 is a valid prefix").trunc()),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(v6, 48).expect("48 is a valid prefix").trunc()),
    }
}

/// `anon-` and 12 hex digits of HMAC-SHA256(day key, address octets).
fn hashed(key: &hmac::Key, ip: IpAddr) -> String {
    let tag = match ip {
        IpAddr::V4(v4) => hmac::sign(key, &v4.octets()),
        IpAddr::V6(v6) => hmac::sign(key, &v6.octets()),
    };
    let mut text = String::with_capacity(17);
    text.push_str("anon-");
    for byte in &tag.as_ref()[..6] {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_to_the_network() {
        assert_eq!(truncate("192.168.3.77".parse().unwrap()).to_string(), "192.168.3.0/24");
        assert_eq!(truncate("2001:db8:1:2::5".parse().unwrap()).to_string(), "2001:db8:1::/48");
    }

    #[test]
    fn hashes_are_keyed_and_stable() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        let ip: IpAddr = "10.0.9.4".parse().unwrap();
        assert_eq!(hashed(&key, ip), hashed(&key, ip));
        assert_ne!(hashed(&key, ip), hashed(&other, ip));
        assert_ne!(hashed(&key, ip), hashed(&key, "10.0.9.5".parse().unwrap()));
        assert_eq!(hashed(&key, ip).len(), 17);
    }
}
