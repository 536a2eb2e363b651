//! The Checks page (issue 15) at router level on a real running server
//! (`serve::start` from a config file in a tempdir, its SQLite database):
//! the self-test run from the dashboard against the server's own listener
//! (stored with who ran it, its failures first, an alert raised), the
//! manual checks log (saved and shown, in the CSV and the API; bad values
//! beside their fields and nothing saved), and governors refused everything.

mod support;

use axum::http::StatusCode;
use support::router::{RouterSchool, School};

/// Pupils on 127.0.0.1 with only a games list loaded (so the self-test's
/// other categories cannot block) and an upstream that never answers.
async fn school() -> School {
    let dir = tempfile::tempdir().unwrap();
    let lists = support::config::games_lists(dir.path());
    let text = format!(
        "data_dir = {data:?}\n\n[dns]\nlisten = [\"127.0.0.1:0\"]\n\n[dashboard]\nlisten = []\n\n\
         [upstream]\nmode = \"forward\"\ntimeout_ms = 300\n[[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\n\
         [lists]\ndir = {lists:?}\nupdate_hours = 0\n\n\
         [[networks]]\nname = \"pupils\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n\n\
         [[networks]]\nname = \"staff-lan\"\ncidrs = [\"127.0.0.2/32\"]\ngroup = \"staff\"\n",
        data = dir.path().join("data").display().to_string(),
        lists = lists.display().to_string(),
    );
    let path = dir.path().join("hedgerow.toml");
    std::fs::write(&path, text).unwrap();
    School::start(dir, path).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_test_run_from_the_dashboard_is_stored_shown_failures_first_and_alerted() {
    let school = school().await;
    let dee = school.login("dee").await;
    let page = school.get("/checks", Some(&dee)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No self-test has run yet") && page.body.contains("Run the self-test now"));
    assert!(page.body.contains("daily at 07:30"), "the schedule is said");

    let reply = school.post("/checks/selftest", &dee, &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let location = reply.location().to_string();
    assert!(location.starts_with("/checks/selftest/"), "{location}");

    let runs = school.state().checks().runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!((run.trigger, run.user.as_str()), (hedgerow::store::checks::Trigger::Dashboard, "dee"));
    assert!(run.failures > 0 && run.checks > run.failures, "{run:?}");
    let results = school.state().checks().results(run.id).unwrap();
    // Only games is loaded: pupils' csam name cannot be blocked; the bypass canaries still answer.
    let csam = results.iter().find(|r| r.group == "pupil" && r.subject == "csam").unwrap();
    assert!(!csam.passed && csam.expected == "blocked", "{csam:?}");
    assert!(results.iter().any(|r| r.group == "pupil" && r.kind == "bypass" && r.passed));
    // Staff may play games; upstream never answers, so that check proves nothing: not a pass.
    let staff_games = results.iter().find(|r| r.group == "staff" && r.subject == "games").unwrap();
    assert!(!staff_games.passed && staff_games.got.starts_with("could not check"), "{staff_games:?}");

    let run_page = school.get(&location, Some(&dee)).await;
    assert_eq!(run_page.status, StatusCode::OK);
    let body = &run_page.body;
    assert!(body.contains(&format!("Self-test run {}", run.id)) && body.contains("dee (dashboard)"), "{body}");
    assert!(body.contains("iwf.testfiltering.com") && body.contains("use-application-dns.net"));
    // Pass and fail in words, not by colour alone; in each group the failures come first.
    let pupil = &body[body.find("Group pupil").unwrap()..];
    let pupil = &pupil[..pupil.find("</details>").unwrap()];
    let first_pass = pupil.find(">Pass<").expect("a pass in pupil");
    let last_fail = pupil.rfind(">FAIL<").expect("a failure in pupil");
    assert!(last_fail < first_pass, "failures first:\n{pupil}");

    // The Checks page now shows the latest run and its history row.
    let page = school.get("/checks", Some(&dee)).await;
    assert!(page.body.contains("FAILED") && page.body.contains(&format!("Run {}", run.id)), "{}", page.body);
    let api = school.get("/api/checks", Some(&dee)).await.json();
    assert_eq!(api["latest"]["run"]["id"], run.id);
    assert_eq!(api["latest"]["results"].as_array().unwrap().len() as i64, run.checks);

    // A high alert for the DSL and the ICT lead.
    let alerts = school.state().alerts().recent_unresolved(0).unwrap();
    let alert = alerts.iter().find(|alert| alert.rule == "selftest").expect("a selftest alert");
    assert_eq!(alert.severity, "high");
    assert!(alert.summary.contains("csam should block iwf.testfiltering.com for pupil"), "{}", alert.summary);

    // The API runs it too and returns the run.
    let ann = school.login("ann").await;
    let reply = school.post_json("/api/checks/selftest", &ann, serde_json::json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let report = reply.json();
    assert_eq!(report["run"]["user"], "ann");
    assert_eq!(report["run"]["trigger"], "dashboard");
    assert_eq!(school.state().checks().runs(10).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_check_is_saved_shown_exported_and_bad_values_are_refused_beside_their_fields() {
    let school = school().await;
    let dee = school.login("dee").await;
    let form = [
        ("when", "2026-11-30T09:30"),
        ("who", "Dee Esel"),
        ("device", "pupil laptop 4"),
        ("network", "pupils"),
        ("group", "pupil"),
        ("tested", "testfiltering.com all tests"),
        ("outcome", "as-expected"),
        ("result", "All four SWGfL tests blocked"),
        ("action", "None needed"),
    ];
    let reply = school.post("/checks/manual", &dee, &form).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("Saved the check of testfiltering.com all tests"));
    let saved = school.state().checks().manual_checks(10).unwrap();
    assert_eq!(saved.len(), 1);
    let check = &saved[0];
    assert_eq!(
        (check.check.device.as_str(), check.check.network.as_str(), check.recorded_by.as_str()),
        ("pupil laptop 4", "pupils", "dee")
    );
    // 09:30 in London on 30 November is 09:30 UTC.
    assert_eq!(hedgerow::time::format_utc(check.check.checked_ms), "2026-11-30T09:30:00.000Z");
    let page = school.get("/checks", Some(&dee)).await;
    assert!(page.body.contains("All four SWGfL tests blocked") && page.body.contains("As expected"));
    let csv = school.get("/checks.csv", Some(&dee)).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.body.lines().any(|line| line.starts_with("manual,") && line.contains("pupil laptop 4")),
        "{}",
        csv.body
    );

    // "other" network with its name typed.
    let other = [("network", "other"), ("network_other", "sixth-form wifi"), ("outcome", "problem")];
    let mut form2: Vec<(&str, &str)> =
        form.iter().filter(|(k, _)| !["network", "outcome"].contains(k)).copied().collect();
    form2.extend(other);
    let reply = school.post("/checks/manual", &dee, &form2).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(school.state().checks().manual_checks(10).unwrap()[0].check.network, "sixth-form wifi");

    // Bad values: each beside its field, nothing saved, what was typed kept.
    let bad = [
        ("when", "2999-01-01T09:00"),
        ("who", "Dee Esel"),
        ("device", ""),
        ("network", "mars"),
        ("group", "pupil"),
        ("tested", "testfiltering.com"),
        ("outcome", "problem"),
        ("result", ""),
        ("action", "kept text"),
    ];
    let reply = school.post("/checks/manual", &dee, &bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    for (id, words) in [
        ("chk-when-error", "in the future"),
        ("chk-device-error", "which device"),
        ("chk-network-error", "not a configured network"),
        ("chk-result-error", "what the problem was"),
    ] {
        let at = reply.body.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no {id}:\n{}", reply.body));
        assert!(reply.body[at..at + 300].contains(words), "{id}: {}", &reply.body[at..at + 300]);
    }
    assert!(reply.body.contains(">kept text</textarea>"));
    assert_eq!(school.state().checks().manual_checks(10).unwrap().len(), 2);

    // The API: saved, or the first bad field named.
    let json = serde_json::json!({
        "when": "2026-11-30T10:00", "who": "Ann", "device": "staff ipad", "network": "", "group": "staff",
        "tested": "YouTube restricted mode", "outcome": "as-expected", "result": "", "action": ""
    });
    let reply = school.post_json("/api/checks/manual", &dee, json.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let mut missing = json;
    missing["tested"] = serde_json::json!("");
    let reply = school.post_json("/api/checks/manual", &dee, missing).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["field"], "tested");
    assert_eq!(school.get("/api/checks", Some(&dee)).await.json()["manual"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn governors_get_no_checks_page_and_no_checks_link() {
    let school = school().await;
    let gus = school.login("gus").await;
    for path in ["/checks", "/checks.csv", "/api/checks", "/checks/selftest/1"] {
        assert_eq!(school.get(path, Some(&gus)).await.status, StatusCode::FORBIDDEN, "governor {path}");
    }
    for path in ["/checks/selftest", "/checks/manual"] {
        let reply = school.post(path, &gus, &[("device", "x")]).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "governor POST {path}");
    }
    for path in ["/api/checks/selftest", "/api/checks/manual"] {
        let reply = school.post_json(path, &gus, serde_json::json!({})).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "governor POST {path}");
    }
    assert!(school.state().checks().runs(10).unwrap().is_empty());
    let home = school.get("/", Some(&gus)).await;
    assert!(!home.body.contains("href=\"/checks\""), "governors get no Checks link");
    let dee = school.login("dee").await;
    assert!(school.get("/", Some(&dee)).await.body.contains("href=\"/checks\""), "the DSL gets the Checks link");
}
