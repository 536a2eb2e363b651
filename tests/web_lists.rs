//! The Lists page at router level (`web::app(state)` driven with `oneshot`)
//! on a real running server (`serve::start` from a real config file in a
//! tempdir, its policy editor and whole-lists reload) whose lists include a
//! download from a real HTTP server on 127.0.0.1:0 (tests/support/http.rs):
//! the role matrix and CSRF of every new route; a source turned off with a
//! reason lands in the config file, the change log and the pipeline; a
//! missing reason is shown beside its field; a locked category's source is
//! refused by page and API; "update now" runs in the background to done,
//! refuses a second start while running, and a failing source keeps its
//! last good list and says so.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hedgerow::dns::DecisionKind;
use support::http::{HttpServer, Route};
use support::router::{RouterSchool, School, Session, request};

/// The router's test school and the HTTP server its remote source is on.
struct ListsSchool {
    school: School,
    http: HttpServer,
}

impl std::ops::Deref for ListsSchool {
    type Target = School;
    fn deref(&self) -> &School {
        &self.school
    }
}

/// A config file with three sources: local games (game.test), local
/// malware (bad.test, a locked category), and a games list downloaded from
/// the test's HTTP server (remote.test).
fn config_file(dir: &Path, http: &HttpServer) -> PathBuf {
    let lists = support::config::games_lists(dir);
    std::fs::write(lists.join("malware.txt"), "bad.test\n").unwrap();
    std::fs::write(
        lists.join("malware.toml"),
        "[[source]]\nid = \"local-malware\"\ncategory = \"malware\"\nformat = \"domains\"\npath = \"malware.txt\"\n",
    )
    .unwrap();
    std::fs::write(
        lists.join("remote.toml"),
        format!(
            "[[source]]\nid = \"remote-games\"\ncategory = \"games\"\nformat = \"domains\"\nurl = {:?}\n",
            http.url("/remote.txt")
        ),
    )
    .unwrap();
    let text = format!(
        "# Hedgerow for Example Primary\n\
         data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
         [upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
         [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
         [groups.pupil]\nblock = [\"default\"]\n",
        data = dir.join("data").display().to_string(),
        lists = lists.display().to_string(),
    );
    let path = dir.join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A list file with enough names to look like a list.
fn remote_list() -> String {
    let mut text = String::from("remote.test\n");
    for n in 0..20 {
        text.push_str(&format!("remote-{n}.test\n"));
    }
    text
}

async fn school() -> ListsSchool {
    let http = HttpServer::start();
    http.route("/remote.txt", Route::ok(remote_list()));
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &http);
    let school = School::start(dir, path).await;
    assert!(school.running.editor.is_some(), "a server started from a writable file has an editor");
    ListsSchool { school, http }
}

const FORM: &str = "application/x-www-form-urlencoded";

impl School {
    /// Starts "update now" as `session` and waits for it to end: its status.
    async fn update_now(&self, session: &Session) -> serde_json::Value {
        let reply = self.post("/lists/update", session, &[]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), "/lists?started=1");
        self.wait_for_update(session).await
    }

    async fn wait_for_update(&self, session: &Session) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.get("/api/lists/update", Some(session)).await.json();
            if status["state"] != "running" {
                return status;
            }
            assert!(Instant::now() < deadline, "the update never ended: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_route_checks_roles_and_csrf_in_the_server() {
    let school = school().await;
    let gets = ["/lists", "/api/lists", "/api/lists/update"];
    let pages = ["/lists"];
    for path in gets {
        let reply = school.get(path, None).await;
        if pages.contains(&path) {
            assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
            assert!(reply.location().starts_with("/login?next=/"), "{path}");
        } else {
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
        }
    }
    for path in ["/lists/update", "/lists/source/local-games"] {
        let reply = school.send(request("POST", path, None, FORM, "reason=x&enabled=off".into())).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert!(reply.location().starts_with("/login"), "{path}");
    }
    for path in ["/api/lists/update", "/api/lists/source/local-games"] {
        let reply = school.send(request("POST", path, None, "application/json", "{}".into())).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let before = school.file();
    let (ann, gus, dee) = (school.login("ann").await, school.login("gus").await, school.login("dee").await);
    for path in gets {
        assert_eq!(school.get(path, Some(&ann)).await.status, StatusCode::OK, "admin {path}");
        for (who, session) in [("governor", &gus), ("dsl", &dee)] {
            let reply = school.get(path, Some(session)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who} {path}");
            assert!(!reply.body.contains("local-games"), "{who} {path}: {}", reply.body);
        }
    }
    for (who, session) in [("governor", &gus), ("dsl", &dee)] {
        let reply = school.post("/lists/update", session, &[]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who}");
        let reply = school.post("/lists/source/local-games", session, &[("enabled", "off"), ("reason", "r")]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who}");
        let reply = school.post_json("/api/lists/update", session, serde_json::json!({})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who}");
        let body = serde_json::json!({"enabled": false, "reason": "r"});
        let reply = school.post_json("/api/lists/source/local-games", session, body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{who}");
    }
    // Forms and JSON without the CSRF token are refused.
    for path in ["/lists/update", "/lists/source/local-games"] {
        let forged =
            school.send(request("POST", path, Some(&ann.cookie), FORM, "enabled=off&reason=forged".into())).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "{path}");
    }
    let forged =
        school.send(request("POST", "/api/lists/update", Some(&ann.cookie), "application/json", "{}".into())).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // Nothing changed, nothing started.
    assert_eq!(school.file(), before);
    assert!(school.changes().is_empty());
    assert_eq!(school.get("/api/lists/update", Some(&ann)).await.json()["state"], "");
    assert!(school.http.requests_to("/remote.txt").is_empty());
    // The nav offers Lists to the admin only.
    let nav = |body: &str| body.contains("<a href=\"/lists\"");
    assert!(nav(&school.get("/lists", Some(&ann)).await.body));
    assert!(!nav(&school.get("/", Some(&gus)).await.body));
    assert!(!nav(&school.get("/", Some(&dee)).await.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_api_show_every_declared_source() {
    let school = school().await;
    let ann = school.login("ann").await;
    let page = school.get("/lists", Some(&ann)).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        "local-games",
        "local-malware",
        "remote-games",
        "Update now",
        "Next scheduled update",
        "off ([lists] update_hours = 0)",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    // The URL is text, never a link; a locked source has no switch.
    let url = school.http.url("/remote.txt");
    assert!(page.body.contains(&url));
    assert!(!page.body.contains(&format!("href=\"{url}\"")));
    assert!(!page.body.contains("action=\"/lists/source/local-malware\""));
    assert!(page.body.contains("action=\"/lists/source/local-games\""));
    assert!(page.body.contains("locked category"));
    let api = school.get("/api/lists", Some(&ann)).await.json();
    assert_eq!(api["declared"], 3);
    let sources = api["sources"].as_array().unwrap();
    let games = sources.iter().find(|source| source["id"] == "local-games").unwrap();
    assert_eq!(games["category"], "games");
    assert_eq!(games["format"], "domains");
    assert_eq!(games["origin_kind"], "path");
    assert_eq!(games["enabled"], true);
    assert_eq!(games["enabled_by"], "declaration");
    assert_eq!(games["state"], "ok");
    assert_eq!(games["entries"], 1);
    let remote = sources.iter().find(|source| source["id"] == "remote-games").unwrap();
    assert_eq!(remote["origin_kind"], "url");
    assert_eq!(remote["state"], "missing", "not downloaded yet: {remote}");
    assert_eq!(sources.iter().find(|source| source["id"] == "local-malware").unwrap()["locked"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_turned_off_with_a_reason_reaches_the_file_the_change_log_and_the_pipeline() {
    let school = school().await;
    let ann = school.login("ann").await;
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Blocked);
    let before = school.file();

    // No reason: refused beside its field, nothing changed.
    let reply = school.post("/lists/source/local-games", &ann, &[("enabled", "off"), ("reason", "  ")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("id=\"reason-local-games-error\" class=\"field-error\""), "{}", reply.body);
    assert!(reply.body.contains("aria-invalid=\"true\""));
    assert_eq!(school.file(), before);

    // A locked category's source: refused by the page's route and the API.
    let reply = school.post("/lists/source/local-malware", &ann, &[("enabled", "off"), ("reason", "too strict")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("locked category malware"), "{}", reply.body);
    let body = serde_json::json!({"enabled": false, "reason": "too strict"});
    let reply = school.post_json("/api/lists/source/local-malware", &ann, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert!(reply.body.contains("locked"), "{}", reply.body);
    assert_eq!(school.file(), before);
    assert!(school.changes().is_empty());
    assert_eq!(school.pupil_decision("bad.test"), DecisionKind::Blocked);

    // With a reason: into the file, the change log, and the pipeline.
    let reply =
        school.post("/lists/source/local-games", &ann, &[("enabled", "off"), ("reason", "Games club trial")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(reply.location().starts_with("/lists?saved="), "{}", reply.location());
    let file = school.file();
    assert!(file.contains("disable = [\"local-games\"]"), "{file}");
    assert!(file.contains("# Hedgerow for Example Primary"), "comments kept: {file}");
    let changes = school.changes();
    assert_eq!(changes.len(), 1);
    let change = &changes[0];
    assert_eq!((change.kind.as_str(), change.user.as_str()), ("list-source", "ann"));
    assert_eq!(change.reason, "Games club trial");
    assert!(change.subject.contains("local-games"), "{}", change.subject);
    assert_eq!((change.old.as_str(), change.new.as_str()), ("on", "off"));
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Allowed);
    let api = school.get("/api/lists", Some(&ann)).await.json();
    let games = api["sources"].as_array().unwrap().iter().find(|s| s["id"] == "local-games").unwrap().clone();
    assert_eq!((games["enabled"].clone(), games["enabled_by"].clone()), (false.into(), "config-disable".into()));
    let page = school.get(&format!("/lists?saved={}", change.id), Some(&ann)).await.body;
    assert!(page.contains("Saved"), "{page}");

    // And back on, by the API: the id leaves the disable array.
    let body = serde_json::json!({"enabled": true, "reason": "trial over"});
    let reply = school.post_json("/api/lists/source/local-games", &ann, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(!school.file().contains("\"local-games\""), "{}", school.file());
    assert_eq!(school.changes().len(), 2);
    assert_eq!(school.pupil_decision("game.test"), DecisionKind::Blocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_now_runs_in_the_background_and_a_failing_source_keeps_its_last_good_list() {
    let school = school().await;
    let ann = school.login("ann").await;
    assert_eq!(school.pupil_decision("remote.test"), DecisionKind::Allowed, "not downloaded yet");

    // The first update downloads the remote list and reloads.
    let status = school.update_now(&ann).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!((status["total"].clone(), status["done"].clone()), (1.into(), 1.into()), "{status}");
    assert_eq!(status["sources"][0]["id"], "remote-games");
    assert_eq!(status["sources"][0]["state"], "updated", "{status}");
    assert_eq!(status["reload"], "done");
    assert_eq!(status["started_by"], "ann");
    assert_eq!(school.pupil_decision("remote.test"), DecisionKind::Blocked);
    let api = school.get("/api/lists", Some(&ann)).await.json();
    let remote = api["sources"].as_array().unwrap().iter().find(|s| s["id"] == "remote-games").unwrap().clone();
    assert_eq!(remote["state"], "ok", "{remote}");
    assert_eq!(remote["entries"], 21, "{remote}");
    assert_eq!(remote["bad_lines"], 0, "{remote}");
    assert!(remote["last_fetch"].is_u64());
    // Who clicked is in the change log.
    let updates: Vec<_> = school.changes().into_iter().filter(|change| change.kind == "list-update").collect();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].user, "ann");
    assert!(!updates[0].reason.contains("10.0.0.1"), "no address in the change log a governor reads");

    // A second click while one runs says so and starts nothing.
    school.http.route("/remote.txt", Route::ok(remote_list()).stall(Duration::from_millis(1500)));
    let reply = school.post("/lists/update", &ann, &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let running = school.get("/lists", Some(&ann)).await.body;
    assert!(running.contains("data-state=\"running\""), "{running}");
    let again = school.post("/lists/update", &ann, &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.body.contains("already running"), "{}", again.body);
    let again = school.post_json("/api/lists/update", &ann, serde_json::json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.json()["started"], false);
    let status = school.wait_for_update(&ann).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["sources"][0]["state"], "unchanged", "{status}");

    // The mirror breaks: the update fails, the last good list stays in force.
    school.http.route("/remote.txt", Route::status(500, "oops"));
    let status = school.update_now(&ann).await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["sources"][0]["state"], "failed", "{status}");
    let detail = status["sources"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("keeping the last good copy"), "{detail}");
    assert!(status["message"].as_str().unwrap().contains("keeps its last good copy"), "{status}");
    assert_eq!(status["reload"], "done");
    assert_eq!(school.pupil_decision("remote.test"), DecisionKind::Blocked, "the last good list stays");
    let page = school.get("/lists", Some(&ann)).await.body;
    assert!(page.contains("keeping the last good copy"), "{page}");
    assert!(page.contains("degraded"), "{page}");
    let api = school.get("/api/lists", Some(&ann)).await.json();
    let remote = api["sources"].as_array().unwrap().iter().find(|s| s["id"] == "remote-games").unwrap().clone();
    assert_eq!(remote["state"], "degraded", "{remote}");
    assert_eq!(remote["entries"], 21, "{remote}");
    let _ = &school.running;
    let _ = &school.path;
}
