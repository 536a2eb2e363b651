//! Faults, each against the real `hedgerow serve` binary (tests/support/
//! server.rs) forwarding to a real authority on loopback (issue 16, "Prove
//! it holds"). docs/faults.md maps every fault to what Hedgerow does and to
//! its test.
//!
//! Here:
//! - [`upstream_loss_and_return`]: the authority stops and comes back on its
//!   port: cached names are served stale, blocked names stay blocked exactly
//!   as before, SafeSearch still answers from cache, a never-seen name gets a
//!   prompt SERVFAIL, the overview counts the failures; then fresh answers.
//! - [`sigkill_under_load_loses_no_acknowledged_change`]: ten policy changes
//!   and a user acknowledged under a steady UDP load, then SIGKILL: the
//!   database passes its checks and every acknowledged change is in force,
//!   in the file and in the change log; the query log's roll-ups hold.
//! - [`a_full_disk_keeps_dns_answering_and_the_dashboard_says_so`]: the
//!   data_dir on a small tmpfs, filled: every query is answered, the
//!   overview (page and API) and the metrics say in words that the log is not
//!   written and why; a login and a policy change are answered at once (made,
//!   or refused in words and not made); space freed, logging resumes and the
//!   notice goes.
//!
//! The same faults' other tests:
//! - a list source that errors, returns garbage or a huge file:
//!   tests/lists_update.rs, tests/fail_closed.rs, tests/web_lists.rs;
//! - the SMTP server down, alerts retried: tests/alerts_delivery.rs;
//! - SIGKILL right after an acknowledged change (no load): tests/crash.rs;
//! - upstream failover, serve-stale and recovery in-process:
//!   tests/resolver.rs (forward_mode_fails_over_then_serves_stale_then_recovers),
//!   forged and hostile upstreams: tests/hostile_upstream.rs;
//! - the query-log writer on a full disk, in-process: tests/log_disk_full.rs;
//!   an edit the change log cannot record is not made:
//!   tests/policy_edit.rs (an_edit_the_change_log_cannot_record_is_not_made).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::authority::Authority;
use support::browser::Browser;
use support::client::{build_query, exchange_udp_from};
use support::dashboard::{DashboardClient, csrf_token};
use support::server::{Hedgerow, PLAIN_ADDR, PLAIN_NAME, PUPIL, SchoolFiles, resolves_to};

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";
const GOVERNOR: &str = "gill.governor";
const GOVERNOR_PASSWORD: &str = "reviews once a year at least";

/// Adds a user with one role on the users page (acknowledged with its notice).
fn add_user(admin: &mut DashboardClient, name: &str, password: &str, role: &str) {
    let page = admin.get("/users");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the users page");
    let added = admin.post_form(
        "/users",
        &[("csrf", &csrf), ("name", name), ("password", password), (role, "on"), ("reason", "fault test")],
    );
    assert!(
        added.status == 200 && added.body.contains(&format!("Added {name}")),
        "the add is acknowledged: {} {}",
        added.status,
        added.body
    );
}

/// `GET path` as JSON.
fn json(web: &mut DashboardClient, path: &str) -> serde_json::Value {
    let answer = web.get(path);
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap_or_else(|error| panic!("GET {path}: {error}: {}", answer.body))
}

/// Nothing panicked and the server is still running.
fn assert_still_running(server: &mut Hedgerow) {
    assert!(server.running(), "the server is still running:\n{}", server.stderr());
    assert!(!server.stderr().contains("panicked"), "nothing panicked:\n{}", server.stderr());
}

/// Polls `done` every 100 ms until it holds, failing with `what` after `wait`.
async fn eventually(wait: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + wait;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} (waited {wait:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Upstream loss and return.

/// Allowed names, cached while the upstream is up (TTL [`SHORT_TTL`]).
const CACHED: [&str; 4] = ["one.school.test", "two.school.test", "three.school.test", "four.school.test"];
/// Cached while up, not asked while down: fresh at once when the upstream returns.
const KEPT_FOR_RETURN: &str = "five.school.test";
/// Denied for pupils by an override in the config.
const DENIED: &str = "denied.school.test";
/// The search engine SafeSearch rewrites for pupils, and its safe host.
const SEARCH: &str = "search.school.test";
const SAFE_SEARCH: &str = "safe.search.school.test";
const SAFE_ADDR: &str = "192.0.2.40";
/// Never asked before the upstream goes.
const NEVER_SEEN: &str = "never.school.test";
/// The authority's TTL: short, so cached answers expire while it is down.
const SHORT_TTL: u32 = 2;

/// The school's world with short TTLs: the test's names, the games name and
/// the plain name the server's readiness asks.
fn short_lived_world() -> Vec<support::authority::Zone> {
    let mut zone = support::authority::Zone::new("school.test.").ttl(SHORT_TTL);
    for (n, name) in CACHED.iter().chain([&KEPT_FOR_RETURN, &NEVER_SEEN, &DENIED, &SEARCH]).enumerate() {
        zone = zone.a(&format!("{name}."), &format!("192.0.2.{}", 100 + n));
    }
    zone = zone.a(&format!("{SAFE_SEARCH}."), SAFE_ADDR);
    let mut world = support::server::school_world();
    world.push(zone);
    world
}

/// What a client sees of an answer, without its ID: the code, the records
/// (TTLs included) and the EDNS options (the blocked reason's EDE).
fn seen(answer: &hickory_proto::op::Message) -> String {
    format!(
        "{:?} {:?} {:?} {:?}",
        answer.metadata.response_code,
        answer.answers,
        answer.authorities,
        answer.edns.as_ref().map(|edns| format!("{:?}", edns.options()))
    )
}

/// Asks `name` and says how long the answer took.
async fn timed_ask(server: &Hedgerow, name: &str) -> (hickory_proto::op::Message, Duration) {
    let started = Instant::now();
    let answer = server.ask(PUPIL, name).await;
    (answer, started.elapsed())
}

/// The addresses and CNAME targets in an answer, in order.
fn records(answer: &hickory_proto::op::Message) -> Vec<String> {
    answer
        .answers
        .iter()
        .map(|record| match &record.data {
            hickory_proto::rr::RData::A(a) => a.0.to_string(),
            hickory_proto::rr::RData::CNAME(cname) => cname.0.to_ascii(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// The authority stops: cached names are answered stale (TTL 30) without a
/// hang, the games list and a deny override block exactly as before, the
/// SafeSearch rewrite still answers from its cached safe host, a name never
/// seen gets a prompt SERVFAIL, and the overview counts the failures and the
/// stale answers. The authority returns on the same port: fresh answers
/// with the zone's TTL, the name never seen resolves, and nothing panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_loss_and_return() {
    let authority = Authority::start("127.0.0.1:0", short_lived_world()).await;
    let upstream = authority.addr;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), upstream, true);
    // A deny override for pupils, and a SafeSearch map of our own.
    let mut config = std::fs::read_to_string(&files.config).unwrap();
    config.push_str(&format!("\n[groups.pupil]\ndeny = [\"{DENIED}\"]\n"));
    std::fs::write(&files.config, config).unwrap();
    let lists = dir.path().join("lists");
    std::fs::create_dir_all(lists.join("safesearch")).unwrap();
    std::fs::write(
        lists.join("safesearch/rewrites.toml"),
        format!(
            "[[rewrite]]\nservice = \"school search\"\nsetting = \"safesearch\"\ntarget = \"{SAFE_SEARCH}\"\n\
             names = [\"{SEARCH}\"]\n"
        ),
    )
    .unwrap();
    let mut server = Hedgerow::start(&files).await;
    let mut admin = server.first_admin(ADMIN, ADMIN_PASSWORD);

    // Up: warm the cache, and note the policy's answers.
    for name in CACHED.iter().chain([&KEPT_FOR_RETURN]) {
        let answer = server.ask(PUPIL, name).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError, "{name}: {answer:?}");
        assert!(answer.answers[0].ttl <= SHORT_TTL, "{name} fresh: {answer:?}");
    }
    let games_up = server.ask(PUPIL, support::server::GAMES_NAME).await;
    let denied_up = server.ask(PUPIL, DENIED).await;
    for (name, answer) in [("games", &games_up), ("denied", &denied_up)] {
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "{name} blocked: {answer:?}");
        assert!(answer.answers.is_empty(), "{name} blocked: {answer:?}");
    }
    let search_up = server.ask(PUPIL, SEARCH).await;
    assert_eq!(records(&search_up), [format!("{SAFE_SEARCH}."), SAFE_ADDR.to_string()], "{search_up:?}");
    let before = json(&mut admin, "/api/overview")["upstream"].clone();

    // Down. Once the cached answers have expired, they are served stale.
    authority.stop().await;
    let mut stale_at = None;
    eventually(Duration::from_secs(10), "cached answers were never served stale", async || {
        let answer = server.ask(PUPIL, CACHED[0]).await;
        let stale = answer.metadata.response_code == ResponseCode::NoError && answer.answers[0].ttl == 30;
        if stale {
            stale_at = Some(Instant::now());
        }
        stale
    })
    .await;
    for name in CACHED {
        let (answer, took) = timed_ask(&server, name).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError, "{name} while down: {answer:?}");
        assert_eq!(answer.answers[0].ttl, 30, "{name} is served stale (RFC 8767 TTL): {answer:?}");
        assert!(took < Duration::from_secs(2), "{name} answered stale within the stale timing, took {took:?}");
    }
    // Blocked exactly as before: the policy needs no upstream.
    assert_eq!(seen(&server.ask(PUPIL, support::server::GAMES_NAME).await), seen(&games_up), "games still blocked");
    assert_eq!(seen(&server.ask(PUPIL, DENIED).await), seen(&denied_up), "the deny override still blocks");
    // SafeSearch: the rewrite with its safe host's cached (stale) address.
    let (search_down, took) = timed_ask(&server, SEARCH).await;
    assert_eq!(search_down.metadata.response_code, ResponseCode::NoError, "{search_down:?}");
    assert_eq!(records(&search_down), records(&search_up), "SafeSearch still answers while down");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // A name never seen cannot be served stale: SERVFAIL, promptly.
    let (never, took) = timed_ask(&server, NEVER_SEEN).await;
    assert_eq!(never.metadata.response_code, ResponseCode::ServFail, "{never:?}");
    assert!(took < Duration::from_secs(2), "SERVFAIL without a hang, took {took:?}");
    // The overview counts what happened (it has no "upstream down" state of its own).
    let during = json(&mut admin, "/api/overview")["upstream"].clone();
    let figure = |health: &serde_json::Value, key: &str| health[key].as_u64().unwrap_or(0);
    assert!(figure(&during, "failures") > figure(&before, "failures"), "failures counted: {before} -> {during}");
    assert!(figure(&during, "stale_answers") >= figure(&before, "stale_answers") + 4, "{before} -> {during}");
    eprintln!("upstream while down: {during}");

    // Back on the same port: the first miss finds it up, then answers are
    // fresh again with the zone's TTL, and the name never seen resolves.
    let back = Authority::start(&upstream.to_string(), short_lived_world()).await;
    eventually(Duration::from_secs(10), "the name never seen did not resolve once the upstream returned", async || {
        server.ask(PUPIL, NEVER_SEEN).await.metadata.response_code == ResponseCode::NoError
    })
    .await;
    let fresh = server.ask(PUPIL, KEPT_FOR_RETURN).await;
    assert_eq!(fresh.metadata.response_code, ResponseCode::NoError, "{fresh:?}");
    assert!(fresh.answers[0].ttl <= SHORT_TTL, "a fresh answer has the zone's TTL again: {fresh:?}");
    assert!(back.query_count() >= 2, "the returned upstream was asked");
    // Policy answers are unchanged by all this.
    assert_eq!(seen(&server.ask(PUPIL, DENIED).await), seen(&denied_up));
    eprintln!("served stale from {:?} before the return", stale_at.map(|at| at.elapsed()));
    assert_still_running(&mut server);
    drop(server);
    back.stop().await;
}

// ---------------------------------------------------------------------------
// SIGKILL under load.

/// Policy changes made under load: deny overrides for these names.
const DENY_CHANGES: usize = 9;

fn denied_name(n: usize) -> String {
    format!("deny-{n}.kill.test")
}

fn deny_reason(n: usize) -> String {
    format!("Fault test change {n}: deny {}", denied_name(n))
}

const GAMES_REASON: &str = "Fault test change 9: games for the coding club";

/// The world for the SIGKILL test: the school's, and the names to deny.
fn kill_world() -> Vec<support::authority::Zone> {
    let mut zone = support::authority::Zone::new("kill.test.");
    for n in 0..DENY_CHANGES {
        zone = zone.a(&format!("{}.", denied_name(n)), &format!("192.0.2.{}", 150 + n));
    }
    let mut world = support::server::school_world();
    world.push(zone);
    world
}

/// A steady UDP load from a pupil on its own thread: allowed, blocked and
/// soon-denied names, about `per_second` queries a second, replies drained.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<LoadFigures>,
}

#[derive(Debug, Default)]
struct LoadFigures {
    sent: u64,
    answered: u64,
    servfail: u64,
}

impl Load {
    fn start(dns: std::net::SocketAddr, per_second: u64) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let names: Vec<String> = [PLAIN_NAME.to_string(), support::server::GAMES_NAME.to_string()]
            .into_iter()
            .chain((0..DENY_CHANGES).map(denied_name))
            .collect();
        let queries: Vec<Vec<u8>> = names
            .iter()
            .enumerate()
            .map(|(n, name)| {
                let mut query = build_query(name, RecordType::A);
                query.metadata.id = n as u16;
                query.to_vec().unwrap()
            })
            .collect();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let socket = std::net::UdpSocket::bind((PUPIL, 0)).unwrap();
                socket.connect(dns).unwrap();
                socket.set_nonblocking(true).unwrap();
                let mut figures = LoadFigures::default();
                let tick = Duration::from_millis(10);
                let per_tick = (per_second / 100).max(1);
                let mut buffer = [0u8; 1500];
                let mut next = Instant::now();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..per_tick {
                        if socket.send(&queries[n % queries.len()]).is_ok() {
                            figures.sent += 1;
                        }
                        n += 1;
                    }
                    loop {
                        match socket.recv(&mut buffer) {
                            Ok(length) if length >= 4 => {
                                figures.answered += 1;
                                if buffer[3] & 0x0f == 2 {
                                    figures.servfail += 1;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    next += tick;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                figures
            }
        });
        Load { stop, thread }
    }

    fn stop(self) -> LoadFigures {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Ten policy changes (nine deny overrides and games allowed for pupils),
/// each acknowledged by its 303, and a user added, all under a steady load
/// of about 3,000 queries a second; SIGKILL right after the last ack. With
/// nothing running, the database passes `integrity_check` and
/// `foreign_key_check`, and the query log is consistent: every row decodes,
/// and each hour's roll-up counts exactly its rows (they are written in one
/// transaction). Restarted on the same data_dir and config, every change is
/// in force (answers), in the config file and in the change log (not taken
/// for a hand edit); the user logs in; the log search reads the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_change() {
    let authority = Authority::start("127.0.0.1:0", kill_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let mut server = Hedgerow::start(&files).await;
    let mut admin = server.first_admin(ADMIN, ADMIN_PASSWORD);
    let before = server.ask(PUPIL, &denied_name(0)).await;
    assert!(resolves_to(&before, "192.0.2.150"), "allowed before the change: {before:?}");
    let games = server.ask(PUPIL, support::server::GAMES_NAME).await;
    assert_eq!(games.metadata.response_code, ResponseCode::NXDomain, "games blocked at first: {games:?}");

    let load = Load::start(files.dns, 3_000);
    // The load is answered before the changes begin.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = admin.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the policy page");
    for n in 0..DENY_CHANGES {
        let name = denied_name(n);
        let reason = deny_reason(n);
        let saved = admin.post_form(
            "/policy/pupil/override-add",
            &[("csrf", &csrf), ("name", &name), ("kind", "deny"), ("reason", &reason)],
        );
        assert_eq!(saved.status, 303, "change {n} acknowledged: {}", saved.body);
        if n == 4 {
            add_user(&mut admin, "dee.dsl", "safeguarding first always", "role_dsl");
        }
    }
    let saved = admin.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "false"), ("reason", GAMES_REASON)],
    );
    assert_eq!(saved.status, 303, "the last change acknowledged: {}", saved.body);
    server.kill();
    let figures = load.stop();
    eprintln!("load until the kill: {figures:?}");
    assert!(figures.answered > 1_000, "the server was under load: {figures:?}");
    assert_eq!(figures.servfail, 0, "no query failed under load: {figures:?}");

    // Nothing runs: the database as the kill left it.
    let db = files.data_dir.join("hedgerow.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(integrity, "ok");
        let mut check = conn.prepare("PRAGMA foreign_key_check").unwrap();
        let problems: Vec<String> = check
            .query_map([], |row| Ok(format!("{:?} {:?}", row.get::<_, String>(0)?, row.get::<_, Option<i64>>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(problems.is_empty(), "foreign keys hold: {problems:?}");
        // Each hour's roll-up counts exactly the rows of that hour.
        let rows = hedgerow::store::read::rows_between(&db, i64::MIN, i64::MAX).expect("every row decodes");
        assert_eq!(rows.len() as u64, hedgerow::store::read::count_rows(&db).unwrap());
        assert!(rows.len() > 500, "the load was logged: {} rows", rows.len());
        let mut by_hour: std::collections::BTreeMap<i64, (i64, i64)> = std::collections::BTreeMap::new();
        for row in &rows {
            let entry = by_hour.entry(row.time_ms.div_euclid(3_600_000)).or_default();
            entry.0 += 1;
            entry.1 += i64::from(row.decision == "blocked");
        }
        let mut rolled = conn
            .prepare(
                "SELECT hour, sum(count), sum(CASE WHEN decision = 'blocked' THEN count ELSE 0 END) FROM log_hourly \
                 GROUP BY hour",
            )
            .unwrap();
        let rolled: std::collections::BTreeMap<i64, (i64, i64)> = rolled
            .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rolled, by_hour, "hourly roll-ups (rows, blocked) = the rows found, hour by hour");
        eprintln!("query log after the kill: {} rows, by hour {by_hour:?}", rows.len());
    }

    let config = std::fs::read_to_string(&files.config).unwrap();
    for n in 0..DENY_CHANGES {
        assert!(config.contains(&denied_name(n)), "change {n} is in the file:\n{config}");
    }
    assert!(config.contains("!games"), "the last change is in the file:\n{config}");

    let mut server = Hedgerow::start(&files).await;
    for n in 0..DENY_CHANGES {
        let answer = server.ask(PUPIL, &denied_name(n)).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "change {n} in force: {answer:?}");
        assert!(answer.answers.is_empty(), "{answer:?}");
    }
    let games = server.ask(PUPIL, support::server::GAMES_NAME).await;
    assert!(resolves_to(&games, support::server::GAMES_ADDR), "the last change in force: {games:?}");
    let mut admin = DashboardClient::new(&server.url(""));
    admin.log_in(ADMIN, ADMIN_PASSWORD);
    let changes = admin.get("/changes.csv");
    assert_eq!(changes.status, 200);
    for n in 0..DENY_CHANGES {
        assert!(changes.body.contains(&deny_reason(n)), "change {n} in the change log:\n{}", changes.body);
    }
    assert!(changes.body.contains(GAMES_REASON), "the last change in the change log:\n{}", changes.body);
    let hand_edits = admin.get("/changes?kind=file-edit");
    assert!(hand_edits.body.contains("No changes"), "no file-edit after the restart: {}", hand_edits.body);
    let mut dsl = DashboardClient::new(&server.url(""));
    dsl.log_in("dee.dsl", "safeguarding first always");
    // The log search reads the rows written before the kill.
    let found = json(&mut dsl, &format!("/api/log?name={}&window=hour", denied_name(0)));
    assert!(found["rows"].as_array().is_some_and(|rows| !rows.is_empty()), "{found}");
    assert_still_running(&mut server);
    drop(server);
    authority.stop().await;
}

// ---------------------------------------------------------------------------
// The database on a full disk.

/// A small tmpfs mounted over a folder (unmounted when dropped).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a `size` tmpfs on `path` (created). `None`, having said so,
    /// when `HEDGEROW_TEST_NO_TMPFS` is set (the variable
    /// tests/log_disk_full.rs honours); a refused mount fails the test (tests
    /// run as root here and in CI). Unlike log_disk_full.rs there is no
    /// page-cap stand-in: here the real server's whole data_dir fills up.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        if std::env::var_os("HEDGEROW_TEST_NO_TMPFS").is_some() {
            eprintln!("HEDGEROW_TEST_NO_TMPFS is set: the full-disk test of the real server needs a tmpfs; skipped");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        match status {
            Ok(status) if status.success() => Some(SmallDisk { path: path.to_path_buf() }),
            other => panic!(
                "mounting a tmpfs on {} was refused ({other:?}): this test needs root (or CAP_SYS_ADMIN) to mount \
                 one; set HEDGEROW_TEST_NO_TMPFS=1 to skip it",
                path.display()
            ),
        }
    }

    /// Takes all the space there is, with one file.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0x55u8; 16 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
                    break;
                }
            }
        }
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Asks for `count` names never asked before (`n<i>.<tag>.test`: NXDOMAIN
/// from the authority), from a pupil, 50 at a time, and asserts each is
/// answered. New names grow the log's name dictionary, so a full disk is met
/// sooner.
async fn ask_new_names(server: &Hedgerow, tag: &str, from: usize, count: usize) {
    let dns = server.files.dns;
    for chunk in (from..from + count).collect::<Vec<_>>().chunks(50) {
        let mut asks = tokio::task::JoinSet::new();
        for n in chunk {
            let name = format!("n{n}.{tag}.test");
            asks.spawn(async move {
                let query = build_query(&name, RecordType::A);
                let answer = exchange_udp_from(PUPIL.parse().unwrap(), dns, &query).await;
                (name, answer)
            });
        }
        while let Some(done) = asks.join_next().await {
            let (name, answer) = done.unwrap();
            let answer = answer.unwrap_or_else(|error| panic!("no answer for {name}: {error}\n{}", server.stderr()));
            assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain, "{name} answered: {answer:?}");
        }
    }
}

/// The data_dir on a 16 MB tmpfs, filled with one file: DNS keeps answering
/// every query; once the log's writer meets the full disk, the overview (the
/// admin's page in Chromium too, its JSON twin, and a governor's page without
/// the path) and `/metrics` say that the query log is not written and why; a
/// login on the full disk is answered at once (a session, or a 503 page
/// saying the disk is full), and so is a policy change (made, or refused
/// beside the form and not made: file and policy unchanged); the space
/// freed, new rows are found by the log search and the notice goes. Whether
/// the login and the change find room depends on SQLite's write-ahead log;
/// either way is asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_dns_answering_and_the_dashboard_says_so() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    // The metrics listener too, for a monitor's view.
    let metrics_addr = format!("127.0.0.1:{}", support::server::free_port());
    let metrics = format!("http://{metrics_addr}/metrics");
    let mut config = std::fs::read_to_string(&files.config).unwrap();
    config.push_str(&format!("\n[metrics]\nlisten = \"{metrics_addr}\"\n"));
    std::fs::write(&files.config, config).unwrap();
    let Some(disk) = SmallDisk::mount(&files.data_dir, "16m") else { return };
    let mut server = Hedgerow::start(&files).await;
    let mut admin = server.first_admin(ADMIN, ADMIN_PASSWORD);
    add_user(&mut admin, GOVERNOR, GOVERNOR_PASSWORD, "role_governor");
    let mut governor = DashboardClient::new(&server.url(""));
    governor.log_in(GOVERNOR, GOVERNOR_PASSWORD);
    let db = files.data_dir.join("hedgerow.db");
    // The admin in Chromium too, logged in while a session can be saved.
    let browser = Browser::start("faults").await;
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;

    ask_new_names(&server, "before", 0, 200).await;
    let overview = json(&mut admin, "/api/overview");
    assert_eq!(overview["log"]["state"], "ok", "{overview}");
    assert!(overview["log"]["problem"].is_null());
    assert!(!admin.get("/").body.contains("not being written"));

    // Fill the disk; ask new names until the writer has met the full disk.
    disk.fill();
    let mut asked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ask_new_names(&server, "full", asked, 250).await;
        asked += 250;
        let overview = json(&mut admin, "/api/overview");
        if overview["log"]["state"] == "disk_full" {
            break;
        }
        assert!(Instant::now() < deadline, "the log never met the full disk after {asked} new names: {overview}");
    }
    eprintln!("the log met the full disk after {asked} new names");
    // While full, DNS answers every query, old names and new.
    ask_new_names(&server, "still-full", 0, 300).await;
    let plain = server.ask(PUPIL, PLAIN_NAME).await;
    assert!(resolves_to(&plain, PLAIN_ADDR), "{plain:?}");

    let overview = json(&mut admin, "/api/overview");
    let log = &overview["log"];
    let problem = log["problem"].as_str().unwrap_or_else(|| panic!("the API says what is wrong: {overview}"));
    let expected = format!("The query log is not being written: the disk holding {} is full (since ", db.display());
    assert!(problem.starts_with(&expected), "{problem:?}");
    assert!(problem.contains("DNS is still answering") && problem.contains("logging resumes by itself"), "{problem}");
    assert!(log["problem_since_ms"].as_i64().is_some_and(|since| since > 0), "{log}");
    assert!(log["rows_dropped"].as_u64().is_some_and(|dropped| dropped > 0), "rows not written are counted: {log}");
    // The admin's overview page says it at the top, in words.
    let page = admin.get("/");
    assert_eq!(page.status, 200);
    let banner = page.body.split("id=\"log-problem\">").nth(1).unwrap_or_else(|| panic!("a banner:\n{}", page.body));
    let banner = banner.split("</p>").next().unwrap();
    assert!(banner.starts_with(&expected), "{banner}");
    assert!(page.body.contains("on, but not written: the disk is full"), "the health panel agrees");
    let figures = metrics_text(&metrics);
    assert!(figures.contains("hedgerow_log_state{state=\"disk_full\"} 1"), "{figures}");
    assert!(figures.contains("hedgerow_log_not_written_since_seconds "), "{figures}");
    // As the ICT lead sees it, on a laptop and on a phone.
    browser.goto(&server.url("/")).await;
    let shown = browser.find("#log-problem").await.text().await.unwrap();
    assert!(shown.starts_with(&expected), "{shown}");
    browser.screenshot("overview-disk-full").await;
    browser.resize(390, 844).await;
    browser.screenshot("overview-disk-full-phone").await;
    browser.close().await;
    // A governor is told too, without the database's path.
    let page = governor.get("/");
    assert_eq!(page.status, 200);
    let text = page.body.replace("&#39;", "'");
    assert!(text.contains("The query log is not being written: the server's disk is full (since "), "{text}");
    assert!(!page.body.contains(&db.display().to_string()), "no path for a governor");
    let governors = json(&mut governor, "/api/overview");
    assert!(!governors.to_string().contains(&files.data_dir.display().to_string()), "{governors}");

    // A login needs a session row: on the full disk it is answered at once,
    // with a session (the write-ahead log had room) or a clear error page.
    let mut late = DashboardClient::new(&server.url(""));
    let form = late.get("/login");
    assert_eq!(form.status, 200);
    let mut fields = vec![("name", ADMIN.to_string()), ("password", ADMIN_PASSWORD.to_string())];
    fields.extend(csrf_token(&form.body).map(|token| ("csrf", token)));
    let fields: Vec<(&str, &str)> = fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let started = Instant::now();
    let login = late.post_form("/login", &fields);
    eprintln!("a login on the full disk: {} in {:?}: {}", login.status, started.elapsed(), first_line(&login.body));
    match login.status {
        303 => assert!(late.cookie().is_some(), "a session was saved"),
        status => {
            assert_eq!(status, 503, "{}", login.body);
            assert!(
                login.body.contains("disk is full") && login.body.contains("DNS is still answering"),
                "the page says why: {}",
                login.body
            );
        }
    }
    // A policy change needs a change-log row: answered at once too, saved
    // (303), or refused with the reason beside the form and not made.
    let page = admin.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the policy page");
    let change = admin.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "false"), ("reason", "while the disk is full")],
    );
    let said = change.body.split("class=\"field-error").nth(1).map(|rest| first_line(rest)).unwrap_or_default();
    eprintln!("a policy change on the full disk: {}: {said}", change.status);
    match change.status {
        303 => {}
        status => {
            assert!((400..500).contains(&status), "{status}: {}", change.body);
            assert!(
                said.contains("the disk holding the database is full") && said.contains("nothing was changed"),
                "the form says why: {said}"
            );
            let config = std::fs::read_to_string(&files.config).unwrap();
            assert!(!config.contains("!games"), "the file is put back:\n{config}");
            let games = server.ask(PUPIL, support::server::GAMES_NAME).await;
            assert_eq!(games.metadata.response_code, ResponseCode::NXDomain, "not in force: {games:?}");
        }
    }
    assert_still_running(&mut server);

    // Space again: the writer retries every 5 s; new rows are found and the
    // notice goes.
    disk.free();
    let mut n = 0;
    eventually(Duration::from_secs(30), "logging never resumed once space was freed", async || {
        ask_new_names(&server, "after", n, 20).await;
        n += 20;
        json(&mut admin, "/api/overview")["log"]["state"] == "ok"
    })
    .await;
    ask_new_names(&server, "found", 0, 1).await;
    eventually(Duration::from_secs(10), "the row asked after space returned is in the log", async || {
        let rows = json(&mut admin, "/api/log?name=n0.found.test&window=hour");
        rows["rows"].as_array().is_some_and(|rows| rows.len() == 1)
    })
    .await;
    let overview = json(&mut admin, "/api/overview");
    assert!(overview["log"]["problem"].is_null(), "{overview}");
    assert!(!admin.get("/").body.contains("not being written"), "the banner went");
    assert!(!governor.get("/").body.contains("not being written"));
    let figures = metrics_text(&metrics);
    assert!(figures.contains("hedgerow_log_state{state=\"ok\"} 1"), "{figures}");
    assert!(!figures.contains("hedgerow_log_not_written_since_seconds "), "{figures}");
    assert_still_running(&mut server);
    drop(server);
    drop(disk);
    authority.stop().await;
}

/// The metrics listener's text.
fn metrics_text(url: &str) -> String {
    let mut response = ureq::get(url).call().unwrap_or_else(|error| panic!("GET {url}: {error}"));
    response.body_mut().read_to_string().unwrap()
}

fn first_line(text: &str) -> String {
    let text = text.split("<main").nth(1).unwrap_or(text);
    text.chars().take(300).collect()
}
