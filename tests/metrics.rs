//! `/metrics`, `/health` and `/ready` of the real binary over real sockets:
//! queries sent over UDP move the counters; the exposition passes
//! `promtool check metrics` (Debian's `prometheus` package, installed by
//! `.ci/run`) and is read back line by line; the bearer token is enforced;
//! readiness turns 503 when the database cannot be written, and `hedgerow
//! status` says the same.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::authority::Authority;
use support::server::{GAMES_NAME, Hedgerow, PLAIN_NAME, PUPIL, STAFF, SchoolFiles, free_port, school_world};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// An answer: status, body and the content type.
fn get(url: &str, bearer: Option<&str>) -> (u16, String, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut request = agent.get(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap_or_default(), kind)
}

/// The test school with `[metrics]` on a free port (and `extra` lines in
/// the section), the dashboard on too.
fn school(dir: &std::path::Path, upstream: SocketAddr, extra: &str) -> (SchoolFiles, SocketAddr) {
    let files = SchoolFiles::write(dir, upstream, true);
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(&format!("\n[metrics]\nlisten = \"{metrics}\"\n{extra}"));
    std::fs::write(&files.config, text).unwrap();
    (files, metrics)
}

/// `promtool check metrics` on `text`: its verdict and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Samples by their full name with labels (`name{a="b"}`) -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (name.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line:?}")))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples.get(name).unwrap_or_else(|| panic!("no sample {name} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn real_queries_move_the_counters_and_the_text_parses() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let (files, metrics) = school(dir.path(), authority.addr, "");
    let server = Hedgerow::start(&files).await;
    let url = format!("http://{metrics}/metrics");
    let before = samples(&get(&url, None).1);

    server.ask(PUPIL, PLAIN_NAME).await;
    server.ask(PUPIL, PLAIN_NAME).await; // from the cache
    server.ask(PUPIL, GAMES_NAME).await; // games are blocked for pupils
    server.ask(STAFF, PLAIN_NAME).await;
    // An outsider (no configured network) is refused.
    let query = support::client::build_query(PLAIN_NAME, hickory_proto::rr::RecordType::A);
    let _ = support::client::exchange_udp_from("127.0.0.3".parse().unwrap(), files.dns, &query).await;

    let (status, text, kind) = get(&url, None);
    assert_eq!(status, 200, "{text}");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics failed: {said}\n{text}");
    let after = samples(&text);
    let moved = |name: &str| value(&after, name) - before.get(name).copied().unwrap_or(0.0);
    assert_eq!(moved(r#"hedgerow_lookups_total{group="pupil",decision="blocked"}"#), 1.0, "{text}");
    assert!(moved(r#"hedgerow_lookups_total{group="pupil",decision="allowed"}"#) >= 2.0, "{text}");
    assert!(moved(r#"hedgerow_lookups_total{group="staff",decision="allowed"}"#) >= 1.0, "{text}");
    assert_eq!(moved(r#"hedgerow_lookups_total{group="none",decision="refused"}"#), 1.0, "{text}");
    assert_eq!(moved("hedgerow_refused_outsiders_total"), 1.0, "{text}");
    assert!(moved("hedgerow_cache_hits_total") >= 1.0, "{text}");
    assert!(value(&after, "hedgerow_cache_entries") >= 1.0, "{text}");
    // The first answer (asked while waiting for the server to start) came from upstream.
    assert!(value(&after, "hedgerow_upstream_latency_seconds_count") >= 1.0, "{text}");
    assert_eq!(
        value(&after, r#"hedgerow_upstream_latency_seconds_bucket{le="+Inf"}"#),
        value(&after, "hedgerow_upstream_latency_seconds_count")
    );
    assert_eq!(value(&after, r#"hedgerow_list_entries{list="local-games",category="games"}"#), 1.0, "{text}");
    assert_eq!(value(&after, r#"hedgerow_list_state{list="local-games",state="ok"}"#), 1.0, "{text}");
    assert!(text.contains(&format!("hedgerow_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));

    // The query log's rows reach the counter once the writer commits.
    let mut written = 0.0;
    for _ in 0..50 {
        written = value(&samples(&get(&url, None).1), "hedgerow_log_rows_written_total");
        if written >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written >= 5.0, "log rows written: {written}");

    // A reload of a broken config is refused, and counted.
    let good = std::fs::read_to_string(&files.config).unwrap();
    std::fs::write(&files.config, "this is not toml [").unwrap();
    let hup = Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    let failed = r#"hedgerow_reloads_total{result="failure"}"#;
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = value(&samples(&get(&url, None).1), failed);
        if counted >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 1.0);
    std::fs::write(&files.config, good).unwrap();
    // Health and readiness answer on both listeners without a login.
    for base in [format!("http://{metrics}"), server.url("")] {
        let (status, body, _) = get(&format!("{base}/health"), None);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, body, _) = get(&format!("{base}/ready"), None);
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ready\n") && body.contains("dns ok") && body.contains("database ok"), "{body}");
    }
    // With real traffic since the last check, readiness needs no probe.
    server.ask(STAFF, PLAIN_NAME).await;
    let (status, body, _) = get(&format!("http://{metrics}/ready"), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("answers in the last"), "{body}");
    // /metrics is not on the dashboard.
    assert_ne!(get(&server.url("/metrics"), None).0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let token_file = dir.path().join("metrics.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let (files, metrics) = school(dir.path(), authority.addr, &format!("bearer_token_file = {:?}\n", token_file));
    let _server = Hedgerow::start(&files).await;
    let url = format!("http://{metrics}/metrics");
    let (status, body, _) = get(&url, None);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("hedgerow_lookups_total"));
    assert_eq!(get(&url, Some("0123456789abcdef0123456789abcdeX")).0, 401);
    let (status, body, _) = get(&url, Some(TOKEN));
    assert_eq!(status, 200);
    assert!(body.contains("hedgerow_lookups_total"), "{body}");
    // Health and readiness stay open to the probe.
    assert_eq!(get(&format!("http://{metrics}/health"), None).0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_turns_503_when_the_database_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let (files, metrics) = school(dir.path(), authority.addr, "");
    let server = Hedgerow::start(&files).await;
    let ready = format!("http://{metrics}/ready");
    let status_text = || {
        let output = Command::new(env!("CARGO_BIN_EXE_hedgerow"))
            .args(["status", "--config"])
            .arg(&files.config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    };
    assert_eq!(get(&ready, None).0, 200);
    assert!(status_text().contains("ready:          yes\n"), "{}", status_text());

    // Made read-only (by its mode: this holds when the tests run as root too).
    let database = files.data_dir.join("hedgerow.db");
    let database = if database.exists() { database } else { find_database(&files.data_dir) };
    let mut permissions = std::fs::metadata(&database).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(&database, permissions.clone()).unwrap();
    let (status, body, _) = get(&ready, None);
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready\ndatabase: ") && body.contains("read-only"), "{body}");
    assert!(body.contains("dns ok"), "{body}");
    let (status, body, _) = get(&server.url("/ready"), None);
    assert_eq!(status, 503, "{body}");
    let text = status_text();
    assert!(text.contains("ready:          NO\n") && text.contains("database FAILED"), "{text}");

    // Writable again: ready again.
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&database, permissions).unwrap();
    assert_eq!(get(&ready, None).0, 200);

    // Its folder removed: not ready, and it says the folder is gone.
    std::fs::rename(database.parent().unwrap(), dir.path().join("moved-away")).unwrap();
    let (status, body, _) = get(&ready, None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("folder") && body.contains("gone"), "{body}");
    // Liveness does not depend on it.
    assert_eq!(get(&format!("http://{metrics}/health"), None).0, 200);
}

/// The SQLite file in `data_dir` (the query log's and the dashboard's).
fn find_database(data_dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "db" || ext == "sqlite"))
        .unwrap_or_else(|| panic!("no database in {}", data_dir.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readiness_probe_is_neither_counted_nor_logged() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let (files, metrics) = school(dir.path(), authority.addr, "");
    let _server = Hedgerow::start(&files).await;
    let url = format!("http://{metrics}/metrics");
    let lookups = |text: &str| -> f64 {
        samples(text).iter().filter(|(name, _)| name.starts_with("hedgerow_lookups_total{")).map(|(_, v)| v).sum()
    };
    // Let the start-up query's row reach the database first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = get(&url, None).1;
    // The first look has no earlier one to compare with: it sends a real probe.
    let (status, body, _) = get(&format!("http://{metrics}/ready"), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("dns ok: answered on"), "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = get(&url, None).1;
    assert_eq!(lookups(&after), lookups(&before), "{after}");
    for name in ["hedgerow_log_rows_written_total", "hedgerow_refused_outsiders_total"] {
        assert_eq!(value(&samples(&after), name), value(&samples(&before), name), "{name}: {after}");
    }
}
