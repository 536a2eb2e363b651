//! Unblock requests in headless Chromium against the real `hedgerow serve`
//! (DNS, the dashboard and the block page on free loopback ports, an
//! in-process authority upstream, a games list and a locked terrorism list):
//! a real UDP lookup of the games name from the pupils' address gets the
//! block page's address; Chromium, told that the name is at 127.0.0.1
//! (`--host-resolver-rules`), opens the block page with the name as its
//! Host, fills in the request and sends it; an admin logs in, asks for the
//! locked name from /requests/new, sees both on /requests (the locked one
//! offering only decline), approves the games name, after which a real DNS
//! lookup from the pupils' address resolves upstream; declines the locked
//! one with a reply, which the decided tab shows. Screenshots in
//! `target/screenshots/requests_scenario/`: the block page at desktop and
//! phone width (390 px), the sent page, /requests/new, /requests open and
//! decided; each page passes the axe check.

mod support;

use hedgerow::config::Config;
use hedgerow::store::unblock::UnblockStore;
use hedgerow::store::{Role, Users};
use support::authority::Authority;
use support::browser::{Browser, HEIGHT, WIDTH};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PUPIL, SchoolFiles, free_port};

const ADMIN: &str = "ann";
const PASSWORD: &str = "a long passphrase for requests";
/// On the test's terrorism list: a locked category.
const LOCKED_NAME: &str = "terror.test";

async fn look(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_scenario() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let lists = dir.path().join("lists");
    std::fs::write(lists.join("terror.txt"), format!("{LOCKED_NAME}\n")).unwrap();
    std::fs::write(
        lists.join("terror.toml"),
        "[[source]]\nid = \"local-terror\"\ncategory = \"terrorism\"\nformat = \"domains\"\npath = \"terror.txt\"\n",
    )
    .unwrap();
    // The pupils' blocked names point at the block page, on a port of its own.
    let block_port = free_port();
    let mut text = std::fs::read_to_string(&files.config).unwrap();
    text.push_str(&format!(
        "\n[block_page]\nlisten = [\"127.0.0.1:{block_port}\"]\n\n[groups.pupil]\nblock_answer = \"block-page\"\n\
         block_page_ipv4 = \"127.0.0.1\"\n"
    ));
    std::fs::write(&files.config, text).unwrap();
    let database = Config::load(&files.config).unwrap().log.database;
    let server = Hedgerow::start(&files).await;
    Users::open(&database).unwrap().add(ADMIN, PASSWORD, &[Role::Admin], hedgerow::time::now_ms()).unwrap();
    let store = UnblockStore::open(&database).unwrap();

    // A real lookup from the pupils' address: the block page's address.
    let answer = server.ask(PUPIL, GAMES_NAME).await;
    assert_eq!(support::server::a_addrs(&answer), ["127.0.0.1"]);

    // Chromium resolves the test names to the block page's address, as the DNS answer did.
    let rules = format!("--host-resolver-rules=MAP {GAMES_NAME} 127.0.0.1, MAP {LOCKED_NAME} 127.0.0.1");
    let browser = Browser::start_with("requests_scenario", &[rules]).await;
    browser.goto(&format!("http://{GAMES_NAME}:{block_port}/homework/page?x=1")).await;
    let text = browser.text().await;
    assert!(text.contains("This site is blocked") && text.contains("Ask for this to be unblocked"), "{text}");
    look(&browser, "01-block-page").await;
    browser.resize(390, 844).await;
    look(&browser, "02-block-page-phone").await;
    // Nothing sticks out sideways on a phone.
    let wide = browser.execute("return document.documentElement.scrollWidth > window.innerWidth;", vec![]).await;
    assert_eq!(wide, false, "the block page scrolls sideways at 390 px");

    // The request, sent from the phone-width page.
    browser.fill("#reason", "Our maths homework uses this site's number games").await;
    browser.fill("#requester", "Sam, 8B").await;
    browser.click("form.request button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Your request has been sent to the school's IT team"), "{text}");
    look(&browser, "03-sent-phone").await;
    browser.resize(WIDTH, HEIGHT).await;
    let open = store.open_groups().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].name.as_str(), open[0].group.as_str()), (GAMES_NAME, "pupil"));
    assert_eq!((open[0].requests[0].requester.as_str(), open[0].requests[0].client.as_str()), ("Sam, 8B", PUPIL));

    // The locked name: the page says it cannot be unblocked and offers no form.
    browser.goto(&format!("http://{LOCKED_NAME}:{block_port}/")).await;
    assert!(browser.text().await.contains("cannot be unblocked"));
    assert!(browser.find_all("form").await.is_empty(), "no form for a locked category");

    // The admin logs in; the nav counts the open request.
    browser.goto(&server.url("/login")).await;
    browser.fill("#name", ADMIN).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form[action='/login'] button[type=submit]").await;
    assert_eq!(browser.current_path().await, "/");
    let badge = browser.find("a[href='/requests'] .nav-badge").await.text().await.unwrap();
    assert!(badge.starts_with('1'), "{badge}");

    // Staff (here the admin) ask for the locked name from the dashboard.
    browser.goto(&server.url("/requests/new")).await;
    browser.fill("#new-name", LOCKED_NAME).await;
    browser.find("#new-group").await.select_by_value("pupil").await.unwrap();
    browser.fill("#new-reason", "History project on extremism").await;
    browser.click("form[action='/requests/new'] button[type=submit]").await;
    assert!(browser.text().await.contains("locked category"), "{}", browser.text().await);
    look(&browser, "04-requests-new").await;

    // /requests: both, the locked one with only decline.
    browser.click("a[href='/requests']").await;
    let text = browser.text().await;
    assert!(text.contains(GAMES_NAME) && text.contains("Sam, 8B") && text.contains(LOCKED_NAME), "{text}");
    assert!(browser.find_all("article.request-locked form[action='/requests/approve']").await.is_empty());
    assert_eq!(browser.find_all("article.request-locked form[action='/requests/decline']").await.len(), 1);
    assert!(text.contains("illegal content lists cannot be unblocked by anyone"), "{text}");
    look(&browser, "05-requests-open").await;
    browser.resize(390, 844).await;
    browser.screenshot("06-requests-open-phone").await;
    browser.resize(WIDTH, HEIGHT).await;

    // Approve the games name for the pupils: the reason is pre-filled from the request.
    let reason = browser.find("#approve-reason-pupil-game-test").await.prop("value").await.unwrap().unwrap();
    assert!(reason.contains("number games"), "{reason}");
    browser.click(&format!("form[aria-label='Approve {GAMES_NAME} for pupil'] button[type=submit]")).await;
    assert_eq!(browser.current_path().await, "/requests?done=approved");
    let answer = server.ask(PUPIL, GAMES_NAME).await;
    assert!(support::server::resolves_to(&answer, GAMES_ADDR), "{answer:?}\n{}", server.stderr());

    // Decline the locked one with a reply.
    browser.fill("#decline-reply-pupil-terror-test", "This list is illegal content; it stays blocked.").await;
    browser.click(&format!("form[aria-label='Decline {LOCKED_NAME} for pupil'] button[type=submit]")).await;
    assert_eq!(browser.current_path().await, "/requests?done=declined");
    assert!(browser.text().await.contains("No open requests."));
    browser.goto(&server.url("/requests?tab=decided")).await;
    let text = browser.text().await;
    assert!(text.contains("it stays blocked") && text.contains("approved") && text.contains("declined"), "{text}");
    look(&browser, "07-requests-decided").await;
    browser.resize(390, 844).await;
    browser.screenshot("08-requests-decided-phone").await;
    browser.close().await;
}
