//! The overview in headless Chromium against the real `hedgerow serve`
//! (DNS and dashboard on free loopback ports, an in-process authority
//! upstream, a games list): DNS queries sent over real UDP sockets from the
//! pupil address show in the charts (the pupil group's blocked and lookup
//! counts for this hour rise by what was sent), in the top blocked names and
//! devices for the admin, and not at all (no name, no address) for a
//! governor, who still sees the counts. Screenshots, desktop and 820 px
//! tablet, admin and governor, in `target/screenshots/overview/`; axe finds
//! no serious problem on either.

mod support;

use std::time::{Duration, Instant};

use support::authority::Authority;
use support::browser::Browser;
use support::server::{GAMES_NAME, Hedgerow, PLAIN_NAME, PUPIL, SchoolFiles};

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";
const GOVERNOR: &str = "gill.governor";
const GOVERNOR_PASSWORD: &str = "minutes of the last meeting";

/// The pupil column's total in the chart table at `index` (0: lookups per
/// hour, 1: blocked per hour), 0 when pupils have no column yet.
async fn pupil_total(browser: &Browser, index: usize) -> u64 {
    let value = browser
        .execute(
            "const table = document.querySelectorAll('table.chart-table')[arguments[0]];
             if (!table) { return -1; }
             const heads = [...table.querySelectorAll('thead th')].map(th => th.textContent.trim());
             const column = heads.indexOf('pupil');
             if (column < 0) { return 0; }
             let total = 0;
             for (const row of table.querySelectorAll('tbody tr')) {
                 total += Number(row.children[column].textContent.replace(/,/g, ''));
             }
             return total;",
            vec![serde_json::json!(index)],
        )
        .await;
    let total = value.as_i64().expect("a number");
    assert!(total >= 0, "the chart table {index} is on the page");
    total as u64
}

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
    assert!(browser.current_path().await.starts_with("/login"));
}

/// Screenshots at desktop width and 820 px (tablet), each checked with axe.
async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
    browser.resize(820, 1180).await;
    browser.screenshot(&format!("{name}-tablet")).await;
    browser.assert_accessible(&format!("{name}-tablet")).await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_reflects_queries_just_sent() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let server = Hedgerow::start(&files).await;
    let browser = Browser::start("overview").await;

    // The first admin, then a governor, through the pages.
    browser.goto(&server.setup_link()).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.fill("#password_again", ADMIN_PASSWORD).await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/");
    browser.goto(&server.url("/users")).await;
    browser.fill("#add-name", GOVERNOR).await;
    browser.fill("#add-password", GOVERNOR_PASSWORD).await;
    browser.fill("#add-reason", "Governor for online safety").await;
    browser.find("form[action='/users'] input[name=role_governor]").await.click().await.unwrap();
    browser.click("form[action='/users'] button[type=submit]").await;

    browser.goto(&server.url("/")).await;
    let lookups_before = pupil_total(&browser, 0).await;
    let blocked_before = pupil_total(&browser, 1).await;

    // Real UDP queries from the pupil address: 6 games lookups (blocked), 4 plain ones.
    const BLOCKED: u64 = 6;
    const PLAIN: u64 = 4;
    for _ in 0..BLOCKED {
        server.ask(PUPIL, GAMES_NAME).await;
    }
    for _ in 0..PLAIN {
        server.ask(PUPIL, PLAIN_NAME).await;
    }

    // The log writer commits within a second or so: reload until the figures move.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (lookups, blocked) = loop {
        browser.goto(&server.url("/")).await;
        let now = (pupil_total(&browser, 0).await, pupil_total(&browser, 1).await);
        if now.1 >= blocked_before + BLOCKED && now.0 >= lookups_before + BLOCKED + PLAIN || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(blocked, blocked_before + BLOCKED, "the blocked chart rose by the blocked queries sent");
    assert_eq!(lookups, lookups_before + BLOCKED + PLAIN, "the lookups chart rose by every query sent");
    // The chart itself draws them: a column part for pupils with the count.
    let svg = browser.find("svg.chart[aria-labelledby^='blocked-hourly']").await.html(false).await.unwrap();
    assert!(svg.contains(&format!("pupil: {blocked}")), "{svg}");
    let text = browser.text().await;
    assert!(text.contains(GAMES_NAME), "the admin sees the top blocked name: {text}");
    assert!(text.contains(PUPIL), "the admin sees the top blocked device: {text}");
    assert!(text.contains("games"), "the category");
    let name_link = browser.find("#names-heading ~ .table-wrap a").await.attr("href").await.unwrap().unwrap();
    assert!(name_link.starts_with(&format!("/log?decision=blocked&name={GAMES_NAME}")), "{name_link}");
    // Health from the server's metrics: the plain name went upstream at least once.
    let round_trips = browser
        .execute(
            "const row = [...document.querySelectorAll('.figures-list div')]
                 .find(div => div.querySelector('dt').textContent.includes('Round trips'));
             return row ? row.querySelector('dd').textContent : '';",
            vec![],
        )
        .await;
    let round_trips: u64 = round_trips.as_str().unwrap().replace(',', "").parse().unwrap_or(0);
    assert!(round_trips >= 1, "the upstream's round trips are counted: {round_trips}");
    assert!(text.contains("local-games"), "the list source is in the list health");
    look(&browser, "01-admin").await;

    // The governor: the same counts, no name and no address.
    log_out(&browser).await;
    log_in(&browser, &server, GOVERNOR, GOVERNOR_PASSWORD).await;
    browser.goto(&server.url("/")).await;
    assert_eq!(pupil_total(&browser, 1).await, blocked, "the governor sees the same figures");
    let source = browser.source().await;
    for secret in [GAMES_NAME, PLAIN_NAME, PUPIL] {
        assert!(!source.contains(secret), "a governor's overview holds {secret}");
    }
    look(&browser, "02-governor").await;

    browser.close().await;
    drop(server);
    authority.stop().await;
}
