//! The writer seals hours once they are over: rows of two past hours move
//! from fresh blocks to sealed ones with their postings, the current hour
//! stays fresh, every row is found exactly once, and the hourly roll-ups
//! equal counts recomputed from the rows (blocked counts: the sealed rows in
//! the table, and with the fresh ones as the dashboard reads them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use hedgerow::name::reversed_name;
use hedgerow::store::counts::top_blocked_clients;
use hedgerow::store::read::{count_rows, rows_between};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::time::now_ms;
use hedgerow::store::{LogSettings, QueryLog};
use rusqlite::Connection;

const HOUR_MS: i64 = 3_600_000;

fn record(time_ms: i64, n: i64) -> QueryRecord {
    let group = ["pupil", "staff", "guest"][(n % 3) as usize];
    let blocked = n % 7 == 0;
    QueryRecord {
        time_ms,
        client: format!("10.{}.0.{}", n % 3, n % 11).parse().unwrap(),
        network: Some(Arc::from(format!("{group}-vlan"))),
        group: Some(Arc::from(group)),
        name: format!("n{n}.site{}.example", n % 23),
        record_type: 1,
        decision: if blocked { "blocked" } else { "allowed" },
        category: (blocked || n % 10 == 0).then(|| Arc::from(if blocked { "games" } else { "news" })),
        list: blocked.then(|| Arc::from("games")),
        response_code: if blocked { 3 } else { 0 },
        upstream_ms: None,
        cache_hit: false,
        stage: None,
        reason: None,
    }
}

type Table = BTreeSet<(i64, String, String, String, i64)>;

fn table(db: &Path, sql: &str) -> Table {
    let conn = Connection::open(db).unwrap();
    let mut statement = conn.prepare(sql).unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn ended_hours_are_sealed_with_postings_and_every_row_is_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let now = now_ms();
    let current = now.div_euclid(HOUR_MS);
    // Two past hours (ended well over a minute ago) and the current one.
    let times: Vec<i64> = (0..3_000)
        .map(|n| match n % 3 {
            0 => (current - 3) * HOUR_MS + n * 1_000,
            1 => (current - 2) * HOUR_MS + n * 1_000,
            _ => now - 1_000 + n % 500,
        })
        .collect();
    let log = QueryLog::open(&db, LogSettings { batch_max: 700, ..LogSettings::default() }).unwrap();
    for (n, &time) in times.iter().enumerate() {
        log.record(record(time, n as i64));
    }
    log.close();
    // Opening again seals what the last run left fresh.
    QueryLog::open(&db, LogSettings::default()).unwrap().close();

    let fresh_hours = table(&db, "SELECT DISTINCT hour, '', '', '', 0 FROM log_fresh");
    assert_eq!(
        fresh_hours.into_iter().map(|row| row.0).collect::<Vec<_>>(),
        [current],
        "only the current hour is fresh"
    );
    let sealed_hours: BTreeSet<i64> =
        table(&db, "SELECT key >> 39, '', '', '', 0 FROM log_sealed").into_iter().map(|row| row.0).collect();
    assert_eq!(sealed_hours, BTreeSet::from([current - 3, current - 2]));

    let rows = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(rows.len(), times.len());
    assert_eq!(count_rows(&db).unwrap(), times.len() as u64);
    let names: BTreeSet<&str> = rows.iter().map(|row| row.name.as_str()).collect();
    assert_eq!(names.len(), rows.len(), "every row once");

    // Postings: every (hour, name, client) and non-plain (hour, outcome,
    // client) of the sealed rows, and nothing for the fresh hour.
    let mut names_posted = Table::new();
    let mut outcomes_posted = Table::new();
    let mut hourly: BTreeMap<(i64, String, String, String), i64> = BTreeMap::new();
    let mut blocked: BTreeMap<(i64, String, String, String), i64> = BTreeMap::new();
    for row in &rows {
        let hour = row.time_ms.div_euclid(HOUR_MS);
        let (group, category) = (row.group.clone().unwrap_or_default(), row.category.clone().unwrap_or_default());
        if hour < current {
            names_posted.insert((hour, reversed_name(&row.name), row.client.clone(), String::new(), 0));
            if row.decision != "allowed" || !category.is_empty() {
                outcomes_posted.insert((hour, row.decision.clone(), category.clone(), row.client.clone(), 0));
            }
        }
        *hourly.entry((hour, group, category.clone(), row.decision.clone())).or_default() += 1;
        if row.decision == "blocked" {
            *blocked.entry((hour, row.client.clone(), reversed_name(&row.name), category)).or_default() += 1;
        }
    }
    assert_eq!(
        table(
            &db,
            "SELECT p.hour, n.rname, c.client, '', 0 FROM log_name_postings p \
             JOIN log_names n ON n.id = p.name_id JOIN log_clients c ON c.id = p.client_id"
        ),
        names_posted
    );
    assert_eq!(
        table(
            &db,
            "SELECT p.hour, o.decision, o.category, c.client, 0 FROM log_outcome_postings p \
             JOIN log_outcomes o ON o.id = p.outcome_id JOIN log_clients c ON c.id = p.client_id"
        ),
        outcomes_posted
    );
    // Hourly roll-ups: exactly the rows, fresh and sealed alike in
    // log_hourly; the sealed rows in log_hourly_blocked (blocked rows are
    // counted as they are sealed) ...
    let hourly: Table = hourly.into_iter().map(|((h, g, c, d), n)| (h, g, c, d, n)).collect();
    assert_eq!(table(&db, "SELECT hour, group_name, category, decision, count FROM log_hourly"), hourly);
    let mut by_client: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, client, _, _), count) in &blocked {
        *by_client.entry(client.clone()).or_default() += *count as u64;
    }
    let sealed_blocked: Table = blocked
        .into_iter()
        .filter(|((hour, ..), _)| *hour < current)
        .map(|((h, c, n, k), count)| (h, c, n, k, count))
        .collect();
    assert_eq!(
        table(
            &db,
            "SELECT b.hour, c.client, n.rname, b.category, sum(b.count) FROM log_hourly_blocked b \
             JOIN log_clients c ON c.id = b.client_id JOIN log_names n ON n.id = b.name_id GROUP BY 1, 2, 3, 4"
        ),
        sealed_blocked
    );
    // ... and what the dashboard reads adds the fresh hour's.
    let found: BTreeMap<String, u64> = top_blocked_clients(&db, (current - 3) * HOUR_MS, now + HOUR_MS, 1_000)
        .unwrap()
        .into_iter()
        .map(|client| (client.client, client.count))
        .collect();
    assert_eq!(found, by_client);
    assert!(rows.iter().any(|row| row.time_ms.div_euclid(HOUR_MS) == current && row.decision == "blocked"));
}
