//! Two real `hedgerow serve` processes on loopback, a primary and a
//! secondary with the same `[sync]` key (issue 16): the secondary takes its
//! first policy at start; a change on the primary (its lists, and a policy
//! change through its dashboard) reaches the secondary within the interval,
//! or at once when the primary tells it; the secondary's dashboard is
//! read-only for policy and users and says where the primary is; the
//! primary's Servers page shows the secondary's health; a tampered bundle,
//! one signed with another key and an old one sent again are refused; and
//! the secondary keeps answering with its last policy while the primary is
//! down, across its own restart.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::authority::Authority;
use support::dashboard::{DashboardClient, csrf_token};
use support::http::{HttpServer, Route};
use support::pair::{PairDirs, key_file, primary_files, secondary_files};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PLAIN_ADDR, PLAIN_NAME, PUPIL, resolves_to};

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";

/// Allows games for pupils on `web`'s server, as an admin does on the policy page.
fn allow_games_for_pupils(web: &mut DashboardClient) -> u16 {
    let page = web.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the policy page");
    web.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "false"), ("reason", "Coding club games week")],
    )
    .status
}

/// Waits up to `wait` for `check` to hold of the server's answer for `name`
/// to a pupil; returns how long it took.
async fn until_answer(
    server: &Hedgerow,
    name: &str,
    wait: Duration,
    check: impl Fn(&hickory_proto::op::Message) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = server.ask(PUPIL, name).await;
        if check(&answer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < wait,
            "{name} never changed on the secondary as expected: {answer:?}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the primary for its bundle as a secondary would (the real client),
/// returning the signed bytes and their signature.
fn genuine_bundle(primary: &str, key: &Path) -> (Vec<u8>, String) {
    let key = hedgerow::sync::SyncKey::read(key).unwrap();
    let request = hedgerow::sync::PullRequest {
        sent_ms: hedgerow::time::now_ms(),
        report: hedgerow::sync::Report { name: "test".into(), ..Default::default() },
    };
    hedgerow::sync::follow::fetch(primary, &key, &request).unwrap().expect("a bundle")
}

fn change_kinds(web: &mut DashboardClient) -> Vec<(String, String, String)> {
    let answer = web.get("/api/changes");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let rows = json
        .get("changes")
        .and_then(|rows| rows.as_array())
        .cloned()
        .unwrap_or_else(|| json.as_array().cloned().unwrap_or_default());
    rows.iter()
        .map(|row| {
            let text = |key: &str| row.get(key).and_then(|value| value.as_str()).unwrap_or_default().to_string();
            (text("kind"), text("user"), text("new"))
        })
        .collect()
}

/// Lists and dashboard changes on the primary reach the secondary by its
/// interval alone (the primary names no secondaries to tell); the
/// secondary's users are the primary's; its policy and users are read-only
/// and its pages say where the primary is; the primary shows its health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_the_primary_reaches_the_secondary_within_the_interval() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let pair = PairDirs::new();
    let key = &pair.key;
    let primary_files = primary_files(&pair.primary(), authority.addr, key, &[]);
    let primary = Hedgerow::start(&primary_files).await;
    let mut admin = primary.first_admin(ADMIN, ADMIN_PASSWORD);
    const INTERVAL: u64 = 2;
    let secondary_files = secondary_files(&pair.secondary(), &primary.url(""), key, INTERVAL);
    let secondary = Hedgerow::start(&secondary_files).await;

    // The first policy came at start: games blocked for pupils, plain names resolve.
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "games blocked on the secondary");
    assert!(resolves_to(&secondary.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR), "the secondary resolves upstream");
    let own_file = std::fs::read_to_string(&secondary_files.config).unwrap();

    // A list changed on the primary (its lists folder, then its reload).
    let games = primary_files.config.parent().unwrap().join("lists/games.txt");
    std::fs::write(&games, "game.test\nplain.test\n").unwrap();
    let reloaded = std::process::Command::new(env!("CARGO_BIN_EXE_hedgerow"))
        .args(["reload", "--config"])
        .arg(&primary_files.config)
        .output()
        .unwrap();
    assert!(reloaded.status.success(), "{}", String::from_utf8_lossy(&reloaded.stderr));
    let took = until_answer(&secondary, PLAIN_NAME, Duration::from_secs(INTERVAL * 5 + 10), |answer| {
        !resolves_to(answer, PLAIN_ADDR)
    })
    .await;
    eprintln!("the list change reached the secondary in {took:?} (interval {INTERVAL} s)");

    // A policy change on the primary's dashboard.
    assert_eq!(allow_games_for_pupils(&mut admin), 303, "the primary takes the change");
    let took = until_answer(&secondary, GAMES_NAME, Duration::from_secs(INTERVAL * 5 + 10), |answer| {
        resolves_to(answer, GAMES_ADDR)
    })
    .await;
    eprintln!("the dashboard change reached the secondary in {took:?} (interval {INTERVAL} s)");

    // The same admin logs in on the secondary: users come with the policy.
    let mut there = DashboardClient::new(&secondary.url(""));
    there.log_in(ADMIN, ADMIN_PASSWORD);
    let kinds = change_kinds(&mut there);
    let syncs: Vec<_> = kinds.iter().filter(|(kind, _, _)| kind == "sync").collect();
    assert!(syncs.len() >= 3, "the first policy and both changes are recorded as sync changes: {kinds:?}");
    assert!(syncs.iter().any(|(_, _, new)| new.contains("!games")), "the dashboard change's diff: {syncs:?}");
    assert!(syncs.iter().any(|(_, _, new)| new.contains("lists: changed games.txt")), "the list change: {syncs:?}");
    assert!(syncs.iter().any(|(_, _, new)| new.contains(&format!("users: added {ADMIN}"))), "the users: {syncs:?}");

    // Read-only for policy and users, saying where the primary is.
    let policy = there.get("/policy");
    assert!(
        policy.body.contains("This is a secondary server") && policy.body.contains(&primary.url("")),
        "{}",
        policy.body
    );
    let page = there.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token (the logout form)");
    let refused = there.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "true"), ("reason", "try it here")],
    );
    assert!(refused.status >= 400, "a policy change on the secondary is refused: {} {}", refused.status, refused.body);
    assert!(refused.body.contains("secondary"), "{}", refused.body);
    let users = there.get("/users");
    assert!(users.body.contains("come from the primary") && !users.body.contains("Add a user"), "{}", users.body);
    let added = there.post_form(
        "/users",
        &[
            ("csrf", &csrf),
            ("name", "someone"),
            ("password", "a long enough password"),
            ("password_again", "a long enough password"),
            ("dsl", "on"),
            ("reason", "x"),
        ],
    );
    assert_eq!(added.status, 409, "{}", added.body);
    assert_eq!(
        std::fs::read_to_string(&secondary_files.config).unwrap(),
        own_file,
        "the secondary's own file is untouched"
    );
    let servers = there.get("/servers");
    assert!(servers.body.contains("Following the primary") && servers.body.contains("secondary"), "{}", servers.body);

    // The primary shows the secondary, in step.
    let deadline = Instant::now() + Duration::from_secs(INTERVAL * 5 + 10);
    loop {
        let page = admin.get("/servers");
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains("Answering; policy in step") && page.body.contains(&secondary_files.dns.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "the secondary never showed in step on the primary:\n{}", page.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let api = admin.get("/api/servers");
    let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(json["role"], "primary");
    assert_eq!(json["servers"].as_array().unwrap().len(), 2, "{json}");
}

/// With a long interval, the primary's notice brings a change at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_tells_its_secondary_and_the_change_comes_at_once() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let pair = PairDirs::new();
    let key = &pair.key;
    // The secondary's files first: the primary names its dashboard.
    let placeholder = "http://127.0.0.1:1";
    let secondary_files = secondary_files(&pair.secondary(), placeholder, key, 3600);
    let secondary_url = format!("http://{}", secondary_files.dashboard.unwrap());
    let primary_files = primary_files(&pair.primary(), authority.addr, key, &[secondary_url]);
    let primary = Hedgerow::start(&primary_files).await;
    let mut admin = primary.first_admin(ADMIN, ADMIN_PASSWORD);
    let text = std::fs::read_to_string(&secondary_files.config).unwrap().replace(placeholder, &primary.url(""));
    std::fs::write(&secondary_files.config, text).unwrap();
    let secondary = Hedgerow::start(&secondary_files).await;
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR));

    assert_eq!(allow_games_for_pupils(&mut admin), 303);
    // Far sooner than the hour-long interval: the notice woke it.
    let took =
        until_answer(&secondary, GAMES_NAME, Duration::from_secs(30), |answer| resolves_to(answer, GAMES_ADDR)).await;
    eprintln!("notified change applied in {took:?}");
    assert!(
        primary.stderr_line("told the secondary the policy changed", Duration::from_secs(10)).is_some(),
        "{}",
        primary.stderr()
    );
}

/// A bundle altered on the way, one signed with another key, and an old one
/// sent again are refused: the policy in force stays and the refusal is
/// shown. A stand-in primary (a plain HTTP server) serves what the test
/// gives it, starting with the real primary's genuine bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_replayed_bundle_is_refused() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let pair = PairDirs::new();
    let (dir, key) = (&pair.dir, &pair.key);
    let other_key = key_file(dir.path(), "other.key");
    let primary_files = primary_files(&pair.primary(), authority.addr, key, &[]);
    let primary = Hedgerow::start(&primary_files).await;
    let _admin = primary.first_admin(ADMIN, ADMIN_PASSWORD);
    let (first, first_signature) = genuine_bundle(&primary.url(""), &key);

    let stand_in = HttpServer::start();
    let serve = |bytes: &[u8], signature: &str| {
        stand_in.route("/sync/pull", Route::ok(bytes.to_vec()).header("x-hedgerow-signature", signature));
    };
    serve(&first, &first_signature);
    let stand_in_url = stand_in.url("").trim_end_matches('/').to_string();
    let secondary_files = secondary_files(&pair.secondary(), &stand_in_url, key, 1);
    let secondary = Hedgerow::start(&secondary_files).await;
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "the genuine first policy");
    let state_file = secondary_files.data_dir.join("sync/state.json");
    // The last refusal recorded in the secondary's sync status: why, and when.
    let refused = || -> (String, i64) {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).unwrap_or_default()).unwrap_or_default();
        (state["refused"].as_str().unwrap_or_default().to_string(), state["refused_ms"].as_i64().unwrap_or(0))
    };
    // Waits for a refusal saying `words` made after the last one seen.
    let wait_refused = |words: &'static str| {
        let before = refused().1;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (why, at) = refused();
            if at > before && why.contains(words) {
                return;
            }
            assert!(Instant::now() < deadline, "never refused ({words}): {why:?}\n{}", secondary.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // Altered on the way: games allowed for pupils, the signature kept.
    let text = String::from_utf8(first.clone()).unwrap();
    let tampered = text.replace("group = \\\"pupil\\\"", "group = \\\"staff\\\"");
    assert_ne!(tampered, text, "the tamper changes the pupils' network to staff");
    serve(tampered.as_bytes(), &first_signature);
    wait_refused("signature does not verify");
    // Signed, but with another key.
    let other = hedgerow::sync::SyncKey::read(&other_key).unwrap();
    serve(tampered.as_bytes(), &other.sign(tampered.as_bytes()));
    wait_refused("signature does not verify");
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "the policy in force stayed");

    // A newer genuine bundle is taken ...
    let mut web = first_admin_or_login(&primary);
    assert_eq!(allow_games_for_pupils(&mut web), 303);
    let (second, second_signature) = genuine_bundle(&primary.url(""), &key);
    serve(&second, &second_signature);
    until_answer(&secondary, GAMES_NAME, Duration::from_secs(15), |answer| resolves_to(answer, GAMES_ADDR)).await;
    // ... and the older one, sent again, is refused.
    serve(&first, &first_signature);
    wait_refused("old bundle sent again");
    assert!(resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "the newer policy stays");
    assert!(secondary.stderr().contains("SYNC: refused a policy bundle"), "{}", secondary.stderr());
}

/// Logs in as the admin made earlier.
fn first_admin_or_login(server: &Hedgerow) -> DashboardClient {
    let mut web = DashboardClient::new(&server.url(""));
    web.log_in(ADMIN, ADMIN_PASSWORD);
    web
}

/// With the primary gone, the secondary answers with its last policy, says
/// so, starts again from it, and follows again when the primary is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secondary_keeps_answering_while_the_primary_is_down() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let pair = PairDirs::new();
    let key = &pair.key;
    let primary_files = primary_files(&pair.primary(), authority.addr, key, &[]);
    let mut primary = Hedgerow::start(&primary_files).await;
    let _admin = primary.first_admin(ADMIN, ADMIN_PASSWORD);
    let secondary_files = secondary_files(&pair.secondary(), &primary.url(""), key, 1);
    let mut secondary = Hedgerow::start(&secondary_files).await;
    let mut web = DashboardClient::new(&secondary.url(""));
    web.log_in(ADMIN, ADMIN_PASSWORD);

    primary.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = web.get("/servers");
        if page.body.contains("Cannot follow the primary") {
            assert!(page.body.contains("cannot reach the primary"), "{}", page.body);
            break;
        }
        assert!(Instant::now() < deadline, "the secondary never said the primary is away:\n{}", page.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(web.get("/").body.contains("keeps answering with the primary"), "every page says so");
    for _ in 0..20 {
        assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "still blocked");
        assert!(resolves_to(&secondary.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR), "still resolving");
    }

    // Restarted while the primary is away: it starts from the policy it has.
    secondary.kill();
    let secondary = Hedgerow::start(&secondary_files).await;
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "blocked after a restart");
    assert!(resolves_to(&secondary.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR), "resolving after a restart");

    // The primary back (same files, same port): following again.
    let primary = Hedgerow::start(&primary_files).await;
    let mut web = first_admin_or_login(&primary);
    assert_eq!(allow_games_for_pupils(&mut web), 303);
    until_answer(&secondary, GAMES_NAME, Duration::from_secs(20), |answer| resolves_to(answer, GAMES_ADDR)).await;
}

/// The bundle (with the users' password hashes) goes only to a request
/// signed with the key and sent within five minutes; a server that is not a
/// primary has no such route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_served_only_to_a_signed_fresh_request() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let pair = PairDirs::new();
    let (dir, key) = (&pair.dir, &pair.key);
    let other = key_file(dir.path(), "other.key");
    let files = primary_files(&pair.primary(), authority.addr, key, &[]);
    let primary = Hedgerow::start(&files).await;
    let _admin = primary.first_admin(ADMIN, ADMIN_PASSWORD);
    let post = |url: &str, body: &[u8], signature: &str| -> u16 {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(url)
            .header("x-hedgerow-signature", signature)
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    let request = |sent_ms: i64| {
        serde_json::to_vec(&hedgerow::sync::PullRequest { sent_ms, report: hedgerow::sync::Report::default() }).unwrap()
    };
    let (good, other) = (hedgerow::sync::SyncKey::read(&key).unwrap(), hedgerow::sync::SyncKey::read(&other).unwrap());
    let url = primary.url("/sync/pull");
    let fresh = request(hedgerow::time::now_ms());
    assert_eq!(post(&url, &fresh, &good.sign(&fresh)), 200, "signed and fresh");
    assert_eq!(post(&url, &fresh, ""), 403, "unsigned");
    assert_eq!(post(&url, &fresh, &other.sign(&fresh)), 403, "another key");
    let mut altered = fresh.clone();
    altered.push(b' ');
    assert_eq!(post(&url, &altered, &good.sign(&fresh)), 403, "altered after signing");
    let old = request(hedgerow::time::now_ms() - 10 * 60 * 1000);
    assert_eq!(post(&url, &old, &good.sign(&old)), 403, "signed ten minutes ago");
    assert_eq!(post(&primary.url("/sync/notify"), &fresh, &good.sign(&fresh)), 404, "a primary takes no notices");

    // A server on its own serves no bundle at all.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = Hedgerow::start(&support::server::SchoolFiles::write(alone_dir.path(), authority.addr, true)).await;
    assert_eq!(post(&alone.url("/sync/pull"), &fresh, &good.sign(&fresh)), 404);
}
