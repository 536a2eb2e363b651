//! The query log on a full disk: logging stops with one clear warning, rows
//! are counted as dropped, nothing panics, and once space is freed rows are
//! written again with the database intact. On a real 8 MB tmpfs (the test
//! mounts one; it runs as root), driving `QueryLog` directly (no DNS). Where
//! mounting is refused (or `HEDGEROW_TEST_NO_TMPFS` is set) the disk is
//! played by `PRAGMA max_page_count` on the log connection instead, filled
//! and freed with a table of filler, and the test says so.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedgerow::store::read::rows_between;
use hedgerow::store::record::QueryRecord;
use hedgerow::store::time::now_ms;
use hedgerow::store::{LogSettings, QueryLog};
use rusqlite::Connection;

/// Pages the log connection may use when the disk is played by
/// `max_page_count` (8 MB of 4 KB pages, like the tmpfs).
const CAPPED_PAGES: u32 = 2_048;

/// A small disk: a tmpfs mounted for this test (unmounted when dropped), or
/// a page cap on the log connection.
struct Disk {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Disk {
    fn new() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("HEDGEROW_TEST_NO_TMPFS").is_some() {
            eprintln!("HEDGEROW_TEST_NO_TMPFS is set: the full disk is played by PRAGMA max_page_count");
            return Disk { dir, mounted: false };
        }
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(dir.path()).status();
        match status {
            Ok(status) if status.success() => Disk { dir, mounted: true },
            other => {
                eprintln!(
                    "mounting a tmpfs was refused ({other:?}): the full disk is played by PRAGMA max_page_count \
                     on the log connection instead"
                );
                Disk { dir, mounted: false }
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn settings(&self) -> LogSettings {
        LogSettings { max_pages: (!self.mounted).then_some(CAPPED_PAGES), ..LogSettings::default() }
    }

    /// Takes all the space there is.
    fn fill(&self, db: &Path) {
        if self.mounted {
            fill(self.path());
        } else {
            let conn = Connection::open(db).unwrap();
            conn.execute_batch("CREATE TABLE filler (data BLOB)").unwrap();
            let page_count = || conn.query_row("PRAGMA page_count", [], |row| row.get::<_, u32>(0)).unwrap();
            while page_count() < CAPPED_PAGES {
                conn.execute("INSERT INTO filler (data) VALUES (zeroblob(3000))", []).unwrap();
            }
        }
    }

    /// Gives the space back.
    fn free(&self, db: &Path) {
        if self.mounted {
            std::fs::remove_file(self.path().join("filler")).unwrap();
        } else {
            Connection::open(db).unwrap().execute_batch("DROP TABLE filler").unwrap();
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.dir.path()).status();
        }
    }
}

/// Everything the store logs through `tracing`, for the messages' wording.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn record(n: u64) -> QueryRecord {
    QueryRecord {
        time_ms: now_ms(),
        client: format!("10.{}.{}.{}", n % 7, n / 7 % 250, n % 250).parse().unwrap(),
        network: Some(Arc::from("pupil-vlan")),
        group: Some(Arc::from("pupil")),
        // Unique names, so every row also grows the name dictionary.
        name: format!("host{n}.padding-to-fill-the-disk-sooner.example"),
        record_type: 1,
        decision: "allowed",
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: Some(12),
        cache_hit: false,
        stage: None,
        reason: None,
    }
}

/// Fills the file system at `dir` with one file until writing fails.
fn fill(dir: &Path) {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x55u8; 16 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                assert_eq!(error.raw_os_error(), Some(libc_enospc()), "{error}");
                break;
            }
        }
    }
    let _ = file.sync_all();
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

#[test]
fn a_full_disk_stops_logging_with_one_warning_and_logging_resumes_when_space_returns() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).init();

    let disk = Disk::new();
    let db = disk.path().join("hedgerow.db");
    let log = QueryLog::open(&db, disk.settings()).unwrap();
    let mut n = 0u64;
    for _ in 0..500 {
        log.record(record(n));
        n += 1;
    }
    log.flush();
    assert_eq!((log.written(), log.dropped()), (500, 0));

    // Fill the disk, then log until rows are refused for want of space.
    disk.fill(&db);
    let deadline = Instant::now() + Duration::from_secs(120);
    while log.dropped() == 0 {
        assert!(Instant::now() < deadline, "rows were still written to a full disk");
        for _ in 0..2_000 {
            log.record(record(n));
            n += 1;
        }
        log.flush();
    }
    // While the disk stays full, more rows are dropped and counted, not written.
    let (written, dropped) = (log.written(), log.dropped());
    for _ in 0..3_000 {
        log.record(record(n));
        n += 1;
    }
    log.flush();
    assert_eq!(log.written() + log.dropped(), written + dropped + 3_000, "every row is written or counted");
    assert!(log.dropped() > dropped);
    eprintln!("disk full after {written} rows written; {} dropped so far", log.dropped());

    // Free space: within a few retries rows are written again.
    disk.free(&db);
    let resumed_from = log.written();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.written() == resumed_from {
        assert!(Instant::now() < deadline, "logging did not resume once space was freed");
        log.record(record(n));
        n += 1;
        log.flush();
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..100 {
        log.record(record(n));
        n += 1;
    }
    log.flush();
    let (written, dropped) = (log.written(), log.dropped());
    assert_eq!(written + dropped, n, "every row recorded was either written or counted as dropped");
    log.close();

    let text = captured.text();
    let warning = "query log: the disk is full; logging stopped, DNS keeps answering; free space in";
    assert_eq!(text.matches(warning).count(), 1, "one warning while the disk was full:\n{text}");
    assert!(text.contains(&disk.path().display().to_string()), "the warning names the directory");
    assert_eq!(text.matches("logging resumed").count(), 1, "{text}");
    assert!(!text.contains("writer is behind"), "a full disk is not reported as an overloaded writer:\n{text}");

    let conn = Connection::open(&db).unwrap();
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);
    let rows = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(rows.len() as u64, written, "the rows counted as written are all there");
    let names: std::collections::HashSet<String> = rows.iter().map(|row| row.name.clone()).collect();
    assert_eq!(names.len(), rows.len(), "no row twice");
    assert!(names.contains(&record(0).name));
    assert!(names.contains(&record(n - 1).name), "rows after space returned are there");
    assert!(rows.iter().filter(|row| row.name.starts_with("host")).count() > 100);
}
