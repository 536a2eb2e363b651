//! Alerts in headless Chromium against the real `hedgerow serve` (DNS and
//! dashboard on free loopback ports, an in-process authority upstream, a
//! games list and a self-harm list): real UDP lookups of a self-harm name
//! from the pupils' address raise a high alert (the server's own watch
//! thread); a DSL logs in, sees it in the inbox, opens it, follows the link
//! to the device's lookups an hour either side in the explorer, is refused
//! a resolve without a note (beside the field), acknowledges and resolves it
//! with a note; edits a rule (a bad count beside its field, then saved into
//! the config file); the delivery page queues a test e-mail; a governor sees only the
//! year's counts and is refused the alert. Screenshots of every page at
//! desktop width and 820 px in `target/screenshots/alerts_scenario/`; each
//! page passes the axe check.

mod support;

use std::time::{Duration, Instant};

use hedgerow::config::Config;
use hedgerow::store::alerts::{AlertFilter, AlertState, AlertStore};
use hedgerow::store::{Role, Users};
use support::authority::Authority;
use support::browser::{Browser, HEIGHT, WIDTH};
use support::server::{GAMES_NAME, Hedgerow, PLAIN_NAME, PUPIL, SchoolFiles};

const DSL: &str = "dee";
const GOVERNOR: &str = "gus";
const PASSWORD: &str = "a long passphrase for alerts";
/// On the test's self-harm list (blocked for pupils by the shipped policy).
const HARM_NAME: &str = "harm.test";

/// A screenshot at desktop width and at 820 px, each page checked with axe.
async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
    browser.resize(820, 1100).await;
    browser.screenshot(&format!("{name}-820")).await;
    browser.assert_accessible(&format!("{name} at 820 px")).await;
    browser.resize(WIDTH, HEIGHT).await;
}

async fn login(browser: &Browser, server: &Hedgerow, name: &str) {
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", name).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "{name} logged in: {}", browser.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    // A self-harm list next to the games list.
    let lists = dir.path().join("lists");
    std::fs::write(lists.join("harm.txt"), format!("{HARM_NAME}\n")).unwrap();
    std::fs::write(
        lists.join("harm.toml"),
        "[[source]]\nid = \"local-harm\"\ncategory = \"self-harm\"\nformat = \"domains\"\npath = \"harm.txt\"\n",
    )
    .unwrap();
    // E-mail to a server that is not there: messages wait in the outbox.
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(
        "\n[alerts.email]\nserver = \"127.0.0.1\"\nport = 9\nsecurity = \"none\"\n\
         from = \"hedgerow@school.example\"\nhigh = [\"dsl@school.example\", \"head@school.example\"]\n\
         medium = [\"dsl@school.example\"]\nweekly_digest = \"fri 16:00\"\n",
    );
    std::fs::write(&files.config, text).unwrap();
    let database = Config::load(&files.config).unwrap().log.database;
    let server = Hedgerow::start(&files).await;
    let users = Users::open(&database).unwrap();
    users.add(DSL, PASSWORD, &[Role::Dsl], hedgerow::time::now_ms()).unwrap();
    users.add(GOVERNOR, PASSWORD, &[Role::Governor], hedgerow::time::now_ms()).unwrap();

    // Real lookups over UDP: a plain name, the self-harm name twice, a games name.
    server.ask(PUPIL, PLAIN_NAME).await;
    server.ask(PUPIL, HARM_NAME).await;
    server.ask(PUPIL, HARM_NAME).await;
    server.ask(PUPIL, GAMES_NAME).await;
    let store = AlertStore::open(&database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let alerts = store.search(&AlertFilter::default()).unwrap();
        if let Some(alert) = alerts.into_iter().find(|alert| alert.category == "self-harm") {
            break alert;
        }
        assert!(Instant::now() < deadline, "no alert was raised:\n{}", server.stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((alert.severity.as_str(), alert.client.as_str()), ("high", PUPIL));

    let browser = Browser::start("alerts_scenario").await;
    login(&browser, &server, DSL).await;
    // The nav says one alert is open; the overview too.
    let nav = browser.find("a[href='/alerts'] .nav-badge").await.text().await.unwrap();
    assert!(nav.starts_with('1'), "{nav}");
    assert!(browser.text().await.contains("1 open alert waiting for the DSL"));

    // The inbox.
    browser.click("a[href='/alerts']").await;
    let table = browser.find("table.alert-table tbody").await.text().await.unwrap();
    assert!(table.contains("self-harm") && table.contains(PUPIL) && table.contains("HIGH"), "{table}");
    look(&browser, "01-inbox").await;

    // The alert.
    browser.click(&format!("table.alert-table a[href='/alerts/{}']", alert.id)).await;
    assert_eq!(browser.current_path().await, format!("/alerts/{}", alert.id));
    let text = browser.text().await;
    assert!(text.contains(HARM_NAME) && text.contains("pupils") && text.contains("high-risk"), "{text}");
    look(&browser, "02-alert").await;

    // The device's lookups an hour either side, in the explorer (the log
    // writer flushes within a second or two).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&server.url(&format!("/alerts/{}", alert.id))).await;
        browser.click("a[href^='/log?client=']").await;
        assert!(browser.current_path().await.starts_with("/log?client="));
        let table = browser.find("table.log-table tbody").await.text().await.unwrap();
        if table.contains(HARM_NAME) && table.contains(GAMES_NAME) {
            break;
        }
        assert!(Instant::now() < deadline, "the lookups never reached the explorer: {table}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let window = browser.find("#log-window").await.prop("value").await.unwrap();
    assert_eq!(window.as_deref(), Some("custom"));
    look(&browser, "03-explorer-window").await;

    // Resolve without a note: refused beside the note, nothing changed.
    browser.goto(&server.url(&format!("/alerts/{}", alert.id))).await;
    browser.click(&format!("form[action='/alerts/{}/resolve'] button[type=submit]", alert.id)).await;
    let error = browser.find("#resolve-note-error").await.text().await.unwrap();
    assert!(error.contains("say what was done"), "{error}");
    look(&browser, "04-resolve-refused").await;
    assert_eq!(store.get(alert.id).unwrap().unwrap().state, AlertState::Open);

    // Acknowledge, then resolve with the DSL's note.
    browser.goto(&server.url(&format!("/alerts/{}", alert.id))).await;
    browser.fill("#ack-note", "Seen; speaking to the form tutor.").await;
    browser.click(&format!("form[action='/alerts/{}/acknowledge'] button[type=submit]", alert.id)).await;
    assert!(browser.text().await.contains("Acknowledged: your name"));
    let note = "Spoke to the pupil with their tutor; parents told; referred to the school nurse.";
    browser.fill("#resolve-note", note).await;
    browser.click(&format!("form[action='/alerts/{}/resolve'] button[type=submit]", alert.id)).await;
    let text = browser.text().await;
    assert!(text.contains("Resolved: your note is on the record") && text.contains(note), "{text}");
    look(&browser, "05-resolved").await;
    let resolved = store.get(alert.id).unwrap().unwrap();
    assert_eq!((resolved.state, resolved.acknowledged_by.as_deref()), (AlertState::Resolved, Some(DSL)));
    assert_eq!(resolved.resolved_by.as_deref(), Some(DSL));
    browser.goto(&server.url("/alerts?state=resolved")).await;
    assert!(browser.find("table.alert-table tbody").await.text().await.unwrap().contains("self-harm"));

    // The rules and delivery pages.
    browser.goto(&server.url("/alerts/rules")).await;
    assert!(browser.text().await.contains("repeated-pornography"));
    look(&browser, "06-rules").await;
    // A rule edit: a bad count is shown beside its field, then saved.
    browser.find("#rule-repeated-pornography summary").await.click().await.unwrap();
    browser.fill("#repeated-pornography-count", "lots").await;
    browser.fill("#repeated-pornography-reason", "Year 9 pattern this term").await;
    browser.click("form[action='/alerts/rules/repeated-pornography'] button[type=submit]").await;
    let error = browser.find("#repeated-pornography-count-error").await.text().await.unwrap();
    assert!(error.contains("not a whole number"), "{error}");
    look(&browser, "06-rules-bad-count").await;
    browser.fill("#repeated-pornography-count", "3").await;
    browser.click("form[action='/alerts/rules/repeated-pornography'] button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Saved: alert rule repeated-pornography"), "{text}");
    assert!(text.contains("3 blocked lookups in pornography by one device within 10 minutes"), "{text}");
    assert!(std::fs::read_to_string(&files.config).unwrap().contains("[alerts.rules.repeated-pornography]"));
    browser.goto(&server.url("/alerts/delivery")).await;
    let text = browser.text().await;
    assert!(text.contains("127.0.0.1:9") && text.contains("Not configured"), "{text}");
    browser.click("form[action='/alerts/delivery/test/email'] button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("[Hedgerow] Test alert") && text.contains("[Hedgerow] High alert: self-harm"), "{text}");
    look(&browser, "07-delivery").await;
    browser.click(".who form button[type=submit]").await;

    // A governor: the counts, nothing that names the pupil, and no alert page.
    login(&browser, &server, GOVERNOR).await;
    browser.click("a[href='/alerts']").await;
    let text = browser.text().await;
    assert!(text.contains("self-harm") && text.contains("Mean to acknowledge"), "{text}");
    for secret in [PUPIL, HARM_NAME, GAMES_NAME] {
        assert!(!browser.source().await.contains(secret), "a governor was shown {secret}");
    }
    look(&browser, "08-governor-counts").await;
    browser.goto(&server.url(&format!("/alerts/{}", alert.id))).await;
    assert!(browser.text().await.contains("Only the DSL or an admin"), "{}", browser.text().await);
    browser.close().await;
}
