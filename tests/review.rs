//! The annual filtering review (issue 15) at router level (`web::app(state)`
//! driven with `oneshot`) on a real running server (`serve::start` from a
//! real config file in a tempdir, its real SQLite database), and the store's
//! triggers asked by plain SQL:
//!
//! - a complete review and its actions refuse UPDATE, DELETE and INSERT by
//!   direct SQL (the migration's triggers), not only through `ReviewStore`;
//! - a complete review cannot be changed by an admin, the DSL or a governor,
//!   by any form or API route (409 for the editors, 403 for the governor),
//!   and the stored review is byte for byte the same afterwards; the
//!   governor's page shows the sign-off line and no form;
//! - a governor's `/review` and `/api/review` hold none of the device names,
//!   owners, client addresses and looked-up or requested names seeded into
//!   every table the review reads (and the figures from those tables are there);
//! - a draft: the DSL saves the form and the actions, a bad value is shown
//!   beside its field, a governor's POST is refused.

mod support;

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use hedgerow::store::alerts::{AlertStore, NewAlert};
use hedgerow::store::changes::{ChangeLog, NewChange};
use hedgerow::store::review::{COMPLETE_MESSAGE, ReviewForm, ReviewStore};
use rusqlite::params;
use support::router::{RouterSchool, School, Session};

/// What the seeded rows name: none of it may reach a governor.
const DEVICE: &str = "ipad-marker-sam-7";
const OWNER: &str = "Samantha Markerpupil";
const CLIENT: &str = "127.0.0.77";
const LOOKED_UP: &str = "looked-up-marker.example";
const TOP_BLOCKED: &str = "top-blocked-marker.example";
const REQUESTED: &str = "requested-marker.example";
const REQUESTER: &str = "Rory Requestermarker";
const CHECK_DEVICE: &str = "laptop-check-marker-3";

fn config_file(dir: &Path) -> PathBuf {
    let lists = support::config::games_lists(dir);
    let text = format!(
        "data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
         [upstream]\nmode = \"forward\"\ntimeout_ms = 500\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
         [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
         [groups.pupil]\nblock = [\"default\"]\n\
         allow = [{{ name = \"scratch.mit.edu\", reason = \"Year 7 coding project\" }}]\n\n\
         [groups.staff]\nblock = [\"default\"]\n\n\
         [school]\nname = \"Example Primary School\"\nsenior_leader = \"Pat Head\"\ngovernor = \"Gill Green\"\n\
         dsl = \"Dee Lewis\"\nit_lead = \"Ian Tate\"\n",
        data = dir.join("data").display().to_string(),
        lists = lists.display().to_string(),
    );
    let path = dir.join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn school() -> School {
    school_with(|_| {}).await
}

/// A school whose folder `prepare` changes before the server starts.
async fn school_with(prepare: impl FnOnce(&Path)) -> School {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path());
    prepare(dir.path());
    School::start(dir, path).await
}

/// The academic year now is in (its first calendar year), as the page picks it.
fn this_year() -> i16 {
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::get("Europe/London").unwrap());
    if now.month() >= 9 { now.year() } else { now.year() - 1 }
}

/// Seeds every table the review reads with rows that name the markers.
fn seed(school: &School) {
    let db = &school.config.log.database;
    let now = hedgerow::time::now_ms();
    let conn = rusqlite::Connection::open(db).unwrap();
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    conn.execute(
        "INSERT INTO devices (ip, name, owner, group_name, source, updated_ms) VALUES (?1, ?2, ?3, 'pupil', 'manual', ?4)",
        params![CLIENT, DEVICE, OWNER, now],
    )
    .unwrap();
    for (group, category, decision, count) in [
        ("pupil", "gambling", "blocked", 41),
        ("pupil", "games", "blocked", 17),
        ("staff", "malware", "blocked", 5),
        ("pupil", "", "safesearch", 9),
        ("pupil", "encrypted-dns", "bypass", 3),
        ("pupil", "", "allowed", 1000),
    ] {
        conn.execute(
            "INSERT INTO daily_counts (day, group_name, category, decision, count) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![today, group, category, decision, count],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO daily_top_blocked (day, group_name, name, count) VALUES (?1, 'pupil', ?2, 41)",
        params![today, TOP_BLOCKED],
    )
    .unwrap();
    conn.execute("INSERT INTO daily_devices (day, distinct_devices) VALUES (?1, 12)", params![today]).unwrap();
    conn.execute("INSERT INTO rollup_days (day, raw_rows, rolled_up_ms) VALUES (?1, 1075, ?2)", params![today, now])
        .unwrap();
    for (state, decided) in [("approved", Some(now - 3_600_000)), ("declined", Some(now - 60_000)), ("open", None)] {
        conn.execute(
            "INSERT INTO unblock_requests (name, group_name, category, reason, requester, source, client, created_ms, \
             state, decided_by, decided_ms) VALUES (?1, 'pupil', 'games', 'for a lesson', ?2, 'block-page', ?3, ?4, ?5, \
             'ann', ?6)",
            params![REQUESTED, REQUESTER, CLIENT, now - 7_200_000, state, decided],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO manual_checks (checked_ms, checked_by, device, network, group_name, tested, outcome, result, \
         action, recorded_by, recorded_ms) VALUES (?1, 'Ian Tate', ?2, 'pupils', 'pupil', 'testfiltering.com', \
         'as-expected', 'all blocked', 'none needed', 'dee', ?1)",
        params![now - 86_400_000, CHECK_DEVICE],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO selftest_runs (started_ms, finished_ms, trigger, checks, failures) VALUES (?1, ?1, 'cli', 40, 1)",
        params![now - 3_600_000],
    )
    .unwrap();
    drop(conn);
    let alert = NewAlert {
        rule: "high-risk".into(),
        severity: "high".into(),
        category: Some("self-harm".into()),
        client: CLIENT.into(),
        device: DEVICE.into(),
        owner: OWNER.into(),
        network: "pupils".into(),
        group: "pupil".into(),
        first_ms: now - 600_000,
        last_ms: now - 570_000,
        attempts: 3,
        names: vec![LOOKED_UP.into()],
        summary: "any attempt at self-harm".into(),
    };
    AlertStore::open(db).unwrap().raise(&alert, now, |_| Vec::new()).unwrap();
    ChangeLog::open(db)
        .unwrap()
        .record_only(&NewChange {
            time_ms: now - 120_000,
            user: "ann".into(),
            kind: "category".into(),
            group: Some("pupil".into()),
            subject: "games for pupil".into(),
            old: "allowed".into(),
            new: "blocked".into(),
            reason: "agreed at the governors' meeting".into(),
        })
        .unwrap();
}

fn assert_no_markers(what: &str, text: &str) {
    for marker in [DEVICE, OWNER, CLIENT, LOOKED_UP, TOP_BLOCKED, REQUESTED, REQUESTER, CHECK_DEVICE] {
        assert!(!text.contains(marker), "{what} names {marker:?}:\n{text}");
    }
}

#[test]
fn the_triggers_refuse_any_sql_change_to_a_complete_review() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let store = ReviewStore::open(&db).unwrap();
    let (start, end) = ("2025-09-01", "2026-08-31");
    store
        .save(start, end, &ReviewForm { participants: "Gill Green, governor".into(), ..Default::default() }, "dee", 1)
        .unwrap();
    let id = store.add_action(start, end, "Buy the IWF list", "Ian", "2026-01-31", "dee", 2).unwrap();
    // A draft may be changed by SQL (the triggers watch only complete reviews).
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE review_actions SET owner = 'Ian Tate' WHERE id = ?1", [id]).unwrap();
    store.complete(start, end, "ann", "{\"signed\":true}", 3).unwrap();
    // A draft of the year before, whose rows REPLACE could aim at the complete one.
    store.save("2024-09-01", "2025-08-31", &ReviewForm::default(), "dee", 3).unwrap();
    store.add_action("2024-09-01", "2025-08-31", "Check guests", "Ian", "2025-01-31", "dee", 3).unwrap();
    let before = store.get(start).unwrap().unwrap();
    let attempts = [
        "UPDATE reviews SET notes = 'changed' WHERE year_start = '2025-09-01'",
        "UPDATE reviews SET state = 'draft' WHERE year_start = '2025-09-01'",
        "UPDATE reviews SET snapshot = '{}' WHERE year_start = '2025-09-01'",
        "DELETE FROM reviews WHERE year_start = '2025-09-01'",
        "INSERT INTO review_actions (year_start, position, action, owner, due) VALUES ('2025-09-01', 9, 'x', 'y', '2026-01-01')",
        "UPDATE review_actions SET action = 'changed' WHERE year_start = '2025-09-01'",
        "DELETE FROM review_actions WHERE year_start = '2025-09-01'",
        // REPLACE deletes the conflicting row without firing DELETE triggers:
        // each must still be refused.
        "INSERT OR REPLACE INTO reviews (year_start, year_end) VALUES ('2025-09-01', '2026-08-31')",
        "UPDATE OR REPLACE reviews SET year_start = '2025-09-01' WHERE year_start = '2024-09-01'",
        "INSERT OR REPLACE INTO review_actions (id, year_start, position, action, owner, due)
         SELECT id, '2024-09-01', 1, 'x', 'y', '2026-01-01' FROM review_actions WHERE year_start = '2025-09-01'",
        "UPDATE OR REPLACE review_actions SET id = (SELECT id FROM review_actions WHERE year_start = '2025-09-01')
         WHERE year_start = '2024-09-01'",
    ];
    for sql in attempts {
        let error = conn.execute(sql, []).expect_err(sql).to_string();
        assert!(error.contains(COMPLETE_MESSAGE), "{sql}: {error}");
    }
    assert_eq!(store.get(start).unwrap().unwrap(), before);
    assert_eq!(before.actions[0].owner, "Ian Tate");
    // Another year's draft is still free.
    conn.execute("INSERT INTO reviews (year_start, year_end) VALUES ('2026-09-01', '2027-08-31')", []).unwrap();
    conn.execute("UPDATE reviews SET notes = 'fine' WHERE year_start = '2026-09-01'", []).unwrap();
}

/// Every POST route of the review, as (path, form fields, JSON body).
fn every_change(year: i16, action: i64) -> Vec<(String, Vec<(&'static str, &'static str)>, serde_json::Value)> {
    let json = |value: serde_json::Value| value;
    vec![
        (
            format!("/review/{year}/save"),
            vec![("participants", "Somebody else"), ("next_review", "2027-01-01")],
            json(serde_json::json!({ "participants": "Somebody else", "next_review": "2027-01-01" })),
        ),
        (
            format!("/review/{year}/actions"),
            vec![("action", "A late action"), ("owner", "Ian"), ("due", "2027-01-01")],
            serde_json::json!({ "action": "A late action", "owner": "Ian", "due": "2027-01-01" }),
        ),
        (
            format!("/review/{year}/actions/{action}"),
            vec![("action", "Changed"), ("owner", "Ian"), ("due", "2027-01-01")],
            serde_json::json!({ "action": "Changed", "owner": "Ian", "due": "2027-01-01" }),
        ),
        (format!("/review/{year}/actions/{action}/remove"), vec![], serde_json::json!({})),
        (format!("/review/{year}/complete"), vec![("confirm", "yes")], serde_json::json!({ "confirm": "yes" })),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_review_cannot_be_changed_by_any_role_form_or_api() {
    let school = school().await;
    seed(&school);
    let year = this_year();
    let (ann, gus, dee) = (school.login("ann").await, school.login("gus").await, school.login("dee").await);
    let form = [
        ("participants", "Gill Green, governor\nDee Lewis, DSL\nIan Tate, IT lead"),
        ("limit_https", "Staff explain the certificate warning to pupils."),
        ("next_review", "2026-11-30"),
    ];
    let reply = school.post(&format!("/review/{year}/save"), &dee, &form).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let reply = school
        .post(
            &format!("/review/{year}/actions"),
            &dee,
            &[("action", "Buy the IWF list"), ("owner", "Ian"), ("due", "2026-01-31")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let store = ReviewStore::open(&school.config.log.database).unwrap();
    let start = format!("{year}-09-01");
    let action = store.get(&start).unwrap().unwrap().actions[0].id;

    // Completing needs the confirmation, shown beside its box when missing.
    let reply = school.post(&format!("/review/{year}/complete"), &ann, &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"confirm-error\""), "{}", reply.body);
    assert!(!store.get(&start).unwrap().unwrap().complete);
    let reply = school.post(&format!("/review/{year}/complete"), &ann, &[("confirm", "yes")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let signed = store.get(&start).unwrap().unwrap();
    assert!(signed.complete && signed.snapshot.is_some());
    assert_eq!(signed.completed_by.as_deref(), Some("ann"));

    for (who, session) in [("admin", &ann), ("dsl", &dee), ("governor", &gus)] {
        let refused = if who == "governor" { StatusCode::FORBIDDEN } else { StatusCode::CONFLICT };
        for (path, fields, body) in every_change(year, action) {
            let reply = school.post(&path, session, &fields).await;
            assert_eq!(reply.status, refused, "{who} {path}: {}", reply.body);
            if refused == StatusCode::CONFLICT {
                assert!(reply.body.contains("signed-off record and cannot be changed"), "{who} {path}: {}", reply.body);
            }
            let api = format!("/api{path}");
            let reply = school.post_json(&api, session, body).await;
            assert_eq!(reply.status, refused, "{who} {api}: {}", reply.body);
            if refused == StatusCode::CONFLICT {
                assert!(reply.json()["error"].as_str().unwrap().contains("cannot be changed"), "{}", reply.body);
            }
        }
    }
    assert_eq!(store.get(&start).unwrap().unwrap(), signed, "the signed-off review changed");

    // A governor reads it: the sign-off line, the meeting's answers, no form.
    let page = school.get(&format!("/review?year={year}"), Some(&gus)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Signed off by ann on"), "{}", page.body);
    assert!(page.body.contains("Staff explain the certificate warning to pupils."));
    assert!(page.body.contains("Buy the IWF list") && page.body.contains("2026-11-30"));
    assert!(!page.body.contains("method=\"post\" action=\"/review"), "{}", page.body);
    assert!(!page.body.contains("<textarea"));
    // The admin sees no form either.
    let page = school.get(&format!("/review?year={year}"), Some(&ann)).await;
    assert!(page.body.contains("Signed off by ann on"));
    assert!(!page.body.contains("action=\"/review/"), "{}", page.body);
    let api = school.get(&format!("/api/review?year={year}"), Some(&gus)).await.json();
    assert_eq!(api["state"], "complete");
    assert_eq!(api["completed_by"], "ann");

    // The page is drawn from the snapshot: a figure changed afterwards does not show.
    let conn = rusqlite::Connection::open(&school.config.log.database).unwrap();
    conn.execute("UPDATE daily_counts SET count = 987654 WHERE category = 'gambling'", []).unwrap();
    let page = school.get(&format!("/review?year={year}"), Some(&gus)).await;
    assert!(!page.body.contains("987654") && !page.body.contains("987,654"), "{}", page.body);
    assert!(page.body.contains(">41<"), "the signed-off figure is kept: {}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_governor_sees_counts_and_no_device_owner_address_or_name() {
    let school = school().await;
    seed(&school);
    let year = this_year();
    let gus = school.login("gus").await;
    let page = school.get("/review", Some(&gus)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_no_markers("the governor's /review", &page.body);
    // The figures from every seeded table are there, as counts.
    for expected in [
        "1. Who is responsible",
        "Pat Head",
        "2. What is blocked for whom",
        "Neither the IWF child sexual abuse list nor the police-assessed (CTIRU) terrorism list is configured",
        "3. Effectiveness",
        "<dt>Blocked attempts</dt><dd>63</dd>",
        "<dt>Searches made safe (SafeSearch)</dt><dd>9</dd>",
        "4. Over-blocking",
        "<dt>Unblock requests made</dt><dd>3</dd>",
        "scratch.mit.edu",
        "Year 7 coding project",
        "5. Change control",
        "agreed at the governors&#39; meeting",
        "6. Regular checks",
        "testfiltering.com",
        "<dt>Self-test runs</dt><dd>1</dd>",
        "7. Alerts",
        "self-harm",
        "8. Technical limitations",
        "9. Actions agreed",
        "Appendix: every change this year",
    ] {
        assert!(page.body.contains(expected), "the page lacks {expected:?}:\n{}", page.body);
    }
    assert!(!page.body.contains("<textarea") && !page.body.contains("action=\"/review/"), "a governor gets no form");
    let api = school.get(&format!("/api/review?year={year}"), Some(&gus)).await;
    assert_eq!(api.status, StatusCode::OK);
    assert_no_markers("the governor's /api/review", &api.body);
    let json = api.json();
    assert_eq!(json["review"]["effectiveness"]["blocked"], 63);
    assert_eq!(json["review"]["over_blocking"]["requests"]["approved"], 1);
    assert_eq!(json["review"]["checks"]["as_expected"], 1);
    assert_eq!(json["state"], "draft");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dsl_fills_in_a_draft_and_bad_values_are_shown_beside_their_fields() {
    let school = school().await;
    let year = this_year();
    // Logged out: the page sends to the login form, the API answers 401, a POST changes nothing.
    let reply = school.get("/review", None).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(reply.location().starts_with("/login?next=/review"), "{}", reply.location());
    assert_eq!(school.get("/api/review", None).await.status, StatusCode::UNAUTHORIZED);
    let anonymous = support::router::request(
        "POST",
        &format!("/api/review/{year}/actions"),
        None,
        "application/json",
        r#"{"action":"x","owner":"y","due":"2026-01-01"}"#.to_string(),
    );
    assert_eq!(school.send(anonymous).await.status, StatusCode::UNAUTHORIZED);
    let (gus, dee): (Session, Session) = (school.login("gus").await, school.login("dee").await);
    // Every role reads it (the nav has it); a governor's API answer is the same review.
    for session in [&gus, &dee] {
        let page = school.get("/review", Some(session)).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("<a href=\"/review\" aria-current=\"page\">Review</a>"), "{}", page.body);
        assert_eq!(school.get("/api/review", Some(session)).await.json()["year"], year);
    }
    // A year after the current one is not there to change.
    let reply = school.post(&format!("/review/{}/save", year + 1), &dee, &[("participants", "x")]).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let page = school.get("/review", Some(&dee)).await;
    assert!(
        page.body.contains("action=\"/review/") && page.body.contains("Mark this review complete"),
        "{}",
        page.body
    );

    let reply = school.post(&format!("/review/{year}/save"), &gus, &[("participants", "Gus")]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply =
        school.post(&format!("/review/{year}/save"), &dee, &[("next_review", "next spring"), ("notes", "kept")]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("id=\"next-error\"") && reply.body.contains("is not a date"), "{}", reply.body);
    assert!(reply.body.contains(">kept</textarea>"), "the input is kept: {}", reply.body);
    let reply = school
        .post(
            &format!("/review/{year}/actions"),
            &dee,
            &[("action", "Train staff"), ("owner", ""), ("due", "2026-02-01")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("id=\"new-owner-error\"") && reply.body.contains("value=\"Train staff\""),
        "{}",
        reply.body
    );
    let store = ReviewStore::open(&school.config.log.database).unwrap();
    assert_eq!(store.get(&format!("{year}-09-01")).unwrap(), None, "nothing was saved");

    let reply = school
        .post_json(
            &format!("/api/review/{year}/actions"),
            &dee,
            serde_json::json!({ "action": "Train staff", "owner": "Dee", "due": "2026-02-01" }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let review = store.get(&format!("{year}-09-01")).unwrap().unwrap();
    let id = review.actions[0].id;
    let reply = school
        .post(
            &format!("/review/{year}/actions/{id}"),
            &dee,
            &[("action", "Train all staff"), ("owner", "Dee"), ("due", "2026-03-01")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(store.get(&format!("{year}-09-01")).unwrap().unwrap().actions[0].action, "Train all staff");
    let reply = school.post(&format!("/review/{year}/actions/{id}/remove"), &dee, &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(store.get(&format!("{year}-09-01")).unwrap().unwrap().actions.is_empty());
    // Without the CSRF token nothing changes.
    let mut request = support::router::request(
        "POST",
        &format!("/review/{year}/save"),
        Some(&dee.cookie),
        "application/x-www-form-urlencoded",
        "participants=x".to_string(),
    );
    request.headers_mut().remove("x-csrf-token");
    assert_eq!(school.send(request).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensed_iwf_and_ctiru_lists_are_named_and_the_warning_goes() {
    // A provider's lists declared next to the test's games list.
    let school = school_with(|dir| {
        let lists = dir.join("lists");
        std::fs::write(lists.join("iwf.txt"), "abuse-example.test\n").unwrap();
        std::fs::write(lists.join("ctiru.txt"), "terror-example.test\n").unwrap();
        std::fs::write(
            lists.join("provider.toml"),
            "[[source]]\nid = \"provider-iwf\"\ncategory = \"csam\"\nformat = \"domains\"\npath = \"iwf.txt\"\n\n\
             [[source]]\nid = \"provider-ctiru\"\ncategory = \"terrorism\"\nformat = \"domains\"\npath = \"ctiru.txt\"\n",
        )
        .unwrap();
    })
    .await;
    let gus = school.login("gus").await;
    let page = school.get("/review", Some(&gus)).await;
    assert!(page.body.contains("IWF list configured: provider-iwf."), "{}", page.body);
    assert!(page.body.contains("CTIRU list configured: provider-ctiru."), "{}", page.body);
    assert!(!page.body.contains("is configured. Hedgerow blocks only") && !page.body.contains("class=\"problem\""));
    let json = school.get("/api/review", Some(&gus)).await.json();
    assert_eq!(json["review"]["policy"]["iwf_sources"], serde_json::json!(["provider-iwf"]));
}
