//! Primary and secondary in headless Chromium, two real `hedgerow serve`
//! processes on loopback with DNS queries over real sockets: the ICT lead
//! sees both servers on the primary's Servers page, and on the secondary
//! the line saying whose policy it follows, its Servers page, the policy
//! shown read-only, and the line turning to a warning when the primary is
//! gone (while DNS keeps answering). Screenshots (desktop, 820 px, phone)
//! in `target/screenshots/servers_scenario/`; each page passes axe.

mod support;

use std::time::{Duration, Instant};

use hedgerow::config::Config;
use hedgerow::store::{Role, Users};
use support::authority::Authority;
use support::browser::Browser;
use support::pair::{PairDirs, primary_files, secondary_files};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PLAIN_ADDR, PLAIN_NAME, PUPIL, resolves_to, school_world};

const ADMIN: &str = "ict.lead";
const PASSWORD: &str = "a long passphrase for two servers";

async fn log_in(browser: &Browser, server: &Hedgerow) {
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/");
}

/// Reloads `path` until its text contains `words`.
async fn until_shown(browser: &Browser, url: &str, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(url).await;
        let text = browser.text().await;
        if text.contains(words) {
            return text;
        }
        assert!(Instant::now() < deadline, "{url} never showed {words:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_scenario() {
    let authority = Authority::start("127.0.0.1:0", school_world()).await;
    let pair = PairDirs::new();
    let key = &pair.key;
    let primary_files = primary_files(&pair.primary(), authority.addr, key, &[]);
    let database = Config::load(&primary_files.config).unwrap().log.database;
    let mut primary = Hedgerow::start(&primary_files).await;
    Users::open(&database).unwrap().add(ADMIN, PASSWORD, &[Role::Admin], hedgerow::time::now_ms()).unwrap();
    let secondary_files = secondary_files(&pair.secondary(), &primary.url(""), key, 1);
    let secondary = Hedgerow::start(&secondary_files).await;
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "games blocked on the secondary");
    assert!(resolves_to(&secondary.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR));

    let browser = Browser::start("servers_scenario").await;
    log_in(&browser, &primary).await;
    browser.click("a[href='/servers']").await;
    let text = until_shown(&browser, &primary.url("/servers"), "Answering; policy in step").await;
    assert!(text.contains("primary (this server)") && text.contains(&secondary_files.dns.to_string()), "{text}");
    browser.look_at_widths("01-primary-servers").await;

    // The secondary: the same admin (the users came with the policy).
    log_in(&browser, &secondary).await;
    let note = browser.find(".server-note").await.text().await.unwrap();
    assert!(note.contains("Secondary server") && note.contains(&primary.url("")), "{note}");
    browser.look_at_widths("02-secondary-home").await;
    browser.goto(&secondary.url("/servers")).await;
    assert!(browser.text().await.contains("Following the primary"));
    browser.look_at_widths("03-secondary-servers").await;
    browser.goto(&secondary.url("/policy/pupil")).await;
    let text = browser.text().await;
    assert!(text.contains("This is a secondary server"), "{text}");
    assert!(browser.find_all("form[action^='/policy/pupil/']").await.is_empty(), "no policy forms on a secondary");
    browser.look_at_widths("04-secondary-policy").await;

    // The primary gone: DNS answers on; every page says so.
    primary.kill();
    let text = until_shown(&browser, &secondary.url("/servers"), "Cannot follow the primary").await;
    assert!(text.contains("cannot reach the primary"), "{text}");
    assert!(!resolves_to(&secondary.ask(PUPIL, GAMES_NAME).await, GAMES_ADDR), "still blocked");
    assert!(resolves_to(&secondary.ask(PUPIL, PLAIN_NAME).await, PLAIN_ADDR), "still resolving");
    browser.look_at_widths("05-secondary-primary-away").await;

    browser.close().await;
    drop(secondary);
    authority.stop().await;
}
