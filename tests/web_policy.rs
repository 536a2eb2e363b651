//! The policy pages, "Test a name" and the change log at router level
//! (`web::app(state)` driven with `oneshot`) on a real running server
//! (`serve::start` from a real config file in a tempdir, its SQLite
//! database, its policy editor and reload): the role matrix of every new
//! route, a toggle that reaches the file, the change log and the pipeline,
//! locked categories refused by page and API, a refused form shown again
//! with its message beside the field and the input kept, the CSV export, and
//! the governor's page without forms.

mod support;

use std::path::{Path, PathBuf};

use axum::http::{StatusCode, header};
use hedgerow::dns::DecisionKind;
use hedgerow::store::changes::{ChangeLog, NewChange};
use hedgerow::web::AppState;
use support::router::{RouterSchool, School, request};

/// A config file as a school writes it: pupils on 127.0.0.1, the shipped
/// pupil policy, a games list (game.test) and a malware list (locked).
fn config_file(dir: &Path) -> PathBuf {
    let lists = support::config::games_lists(dir);
    std::fs::write(lists.join("malware.txt"), "bad.test\n").unwrap();
    std::fs::write(
        lists.join("malware.toml"),
        "[[source]]\nid = \"local-malware\"\ncategory = \"malware\"\nformat = \"domains\"\npath = \"malware.txt\"\n",
    )
    .unwrap();
    let text = format!(
        "# Hedgerow for Example Primary\n\
         data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
         [upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
         [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
         [[networks]]\nname = \"pupils\" # the pupil wifi\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
         [[networks]]\nname = \"staff\"\ncidrs = [\"127.0.0.2/32\"]\ngroup = \"staff\"\n\n\
         # Pupils: the shipped policy.\n[groups.pupil]\nblock = [\"default\"] # keep it strict\n\n\
         [groups.staff]\nblock = [\"default\"]\n",
        data = dir.join("data").display().to_string(),
        lists = lists.display().to_string(),
    );
    let path = dir.join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn school() -> School {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path());
    let school = School::start(dir, path).await;
    assert!(school.running.editor.is_some(), "a server started from a writable file has an editor");
    school
}

const GAMES_OFF: &[(&str, &str)] = &[("category", "games"), ("blocked", "false"), ("reason", "Games club at lunch")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_route_checks_roles_in_the_server() {
    let school = school().await;
    let pages = ["/policy", "/policy/pupil", "/test", "/test?name=game.test&group=pupil", "/changes", "/changes.csv"];
    let apis = ["/api/policy", "/api/policy/pupil", "/api/changes"];
    // Logged out: pages go to the login form, the API answers 401, and no POST gets through.
    for path in pages {
        let reply = school.get(path, None).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert!(reply.location().starts_with("/login?next=/"), "{path}: {}", reply.location());
    }
    for path in apis {
        assert_eq!(school.get(path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let anonymous = school
        .send(request("POST", "/policy/pupil/category", None, "application/x-www-form-urlencoded", "x=1".into()))
        .await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert!(anonymous.location().starts_with("/login"));
    let anonymous = school.send(request("POST", "/api/check", None, "application/json", "{}".into())).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let before = school.file();
    let (ann, gus, dee) = (school.login("ann").await, school.login("gus").await, school.login("dee").await);
    // The admin reads everything.
    for path in pages.iter().chain(&apis) {
        assert_eq!(school.get(path, Some(&ann)).await.status, StatusCode::OK, "admin {path}");
    }
    // The governor reads everything and changes nothing.
    for path in pages.iter().chain(&apis) {
        assert_eq!(school.get(path, Some(&gus)).await.status, StatusCode::OK, "governor {path}");
    }
    let every_form = [
        ("/policy/pupil/category", GAMES_OFF),
        ("/policy/pupil/safesearch", &[("on", "off"), ("reason", "r")][..]),
        ("/policy/pupil/youtube", &[("mode", "off"), ("reason", "r")][..]),
        ("/policy/pupil/bypass", &[("on", "off"), ("reason", "r")][..]),
        ("/policy/pupil/block-answer", &[("answer", "null"), ("reason", "r")][..]),
        ("/policy/pupil/override-add", &[("name", "example.org"), ("kind", "allow"), ("reason", "r")][..]),
        ("/policy/pupil/override-remove", &[("name", "example.org"), ("kind", "allow"), ("reason", "r")][..]),
        (
            "/policy/pupil/schedule-add",
            &[("category", "games"), ("day_mon", "on"), ("from", "12:00"), ("to", "13:00"), ("reason", "r")][..],
        ),
        ("/policy/pupil/schedule-remove", &[("index", "0"), ("reason", "r")][..]),
    ];
    for (path, form) in every_form {
        for (who, session) in [("governor", &gus), ("dsl", &dee)] {
            let reply = school.post(path, session, form).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who} POST {path}: {}", reply.body);
        }
    }
    let edit = serde_json::json!({"kind": "category", "category": "games", "blocked": false, "reason": "r"});
    for session in [&gus, &dee] {
        assert_eq!(school.post_json("/api/policy/pupil", session, edit.clone()).await.status, StatusCode::FORBIDDEN);
    }
    // The DSL tests names and reads the change log, but not the policy pages.
    for path in ["/test", "/changes", "/changes.csv", "/api/changes"] {
        assert_eq!(school.get(path, Some(&dee)).await.status, StatusCode::OK, "dsl {path}");
    }
    for path in ["/policy", "/policy/pupil", "/api/policy", "/api/policy/pupil"] {
        assert_eq!(school.get(path, Some(&dee)).await.status, StatusCode::FORBIDDEN, "dsl {path}");
    }
    for session in [&ann, &gus, &dee] {
        let reply = school.post("/test", session, &[("name", "game.test"), ("group", "pupil")]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let reply =
            school.post_json("/api/check", session, serde_json::json!({"name": "game.test", "group": "pupil"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // Nothing was changed by the refused requests.
    assert_eq!(school.file(), before);
    assert!(school.changes().is_empty());
    // The nav offers each role only what it may use.
    let nav = |body: &str, href: &str| body.contains(&format!("<a href=\"{href}\""));
    let gus_home = school.get("/", Some(&gus)).await.body;
    let dee_home = school.get("/", Some(&dee)).await.body;
    assert!(nav(&gus_home, "/policy") && nav(&gus_home, "/changes") && nav(&gus_home, "/test"));
    assert!(!nav(&dee_home, "/policy") && nav(&dee_home, "/changes") && nav(&dee_home, "/test"));
    // A form without its CSRF token is refused.
    let forged = school
        .send(request(
            "POST",
            "/policy/pupil/category",
            Some(&ann.cookie),
            "application/x-www-form-urlencoded",
            "category=games&blocked=false&reason=r".into(),
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(school.file(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toggle_with_a_reason_reaches_the_file_the_change_log_and_the_pipeline() {
    let school = school().await;
    let ann = school.login("ann").await;
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Blocked);
    let page = school.get("/policy/pupil", Some(&ann)).await.body;
    assert!(page.contains("action=\"/policy/pupil/category\""), "the admin has the toggle");

    let reply = school.post("/policy/pupil/category", &ann, GAMES_OFF).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(reply.location().starts_with("/policy/pupil?saved="), "{}", reply.location());
    let back = school.get(reply.location(), Some(&ann)).await;
    assert!(back.body.contains("Saved: games for pupil allowed (in force now)"), "{}", back.body);

    // In the file (comments kept), in the change log with the reason, in force.
    let file = school.file();
    assert!(file.contains("\"!games\"") && file.contains("# keep it strict"), "{file}");
    let changes = school.changes();
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!(
        (change.user.as_str(), change.kind.as_str(), change.group.as_deref(), change.reason.as_str()),
        ("ann", "category", Some("pupil"), "Games club at lunch")
    );
    assert_eq!((change.old.as_str(), change.new.as_str()), ("blocked", "allowed"));
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Allowed);
    // The page, the API and "Test a name" say so too.
    let api = school.get("/api/policy/pupil", Some(&ann)).await.json();
    let games = api["categories"].as_array().unwrap().iter().find(|c| c["id"] == "games").unwrap();
    assert_eq!(games["state"], "allowed");
    let check = school.post_json("/api/check", &ann, serde_json::json!({"name": "game.test", "group": "pupil"})).await;
    assert_eq!(check.json()["decision"], "allowed");
    let changes_page = school.get("/changes", Some(&ann)).await.body;
    assert!(changes_page.contains("games for pupil") && changes_page.contains("Games club at lunch"));

    // The same through the API: block it again.
    let edit = serde_json::json!({"kind": "category", "category": "games", "blocked": true, "reason": "Club over"});
    let reply = school.post_json("/api/policy/pupil", &ann, edit).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["new"], "blocked");
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Blocked);
    let test_page = school.post("/test", &ann, &[("name", "game.test"), ("group", "pupil")]).await.body;
    assert!(test_page.contains("decision: blocked") && test_page.contains("category: games"), "{test_page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_category_has_no_control_and_is_refused_by_page_and_api() {
    let school = school().await;
    let ann = school.login("ann").await;
    let before = school.file();
    let page = school.get("/policy/pupil", Some(&ann)).await.body;
    let row = &page[page.find("id=\"category-malware\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("locked") && row.contains("always blocked"), "{row}");
    assert!(!row.contains("<form"), "a locked category has no control: {row}");
    let csam = &page[page.find("id=\"category-csam\"").unwrap()..];
    assert!(csam[..csam.find("</tr>").unwrap()].contains("always blocked: illegal content, the law requires it"));

    let form = [("category", "malware"), ("blocked", "false"), ("reason", "we need it")];
    let reply = school.post("/policy/pupil/category", &ann, &form).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("malware is locked"), "{}", reply.body);
    let edit = serde_json::json!({"kind": "category", "category": "malware", "blocked": false, "reason": "we need it"});
    let reply = school.post_json("/api/policy/pupil", &ann, edit).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    assert_eq!(body["field"], "category");
    assert!(body["error"].as_str().unwrap().contains("locked"), "{body}");
    // Nor may a schedule open it.
    let schedule = serde_json::json!({"kind": "schedule-add", "category": "malware", "days": ["mon"], "from": "12:00", "to": "13:00", "reason": "r"});
    assert_eq!(school.post_json("/api/policy/pupil", &ann, schedule).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(school.file(), before);
    assert!(school.changes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_form_shows_its_message_beside_the_field_and_keeps_the_input() {
    let school = school().await;
    let ann = school.login("ann").await;
    let before = school.file();
    let form = [
        ("name", "homework.example"),
        ("kind", "deny"),
        ("reason", "  "),
        ("until_date", "2099-07-20"),
        ("until_time", "15:30"),
    ];
    let reply = school.post("/policy/pupil/override-add", &ann, &form).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = &reply.body;
    assert!(body.contains("id=\"override-reason-error\""), "{body}");
    let error = &body[body.find("id=\"override-reason-error\"").unwrap()..];
    assert!(error[..error.find("</p>").unwrap()].contains("say why"), "{error}");
    // The other input is kept.
    assert!(body.contains("name=\"name\" type=\"text\" required autocomplete=\"off\" placeholder=\"example.com\" value=\"homework.example\""));
    assert!(body.contains("value=\"deny\" checked"));
    assert!(body.contains("value=\"2099-07-20\"") && body.contains("value=\"15:30\""));
    // A bad expiry is shown beside the expiry.
    let form = [("name", "homework.example"), ("kind", "deny"), ("reason", "exams"), ("until_date", "2001-01-01")];
    let reply = school.post("/policy/pupil/override-add", &ann, &form).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"override-until-error\""), "{}", reply.body);
    // A category toggle without a reason: the message beside that row's reason.
    let reply = school.post("/policy/pupil/category", &ann, &[("category", "games"), ("blocked", "false")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"cat-games-reason-error\""), "{}", reply.body);
    assert_eq!(school.file(), before);

    // With an expiry in the school's time zone: stored as UTC.
    let form = [
        ("name", "homework.example"),
        ("kind", "deny"),
        ("reason", "exams"),
        ("until_date", "2099-07-20"),
        ("until_time", "15:30"),
    ];
    let reply = school.post("/policy/pupil/override-add", &ann, &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    // 15:30 in London in July is 14:30 UTC (BST).
    assert!(school.file().contains("2099-07-20T14:30:00Z"), "{}", school.file());
    let page = school.get("/policy/pupil", Some(&ann)).await.body;
    assert!(page.contains("homework.example") && page.contains("2099-07-20 15:30 BST"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_has_a_header_and_only_the_filtered_rows() {
    let school = school().await;
    let ann = school.login("ann").await;
    assert_eq!(school.post("/policy/pupil/category", &ann, GAMES_OFF).await.status, StatusCode::SEE_OTHER);
    let reply = school.post("/policy/staff/youtube", &ann, &[("mode", "strict"), ("reason", "Assembly videos")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(school.changes().len(), 2);

    let reply = school.get("/changes.csv?kind=category", Some(&ann)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let disposition = reply.headers.get(header::CONTENT_DISPOSITION).unwrap().to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    let lines: Vec<&str> = reply.body.lines().collect();
    assert_eq!(lines[0], "id,time,user,kind,group,subject,old,new,reason");
    assert_eq!(lines.len(), 2, "{}", reply.body);
    assert!(
        lines[1].contains(",ann,category,pupil,games for pupil,blocked,allowed,Games club at lunch"),
        "{}",
        lines[1]
    );
    let by_group = school.get("/changes.csv?group=staff", Some(&ann)).await.body;
    assert_eq!(by_group.lines().count(), 2);
    assert!(by_group.contains("Assembly videos") && !by_group.contains("Games club"));
    assert_eq!(school.get("/changes.csv?user=nobody", Some(&ann)).await.body.lines().count(), 1);
    // Today (school time) holds both; a day long ago holds none.
    let today = jiff::Zoned::now().with_time_zone(school.config.timezone.clone()).date().to_string();
    let today_csv = school.get(&format!("/changes.csv?from={today}&to={today}"), Some(&ann)).await.body;
    assert_eq!(today_csv.lines().count(), 3, "{today_csv}");
    assert_eq!(school.get("/changes.csv?to=2001-01-01", Some(&ann)).await.body.lines().count(), 1);
    // A bad filter is shown beside its field, not a 500.
    let bad = school.get("/changes?from=yesterday", Some(&ann)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not a date"), "{}", bad.body);
    // The page and the API filter the same way.
    let page = school.get("/changes?kind=youtube", Some(&ann)).await.body;
    assert!(page.contains("YouTube for staff") && !page.contains("games for pupil"));
    let api = school.get("/api/changes?kind=youtube", Some(&ann)).await.json();
    assert_eq!(api["total"], 1);
    assert_eq!(api["changes"][0]["reason"], "Assembly videos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_edit_shows_its_diff_and_the_governor_sees_no_forms() {
    let school = school().await;
    let log = ChangeLog::open(&school.config.log.database).unwrap();
    let diff = "--- as last recorded\n+++ as now\n@@ -1 +1 @@\n-a\n+b <x>\n";
    let change = NewChange {
        time_ms: hedgerow::time::now_ms(),
        user: "(file)".into(),
        kind: "file-edit".into(),
        group: None,
        subject: school.path.display().to_string(),
        old: "the file as last recorded".into(),
        new: diff.into(),
        reason: "edited by hand".into(),
    };
    log.record_only(&change).unwrap();
    let gus = school.login("gus").await;
    let page = school.get("/changes", Some(&gus)).await.body;
    assert!(page.contains("<pre>--- as last recorded\n+++ as now"), "{page}");
    assert!(page.contains("+b &#60;x&#62;") || page.contains("+b &lt;x&gt;"), "escaped: {page}");

    for path in ["/policy", "/policy/pupil", "/policy/staff"] {
        let body = school.get(path, Some(&gus)).await.body;
        let posts = body.matches("method=\"post\"").count();
        assert_eq!(posts, 1, "{path}: only the logout form posts");
        assert!(body.contains("<form method=\"post\" action=\"/logout\">"));
        assert!(body.contains("only an admin can change it") || path == "/policy", "{path}");
    }
    let _ = &school.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_writable_file_the_policy_is_read_only_and_says_why() {
    let school = school().await;
    // The same server's pages, but as a dashboard with no editor.
    let state = AppState::new(school.running.pipeline.clone(), &school.config).unwrap();
    let ro = School { state, ..school };
    let ann = ro.login("ann").await;
    let page = ro.get("/policy/pupil", Some(&ann)).await.body;
    assert!(page.contains("not started from a config file it can write"), "{page}");
    assert_eq!(page.matches("method=\"post\"").count(), 1, "no policy forms without an editor");
    let reply = ro.post("/policy/pupil/category", &ann, GAMES_OFF).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("not started from a config file it can write"));
    let edit = serde_json::json!({"kind": "category", "category": "games", "blocked": false, "reason": "r"});
    let reply = ro.post_json("/api/policy/pupil", &ann, edit).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(ro.changes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_schedules_are_added_and_removed_through_the_forms() {
    let school = school().await;
    // An override past its expiry, written by hand: shown lapsed.
    let text = school.file().replace(
        "block = [\"default\"] # keep it strict\n",
        "block = [\"default\"] # keep it strict\ndeny = [{ name = \"old.example\", reason = \"exam week\", until = \"2020-01-01T00:00:00Z\" }]\n",
    );
    std::fs::write(&school.path, text).unwrap();
    school.running.reload().await.unwrap();
    let ann = school.login("ann").await;
    let page = school.get("/policy/pupil", Some(&ann)).await.body;
    let row = &page[page.find("<code>old.example</code>").unwrap()..];
    assert!(row[..row.find("</tr>").unwrap()].contains("lapsed"), "{row}");

    // A schedule open all day every day: games allowed by schedule now, in the pipeline too.
    let every_day = [
        ("category", "games"),
        ("day_mon", "on"),
        ("day_tue", "on"),
        ("day_wed", "on"),
        ("day_thu", "on"),
        ("day_fri", "on"),
        ("day_sat", "on"),
        ("day_sun", "on"),
        ("from", "00:00"),
        ("to", "23:59"),
        ("reason", "Games week"),
    ];
    let reply = school.post("/policy/pupil/schedule-add", &ann, &every_day).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let api = school.get("/api/policy/pupil", Some(&ann)).await.json();
    let games = api["categories"].as_array().unwrap().iter().find(|c| c["id"] == "games").unwrap();
    assert_eq!(games["state"], "allowed by schedule now", "{api}");
    assert_eq!(api["schedules"][0]["from"], "00:00");
    // (23:59-00:00 is the one minute the window is shut.)
    let minute = jiff::Zoned::now().with_time_zone(school.config.timezone.clone());
    if (minute.hour(), minute.minute()) != (23, 59) {
        assert_eq!(school.pupil_decision("game.test"), DecisionKind::Allowed);
    }
    // No day ticked: the message beside the days, the other input kept.
    let reply = school
        .post(
            "/policy/pupil/schedule-add",
            &ann,
            &[("category", "chat"), ("from", "12:00"), ("to", "13:00"), ("reason", "r")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"schedule-days-error\""), "{}", reply.body);
    assert!(reply.body.contains("<option value=\"chat\" selected>"));
    // Removed again, with a reason.
    let reply =
        school.post("/policy/pupil/schedule-remove", &ann, &[("index", "0"), ("reason", "Games week over")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Blocked);

    // An allow override, then removed; "Test a name" from the pupils' address follows it.
    let form = [("name", "game.test"), ("kind", "allow"), ("reason", "Coding lesson")];
    assert_eq!(school.post("/policy/pupil/override-add", &ann, &form).await.status, StatusCode::SEE_OTHER);
    let test =
        school.post_json("/api/check", &ann, serde_json::json!({"name": "game.test", "client": "127.0.0.1"})).await;
    assert_eq!(test.json()["decision"], "allowed", "{}", test.body);
    assert_eq!(test.json()["group"], "pupil");
    let remove = [("kind", "allow"), ("name", "game.test"), ("reason", "Lesson over")];
    assert_eq!(school.post("/policy/pupil/override-remove", &ann, &remove).await.status, StatusCode::SEE_OTHER);
    let test =
        school.post_json("/api/check", &ann, serde_json::json!({"name": "game.test", "client": "127.0.0.1"})).await;
    assert_eq!(test.json()["decision"], "blocked");
    let kinds: Vec<String> = school.changes().into_iter().map(|change| change.kind).collect();
    // Newest first; the hand edit and the lapse were recorded at the reload.
    assert_eq!(kinds, ["override-remove", "override-add", "schedule-remove", "schedule-add", "lapse", "file-edit"]);
    // A bad client address is shown beside its field.
    let reply = school.post("/test", &ann, &[("name", "game.test"), ("client", "not-an-ip")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"test-client-error\""), "{}", reply.body);
}
