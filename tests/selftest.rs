//! The built-in self-test (issue 15) end to end, with the real binary and a
//! real authority: `hedgerow selftest` asks the running server, which asks
//! its own listener as each group. With the shipped lists loaded every check
//! passes (exit 0) and a result per group and category is stored; with the
//! pornography seed list disabled the run fails loudly (exit 1, the failure
//! named, an alert raised). Neither run leaves a row in the query log.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hedgerow::review::selftest::{self, Expect};
use support::authority::{Authority, Zone};
use support::server::{Hedgerow, PUPIL, SchoolFiles, school_world};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const SHIPPED_LISTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lists");

/// The test school's world plus every self-test name and SafeSearch target,
/// so each name a group may be allowed resolves upstream (one zone each).
fn world() -> Vec<Zone> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for entry in &selftest::shipped().category {
        names.extend(entry.names.iter().cloned());
    }
    let config = hedgerow::config::Config::embedded_default();
    for planned in selftest::plan(&config, &hedgerow::lists::floor::safesearch(), 0) {
        if let Expect::Cname(host) = planned.expect {
            names.insert(host);
        }
    }
    let mut zones = school_world();
    for (index, name) in names.iter().enumerate() {
        let address = format!("192.0.2.{}", 100 + index);
        zones.push(Zone::new(&format!("{name}.")).a(&format!("{name}."), &address));
    }
    zones
}

/// The test school's files with the shipped lists (every category's seed
/// list) in place of the games-only folder, and `extra_lists` added to `[lists]`.
fn school(dir: &Path, upstream: std::net::SocketAddr, extra_lists: &str) -> SchoolFiles {
    let files = SchoolFiles::write(dir, upstream, false);
    let text = std::fs::read_to_string(&files.config).unwrap();
    let games = dir.join("lists").display().to_string();
    let replaced = text.replace(&format!("dir = {games:?}"), &format!("dir = {SHIPPED_LISTS:?}\n{extra_lists}"));
    assert_ne!(replaced, text, "the test school's config no longer names its lists folder:\n{text}");
    std::fs::write(&files.config, replaced).unwrap();
    files
}

fn hedgerow(files: &SchoolFiles, args: &[&str]) -> Output {
    Command::new(BINARY).args(args).arg("--config").arg(&files.config).output().expect("run hedgerow")
}

fn database(files: &SchoolFiles) -> std::path::PathBuf {
    hedgerow::config::Config::load(&files.config).unwrap().log.database
}

/// The query log's rows naming `name` (`hedgerow log search`, JSON lines).
fn log_rows(files: &SchoolFiles, name: &str) -> usize {
    let output = hedgerow(files, &["log", "search", "--format", "json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().filter(|line| line.contains(&format!("\"{name}\""))).count()
}

/// Waits until the query log holds a row for `name` (the writer commits within 0.5 s).
fn wait_for_log_row(files: &SchoolFiles, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while log_rows(files, name) == 0 {
        assert!(Instant::now() < deadline, "the query log never showed {name}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn selftest_passes_with_every_list_and_fails_loudly_without_one() {
    let authority = Authority::start("127.0.0.1:0", world()).await;
    let dir = tempfile::tempdir().unwrap();

    // Nothing running: exit 2, and it says how to start the server.
    let files = school(dir.path(), authority.addr, "");
    let absent = hedgerow(&files, &["selftest"]);
    assert_eq!(absent.status.code(), Some(2), "{absent:?}");
    assert!(String::from_utf8_lossy(&absent.stderr).contains("hedgerow serve"), "{absent:?}");

    // 1. Every shipped list loaded: all pass.
    let server = Hedgerow::start(&files).await;
    let output = hedgerow(&files, &["selftest"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}\nserver:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.stderr()
    );
    assert!(stdout.contains("group pupil:") && stdout.contains("group staff:"), "{stdout}");
    assert!(stdout.contains("iwf.testfiltering.com") && !stdout.contains("FAIL"), "{stdout}");

    // A result per group and category in the database.
    let checks = hedgerow::store::checks::ChecksStore::open(&database(&files)).unwrap();
    let runs = checks.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert!(run.passed() && run.trigger == hedgerow::store::checks::Trigger::Cli, "{run:?}");
    let results = checks.results(run.id).unwrap();
    assert_eq!(results.len() as i64, run.checks);
    let config = hedgerow::config::Config::load(&files.config).unwrap();
    for group in config.groups.keys() {
        for entry in &selftest::shipped().category {
            assert!(
                results.iter().any(|r| &r.group == group && r.kind == "category" && r.subject == entry.id),
                "no result for {group} / {}",
                entry.id
            );
        }
    }
    let pupil_porn = results
        .iter()
        .find(|r| r.group == "pupil" && r.name == "testfiltering.pornhub.com")
        .expect("pupils are asked SWGfL's name");
    assert_eq!((pupil_porn.expected.as_str(), pupil_porn.passed), ("blocked", true));
    assert!(pupil_porn.got.starts_with("blocked"), "{pupil_porn:?}");
    // Staff may play games: roblox.com went upstream and resolved.
    let staff_games = results.iter().find(|r| r.group == "staff" && r.subject == "games").unwrap();
    assert_eq!(staff_games.expected, "allowed");
    assert!(staff_games.got.starts_with("resolved to 192.0.2."), "{staff_games:?}");
    assert!(results.iter().any(|r| r.group == "pupil" && r.kind == "safesearch" && r.passed));
    assert!(results.iter().any(|r| r.group == "pupil" && r.kind == "bypass" && r.passed));

    // JSON for scripts: the same run.
    let json = hedgerow(&files, &["selftest", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let report: hedgerow::store::checks::RunReport = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report.results.len() as i64, report.run.checks);

    // The self-test's questions are not traffic: one real query of a test
    // name shows in the log once (asked by three runs' worth of groups, it
    // would show many times if internal queries were logged).
    let answer = server.ask(PUPIL, "xvideos.com").await;
    assert_eq!(answer.metadata.response_code, hickory_proto::op::ResponseCode::NXDomain);
    wait_for_log_row(&files, "xvideos.com");
    assert_eq!(log_rows(&files, "xvideos.com"), 1, "the self-test's own queries reached the query log");
    for name in ["iwf.testfiltering.com", "roblox.com", "www.google.com", "use-application-dns.net"] {
        assert_eq!(log_rows(&files, name), 0, "{name}: the self-test's own queries reached the query log");
    }
    // Nor did they raise the pupils' alerts (the shipped rules watch csam).
    let db = rusqlite::Connection::open(database(&files)).unwrap();
    let alerts: i64 = db.query_row("SELECT count(*) FROM alerts", [], |row| row.get(0)).unwrap();
    assert_eq!(alerts, 0, "a passing self-test raised an alert");
    drop(server);

    // 2. The pornography seed list disabled while pupils still have the
    // category on: pupils get testfiltering.pornhub.com, and the run says so.
    let dir2 = tempfile::tempdir().unwrap();
    let broken = school(dir2.path(), authority.addr, "disable = [\"hedgerow-pornography\"]");
    let server = Hedgerow::start(&broken).await;
    let output = hedgerow(&broken, &["selftest"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "stdout:\n{stdout}\nserver:\n{}", server.stderr());
    let failing = stdout
        .lines()
        .find(|line| line.contains("testfiltering.pornhub.com") && line.contains("FAIL"))
        .unwrap_or_else(|| panic!("the failure is not named:\n{stdout}"));
    assert!(failing.contains("blocked") && failing.contains("resolved to 192.0.2."), "{failing}");
    assert!(stdout.contains("SELF-TEST FAILED"), "{stdout}");

    let checks = hedgerow::store::checks::ChecksStore::open(&database(&broken)).unwrap();
    let run = checks.runs(1).unwrap().remove(0);
    assert!(run.failures > 0 && !run.passed());
    let failures: Vec<_> = checks.results(run.id).unwrap().into_iter().filter(|r| !r.passed).collect();
    assert!(failures.iter().all(|r| r.subject == "pornography"), "{failures:?}");

    // One high alert, rule "selftest", naming the failure.
    let db = rusqlite::Connection::open(database(&broken)).unwrap();
    let (rule, severity, names, summary): (String, String, String, String) = db
        .query_row("SELECT rule, severity, names, summary FROM alerts", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .expect("one alert raised");
    assert_eq!((rule.as_str(), severity.as_str()), ("selftest", "high"));
    assert!(names.contains("testfiltering.pornhub.com"), "{names}");
    assert!(summary.contains("pornography should block testfiltering.pornhub.com for pupil"), "{summary}");
    assert_eq!(log_rows(&broken, "testfiltering.pornhub.com"), 0, "the self-test's own queries reached the query log");
    drop(server);
    authority.stop().await;
}
