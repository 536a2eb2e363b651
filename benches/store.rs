//! The query log's figures: writer throughput, search on a 10-million-row
//! log, roll-up and retention costs, and the annual review over a year of
//! roll-ups for a 1,000-device school. Prints a table.
//!
//!     cargo bench --bench store
//!
//! `HEDGEROW_BENCH_ROWS` (default 10,000,000) scales the big log down for a
//! quick run; 0 measures the writer alone. Everything is generated in a temporary directory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hedgerow::store::devices::import_csv;
use hedgerow::store::log::{QueryLog, import_records};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::retention::{annual_review, roll_up, run_retention};
use hedgerow::store::search::{Search, search};
use hedgerow::store::time::{DAY_MS, day_number, day_string, now_ms};
use hedgerow::store::{LogSettings, Privacy};
use rusqlite::{Connection, params};

const DEVICES: u32 = 1_000;
const DAYS: i64 = 30;
const CATEGORIES: [&str; 12] = [
    "pornography",
    "gambling",
    "social-media",
    "games",
    "malware",
    "ads",
    "dating",
    "chat",
    "ai-chat",
    "streaming",
    "drugs",
    "violence",
];

/// xorshift64*: deterministic and fast.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Device `i`: 700 pupils, 200 staff, 100 guests (no device names).
fn client(i: u32) -> (IpAddr, &'static str) {
    let group = match i {
        0..700 => "pupil",
        700..900 => "staff",
        _ => "guest",
    };
    let octet = match group {
        "pupil" => 1,
        "staff" => 2,
        _ => 9,
    };
    (IpAddr::V4(Ipv4Addr::new(10, octet, (i / 250) as u8, (i % 250) as u8 + 1)), group)
}

struct Interned {
    groups: [Arc<str>; 3],
    networks: [Arc<str>; 3],
    categories: Vec<Arc<str>>,
}

impl Interned {
    fn new() -> Interned {
        Interned {
            groups: [Arc::from("pupil"), Arc::from("staff"), Arc::from("guest")],
            networks: [Arc::from("pupil-wifi"), Arc::from("staff-lan"), Arc::from("guest-wifi")],
            categories: CATEGORIES.iter().map(|c| Arc::from(*c)).collect(),
        }
    }
}

/// One synthetic query at `time_ms`: skewed popular names, 93% allowed.
fn synthetic(random: &mut Random, interned: &Interned, time_ms: i64) -> QueryRecord {
    let device = random.below(u64::from(DEVICES)) as u32;
    let (ip, group) = client(device);
    let g = match group {
        "pupil" => 0,
        "staff" => 1,
        _ => 2,
    };
    // Cube of a uniform number: a few names are very popular, most are rare.
    let u = random.below(1 << 20) as f64 / f64::from(1 << 20);
    let domain = (u * u * u * 50_000.0) as u64;
    let prefix = ["www.", "", "cdn.", "api.", "img."][random.below(5) as usize];
    let name = format!("{prefix}site{domain}.example{}.com", domain % 40);
    let roll = random.below(1000);
    let (decision, category, response_code) = match roll {
        0..930 => ("allowed", None, 0),
        930..980 => ("blocked", Some(interned.categories[(domain % CATEGORIES.len() as u64) as usize].clone()), 3),
        980..990 => ("safesearch", None, 0),
        990..995 => ("bypass", Some(Arc::from("encrypted-dns")), 3),
        995..998 => ("refused", None, 5),
        _ => ("error", None, 2),
    };
    let cache_hit = random.below(3) != 0;
    QueryRecord {
        time_ms,
        client: ip,
        network: Some(interned.networks[g].clone()),
        group: Some(interned.groups[g].clone()),
        name,
        record_type: if random.below(4) == 0 { 28 } else { 1 },
        decision,
        list: category.clone(),
        category,
        response_code,
        upstream_ms: (!cache_hit).then(|| random.below(80) as u32 + 2),
        cache_hit,
        stage: None,
        reason: None,
    }
}

fn register_devices(db: &Path) {
    let mut csv = String::from("ip,mac,name,owner,group\n");
    for i in 0..900 {
        let (ip, group) = client(i);
        let owner = if group == "pupil" { format!("Pupil {i}") } else { format!("Staff member {i}") };
        csv.push_str(&format!("{ip},,DEV-{i:04},{owner},{group}\n"));
    }
    let report = import_csv(db, &csv).expect("devices");
    assert_eq!(report.imported, 900);
}

struct Table(Vec<(String, String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, figure: impl Into<String>, target: impl Into<String>) {
        let (what, figure, target) = (what.into(), figure.into(), target.into());
        eprintln!("  {what}: {figure}");
        self.0.push((what, figure, target));
    }

    fn print(&self) {
        let width = self.0.iter().map(|row| row.0.len()).max().unwrap_or(0);
        let figure_width = self.0.iter().map(|row| row.1.len()).max().unwrap_or(0);
        println!();
        println!("{:width$}  {:>figure_width$}  target", "measure", "figure");
        println!("{}", "-".repeat(width + figure_width + 12));
        for (what, figure, target) in &self.0 {
            println!("{what:width$}  {figure:>figure_width$}  {target}");
        }
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// CPU seconds (user + system) used so far by this process's thread named
/// `name` (Linux), to tell the writer's own cost from time lost to other
/// load on a shared machine.
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    let ticks_per_second = 100.0; // USER_HZ on Linux
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let task = task.path();
        if std::fs::read_to_string(task.join("comm")).map_or(true, |comm| comm.trim() != name) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let (user, system): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        return Some((user + system) / ticks_per_second);
    }
    None
}

/// What one run of the writer measured.
struct WriterRun {
    rows_per_second: f64,
    /// Rows per second of the writer thread's own CPU time.
    rows_per_cpu_second: Option<f64>,
    dropped: u64,
}

/// Pushes `rows` records through a `QueryLog`, keeping the channel from
/// overflowing, and measures from the first record to the last commit.
fn writer_throughput(db: &Path, rows: u64, settings: LogSettings) -> WriterRun {
    let log = QueryLog::open(db, settings.clone()).expect("open log");
    let interned = Interned::new();
    let mut random = Random(7);
    let cpu_before = thread_cpu_seconds("hedgerow-log-wr");
    let start = Instant::now();
    let base = now_ms();
    for i in 0..rows {
        log.record(synthetic(&mut random, &interned, base + i as i64 / 100));
        if i % 1024 == 0 {
            while (i + 1).saturating_sub(log.written() + log.dropped()) > settings.channel_capacity as u64 / 2 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    while log.written() + log.dropped() < rows {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    // The thread names itself as it starts: not yet found means no CPU used yet.
    let cpu = thread_cpu_seconds("hedgerow-log-wr").map(|after| after - cpu_before.unwrap_or(0.0));
    let dropped = log.dropped();
    log.close();
    WriterRun {
        rows_per_second: rows as f64 / elapsed.as_secs_f64(),
        rows_per_cpu_second: cpu.filter(|&cpu| cpu > 0.0).map(|cpu| rows as f64 / cpu),
        dropped,
    }
}

impl WriterRun {
    fn figure(&self) -> String {
        let cpu = self.rows_per_cpu_second.map_or(String::new(), |rate| format!(" ({rate:.0} per writer CPU-s)"));
        format!("{:.0} rows/s{cpu}, {} dropped", self.rows_per_second, self.dropped)
    }
}

fn main() {
    let total_rows: u64 =
        std::env::var("HEDGEROW_BENCH_ROWS").ok().and_then(|value| value.parse().ok()).unwrap_or(10_000_000);
    let work = tempfile::tempdir().expect("temp dir");
    let mut table = Table(Vec::new());

    // 1. Writer throughput through the real QueryLog (attribution on, guest rows hashed).
    eprintln!("writer throughput ...");
    let settings = LogSettings { guest_privacy: Privacy::Hash, ..LogSettings::default() };
    for batch_max in [2_000, 10_000, 20_000] {
        let db = work.path().join(format!("writer-{batch_max}.db"));
        register_devices(&db);
        let run = writer_throughput(&db, 1_000_000, LogSettings { batch_max, ..settings.clone() });
        table.row(format!("writer: 1M rows through QueryLog, batch_max {batch_max}"), run.figure(), ">= 50,000 rows/s");
    }

    // record() itself: 1M calls into a channel big enough to hold them.
    let db = work.path().join("record.db");
    let log = QueryLog::open(&db, LogSettings { channel_capacity: 1_100_000, ..settings.clone() }).expect("open");
    let interned = Interned::new();
    let mut random = Random(9);
    let records: Vec<QueryRecord> = (0..1_000_000).map(|i| synthetic(&mut random, &interned, i)).collect();
    let start = Instant::now();
    for record in records {
        log.record(record);
    }
    let per_call = start.elapsed().as_nanos() as f64 / 1e6;
    log.close();
    table.row("record(): cost per call", format!("{per_call:.0} ns"), "never blocks");

    if total_rows == 0 {
        table.print();
        return;
    }

    // 2. A 10M-row log: 1,000 devices over 30 days.
    eprintln!("generating a {total_rows}-row log ...");
    let db = work.path().join("big.db");
    register_devices(&db);
    let today = day_number(now_ms());
    let first_day = today - DAYS;
    let per_day = total_rows / DAYS as u64;
    let start = Instant::now();
    let interned = Interned::new();
    let mut random = Random(42);
    let records = (0..total_rows).map(|i| {
        // School hours: 07:30 to 17:30 UTC, in time order.
        let day = first_day + (i / per_day) as i64;
        let within = (i % per_day) as i64 * (10 * 3_600_000) / per_day as i64;
        synthetic(&mut random, &interned, day * DAY_MS + 27_000_000 + within)
    });
    let written = import_records(&db, records, &LogSettings::default()).expect("bulk load");
    let generation = start.elapsed();
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(db.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    table.row(
        format!("generate {written} rows (import_records, 50k/txn)"),
        format!("{:.0} s, {:.0} rows/s", generation.as_secs_f64(), written as f64 / generation.as_secs_f64()),
        "a few minutes",
    );
    table.row("database size", format!("{:.2} GB", size as f64 / 1e9), "");

    // Search one client over one day: 20 different clients and days.
    let mut times = Vec::new();
    let mut found = 0;
    for probe in 0..20u32 {
        let (ip, _) = client(probe * 37 % 900);
        let day = first_day + 3 + i64::from(probe) % 25;
        let query = Search {
            client: Some(ip.to_string()),
            since_ms: Some(day * DAY_MS),
            until_ms: Some((day + 1) * DAY_MS),
            limit: 1_000,
            ..Search::default()
        };
        let start = Instant::now();
        let rows = search(&db, &query).expect("search");
        times.push(start.elapsed());
        found += rows.len();
    }
    let first = times[0];
    times.sort();
    table.row(
        "search: one client, one day (first)",
        format!("{} ({} rows avg)", millis(first), found / 20),
        "< 200 ms",
    );
    table.row("search: one client, one day (median of 20)", millis(times[10]), "< 200 ms");
    table.row("search: one client, one day (max of 20)", millis(times[19]), "< 200 ms");

    let timed = |query: Search| {
        let start = Instant::now();
        let rows = search(&db, &query).expect("search");
        (start.elapsed(), rows.len())
    };
    let day = first_day + 10;
    let (time, rows) = timed(Search {
        client: Some("DEV-0123".into()),
        since_ms: Some(day * DAY_MS),
        until_ms: Some((day + 1) * DAY_MS),
        limit: 1_000,
        ..Search::default()
    });
    table.row("search: device name, one day", format!("{} ({rows} rows)", millis(time)), "");
    let (time, rows) = timed(Search { client: Some("10.1.0.124".into()), limit: 100, ..Search::default() });
    table.row("search: one client, newest 100 of 30 days", format!("{} ({rows} rows)", millis(time)), "");
    let (time, rows) = timed(Search {
        decision: Some("blocked".into()),
        since_ms: Some(day * DAY_MS),
        until_ms: Some((day + 1) * DAY_MS),
        limit: 100,
        ..Search::default()
    });
    table.row("search: blocked, one day, newest 100", format!("{} ({rows} rows)", millis(time)), "");
    let (time, rows) = timed(Search {
        name: Some("example7.com".into()),
        since_ms: Some(day * DAY_MS),
        until_ms: Some((day + 1) * DAY_MS),
        limit: 100,
        ..Search::default()
    });
    table.row("search: domain suffix, one day, newest 100", format!("{} ({rows} rows)", millis(time)), "");
    let (time, rows) = timed(Search { name: Some("site3.example3.com".into()), limit: 100, ..Search::default() });
    table.row("search: a popular domain, 30 days, newest 100", format!("{} ({rows} rows)", millis(time)), "");
    // Names near the end of the skewed range are asked for a few times a month.
    let (time, rows) = timed(Search { name: Some("site49000.example0.com".into()), limit: 100, ..Search::default() });
    table.row("search: a rare domain, 30 days", format!("{} ({rows} rows)", millis(time)), "");
    let (time, rows) = timed(Search { name: Some("no-such-name.example".into()), limit: 100, ..Search::default() });
    table.row("search: a name never asked for, 30 days", format!("{} ({rows} rows)", millis(time)), "");

    // The writer while a heavy search runs: WAL readers do not stall it.
    eprintln!("writer under concurrent searches ...");
    let stop = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicU64::new(0));
    let reader = {
        let (db, stop, searches) = (db.clone(), stop.clone(), searches.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let query = Search { category: Some("games".into()), limit: 100_000, ..Search::default() };
                search(&db, &query).expect("search");
                searches.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let run = writer_throughput(&db, 300_000, LogSettings::default());
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    table.row(
        format!("writer: 300k rows into the big log during {} searches", searches.load(Ordering::Relaxed)),
        run.figure(),
        "no stall",
    );

    // Roll-ups of the 30 days, then retention of the oldest day.
    eprintln!("roll-ups and retention ...");
    let now = today * DAY_MS + 12 * 3_600_000;
    let start = Instant::now();
    let days = roll_up(&db, now).expect("roll up");
    let elapsed = start.elapsed();
    table.row(
        format!("roll_up: {days} days of ~{per_day} rows"),
        format!("{} per day", millis(elapsed / days.max(1) as u32)),
        "hourly job",
    );
    let start = Instant::now();
    let report = run_retention(&db, (DAYS - 1) as u32, now).expect("retention");
    let elapsed = start.elapsed();
    table.row(
        "retention: delete the oldest day",
        format!(
            "{} rows in {:.1} s ({:.0} rows/s incl. pauses)",
            report.rows_deleted,
            elapsed.as_secs_f64(),
            report.rows_deleted as f64 / elapsed.as_secs_f64()
        ),
        "5,000 rows/txn",
    );

    // 3. The annual review over a year of roll-ups for a 1,000-device school.
    eprintln!("annual review ...");
    let db = work.path().join("year.db");
    register_devices(&db);
    let (first, last) = (today - 365, today - 1);
    generate_year_of_rollups(&db, first, last);
    let start = Instant::now();
    let figures = annual_review(&db, &day_string(first), &day_string(last)).expect("review");
    let elapsed = start.elapsed();
    let total: u64 = figures.totals.iter().map(|t| t.count).sum();
    table.row(
        "annual review: a year of roll-ups",
        format!("{} ({} days, {total} queries)", millis(elapsed), figures.days_rolled_up),
        "< 1 s",
    );

    table.print();
}

/// A year of roll-ups as `roll_up` would write them for a 1,000-device
/// school: 3 groups x (allowed, 12 blocked categories, safesearch, bypass,
/// refused, error) per day, 20 top blocked names per group, devices per day.
fn generate_year_of_rollups(db: &Path, first: i64, last: i64) {
    let mut conn = Connection::open(db).expect("open");
    let tx = conn.transaction().expect("transaction");
    let mut random = Random(5);
    {
        let mut counts = tx
            .prepare(
                "INSERT INTO daily_counts (day, group_name, category, decision, count) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare");
        let mut top = tx
            .prepare("INSERT INTO daily_top_blocked (day, group_name, name, count) VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare");
        let mut devices =
            tx.prepare("INSERT INTO daily_devices (day, distinct_devices) VALUES (?1, ?2)").expect("prepare");
        let mut days =
            tx.prepare("INSERT INTO rollup_days (day, raw_rows, rolled_up_ms) VALUES (?1, ?2, ?3)").expect("prepare");
        for day in first..=last {
            let text = day_string(day);
            let weekend = (day + 3).rem_euclid(7) >= 5;
            let scale = if weekend { 20 } else { 1 };
            let mut raw = 0i64;
            for group in ["pupil", "staff", "guest"] {
                let mut put = |category: &str, decision: &str, count: i64| {
                    raw += count;
                    counts.execute(params![text, group, category, decision, count]).expect("insert");
                };
                put("", "allowed", 250_000 / scale + random.below(20_000) as i64);
                for category in CATEGORIES {
                    put(category, "blocked", 800 / scale + random.below(400) as i64);
                }
                put("", "safesearch", 2_000 / scale);
                put("encrypted-dns", "bypass", 300 / scale);
                put("", "refused", 50);
                put("", "error", 30);
                for rank in 0..20 {
                    let name = format!("site{}.blocked.example", random.below(400));
                    let _ = top.execute(params![text, group, name, 500 - rank * 20]);
                }
            }
            devices.execute(params![text, if weekend { 40 } else { 900 + random.below(100) as i64 }]).expect("insert");
            days.execute(params![text, raw, now_ms()]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}
