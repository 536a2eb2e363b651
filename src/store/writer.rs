//! Turning [`QueryRecord`]s into query-log rows: device attribution, the
//! privacy treatment of private groups, interning into the dictionaries
//! ([`dict`](super::dict)), and the batched insert: per commit one fresh
//! block per hour present, with `log_hourly` in the same transaction
//! (`log_hourly_blocked` is counted when the rows are sealed).
//! Hours that ended more than [`SEAL_AFTER_MS`] ago are sealed
//! ([`seal`](super::seal)), checked after each batch, when idle and at open
//! (so an hour a crash left fresh is sealed on restart); the current hour is
//! sealed in slices: all its fresh rows, whenever [`SEAL_STEP_ROWS`] have come
//! since the last slice or [`SEAL_SLICE_MS`] has passed. Used by the
//! [`QueryLog`](super::log::QueryLog) thread and by bulk imports.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::StoreError;
use super::block::{self, BlockRow};
use super::dict::{AddressRef, ClientFields, Dictionary, OutcomeFields};
use super::privacy::PrivacyRules;
use super::record::{QueryRecord, reason_template};
use super::schema::{self, Purpose};
use super::seal::{self, Posted, SEAL_STEP_ROWS};
use super::settings::LogSettings;
use super::time::{day_number, now_ms};

/// Milliseconds in an hour (the query log's blocks and roll-ups are by UTC hour).
pub(crate) use super::time::HOUR_MS;

/// An hour is sealed once it ended this long ago (late batches of the
/// hour have landed by then; a later straggler is sealed on its own).
pub(crate) const SEAL_AFTER_MS: i64 = 60_000;

/// The current hour is sealed at least this often (see
/// [`Writer::seal_ended_hours`]).
pub(crate) const SEAL_SLICE_MS: i64 = 5 * 60_000;

/// How often the writer copies the WAL back into the database (a checkpoint,
/// with its fsyncs). Checkpointing after every batch, SQLite's default once
/// the WAL passes 4 MB, wrote each hot index page once per batch; once a
/// second writes it once per second. It also bounds what a power cut can take
/// under `synchronous=NORMAL`: commits since the last checkpoint.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// A failed seal is retried after this long.
const SEAL_RETRY: Duration = Duration::from_secs(30);

const INSERT_FRESH: &str = "INSERT INTO log_fresh (hour, last_row_id, data) VALUES (?1, ?2, ?3)";

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

pub(crate) struct Writer {
    conn: Connection,
    path: PathBuf,
    attribution: Attribution,
    privacy: PrivacyRules,
    dict: Dictionary,
    /// The last row id handed out (see [`block::row_id`]).
    last_id: i64,
    /// Every fresh hour before this one is known sealed (`i64::MIN`: look).
    sealed_before: i64,
    /// When sealing last failed, so it is not retried on every batch.
    seal_failed: Option<Instant>,
    /// When the current hour was last sealed, and the rows written since.
    last_slice: Instant,
    rows_since_slice: usize,
    /// The postings the current hour's slices have put in.
    posted: Posted,
    /// Commits not yet checkpointed, and when the last checkpoint ran.
    uncheckpointed: bool,
    last_checkpoint: Instant,
}

impl Writer {
    /// Opens the writer's connection with `cache_mib` of page cache, and
    /// seals the hours a previous run left fresh.
    pub(crate) fn open(path: &Path, settings: &LogSettings, cache_mib: u32) -> Result<Writer, StoreError> {
        let conn = schema::open(path, Purpose::Log)?;
        // Checkpoints on the writer's own clock (see CHECKPOINT_INTERVAL); a
        // WAL left over 64 MB is cut back after one.
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{}; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;",
            cache_mib * 1024
        ))
        .map_err(StoreError::sqlite(path, "configure the query-log connection"))?;
        if let Some(pages) = settings.max_pages {
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(StoreError::sqlite(path, "cap the database's size"))?;
        }
        let last_id = last_row_id(&conn).map_err(StoreError::sqlite(path, "read the query log's last row id"))?;
        let mut writer = Writer {
            conn,
            path: path.to_path_buf(),
            attribution: Attribution::default(),
            privacy: PrivacyRules::new(settings),
            dict: Dictionary::default(),
            last_id,
            sealed_before: i64::MIN,
            seal_failed: None,
            last_slice: Instant::now(),
            rows_since_slice: 0,
            posted: Posted::default(),
            uncheckpointed: false,
            last_checkpoint: Instant::now(),
        };
        writer.refresh_devices()?;
        writer.seal_ended_hours(i64::MAX);
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
        self.dict.devices_changed();
        Ok(())
    }

    /// Writes `records` in one transaction, seals hours that are over, then
    /// checkpoints if one is due.
    pub(crate) fn write_batch(&mut self, records: &[QueryRecord]) -> Result<(), StoreError> {
        let result = self.refresh_devices().and_then(|()| self.insert_batch(records));
        let hours = match result {
            Ok(hours) => hours,
            Err(error) => {
                // Ids the rolled-back transaction created are gone.
                self.dict.forget();
                return Err(error);
            }
        };
        self.uncheckpointed = true;
        self.rows_since_slice += records.len();
        if hours.0 < self.sealed_before {
            // A row for an hour already sealed (the clock stepped back).
            self.sealed_before = i64::MIN;
        }
        // In a bulk load of past rows the newest hour of the batch may go on
        // in the next batch: seal only the hours before it.
        self.seal_ended_hours(hours.1);
        if self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            self.checkpoint();
        }
        Ok(())
    }

    /// Returns the oldest and newest hour written.
    fn insert_batch(&mut self, records: &[QueryRecord]) -> Result<(i64, i64), StoreError> {
        let Writer { conn, path, attribution, privacy, dict, last_id, .. } = self;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite(path, "start a query-log transaction"))?;
        let hours = insert(&tx, path, attribution, privacy, dict, last_id, records)?;
        tx.commit().map_err(StoreError::sqlite(path, "commit a query-log batch"))?;
        Ok(hours)
    }

    /// Seals the fresh hours that ended [`SEAL_AFTER_MS`] ago, and are
    /// before `limit`; and every fresh row of the current hour once
    /// [`SEAL_STEP_ROWS`] have come since the last slice or [`SEAL_SLICE_MS`]
    /// has passed, so a search of the current hour decodes at most minutes of
    /// rows rather than up to an hour of a busy school's (about a million),
    /// and a seal is a step the channel rides out, never a stall.
    /// A failure is logged and retried [`SEAL_RETRY`] later: the rows stay
    /// fresh, and readers find them there.
    pub(crate) fn seal_ended_hours(&mut self, limit: i64) {
        let before = (now_ms() - SEAL_AFTER_MS).div_euclid(HOUR_MS).min(limit);
        let slice_due = self.rows_since_slice >= SEAL_STEP_ROWS
            || self.last_slice.elapsed() >= Duration::from_millis(SEAL_SLICE_MS as u64);
        if (before <= self.sealed_before && !slice_due)
            || self.seal_failed.is_some_and(|failed| failed.elapsed() < SEAL_RETRY)
        {
            return;
        }
        let before_id = if slice_due { i64::MAX } else { 0 };
        // Not starved by other idle-class work while the channel fills.
        let _stepped_up = crate::priority::step_up();
        match seal::seal_fresh(&mut self.conn, before, before_id, &mut self.posted) {
            Ok(rows) => {
                if rows > 0 {
                    tracing::debug!(rows, "query log: sealed the rows that are old enough");
                    self.uncheckpointed = true;
                }
                self.sealed_before = self.sealed_before.max(before);
                if slice_due {
                    self.last_slice = Instant::now();
                    self.rows_since_slice = 0;
                }
                self.seal_failed = None;
            }
            Err(error) => {
                tracing::warn!(db = %self.path.display(), %error, "query log: cannot seal the hours that are over; retrying in 30 s");
                self.seal_failed = Some(Instant::now());
            }
        }
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

/// The newest row id in the log: the greatest of the fresh blocks' last ids
/// and of the ids in the newest sealed hour (each sealed block ends with its
/// greatest id).
fn last_row_id(conn: &Connection) -> rusqlite::Result<i64> {
    let fresh: Option<i64> = conn.query_row("SELECT max(last_row_id) FROM log_fresh", [], |row| row.get(0))?;
    let mut last = fresh.unwrap_or(0);
    let newest: Option<i64> = conn.query_row("SELECT max(key) FROM log_sealed", [], |row| row.get(0))?;
    if let Some(key) = newest {
        let hour = block::split_sealed_key(key).0;
        let keys = block::hour_keys(hour);
        let mut statement = conn.prepare("SELECT key, data FROM log_sealed WHERE key >= ?1 AND key < ?2")?;
        let mut blocks = statement.query([keys.start, keys.end])?;
        let mut rows = Vec::new();
        while let Some(found) = blocks.next()? {
            let client = block::split_sealed_key(found.get(0)?).1;
            rows.clear();
            block::decode(found.get_ref(1)?.as_blob()?, client, &mut rows).map_err(|error| {
                rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(error))
            })?;
            last = rows.iter().map(|row| row.id).fold(last, i64::max);
        }
    }
    Ok(last)
}

/// Interns and encodes `records` into one fresh block per hour, and counts
/// them into `log_hourly`. Returns the oldest and newest hour.
fn insert(
    tx: &Transaction<'_>,
    path: &Path,
    attribution: &Attribution,
    privacy: &mut PrivacyRules,
    dict: &mut Dictionary,
    last_id: &mut i64,
    records: &[QueryRecord],
) -> Result<(i64, i64), StoreError> {
    let intern = |source| StoreError::Sqlite { path: path.to_path_buf(), action: "intern a query-log row", source };
    // Usually one hour; two when a batch spans the hour's end.
    let mut hours: Vec<(i64, Vec<BlockRow>)> = Vec::with_capacity(2);
    for record in records {
        let ip = record.client.to_canonical();
        let day = day_number(record.time_ms);
        let address = AddressRef { ip, network: record.network.as_ref(), group: record.group.as_ref() };
        let client = match dict.known_client(&address, day) {
            Some(client) => client,
            None => {
                let client = client_id(tx, path, attribution, privacy, dict, record, day)?;
                dict.remember_client(&address, day, client);
                client
            }
        };
        let name = dict.name(tx, &record.name, day).map_err(intern)?;
        let outcome = dict
            .outcome(
                tx,
                OutcomeFields {
                    decision: record.decision,
                    category: record.category.as_deref().unwrap_or(""),
                    list: record.list.as_deref().unwrap_or(""),
                    stage: record.stage.unwrap_or(""),
                    reason: &reason_template(record.reason.as_deref().unwrap_or(""), &record.name),
                    response_code: record.response_code,
                },
            )
            .map_err(intern)?;
        *last_id = block::row_id(record.time_ms, *last_id);
        let row = BlockRow {
            id: *last_id,
            time_ms: record.time_ms,
            client,
            name,
            record_type: record.record_type,
            outcome,
            cache_hit: record.cache_hit,
            upstream_ms: record.upstream_ms,
        };
        let hour = record.time_ms.div_euclid(HOUR_MS);
        match hours.iter_mut().find(|(known, _)| *known == hour) {
            Some((_, rows)) => rows.push(row),
            None => hours.push((hour, vec![row])),
        }
    }
    let write = |source| StoreError::Sqlite { path: path.to_path_buf(), action: "insert a query-log block", source };
    let mut statement = tx.prepare_cached(INSERT_FRESH).map_err(write)?;
    let mut data = Vec::new();
    for (hour, rows) in &hours {
        data.clear();
        block::encode(rows, true, &mut data);
        let last = rows.last().map_or(0, |row| row.id);
        statement.execute(params![hour, last, data.as_slice()]).map_err(write)?;
        seal::add_hourly(tx, *hour, rows, &mut dict.meanings).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            action: "count query-log rows",
            source,
        })?;
    }
    let oldest = hours.iter().map(|(hour, _)| *hour).min().unwrap_or(i64::MAX);
    let newest = hours.iter().map(|(hour, _)| *hour).max().unwrap_or(i64::MAX);
    Ok((oldest, newest))
}

/// The client id of `record`'s sender: its address, or its privacy form in a
/// private group, with the device's name and owner, its network and group.
fn client_id(
    tx: &Transaction<'_>,
    path: &Path,
    attribution: &Attribution,
    privacy: &mut PrivacyRules,
    dict: &mut Dictionary,
    record: &QueryRecord,
    day: i64,
) -> Result<u32, StoreError> {
    let ip = record.client.to_canonical();
    let (client, label) = match privacy.client_name(tx, path, ip, record.group.as_deref(), record.time_ms)? {
        Some(client) => (client, None),
        None => (ip.to_string(), attribution.by_ip.get(&ip)),
    };
    let fields = ClientFields {
        client: &client,
        device: label.map_or("", |label| label.name.as_str()),
        owner: label.and_then(|label| label.owner.as_deref()).unwrap_or(""),
        network: record.network.as_deref().unwrap_or(""),
        group: record.group.as_deref().unwrap_or(""),
    };
    dict.client(tx, fields, day).map_err(|source| StoreError::Sqlite {
        path: path.to_path_buf(),
        action: "intern a query-log client",
        source,
    })
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
    writer.seal_ended_hours(i64::MAX);
    writer.checkpoint();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::allowed_row as record;

    fn fresh_hours(conn: &Connection) -> Vec<i64> {
        let mut statement = conn.prepare("SELECT DISTINCT hour FROM log_fresh ORDER BY hour").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    }

    /// An hour a writer left fresh (it stopped, or was killed, before the
    /// hour was over) is sealed when the next writer opens; new ids follow
    /// the sealed ones.
    #[test]
    fn an_hour_left_fresh_is_sealed_at_open_and_ids_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let hour = now_ms().div_euclid(HOUR_MS) - 2;
        let mut writer = Writer::open(&path, &LogSettings::default(), 8).unwrap();
        let records: Vec<QueryRecord> =
            (0..300).map(|n| record(hour * HOUR_MS + 5_000 + n / 3, &format!("n{n}.example"))).collect();
        writer.write_batch(&records).unwrap();
        // The batch's own hour may go on in the next batch: still fresh.
        assert_eq!(fresh_hours(&writer.conn), [hour]);
        let last_id = writer.last_id;
        drop(writer);

        let mut writer = Writer::open(&path, &LogSettings::default(), 8).unwrap();
        assert!(fresh_hours(&writer.conn).is_empty(), "sealed at open");
        let sealed: i64 = writer.conn.query_row("SELECT sum(rows) FROM log_sealed", [], |row| row.get(0)).unwrap();
        assert_eq!(sealed, 300);
        assert_eq!(writer.last_id, last_id, "the last id is read back from the sealed blocks");
        writer.write_batch(&[record(hour * HOUR_MS + 5_000, "again.example")]).unwrap();
        assert!(writer.last_id > last_id);
    }
}
