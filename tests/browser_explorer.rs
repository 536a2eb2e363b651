//! The query log explorer and the device page in headless Chromium against
//! the real `hedgerow serve` (DNS and dashboard on free loopback ports, an
//! in-process authority upstream, a games list): real UDP queries from the
//! pupils' address are found by a search, the device page shows them, and
//! the CSV export downloads (fetched by the page, with its session) and
//! parses. Screenshots of /log and /device/.. at desktop width and 820 px
//! (a tablet) in `target/screenshots/explorer_scenario/`; each page passes
//! the axe check.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::authority::Authority;
use support::browser::Browser;
use support::server::{GAMES_NAME, Hedgerow, PLAIN_NAME, PUPIL, STAFF, SchoolFiles};

const ADMIN: &str = "ict-lead";
const ADMIN_PASSWORD: &str = "a long admin passphrase";

async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let server = Hedgerow::start(&files).await;
    let browser = Browser::start("explorer_scenario").await;

    // The first admin, through the one-time setup link.
    browser.goto(&server.setup_link()).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.fill("#password_again", ADMIN_PASSWORD).await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "after setup: {}", browser.text().await);

    // Real queries over UDP: a pupil's blocked games name and a plain one,
    // and a staff lookup.
    server.ask(PUPIL, GAMES_NAME).await;
    server.ask(PUPIL, PLAIN_NAME).await;
    server.ask(STAFF, PLAIN_NAME).await;

    // A search for the games name finds the pupil's blocked lookup (the log
    // writer flushes within a second or two).
    let search = server.url(&format!("/log?name={GAMES_NAME}&window=hour"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&search).await;
        if browser.find("table.log-table tbody").await.text().await.unwrap().contains(GAMES_NAME) {
            break;
        }
        assert!(Instant::now() < deadline, "the games lookup never reached the log: {}", browser.text().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let table = browser.find("table.log-table tbody").await.text().await.unwrap();
    assert!(table.contains(GAMES_NAME) && table.contains("pupil") && table.contains("blocked"), "{table}");
    assert!(!table.contains(PLAIN_NAME), "only the games name: {table}");

    // The whole log: all three rows, with the form filled from the menu.
    browser.goto(&server.url("/log")).await;
    browser.fill("#log-client", PUPIL).await;
    browser.click("form[action='/log'] button[type=submit]").await;
    let table = browser.find("table.log-table tbody").await.text().await.unwrap();
    assert!(table.contains(GAMES_NAME) && table.contains(PLAIN_NAME), "{table}");
    assert!(!table.contains("staff"), "the staff lookup is not the pupil's: {table}");
    look(&browser, "01-log").await;
    browser.resize(820, 1100).await;
    look(&browser, "01-log-820").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // A bad value is shown beside its field.
    browser.goto(&server.url("/log?window=custom&from=next+tuesday")).await;
    let error = browser.find("#log-from-error").await.text().await.unwrap();
    assert!(error.contains("not a time"), "{error}");
    look(&browser, "02-log-bad-value").await;

    // The device page, from the row's link.
    browser.goto(&server.url(&format!("/log?client={PUPIL}"))).await;
    browser.click("table.log-table tbody tr a").await;
    assert!(browser.current_path().await.starts_with("/device/"), "{}", browser.current_url().await);
    let text = browser.text().await;
    assert!(text.contains(PUPIL) && text.contains("pupil"), "{text}");
    assert!(text.contains("1 blocked lookup"), "{text}");
    let recent = browser.find_all("section table.log-table tbody tr").await.len();
    // (Starting the server asked for the plain name from the pupils' address too.)
    assert!(recent >= 2, "the pupil's lookups: {text}");
    look(&browser, "03-device").await;
    browser.resize(820, 1100).await;
    look(&browser, "03-device-820").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // The CSV exports download with the session and parse.
    let fetch = "const done = arguments[arguments.length - 1];\
                 fetch(arguments[0]).then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])))\
                 .catch(e => done([0, '', String(e)]));";
    for path in [format!("/log.csv?client={PUPIL}"), format!("/device/{PUPIL}.csv")] {
        let answer = browser.execute_async(fetch, vec![json!(path)]).await;
        assert_eq!(answer[0], json!(200), "{path}: {answer}");
        assert!(answer[1].as_str().unwrap().starts_with("text/csv"), "{path}: {answer}");
        let body = answer[2].as_str().unwrap();
        let mut reader = csv::Reader::from_reader(body.as_bytes());
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, hedgerow::store::search::ExportRow::FIELDS.map(String::from).to_vec());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert!(rows.len() >= 2, "{path}: {body}");
        let client_at = header.iter().position(|field| field == "client").unwrap();
        assert!(rows.iter().all(|row| &row[client_at] == PUPIL), "only the pupil's rows: {body}");
        let name_at = header.iter().position(|field| field == "name").unwrap();
        let names: Vec<&str> = rows.iter().map(|row| &row[name_at]).collect();
        assert!(names.contains(&GAMES_NAME) && names.contains(&PLAIN_NAME), "{path}: {body}");
    }
    browser.close().await;
}
