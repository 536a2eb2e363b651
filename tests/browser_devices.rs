//! The Devices page in headless Chromium against the real `hedgerow serve`
//! (DNS and dashboard on free loopback ports, an in-process authority
//! upstream): a device added in the form names the pupils' address, and a
//! real UDP query from that address then shows the name in the query log;
//! a pasted CSV with a bad line saves the good lines and reports the bad
//! one by its number; the edit form opens from the table; the DHCP leases
//! file the server read on its schedule is shown with its counts. Screenshots of
//! /devices and the edit form at desktop width and 820 px (a tablet) in
//! `target/screenshots/devices_scenario/`; each page passes the axe check.

mod support;

use std::time::{Duration, Instant};

use support::authority::Authority;
use support::browser::Browser;
use support::server::{GAMES_NAME, Hedgerow, PUPIL, STAFF, SchoolFiles};

const ADMIN: &str = "ict-lead";
const ADMIN_PASSWORD: &str = "a long admin passphrase";

async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    // A dnsmasq leases file naming the staff address, read by the server on its schedule.
    let leases = dir.path().join("dnsmasq.leases");
    let until = hedgerow::time::now_ms() / 1000 + 86_400;
    std::fs::write(&leases, format!("{until} 3c:22:fb:77:88:99 {STAFF} staff-laptop-9 *\n")).unwrap();
    let mut config = std::fs::read_to_string(&files.config).unwrap();
    config
        .push_str(&format!("\n[log]\nleases_file = {:?}\nleases_format = \"dnsmasq\"\n", leases.display().to_string()));
    std::fs::write(&files.config, config).unwrap();
    let server = Hedgerow::start(&files).await;
    let browser = Browser::start("devices_scenario").await;

    browser.goto(&server.setup_link()).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.fill("#password_again", ADMIN_PASSWORD).await;
    browser.click("form[action^='/setup/'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/", "after setup: {}", browser.text().await);

    // The nav leads to the page; a device added in the form names the pupils' address.
    browser.click("nav a[href='/devices']").await;
    assert_eq!(browser.current_path().await, "/devices");
    // (The server reads the leases file as it starts; wait for that reading.)
    let deadline = Instant::now() + Duration::from_secs(15);
    while browser.text().await.contains("not read yet") {
        assert!(Instant::now() < deadline, "the leases file was never read: {}", browser.text().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.goto(&server.url("/devices")).await;
    }
    browser.fill("#dev-ip", PUPIL).await;
    browser.fill("#dev-name", "library-pc-4").await;
    browser.fill("#dev-owner", "Library desk").await;
    browser.click("form[method='post'][action='/devices'] button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Saved library-pc-4."), "{text}");
    let table = browser.find("table.devices-table tbody").await.text().await.unwrap();
    assert!(table.contains("library-pc-4") && table.contains("Library desk") && table.contains(PUPIL), "{table}");
    // The server read the leases file at start and recorded it: the status and the device it named.
    assert!(table.contains("staff-laptop-9") && table.contains("dhcp"), "{table}");
    let status = browser.find("dl.facts").await.text().await.unwrap();
    assert!(status.contains("dnsmasq.leases (dnsmasq)") && status.contains("1 current of 1 in the file"), "{status}");
    assert!(!status.contains("not read yet") && !status.contains("Last error"), "{status}");

    // A real query from that address: the log shows the device's name.
    server.ask(PUPIL, GAMES_NAME).await;
    let search = server.url(&format!("/log?name={GAMES_NAME}&window=hour"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        browser.goto(&search).await;
        if browser.find("table.log-table tbody").await.text().await.unwrap().contains("library-pc-4") {
            break;
        }
        assert!(Instant::now() < deadline, "the name never reached the log: {}", browser.text().await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.ask(PUPIL, GAMES_NAME).await;
    }

    // A bad value is shown beside its field, the rest kept.
    browser.goto(&server.url("/devices")).await;
    browser.fill("#dev-ip", "10.0.0.300").await;
    browser.fill("#dev-name", "typo-pc").await;
    browser.click("form[method='post'][action='/devices'] button[type=submit]").await;
    let error = browser.find("#dev-ip-error").await.text().await.unwrap();
    assert!(error.contains("not an IP address"), "{error}");
    let kept = browser.find("#dev-name").await.prop("value").await.unwrap().unwrap_or_default();
    assert_eq!(kept, "typo-pc");

    // A pasted CSV with a bad third line.
    browser.goto(&server.url("/devices")).await;
    browser
        .fill(
            "#import-csv",
            "ip,mac,name,owner,group\n10.0.0.31,,lab-pc-31,ICT suite,pupil\n10.0.0.999,,bad-pc,,\n,3c:22:fb:01:02:03,ipad-7,Year 7,\n",
        )
        .await;
    browser.click("form[action='/devices/import'] button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Imported 2 devices"), "{text}");
    let refused = browser.find(".import-errors").await.text().await.unwrap();
    assert!(refused.contains("Line 3") && refused.contains("10.0.0.999"), "{refused}");
    let table = browser.find("table.devices-table tbody").await.text().await.unwrap();
    assert!(table.contains("lab-pc-31") && table.contains("ipad-7") && !table.contains("bad-pc"), "{table}");
    look(&browser, "01-devices-import").await;

    browser.goto(&server.url("/devices")).await;
    look(&browser, "02-devices").await;
    browser.resize(820, 1100).await;
    look(&browser, "02-devices-820").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;

    // The edit form, from the row's link; a bad MAC is refused beside it.
    browser.click("a[aria-label='Edit library-pc-4']").await;
    assert!(browser.current_path().await.ends_with("/edit"), "{}", browser.current_url().await);
    browser.fill("#dev-mac", "zz:zz").await;
    browser.click("form[action$='/edit'] button[type=submit]").await;
    let error = browser.find("#dev-mac-error").await.text().await.unwrap();
    assert!(error.contains("not a MAC address"), "{error}");
    look(&browser, "03-device-edit-error").await;
    browser.resize(820, 1100).await;
    look(&browser, "03-device-edit-error-820").await;
    browser.resize(support::browser::WIDTH, support::browser::HEIGHT).await;
    browser.fill("#dev-mac", "").await;
    browser.fill("#dev-owner", "Library office").await;
    browser.click("form[action$='/edit'] button[type=submit]").await;
    let table = browser.find("table.devices-table tbody").await.text().await.unwrap();
    assert!(table.contains("Library office"), "{table}");
    let changes = browser.text().await;
    assert!(changes.contains(&format!("{ADMIN} (")) && changes.contains("edited"), "{changes}");
    browser.close().await;
}
