//! The overview at `/` and `GET /api/overview` at router level
//! (`web::app(state)` driven with `oneshot`, a real SQLite log in a tempdir
//! holding named devices, owners, addresses and looked-up names): a
//! governor's page and API carry the figures but none of that detail;
//! admin and dsl see it, with links to the explorer and the device page;
//! the charts carry the log's counts; anonymous users are sent to login.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use hedgerow::config::Config;
use hedgerow::dns::Pipeline;
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::policy::SafeSearchMap;
use hedgerow::store::devices::upsert_device;
use hedgerow::store::log::import_records;
use hedgerow::store::{Device, LogSettings, QueryRecord, Role};
use hedgerow::web::{self, AppState};
use http_body_util::BodyExt;
use tower::ServiceExt;

const PASSWORD: &str = "correct horse battery";
/// What only admin and dsl may see: a device's name, its owner, its
/// address and the names it looked up.
const DEVICE: &str = "LIB-PC-04";
const OWNER: &str = "Jo Bloggs-Pupil";
const ADDRESS: &str = "10.1.2.3";
const BLOCKED_NAME: &str = "secret-casino.test";
const ALLOWED_NAME: &str = "homework-helper.test";

struct School {
    _dir: tempfile::TempDir,
    state: AppState,
}

fn record(time_ms: i64, name: &str, decision: &'static str, category: Option<&str>) -> QueryRecord {
    QueryRecord {
        time_ms,
        client: ADDRESS.parse().unwrap(),
        network: Some(Arc::from("pupils")),
        group: Some(Arc::from("pupil")),
        name: name.to_string(),
        record_type: 1,
        decision,
        category: category.map(Arc::from),
        list: category.map(|_| Arc::from("local-gambling")),
        response_code: if decision == "blocked" { 3 } else { 0 },
        upstream_ms: Some(9),
        cache_hit: false,
        stage: None,
        reason: None,
    }
}

/// A school whose log holds, in the last minutes, 7 blocked gambling
/// lookups and 5 allowed ones from a named pupil device, and 2 lookups
/// from staff.
fn school() -> School {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config: Config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &data,
        &dir.path().join("lists"),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"10.1.0.0/16\"]\ngroup = \"pupil\"\n\
         [[networks]]\nname = \"staff\"\ncidrs = [\"10.2.0.0/16\"]\ngroup = \"staff\"\n",
        "overview test",
    );
    let pipeline = Arc::new(Pipeline::new(&config, CompiledLists::empty(), SafeSearchMap::default(), None).unwrap());
    let state = AppState::new(pipeline, &config).unwrap();
    let db = &config.log.database;
    upsert_device(
        db,
        &Device {
            ip: Some(ADDRESS.parse().unwrap()),
            mac: None,
            name: DEVICE.into(),
            owner: Some(OWNER.into()),
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    let now = hedgerow::time::now_ms();
    let mut records = Vec::new();
    for n in 0..7 {
        records.push(record(now - 60_000 + n, BLOCKED_NAME, "blocked", Some("gambling")));
    }
    for n in 0..5 {
        records.push(record(now - 50_000 + n, ALLOWED_NAME, "allowed", None));
    }
    for n in 0..2 {
        let staff = QueryRecord {
            client: "10.2.0.9".parse().unwrap(),
            network: Some(Arc::from("staff")),
            group: Some(Arc::from("staff")),
            ..record(now - 40_000 + n, "staff-only.test", "allowed", None)
        };
        records.push(staff);
    }
    import_records(db, records, &LogSettings::default()).unwrap();
    for (name, roles) in [
        ("ann", &[Role::Admin][..]),
        ("dee", &[Role::Dsl]),
        ("gus", &[Role::Governor]),
        ("gina", &[Role::Governor, Role::Dsl]),
    ] {
        state.users().add(name, PASSWORD, roles, now).unwrap();
    }
    School { _dir: dir, state }
}

struct Reply {
    status: StatusCode,
    location: String,
    body: String,
}

fn request(method: &str, path: &str, cookie: Option<&str>, body: String) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path).header(header::HOST, "localhost:8080");
    if method != "GET" {
        builder = builder
            .header(header::ORIGIN, "http://localhost:8080")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    let mut request = builder.body(Body::from(body)).unwrap();
    request.extensions_mut().insert(ConnectInfo("10.0.0.1:40000".parse::<SocketAddr>().unwrap()));
    request
}

impl School {
    async fn send(&self, request: Request<Body>) -> (Reply, Option<String>) {
        let response = web::app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_string());
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (Reply { status, location: location.unwrap_or_default(), body: String::from_utf8_lossy(&body).into() }, cookie)
    }

    async fn login(&self, name: &str) -> String {
        let body = format!("name={name}&password={}&next=/", PASSWORD.replace(' ', "+"));
        let (reply, cookie) = self.send(request("POST", "/login", None, body)).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        cookie.expect("a session cookie")
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send(request("GET", path, cookie, String::new())).await.0
    }
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|error| panic!("{error}: {}", reply.body))
}

/// The sum of a group's series in a timeline of the API.
fn total(timeline: &serde_json::Value, group: &str, series: &str) -> u64 {
    timeline["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["group"] == group)
        .flat_map(|line| line[series].as_array().unwrap().iter().map(|value| value.as_u64().unwrap()))
        .sum()
}

#[tokio::test]
async fn a_governor_sees_the_figures_but_no_device_owner_address_or_name() {
    let school = school();
    let governor = school.login("gus").await;
    let page = school.get("/", Some(&governor)).await;
    assert_eq!(page.status, StatusCode::OK);
    let api = school.get("/api/overview", Some(&governor)).await;
    assert_eq!(api.status, StatusCode::OK);
    for body in [&page.body, &api.body] {
        for secret in [DEVICE, OWNER, ADDRESS, BLOCKED_NAME, ALLOWED_NAME, "staff-only.test", "10.2.0.9"] {
            assert!(!body.contains(secret), "a governor received {secret:?}: {body}");
        }
        assert!(!body.contains("/device/") && !body.contains("/log?"), "no links to pages they cannot open");
    }
    // The figures are there: charts per group, and the category.
    assert!(page.body.contains("<svg class=\"chart\""), "{}", page.body);
    assert!(page.body.contains("Lookups per hour, last 24 hours"));
    assert!(page.body.contains("gambling"));
    assert!(page.body.contains("Hello, gus"), "what the home page said stays");
    let overview = json(&api);
    assert_eq!(overview["detail"], false);
    assert!(overview.get("top_names").is_none() && overview.get("top_devices").is_none(), "{overview}");
    assert_eq!(total(&overview["hourly"], "pupil", "lookups"), 12);
    assert_eq!(total(&overview["hourly"], "pupil", "blocked"), 7);
    assert_eq!(total(&overview["daily"], "staff", "lookups"), 2);
    assert_eq!(overview["categories"][0]["category"], "gambling");
    assert_eq!(overview["categories"][0]["today"], 7);

    // A governor who is also a DSL sees what a DSL sees.
    let both = school.login("gina").await;
    assert!(school.get("/", Some(&both)).await.body.contains(DEVICE));
}

#[tokio::test]
async fn admin_and_dsl_see_the_top_names_and_devices_with_links() {
    let school = school();
    for user in ["ann", "dee"] {
        let cookie = school.login(user).await;
        let page = school.get("/", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        for detail in [DEVICE, OWNER, BLOCKED_NAME] {
            assert!(page.body.contains(detail), "{user} sees {detail}: {}", page.body);
        }
        assert!(page.body.contains("href=\"/device/10.1.2.3\""), "{}", page.body);
        let page_text = page.body.replace("&#38;", "&").replace("&amp;", "&");
        assert!(page_text.contains("href=\"/log?decision=blocked&name=secret-casino.test&since=20"), "{page_text}");
        assert!(page_text.contains("href=\"/log?decision=blocked&client=10.1.2.3&since=20"));
        assert!(page_text.contains("href=\"/log?decision=blocked&category=gambling\""));
        let overview = json(&school.get("/api/overview", Some(&cookie)).await);
        assert_eq!(overview["detail"], true);
        assert_eq!(overview["top_names"][0]["name"], BLOCKED_NAME);
        assert_eq!(overview["top_names"][0]["blocked"], 7);
        let device = &overview["top_devices"][0];
        assert_eq!(device["client"], ADDRESS);
        assert_eq!(device["device"], DEVICE);
        assert_eq!(device["owner"], OWNER);
        assert_eq!(device["blocked"], 7);
        // The allowed name is never in a "blocked" list.
        assert!(!overview.to_string().contains(ALLOWED_NAME));
    }
}

#[tokio::test]
async fn anonymous_users_are_sent_to_login() {
    let school = school();
    let page = school.get("/", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.starts_with("/login"), "{}", page.location);
    assert!(!page.body.contains(DEVICE));
    let api = school.get("/api/overview", None).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert!(!api.body.contains(DEVICE) && !api.body.contains("gambling"));
}

#[tokio::test]
async fn the_charts_carry_the_counts_and_a_table_of_them() {
    let school = school();
    let cookie = school.login("ann").await;
    let page = school.get("/", Some(&cookie)).await.body;
    assert_eq!(page.matches("<svg class=\"chart\"").count(), 4, "24 h and 30 days, lookups and blocks");
    assert_eq!(page.matches("<table class=\"chart-table\">").count(), 4);
    // The current hour's pupil column: 12 lookups, 7 blocked, in the tooltips and tables.
    assert!(page.contains(", pupil: 12</title>"), "{page}");
    assert!(page.contains(", pupil: 7</title>"));
    assert!(page.contains(", staff: 2</title>"));
    assert!(!page.contains("style="), "no inline style (CSP)");
    assert!(!page.contains("<script"), "no script");
}
