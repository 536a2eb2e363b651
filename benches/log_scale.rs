//! The query log at a secondary school's scale (issue 12): on the synthetic
//! school (`hedgerow synthesize`, [`hedgerow::synth`]) measures, against the
//! issue's targets,
//!
//! - bytes on disk per row (file + WAL, all tables; per table from `dbstat`);
//! - the first page (100 rows) of searches by device, by IP, by name with its
//!   subdomains, and by category and decision, each over the last hour, day
//!   and 30 days ending at the newest row (and again ending at the busiest
//!   hour): p95 over about 20 varied targets per kind (popular and rare);
//! - the dashboard overview's counts (`store::counts`): lookups and blocks
//!   per hour per group over 7 days, top blocked names and devices today;
//! - sustained writing through `QueryLog` (default settings) of the school's
//!   own traffic, replayed as fast as the writer takes it: rows/s, rows per
//!   second of the writer thread's CPU (it runs on one core), rows dropped;
//! - retention removing the oldest day (a school day) with `run_retention`.
//!
//! ```text
//! cargo bench --bench log_scale                       # 150 M rows, generated into a temp dir
//! HEDGEROW_LOG_ROWS=10000000 cargo bench --bench log_scale
//! HEDGEROW_LOG_DB=/tmp/school.db cargo bench --bench log_scale
//! ```
//!
//! `HEDGEROW_LOG_DB` reuses a database (made by this bench with
//! `HEDGEROW_LOG_KEEP=PATH`, or by `hedgerow synthesize`); NOTE the
//! retention step deletes its oldest day. Results go to
//! `benches/results/log-scale-<date>.jsonl`, one JSON object a measure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hedgerow::store::block;
use hedgerow::store::counts;
use hedgerow::store::log::QueryLog;
use hedgerow::store::retention::run_retention;
use hedgerow::store::search::{Search, search};
use hedgerow::store::time::{DAY_MS, day_number, day_string, now_ms};
use hedgerow::store::{LogSettings, Privacy};
use hedgerow::synth::{self, Options, school};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

const HOUR_MS: i64 = 3_600_000;

struct Results {
    rows: u64,
    lines: Vec<serde_json::Value>,
    table: Vec<(String, String, String)>,
}

impl Results {
    fn add(&mut self, measure: &str, value: f64, unit: &str, shown: String, target: &str, extra: serde_json::Value) {
        eprintln!("  {measure}: {shown}");
        let mut line = json!({"measure": measure, "value": value, "unit": unit, "target": target, "rows": self.rows});
        if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
            line.extend(extra.clone());
        }
        self.lines.push(line);
        self.table.push((measure.to_string(), shown, target.to_string()));
    }

    fn print(&self) {
        let width = self.table.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let figure = self.table.iter().map(|r| r.1.len()).max().unwrap_or(0);
        println!("\nquery log at scale: {} rows", self.rows);
        println!("{:width$}  {:>figure$}  target", "measure", "figure");
        println!("{}", "-".repeat(width + figure + 14));
        for (what, shown, target) in &self.table {
            println!("{what:width$}  {shown:>figure$}  {target}");
        }
    }

    fn save(&self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
        let path = dir.join(format!("log-scale-{}.jsonl", day_string(day_number(now_ms()))));
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("results file");
        let run = now_ms();
        for line in &self.lines {
            let mut line = line.clone();
            line["run_ms"] = json!(run);
            writeln!(file, "{line}").expect("write results");
        }
        println!("results appended to {}", path.display());
    }
}

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database")
}

/// Rows in the log, and the newest row's time.
fn rows_and_newest(db: &Path) -> (u64, i64) {
    let conn = read_only(db);
    let sealed: i64 = conn.query_row("SELECT coalesce(sum(rows), 0) FROM log_sealed", [], |r| r.get(0)).unwrap();
    let mut fresh = 0;
    let mut statement = conn.prepare("SELECT data FROM log_fresh").unwrap();
    for data in statement.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
        fresh += block::row_count(&data.unwrap()).unwrap() as i64;
    }
    let newest_key: i64 = conn.query_row("SELECT max(key) FROM log_sealed", [], |r| r.get(0)).expect("sealed rows");
    let hour = block::split_sealed_key(newest_key).0;
    let keys = block::hour_keys(hour);
    let mut newest = 0;
    let mut statement = conn.prepare("SELECT key, data FROM log_sealed WHERE key >= ?1 AND key < ?2").unwrap();
    let blocks = statement.query_map([keys.start, keys.end], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)));
    for found in blocks.unwrap() {
        let (key, data) = found.unwrap();
        let mut rows = Vec::new();
        block::decode(&data, block::split_sealed_key(key).1, &mut rows).unwrap();
        newest = rows.iter().map(|r| r.time_ms).max().unwrap_or(0).max(newest);
    }
    ((sealed + fresh) as u64, newest)
}

/// `count` values spread evenly over a query's rows.
fn spread(conn: &Connection, sql: &str, count: usize) -> Vec<String> {
    let all: Vec<String> =
        conn.prepare(sql).unwrap().query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
    if all.len() <= count {
        return all;
    }
    (0..count).map(|i| all[i * all.len() / count + all.len() / (2 * count)].clone()).collect()
}

/// The registrable part of a name (two labels; three under a two-label suffix like co.uk).
fn domain_of(name: &str) -> String {
    let labels: Vec<&str> = name.split('.').collect();
    let keep = if labels.len() >= 3 && matches!(labels[labels.len() - 2], "co" | "org" | "ac" | "gov") { 3 } else { 2 };
    labels[labels.len().saturating_sub(keep)..].join(".")
}

/// The search targets: ~20 per kind, popular and rare.
fn targets(db: &Path) -> Vec<(&'static str, Vec<Search>)> {
    let conn = read_only(db);
    let device = spread(&conn, "SELECT device FROM log_clients WHERE device != '' ORDER BY id", 20);
    let ip = spread(
        &conn,
        "SELECT DISTINCT client FROM log_clients WHERE client NOT LIKE 'anon-%' ORDER BY client DESC",
        20,
    );
    let mut names: Vec<String> =
        ["google.com", "youtube.com", "microsoft.com", "icloud.com", "bbc.co.uk"].map(String::from).to_vec();
    let sampled = spread(&conn, "SELECT rname FROM log_names ORDER BY id", 15);
    names.extend(sampled.iter().map(|rname| domain_of(&rname.split('.').rev().collect::<Vec<_>>().join("."))));
    let mut outcomes: Vec<(Option<String>, Option<String>)> = conn
        .prepare("SELECT DISTINCT category, decision FROM log_outcomes WHERE category != '' ORDER BY 1, 2")
        .unwrap()
        .query_map([], |r| Ok((Some(r.get(0)?), Some(r.get(1)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for decision in ["safesearch", "bypass", "error", "blocked"] {
        outcomes.push((None, Some(decision.to_string())));
    }
    outcomes.truncate(20);
    let by = |f: &dyn Fn(String) -> Search, values: Vec<String>| values.into_iter().map(f).collect::<Vec<_>>();
    vec![
        ("device", by(&|v| Search { client: Some(v), ..Search::default() }, device)),
        ("ip", by(&|v| Search { client: Some(v), ..Search::default() }, ip)),
        ("name", by(&|v| Search { name: Some(v), ..Search::default() }, names)),
        (
            "category+decision",
            outcomes
                .into_iter()
                .map(|(category, decision)| Search { category, decision, ..Search::default() })
                .collect(),
        ),
    ]
}

fn p95(mut times: Vec<Duration>) -> (Duration, Duration, Duration) {
    times.sort();
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    (at(0.5), at(0.95), times[times.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The best of a few runs and the first (cold) one.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let start = Instant::now();
    let mut value = f();
    let first = start.elapsed();
    let mut best = first;
    for _ in 1..runs {
        let start = Instant::now();
        value = f();
        best = best.min(start.elapsed());
    }
    (first, best, value)
}

/// CPU seconds (user + system) of this process's thread named `name`.
fn thread_cpu_seconds(name: &str) -> Option<f64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let task = task.path();
        if std::fs::read_to_string(task.join("comm")).map_or(true, |comm| comm.trim() != name) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let (user, system): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
        return Some((user + system) / 100.0);
    }
    None
}

fn main() {
    let work = tempfile::tempdir().expect("temp dir");
    let env_rows = std::env::var("HEDGEROW_LOG_ROWS").ok().and_then(|v| v.parse::<u64>().ok());
    let db: PathBuf = match std::env::var_os("HEDGEROW_LOG_DB") {
        Some(path) => PathBuf::from(path),
        None => {
            let db = std::env::var_os("HEDGEROW_LOG_KEEP").map_or_else(|| work.path().join("school.db"), PathBuf::from);
            let mut options = Options::school(synth::names::default_data_dir());
            // Start the month on a school day, so retention removes one.
            while !school::is_school_day(options.first_day()) {
                options.end_day -= 1;
            }
            let options = options.with_total_rows(env_rows.unwrap_or(150_000_000));
            eprintln!("generating about {} rows into {}", options.planned_rows(), db.display());
            let report = synth::synthesize(&db, &options, &mut |done, days, rows| {
                eprintln!("  day {done}/{days}: {rows} rows");
            })
            .expect("synthesize");
            eprintln!(
                "generated {} rows in {:.0} s ({:.0} rows/s)",
                report.rows,
                report.seconds,
                report.rows as f64 / report.seconds
            );
            db
        }
    };
    let (rows, newest) = rows_and_newest(&db);
    let mut results = Results { rows, lines: Vec::new(), table: Vec::new() };

    // Bytes on disk.
    let bytes = synth::bytes_on_disk(&db);
    results.add(
        "bytes on disk per row",
        bytes as f64 / rows as f64,
        "B/row",
        format!("{:.1} B ({:.2} GB)", bytes as f64 / rows as f64, bytes as f64 / 1e9),
        "<= 40",
        json!({"bytes": bytes}),
    );
    let conn = read_only(&db);
    let tables =
        conn.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?.collect::<Result<Vec<_>, _>>()
        });
    match tables {
        Ok(tables) => {
            for (table, size) in tables.into_iter().filter(|t| t.1 > 1 << 20) {
                let per_row = size as f64 / rows as f64;
                results.add(
                    &format!("  table {table}"),
                    per_row,
                    "B/row",
                    format!("{per_row:.2} B"),
                    "",
                    json!({"bytes": size}),
                );
            }
        }
        Err(error) => eprintln!("  (no per-table sizes: dbstat is not compiled in: {error})"),
    }
    drop(conn);

    // Searches: first page, p95 over the targets, in windows ending at the
    // newest row, and again ending at the busiest hour's end (the newest row
    // may fall in a quiet night or weekend, where few targets have rows).
    let busiest: i64 = read_only(&db)
        .query_row("SELECT hour FROM log_hourly GROUP BY hour ORDER BY sum(count) DESC, hour DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .expect("hourly counts");
    let ends = [("", newest + 1), (" (ending at the busiest hour)", (busiest + 1) * HOUR_MS)];
    let targets = targets(&db);
    for (end_label, end) in ends {
        for (kind, searches) in &targets {
            for (window, span) in [("1 hour", HOUR_MS), ("1 day", DAY_MS), ("30 days", 30 * DAY_MS)] {
                let mut times = Vec::new();
                let mut found = 0;
                for target in searches {
                    let query = Search { since_ms: Some(end - span), until_ms: Some(end), ..target.clone() };
                    let start = Instant::now();
                    let page = search(&db, &query).expect("search");
                    times.push(start.elapsed());
                    found += usize::from(!page.is_empty());
                }
                let (median, p, max) = p95(times);
                results.add(
                    &format!("search by {kind}, {window}{end_label}: first page p95"),
                    ms(p),
                    "ms",
                    format!(
                        "{:.1} ms (median {:.1}, max {:.1}; {found}/{} found)",
                        ms(p),
                        ms(median),
                        ms(max),
                        searches.len()
                    ),
                    "p95 <= 100 ms",
                    json!({"kind": kind, "window": window, "end_ms": end, "median_ms": ms(median), "max_ms": ms(max), "targets": searches.len(), "found": found}),
                );
            }
        }
    }

    // The dashboard overview's counts.
    let now_hour = newest.div_euclid(HOUR_MS);
    let today = day_number(newest) * DAY_MS;
    let (first, best, hourly) =
        timed(3, || counts::hourly_by_group(&db, now_hour - 7 * 24, now_hour + 1).expect("hourly"));
    results.add(
        "counts: lookups and blocks per hour per group, 7 days",
        ms(first),
        "ms",
        format!("{:.1} ms (warm {:.1}; {} rows)", ms(first), ms(best), hourly.len()),
        "<= 200 ms",
        json!({"warm_ms": ms(best)}),
    );
    let (first, best, names) = timed(3, || counts::top_blocked_names(&db, today, newest + 1, 10).expect("top names"));
    results.add(
        "counts: top blocked names today",
        ms(first),
        "ms",
        format!("{:.1} ms (warm {:.1}; {} names)", ms(first), ms(best), names.len()),
        "<= 200 ms",
        json!({"warm_ms": ms(best)}),
    );
    let (first, best, clients) =
        timed(3, || counts::top_blocked_clients(&db, today, newest + 1, 10).expect("top clients"));
    results.add(
        "counts: top blocked devices today",
        ms(first),
        "ms",
        format!("{:.1} ms (warm {:.1}; {} devices)", ms(first), ms(best), clients.len()),
        "<= 200 ms",
        json!({"warm_ms": ms(best)}),
    );

    // Sustained writing: the school's traffic through QueryLog into a new
    // database with the school's device table, as fast as the writer takes it.
    let write_rows: u64 =
        std::env::var("HEDGEROW_LOG_WRITE_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let write_db = work.path().join("write.db");
    let (rate, cpu_rate, dropped) = sustained_writing(&write_db, write_rows);
    results.add(
        "sustained writing through QueryLog",
        cpu_rate.unwrap_or(rate),
        "rows/s",
        format!(
            "{rate:.0} rows/s wall, {} per writer CPU-s, {dropped} dropped",
            cpu_rate.map_or("?".to_string(), |r| format!("{r:.0}"))
        ),
        ">= 50,000 rows/s, 0 dropped",
        json!({"wall_rows_per_s": rate, "rows": write_rows, "dropped": dropped}),
    );

    // Retention of the oldest day (last: it deletes that day).
    let oldest_day = day_number(rows_oldest(&db));
    let retention_days = 30;
    let now = (oldest_day + 1 + i64::from(retention_days)) * DAY_MS + HOUR_MS;
    let start = Instant::now();
    let report = run_retention(&db, retention_days, now).expect("retention");
    let seconds = start.elapsed().as_secs_f64();
    results.add(
        "retention of one day",
        seconds,
        "s",
        format!("{seconds:.1} s ({} rows of {} deleted)", report.rows_deleted, day_string(oldest_day)),
        "< 10 s",
        json!({"rows_deleted": report.rows_deleted, "day": day_string(oldest_day)}),
    );

    results.print();
    results.save();
}

/// The oldest row's time: the first sealed block's first row.
fn rows_oldest(db: &Path) -> i64 {
    let conn = read_only(db);
    let (key, data): (i64, Vec<u8>) = conn
        .query_row("SELECT key, data FROM log_sealed ORDER BY key LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("a sealed block");
    let mut rows = Vec::new();
    block::decode(&data, block::split_sealed_key(key).1, &mut rows).unwrap();
    rows[0].time_ms
}

/// Replays `rows` rows of the school's busiest hours through a `QueryLog`,
/// keeping its channel at most half full. Returns rows/s (wall), rows per
/// second of the writer thread's CPU, and rows dropped.
fn sustained_writing(db: &Path, rows: u64) -> (f64, Option<f64>, u64) {
    let mut options = Options::school(synth::names::default_data_dir());
    options.days = 1;
    while !school::is_school_day(options.first_day()) {
        options.end_day -= 1;
    }
    // The device table first, as a school's server has it.
    let names = synth::names::Names::load(&options.data, options.seed, synth::names::Names::tail_for(5_000_000))
        .expect("the lists");
    let devices = school::devices(options.devices, options.seed, |rng| names.benign(rng));
    let mut csv = String::from("ip,mac,name,owner,group\n");
    for device in devices.iter().filter(|d| !d.name.is_empty()) {
        csv.push_str(&format!(
            "{},{},{},{},{}\n",
            device.ip,
            device.mac,
            device.name,
            device.owner,
            device.group.name()
        ));
    }
    hedgerow::store::devices::import_csv(db, &csv).expect("devices");
    let mut traffic = synth::traffic::Traffic::new(names, devices, options.seed);
    let day = options.first_day();
    let mut records = Vec::with_capacity(rows as usize);
    for hour in (day * 24 + 9).. {
        let generated = traffic.hour(hour, school::rows_in_hour(day, 9, 5_000_000));
        records.extend(generated.rows.iter().map(|row| traffic.record(row)));
        if records.len() as u64 >= rows {
            break;
        }
    }
    records.truncate(rows as usize);
    // Rows stamped from now on, 2,000 a second of clock time.
    let base = now_ms();
    for (n, record) in records.iter_mut().enumerate() {
        record.time_ms = base + n as i64 / 2;
    }
    let settings = LogSettings { guest_privacy: Privacy::Hash, ..LogSettings::default() };
    let log = QueryLog::open(db, settings.clone()).expect("open log");
    let cpu_before = thread_cpu_seconds("hedgerow-log-wr");
    let start = Instant::now();
    for (i, record) in records.into_iter().enumerate() {
        log.record(record);
        if i % 1024 == 0 {
            while (i as u64 + 1).saturating_sub(log.written() + log.dropped()) > settings.channel_capacity as u64 / 2 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    while log.written() + log.dropped() < rows {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    let cpu = thread_cpu_seconds("hedgerow-log-wr").map(|after| after - cpu_before.unwrap_or(0.0));
    let dropped = log.dropped();
    log.close();
    (rows as f64 / elapsed.as_secs_f64(), cpu.filter(|&c| c > 0.0).map(|c| rows as f64 / c), dropped)
}
