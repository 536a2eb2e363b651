//! The Alerts pages at router level (`web::app(state)` driven with
//! `oneshot`) on a real running server (`serve::start` from a real config
//! file in a tempdir, its SQLite database and policy editor), alerts seeded
//! with `AlertStore::raise` on that database: the role matrix (a governor
//! gets the year's counts and nothing that names a device, and 403 on
//! everything else), acknowledge/resolve/note/reopen recorded with who and
//! when, a resolve without a note refused beside its field, the CSRF check,
//! a rule edit reaching the file, the change log and the running config, a
//! bad count beside its field, a new rule, and the test button and "try
//! again" on the outbox.

mod support;

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use hedgerow::config::alerts::Trigger;
use hedgerow::store::alerts::{AlertState, AlertStore, Channel, NewAlert, NewMessage};
use support::router::{RouterSchool, School, request};

/// The password's file: its content must never reach a page.
const SMTP_PASSWORD: &str = "hunter2-never-shown";
const HOOK_SECRET: &str = "webhook-secret-never-shown";

fn config_file(dir: &Path) -> PathBuf {
    let lists = support::config::games_lists(dir);
    std::fs::write(dir.join("smtp.pass"), SMTP_PASSWORD).unwrap();
    std::fs::write(dir.join("hook.key"), HOOK_SECRET).unwrap();
    let text = format!(
        "# Hedgerow for Example Primary\n\
         data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
         [upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
         [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
         [groups.pupil]\nblock = [\"default\"]\n\n\
         # Alerts go to the DSL.\n[alerts]\ndashboard_url = \"http://localhost:8080\"\n\n\
         [alerts.email]\nserver = \"127.0.0.1\"\nport = 2525\nsecurity = \"none\"\nusername = \"hedgerow\"\n\
         password_file = {pass:?}\nfrom = \"hedgerow@school.example\"\nhigh = [\"dsl@school.example\"]\n\
         medium = [\"dsl@school.example\"]\n\n\
         [alerts.webhook]\nurl = \"http://127.0.0.1:9/hook?token=abc\"\nsecret_file = {hook:?}\n",
        data = dir.join("data").display().to_string(),
        lists = lists.display().to_string(),
        pass = dir.join("smtp.pass").display().to_string(),
        hook = dir.join("hook.key").display().to_string(),
    );
    let path = dir.join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn school() -> School {
    school_with("").await
}

/// A school whose config file has `extra` appended.
async fn school_with(extra: &str) -> School {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(extra);
    std::fs::write(&path, text).unwrap();
    School::start(dir, path).await
}

/// What a seeded alert names: none of it may reach a governor.
const DEVICE: &str = "ipad-sam-7";
const OWNER: &str = "Sam Pupil";
const CLIENT: &str = "127.0.0.77";
const NAME_TRIED: &str = "cutting-help.example";

fn seed(school: &School, severity: &str, category: &str, client: &str, minutes_ago: i64) -> i64 {
    let now = hedgerow::time::now_ms();
    let at = now - minutes_ago * 60_000;
    let alert = NewAlert {
        rule: if severity == "high" { "high-risk".into() } else { format!("repeated-{category}") },
        severity: severity.into(),
        category: Some(category.into()),
        client: client.into(),
        device: DEVICE.into(),
        owner: OWNER.into(),
        network: "pupils".into(),
        group: "pupil".into(),
        first_ms: at,
        last_ms: at + 30_000,
        attempts: 3,
        names: vec![NAME_TRIED.into(), "second.example".into()],
        summary: "any attempt at csam, terrorism, extremism, self-harm".into(),
    };
    store(school).raise(&alert, now, |_| Vec::new()).unwrap().id
}

fn store(school: &School) -> AlertStore {
    AlertStore::open(&school.config.log.database).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_route_checks_roles_and_a_governor_gets_counts_only() {
    let school = school().await;
    let id = seed(&school, "high", "self-harm", CLIENT, 5);
    seed(&school, "medium", "gambling", "127.0.0.78", 50);
    let pages = ["/alerts", &format!("/alerts/{id}"), "/alerts/rules", "/alerts/delivery"];
    let apis = ["/api/alerts", &format!("/api/alerts/{id}"), "/api/alerts/summary"];
    for path in pages {
        let reply = school.get(path, None).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{path}");
        assert!(reply.location().starts_with("/login?next=/"), "{path}");
    }
    for path in apis {
        assert_eq!(school.get(path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (ann, gus, dee) = (school.login("ann").await, school.login("gus").await, school.login("dee").await);
    for (who, session) in [("admin", &ann), ("dsl", &dee)] {
        for path in pages.iter().chain(&apis) {
            let reply = school.get(path, Some(session)).await;
            assert_eq!(reply.status, StatusCode::OK, "{who} {path}: {}", reply.body);
        }
        let inbox = school.get("/alerts", Some(session)).await.body;
        assert!(inbox.contains(DEVICE) && inbox.contains(&format!("href=\"/alerts/{id}\"")), "{who}: {inbox}");
        // The nav says how many are open.
        assert!(inbox.contains("Alerts <span class=\"nav-badge\">2<"), "{who}: {inbox}");
        let list = school.get("/api/alerts", Some(session)).await.json();
        assert_eq!(list["total"], 2);
        assert_eq!(list["alerts"][0]["device"], DEVICE);
    }

    // The governor: the counts on the page and in the API, and nothing that names anyone.
    let page = school.get("/alerts", Some(&gus)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Mean to acknowledge") && page.body.contains("self-harm"), "{}", page.body);
    assert!(page.body.contains("<a href=\"/alerts\""), "the governor's nav has Alerts");
    let api = school.get("/api/alerts", Some(&gus)).await;
    assert_eq!(api.status, StatusCode::OK);
    assert_eq!(api.json()["total"]["raised"], 2, "{}", api.body);
    let summary = school.get("/api/alerts/summary", Some(&gus)).await;
    assert_eq!(summary.json()["open"], 2);
    assert!(summary.json().get("outbox").is_none());
    for body in [&page.body, &api.body, &summary.body] {
        for secret in [DEVICE, OWNER, CLIENT, "127.0.0.78", NAME_TRIED, "second.example"] {
            assert!(!body.contains(secret), "a governor was shown {secret}: {body}");
        }
    }
    for path in [&format!("/alerts/{id}"), "/alerts/rules", "/alerts/delivery", &format!("/api/alerts/{id}")] {
        assert_eq!(school.get(path, Some(&gus)).await.status, StatusCode::FORBIDDEN, "governor {path}");
    }
    let forms = [
        (format!("/alerts/{id}/acknowledge"), vec![("note", "seen")]),
        (format!("/alerts/{id}/resolve"), vec![("note", "done")]),
        ("/alerts/rules/high-risk".to_string(), vec![("severity", "low"), ("reason", "r")]),
        ("/alerts/rules".to_string(), vec![("category", "games"), ("reason", "r")]),
        ("/alerts/delivery/test/email".to_string(), vec![]),
    ];
    for (path, form) in &forms {
        let reply = school.post(path, &gus, form).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "governor POST {path}");
    }
    let api = school.post_json(&format!("/api/alerts/{id}/acknowledge"), &gus, serde_json::json!({})).await;
    assert_eq!(api.status, StatusCode::FORBIDDEN);
    let rule = serde_json::json!({"severity": "low", "reason": "r"});
    assert_eq!(school.post_json("/api/alerts/rules/high-risk", &gus, rule).await.status, StatusCode::FORBIDDEN);
    assert_eq!(store(&school).get(id).unwrap().unwrap().state, AlertState::Open);
    assert!(store(&school).outbox(10).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledge_resolve_note_and_reopen_are_recorded_with_who_and_when() {
    let school = school().await;
    let id = seed(&school, "high", "self-harm", CLIENT, 5);
    let dee = school.login("dee").await;
    let before = hedgerow::time::now_ms();

    // The page says what the alert says and links to the explorer's window.
    let page = school.get(&format!("/alerts/{id}"), Some(&dee)).await.body;
    for text in [DEVICE, OWNER, CLIENT, NAME_TRIED, "pupils", "high-risk", "Lookups an hour either side"] {
        assert!(page.contains(text), "{text}: {page}");
    }
    assert!(page.contains(&format!("href=\"/log?client={CLIENT}&#38;window=custom&#38;from=")), "{page}");

    // A form without its CSRF token changes nothing.
    let forged = school
        .send(request(
            "POST",
            &format!("/alerts/{id}/acknowledge"),
            Some(&dee.cookie),
            "application/x-www-form-urlencoded",
            "note=x".into(),
        ))
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(store(&school).get(id).unwrap().unwrap().state, AlertState::Open);

    let reply = school.post(&format!("/alerts/{id}/acknowledge"), &dee, &[("note", "")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let alert = store(&school).get(id).unwrap().unwrap();
    assert_eq!((alert.state, alert.acknowledged_by.as_deref()), (AlertState::Acknowledged, Some("dee")));
    assert!(alert.acknowledged_ms.unwrap() >= before);
    assert!(school.get(reply.location(), Some(&dee)).await.body.contains("Acknowledged: your name"));

    // Resolving without a note is refused beside the note.
    let refused = school.post(&format!("/alerts/{id}/resolve"), &dee, &[("note", "  ")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"resolve-note-error\""), "{}", refused.body);
    assert!(refused.body.contains("the note is the DSL&#39;s record"), "{}", refused.body);
    assert_eq!(store(&school).get(id).unwrap().unwrap().state, AlertState::Acknowledged);
    let api = school.post_json(&format!("/api/alerts/{id}/resolve"), &dee, serde_json::json!({"note": ""})).await;
    assert_eq!((api.status, api.json()["field"].as_str()), (StatusCode::BAD_REQUEST, Some("note")));

    let note = "Spoke to Sam and their form tutor; parents called.";
    let reply = school.post(&format!("/alerts/{id}/resolve"), &dee, &[("note", note)]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let ann = school.login("ann").await;
    let api =
        school.post_json(&format!("/api/alerts/{id}/note"), &ann, serde_json::json!({"note": "Followed up"})).await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let reply = school.post(&format!("/alerts/{id}/reopen"), &ann, &[("note", "It happened again")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);

    let alert = store(&school).get(id).unwrap().unwrap();
    assert_eq!((alert.state, alert.acknowledged_by.as_deref()), (AlertState::Open, Some("dee")));
    let notes = store(&school).notes(id).unwrap();
    let record: Vec<(&str, &str, &str)> =
        notes.iter().map(|n| (n.action.as_str(), n.user.as_str(), n.text.as_str())).collect();
    assert_eq!(
        record,
        [
            ("acknowledged", "dee", ""),
            ("resolved", "dee", note),
            ("note", "ann", "Followed up"),
            ("reopened", "ann", "It happened again")
        ]
    );
    assert!(notes.iter().all(|n| n.time_ms >= before));
    let page = school.get(&format!("/alerts/{id}"), Some(&dee)).await.body;
    assert!(page.contains("Spoke to Sam") && page.contains("Acknowledged by <strong>dee</strong>"), "{page}");

    // The inbox's tabs and filters.
    seed(&school, "medium", "gambling", "127.0.0.78", 50);
    let open = school.get("/alerts?severity=high", Some(&dee)).await.body;
    assert!(open.contains(&format!("href=\"/alerts/{id}\"")) && !open.contains("127.0.0.78"), "{open}");
    let medium = school.get("/alerts?state=open&severity=medium", Some(&dee)).await.body;
    assert!(medium.contains("127.0.0.78") && !medium.contains(&format!("href=\"/alerts/{id}\"")));
    let resolved = school.get("/alerts?state=resolved", Some(&dee)).await.body;
    assert!(resolved.contains("No resolved alerts match"), "{resolved}");
    let bad = school.get("/alerts?from=yesterday", Some(&dee)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("id=\"alert-from-error\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edit_reaches_the_file_the_change_log_and_the_running_config() {
    let school = school().await;
    let dee = school.login("dee").await;
    let before = school.file();
    let page = school.get("/alerts/rules", Some(&dee)).await.body;
    assert!(page.contains("action=\"/alerts/rules/repeated-pornography\""), "{page}");

    // A bad count comes back beside its field, the input kept, nothing written.
    let form = [("enabled", "on"), ("severity", "high"), ("count", "lots"), ("minutes", "5"), ("reason", "Year 9")];
    let refused = school.post("/alerts/rules/repeated-pornography", &dee, &form).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("id=\"repeated-pornography-count-error\""), "{}", refused.body);
    assert!(refused.body.contains("value=\"lots\""));
    let missing =
        school.post("/alerts/rules/repeated-pornography", &dee, &[("severity", "high"), ("count", "3")]).await;
    assert!(missing.body.contains("id=\"repeated-pornography-reason-error\""), "{}", missing.body);
    assert_eq!(school.file(), before);
    assert!(school.changes().is_empty());

    let form =
        [("enabled", "on"), ("severity", "high"), ("count", "3"), ("minutes", "5"), ("reason", "Year 9 pattern")];
    let reply = school.post("/alerts/rules/repeated-pornography", &dee, &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let file = school.file();
    assert!(file.starts_with("# Hedgerow for Example Primary\n") && file.contains("# Alerts go to the DSL."));
    assert!(file.contains("[alerts.rules.repeated-pornography]"), "{file}");
    assert!(file.contains("count = 3") && file.contains("minutes = 5") && file.contains("severity = \"high\""));
    let change = &school.changes()[0];
    assert_eq!((change.kind.as_str(), change.user.as_str()), ("alert-rule", "dee"));
    assert_eq!(change.subject, "alert rule repeated-pornography");
    assert!(change.old.contains("medium") && change.old.contains("5 blocked lookups"), "{}", change.old);
    assert!(change.new.contains("high") && change.new.contains("3 blocked lookups in pornography"), "{}", change.new);
    assert_eq!(change.reason, "Year 9 pattern");
    let running = school.state.config();
    let rule = running.alerts.rules.iter().find(|rule| rule.id == "repeated-pornography").unwrap();
    assert_eq!(rule.trigger, Trigger::Repeated { category: "pornography".into(), count: 3, window_ms: 5 * 60_000 });
    let back = school.get(reply.location(), Some(&dee)).await.body;
    assert!(back.contains("Saved: alert rule repeated-pornography"), "{back}");

    // Turning a rule off, and adding one for games.
    let reply = school.post("/alerts/rules/bypass", &dee, &[("severity", "medium"), ("reason", "Trial")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(!school.state.config().alerts.rules.iter().find(|rule| rule.id == "bypass").unwrap().enabled);
    let form = [("category", "games"), ("count", "8"), ("minutes", "20"), ("severity", "low"), ("reason", "Lessons")];
    let reply = school.post("/alerts/rules", &dee, &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(school.file().contains("[alerts.rules.repeated-games]"));
    let games = school.state.config().alerts.rules.iter().find(|rule| rule.id == "repeated-games").cloned().unwrap();
    assert_eq!(games.trigger, Trigger::Repeated { category: "games".into(), count: 8, window_ms: 20 * 60_000 });
    let again = school.post("/alerts/rules", &dee, &form).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("id=\"new-category-error\""), "{}", again.body);
    assert_eq!(school.changes().len(), 3);

    // The same edit by the API: a bad value names its field; a good one is the change recorded.
    let path = "/api/alerts/rules/repeated-gambling";
    let bad = serde_json::json!({"enabled": "on", "severity": "medium", "count": "0", "minutes": "30", "reason": "r"});
    let reply = school.post_json(path, &dee, bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.json()["field"], "count", "{}", reply.body);
    let good =
        serde_json::json!({"enabled": "on", "severity": "medium", "count": "6", "minutes": "30", "reason": "Exams"});
    let reply = school.post_json(path, &dee, good.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!((reply.json()["kind"].as_str(), reply.json()["reason"].as_str()), (Some("alert-rule"), Some("Exams")));
    let gambling = school.state.config().alerts.rules.iter().find(|rule| rule.id == "repeated-gambling").cloned();
    assert_eq!(
        gambling.unwrap().trigger,
        Trigger::Repeated { category: "gambling".into(), count: 6, window_ms: 30 * 60_000 }
    );
    assert_eq!(school.post_json("/api/alerts/rules/no-such-rule", &dee, good).await.status, StatusCode::NOT_FOUND);
    assert_eq!(school.changes().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_page_shows_no_secret_and_its_buttons_queue_messages() {
    let school = school().await;
    let ann = school.login("ann").await;
    let page = school.get("/alerts/delivery", Some(&ann)).await.body;
    assert!(page.contains("127.0.0.1:2525") && page.contains("dsl@school.example"), "{page}");
    for secret in [SMTP_PASSWORD, HOOK_SECRET, "smtp.pass", "hook.key", "token=abc"] {
        assert!(!page.contains(secret), "the delivery page shows {secret}");
    }

    for channel in ["email", "webhook"] {
        let reply = school.post(&format!("/alerts/delivery/test/{channel}"), &ann, &[]).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    }
    let outbox = store(&school).outbox(20).unwrap();
    let queued: Vec<(Channel, &str, &str)> =
        outbox.iter().map(|m| (m.channel, m.kind.as_str(), m.state.as_str())).collect();
    assert_eq!(queued, [(Channel::Webhook, "test", "pending"), (Channel::Email, "test", "pending")]);
    assert!(outbox[1].body.contains("sent by ann"));
    let page = school.get("/alerts/delivery?queued=email", Some(&ann)).await.body;
    assert!(page.contains("[Hedgerow] Test alert") && page.contains("is in the outbox"), "{page}");

    // A given-up message can be tried again.
    let store = store(&school);
    let now = hedgerow::time::now_ms();
    let message = NewMessage {
        channel: Channel::Email,
        kind: "digest",
        recipients: vec!["dsl@school.example".into()],
        subject: "[Hedgerow] Daily digest".into(),
        body: "b".into(),
    };
    let id = store.enqueue(&[message], now).unwrap()[0];
    store.attempt_failed(id, "connection refused (127.0.0.1:2525)", None, now).unwrap();
    let page = school.get("/alerts/delivery", Some(&ann)).await.body;
    assert!(page.contains("connection refused (127.0.0.1:2525)"));
    assert!(page.contains(&format!("action=\"/alerts/delivery/retry/{id}\"")), "{page}");
    let reply = school.post(&format!("/alerts/delivery/retry/{id}"), &ann, &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(store.outbox_counts().unwrap().failed, 0);
    assert_eq!(school.post(&format!("/alerts/delivery/retry/{id}"), &ann, &[]).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_query_log_off_the_pages_say_alerts_need_it() {
    let school = school_with("\n[log]\nenabled = false\n").await;
    let id = seed(&school, "high", "self-harm", CLIENT, 5);
    let dee = school.login("dee").await;
    for path in ["/alerts".to_string(), format!("/alerts/{id}"), "/alerts/rules".into(), "/alerts/delivery".into()] {
        let reply = school.get(&path, Some(&dee)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.body.contains("The query log is off"), "{path}: {}", reply.body);
    }
}
