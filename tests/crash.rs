//! A change the dashboard acknowledged survives SIGKILL the next moment: the
//! real `hedgerow serve` is killed (no flush, no shutdown) right after the
//! 303 that acknowledges a change, started again on the same data_dir and
//! config, and the change is there: in force, in the file and in the logs.

mod support;

use support::authority::Authority;
use support::dashboard::{DashboardClient, csrf_token};
use support::server::{GAMES_ADDR, GAMES_NAME, Hedgerow, PUPIL, SchoolFiles, resolves_to};

const ADMIN: &str = "ict.lead";
const ADMIN_PASSWORD: &str = "hedge laying in november";

const REASON: &str = "Coding club builds browser games this week";

/// Games allowed for pupils on the policy page (303 acknowledged), then at
/// once SIGKILL: after the restart on the same data_dir and config the
/// change is in force (a pupil's real DNS query for a games name is
/// answered), in the config file and in the change log with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_acknowledged_survives_sigkill() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let mut server = Hedgerow::start(&files).await;
    let mut web = server.first_admin(ADMIN, ADMIN_PASSWORD);
    let before = server.ask(PUPIL, GAMES_NAME).await;
    assert!(!resolves_to(&before, GAMES_ADDR), "games blocked for pupils at first: {before:?}");

    let page = web.get("/policy/pupil");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the policy page");
    let saved = web.post_form(
        "/policy/pupil/category",
        &[("csrf", &csrf), ("category", "games"), ("blocked", "false"), ("reason", REASON)],
    );
    assert_eq!(saved.status, 303, "the change is acknowledged: {}", saved.body);
    server.kill();

    let config = std::fs::read_to_string(&files.config).unwrap();
    assert!(config.contains("!games"), "the change is in the file:\n{config}");
    let server = Hedgerow::start(&files).await;
    let after = server.ask(PUPIL, GAMES_NAME).await;
    assert!(resolves_to(&after, GAMES_ADDR), "games allowed for pupils after the restart: {after:?}");
    let mut web = DashboardClient::new(&server.url(""));
    web.log_in(ADMIN, ADMIN_PASSWORD);
    let changes = web.get("/changes?group=pupil");
    assert_eq!(changes.status, 200);
    assert!(changes.body.contains(REASON) && changes.body.contains("games"), "in the change log: {}", changes.body);
    // Recorded once: the restart did not take the change for a hand edit.
    let hand_edits = web.get("/changes?kind=file-edit");
    assert!(hand_edits.body.contains("No changes"), "no file-edit after the restart: {}", hand_edits.body);
    drop(server);
    authority.stop().await;
}

/// A user added on the users page (acknowledged), then SIGKILL: after
/// the restart the user is listed and can log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_survives_sigkill() {
    let authority = Authority::start("127.0.0.1:0", support::server::school_world()).await;
    let dir = tempfile::tempdir().unwrap();
    let files = SchoolFiles::write(dir.path(), authority.addr, true);
    let mut server = Hedgerow::start(&files).await;
    let mut web = server.first_admin(ADMIN, ADMIN_PASSWORD);

    let page = web.get("/users");
    let csrf = csrf_token(&page.body).expect("a CSRF token on the users page");
    let added = web.post_form(
        "/users",
        &[
            ("csrf", &csrf),
            ("name", "dee.dsl"),
            ("password", "safeguarding first always"),
            ("role_dsl", "on"),
            ("reason", "new safeguarding lead"),
        ],
    );
    // The users page answers an add with the page itself and a notice.
    assert!(added.status == 200 && added.body.contains("Added dee.dsl"), "the add is acknowledged: {}", added.body);
    server.kill();

    let server = Hedgerow::start(&files).await;
    let mut web = DashboardClient::new(&server.url(""));
    web.log_in("dee.dsl", "safeguarding first always");
    let mut admin = DashboardClient::new(&server.url(""));
    admin.log_in(ADMIN, ADMIN_PASSWORD);
    assert!(admin.get("/users").body.contains("dee.dsl"));
    drop(server);
    authority.stop().await;
}
