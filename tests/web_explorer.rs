//! The query log explorer and the device page at router level
//! (`web::app(state)` driven with `oneshot`, real SQLite files in a
//! tempdir, rows written with `import_records`): who may reach each route,
//! the CSV export's columns, quoting and formula defusing, paging that
//! neither repeats nor skips a row while new rows arrive, bad filter values
//! shown beside their field, and what the device page shows.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use hedgerow::config::Config;
use hedgerow::dns::Pipeline;
use hedgerow::lists::compiled::CompiledLists;
use hedgerow::policy::SafeSearchMap;
use hedgerow::store::devices::{Device, upsert_device};
use hedgerow::store::log::import_records;
use hedgerow::store::record::QueryRecord;
use hedgerow::store::search::ExportRow;
use hedgerow::store::{LogSettings, Role};
use hedgerow::web::AppState;

const PASSWORD: &str = "correct horse battery";

struct Dashboard {
    _dir: tempfile::TempDir,
    state: AppState,
    database: PathBuf,
}

fn dashboard() -> Dashboard {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut config: Config = support::config::forwarding(
        "127.0.0.1:9".parse().unwrap(),
        &data,
        &dir.path().join("lists"),
        "[[networks]]\nname = \"pupils\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n",
        "explorer test",
    );
    config.dashboard = hedgerow::config::DashboardSettings::default();
    let pipeline = Arc::new(Pipeline::new(&config, CompiledLists::empty(), SafeSearchMap::default(), None).unwrap());
    let state = AppState::new(pipeline, &config).unwrap();
    let dashboard = Dashboard { database: config.log.database.clone(), state, _dir: dir };
    for (name, role) in [("ada", Role::Admin), ("dee", Role::Dsl), ("gov", Role::Governor)] {
        dashboard.state.users().add(name, PASSWORD, &[role], hedgerow::time::now_ms()).unwrap();
    }
    upsert_device(
        &dashboard.database,
        &Device {
            ip: Some("10.0.0.5".parse().unwrap()),
            mac: None,
            name: "lab-pc-3".into(),
            owner: Some("Ms Lee".into()),
            group: None,
            source: "manual".into(),
        },
    )
    .unwrap();
    dashboard
}

fn record(time_ms: i64, client: &str, name: &str, category: Option<&str>) -> QueryRecord {
    QueryRecord {
        time_ms,
        client: client.parse().unwrap(),
        network: Some(Arc::from("pupils")),
        group: Some(Arc::from("pupil")),
        name: name.to_string(),
        record_type: 1,
        decision: if category.is_some() { "blocked" } else { "allowed" },
        category: category.map(Arc::from),
        list: category.map(|category| Arc::from(format!("{category}-list"))),
        response_code: if category.is_some() { 3 } else { 0 },
        upstream_ms: Some(4),
        cache_hit: false,
        stage: Some(if category.is_some() { "blocklist" } else { "upstream" }),
        reason: category.map(|category| format!("{name} is in category {category}").into()),
    }
}

use support::router::Reply;

impl Dashboard {
    fn write(&self, records: Vec<QueryRecord>) {
        import_records(&self.database, records, &LogSettings::default()).unwrap();
    }

    async fn send(&self, path: &str, cookie: Option<&str>, method: &str, body: &str) -> Reply {
        let form = "application/x-www-form-urlencoded";
        support::router::send(&self.state, support::router::request(method, path, cookie, form, body.to_string())).await
    }

    async fn get(&self, path: &str, cookie: &str) -> Reply {
        self.send(path, Some(cookie), "GET", "").await
    }

    async fn login(&self, name: &str) -> String {
        let body = format!("name={name}&password={}&next=/", PASSWORD.replace(' ', "+"));
        let reply = self.send("/login", None, "POST", &body).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let set = reply.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }
}

/// The names in a results table, in order.
fn names(html: &str) -> Vec<String> {
    let marker = "class=\"log-name\">";
    html.match_indices(marker)
        .map(|(at, _)| {
            let rest = &html[at + marker.len()..];
            rest[..rest.find('<').unwrap()].to_string()
        })
        .collect()
}

/// The "Older" link's target, decoded from the page.
fn older(html: &str) -> Option<String> {
    let at = html.find("rel=\"next\" href=\"")?;
    let rest = &html[at + "rel=\"next\" href=\"".len()..];
    Some(rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
}

fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(text.as_bytes());
    reader.records().map(|record| record.unwrap().iter().map(String::from).collect()).collect()
}

#[tokio::test]
async fn every_route_refuses_governors_and_anonymous_users() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    dashboard.write(vec![record(now - 60_000, "10.0.0.5", "www.example.com", None)]);
    let governor = dashboard.login("gov").await;
    let dsl = dashboard.login("dee").await;
    let admin = dashboard.login("ada").await;
    for path in ["/log", "/log.csv", "/log?decision=blocked", "/device/lab-pc-3", "/device/10.0.0.5.csv"] {
        let anonymous = dashboard.send(path, None, "GET", "").await;
        assert_eq!(anonymous.status, StatusCode::SEE_OTHER, "{path}");
        let location = anonymous.headers.get(header::LOCATION).unwrap().to_str().unwrap();
        assert!(location.starts_with("/login?next="), "{path}: {location}");
        let refused = dashboard.get(path, &governor).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert!(!refused.body.contains("lab-pc-3") && !refused.body.contains("10.0.0.5"), "{path}");
        for cookie in [&dsl, &admin] {
            let reply = dashboard.get(path, cookie).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        }
    }
    // The JSON twin: the same roles; a governor learns nothing from it.
    let anonymous = dashboard.send("/api/log", None, "GET", "").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let refused = dashboard.get("/api/log", &governor).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.body.contains("10.0.0.5") && !refused.body.contains("example"), "{}", refused.body);
    let reply = dashboard.get("/api/log", &dsl).await;
    assert_eq!(reply.status, StatusCode::OK);
    let page: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(page["rows"][0]["name"], "www.example.com");
    assert_eq!(page["rows"][0]["device"], "lab-pc-3");
    assert!(page["next"].is_null());
    let bad = dashboard.get("/api/log?window=fortnight", &dsl).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("\"field\":\"window\""), "{}", bad.body);
    // The governor's nav does not offer the log; the DSL's does.
    let home = dashboard.get("/", &governor).await;
    assert!(!home.body.contains("href=\"/log\""));
    let home = dashboard.get("/", &dsl).await;
    assert!(home.body.contains("href=\"/log\""));
}

#[tokio::test]
async fn the_csv_export_has_the_cli_columns_quotes_and_defuses_formulas() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    let awkward = ["comma,name.example", "say \"hi\".example", "=cmd|' /C calc'!A0.example", "-2+3.example"];
    let mut records = Vec::new();
    for (n, name) in awkward.iter().enumerate() {
        records.push(record(now - 600_000 + n as i64 * 1000, "10.0.0.5", name, Some("games")));
    }
    for n in 0..12_000 {
        records.push(record(now - 3_000_000 + n * 100, "10.0.0.9", &format!("n{n}.example"), None));
    }
    dashboard.write(records);
    let dsl = dashboard.login("dee").await;
    let reply = dashboard.get("/log.csv?client=lab-pc-3", &dsl).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(reply.headers[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment;"));
    let records = parse_csv(&reply.body);
    assert_eq!(records[0], ExportRow::FIELDS.map(String::from).to_vec());
    let names: Vec<&str> = records[1..].iter().map(|record| record[7].as_str()).collect();
    // Newest first; quoted as RFC 4180 says; a formula's first character defused.
    assert_eq!(names, ["'-2+3.example", "'=cmd|' /C calc'!A0.example", "say \"hi\".example", "comma,name.example"]);
    assert!(
        records[1..].iter().all(|record| record[3] == "lab-pc-3" && record[4] == "Ms Lee" && record[9] == "blocked")
    );
    assert!(reply.body.contains("\"comma,name.example\""));
    // More rows than one step of the stream: every one, once, newest first.
    let reply = dashboard.get("/log.csv?client=10.0.0.9&window=today", &dsl).await;
    let today = parse_csv(&reply.body);
    let reply = dashboard.get("/log.csv?client=10.0.0.9&window=30d", &dsl).await;
    let records = parse_csv(&reply.body);
    assert_eq!(records.len(), 12_001);
    assert!(today.len() <= records.len());
    let ids: Vec<i64> = records[1..].iter().map(|record| record[0].parse().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 12_000);
    assert_eq!(records[1][7], "n11999.example");
    assert_eq!(records[12_000][7], "n0.example");
    // The device report: the same columns, that device only.
    let reply = dashboard.get("/device/lab-pc-3.csv", &dsl).await;
    assert_eq!(reply.status, StatusCode::OK);
    let records = parse_csv(&reply.body);
    assert_eq!(records.len(), 5);
    let reply = dashboard.get("/device/lab-pc-3.csv?from=2020-01-01&to=2020-01-02", &dsl).await;
    assert_eq!(parse_csv(&reply.body).len(), 1);
    // One day, from and to the same: that whole day (school time).
    let today = jiff::Timestamp::from_millisecond(now)
        .unwrap()
        .to_zoned(dashboard.state.config().timezone.clone())
        .date()
        .to_string();
    let reply = dashboard.get(&format!("/device/lab-pc-3.csv?from={today}&to={today}"), &dsl).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(parse_csv(&reply.body).len(), 5);
    // A bad date is an answer naming it, not a 500.
    let reply = dashboard.get("/device/lab-pc-3.csv?from=someday", &dsl).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.contains("someday"));
    let reply = dashboard.get("/log.csv?decision=maybe", &dsl).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pages_concatenate_to_the_whole_result_while_rows_arrive() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    // 250 rows, in pairs sharing a millisecond (ties broken by id).
    let records: Vec<QueryRecord> = (0..250)
        .map(|n| record(now - 3_600_000 + (n / 2) * 1000, "10.0.0.5", &format!("p{n}.example"), None))
        .collect();
    dashboard.write(records);
    let dsl = dashboard.login("dee").await;
    let mut seen = Vec::new();
    // The last 7 days, not "today": rows an hour old are yesterday's just after midnight.
    let mut path = "/log?client=lab-pc-3&window=7d".to_string();
    let mut pages = 0;
    loop {
        let reply = dashboard.get(&path, &dsl).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        seen.extend(names(&reply.body));
        pages += 1;
        if pages == 1 {
            // New rows arrive after the first page: later pages are unmoved.
            dashboard.write(vec![record(now - 1000, "10.0.0.5", "late.example", None)]);
        }
        match older(&reply.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = (0..250).rev().map(|n| format!("p{n}.example")).collect();
    // Within a millisecond, the newer id first: p249 before p248.
    expected.dedup();
    assert_eq!(seen, expected);
    // The first page again now starts with the new row.
    let reply = dashboard.get("/log?client=lab-pc-3&window=7d", &dsl).await;
    assert_eq!(names(&reply.body)[0], "late.example");
    // The JSON twin pages the same way, through `next`.
    let mut from_api = Vec::new();
    let mut path = "/api/log?client=lab-pc-3&window=7d".to_string();
    loop {
        let reply = dashboard.get(&path, &dsl).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let page: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        from_api.extend(page["rows"].as_array().unwrap().iter().map(|row| row["name"].as_str().unwrap().to_string()));
        match page["next"].as_i64() {
            Some(next) => path = format!("/api/log?client=lab-pc-3&window=7d&before={next}"),
            None => break,
        }
    }
    assert_eq!(from_api[0], "late.example");
    assert_eq!(from_api[1..], expected[..]);
}

#[tokio::test]
async fn searches_filter_and_bad_values_are_shown_beside_their_field() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    dashboard.write(vec![
        record(now - 5000, "10.0.0.5", "www.games.example", Some("games")),
        record(now - 4000, "10.0.0.5", "games.example", None),
        record(now - 3000, "10.0.0.7", "other.example", None),
    ]);
    let dsl = dashboard.login("dee").await;
    let reply = dashboard.get("/log?name=games.example", &dsl).await;
    assert_eq!(names(&reply.body), ["games.example", "www.games.example"]);
    let reply = dashboard.get("/log?decision=blocked&group=pupil&window=hour", &dsl).await;
    assert_eq!(names(&reply.body), ["www.games.example"]);
    // Each row: its device (linked), the decision's stage, reason and list.
    assert!(reply.body.contains("href=\"/device/lab-pc-3\">lab-pc-3 (Ms Lee)</a>"), "{}", reply.body);
    assert!(reply.body.contains("blocklist"));
    assert!(reply.body.contains("www.games.example is in category games"));
    assert!(reply.body.contains("(list games-list)"));
    let reply = dashboard.get("/log?category=games", &dsl).await;
    assert_eq!(names(&reply.body), ["www.games.example"]);
    let reply = dashboard.get("/log?client=10.0.0.7", &dsl).await;
    assert_eq!(names(&reply.body), ["other.example"]);
    assert!(reply.body.contains("href=\"/device/10.0.0.7\""));
    for (query, field, words) in [
        ("decision=maybe", "log-decision-error", "not a decision"),
        ("group=nobody", "log-group-error", "no group"),
        ("window=fortnight", "log-window-error", "not a time window"),
        ("window=custom&from=yesterday", "log-from-error", "not a time"),
        ("window=custom&from=2026-11-30&to=2026-11-01", "log-to-error", "before the start"),
        ("name=a+b", "log-name-error", "not a domain name"),
    ] {
        let reply = dashboard.get(&format!("/log?{query}"), &dsl).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let at = reply.body.find(&format!("id=\"{field}\"")).unwrap_or_else(|| panic!("{query}: {}", reply.body));
        assert!(reply.body[at..].contains(words), "{query}");
        assert!(reply.body.contains("aria-invalid=\"true\""), "{query}");
    }
    // A bad page marker is the first page.
    let reply = dashboard.get("/log?before=banana", &dsl).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(names(&reply.body).len(), 3);
}

#[tokio::test]
async fn the_device_page_shows_the_device_its_blocks_and_recent_lookups() {
    let dashboard = dashboard();
    let now = hedgerow::time::now_ms();
    dashboard.write(vec![
        record(now - 5000, "10.0.0.5", "bet.example", Some("gambling")),
        record(now - 4000, "10.0.0.5", "bet2.example", Some("gambling")),
        record(now - 3000, "10.0.0.5", "chat.example", Some("chat")),
        record(now - 2000, "10.0.0.5", "ok.example", None),
        record(now - 1000, "10.0.0.7", "other.example", None),
    ]);
    let dsl = dashboard.login("dee").await;
    for path in ["/device/lab-pc-3", "/device/10.0.0.5", "/device/LAB-PC-3"] {
        let reply = dashboard.get(path, &dsl).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let body = &reply.body;
        assert!(body.contains("<h1>Device lab-pc-3</h1>"), "{path}: {body}");
        assert!(body.contains("Ms Lee") && body.contains("pupil") && body.contains("<td>10.0.0.5</td>"), "{path}");
        assert!(body.contains("3 blocked lookups"), "{path}");
        assert!(body.contains("<td>gambling</td><td class=\"number\">2</td>"), "{path}");
        assert_eq!(names(body), ["ok.example", "chat.example", "bet2.example", "bet.example"], "{path}");
        assert!(body.contains("href=\"/log?client="), "{path}");
        assert!(body.contains("action=\"/device/"), "{path}");
        assert!(!body.contains("other.example"), "{path}");
    }
    let reply = dashboard.get("/device/never-seen", &dsl).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.body.contains("no lookups from"));
}
