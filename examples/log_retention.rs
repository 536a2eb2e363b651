//! Retention of the oldest day of a query log, timed: for `benches/log_bed.sh`,
//! which runs it beside a loaded server (the server's own retention thread
//! runs only at start-up and hourly, so the bench cannot time it).
//!
//!     log_retention DATABASE [RETENTION_DAYS]
//!
//! Runs `run_retention` with the clock set so that exactly the oldest day
//! (UTC) is past `RETENTION_DAYS` (default 30), and prints one JSON line:
//! the day, rows deleted, seconds.

use std::path::PathBuf;
use std::time::Instant;

use hedgerow::store::block;
use hedgerow::store::retention::run_retention;
use hedgerow::store::time::{DAY_MS, day_number, day_string};
use rusqlite::{Connection, OpenFlags};

fn main() {
    let mut args = std::env::args().skip(1);
    let db = PathBuf::from(args.next().expect("usage: log_retention DATABASE [RETENTION_DAYS]"));
    let days: u32 = args.next().map_or(30, |d| d.parse().expect("RETENTION_DAYS is a number"));
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database");
    let (key, data): (i64, Vec<u8>) = conn
        .query_row("SELECT key, data FROM log_sealed ORDER BY key LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("a sealed block");
    drop(conn);
    let mut rows = Vec::new();
    block::decode(&data, block::split_sealed_key(key).1, &mut rows).expect("a readable block");
    let oldest_day = day_number(rows[0].time_ms);
    let now = (oldest_day + 1 + i64::from(days)) * DAY_MS;
    // As the server's retention thread does: DNS answers come first.
    hedgerow::priority::yield_to_dns();
    let start = Instant::now();
    let report = run_retention(&db, days, now).expect("retention");
    println!(
        "{{\"day\": \"{}\", \"rows_deleted\": {}, \"seconds\": {:.3}}}",
        day_string(oldest_day),
        report.rows_deleted,
        start.elapsed().as_secs_f64()
    );
}
