//! Turning [`QueryRecord`]s into `query_log` rows: device attribution, the
//! privacy treatment of private groups, and the batched insert. Used by the
//! [`QueryLog`](super::log::QueryLog) thread and by bulk imports.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ring::hmac;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::StoreError;
use super::record::QueryRecord;
use super::schema::{self, Purpose};
use super::settings::{LogSettings, Privacy};
use super::time::{DAY_MS, day_number, day_string, now_ms};
use crate::name::reversed_name;

/// Milliseconds in an hour: the granularity of `name_hours`.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// How often the writer copies the WAL back into the database (a checkpoint,
/// with its fsyncs). Checkpointing after every batch, SQLite's default once
/// the WAL passes 4 MB, wrote each hot index page once per batch; once a
/// second writes it once per second. It also bounds what a power cut can take
/// under `synchronous=NORMAL`: commits since the last checkpoint.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

const INSERT_NAME_HOUR: &str = "INSERT OR IGNORE INTO name_hours (hour, rname) VALUES (?1, ?2)";
const INSERT_CLIENT_LABEL: &str =
    "INSERT OR IGNORE INTO client_labels (day, client, device, owner) VALUES (?1, ?2, ?3, ?4)";
const INSERT: &str = "INSERT INTO query_log (time_ms, client, device, owner, network, group_name, name, rname, \
     record_type, decision, category, list, response_code, upstream_ms, cache_hit, stage, reason) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// A device's name and owner as copied into log rows.
struct Label {
    name: String,
    owner: Option<String>,
}

/// The device table as the writer last read it, keyed by address.
#[derive(Default)]
struct Attribution {
    generation: Option<i64>,
    by_ip: HashMap<IpAddr, Label>,
}

/// How rows of private groups are written.
struct PrivacyRules {
    privacy: Privacy,
    groups: Vec<String>,
    /// Hash keys by day number (at most a few days are ever held).
    keys: HashMap<i64, hmac::Key>,
}

/// The `name_hours` and `client_labels` rows already written, so each is
/// inserted once rather than once per query. Forgotten whenever a batch
/// fails, so nothing rolled back is taken as written.
#[derive(Default)]
struct Sightings {
    /// Reversed names by hour; only the latest few hours are kept.
    names: HashMap<i64, HashSet<String>>,
    /// client -> (device, owner) pairs, by day; only the latest few days are kept.
    labels: HashMap<i64, HashMap<String, Vec<(String, String)>>>,
}

/// Hours (of `names`) and days (of `labels`) remembered.
const SIGHTINGS_KEPT: usize = 3;

/// Makes room for a new key in a map that keeps the latest few.
fn keep_latest<V>(map: &mut HashMap<i64, V>, key: i64) {
    if !map.contains_key(&key)
        && map.len() >= SIGHTINGS_KEPT
        && let Some(&oldest) = map.keys().min()
    {
        map.remove(&oldest);
    }
}

impl Sightings {
    /// True the first time `rname` is seen in `hour`.
    fn first_name(&mut self, hour: i64, rname: &str) -> bool {
        if self.names.get(&hour).is_some_and(|names| names.contains(rname)) {
            return false;
        }
        keep_latest(&mut self.names, hour);
        self.names.entry(hour).or_default().insert(rname.to_string())
    }

    /// True the first time `client` carries this device and owner on `day`.
    fn first_label(&mut self, day: i64, client: &str, device: &str, owner: &str) -> bool {
        let known = self.labels.get(&day).and_then(|clients| clients.get(client));
        if known.is_some_and(|labels| labels.iter().any(|(d, o)| d == device && o == owner)) {
            return false;
        }
        keep_latest(&mut self.labels, day);
        let labels = self.labels.entry(day).or_default().entry(client.to_string()).or_default();
        labels.push((device.to_string(), owner.to_string()));
        true
    }
}

pub(crate) struct Writer {
    conn: Connection,
    path: PathBuf,
    attribution: Attribution,
    privacy: PrivacyRules,
    seen: Sightings,
    /// Commits not yet checkpointed, and when the last checkpoint ran.
    uncheckpointed: bool,
    last_checkpoint: Instant,
}

impl Writer {
    /// Opens the writer's connection with `cache_mib` of page cache.
    pub(crate) fn open(path: &Path, settings: &LogSettings, cache_mib: u32) -> Result<Writer, StoreError> {
        let conn = schema::open(path, Purpose::Log)?;
        // Checkpoints on the writer's own clock (see CHECKPOINT_INTERVAL); a
        // WAL left over 64 MB is cut back after one.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
            cache_mib * 1024
        ))
        .map_err(StoreError::sqlite(path, "configure the query-log connection"))?;
        let mut writer = Writer {
            conn,
            path: path.to_path_buf(),
            attribution: Attribution::default(),
            privacy: PrivacyRules {
                privacy: settings.guest_privacy,
                groups: settings.private_groups.clone(),
                keys: HashMap::new(),
            },
            seen: Sightings::default(),
            uncheckpointed: false,
            last_checkpoint: Instant::now(),
        };
        writer.refresh_devices()?;
        Ok(writer)
    }

    /// Reloads the device table if it changed since the last look (one
    /// single-row read when it has not).
    fn refresh_devices(&mut self) -> Result<(), StoreError> {
        let path = &self.path;
        let generation: i64 = self
            .conn
            .query_row("SELECT value FROM store_state WHERE key = 'devices_generation'", [], |row| row.get(0))
            .map_err(StoreError::sqlite(path, "read the device table's generation"))?;
        if self.attribution.generation == Some(generation) {
            return Ok(());
        }
        let mut by_ip = HashMap::new();
        let mut statement = self
            .conn
            .prepare("SELECT ip, name, owner FROM devices WHERE ip IS NOT NULL")
            .map_err(StoreError::sqlite(path, "read the device table"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?)))
            .map_err(StoreError::sqlite(path, "read the device table"))?;
        for row in rows {
            let (ip, name, owner) = row.map_err(StoreError::sqlite(path, "read the device table"))?;
            if let Ok(ip) = ip.parse::<IpAddr>() {
                by_ip.insert(ip.to_canonical(), Label { name, owner });
            }
        }
        tracing::debug!(devices = by_ip.len(), generation, "query log: device table reloaded");
        self.attribution = Attribution { generation: Some(generation), by_ip };
        Ok(())
    }

    /// Writes `records` in one transaction, then checkpoints if one is due.
    pub(crate) fn write_batch(&mut self, records: &[QueryRecord]) -> Result<(), StoreError> {
        let result = self.refresh_devices().and_then(|()| self.insert_batch(records));
        if result.is_err() {
            self.seen = Sightings::default();
        }
        result?;
        self.uncheckpointed = true;
        if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            self.checkpoint();
        }
        Ok(())
    }

    fn insert_batch(&mut self, records: &[QueryRecord]) -> Result<(), StoreError> {
        let Writer { conn, path, attribution, privacy, seen, .. } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite(path, "start a query-log transaction"))?;
        insert(&tx, path, attribution, privacy, seen, records)?;
        tx.commit().map_err(StoreError::sqlite(path, "commit a query-log batch"))
    }

    /// True when commits wait for a checkpoint; [`Writer::checkpoint`] is due
    /// by `CHECKPOINT_INTERVAL` after the last one.
    pub(crate) fn checkpoint_due_in(&self) -> Option<Duration> {
        self.uncheckpointed.then(|| CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed()))
    }

    /// Copies committed WAL frames into the database file (`PASSIVE`: waits
    /// for nobody; frames a reader still needs are copied next time).
    pub(crate) fn checkpoint(&mut self) {
        if let Err(error) = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(db = %self.path.display(), %error, "query log: checkpoint failed; retrying later");
        }
        self.uncheckpointed = false;
        self.last_checkpoint = Instant::now();
    }
}

fn insert(
    tx: &Transaction<'_>,
    path: &Path,
    attribution: &Attribution,
    privacy: &mut PrivacyRules,
    seen: &mut Sightings,
    records: &[QueryRecord],
) -> Result<(), StoreError> {
    let prepare = |sql| tx.prepare_cached(sql).map_err(StoreError::sqlite(path, "prepare the query-log inserts"));
    let (mut statement, mut name_hour, mut client_label) =
        (prepare(INSERT)?, prepare(INSERT_NAME_HOUR)?, prepare(INSERT_CLIENT_LABEL)?);
    for record in records {
        let ip = record.client.to_canonical();
        let private = record.group.as_deref().is_some_and(|group| privacy.groups.iter().any(|g| g == group));
        let (client, label) = if private {
            let client = match privacy.privacy {
                Privacy::Full => ip.to_string(),
                Privacy::Truncate => truncate(ip).to_string(),
                Privacy::Hash => hashed(&privacy.key_for(tx, path, day_number(record.time_ms))?, ip),
            };
            (client, None)
        } else {
            (ip.to_string(), attribution.by_ip.get(&ip))
        };
        let rname = reversed_name(&record.name);
        let hour = record.time_ms.div_euclid(HOUR_MS);
        if seen.first_name(hour, &rname) {
            name_hour.execute(params![hour, rname]).map_err(StoreError::sqlite(path, "note a name's hour"))?;
        }
        if let Some(label) = label {
            let (day, owner) = (record.time_ms.div_euclid(DAY_MS), label.owner.as_deref().unwrap_or(""));
            if seen.first_label(day, &client, &label.name, owner) {
                client_label
                    .execute(params![day, client, label.name, owner])
                    .map_err(StoreError::sqlite(path, "note a client's device"))?;
            }
        }
        statement
            .execute(params![
                record.time_ms,
                client,
                label.map(|label| label.name.as_str()),
                label.and_then(|label| label.owner.as_deref()),
                record.network.as_deref(),
                record.group.as_deref(),
                record.name,
                rname,
                record.record_type,
                record.decision,
                record.category.as_deref(),
                record.list.as_deref(),
                record.response_code,
                record.upstream_ms,
                record.cache_hit,
                record.stage,
                record.reason.as_deref(),
            ])
            .map_err(StoreError::sqlite(path, "insert a query-log row"))?;
    }
    Ok(())
}

impl PrivacyRules {
    /// The hash key of `day`, created (and older keys forgotten) when needed.
    /// Keys of days before yesterday are deleted from the database, so hashes
    /// from then can no longer be linked to addresses.
    fn key_for(&mut self, tx: &Transaction<'_>, path: &Path, day: i64) -> Result<hmac::Key, StoreError> {
        if let Some(key) = self.keys.get(&day) {
            return Ok(key.clone());
        }
        let day_text = day_string(day);
        let fresh: [u8; 32] = rand::random();
        tx.execute("INSERT OR IGNORE INTO privacy_keys (day, key) VALUES (?1, ?2)", params![day_text, fresh])
            .map_err(StoreError::sqlite(path, "store a privacy key"))?;
        let bytes: Vec<u8> = tx
            .query_row("SELECT key FROM privacy_keys WHERE day = ?1", [&day_text], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(path, "read a privacy key"))?
            .unwrap_or_else(|| fresh.to_vec());
        let oldest_kept = day_number(now_ms()) - 1;
        tx.execute("DELETE FROM privacy_keys WHERE day < ?1", [day_string(oldest_kept)])
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

/// Writes many records, committing every `chunk` rows (bulk loads).
pub(crate) fn write_all(
    writer: &mut Writer,
    records: impl IntoIterator<Item = QueryRecord>,
    chunk: usize,
) -> Result<u64, StoreError> {
    let mut written = 0;
    let mut batch = Vec::with_capacity(chunk);
    for record in records {
        batch.push(record);
        if batch.len() == chunk {
            writer.write_batch(&batch)?;
            written += batch.len() as u64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        writer.write_batch(&batch)?;
        written += batch.len() as u64;
    }
    writer.checkpoint();
    Ok(written)
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
