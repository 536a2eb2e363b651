//! Server time of each dashboard page with 100,000 change-log rows and 200
//! users. The router is called in-process (`tower::ServiceExt::oneshot` on
//! `web::app`), so the figure is the server's own time to answer a logged-in
//! admin, with no sockets or browser in it. Target: every page under 50 ms.
//!
//!     cargo bench --bench dashboard
//!
//! Prints a table (median, 95th percentile and worst of 200 requests per
//! page, after 10 to warm up), then criterion's figures for each page.
//! `HEDGEROW_BENCH_CHANGES` (default 100,000) scales the change log for a
//! quick run. The login audit holds 50,000 rows. Everything is made in a
//! temporary directory. `cargo test --benches` asks each page three times,
//! to check the bench works, and measures nothing with criterion.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use criterion::Criterion;
use hedgerow::config::Config;
use hedgerow::serve::{self, Running};
use hedgerow::store::{Role, Sessions, Users};
use hedgerow::web::{self, AppState};
use rusqlite::{Connection, params};
use tower::ServiceExt;

const USERS: usize = 200;
/// A year of logins and logouts by 200 people.
const AUDIT_ROWS: usize = 50_000;
const TARGET: Duration = Duration::from_millis(50);
const SAMPLES: usize = 200;
const KINDS: [&str; 6] = ["category", "override-add", "override-remove", "safesearch", "schedule-add", "file-edit"];
const GROUPS: [&str; 3] = ["pupil", "staff", "guest"];
const CATEGORIES: [&str; 6] = ["games", "social-media", "streaming", "chat", "dating", "ai-chat"];

/// A school's dashboard with a big history, and an admin's session.
struct Bed {
    runtime: tokio::runtime::Runtime,
    app: Router,
    cookie: String,
    csrf: String,
    _running: Running,
    _dir: tempfile::TempDir,
}

/// One page to time.
struct Page {
    label: &'static str,
    method: &'static str,
    path: String,
    form: Option<String>,
}

impl Bed {
    fn new(changes: usize) -> Bed {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
        std::fs::write(
            lists.join("local.toml"),
            "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
        )
        .unwrap();
        let text = format!(
            r#"data_dir = {data:?}
[dns]
listen = ["127.0.0.1:0"]
[upstream]
mode = "forward"
timeout_ms = 500
[[upstream.servers]]
address = "127.0.0.1:9"
[lists]
dir = {lists:?}
update_hours = 0
[dashboard]
listen = []
[[networks]]
name = "pupils"
cidrs = ["10.1.0.0/16"]
group = "pupil"
[[networks]]
name = "staff-lan"
cidrs = ["10.2.0.0/16"]
group = "staff"
"#,
            data = dir.path().join("data").display().to_string(),
            lists = lists.display().to_string(),
        );
        let config_path = dir.path().join("hedgerow.toml");
        std::fs::write(&config_path, &text).unwrap();
        // Loaded from the file, so the server has a policy editor and the
        // policy pages show an admin their controls.
        let config = Config::load(&config_path).unwrap_or_else(|error| panic!("{error}"));
        let running = runtime.block_on(serve::start(&config)).expect("start the server");
        let database = config.log.database.clone();

        let now = hedgerow::time::now_ms();
        let users = Users::open(&database).unwrap();
        let admin = users.add("admin", "a long bench password", &[Role::Admin], now).unwrap();
        seed_users(&database, USERS - 1, now);
        seed_changes(&database, changes, now);
        seed_audit(&database, AUDIT_ROWS, now);
        let session = Sessions::open(&database).unwrap().create(admin.id, "127.0.0.1", now).unwrap();

        assert!(running.editor.is_some(), "the bench's server can edit its config file");
        let state = AppState::with_policy(
            running.pipeline.clone(),
            &database,
            web::WebSettings::from_config(&config),
            running.policy_access(),
        )
        .expect("dashboard state");
        let app = web::app(state);
        Bed {
            runtime,
            app,
            cookie: format!("hedgerow_session={}", session.raw_id),
            csrf: session.csrf_token,
            _running: running,
            _dir: dir,
        }
    }

    fn request(&self, page: &Page) -> Request<Body> {
        let mut builder = Request::builder()
            .method(page.method)
            .uri(&page.path)
            .header(header::HOST, "localhost")
            .header(header::COOKIE, &self.cookie);
        let body = match &page.form {
            Some(form) => {
                builder = builder
                    .header(header::ORIGIN, "http://localhost")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(format!("{form}&csrf={}", self.csrf))
            }
            None => Body::empty(),
        };
        let mut request = builder.body(body).unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
        request
    }

    /// One request to `page`, body read; its status and server time.
    fn time(&self, page: &Page) -> (StatusCode, Duration, usize) {
        let request = self.request(page);
        let app = self.app.clone();
        self.runtime.block_on(async move {
            let start = Instant::now();
            let response = app.oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            (status, start.elapsed(), body.len())
        })
    }
}

/// 199 more users (names `user-N`, mixed roles) sharing the admin's
/// password hash: 200 Argon2id hashes would only slow the set-up.
fn seed_users(database: &std::path::Path, count: usize, now: i64) {
    let mut conn = Connection::open(database).unwrap();
    let tx = conn.transaction().unwrap();
    let hash: String =
        tx.query_row("SELECT password_hash FROM users WHERE name = 'admin'", [], |row| row.get(0)).unwrap();
    for i in 0..count {
        tx.execute(
            "INSERT INTO users (name, password_hash, disabled, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![format!("user-{i}"), hash, i % 17 == 0, now - i as i64 * 60_000],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        let role = ["dsl", "governor", "admin"][i % 3];
        tx.execute("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)", params![id, role]).unwrap();
    }
    tx.commit().unwrap();
}

/// `count` change-log rows over the last year, by 20 users.
fn seed_changes(database: &std::path::Path, count: usize, now: i64) {
    let mut conn = Connection::open(database).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO change_log (time_ms, user_name, kind, group_name, subject, old_value, new_value, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        let year_ms = 365 * 86_400_000_i64;
        for i in 0..count {
            let time = now - year_ms + (i as i64 * year_ms / count.max(1) as i64);
            let user = format!("user-{}", i % 20);
            let kind = KINDS[i % KINDS.len()];
            let group = GROUPS[i % GROUPS.len()];
            let category = CATEGORIES[i % CATEGORIES.len()];
            let (old, new) = if i % 2 == 0 { ("blocked", "allowed") } else { ("allowed", "blocked") };
            insert
                .execute(params![
                    time,
                    user,
                    kind,
                    group,
                    category,
                    old,
                    new,
                    format!("Lesson {i}: year 9 computing needs it for the week")
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// `count` login-audit rows over the last year.
fn seed_audit(database: &std::path::Path, count: usize, now: i64) {
    let mut conn = Connection::open(database).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert =
            tx.prepare("INSERT INTO login_audit (time_ms, user_name, address, event) VALUES (?1, ?2, ?3, ?4)").unwrap();
        let year_ms = 365 * 86_400_000_i64;
        for i in 0..count {
            let time = now - year_ms + (i as i64 * year_ms / count.max(1) as i64);
            let event = ["login", "logout", "login", "failure"][i % 4];
            insert.execute(params![time, format!("user-{}", i % USERS), format!("10.2.0.{}", i % 250), event]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn pages() -> Vec<Page> {
    let get = |label, path: &str| Page { label, method: "GET", path: path.to_string(), form: None };
    vec![
        get("home", "/"),
        get("policy", "/policy"),
        get("policy/pupil", "/policy/pupil"),
        get("changes", "/changes"),
        get("changes?user=", "/changes?user=user-7"),
        get("changes, last page", "/changes?page=2000"),
        get("changes?group&kind", "/changes?group=pupil&kind=category"),
        get("users", "/users"),
        get("audit", "/audit"),
        Page {
            label: "test (POST)",
            method: "POST",
            path: "/test".into(),
            form: Some("name=game.test&group=pupil".into()),
        },
    ]
}

fn main() {
    let changes: usize =
        std::env::var("HEDGEROW_BENCH_CHANGES").ok().and_then(|value| value.parse().ok()).unwrap_or(100_000);
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then each page is asked a few times only, to check it answers.
    let benching = std::env::args().any(|arg| arg == "--bench");
    let samples = if benching { SAMPLES } else { 3 };

    eprintln!("seeding {changes} change-log rows and {USERS} users ...");
    let bed = Bed::new(changes);
    let pages = pages();

    println!();
    println!("dashboard server time, {changes} change-log rows, {USERS} users ({samples} requests a page)");
    println!(
        "{:<20} {:>6} {:>10} {:>10} {:>10} {:>9}  {}",
        "page", "status", "median", "p95", "worst", "bytes", "target"
    );
    let mut over = Vec::new();
    let mut missing = Vec::new();
    for page in &pages {
        for _ in 0..samples.min(10) {
            bed.time(page);
        }
        let mut times = Vec::with_capacity(samples);
        let mut last = (StatusCode::OK, 0);
        for _ in 0..samples {
            let (status, elapsed, bytes) = bed.time(page);
            times.push(elapsed);
            last = (status, bytes);
        }
        times.sort();
        let median = times[times.len() / 2];
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let worst = *times.last().unwrap();
        let verdict = if last.0 == StatusCode::NOT_FOUND {
            "no such page"
        } else if median < TARGET {
            "ok (< 50 ms)"
        } else {
            "OVER 50 ms"
        };
        println!(
            "{:<20} {:>6} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>9}  {verdict}",
            page.label,
            last.0.as_u16(),
            ms(median),
            ms(p95),
            ms(worst),
            last.1
        );
        if last.0 == StatusCode::NOT_FOUND {
            missing.push(page.label);
            continue;
        }
        let answered = last.0.is_success() || last.0.is_redirection();
        assert!(answered, "{} {} answered {}: the bench must time the real page", page.method, page.path, last.0);
        if median >= TARGET {
            over.push(page.label);
        }
    }
    println!();
    if !missing.is_empty() {
        println!("not served by this build (404): {}", missing.join(", "));
    }
    if over.is_empty() {
        println!("every page under 50 ms of server time");
    } else {
        println!("over the 50 ms target: {}", over.join(", "));
    }

    if benching {
        let mut criterion = Criterion::default().configure_from_args().sample_size(50);
        let mut group = criterion.benchmark_group("dashboard");
        for page in &pages {
            group.bench_function(page.label, |b| b.iter(|| bed.time(page)));
        }
        group.finish();
        criterion.final_summary();
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}
