//! The dashboard overview's server time (issue 13: first screen under
//! 150 ms) on the synthetic school: reading every figure of `GET /`
//! (`web::overview_figures`: 24 hours by hour and 30 days by day per group,
//! top blocked categories, names and devices today) and rendering the page
//! with its four SVG charts (`web::render_overview`), for an admin (with
//! names and devices) and a governor (without), with "now" at the log's
//! newest hour and at its busiest hour. p50, p95 and max of 20 runs each,
//! plus the first (cold) run.
//!
//! ```text
//! HEDGEROW_LOG_DB=/tmp/school-150m.db cargo bench --bench overview   # reuse a database, read-only
//! cargo bench --bench overview                                       # generate 150 M rows into a temp dir, deleted after
//! HEDGEROW_LOG_ROWS=10000000 cargo bench --bench overview
//! ```
//!
//! Results go to `benches/results/overview-<date>.jsonl`, one JSON object a measure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hedgerow::config::Config;
use hedgerow::store::time::{day_string, now_ms};
use hedgerow::synth::{self, Options};
use hedgerow::web::{overview_figures, render_overview};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

const HOUR_MS: i64 = 3_600_000;
const RUNS: usize = 20;
const TARGET_MS: f64 = 150.0;

fn read_only(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database")
}

/// The newest hour with lookups, and the hour with the most.
fn newest_and_busiest(db: &Path) -> (i64, i64) {
    let conn = read_only(db);
    let newest: i64 = conn.query_row("SELECT max(hour) FROM log_hourly", [], |r| r.get(0)).expect("hourly counts");
    let busiest: i64 = conn
        .query_row("SELECT hour FROM log_hourly GROUP BY hour ORDER BY sum(count) DESC LIMIT 1", [], |r| r.get(0))
        .expect("hourly counts");
    (newest, busiest)
}

fn rows(db: &Path) -> u64 {
    let conn = read_only(db);
    let rows: i64 = conn.query_row("SELECT coalesce(sum(count), 0) FROM log_hourly", [], |r| r.get(0)).unwrap();
    rows.max(0) as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let work = tempfile::tempdir().expect("temp dir");
    let db: PathBuf = match std::env::var_os("HEDGEROW_LOG_DB") {
        Some(path) => PathBuf::from(path),
        None => {
            let db = work.path().join("school.db");
            let rows = std::env::var("HEDGEROW_LOG_ROWS").ok().and_then(|v| v.parse::<u64>().ok());
            let options =
                Options::school(synth::names::default_data_dir()).with_total_rows(rows.unwrap_or(150_000_000));
            eprintln!("generating about {} rows into {}", options.planned_rows(), db.display());
            synth::synthesize(&db, &options, &mut |done, days, rows| eprintln!("  day {done}/{days}: {rows} rows"))
                .expect("synthesize");
            db
        }
    };
    // Only the time zone and the time format are used: Europe/London, the default.
    let text = format!(
        "data_dir = {:?}\n[[networks]]\nname = \"pupils\"\ncidrs = [\"10.1.0.0/16\"]\ngroup = \"pupil\"\n",
        work.path().display().to_string()
    );
    let config = Config::parse(&text, "overview bench").expect("a minimal config");
    let rows = rows(&db);
    let (newest, busiest) = newest_and_busiest(&db);
    eprintln!("{} rows in {}; newest hour {newest}, busiest {busiest}", rows, db.display());

    let mut lines = Vec::new();
    let mut table = Vec::new();
    for (when, hour) in [("newest hour", newest), ("busiest hour", busiest)] {
        // "Now" is late in that hour, so the whole day up to it counts as today.
        let now = hour * HOUR_MS + HOUR_MS - 1;
        for (who, detail) in [("admin", true), ("governor", false)] {
            let mut times = Vec::with_capacity(RUNS + 1);
            let mut bytes = 0;
            for _ in 0..=RUNS {
                let start = Instant::now();
                let overview = overview_figures(&db, &config.timezone, now, detail).expect("figures");
                let html = render_overview(&config, &overview).expect("render");
                times.push(start.elapsed().as_secs_f64() * 1000.0);
                bytes = html.len();
            }
            let cold = times.remove(0);
            times.sort_by(f64::total_cmp);
            let (p50, p95, max) = (percentile(&times, 0.5), percentile(&times, 0.95), times[times.len() - 1]);
            let measure = format!("overview, {who}, now at the {when}");
            eprintln!("  {measure}: p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms, cold {cold:.1} ms ({bytes} B)");
            table.push((measure.clone(), format!("{p50:.1} / {p95:.1} / {max:.1} (cold {cold:.1})")));
            lines.push(json!({
                "measure": measure, "p50_ms": p50, "p95_ms": p95, "max_ms": max, "cold_ms": cold,
                "html_bytes": bytes, "rows": rows, "target_ms": TARGET_MS, "runs": RUNS,
            }));
            assert!(p95 < TARGET_MS, "{measure}: p95 {p95:.1} ms is over {TARGET_MS} ms");
        }
    }

    println!("\n| measure ({rows} rows) | p50 / p95 / max ms | target |\n| --- | --- | --- |");
    for (measure, shown) in &table {
        println!("| {measure} | {shown} | < {TARGET_MS} ms |");
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    std::fs::create_dir_all(&dir).ok();
    let path = dir.join(format!("overview-{}.jsonl", day_string(now_ms().div_euclid(86_400_000))));
    let mut file = std::fs::File::create(&path).expect("results file");
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    eprintln!("results in {}", path.display());
}
