//! Browser tests: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven with fantoccini) against real servers on
//! loopback.
//!
//! Screenshots are test artefacts: each test saves PNGs of the whole page
//! to `target/screenshots/<test name>/<step>.png`; look at them.

mod support;

use support::authority::Authority;
use support::browser::Browser;
use support::http::{HttpServer, Route};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PLAIN_ADDR, PLAIN_NAME, PUPIL, STAFF, SchoolFiles};

/// The harness itself: Chromium loads a page from a tiny loopback HTTP
/// server (the request is seen there), the test reads the page's text and
/// follows a link, and a full-page screenshot is saved as a real PNG of the
/// window's width. Saved to `target/screenshots/browser_harness/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_loads_a_page_and_saves_a_screenshot() {
    let server = HttpServer::start();
    let tall = "<p>filler</p>".repeat(80);
    server.route(
        "/",
        Route::ok(format!(
            "<!doctype html><html><head><title>Harness</title></head><body>\
             <h1>Hello from loopback</h1><a id=next href=\"/next\">next</a>{tall}</body></html>"
        ))
        .header("Content-Type", "text/html; charset=utf-8"),
    );
    server.route(
        "/next",
        Route::ok("<!doctype html><html><body><h1>Second page</h1></body></html>")
            .header("Content-Type", "text/html; charset=utf-8"),
    );

    let browser = Browser::start("browser_harness").await;
    browser.goto(&server.url("/")).await;
    assert_eq!(browser.find("h1").await.text().await.unwrap(), "Hello from loopback");
    assert_eq!(server.requests_to("/").len(), 1, "Chromium fetched the page from the test server");

    let path = browser.screenshot("first").await;
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", path.display());
    let (width, height) = png_size(&png);
    assert_eq!(width, support::browser::WIDTH, "the shot is as wide as the window");
    assert!(height > support::browser::HEIGHT, "the shot covers the whole tall page, not only the window: {height}");
    // The window is back to its size after the shot.
    let inner = browser.execute("return window.innerWidth;", vec![]).await;
    assert_eq!(inner.as_u64(), Some(u64::from(support::browser::WIDTH)));

    browser.click("#next").await;
    assert_eq!(browser.current_path().await, "/next");
    assert!(browser.text().await.contains("Second page"));
    assert_eq!(server.requests_to("/next").len(), 1);
    browser.close().await;
}

/// The server harness: the real binary starts on the test school's config
/// (free ports, data in a tempdir), forwards to the in-process authority,
/// and its games list is in force (pupils blocked, staff not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_harness_runs_the_real_binary_with_a_games_list() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, false);
    let mut server = Hedgerow::start(&files).await;

    let pupil_games = server.ask(PUPIL, GAMES_NAME).await;
    assert!(!support::server::resolves_to(&pupil_games, GAMES_ADDR), "games blocked for pupils: {pupil_games:?}");
    assert!(support::server::resolves_to(&server.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR));
    assert!(support::server::resolves_to(&server.ask(STAFF, GAMES_NAME).await, GAMES_ADDR));
    assert!(files.data_dir.starts_with(dir.path()));

    server.kill();
    let query = support::client::build_query(PLAIN_NAME, hickory_proto::rr::RecordType::A);
    let after = support::client::exchange_udp_from(PUPIL.parse().unwrap(), files.dns, &query).await;
    assert!(after.is_err(), "nothing answers once the server is killed: {after:?}");
}

/// The browser scenario against the real `hedgerow serve` (DNS and
/// dashboard on free loopback ports, data in a tempdir, an in-process
/// authority upstream, a games list): the first admin is made through the
/// one-time link printed on stderr, logs out and in again, adds a governor;
/// the governor logs in. Screenshots of every page in
/// `target/screenshots/dashboard_scenario/`, numbered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let server = Hedgerow::start(&files).await;
    let browser = Browser::start("dashboard_scenario").await;

    // First admin through the one-time setup link from the server's stderr.
    let link = server.setup_link();
    assert!(link.starts_with(&server.url("/setup/")), "the link points at this dashboard: {link}");
    browser.goto(&link).await;
    assert!(browser.text().await.contains("Create the first admin"));
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.fill("#password_again", ADMIN_PASSWORD).await;
    browser.screenshot("01-setup").await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "after setup: {}", browser.text().await);
    assert!(browser.text().await.contains(&format!("Hello, {ADMIN}")));
    browser.screenshot("02-home-admin").await;

    // The link worked once: it is refused now.
    browser.goto(&link).await;
    assert!(!browser.text().await.contains("Create the first admin"), "the setup link works once");

    // Out and in again through the login page.
    browser.goto(&server.url("/")).await;
    log_out(&browser).await;
    browser.goto(&server.url("/users")).await;
    assert!(browser.current_path().await.starts_with("/login"), "logged out: /users sends to the login page");
    browser.fill("#name", ADMIN).await;
    browser.screenshot("03-login").await;
    log_in(&browser, &server, ADMIN, ADMIN_PASSWORD).await;

    // Users page: add a governor.
    browser.goto(&server.url("/users")).await;
    browser.fill("#add-name", GOVERNOR).await;
    browser.fill("#add-password", GOVERNOR_PASSWORD).await;
    browser.find("form[action='/users'] input[name=role_governor]").await.click().await.unwrap();
    browser.click("form[action='/users'] button[type=submit]").await;
    let users = browser.find("table").await.text().await.unwrap();
    assert!(users.contains(GOVERNOR) && users.contains("governor"), "the governor is listed: {users}");
    browser.screenshot("04-users").await;
    browser.resize(390, 844).await;
    browser.screenshot("04-users-narrow").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // The login audit has the setup, the logout, the login and the add.
    browser.goto(&server.url("/audit")).await;
    let audit = browser.find("table").await.text().await.unwrap();
    assert!(audit.contains(GOVERNOR) && audit.contains("logout"), "the audit shows what happened: {audit}");
    browser.screenshot("04-audit").await;

    // The governor logs in.
    log_out(&browser).await;
    log_in(&browser, &server, GOVERNOR, GOVERNOR_PASSWORD).await;
    browser.screenshot("05-home-governor").await;
    browser.goto(&server.url("/users")).await;
    assert!(!browser.text().await.contains(ADMIN), "a governor cannot see the users");

    browser.close().await;
    drop(server);
    authority.stop().await;
}

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";
const GOVERNOR: &str = "gill.governor";
const GOVERNOR_PASSWORD: &str = "minutes of the last meeting";

/// Logs in through the login page; the header then names the user.
async fn log_in(browser: &Browser, server: &Hedgerow, name: &str, password: &str) {
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", name).await;
    browser.fill("#password", password).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    let header = browser.find("header").await.text().await.unwrap();
    assert!(header.contains(name), "logged in as {name}: {header}");
}

async fn log_out(browser: &Browser) {
    browser.click("form[action='/logout'] button[type=submit]").await;
    assert!(browser.current_path().await.starts_with("/login"), "after logout: {}", browser.current_url().await);
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    let word = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(&png[12..16], b"IHDR");
    (word(16), word(20))
}
