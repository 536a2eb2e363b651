//! Every answer explains itself: the `Decision` made by the stage that
//! settled a live query is the one the query log keeps (stage and reason),
//! and `hedgerow check` prints the same reason text. Real UDP against an
//! in-process authority, a real SQLite log file read back with
//! `store::search`, and the real binary.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hedgerow::config::Config;
use hedgerow::serve::{self, Running};
use hedgerow::store::{self, LogRow, Search};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::authority::{Authority, Zone};
use support::client::query_udp_from;

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const PUPIL: &str = "127.0.0.1";
const STAFF: &str = "127.0.0.2";
const OUTSIDER: &str = "127.0.0.9";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Every name resolves upstream, so any other answer comes from policy.
fn world() -> Vec<Zone> {
    vec![
        Zone::new("test.")
            .a("casino.test.", "192.0.2.3")
            .cname("alias.test.", "casino.test.")
            .a("plain.test.", "192.0.2.4"),
        Zone::new("stale.example.").ttl(1).a("www.stale.example.", "192.0.2.5"),
        Zone::new("google.com.")
            .a("forcesafesearch.google.com.", "216.239.38.120")
            .a("www.google.com.", "198.51.100.1"),
    ]
}

/// A lists folder with one gambling list (the SafeSearch map is the one
/// built into the binary, as no `safesearch/` folder is here).
fn write_lists(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("gambling.txt"), "casino.test\n").unwrap();
    std::fs::write(
        dir.join("sources.toml"),
        "[[source]]\nid = \"test-gambling\"\ncategory = \"gambling\"\nformat = \"domains\"\npath = \"gambling.txt\"\n",
    )
    .unwrap();
}

/// The config text: staff may reach casino.test by an allow override.
fn config_text(upstream: SocketAddr, data_dir: &Path, lists: &Path) -> String {
    let rest = format!(
        r#"[dashboard]
listen = []
[groups.staff]
allow = ["casino.test"]
[[networks]]
name = "pupils"
cidrs = ["{PUPIL}/32"]
group = "pupil"
[[networks]]
name = "staff-lan"
cidrs = ["{STAFF}/32"]
group = "staff"
"#
    );
    support::config::forwarding_text(upstream, data_dir, lists, "127.0.0.1:0", &rest)
}

struct School {
    running: Running,
    authority: Option<Authority>,
    config: Config,
    config_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl School {
    async fn start() -> School {
        let authority = Authority::start("127.0.0.1:0", world()).await;
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("lists");
        write_lists(&lists);
        let text = config_text(authority.addr, &dir.path().join("data"), &lists);
        let config_path = dir.path().join("hedgerow.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = Config::parse(&text, "decisions-test").unwrap_or_else(|error| panic!("{error}\n{text}"));
        let running = serve::start(&config).await.unwrap();
        School { running, authority: Some(authority), config, config_path, _dir: dir }
    }

    async fn ask(&self, from: &str, name: &str) -> Message {
        query_udp_from(ip(from), self.running.udp_addrs()[0], name, RecordType::A).await
    }

    /// The log's rows for `name`, oldest first, once there are at least
    /// `at_least` of them (or after 5 s). The server hands a row to the log
    /// just after it sends the answer, so the test's flush can overtake it.
    fn rows(&self, name: &str, at_least: usize) -> Vec<LogRow> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            self.running.pipeline.log().expect("logging is on by default").flush();
            let search = Search { name: Some(name.to_string()), limit: 100, ..Search::default() };
            let mut rows = store::search::search(&self.config.log.database, &search).unwrap();
            rows.retain(|row| row.name == name);
            if rows.len() >= at_least || std::time::Instant::now() > deadline {
                rows.reverse();
                return rows;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn only_row(&self, name: &str) -> LogRow {
        let rows = self.rows(name, 1);
        assert_eq!(rows.len(), 1, "{rows:#?}");
        rows.into_iter().next().unwrap()
    }

    async fn stop(mut self) {
        self.running.stop().await;
        if let Some(authority) = self.authority.take() {
            authority.stop().await;
        }
    }
}

fn reason(row: &LogRow) -> &str {
    row.reason.as_deref().unwrap_or_else(|| panic!("no reason in {row:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_override_is_the_reason_logged_for_a_live_query_from_upstream_and_from_the_cache() {
    let school = School::start().await;
    for _ in 0..2 {
        let answer = school.ask(STAFF, "casino.test").await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert!(!answer.answers.is_empty(), "staff reach casino.test: {answer:?}");
    }
    // Pupils are still kept from it.
    assert_eq!(school.ask(PUPIL, "casino.test").await.metadata.response_code, ResponseCode::NXDomain);

    let rows: Vec<LogRow> = school.rows("casino.test", 3).into_iter().filter(|row| row.client == STAFF).collect();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.decision, "allowed");
        assert_eq!(row.stage.as_deref(), Some("blocklist"), "the override's stage, not cache/upstream: {row:#?}");
        assert_eq!(row.category.as_deref(), Some("gambling"), "the category it overrode: {row:#?}");
        assert_eq!(row.list.as_deref(), Some("test-gambling"), "the list it overrode: {row:#?}");
        let reason = reason(row);
        assert!(reason.contains("override \"casino.test\""), "names the override: {reason}");
        assert!(reason.contains("gambling") && reason.contains("staff"), "{reason}");
    }
    // First from upstream, then from the cache: those facts stay on the row.
    assert!(!rows[0].cache_hit && rows[0].upstream_ms.is_some(), "{:#?}", rows[0]);
    assert!(rows[1].cache_hit, "{:#?}", rows[1]);
    assert_eq!(rows[0].reason, rows[1].reason);

    // `hedgerow check` prints the same reason text the log holds.
    let output = Command::new(BINARY)
        .args(["check", "casino.test", "--group", "staff", "--config"])
        .arg(&school.config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(&format!("reason:   {}", reason(&rows[0]))), "{stdout}\nlog: {}", reason(&rows[0]));
    assert!(stdout.contains("decision: allowed") && stdout.contains("category: gambling"), "{stdout}");

    // And `hedgerow log search` shows the stage and the reason.
    let table = Command::new(BINARY)
        .args(["log", "search", "--name", "casino.test", "--config"])
        .arg(&school.config_path)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("stage") && table.contains(reason(&rows[0])), "{table}");
    school.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_logs_its_own_stage_and_reason() {
    let school = School::start().await;

    // A plain name: allowed by upstream, then from the cache.
    school.ask(PUPIL, "plain.test").await;
    school.ask(PUPIL, "plain.test").await;
    let rows = school.rows("plain.test", 2);
    let stages: Vec<_> = rows.iter().map(|row| row.stage.as_deref()).collect();
    assert_eq!(stages, [Some("upstream"), Some("cache")], "{rows:#?}");
    assert_eq!(reason(&rows[1]), "answered from the cache");

    // A CNAME to a blocked name: blocked at stage inspection, not as a direct block.
    let answer = school.ask(PUPIL, "alias.test").await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    let row = school.only_row("alias.test");
    assert_eq!((row.decision.as_str(), row.stage.as_deref()), ("blocked", Some("inspection")), "{row:#?}");
    assert_eq!(row.category.as_deref(), Some("gambling"));
    assert!(reason(&row).starts_with("CNAME target casino.test"), "{row:#?}");
    // The direct block, for comparison, is the blocklist stage's.
    school.ask(PUPIL, "casino.test").await;
    let direct = school.rows("casino.test", 1).into_iter().find(|row| row.client == PUPIL).expect("a pupil row");
    assert_eq!(direct.stage.as_deref(), Some("blocklist"), "{direct:#?}");

    // SafeSearch rewrite.
    school.ask(PUPIL, "www.google.com").await;
    let row = school.only_row("www.google.com");
    assert_eq!((row.decision.as_str(), row.stage.as_deref()), ("safesearch", Some("safesearch")), "{row:#?}");
    assert!(reason(&row).contains("forcesafesearch.google.com"), "{row:#?}");

    // Bypass canary.
    school.ask(PUPIL, "use-application-dns.net").await;
    let row = school.only_row("use-application-dns.net");
    assert_eq!((row.decision.as_str(), row.stage.as_deref()), ("bypass", Some("bypass")), "{row:#?}");
    assert!(!reason(&row).is_empty());

    // An outsider: refused at access, with no network.
    let answer = school.ask(OUTSIDER, "plain.test").await;
    assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    let row = school.rows("plain.test", 3).into_iter().find(|row| row.client == OUTSIDER).expect("an outsider row");
    assert_eq!((row.decision.as_str(), row.stage.as_deref()), ("refused", Some("access")), "{row:#?}");
    assert_eq!(reason(&row), "source address is in no configured network");
    assert_eq!(row.network, None);

    // Served stale: the answer (TTL 1) expires and upstream goes away.
    school.ask(PUPIL, "www.stale.example").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut school = school;
    school.authority.take().unwrap().stop().await;
    let stale = school.ask(PUPIL, "www.stale.example").await;
    assert_eq!(stale.metadata.response_code, ResponseCode::NoError);
    assert_eq!(stale.answers[0].ttl, 30, "stale answers carry the RFC 8767 TTL");
    let rows = school.rows("www.stale.example", 2);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!((rows[1].decision.as_str(), rows[1].stage.as_deref()), ("allowed", Some("cache")), "{rows:#?}");
    assert!(reason(&rows[1]).starts_with("served stale from the cache (RFC 8767)"), "{rows:#?}");

    // JSON and CSV carry `stage` and `reason`, last, in the same order.
    let json = Command::new(BINARY)
        .args(["log", "search", "--name", "alias.test", "--format", "json", "--config"])
        .arg(&school.config_path)
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["stage"], "inspection");
    assert!(line["reason"].as_str().unwrap().starts_with("CNAME target casino.test"), "{line}");
    let csv = Command::new(BINARY)
        .args(["log", "search", "--name", "alias.test", "--format", "csv", "--config"])
        .arg(&school.config_path)
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.lines().next().unwrap().ends_with(",stage,reason"), "{csv}");
    assert!(csv.lines().nth(1).unwrap().contains(",inspection,"), "{csv}");

    school.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_cname_answer_is_inspected_again_for_each_group() {
    let school = School::start().await;
    // Staff may reach casino.test (allow override), so alias.test is answered
    // for staff from upstream and cached with its CNAME.
    let staff = school.ask(STAFF, "alias.test").await;
    assert_eq!(staff.metadata.response_code, ResponseCode::NoError);
    assert!(!staff.answers.is_empty(), "{staff:?}");
    // A pupil's query is then answered from that cache entry, and the CNAME
    // target is still checked against the pupil's policy.
    let pupil = school.ask(PUPIL, "alias.test").await;
    assert_eq!(pupil.metadata.response_code, ResponseCode::NXDomain, "{pupil:?}");
    let rows = school.rows("alias.test", 2);
    let pupil_row = rows.iter().find(|row| row.client == PUPIL).expect("a pupil row");
    assert_eq!((pupil_row.decision.as_str(), pupil_row.stage.as_deref()), ("blocked", Some("inspection")));
    school.stop().await;
}
