//! A database of schema 5 (one `query_log` row per query) upgrades in place
//! on first open: every row is found again with the same fields, in the
//! same order, and the old tables are gone.

use std::collections::HashMap;
use std::path::Path;

use hedgerow::name::reversed_name;
use hedgerow::store::read::{count_rows, rows_between};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::search::LogRow;
use hedgerow::store::{LogSettings, QueryLog};
use rusqlite::{Connection, params};

const SCHEMA_5: [&str; 5] = [
    include_str!("../src/store/migrations/0001_init.sql"),
    include_str!("../src/store/migrations/0002_name_hours_by_hour.sql"),
    include_str!("../src/store/migrations/0003_query_log_stage_reason.sql"),
    include_str!("../src/store/migrations/0004_users_sessions.sql"),
    include_str!("../src/store/migrations/0005_change_log.sql"),
];

/// One old row, as schema 5 held it.
#[derive(Debug, Clone, PartialEq)]
struct Old {
    id: i64,
    time_ms: i64,
    client: String,
    device: Option<String>,
    owner: Option<String>,
    network: Option<String>,
    group: Option<String>,
    name: String,
    record_type: u16,
    decision: String,
    category: Option<String>,
    list: Option<String>,
    response_code: u16,
    upstream_ms: Option<u32>,
    cache_hit: bool,
    stage: Option<String>,
    reason: Option<String>,
}

/// About 6,000 varied rows over three days, inserted in an id order that is
/// not time order (as a clock step back leaves them), some sharing a millisecond.
fn old_rows() -> Vec<Old> {
    let start = 1_764_460_800_000; // 2025-11-30T00:00Z
    let groups = [Some("pupil"), Some("staff"), Some("guest"), None];
    (0..6_000i64)
        .map(|n| {
            let group = groups[(n % 4) as usize];
            let blocked = n % 9 == 0;
            let decision = if blocked {
                "blocked"
            } else if n % 13 == 0 {
                "safesearch"
            } else if n % 31 == 0 {
                "refused"
            } else {
                "allowed"
            };
            Old {
                id: n + 1,
                // Three days; every 50th row shares the previous row's
                // millisecond; the last 200 ids are earlier in time.
                time_ms: if n >= 5_800 { start + (n - 5_800) * 1_000 + 7 } else { start + (n - n % 50 / 49) * 43_000 },
                client: format!("10.{}.0.{}", n % 4, n % 17),
                device: (n % 17 == 3).then(|| "LIB-PC-01".to_string()),
                owner: (n % 17 == 3 && n % 2 == 0).then(|| "Library".to_string()),
                network: group.map(|group| format!("{group}-vlan")),
                group: group.map(String::from),
                name: format!("www.site{}.example", n % 211),
                record_type: if n % 5 == 0 { 28 } else { 1 },
                decision: decision.to_string(),
                category: blocked.then(|| ["games", "gambling"][(n % 2) as usize].to_string()),
                list: blocked.then(|| "school-list".to_string()),
                response_code: if blocked { 3 } else { 0 },
                upstream_ms: (n % 3 == 0).then_some((n % 400) as u32),
                cache_hit: n % 3 != 0,
                stage: (n > 1_000).then(|| if blocked { "lists" } else { "upstream" }.to_string()),
                reason: (n > 1_000 && blocked).then(|| format!("listed in games ({n})")),
            }
        })
        .collect()
}

fn write_schema_5(db: &Path, rows: &[Old]) {
    let mut conn = Connection::open(db).unwrap();
    for sql in SCHEMA_5 {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 5).unwrap();
    let tx = conn.transaction().unwrap();
    for row in rows {
        tx.execute(
            "INSERT INTO query_log (id, time_ms, client, device, owner, network, group_name, name, rname, \
             record_type, decision, category, list, response_code, upstream_ms, cache_hit, stage, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                row.id,
                row.time_ms,
                row.client,
                row.device,
                row.owner,
                row.network,
                row.group,
                row.name,
                reversed_name(&row.name),
                row.record_type,
                row.decision,
                row.category,
                row.list,
                row.response_code,
                row.upstream_ms,
                row.cache_hit,
                row.stage,
                row.reason
            ],
        )
        .unwrap();
        tx.execute(
            "INSERT OR IGNORE INTO name_hours (hour, rname) VALUES (?1, ?2)",
            params![row.time_ms / 3_600_000, reversed_name(&row.name)],
        )
        .unwrap();
    }
    tx.execute_batch(
        "INSERT INTO client_labels (day, client, device, owner) VALUES (20422, '10.3.0.3', 'LIB-PC-01', 'Library');
         INSERT INTO daily_counts (day, group_name, category, decision, count) VALUES ('2025-01-01', 'pupil', '', 'allowed', 77);
         INSERT INTO rollup_days (day, raw_rows, rolled_up_ms) VALUES ('2025-01-01', 77, 0);",
    )
    .unwrap();
    tx.commit().unwrap();
}

fn as_old(row: &LogRow) -> Old {
    Old {
        id: 0,
        time_ms: row.time_ms,
        client: row.client.clone(),
        device: row.device.clone(),
        owner: row.owner.clone(),
        network: row.network.clone(),
        group: row.group.clone(),
        name: row.name.clone(),
        record_type: row.record_type,
        decision: row.decision.clone(),
        category: row.category.clone(),
        list: row.list.clone(),
        response_code: row.response_code,
        upstream_ms: row.upstream_ms,
        cache_hit: row.cache_hit,
        stage: row.stage.clone(),
        reason: row.reason.clone(),
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    Connection::open(db).unwrap().query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn a_schema_5_database_upgrades_in_place_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let mut rows = old_rows();
    write_schema_5(&db, &rows);

    QueryLog::open(&db, LogSettings::default()).unwrap().close();

    // The old tables are gone, and so is the upgrade's bookmark.
    for table in ["query_log", "name_hours", "client_labels"] {
        assert_eq!(count(&db, &format!("SELECT count(*) FROM sqlite_schema WHERE name = '{table}'")), 0, "{table}");
    }
    assert_eq!(count(&db, "SELECT count(*) FROM store_state WHERE key LIKE 'log_upgrade%'"), 0);
    // Roll-ups already made are kept as they were.
    assert_eq!(count(&db, "SELECT count FROM daily_counts WHERE day = '2025-01-01'"), 77);

    // Every row, with every field, in (time, old id) order.
    rows.sort_by_key(|row| (row.time_ms, row.id));
    let found = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(found.len(), rows.len());
    for (found, old) in found.iter().zip(&rows) {
        assert_eq!(as_old(found), Old { id: 0, ..old.clone() });
    }
    assert!(found.windows(2).all(|pair| pair[0].id < pair[1].id), "new ids are unique and in time order");
    assert_eq!(count_rows(&db).unwrap(), rows.len() as u64);
    // Converted hours are sealed, with postings and exact hourly counts.
    assert_eq!(count(&db, "SELECT count(*) FROM log_fresh"), 0);
    assert_eq!(count(&db, "SELECT sum(rows) FROM log_sealed"), rows.len() as i64);
    assert_eq!(count(&db, "SELECT sum(count) FROM log_hourly"), rows.len() as i64);
    let blocked = rows.iter().filter(|row| row.decision == "blocked").count() as i64;
    assert_eq!(count(&db, "SELECT sum(count) FROM log_hourly_blocked"), blocked);
    let mut by_group: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        *by_group.entry(row.group.clone().unwrap_or_default()).or_default() += 1;
    }
    for (group, expected) in by_group {
        assert_eq!(count(&db, &format!("SELECT sum(count) FROM log_hourly WHERE group_name = '{group}'")), expected);
    }
    let hours = rows.iter().map(|row| row.time_ms / 3_600_000).collect::<std::collections::HashSet<_>>().len();
    assert_eq!(count(&db, "SELECT count(DISTINCT hour) FROM log_name_postings") as usize, hours);
    assert!(count(&db, "SELECT count(*) FROM log_outcome_postings") > 0);

    // A new row in the newest old row's millisecond gets a later id, and a
    // second open converts nothing again.
    let newest = found.last().unwrap().clone();
    let log = QueryLog::open(&db, LogSettings::default()).unwrap();
    log.record(QueryRecord {
        time_ms: newest.time_ms,
        client: "10.0.0.1".parse().unwrap(),
        network: None,
        group: None,
        name: "after.example".into(),
        record_type: 1,
        decision: "allowed",
        category: None,
        list: None,
        response_code: 0,
        upstream_ms: None,
        cache_hit: false,
        stage: None,
        reason: None,
    });
    log.close();
    let again = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(again.len(), rows.len() + 1);
    let added = again.iter().find(|row| row.name == "after.example").unwrap();
    assert!(again.iter().filter(|row| row.name != "after.example").all(|row| row.id < added.id));
    assert_eq!(again.iter().map(|row| row.id).collect::<std::collections::HashSet<_>>().len(), again.len());
}
