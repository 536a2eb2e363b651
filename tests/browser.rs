//! Browser tests: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven with fantoccini) against real servers on
//! loopback.
//!
//! Screenshots are test artefacts: each test saves PNGs of the whole page
//! to `target/screenshots/<test name>/<step>.png`; look at them. Every
//! dashboard page the scenario shows is also checked with axe-core for
//! serious or critical WCAG 2 A/AA problems (labels, contrast, names).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::authority::Authority;
use support::browser::Browser;
use support::http::{HttpServer, Route};
use support::server::{
    GAMES_ADDR, GAMES_NAME, Hedgerow, PLAIN_ADDR, PLAIN_NAME, PUPIL, STAFF, SchoolFiles, resolves_to,
};

/// The harness itself: Chromium loads a page from a tiny loopback HTTP
/// server (the request is seen there), the test reads the page's text and
/// follows a link, and a full-page screenshot is saved as a real PNG of the
/// window's width. Saved to `target/screenshots/browser_harness/`. The
/// accessibility check finds the faults of a page made to have them.
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
    // A page with the faults the accessibility check is there to catch.
    server.route(
        "/faulty",
        Route::ok(
            "<!doctype html><html lang=en><head><title>Faulty</title></head><body><main><h1>Faulty</h1>\
             <form><input name=unlabelled><button></button></form>\
             <p style=\"color:#bbb;background:#fff\">pale text</p></main></body></html>",
        )
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

    // The accessibility check finds real faults (so a clean dashboard page
    // is clean, not unchecked): an unlabelled field, a nameless button,
    // pale text.
    browser.goto(&server.url("/faulty")).await;
    let problems = browser.accessibility_problems().await.join("\n");
    for rule in ["label", "button-name", "color-contrast"] {
        assert!(problems.contains(rule), "axe should report {rule}:\n{problems}");
    }
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
/// one-time link printed on stderr, logs out and in again and adds a
/// governor; games are allowed for pupils with a reason and a pupil's real
/// UDP query for a games name, blocked before, is answered after, with the
/// change in the change log; a deny override with an expiry seconds ahead is
/// in force, then lapses by itself (answered again, a `lapse` row); Test a
/// name explains a verdict; the governor reads the policy page without
/// controls and is refused a POST sent from the page. Screenshots of every
/// page in `target/screenshots/dashboard_scenario/`, numbered in order
/// (`-narrow`: a 390 px wide phone).
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
    look(&browser, "01-setup").await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "after setup: {}", browser.text().await);
    assert!(browser.text().await.contains(&format!("Hello, {ADMIN}")));
    look(&browser, "02-home-admin").await;

    // The link worked once: it is refused now.
    browser.goto(&link).await;
    assert!(!browser.text().await.contains("Create the first admin"), "the setup link works once");

    // Out and in again through the login page.
    browser.goto(&server.url("/")).await;
    log_out(&browser).await;
    browser.goto(&server.url("/users")).await;
    assert!(browser.current_path().await.starts_with("/login"), "logged out: /users sends to the login page");
    browser.fill("#name", ADMIN).await;
    look(&browser, "03-login").await;
    log_in(&browser, &server, ADMIN, ADMIN_PASSWORD).await;

    // Users page: add a governor.
    browser.goto(&server.url("/users")).await;
    browser.fill("#add-name", GOVERNOR).await;
    browser.fill("#add-password", GOVERNOR_PASSWORD).await;
    browser.fill("#add-reason", "Governor for safeguarding and online safety").await;
    browser.find("form[action='/users'] input[name=role_governor]").await.click().await.unwrap();
    browser.click("form[action='/users'] button[type=submit]").await;
    let users = browser.find("table").await.text().await.unwrap();
    assert!(users.contains(GOVERNOR) && users.contains("governor"), "the governor is listed: {users}");
    look(&browser, "04-users").await;
    browser.resize(390, 844).await;
    look(&browser, "04-users-narrow").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // The login audit has the setup, the logout, the login and the add.
    browser.goto(&server.url("/audit")).await;
    let audit = browser.find("table").await.text().await.unwrap();
    assert!(audit.contains(GOVERNOR) && audit.contains("logout"), "the audit shows what happened: {audit}");
    look(&browser, "04-audit").await;

    // Pupils are kept from games at first: a real UDP query from the pupil
    // address gets no real answer.
    let games = server.ask(PUPIL, GAMES_NAME).await;
    assert!(!resolves_to(&games, GAMES_ADDR), "games blocked for pupils at first: {games:?}");
    browser.goto(&server.url("/policy")).await;
    assert!(browser.text().await.contains("pupil"));
    look(&browser, "05-policy").await;

    // Allow games for pupils, with a reason.
    browser.goto(&server.url("/policy/pupil")).await;
    let games_state = browser.find("#category-games").await.text().await.unwrap();
    assert!(games_state.contains("blocked"), "games shown blocked: {games_state}");
    browser.fill("#cat-games-reason", GAMES_REASON).await;
    browser.click("#category-games form button[type=submit]").await;
    let flash = browser.find(".notice").await.text().await.unwrap();
    assert!(flash.contains("games") && flash.contains("in force"), "the flash says what was saved: {flash}");
    let games_state = browser.find("#category-games").await.text().await.unwrap();
    assert!(games_state.contains("allowed"), "games shown allowed: {games_state}");
    look(&browser, "06-policy-pupil-games-allowed").await;
    browser.resize(390, 844).await;
    look(&browser, "06-policy-pupil-narrow").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // The same query is now answered for real, with no restart.
    let games = server.ask(PUPIL, GAMES_NAME).await;
    assert!(resolves_to(&games, GAMES_ADDR), "games allowed for pupils now: {games:?}");

    // The change log shows who, what and why.
    browser.goto(&server.url("/changes")).await;
    let changes = browser.find("table").await.text().await.unwrap();
    assert!(
        changes.contains(ADMIN) && changes.contains("games") && changes.contains(GAMES_REASON),
        "the change log shows the change: {changes}"
    );
    look(&browser, "07-changes").await;

    // A deny override for a plain name, lapsing a few seconds from now.
    let plain = server.ask(PUPIL, PLAIN_NAME).await;
    assert!(resolves_to(&plain, PLAIN_ADDR), "{PLAIN_NAME} answers at first: {plain:?}");
    // Whole seconds, as the form sends it.
    let until = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + OVERRIDE_SECONDS).unwrap();
    let local = until.to_zoned(jiff::tz::TimeZone::get("Europe/London").unwrap());
    browser.goto(&server.url("/policy/pupil")).await;
    browser.fill("#override-name", PLAIN_NAME).await;
    browser.find("form[action$='/override-add'] input[name=kind][value=deny]").await.click().await.unwrap();
    browser.fill("#override-reason", OVERRIDE_REASON).await;
    // Date and time inputs take their value in ISO form from a script
    // whatever the browser's locale. The time field takes whole minutes (its
    // step); seconds, which the server accepts, keep this test short.
    browser
        .execute(
            "document.getElementById('override-until-date').value = arguments[0];
             const time = document.getElementById('override-until-time');
             time.step = 1;
             time.value = arguments[1];",
            vec![json!(local.strftime("%Y-%m-%d").to_string()), json!(local.strftime("%H:%M:%S").to_string())],
        )
        .await;
    browser.click("form[action$='/override-add'] button[type=submit]").await;
    let flash = browser.find(".notice").await.text().await.unwrap();
    assert!(flash.contains(PLAIN_NAME), "the flash names the override: {flash}");
    let plain = server.ask(PUPIL, PLAIN_NAME).await;
    assert!(jiff::Timestamp::now() < until, "the override was added too slowly to see it in force");
    assert!(!resolves_to(&plain, PLAIN_ADDR), "the deny override is in force: {plain:?}");
    look(&browser, "08-override-added").await;

    // After the expiry it answers again, with nobody doing anything.
    let deadline = Instant::now() + Duration::from_secs(OVERRIDE_SECONDS as u64 + 30);
    loop {
        let plain = server.ask(PUPIL, PLAIN_NAME).await;
        if resolves_to(&plain, PLAIN_ADDR) {
            break;
        }
        assert!(Instant::now() < deadline, "the override never lapsed: {plain:?}\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        jiff::Timestamp::now() >= until,
        "answered again only once the override lapsed (at {until}, now {}):\n{}",
        jiff::Timestamp::now(),
        std::fs::read_to_string(&files.config).unwrap()
    );
    // ... and the change log shows the lapse.
    browser.goto(&server.url("/changes?kind=lapse")).await;
    let lapses = browser.find("table").await.text().await.unwrap();
    assert!(lapses.contains(PLAIN_NAME) && lapses.contains("lapse"), "the change log shows the lapse: {lapses}");
    look(&browser, "09-changes-lapse").await;
    browser.goto(&server.url("/policy/pupil")).await;
    let overrides = browser.find("#overrides-heading + p + .table-wrap table").await.text().await.unwrap();
    assert!(overrides.contains(PLAIN_NAME) && overrides.contains("lapsed"), "marked lapsed: {overrides}");
    look(&browser, "09-policy-pupil-lapsed").await;

    // Test a name: the same explanation as `hedgerow check`.
    browser.goto(&server.url("/test")).await;
    browser.fill("#test-name", GAMES_NAME).await;
    browser.find("#test-group").await.select_by_value("pupil").await.unwrap();
    browser.click("form[action='/test'] button[type=submit]").await;
    let verdict = browser.find(".verdict").await.text().await.unwrap();
    assert!(verdict.to_lowercase().contains("allow"), "games allowed for pupils now: {verdict}");
    look(&browser, "10-test-a-name").await;

    // The governor logs in: reads the policy, is refused its controls.
    log_out(&browser).await;
    log_in(&browser, &server, GOVERNOR, GOVERNOR_PASSWORD).await;
    look(&browser, "11-home-governor").await;
    browser.goto(&server.url("/users")).await;
    assert!(!browser.text().await.contains(ADMIN), "a governor cannot see the users");
    browser.goto(&server.url("/policy/pupil")).await;
    assert!(browser.text().await.contains("only an admin can change it"));
    let post_forms = browser
        .execute(
            "return [...document.querySelectorAll('form')]
                .filter(f => f.method.toLowerCase() === 'post' && f.getAttribute('action') !== '/logout').length;",
            vec![],
        )
        .await;
    assert_eq!(post_forms.as_u64(), Some(0), "no policy controls for a governor");
    look(&browser, "12-policy-pupil-governor").await;
    // A POST sent from the page anyway, with the governor's own CSRF token.
    let status = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const csrf = document.querySelector('input[name=csrf]').value;
             const body = new URLSearchParams({csrf, category: 'games', blocked: 'true', reason: 'a governor tries'});
             fetch('/policy/pupil/category', {method: 'POST', body}).then(r => done(r.status), e => done(String(e)));",
            vec![],
        )
        .await;
    assert_eq!(status.as_u64(), Some(403), "the governor's POST is refused: {status}");
    // ... and a form built in the page and submitted shows the refusal.
    browser
        .execute(
            "const form = document.createElement('form');
             form.method = 'post';
             form.action = '/policy/pupil/category';
             const fields = {csrf: document.querySelector('input[name=csrf]').value, category: 'games',
                             blocked: 'true', reason: 'a governor tries'};
             for (const [name, value] of Object.entries(fields)) {
                 const input = document.createElement('input');
                 input.type = 'hidden'; input.name = name; input.value = value;
                 form.appendChild(input);
             }
             const button = document.createElement('button');
             button.type = 'submit'; button.id = 'governor-tries'; button.textContent = 'try';
             form.appendChild(button);
             document.body.appendChild(form);",
            vec![],
        )
        .await;
    browser.click("#governor-tries").await;
    let refusal = browser.text().await;
    assert!(refusal.contains("403") || refusal.to_lowercase().contains("refused"), "refused: {refusal}");
    look(&browser, "13-governor-refused").await;
    let games = server.ask(PUPIL, GAMES_NAME).await;
    assert!(resolves_to(&games, GAMES_ADDR), "the refused POSTs changed nothing: {games:?}");
    let file = std::fs::read_to_string(&files.config).unwrap();
    assert!(!file.contains("a governor tries"), "nothing of the governor's reached the file");

    browser.close().await;
    drop(server);
    authority.stop().await;
}

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";
const GOVERNOR: &str = "gill.governor";
const GOVERNOR_PASSWORD: &str = "minutes of the last meeting";
const GAMES_REASON: &str = "Year 8 coding club builds browser games this week";
const OVERRIDE_REASON: &str = "Phishing look-alike reported by staff";
/// How far ahead the deny override lapses.
const OVERRIDE_SECONDS: i64 = 15;

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

/// A screenshot of the page to look at, and the accessibility check on it.
async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}
