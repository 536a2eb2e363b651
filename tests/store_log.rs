//! The query log on real SQLite files: rows, attribution, privacy, a full
//! channel, roll-ups and retention, migrations, and a writer killed with
//! SIGKILL mid-write.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hedgerow::store::devices::{Device, upsert_device};
use hedgerow::store::read::{count_rows as stored_rows, rows_between};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::retention::{DELETE_BATCH, TOP_BLOCKED_PER_DAY, annual_review, roll_up, run_retention};
use hedgerow::store::schema::SCHEMA_VERSION;
use hedgerow::store::search::{LogRow, Search, search, tail};
use hedgerow::store::time::{DAY_MS, day_number, day_string, now_ms, parse_utc};
use hedgerow::store::{LogSettings, Privacy, QueryLog};
use rusqlite::Connection;

fn arc(text: &str) -> Option<Arc<str>> {
    Some(Arc::from(text))
}

fn query(time_ms: i64, client: &str, group: &str, name: &str, decision: &'static str) -> QueryRecord {
    QueryRecord {
        time_ms,
        client: client.parse().unwrap(),
        network: arc(&format!("{group}-vlan")),
        group: arc(group),
        name: name.to_string(),
        record_type: 1,
        decision,
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: None,
        cache_hit: false,
        stage: None,
        reason: None,
    }
}

fn blocked(time_ms: i64, client: &str, group: &str, name: &str, category: &str) -> QueryRecord {
    QueryRecord {
        category: arc(category),
        list: arc(&format!("{category}-list")),
        response_code: 3,
        ..query(time_ms, client, group, name, "blocked")
    }
}

fn device(ip: &str, name: &str, owner: Option<&str>) -> Device {
    Device {
        ip: Some(ip.parse().unwrap()),
        mac: None,
        name: name.into(),
        owner: owner.map(String::from),
        group: None,
        source: "manual".into(),
    }
}

fn all_rows(db: &Path) -> Vec<LogRow> {
    let mut rows = tail(db, 0, usize::MAX).unwrap();
    rows.sort_by_key(|row| row.id);
    rows
}

/// Every row, decoded from the blocks (fresh and sealed), oldest first.
fn raw_rows(db: &Path) -> Vec<LogRow> {
    rows_between(db, i64::MIN, i64::MAX).unwrap()
}

/// The `YYYY-MM-DD` of a row.
fn row_day(row: &LogRow) -> String {
    day_string(day_number(row.time_ms))
}

/// The days rolled up.
fn rolled_days(db: &Path) -> std::collections::HashSet<String> {
    let conn = Connection::open(db).unwrap();
    let mut statement = conn.prepare("SELECT day FROM rollup_days").unwrap();
    statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db).unwrap().query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn rows_land_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let log = QueryLog::open(&db, LogSettings::default()).unwrap();
    let t = parse_utc("2025-03-04T09:10:11.123").unwrap();
    let records = vec![
        QueryRecord {
            upstream_ms: Some(23),
            record_type: 28,
            ..query(t, "10.1.0.5", "pupil", "www.bbc.co.uk", "allowed")
        },
        QueryRecord { cache_hit: true, ..query(t + 1, "10.1.0.5", "pupil", "www.bbc.co.uk", "allowed") },
        blocked(t + 2, "10.1.0.6", "pupil", "casino.example", "gambling"),
        QueryRecord { record_type: 5, ..query(t + 3, "10.2.0.9", "staff", "www.google.co.uk", "safesearch") },
        QueryRecord { response_code: 3, ..query(t + 4, "10.1.0.5", "pupil", "use-application-dns.net", "bypass") },
        QueryRecord {
            network: None,
            group: None,
            response_code: 5,
            ..query(t + 5, "2001:db8::77", "none", "example.org", "refused")
        },
        QueryRecord { response_code: 2, ..query(t + 6, "10.2.0.9", "staff", "broken.example", "error") },
    ];
    for record in &records {
        log.record(record.clone());
    }
    log.close();

    let rows = all_rows(&db);
    assert_eq!(rows.len(), records.len());
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!(row.time_ms, record.time_ms);
        assert_eq!(row.client.parse::<IpAddr>().unwrap(), record.client);
        assert_eq!((row.device.as_deref(), row.owner.as_deref()), (None, None));
        assert_eq!(row.network.as_deref(), record.network.as_deref());
        assert_eq!(row.group.as_deref(), record.group.as_deref());
        assert_eq!(row.name, record.name);
        assert_eq!(row.record_type, record.record_type);
        assert_eq!(row.decision, record.decision);
        assert_eq!(row.category.as_deref(), record.category.as_deref());
        assert_eq!(row.list.as_deref(), record.list.as_deref());
        assert_eq!(row.response_code, record.response_code);
        assert_eq!(row.upstream_ms, record.upstream_ms);
        assert_eq!(row.cache_hit, record.cache_hit);
    }
    assert_eq!(rows[2].category.as_deref(), Some("gambling"));
    assert_eq!(rows[2].list.as_deref(), Some("gambling-list"));
}

#[test]
fn rows_are_attributed_by_client_address_when_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    upsert_device(&db, &device("10.1.0.5", "LIB-PC-01", Some("Library"))).unwrap();
    upsert_device(&db, &device("10.1.0.6", "Y7-iPad-12", Some("Jane Smith"))).unwrap();
    let log = QueryLog::open(&db, LogSettings::default()).unwrap();
    let t = now_ms();
    log.record(query(t, "10.1.0.5", "pupil", "a.example", "allowed"));
    log.record(query(t, "10.1.0.6", "pupil", "b.example", "allowed"));
    log.record(query(t, "10.1.0.7", "pupil", "c.example", "allowed"));
    // IPv4-mapped IPv6 from a dual-stack socket is the same client.
    log.record(query(t, "::ffff:10.1.0.5", "pupil", "d.example", "allowed"));
    log.flush();

    // The device table changes while the writer runs: the iPad is passed on.
    upsert_device(&db, &device("10.1.0.6", "Y7-iPad-12", Some("Sam Jones"))).unwrap();
    log.record(query(t + 1, "10.1.0.6", "pupil", "e.example", "allowed"));
    log.close();

    let rows = all_rows(&db);
    let labels: Vec<(&str, Option<&str>, Option<&str>)> =
        rows.iter().map(|row| (row.name.as_str(), row.device.as_deref(), row.owner.as_deref())).collect();
    assert_eq!(
        labels,
        vec![
            ("a.example", Some("LIB-PC-01"), Some("Library")),
            ("b.example", Some("Y7-iPad-12"), Some("Jane Smith")),
            ("c.example", None, None),
            ("d.example", Some("LIB-PC-01"), Some("Library")),
            // History is not rewritten: b.example still names Jane Smith.
            ("e.example", Some("Y7-iPad-12"), Some("Sam Jones")),
        ]
    );
    assert_eq!(rows[3].client, "10.1.0.5");
}

fn privacy_rows(privacy: Privacy, records: &[QueryRecord]) -> Vec<LogRow> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    upsert_device(&db, &device("10.9.0.20", "Visitor laptop", Some("A Visitor"))).unwrap();
    upsert_device(&db, &device("10.1.0.5", "LIB-PC-01", Some("Library"))).unwrap();
    let settings = LogSettings {
        guest_privacy: privacy,
        private_groups: vec!["guest".into(), "community".into()],
        ..LogSettings::default()
    };
    let log = QueryLog::open(&db, settings).unwrap();
    for record in records {
        log.record(record.clone());
    }
    log.close();
    all_rows(&db)
}

#[test]
fn private_groups_are_never_named_and_are_truncated_or_hashed() {
    let today = now_ms();
    let yesterday = today - DAY_MS;
    let records = [
        query(today, "10.9.0.20", "guest", "a.example", "allowed"),
        query(today, "10.9.0.20", "guest", "b.example", "allowed"),
        query(today, "10.9.0.21", "guest", "c.example", "allowed"),
        query(yesterday, "10.9.0.20", "guest", "d.example", "allowed"),
        query(today, "2001:db8:1:2::5", "community", "e.example", "allowed"),
        query(today, "10.1.0.5", "pupil", "f.example", "allowed"),
    ];

    let full = privacy_rows(Privacy::Full, &records);
    assert_eq!(full[0].client, "10.9.0.20");
    assert!(full[..5].iter().all(|row| row.device.is_none() && row.owner.is_none()), "{full:#?}");
    assert_eq!(full[5].device.as_deref(), Some("LIB-PC-01"));

    let truncated = privacy_rows(Privacy::Truncate, &records);
    let clients: Vec<&str> = truncated.iter().map(|row| row.client.as_str()).collect();
    assert_eq!(clients, ["10.9.0.0/24", "10.9.0.0/24", "10.9.0.0/24", "10.9.0.0/24", "2001:db8:1::/48", "10.1.0.5"]);
    assert!(truncated[..5].iter().all(|row| row.device.is_none() && row.owner.is_none()));

    let hashed = privacy_rows(Privacy::Hash, &records);
    let clients: Vec<&str> = hashed.iter().map(|row| row.client.as_str()).collect();
    assert!(clients[..5].iter().all(|client| client.starts_with("anon-") && client.len() == 17), "{clients:?}");
    assert_eq!(clients[0], clients[1], "stable within a day");
    assert_ne!(clients[0], clients[2], "different addresses differ");
    assert_ne!(clients[0], clients[3], "not linkable across days");
    assert!(!clients[4].contains("2001"));
    assert!(hashed[..5].iter().all(|row| row.device.is_none() && row.owner.is_none()));
    assert_eq!(hashed[5].client, "10.1.0.5");
    assert_eq!(hashed[5].owner.as_deref(), Some("Library"));
}

#[test]
fn hash_keys_of_past_days_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let settings = LogSettings { guest_privacy: Privacy::Hash, ..LogSettings::default() };
    let log = QueryLog::open(&db, settings).unwrap();
    let now = now_ms();
    log.record(query(now - 5 * DAY_MS, "10.9.0.20", "guest", "old.example", "allowed"));
    log.flush();
    log.record(query(now, "10.9.0.20", "guest", "new.example", "allowed"));
    log.close();
    let conn = Connection::open(&db).unwrap();
    let days: Vec<String> = conn
        .prepare("SELECT day FROM privacy_keys ORDER BY day")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(days, vec![day_string(day_number(now))]);
}

#[test]
fn a_full_channel_drops_and_counts_rows_and_record_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let settings = LogSettings {
        channel_capacity: 10,
        batch_max: 5,
        flush_interval: Duration::from_millis(1),
        ..LogSettings::default()
    };
    let log = QueryLog::open(&db, settings).unwrap();

    // Pause the writer: another connection holds the write lock.
    let blocker = Connection::open(&db).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = now_ms();
    const BURST: u64 = 100_000;
    let mut built = 0u64;
    for i in 0..BURST {
        log.record_with(|| {
            built += 1;
            query(t + i as i64, "10.1.0.5", "pupil", "burst.example", "allowed")
        });
    }
    // Every call returned while the writer could not write a single row.
    assert_eq!(log.written(), 0);
    let dropped = log.dropped();
    assert!(dropped >= BURST - 10 - 5 - 1, "only {dropped} dropped");
    // Once the channel was seen full, rows were no longer even built (the
    // writer took at most one batch off meanwhile, and wakes a few times a second).
    assert!(built < 1_000, "{built} rows built for a channel of 10");

    blocker.execute_batch("ROLLBACK").unwrap();
    log.flush();
    let (written, dropped) = (log.written(), log.dropped());
    assert_eq!(written + dropped, BURST);
    assert!(written >= 1, "the queued rows were written after the pause");

    // The writer has drained the channel, so new rows are taken, not shed.
    for i in 0..3 {
        log.record(query(t + i, "10.1.0.5", "pupil", "after.example", "allowed"));
    }
    log.flush();
    assert_eq!(log.written(), written + 3);
    assert_eq!(log.dropped(), dropped);
    log.close();
    assert_eq!(stored_rows(&db).unwrap(), written + 3);
}

/// Writes a few days of varied traffic through the log; returns the log's
/// "now" (noon of the last day).
fn write_days(db: &Path, days: i64) -> i64 {
    upsert_device(db, &device("10.1.1.1", "LIB-PC-01", Some("Library"))).unwrap();
    let today = day_number(now_ms());
    let log = QueryLog::open(db, LogSettings::default()).unwrap();
    let groups = ["pupil", "staff", "guest"];
    let categories = ["gambling", "pornography", "social-media", "games"];
    let mut n: i64 = 0;
    for day in today - days + 1..=today {
        for i in 0..1_500 {
            n += 1;
            let time = day * DAY_MS + (i * 57_600) % DAY_MS;
            let group = groups[(n % 3) as usize];
            let client = format!("10.{}.{}.{}", n % 3, n % 7, n % 40);
            let record = if n % 4 == 0 {
                // Many blocked names, so each day's top 20 is a real cut.
                let m = n / 4;
                let name = format!("site{}.blocked.example", if m % 2 == 0 { m % 47 } else { m % 5 });
                blocked(time, &client, group, &name, categories[(n % 4 + n / 4 % 3) as usize % 4])
            } else if n % 11 == 0 {
                query(time, &client, group, "www.google.co.uk", "safesearch")
            } else {
                query(time, &client, group, &format!("host{}.example", n % 90), "allowed")
            };
            log.record(record);
        }
    }
    log.close();
    today * DAY_MS + DAY_MS / 2
}

/// Rows of five columns, as both sides of a roll-up comparison read them.
type Rows = Vec<(String, String, String, String, i64)>;

fn rows_of(conn: &Connection, sql: &str) -> Rows {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Each table's roll-ups, and the same figures recomputed from raw rows
/// (every row decoded from the blocks).
fn rollups_and_recomputed(db: &Path) -> [(Rows, Rows); 3] {
    let conn = Connection::open(db).unwrap();
    let rolled = rolled_days(db);
    let rows: Vec<LogRow> = raw_rows(db).into_iter().filter(|row| rolled.contains(&row_day(row))).collect();
    let text = |value: &Option<String>| value.clone().unwrap_or_default();

    let mut counts: HashMap<(String, String, String, String), i64> = HashMap::new();
    let mut blocked: HashMap<(String, String, String), i64> = HashMap::new();
    let mut clients: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for row in &rows {
        let (day, group) = (row_day(row), text(&row.group));
        *counts.entry((day.clone(), group.clone(), text(&row.category), row.decision.clone())).or_default() += 1;
        if row.decision == "blocked" {
            *blocked.entry((day.clone(), group, row.name.clone())).or_default() += 1;
        }
        clients.entry(day).or_default().insert(row.client.clone());
    }
    let mut recomputed_counts: Rows = counts.into_iter().map(|((d, g, c, k), n)| (d, g, c, k, n)).collect();
    recomputed_counts.sort();
    // Each day and group's top names: most blocked first, then by name.
    let mut by_day_group: HashMap<(String, String), Vec<(String, i64)>> = HashMap::new();
    for ((day, group, name), count) in blocked {
        by_day_group.entry((day, group)).or_default().push((name, count));
    }
    let mut recomputed_top: Rows = Vec::new();
    for ((day, group), mut names) in by_day_group {
        names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (name, count) in names.into_iter().take(TOP_BLOCKED_PER_DAY) {
            recomputed_top.push((day.clone(), group.clone(), name, String::new(), count));
        }
    }
    recomputed_top.sort_by(|a, b| (&a.0, &a.1, -a.4, &a.2).cmp(&(&b.0, &b.1, -b.4, &b.2)));
    let mut recomputed_devices: Rows = clients
        .into_iter()
        .map(|(day, clients)| (day, String::new(), String::new(), String::new(), clients.len() as i64))
        .collect();
    recomputed_devices.sort();

    let counts = (
        rows_of(&conn, "SELECT day, group_name, category, decision, count FROM daily_counts ORDER BY 1, 2, 3, 4"),
        recomputed_counts,
    );
    let top = (
        rows_of(&conn, "SELECT day, group_name, name, '', count FROM daily_top_blocked ORDER BY 1, 2, 5 DESC, 3"),
        recomputed_top,
    );
    let devices =
        (rows_of(&conn, "SELECT day, '', '', '', distinct_devices FROM daily_devices ORDER BY 1"), recomputed_devices);
    [counts, top, devices]
}

#[test]
fn roll_ups_equal_the_counts_recomputed_from_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let now = write_days(&db, 4);
    assert_eq!(roll_up(&db, now).unwrap(), 3, "three complete days; today is not complete");
    let [counts, top, devices] = rollups_and_recomputed(&db);
    assert!(counts.0.len() > 20 && top.0.len() == 3 * 3 * TOP_BLOCKED_PER_DAY, "{} {}", counts.0.len(), top.0.len());
    assert_eq!(counts.0, counts.1);
    assert_eq!(top.0, top.1);
    assert_eq!(devices.0, devices.1);
    assert_eq!(count(&db, "SELECT sum(count) FROM daily_counts"), count(&db, "SELECT sum(raw_rows) FROM rollup_days"));

    // Idempotent: again is a no-op, and nothing is counted twice.
    assert_eq!(roll_up(&db, now).unwrap(), 0);
    assert_eq!(rollups_and_recomputed(&db)[0].0, counts.0);
    // Tomorrow, today is complete too.
    assert_eq!(roll_up(&db, now + DAY_MS).unwrap(), 1);
    assert_eq!(count(&db, "SELECT sum(count) FROM daily_counts") as u64, stored_rows(&db).unwrap());
}

#[test]
fn retention_deletes_old_rows_and_keeps_roll_ups() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let now = write_days(&db, 10);
    let rows = raw_rows(&db);
    let total = rows.len() as i64;
    let cutoff = now - 3 * DAY_MS;
    let old = rows.iter().filter(|row| row.time_ms < cutoff).count() as i64;
    // Counted before deletion, for comparison with the roll-ups after it.
    let mut per_day: Rows = Vec::new();
    for row in &rows {
        match per_day.last_mut() {
            Some(last) if last.0 == row_day(row) => last.4 += 1,
            _ => per_day.push((row_day(row), String::new(), String::new(), String::new(), 1)),
        }
    }
    drop(rows);

    let report = run_retention(&db, 3, now).unwrap();
    assert_eq!(report.days_rolled_up, 9);
    assert_eq!(report.rows_deleted as i64, old);
    assert!(old > DELETE_BATCH as i64, "more than one delete batch: {old}");
    let kept = raw_rows(&db);
    assert_eq!(kept.iter().filter(|row| row.time_ms < cutoff).count(), 0);
    assert_eq!(kept.len() as i64, total - old);
    assert_eq!(stored_rows(&db).unwrap() as i64, total - old);
    // Roll-ups outlive the raw rows: every complete day is still counted in full.
    let conn = Connection::open(&db).unwrap();
    let rolled = rows_of(&conn, "SELECT day, '', '', '', sum(count) FROM daily_counts GROUP BY day ORDER BY day");
    assert_eq!(rolled, per_day[..9]);

    // The postings, hourly counts, names and clients of the deleted rows are gone too.
    let cutoff_hour = cutoff / 3_600_000;
    for table in ["log_name_postings", "log_outcome_postings", "log_hourly", "log_hourly_blocked"] {
        assert_eq!(count(&db, &format!("SELECT count(*) FROM {table} WHERE hour < {cutoff_hour}")), 0, "{table}");
        assert!(count(&db, &format!("SELECT count(*) FROM {table}")) > 0, "{table}");
    }
    assert_eq!(count(&db, "SELECT sum(count) FROM log_hourly"), total - old);
    for table in ["log_names", "log_clients"] {
        assert_eq!(count(&db, &format!("SELECT count(*) FROM {table} WHERE last_day < {}", cutoff / DAY_MS)), 0);
        assert!(count(&db, &format!("SELECT count(*) FROM {table}")) > 0, "{table}");
    }
    // Every kept row's name and client are still there to read.
    assert!(kept.iter().all(|row| !row.name.is_empty() && !row.client.is_empty()));

    // The annual review reads only the roll-ups, so it still sees all ten days.
    let figures = annual_review(&db, &per_day[0].0, &day_string(day_number(now))).unwrap();
    assert_eq!(figures.days_rolled_up, 9);
    assert_eq!(
        figures.totals.iter().map(|total| total.count as i64).sum::<i64>(),
        per_day[..9].iter().map(|day| day.4).sum::<i64>()
    );
}

#[test]
fn annual_review_sums_the_roll_ups() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let now = write_days(&db, 5);
    roll_up(&db, now).unwrap();
    let first = day_string(day_number(now) - 4);
    let figures = annual_review(&db, &first, &day_string(day_number(now))).unwrap();
    let rolled = rolled_days(&db);
    let mut raw: HashMap<String, i64> = HashMap::new();
    for row in raw_rows(&db).iter().filter(|row| rolled.contains(&row_day(row))) {
        *raw.entry(row.decision.clone()).or_default() += 1;
    }
    let totals: HashMap<String, i64> =
        figures.totals.iter().map(|total| (total.decision.clone(), total.count as i64)).collect();
    assert_eq!(totals, raw);
    let by_month: i64 = figures.by_month.iter().map(|month| month.count as i64).sum();
    assert_eq!(by_month, raw.values().sum::<i64>());
    let blocked_by_category: i64 = figures.by_category.iter().map(|category| category.count as i64).sum();
    assert_eq!(blocked_by_category, raw["blocked"]);
    assert_eq!(figures.days_rolled_up, 4);
    assert!(figures.devices_per_day_average > 100.0, "{}", figures.devices_per_day_average);
    assert!(figures.top_blocked.len() >= 20 && figures.top_blocked[0].name.ends_with(".blocked.example"));
    assert_eq!(
        figures.by_group.iter().map(|group| group.group.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
        3
    );
    let json = serde_json::to_string(&figures).unwrap();
    assert!(json.contains("\"by_month\""));

    let error = annual_review(&db, "2025-02-30", "2025-03-01").unwrap_err().to_string();
    assert!(error.contains("not a date"), "{error}");
}

#[test]
fn search_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    upsert_device(&db, &device("10.1.0.5", "LIB-PC-01", Some("Library"))).unwrap();
    let log = QueryLog::open(&db, LogSettings::default()).unwrap();
    let day = parse_utc("2025-03-04").unwrap();
    for i in 0..300 {
        let time = day + i * 60_000;
        let client = if i % 3 == 0 { "10.1.0.5" } else { "10.1.0.6" };
        let name = ["www.example.com", "example.com", "notexample.com", "cdn.example.com.evil.net"][i as usize % 4];
        let record = if i % 5 == 0 {
            blocked(time, client, "pupil", name, "games")
        } else {
            query(time, client, "pupil", name, "allowed")
        };
        log.record(record);
    }
    log.close();

    let find = |query: Search| search(&db, &query).unwrap();
    let by_client = find(Search { client: Some("10.1.0.5".into()), limit: 1000, ..Search::default() });
    assert_eq!(by_client.len(), 100);
    assert!(by_client.windows(2).all(|pair| pair[0].time_ms > pair[1].time_ms), "newest first");
    let by_device = find(Search { client: Some("lib-pc-01".into()), limit: 1000, ..Search::default() });
    assert_eq!(by_device, by_client);
    let by_owner = find(Search { client: Some("Library".into()), limit: 1000, ..Search::default() });
    assert_eq!(by_owner, by_client);

    let suffix = find(Search { name: Some("example.com".into()), limit: 1000, ..Search::default() });
    assert_eq!(suffix.len(), 150);
    assert!(suffix.iter().all(|row| row.name == "www.example.com" || row.name == "example.com"));
    let exact = find(Search { name: Some("www.example.com".into()), limit: 1000, ..Search::default() });
    assert_eq!(exact.len(), 75);

    let games = find(Search { category: Some("games".into()), limit: 1000, ..Search::default() });
    assert_eq!(games.len(), 60);
    let blocked_lib = find(Search {
        client: Some("10.1.0.5".into()),
        decision: Some("blocked".into()),
        limit: 1000,
        ..Search::default()
    });
    assert_eq!(blocked_lib.len(), 20);
    assert!(blocked_lib.iter().all(|row| row.decision == "blocked" && row.client == "10.1.0.5"));

    let window = find(Search {
        since_ms: Some(day + 60 * 60_000),
        until_ms: Some(day + 120 * 60_000),
        limit: 1000,
        ..Search::default()
    });
    assert_eq!(window.len(), 60);
    assert_eq!(window[0].time_ms, day + 119 * 60_000);

    // Paging through a name search, across the hours it was asked in.
    let mut pages = Vec::new();
    let mut before_id = None;
    loop {
        let page = find(Search { name: Some("example.com".into()), limit: 40, before_id, ..Search::default() });
        if page.is_empty() {
            break;
        }
        before_id = page.last().map(|row| row.id);
        pages.extend(page);
    }
    assert_eq!(pages, suffix);

    // Paging visits every row once, newest first.
    let mut seen = Vec::new();
    let mut before_id = None;
    loop {
        let page = find(Search { limit: 7, before_id, ..Search::default() });
        if page.is_empty() {
            break;
        }
        before_id = page.last().map(|row| row.id);
        seen.extend(page.into_iter().map(|row| row.time_ms));
    }
    let expected: Vec<i64> = (0..300).rev().map(|i| day + i * 60_000).collect();
    assert_eq!(seen, expected);

    // Tail: the newest rows after an id, oldest first.
    let last = tail(&db, 0, 5).unwrap();
    assert_eq!(last.len(), 5);
    assert_eq!(last[4].time_ms, day + 299 * 60_000);
    assert_eq!(tail(&db, last[2].id, 100).unwrap(), last[3..].to_vec());

    let error = search(&db, &Search { decision: Some("maybe".into()), ..Search::default() }).unwrap_err();
    assert!(error.to_string().contains("not one of"), "{error}");
    let missing = search(&dir.path().join("none.db"), &Search::default()).unwrap_err();
    assert!(missing.to_string().contains("no such database"), "{missing}");
}

#[test]
fn migrations_run_once_and_a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    QueryLog::open(&db, LogSettings::default()).unwrap().close();
    assert_eq!(count(&db, "PRAGMA user_version") as u32, SCHEMA_VERSION);
    assert_eq!(count(&db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('log_fresh', 'log_sealed')"), 2);
    let schema = count(&db, "PRAGMA schema_version");

    // Re-opening changes nothing.
    let log = QueryLog::open(&db, LogSettings::default()).unwrap();
    log.record(query(now_ms(), "10.1.0.5", "pupil", "a.example", "allowed"));
    log.close();
    assert_eq!(count(&db, "PRAGMA user_version") as u32, SCHEMA_VERSION);
    assert_eq!(count(&db, "PRAGMA schema_version"), schema);
    assert_eq!(stored_rows(&db).unwrap(), 1);

    // A file from a newer Hedgerow is refused, and left as it was.
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&db).unwrap().pragma_update(None, "user_version", newer).unwrap();
    let expected = format!(
        "this database was written by a newer Hedgerow (schema {newer}, this binary knows {SCHEMA_VERSION}): \
         upgrade hedgerow or restore a backup"
    );
    let error = QueryLog::open(&db, LogSettings::default()).err().expect("refused").to_string();
    assert!(error.contains(&expected), "{error}");
    let error = search(&db, &Search::default()).unwrap_err().to_string();
    assert!(error.contains(&expected), "{error}");
    let error = upsert_device(&db, &device("10.1.0.5", "x", None)).unwrap_err().to_string();
    assert!(error.contains(&expected), "{error}");
    assert_eq!(count(&db, "PRAGMA user_version") as u32, newer);
    assert_eq!(
        count(&db, "SELECT coalesce(sum(rows), 0) FROM log_sealed") + count(&db, "SELECT count(*) FROM log_fresh"),
        1
    );
}

#[test]
fn settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let error = QueryLog::open(&db, LogSettings { retention_days: 400, ..LogSettings::default() }).err().unwrap();
    assert!(error.to_string().contains("from 1 to 365"), "{error}");
    assert!(run_retention(&db, 0, now_ms()).is_err());
}

/// Set (to the database path) only in the child this test starts: the child
/// runs the same test function, which then writes instead of checking.
const KILL_CHILD_DB: &str = "HEDGEROW_STORE_KILL_DB";
const KILL_CHILD_FIRST: &str = "HEDGEROW_STORE_KILL_FIRST";

/// The child side of the SIGKILL test: log rows until killed, printing the
/// committed count after each commit. It stops by itself after a minute, so
/// a parent that died before killing it leaves nothing running.
fn write_until_killed(db: &Path, first: i64) {
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    // Faster than the writer, so it is always in the middle of a batch and
    // the channel is always full (the excess is dropped and counted).
    let settings = LogSettings { channel_capacity: 20_000, ..LogSettings::default() };
    let log = QueryLog::open(db, settings).unwrap();
    let mut reported = 0;
    for sequence in first.. {
        log.record(query(sequence, "10.1.0.5", "pupil", &format!("row{}.kill.example", sequence % 97), "allowed"));
        if sequence % 200 == 0 {
            std::thread::yield_now();
            let written = log.written();
            if written != reported {
                reported = written;
                println!("committed {written} dropped {}", log.dropped());
            }
            assert!(std::time::Instant::now() < give_up, "the parent test never killed this writer");
        }
    }
}

/// Kills this test's own child with SIGKILL.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A writer killed with SIGKILL mid-write leaves every batch it reported
/// committed, and nothing torn. The test runs this binary again as the
/// writer (only that child has `HEDGEROW_STORE_KILL_DB` set), three times,
/// killing it at different points of a batch.
#[test]
fn a_writer_killed_mid_write_leaves_every_committed_batch() {
    if let Some(db) = std::env::var_os(KILL_CHILD_DB) {
        let first: i64 = std::env::var(KILL_CHILD_FIRST).unwrap().parse().unwrap();
        write_until_killed(Path::new(&db), first);
        unreachable!("the writer loops until killed");
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let mut expected_at_least = 0;
    for round in 0..3 {
        let first = count_rows(&db);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_writer_killed_mid_write_leaves_every_committed_batch", "--nocapture"])
            .args(["--test-threads=1"])
            .env(KILL_CHILD_DB, &db)
            .env(KILL_CHILD_FIRST, first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let mut committed = 0;
        let mut reports = 0;
        // A few commits in, a little later each round (the writer runs in
        // SCHED_IDLE, so on a busy machine each commit can take a while).
        while reports < 1 + round {
            let line = lines.next().expect("the child reports commits").unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                committed = rest.split(' ').next().unwrap().parse::<i64>().unwrap();
                reports += 1;
            }
        }
        // Kill at varying points of the writer's next batch.
        std::thread::sleep(Duration::from_millis(round as u64 * 7));
        child.0.kill().unwrap(); // SIGKILL
        let status = child.0.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed, not exited: {status}");
        expected_at_least = first + committed;

        let conn = Connection::open(&db).unwrap();
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
        assert_eq!(integrity, "ok");
        let rows = count_rows(&db);
        eprintln!(
            "round {round}: killed after {committed} rows reported committed; the database holds {rows} (from {first})"
        );
        assert!(
            rows >= expected_at_least,
            "round {round}: {rows} rows, but {expected_at_least} were reported committed"
        );
        // Whatever is there is whole: every row as it was recorded.
        let broken = raw_rows(&db)
            .iter()
            .filter(|row| row.name != format!("row{}.kill.example", row.time_ms % 97) || row.client != "10.1.0.5")
            .count();
        assert_eq!(broken, 0);
    }
    assert!(expected_at_least > 0);
}

fn count_rows(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    stored_rows(db).unwrap() as i64
}
