//! The query log's front door: a cheap, never-blocking handle for the DNS
//! path, and the one writer thread behind it.
//!
//! `record_with` puts the row into a channel holding at most
//! `channel_capacity` rows; when it is full the row is dropped and counted,
//! and until the writer has taken a batch off further rows are not even
//! built (one atomic load), so a DNS server saturated past what the writer
//! can take spends next to nothing on rows it cannot keep. Warnings about
//! dropped rows come from the writer thread, never from the DNS path. The writer thread (a plain
//! `std::thread`, not a tokio task) takes rows off the channel and commits
//! them in batches: a batch closes when it has `batch_max` rows or
//! `flush_interval` after its first row arrived, so the log lags the DNS path
//! by at most about `flush_interval`, and a crash loses at most the rows not
//! yet committed. A write transaction never holds more than `batch_max` rows,
//! so readers and the retention job wait for the write lock only briefly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::StoreError;
use super::record::QueryRecord;
use super::settings::LogSettings;
use super::time::now_ms;
use super::writer::{self, Writer};

enum Message {
    Record(QueryRecord),
    /// Write what is queued, then answer.
    Flush(Sender<()>),
    /// Write what is queued, then stop.
    Stop,
}

/// Counters shared by every handle and the writer.
struct Shared {
    /// Rows sent and not yet taken into a batch (the channel's own length is
    /// not known to it). The channel is unbounded and this bounds it: rows
    /// take memory as they wait, rather than a ring of `channel_capacity`
    /// slots allocated (and touched) at open, as `sync_channel` does. The
    /// writer takes a whole batch off before it subtracts, so a full channel
    /// stays full (rows are not built) until a batch is taken.
    queued: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
    written: AtomicU64,
    last_error_ms: AtomicI64,
    /// Whether batches are being written; set by the writer thread on each
    /// change, read by the dashboard (never by the DNS path).
    state: Mutex<LogState>,
}

/// Whether the query log is being written, for the dashboard: the writer's
/// last outcome, with when the trouble began.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogState {
    /// The last batch was written (or none has been tried yet).
    #[default]
    Ok,
    /// Batches are not written because the disk holding `db` is full (since
    /// `since_ms`, Unix ms); the writer retries every 5 s.
    DiskFull { since_ms: i64, db: PathBuf },
    /// Batches fail for another reason (since `since_ms`); `error` is the last one.
    WriteFailing { since_ms: i64, db: PathBuf, error: String },
}

impl Shared {
    fn set_state(&self, next: impl FnOnce(&LogState) -> Option<LogState>) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(next) = next(&state) {
            *state = next;
        }
    }
}

/// The longest the idle writer sleeps before looking for hours to seal and a
/// checkpoint that is due.
const IDLE_WAKE: Duration = Duration::from_millis(250);
/// While gathering a batch, how long the writer sleeps when the channel is
/// empty before it looks again (the channel holds far more rows than arrive
/// meanwhile).
const GATHER_POLL: Duration = Duration::from_millis(10);

/// Warnings about dropped rows or failed writes: at most one per this period.
const WARNING_PERIOD_MS: i64 = 10_000;

impl Shared {
    fn count_dropped(&self, rows: u64) {
        self.dropped.fetch_add(rows, Ordering::Relaxed);
    }
}

/// The writer's record of drops it has warned about.
struct DropWarnings {
    warned_total: u64,
    last_warning: Option<Instant>,
}

impl DropWarnings {
    /// Warns (at most once per [`WARNING_PERIOD_MS`]) when rows were dropped
    /// since the last warning.
    fn check(&mut self, shared: &Shared) {
        let total = shared.dropped.load(Ordering::Relaxed);
        let period = Duration::from_millis(WARNING_PERIOD_MS as u64);
        if total > self.warned_total && self.last_warning.is_none_or(|last| last.elapsed() >= period) {
            tracing::warn!(
                dropped_total = total,
                dropped_since_last_warning = total - self.warned_total,
                "query log: writer is behind, rows dropped (the DNS path did not wait)"
            );
            self.warned_total = total;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// How often a writer stopped by a full disk tries to write again.
const DISK_FULL_RETRY: Duration = Duration::from_secs(5);

/// The writer stopped by a full disk: one warning when it stops, one
/// message when it resumes; meanwhile rows are dropped and counted, and a
/// batch is tried every [`DISK_FULL_RETRY`].
struct DiskFull {
    /// When the disk was found full (or last retried), while it is.
    full_since: Option<Instant>,
    /// Rows dropped since the disk filled.
    dropped: u64,
}

impl DiskFull {
    /// True while batches are dropped without trying.
    fn waiting(&self) -> bool {
        self.full_since.is_some_and(|since| since.elapsed() < DISK_FULL_RETRY)
    }

    fn stopped(&mut self, path: &Path, error: &StoreError, shared: &Shared) {
        if self.full_since.is_none() {
            let since_ms = now_ms();
            shared.set_state(|state| match state {
                LogState::DiskFull { .. } => None,
                _ => Some(LogState::DiskFull { since_ms, db: path.to_path_buf() }),
            });
            let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
            tracing::warn!(
                db = %path.display(),
                %error,
                "query log: the disk is full; logging stopped, DNS keeps answering; free space in {}",
                dir.display()
            );
        }
        self.full_since = Some(Instant::now());
    }

    /// Counts rows not written for want of space. They are not the
    /// "writer is behind" kind, so that warning does not count them.
    fn drop_batch(&mut self, rows: u64, shared: &Shared, drops: &mut DropWarnings) {
        shared.count_dropped(rows);
        drops.warned_total += rows;
        self.dropped += rows;
    }

    fn resumed(&mut self, path: &Path) {
        if self.full_since.take().is_some() {
            tracing::warn!(
                db = %path.display(),
                rows_not_written = self.dropped,
                "query log: there is disk space again; logging resumed"
            );
            self.dropped = 0;
        }
    }
}

/// True at most once per [`WARNING_PERIOD_MS`] for each `last` clock.
fn rate_limit(last: &AtomicI64) -> bool {
    let now = now_ms();
    let previous = last.load(Ordering::Relaxed);
    now.saturating_sub(previous) >= WARNING_PERIOD_MS
        && last.compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The DNS path's handle on the query log: cheap to clone, never blocks.
#[derive(Clone)]
pub struct QueryLog {
    sender: Sender<Message>,
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl QueryLog {
    /// Opens (creating or migrating) the database at `path` and starts the
    /// writer thread.
    pub fn open(path: &Path, settings: LogSettings) -> Result<QueryLog, StoreError> {
        settings.validate()?;
        let writer = Writer::open(path, &settings, 64)?;
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            queued: AtomicUsize::new(0),
            capacity: settings.channel_capacity,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            last_error_ms: AtomicI64::new(i64::MIN),
            state: Mutex::new(LogState::Ok),
        });
        let thread = std::thread::Builder::new()
            .name("hedgerow-log-writer".into())
            .spawn({
                let shared = shared.clone();
                let path = path.to_path_buf();
                move || {
                    crate::priority::yield_to_dns();
                    run_writer(writer, receiver, &shared, &settings, &path)
                }
            })
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                action: "start the query-log writer thread",
                source,
            })?;
        Ok(QueryLog { sender, shared, thread: Arc::new(Mutex::new(Some(thread))) })
    }

    /// Queues one row. Never blocks: when the channel is full (or the writer
    /// has stopped) the row is dropped and counted; the writer warns about
    /// drops at most once every 10 s.
    pub fn record(&self, record: QueryRecord) {
        self.record_with(|| record);
    }

    /// [`record`](Self::record) for the DNS path: `build` runs only when the
    /// row can be queued, so an overloaded server does not build rows only
    /// to drop them.
    #[inline]
    pub fn record_with(&self, build: impl FnOnce() -> QueryRecord) {
        let shared = &*self.shared;
        // Senders race past the check by at most one row each.
        if shared.queued.load(Ordering::Relaxed) >= shared.capacity {
            shared.count_dropped(1);
            return;
        }
        shared.queued.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(Message::Record(build())).is_err() {
            // The writer has stopped: the row stays counted as queued, so
            // once the channel's worth is counted rows are no longer built.
            shared.count_dropped(1);
        }
    }

    /// Rows dropped so far: the channel was full, or a batch failed to write.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Rows committed so far. Counted after each commit returns, so every row
    /// counted here is in the database.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Whether the log is being written now: ok, stopped by a full disk, or
    /// failing for another reason (each with since when).
    pub fn state(&self) -> LogState {
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Waits until every row queued before this call is written (or dropped).
    /// For tests and admin tools; the DNS path never calls it.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        if self.sender.send(Message::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    }

    /// Writes what is queued and stops the writer (clean shutdown). Rows that
    /// other handles record afterwards are dropped and counted.
    pub fn close(self) {
        let _ = self.sender.send(Message::Stop);
        let thread = self.thread.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("query log: the writer thread panicked");
        }
    }
}

/// The writer thread: gather a batch, write it, repeat until stopped or every
/// handle is gone.
fn run_writer(mut writer: Writer, receiver: Receiver<Message>, shared: &Shared, settings: &LogSettings, path: &Path) {
    let mut batch = Vec::with_capacity(settings.batch_max);
    let mut acks = Vec::new();
    let mut stop = false;
    let mut drops = DropWarnings { warned_total: 0, last_warning: None };
    let mut disk = DiskFull { full_since: None, dropped: 0 };
    let mut behind = false;
    while !stop {
        // Sleep until the first message of the next batch, checkpointing
        // meanwhile if commits are waiting for one.
        let wait = writer.checkpoint_due_in().unwrap_or(IDLE_WAKE).min(IDLE_WAKE);
        let mut next = match receiver.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => {
                if disk.full_since.is_none() {
                    writer.seal_ended_hours(i64::MAX);
                }
                if writer.checkpoint_due_in().is_some_and(|due| due.is_zero()) {
                    writer.checkpoint();
                }
                drops.check(shared);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let deadline = Instant::now() + settings.flush_interval;
        // Whether the channel ran dry while this batch was gathered: a whole
        // batch waiting means the writer is falling behind.
        let mut waited = false;
        loop {
            match next.take() {
                Some(Message::Record(record)) => batch.push(record),
                Some(Message::Flush(ack)) => {
                    acks.push(ack);
                    break;
                }
                Some(Message::Stop) => {
                    stop = true;
                    break;
                }
                None => {}
            }
            if batch.len() >= settings.batch_max {
                break;
            }
            next = match receiver.try_recv() {
                Ok(message) => Some(message),
                Err(mpsc::TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    // Sleep rather than wait on the channel: a receiver
                    // blocked on it is woken by every row sent, a system
                    // call and a switch to this thread per query on the DNS
                    // path; asleep, it costs the senders nothing.
                    std::thread::sleep((deadline - now).min(GATHER_POLL));
                    waited = true;
                    None
                }
            };
        }
        // Behind: a whole batch was waiting. Caught up: the channel ran dry.
        let behind_now = batch.len() >= settings.batch_max && !waited;
        if behind_now != behind && (behind_now || waited) {
            behind = behind_now;
            crate::priority::keep_up(behind);
        }
        // A batch is off the channel, so there is room again.
        shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        drops.check(shared);
        if !batch.is_empty() {
            if disk.waiting() {
                // The disk is full: drop without trying until the next retry.
                disk.drop_batch(batch.len() as u64, shared, &mut drops);
            } else {
                match writer.write_batch(&batch) {
                    Ok(()) => {
                        shared.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        disk.resumed(path);
                        shared.set_state(|state| (*state != LogState::Ok).then_some(LogState::Ok));
                    }
                    Err(error) if error.is_disk_full() => {
                        disk.stopped(path, &error, shared);
                        disk.drop_batch(batch.len() as u64, shared, &mut drops);
                    }
                    Err(error) => {
                        shared.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        let error_text = error.to_string();
                        shared.set_state(|state| {
                            let since_ms = match state {
                                LogState::WriteFailing { since_ms, .. } => *since_ms,
                                _ => now_ms(),
                            };
                            Some(LogState::WriteFailing { since_ms, db: path.to_path_buf(), error: error_text })
                        });
                        if rate_limit(&shared.last_error_ms) {
                            tracing::error!(db = %path.display(), rows = batch.len(), %error, "query log: a batch could not be written and was dropped");
                        }
                    }
                }
            }
            batch.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    if writer.checkpoint_due_in().is_some() {
        writer.checkpoint();
    }
}

/// Bulk-loads `records` into the log at `db` (attribution and privacy as the
/// writer applies them), committing every 50,000 rows, with 512 MB of page
/// cache. For tests, benchmarks and imports; not for the DNS path, and not
/// while a `QueryLog` writes the same file. Returns the rows written.
pub fn import_records(
    db: &Path,
    records: impl IntoIterator<Item = QueryRecord>,
    settings: &LogSettings,
) -> Result<u64, StoreError> {
    settings.validate()?;
    let mut writer = Writer::open(db, settings, 512)?;
    writer::write_all(&mut writer, records, 50_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unique names grow the dictionary, so the cap is met sooner.
    fn record(n: u64) -> QueryRecord {
        crate::store::record::allowed_row(now_ms(), &format!("host{n}.padding-to-fill-the-database-sooner.example"))
    }

    /// The state follows the writer: ok, then disk full (since when, which
    /// file) once a batch meets the cap, ok again when space returns; a
    /// write that fails for another reason is "write failing".
    #[test]
    fn the_state_says_whether_rows_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hedgerow.db");
        let settings = LogSettings { max_pages: Some(512), ..LogSettings::default() };
        let log = QueryLog::open(&db, settings).unwrap();
        assert_eq!(log.state(), LogState::Ok);
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE filler (data BLOB)").unwrap();
        let page_count = || conn.query_row("PRAGMA page_count", [], |row| row.get::<_, u32>(0)).unwrap();
        while page_count() < 512 {
            conn.execute("INSERT INTO filler (data) VALUES (zeroblob(3000))", []).unwrap();
        }
        let started = now_ms();
        let mut n = 0;
        while !matches!(log.state(), LogState::DiskFull { .. }) {
            assert!(n < 100_000, "the cap was never met: {:?}", log.state());
            for _ in 0..500 {
                log.record(record(n));
                n += 1;
            }
            log.flush();
        }
        let LogState::DiskFull { since_ms, db: named } = log.state() else { unreachable!() };
        assert!(since_ms >= started && since_ms <= now_ms());
        assert_eq!(named, db);

        conn.execute_batch("DROP TABLE filler").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.state() != LogState::Ok {
            assert!(Instant::now() < deadline, "the state never went back to ok: {:?}", log.state());
            log.record(record(n));
            n += 1;
            log.flush();
            std::thread::sleep(Duration::from_millis(100));
        }

        // Another failure: the table the writer inserts into is gone.
        conn.execute_batch("DROP TABLE log_fresh").unwrap();
        log.record(record(n));
        log.flush();
        match log.state() {
            LogState::WriteFailing { db: named, error, .. } => {
                assert_eq!(named, db);
                assert!(error.contains("log_fresh"), "{error}");
            }
            other => panic!("expected write failing, got {other:?}"),
        }
        log.close();
    }
}
