//! The Lists page in headless Chromium against the real `hedgerow serve`
//! (DNS and dashboard on free loopback ports, an in-process authority
//! upstream, the local games list, and a games list downloaded from a real
//! HTTP server on 127.0.0.1:0): "update now" clicked, its progress shown by
//! the page's script until it finishes, the download in force; the games
//! source turned off with a reason, after which a DNS query over a real UDP
//! socket for a name only that source lists is answered. Screenshots,
//! desktop and 820 px tablet, in `target/screenshots/lists/`; axe finds no
//! serious problem on either.

mod support;

use std::time::{Duration, Instant};

use support::authority::Authority;
use support::browser::Browser;
use support::http::{HttpServer, Route};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PUPIL, SchoolFiles, resolves_to, school_world};

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";

/// Screenshots at desktop width and 820 px (tablet), each checked with axe.
async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
    browser.resize(820, 1180).await;
    browser.screenshot(&format!("{name}-tablet")).await;
    browser.assert_accessible(&format!("{name}-tablet")).await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;
}

async fn progress_state(browser: &Browser) -> String {
    let state =
        browser.execute("return document.getElementById('lists-progress').getAttribute('data-state');", vec![]).await;
    state.as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_now_shows_progress_and_a_source_turned_off_stops_blocking() {
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let http = HttpServer::start();
    let mut list = String::from("remote.test\n");
    for n in 0..20 {
        list.push_str(&format!("remote-{n}.test\n"));
    }
    // Slow enough for the progress to be seen running.
    http.route("/remote.txt", Route::ok(list).stall(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    std::fs::write(
        dir.path().join("lists").join("remote.toml"),
        format!(
            "[[source]]\nid = \"remote-games\"\ncategory = \"games\"\nformat = \"domains\"\nurl = {:?}\n\
             description = \"Games sites from the trust's mirror\"\n",
            http.url("/remote.txt")
        ),
    )
    .unwrap();
    let server = Hedgerow::start(&files).await;
    let browser = Browser::start("lists").await;

    browser.goto(&server.setup_link()).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.fill("#password_again", ADMIN_PASSWORD).await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/");

    // The nav leads to the page; both sources are there, the download not yet made.
    browser.click("nav a[href='/lists']").await;
    assert_eq!(browser.current_path().await, "/lists");
    let text = browser.text().await;
    assert!(text.contains("local-games") && text.contains("remote-games"), "{text}");
    assert!(text.contains("not downloaded yet"), "{text}");
    look(&browser, "01-before").await;

    // Update now: the script shows it running, then finished.
    browser.click("#lists-update-button").await;
    assert_eq!(browser.current_path().await, "/lists?started=1");
    assert_eq!(progress_state(&browser).await, "running");
    let summary = browser.find("#lists-progress-summary").await.text().await.unwrap();
    assert!(summary.contains("Updating") && summary.contains("of 1"), "{summary}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress_state(&browser).await == "running" {
        assert!(Instant::now() < deadline, "the update never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(progress_state(&browser).await, "done");
    let progress = browser.find("#lists-progress").await.text().await.unwrap();
    assert!(
        progress.contains("Finished") && progress.contains("updated") && progress.contains("remote-games"),
        "{progress}"
    );
    let blocked = server.ask(PUPIL, "remote.test").await;
    assert!(!resolves_to(&blocked, "192.0.2.20"), "the downloaded list is in force");
    // A plain reload shows the same, without script's help.
    browser.goto(&server.url("/lists")).await;
    let text = browser.text().await;
    assert!(text.contains("1 download checked and the lists reloaded"), "{text}");
    look(&browser, "02-updated").await;

    // The games source off, with a reason; the name only it lists is answered.
    let before = server.ask(PUPIL, GAMES_NAME).await;
    assert!(!resolves_to(&before, GAMES_ADDR), "game.test is blocked while local-games is on");
    browser.fill("#reason-local-games", "   ").await;
    browser.click("form[action='/lists/source/local-games'] button[type=submit]").await;
    let error = browser.find("#reason-local-games-error").await.text().await.unwrap();
    assert!(error.contains("reason"), "{error}");
    look(&browser, "03-reason-required").await;
    browser.fill("#reason-local-games", "Games club trial this week").await;
    browser.click("form[action='/lists/source/local-games'] button[type=submit]").await;
    assert!(browser.current_path().await.starts_with("/lists?saved="));
    let text = browser.text().await;
    assert!(text.contains("Saved"), "{text}");
    assert!(text.contains("by the config's [lists] disable"), "{text}");
    let after = server.ask(PUPIL, GAMES_NAME).await;
    assert!(resolves_to(&after, GAMES_ADDR), "game.test is answered once local-games is off: {after:?}");
    look(&browser, "04-source-off").await;
    let config = std::fs::read_to_string(&files.config).unwrap();
    assert!(config.contains("disable = [\"local-games\"]"), "{config}");

    browser.close().await;
    drop(server);
    authority.stop().await;
}
