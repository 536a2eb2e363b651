//! Server time of the query log explorer and the device page on a
//! synthetic school, and the CSV export's speed, through the router
//! (`tower::ServiceExt::oneshot` on `web::app`, a logged-in DSL; no sockets
//! or browser). Targets: each first screen under 150 ms; CSV at least
//! 200,000 rows/s.
//!
//! ```text
//! HEDGEROW_LOG_DB=/tmp/school-150m.db cargo bench --bench explorer   # reuse a school (read only)
//! cargo bench --bench explorer                                       # generate 150 M rows into /tmp, deleted after
//! HEDGEROW_LOG_ROWS=5000000 cargo bench --bench explorer             # a smaller generated school
//! ```
//!
//! The log database is only read: the dashboard's own tables (users,
//! sessions) live in a temporary database of their own. `cargo test
//! --benches` (no `--bench`) asks each page a few times on a small
//! generated school, to check the bench works.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use hedgerow::config::Config;
use hedgerow::dns::Pipeline;
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::policy::SafeSearchMap;
use hedgerow::store::{Role, Sessions, Users};
use hedgerow::synth::{self, Options};
use hedgerow::web::{self, AppState, PolicyAccess, WebSettings};
use http_body_util::BodyExt;
use rusqlite::{Connection, OpenFlags};
use tower::ServiceExt;

const TARGET: Duration = Duration::from_millis(150);
const CSV_TARGET: f64 = 200_000.0;

struct Bed {
    runtime: tokio::runtime::Runtime,
    app: Router,
    cookie: String,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn new(log_db: &Path) -> Bed {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&lists).unwrap();
        let text = format!(
            r#"data_dir = {data:?}
[dns]
listen = ["127.0.0.1:0"]
[upstream]
mode = "forward"
[[upstream.servers]]
address = "127.0.0.1:9"
[lists]
dir = {lists:?}
update_hours = 0
[log]
database = {log:?}
[dashboard]
listen = []
[[networks]]
name = "pupils"
cidrs = ["10.10.0.0/16"]
group = "pupil"
[[networks]]
name = "staff-lan"
cidrs = ["10.20.0.0/16"]
group = "staff"
[[networks]]
name = "guest-wifi"
cidrs = ["10.30.0.0/16"]
group = "guest"
"#,
            data = dir.path().join("data").display().to_string(),
            lists = lists.display().to_string(),
            log = log_db.display().to_string(),
        );
        let config_path = dir.path().join("hedgerow.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::load(&config_path).unwrap_or_else(|error| panic!("{error}"));
        let pipeline =
            Arc::new(Pipeline::new(&config, CompiledLists::empty(), SafeSearchMap::default(), None).unwrap());
        // The dashboard's own tables in a database of their own.
        let own = dir.path().join("dashboard.db");
        let now = hedgerow::time::now_ms();
        let user = Users::open(&own).unwrap().add("dsl", "a long bench password", &[Role::Dsl], now).unwrap();
        let session = Sessions::open(&own).unwrap().create(user.id, "127.0.0.1", now).unwrap();
        let state =
            AppState::with_policy(pipeline, &own, WebSettings::from_config(&config), PolicyAccess::fixed(&config))
                .expect("dashboard state");
        Bed { runtime, app: web::app(state), cookie: format!("hedgerow_session={}", session.raw_id), _dir: dir }
    }

    /// One GET, body read; its status, server time and body.
    fn get(&self, path: &str) -> (StatusCode, Duration, axum::body::Bytes) {
        let mut request = Request::builder()
            .uri(path)
            .header(header::HOST, "localhost:8080")
            .header(header::COOKIE, &self.cookie)
            .body(Body::empty())
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
        let app = self.app.clone();
        self.runtime.block_on(async move {
            let start = Instant::now();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, start.elapsed(), body)
        })
    }
}

/// What the searches look for: a named device, a blocked name, a category,
/// and the newest day (school time text for custom windows).
struct Subjects {
    device: String,
    name: String,
    category: String,
    last_day: String,
}

fn subjects(db: &Path) -> Subjects {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let device: String = conn
        .query_row(
            "SELECT device FROM log_clients WHERE device != '' AND group_name = 'pupil' ORDER BY last_day DESC, id LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let (last_hour, category): (i64, String) = conn
        .query_row(
            "SELECT hour, category FROM log_hourly_blocked WHERE category != '' ORDER BY hour DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let now = hedgerow::time::now_ms();
    let name = hedgerow::store::counts::top_blocked_names(db, last_hour * 3_600_000 - 86_400_000, now, 1)
        .unwrap()
        .into_iter()
        .next()
        .map(|(name, _)| name)
        .unwrap_or_else(|| "example.com".into());
    let last_day = hedgerow::store::time::day_string((last_hour * 3_600_000).div_euclid(86_400_000));
    Subjects { device, name, category, last_day }
}

fn percentile(times: &mut [Duration], fraction: f64) -> Duration {
    times.sort_unstable();
    times[((times.len() - 1) as f64 * fraction).round() as usize]
}

fn main() {
    let benching = std::env::args().any(|arg| arg == "--bench");
    let samples = if benching { 30 } else { 2 };
    let work = tempfile::Builder::new().prefix("hedgerow-explorer-").tempdir_in("/tmp").expect("temp dir");
    let db: PathBuf = match std::env::var_os("HEDGEROW_LOG_DB") {
        Some(path) => PathBuf::from(path),
        None => {
            let db = work.path().join("school.db");
            let rows = std::env::var("HEDGEROW_LOG_ROWS").ok().and_then(|v| v.parse::<u64>().ok());
            let rows = rows.unwrap_or(if benching { 150_000_000 } else { 200_000 });
            let mut options = Options::school(synth::names::default_data_dir());
            if !benching {
                options.days = 3;
                options.devices = 300;
            }
            let options = options.with_total_rows(rows);
            eprintln!("generating about {} rows into {}", options.planned_rows(), db.display());
            synth::synthesize(&db, &options, &mut |done, days, rows| eprintln!("  day {done}/{days}: {rows} rows"))
                .expect("synthesize");
            db
        }
    };
    let rows = hedgerow::store::read::count_rows(&db).unwrap_or(0);
    let bed = Bed::new(&db);
    let subjects = subjects(&db);
    let device = web_encode(&subjects.device);
    let day = &subjects.last_day;
    let pages: Vec<(&str, String)> = vec![
        ("log, no filter (7 days)", "/log".into()),
        ("log, blocked (7 days)", "/log?decision=blocked".into()),
        ("log, device (7 days)", format!("/log?client={device}")),
        ("log, device (30 days)", format!("/log?client={device}&window=30d")),
        ("log, name (7 days)", format!("/log?name={}", web_encode(&subjects.name))),
        ("log, pupils blocked", "/log?group=pupil&decision=blocked&window=30d".into()),
        ("log, category (30 days)", format!("/log?category={}&window=30d", subjects.category)),
        ("log, custom day 10-11", format!("/log?window=custom&from={day}T10:00&to={day}T11:00")),
        ("device page", format!("/device/{device}")),
    ];
    println!();
    println!("query log explorer, {rows} rows, {samples} requests a page (server time through the router)");
    println!("{:<26} {:>6} {:>10} {:>10} {:>10} {:>5}", "page", "status", "median", "p95", "worst", "rows");
    let mut over = Vec::new();
    for (label, path) in &pages {
        let (status, _, body) = bed.get(path);
        let shown = String::from_utf8_lossy(&body).matches("class=\"log-name\"").count();
        let mut times: Vec<Duration> = (0..samples).map(|_| bed.get(path).1).collect();
        let median = percentile(&mut times, 0.5);
        let p95 = percentile(&mut times, 0.95);
        let worst = *times.last().unwrap();
        println!(
            "{label:<26} {:>6} {:>8.1}ms {:>8.1}ms {:>8.1}ms {shown:>5}",
            status.as_u16(),
            median.as_secs_f64() * 1e3,
            p95.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
        assert_eq!(status, StatusCode::OK, "{path}");
        if p95 > TARGET {
            over.push(*label);
        }
    }
    // The second page of a device's search.
    let (_, _, body) = bed.get(&format!("/log?client={device}&window=30d"));
    let html = String::from_utf8_lossy(&body);
    if let Some(at) = html.find("before=") {
        let id: String = html[at + 7..].chars().take_while(char::is_ascii_digit).collect();
        let path = format!("/log?client={device}&window=30d&before={id}");
        let mut times: Vec<Duration> = (0..samples).map(|_| bed.get(&path).1).collect();
        println!("{:<26} {:>6} {:>8.1}ms", "log, device, page 2", 200, percentile(&mut times, 0.5).as_secs_f64() * 1e3);
    }
    println!();
    println!("{:<34} {:>10} {:>10} {:>12}", "CSV export", "rows", "seconds", "rows/s");
    let exports = [
        ("device, 30 days", format!("/log.csv?client={device}&window=30d")),
        ("device report (last day)", format!("/device/{device}.csv?from={day}&to={day}")),
        ("everything, one hour", format!("/log.csv?window=custom&from={day}T10:00&to={day}T11:00")),
        ("blocked, 30 days", "/log.csv?decision=blocked&window=30d".to_string()),
    ];
    let mut slow = Vec::new();
    for (label, path) in &exports {
        let (status, elapsed, body) = bed.get(path);
        assert_eq!(status, StatusCode::OK, "{path}");
        let lines = body.iter().filter(|&&byte| byte == b'\n').count().saturating_sub(1);
        let rate = lines as f64 / elapsed.as_secs_f64();
        println!("{label:<34} {lines:>10} {:>10.2} {rate:>12.0}", elapsed.as_secs_f64());
        if lines >= 10_000 && rate < CSV_TARGET {
            slow.push(*label);
        }
    }
    println!();
    if over.is_empty() {
        println!("every page's p95 is under {} ms", TARGET.as_millis());
    } else {
        println!("OVER {} ms at p95: {}", TARGET.as_millis(), over.join(", "));
    }
    if slow.is_empty() {
        println!("every export of 10,000 rows or more ran at {CSV_TARGET:.0} rows/s or faster");
    } else {
        println!("CSV under {CSV_TARGET:.0} rows/s: {}", slow.join(", "));
    }
    drop(work);
}

/// Percent-encodes a query value.
fn web_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
