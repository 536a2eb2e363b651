//! The annual filtering review (issue 15) in headless Chromium against the
//! real `hedgerow serve`: a year of the synthetic school (`hedgerow
//! synthesize`, the real binary, a few thousand rows a day), rolled up into
//! the daily roll-ups the review reads (`store::retention::roll_up`, as the
//! server's retention does), with unblock requests, manual checks, self-test
//! runs, an alert and a change seeded by SQL and the stores. A governor logs
//! in and opens `/review`: every section is there, and the page holds none
//! of the synthetic school's device names, owners, client addresses or
//! looked-up names. Screenshots at desktop and phone width; the page printed
//! to PDF through WebDriver's print command (Chromium's printToPDF) and turned
//! into PNG pages with `pdftoppm` (target/screenshots/review/review-page-N.png).
//! Then the DSL fills in the meeting's part and marks it complete, and the
//! governor sees the signed-off record with no forms.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use hedgerow::config::Config;
use hedgerow::store::alerts::{AlertStore, NewAlert};
use hedgerow::store::{Role, Users};
use rusqlite::{Connection, params};
use support::authority::Authority;
use support::browser::{Browser, HEIGHT, WIDTH};
use support::server::{Hedgerow, SchoolFiles};

const GOVERNOR: &str = "gill";
const DSL: &str = "dee";
const PASSWORD: &str = "a long passphrase for the review";

async fn login(browser: &Browser, server: &Hedgerow, name: &str) {
    browser.client().delete_all_cookies().await.unwrap();
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", name).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "{name} logged in: {}", browser.text().await);
}

/// Prints the page to `<name>.pdf` (WebDriver's print: Chromium's printToPDF,
/// the print stylesheet applied) and turns it into `<name>-page-N.png` with
/// pdftoppm; at least two pages.
async fn print_pages(browser: &Browser, name: &str) {
    let config = fantoccini::wd::PrintConfiguration::builder().background(true).build().unwrap();
    let pdf = browser.client().print(config).await.unwrap();
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    let shots = browser.screenshot_dir().to_path_buf();
    let pdf_path = shots.join(format!("{name}.pdf"));
    std::fs::write(&pdf_path, &pdf).unwrap();
    let status = Command::new("pdftoppm")
        .args(["-png", "-r", "70"])
        .arg(&pdf_path)
        .arg(shots.join(format!("{name}-page")))
        .status()
        .expect("pdftoppm (poppler-utils) turns the PDF into PNG pages");
    assert!(status.success());
    let prefix = format!("{name}-page-");
    let pages = std::fs::read_dir(&shots)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert!(pages >= 2, "{pages} printed pages");
}

/// A date field's value (typing into one follows the browser's locale).
async fn set_date(browser: &Browser, id: &str, day: &str) {
    browser.execute("document.getElementById(arguments[0]).value = arguments[1];", vec![id.into(), day.into()]).await;
}

/// The synthetic school's identifying values: device names, owners, client
/// addresses and looked-up names (the most blocked, and a sample of the rest).
fn identifying(db: &std::path::Path) -> BTreeSet<String> {
    let conn = Connection::open(db).unwrap();
    let mut found = BTreeSet::new();
    let mut collect = |sql: &str| {
        let mut statement = conn.prepare(sql).unwrap();
        for value in statement.query_map([], |row| row.get::<_, String>(0)).unwrap() {
            let value = value.unwrap();
            if value.len() >= 6 {
                found.insert(value);
            }
        }
    };
    collect("SELECT DISTINCT device FROM log_clients WHERE device != ''");
    collect("SELECT DISTINCT owner FROM log_clients WHERE owner != ''");
    collect("SELECT DISTINCT client FROM log_clients");
    collect("SELECT DISTINCT name FROM daily_top_blocked");
    collect("SELECT name FROM devices UNION SELECT owner FROM devices WHERE owner IS NOT NULL");
    let mut statement = conn.prepare("SELECT rname FROM log_names WHERE rname != '' ORDER BY id LIMIT 400").unwrap();
    for rname in statement.query_map([], |row| row.get::<_, String>(0)).unwrap() {
        let name = rname.unwrap().split('.').rev().collect::<Vec<_>>().join(".");
        if name.len() >= 8 {
            found.insert(name);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(
        "\n[school]\nname = \"Hedgerow Test Primary\"\nsenior_leader = \"Pat Head (deputy head)\"\n\
         governor = \"Gill Green\"\ndsl = \"Dee Lewis\"\nit_lead = \"Ian Tate\"\n\n\
         [groups.pupil]\nblock = [\"default\"]\n\
         allow = [{ name = \"scratch.mit.edu\", reason = \"Year 7 coding project\", until = \"2027-07-20T16:00:00Z\" }]\n",
    );
    std::fs::write(&files.config, text).unwrap();
    let database = Config::load(&files.config).unwrap().log.database;
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();

    // The synthetic school: 40 days ending yesterday, a few thousand rows a school day.
    let output = Command::new(env!("CARGO_BIN_EXE_hedgerow"))
        .arg("synthesize")
        .arg("--database")
        .arg(&database)
        .args(["--days", "40", "--rows-per-day", "4000", "--devices", "120", "--seed", "15"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The daily roll-ups the review reads: `synthesize` ends with retention's
    // roll-up; one more run (as the server's retention does) finds nothing left.
    let now = hedgerow::time::now_ms();
    hedgerow::store::retention::roll_up(&database, now).unwrap();
    let conn = Connection::open(&database).unwrap();
    let days: i64 = conn.query_row("SELECT count(*) FROM rollup_days", [], |row| row.get(0)).unwrap();
    assert!(days >= 30, "{days} days rolled up");
    let blocked: i64 = conn
        .query_row("SELECT coalesce(sum(count), 0) FROM daily_counts WHERE decision = 'blocked'", [], |row| row.get(0))
        .unwrap();
    assert!(blocked > 0, "the roll-ups count blocked lookups");
    let secret = identifying(&database);
    assert!(secret.len() > 100, "{} identifying values", secret.len());

    // Requests, checks, self-test runs, an alert and a change in the year.
    let (device, owner, client): (String, String, String) = conn
        .query_row("SELECT device, owner, client FROM log_clients WHERE device != '' LIMIT 1", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    let top_name: String =
        conn.query_row("SELECT name FROM daily_top_blocked ORDER BY count DESC LIMIT 1", [], |row| row.get(0)).unwrap();
    for (number, (category, state)) in [
        ("games", "approved"),
        ("games", "declined"),
        ("social-media", "approved"),
        ("pornography", "declined"),
        ("games", "open"),
    ]
    .into_iter()
    .enumerate()
    {
        let created = now - (number as i64 + 2) * 86_400_000;
        let decided = (state != "open").then_some(created + (number as i64 + 1) * 3_600_000);
        conn.execute(
            "INSERT INTO unblock_requests (name, group_name, category, reason, requester, source, client, created_ms, \
             state, decided_by, decided_ms) VALUES (?1, 'pupil', ?2, 'needed for a lesson', ?3, 'block-page', ?4, ?5, \
             ?6, 'ann', ?7)",
            params![top_name, category, owner, client, created, state, decided],
        )
        .unwrap();
    }
    for (days_ago, outcome, tested, result, action) in [
        (30, "as-expected", "testfiltering.com from a pupil laptop", "every category blocked", ""),
        (
            12,
            "problem",
            "a VPN app on a pupil tablet",
            "the VPN connected",
            "blocked the VPN's addresses on the firewall",
        ),
        (3, "as-expected", "testfiltering.com from a staff laptop", "as the staff policy says", ""),
    ] {
        conn.execute(
            "INSERT INTO manual_checks (checked_ms, checked_by, device, network, group_name, tested, outcome, result, \
             action, recorded_by, recorded_ms) VALUES (?1, 'Ian Tate', ?2, 'pupils', 'pupil', ?3, ?4, ?5, ?6, 'dee', ?1)",
            params![now - days_ago * 86_400_000, device, tested, outcome, result, action],
        )
        .unwrap();
    }
    for days_ago in [35, 28, 21, 14, 7, 1] {
        let failures = i64::from(days_ago == 14);
        conn.execute(
            "INSERT INTO selftest_runs (started_ms, finished_ms, trigger, checks, failures) VALUES (?1, ?1, 'schedule', 42, ?2)",
            params![now - days_ago * 86_400_000, failures],
        )
        .unwrap();
    }
    drop(conn);
    AlertStore::open(&database)
        .unwrap()
        .raise(
            &NewAlert {
                rule: "high-risk".into(),
                severity: "high".into(),
                category: Some("self-harm".into()),
                client: client.clone(),
                device: device.clone(),
                owner: owner.clone(),
                network: "pupils".into(),
                group: "pupil".into(),
                first_ms: now - 5 * 86_400_000,
                last_ms: now - 5 * 86_400_000 + 60_000,
                attempts: 2,
                names: vec![top_name.clone()],
                summary: "any attempt at self-harm".into(),
            },
            now,
            |_| Vec::new(),
        )
        .unwrap();

    let changes = hedgerow::store::changes::ChangeLog::open(&database).unwrap();
    for (days_ago, kind, subject, old, new, reason) in [
        (33, "category", "games for pupil", "allowed", "blocked", "games in lessons, agreed with the head"),
        (
            20,
            "override-add",
            "allow scratch.mit.edu for pupil",
            "",
            "allowed until 2027-07-20",
            "Year 7 coding project",
        ),
        (6, "youtube", "YouTube for staff", "strict", "moderate", "teaching videos were restricted"),
    ] {
        changes
            .record_only(&hedgerow::store::changes::NewChange {
                time_ms: now - days_ago * 86_400_000,
                user: "ann".into(),
                kind: kind.into(),
                group: Some(if kind == "youtube" { "staff" } else { "pupil" }.into()),
                subject: subject.into(),
                old: old.into(),
                new: new.into(),
                reason: reason.into(),
            })
            .unwrap();
    }

    let server = Hedgerow::start(&files).await;
    let users = Users::open(&database).unwrap();
    users.add(GOVERNOR, PASSWORD, &[Role::Governor], now).unwrap();
    users.add(DSL, PASSWORD, &[Role::Dsl], now).unwrap();
    users.add("ann", PASSWORD, &[Role::Admin], now).unwrap();

    let browser = Browser::start("review").await;
    login(&browser, &server, GOVERNOR).await;
    browser.click("nav a[href='/review']").await;
    assert_eq!(browser.current_path().await, "/review");
    let headings: Vec<String> = {
        let mut texts = Vec::new();
        for heading in browser.find_all("main h2").await {
            texts.push(heading.text().await.unwrap());
        }
        texts
    };
    let wanted = [
        "1. Who is responsible",
        "2. What is blocked for whom",
        "3. Effectiveness",
        "4. Over-blocking",
        "5. Change control",
        "6. Regular checks",
        "7. Alerts",
        "8. Technical limitations",
        "9. Actions agreed",
        "Appendix: every change this year",
    ];
    assert_eq!(headings, wanted, "the sections, in order");
    let html = browser.source().await;
    for value in &secret {
        assert!(!html.contains(value.as_str()), "the governor's review names {value:?}");
    }
    for value in [&device, &owner, &client, &top_name] {
        assert!(!html.contains(value.as_str()), "the governor's review names {value:?}");
    }
    assert!(html.contains("Gill Green") && html.contains("<svg"), "{html}");
    assert!(html.contains("a VPN app on a pupil tablet") && html.contains("teaching videos were restricted"));
    assert!(html.contains("scratch.mit.edu") && html.contains("Year 7 coding project"), "the allow override is policy");
    assert!(browser.find_all("main form[method='post']").await.is_empty(), "a governor gets no form");
    browser.screenshot("review-governor").await;
    browser.assert_accessible("the review").await;
    browser.resize(390, 844).await;
    browser.screenshot("review-governor-phone").await;
    browser.resize(WIDTH, HEIGHT).await;

    // Printed: a PDF, each page a PNG to look at.
    print_pages(&browser, "review").await;

    // The DSL fills in the meeting's part and signs it off.
    login(&browser, &server, DSL).await;
    browser.goto(&server.url("/review")).await;
    browser.fill("#limit-https", "Staff explain the certificate warning; the site is still blocked.").await;
    browser.fill("#limit-offsite", "Pupils' phones stay in bags; the acceptable use policy covers mobile data.").await;
    browser
        .fill("#review-participants", "Gill Green, governor\nDee Lewis, DSL\nPat Head, deputy head\nIan Tate, IT lead")
        .await;
    set_date(&browser, "review-next", "2026-11-30").await;
    browser.click("form[action$='/save'] button[type=submit]").await;
    browser.fill("#new-action", "Ask the provider for the IWF and CTIRU lists").await;
    browser.fill("#new-owner", "Ian Tate").await;
    set_date(&browser, "new-due", "2026-01-31").await;
    browser.click("form[action$='/actions'] button[type=submit]").await;
    assert!(
        browser.source().await.contains("value=\"Ask the provider for the IWF and CTIRU lists\""),
        "{}",
        browser.text().await
    );
    assert!(browser.text().await.contains("The actions are saved."));
    browser.screenshot("review-dsl-draft").await;
    browser.assert_accessible("the DSL's draft").await;
    browser.resize(390, 844).await;
    browser.screenshot("review-dsl-draft-phone").await;
    browser.resize(WIDTH, HEIGHT).await;
    // The draft printed: the meeting's answers as text, no form.
    print_pages(&browser, "review-draft").await;
    // Completing without the confirmation is refused beside the box.
    browser.click("form[action$='/complete'] button[type=submit]").await;
    assert!(browser.find_all("#confirm-error").await.len() == 1, "{}", browser.text().await);
    browser.find("form[action$='/complete'] input[name=confirm]").await.click().await.unwrap();
    browser.click("form[action$='/complete'] button[type=submit]").await;
    assert!(browser.text().await.contains(&format!("Signed off by {DSL} on")), "{}", browser.text().await);

    login(&browser, &server, GOVERNOR).await;
    browser.goto(&server.url("/review")).await;
    let text = browser.text().await;
    assert!(text.contains(&format!("Signed off by {DSL} on")), "{text}");
    assert!(text.contains("Pupils' phones stay in bags"), "{text}");
    assert!(browser.find_all("main form[method='post']").await.is_empty(), "no forms on a signed-off review");
    assert!(browser.find_all("main textarea").await.is_empty());
    browser.screenshot("review-signed-off").await;
    browser.assert_accessible("the signed-off review").await;
    browser.close().await;
}
