//! The Checks page in headless Chromium against the real `hedgerow serve`
//! (the shipped lists with the pornography seed list disabled, an
//! in-process authority serving every test name): a DSL runs the self-test
//! from the Checks page and reads the run (pornography's failure first for
//! the groups that block it), records a manual check (a bad value refused
//! beside its field first), and sees it in the log. Screenshots of each
//! page at desktop width, 820 px and phone width in
//! `target/screenshots/checks_scenario/`; each page passes the axe check.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use hedgerow::config::Config;
use hedgerow::review::selftest::{self, Expect};
use hedgerow::store::{Role, Users};
use support::authority::{Authority, Zone};
use support::browser::Browser;
use support::server::{Hedgerow, SchoolFiles, school_world};

const DSL: &str = "dee";
const PASSWORD: &str = "a long passphrase for checks";
const SHIPPED_LISTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lists");

/// Every self-test name and SafeSearch target resolves upstream.
fn world() -> Vec<Zone> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for entry in &selftest::shipped().category {
        names.extend(entry.names.iter().cloned());
    }
    for planned in selftest::plan(&Config::embedded_default(), &hedgerow::lists::floor::safesearch(), 0) {
        if let Expect::Cname(host) = planned.expect {
            names.insert(host);
        }
    }
    let mut zones = school_world();
    for (index, name) in names.iter().enumerate() {
        zones.push(Zone::new(&format!("{name}.")).a(&format!("{name}."), &format!("192.0.2.{}", 100 + index)));
    }
    zones
}

fn school(dir: &Path, upstream: std::net::SocketAddr) -> SchoolFiles {
    let files = SchoolFiles::write(dir, upstream, true);
    let text = std::fs::read_to_string(&files.config).unwrap();
    let games = dir.join("lists").display().to_string();
    let replaced = text.replace(
        &format!("dir = {games:?}"),
        &format!("dir = {SHIPPED_LISTS:?}\ndisable = [\"hedgerow-pornography\"]"),
    );
    assert_ne!(replaced, text);
    std::fs::write(&files.config, replaced).unwrap();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_scenario() {
    let authority = Authority::start("127.0.0.1:0", world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = school(dir.path(), authority.addr);
    let database = Config::load(&files.config).unwrap().log.database;
    let server = Hedgerow::start(&files).await;
    Users::open(&database).unwrap().add(DSL, PASSWORD, &[Role::Dsl], hedgerow::time::now_ms()).unwrap();

    let browser = Browser::start("checks_scenario").await;
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", DSL).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/");

    browser.click("a[href='/checks']").await;
    assert_eq!(browser.current_path().await, "/checks");
    assert!(browser.text().await.contains("No self-test has run yet"));

    // Run it: the run's page, pornography's failure first for pupils.
    browser.click("form[action='/checks/selftest'] button[type=submit]").await;
    let path = browser.current_path().await;
    assert!(path.starts_with("/checks/selftest/"), "{path}");
    let first = browser.find("details.checks-group tbody tr").await.text().await.unwrap();
    assert!(first.contains("FAIL") && first.contains("testfiltering.pornhub.com"), "{first}");
    let text = browser.text().await;
    // Every group blocks pornography: each has its two failures, and the rest pass.
    assert!(text.contains("Group staff") && text.contains("2 of ") && text.contains("Pass"), "{text}");
    browser.look_at_widths("01-run").await;

    // A manual check: "other" network without its name is refused beside the field.
    browser.goto(&server.url("/checks")).await;
    browser.fill("#chk-device", "pupil laptop 4").await;
    browser.find("#chk-network").await.select_by_value("other").await.unwrap();
    browser.fill("#chk-tested", "testfiltering.com all tests").await;
    browser.fill("#chk-result", "All four SWGfL tests blocked").await;
    browser.click("form[action='/checks/manual'] button[type=submit]").await;
    let error = browser.find("#chk-network-error").await.text().await.unwrap();
    assert!(error.contains("name the other network"), "{error}");
    browser.execute("document.getElementById('chk-network').scrollIntoView()", vec![]).await;
    browser.look_at_widths("02-manual-refused").await;

    browser.fill("input[name=network_other]", "sixth-form wifi").await;
    browser.click("form[action='/checks/manual'] button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Saved the check of testfiltering.com all tests"), "{text}");
    browser.execute("window.scrollTo(0, 0)", vec![]).await;
    browser.look_at_widths("03-checks").await;
    let saved = hedgerow::store::checks::ChecksStore::open(&database).unwrap().manual_checks(5).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!((saved[0].check.network.as_str(), saved[0].recorded_by.as_str()), ("sixth-form wifi", DSL));

    browser.close().await;
    drop(server);
    authority.stop().await;
}
