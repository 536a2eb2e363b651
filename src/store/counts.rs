//! The dashboard overview's figures, from the hourly roll-ups alone.
//!
//! `log_hourly` counts every row by hour, group, category and decision,
//! written in the same transaction as the rows; `log_hourly_blocked` counts
//! blocked rows by hour, client and name, written in the transaction that
//! seals them, so the fresh rows' blocked counts are added here from their
//! blocks (minutes of rows at most: [`seal::fresh_blocked`]). Both are
//! exact, and both lead with the hour: a week of one is a single range of a
//! few tens of thousands of small entries, never the rows themselves.
//! Windows are counted in whole hours: every hour a window touches.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};
use super::seal;
use super::time::HOUR_MS;
use crate::name::reversed_name;

/// Lookups and blocks of one group in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourCount {
    /// Hours since 1970-01-01 00:00 UTC (`time_ms / 3,600,000`).
    pub hour: i64,
    /// `None` for rows of no group (refused queries from outside every network).
    pub group: Option<String>,
    pub lookups: u64,
    /// Lookups whose decision was `blocked`.
    pub blocked: u64,
}

/// Blocked lookups of one client, as its rows name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientCount {
    /// The address, or its privacy form for private groups.
    pub client: String,
    pub device: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub count: u64,
}

/// Lookups and blocks per hour and group for the hours `from_hour..to_hour`,
/// by hour, then group; hours and groups without lookups are left out.
pub fn hourly_by_group(db: &Path, from_hour: i64, to_hour: i64) -> Result<Vec<HourCount>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let mut statement = conn
        .prepare(
            "SELECT hour, group_name, sum(count), sum(CASE WHEN decision = 'blocked' THEN count ELSE 0 END) \
             FROM log_hourly WHERE hour >= ?1 AND hour < ?2 GROUP BY hour, group_name ORDER BY hour, group_name",
        )
        .map_err(StoreError::sqlite(db, "read the hourly counts"))?;
    let rows = statement
        .query_map([from_hour, to_hour], |row| {
            let group: String = row.get(1)?;
            Ok(HourCount {
                hour: row.get(0)?,
                group: (!group.is_empty()).then_some(group),
                lookups: row.get::<_, i64>(2)?.max(0) as u64,
                blocked: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .map_err(StoreError::sqlite(db, "read the hourly counts"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the hourly counts"))
}

/// Lookups and blocks of one group on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// Days since 1970-01-01 (UTC days: `hour / 24`).
    pub day: i64,
    pub group: Option<String>,
    pub lookups: u64,
    pub blocked: u64,
}

/// Lookups and blocks per UTC day and group for the days `from_day..to_day`,
/// by day, then group (the same sums as [`hourly_by_group`], by day).
pub fn daily_by_group(db: &Path, from_day: i64, to_day: i64) -> Result<Vec<DayCount>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let mut statement = conn
        .prepare(
            "SELECT hour / 24, group_name, sum(count), sum(CASE WHEN decision = 'blocked' THEN count ELSE 0 END) \
             FROM log_hourly WHERE hour >= ?1 AND hour < ?2 GROUP BY hour / 24, group_name \
             ORDER BY hour / 24, group_name",
        )
        .map_err(StoreError::sqlite(db, "read the daily counts"))?;
    let rows = statement
        .query_map([from_day.saturating_mul(24), to_day.saturating_mul(24)], |row| {
            let group: String = row.get(1)?;
            Ok(DayCount {
                day: row.get(0)?,
                group: (!group.is_empty()).then_some(group),
                lookups: row.get::<_, i64>(2)?.max(0) as u64,
                blocked: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })
        .map_err(StoreError::sqlite(db, "read the daily counts"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the daily counts"))
}

/// The categories with the most blocked lookups in the hours
/// `from_hour..to_hour`, most first (ties by category), at most `limit`.
/// Blocks of no category (an override, a refused type) count as "".
pub fn top_blocked_categories(
    db: &Path,
    from_hour: i64,
    to_hour: i64,
    limit: usize,
) -> Result<Vec<(String, u64)>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let mut statement = conn
        .prepare(
            "SELECT category, sum(count) AS total FROM log_hourly \
             WHERE hour >= ?1 AND hour < ?2 AND decision = 'blocked' \
             GROUP BY category ORDER BY total DESC, category LIMIT ?3",
        )
        .map_err(StoreError::sqlite(db, "read the blocked categories"))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map([from_hour, to_hour, limit], |row| Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64)))
        .map_err(StoreError::sqlite(db, "read the blocked categories"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the blocked categories"))
}

/// The most blocked names in the hours `from_ms..to_ms` touches, most first
/// (ties by name), at most `limit`.
pub fn top_blocked_names(db: &Path, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<(String, u64)>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let by_name = blocked_by(&conn, db, hours(from_ms, to_ms), Column::Name)?;
    let mut named = Vec::with_capacity(by_name.len().min(limit));
    let mut name = conn
        .prepare("SELECT rname FROM log_names WHERE id = ?1")
        .map_err(StoreError::sqlite(db, "read the query log's names"))?;
    for (id, count) in top(by_name, limit) {
        let rname: Option<String> = name
            .query_row([id], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "read the query log's names"))?;
        // A name retention has just removed: left out rather than invented.
        if let Some(rname) = rname {
            named.push((reversed_name(&rname), count));
        }
    }
    named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    named.truncate(limit);
    Ok(named)
}

/// The clients with the most blocked lookups in the hours `from_ms..to_ms`
/// touches, most first (ties by client), at most `limit`. A client whose
/// rows name it the same way on several networks is counted once.
pub fn top_blocked_clients(db: &Path, from_ms: i64, to_ms: i64, limit: usize) -> Result<Vec<ClientCount>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let by_client = blocked_by(&conn, db, hours(from_ms, to_ms), Column::Client)?;
    let mut client = conn
        .prepare("SELECT client, device, owner, group_name FROM log_clients WHERE id = ?1")
        .map_err(StoreError::sqlite(db, "read the query log's clients"))?;
    let some = |text: String| (!text.is_empty()).then_some(text);
    let mut merged: HashMap<ClientKey, u64> = HashMap::new();
    for (id, count) in by_client {
        let found = client
            .query_row([id], |row| Ok((row.get(0)?, some(row.get(1)?), some(row.get(2)?), some(row.get(3)?))))
            .optional()
            .map_err(StoreError::sqlite(db, "read the query log's clients"))?;
        if let Some(key) = found {
            *merged.entry(key).or_default() += count;
        }
    }
    let mut clients: Vec<ClientCount> = merged
        .into_iter()
        .map(|((client, device, owner, group), count)| ClientCount { client, device, owner, group, count })
        .collect();
    clients.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.client.cmp(&b.client)));
    clients.truncate(limit);
    Ok(clients)
}

/// A client as its rows name it: address, device, owner, group.
type ClientKey = (String, Option<String>, Option<String>, Option<String>);

/// The hours a window touches.
fn hours(from_ms: i64, to_ms: i64) -> Range<i64> {
    if to_ms <= from_ms {
        return 0..0;
    }
    from_ms.div_euclid(HOUR_MS)..(to_ms - 1).div_euclid(HOUR_MS) + 1
}

#[derive(Clone, Copy)]
enum Column {
    Name,
    Client,
}

/// Blocked lookups in `hours` summed by name or by client id: the sealed
/// rows' counts and the fresh rows', read in one transaction.
fn blocked_by(
    conn: &Connection,
    db: &Path,
    hours: Range<i64>,
    column: Column,
) -> Result<HashMap<u32, u64>, StoreError> {
    let failed = || StoreError::sqlite(db, "read the hourly blocked counts");
    let tx = conn.unchecked_transaction().map_err(failed())?;
    let sql = match column {
        Column::Name => "SELECT name_id, count FROM log_hourly_blocked WHERE hour >= ?1 AND hour < ?2",
        Column::Client => "SELECT client_id, count FROM log_hourly_blocked WHERE hour >= ?1 AND hour < ?2",
    };
    let mut statement = tx.prepare(sql).map_err(failed())?;
    let mut rows = statement.query([hours.start, hours.end]).map_err(failed())?;
    let mut sums: HashMap<u32, u64> = HashMap::new();
    while let Some(row) = rows.next().map_err(failed())? {
        let count: i64 = row.get(1).map_err(failed())?;
        *sums.entry(row.get(0).map_err(failed())?).or_default() += count.max(0) as u64;
    }
    for (_, counts) in seal::fresh_blocked(&tx, hours).map_err(failed())? {
        for ((client, name, _), count) in counts {
            let id = match column {
                Column::Name => name,
                Column::Client => client,
            };
            *sums.entry(id).or_default() += count.max(0) as u64;
        }
    }
    Ok(sums)
}

/// The `limit` largest counts, largest first, with every count tied with
/// the last of them (so the caller can break ties by what the ids stand for).
fn top(sums: HashMap<u32, u64>, limit: usize) -> Vec<(u32, u64)> {
    let mut sums: Vec<(u32, u64)> = sums.into_iter().collect();
    sums.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let Some(&(_, last)) = sums.get(limit.wrapping_sub(1)) else {
        if limit == 0 {
            sums.clear();
        }
        return sums;
    };
    let kept = sums.partition_point(|&(_, count)| count >= last);
    sums.truncate(kept);
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    const HOUR: i64 = 490_000;

    fn database() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counts.db");
        let conn = schema::open(&path, Purpose::Log).unwrap();
        conn.execute_batch(
            "INSERT INTO log_names (id, rname, last_day) VALUES (1, 'com.bet365.www', 0), (2, 'net.games', 0),
                 (3, 'com.tiktok', 0);
             INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day)
                 VALUES (1, '10.0.0.7', 'LIB-PC-04', 'J. Smith', 'pupil-wifi', 'pupil', 0),
                        (2, '10.0.0.7', 'LIB-PC-04', 'J. Smith', 'pupil-lan', 'pupil', 0),
                        (3, 'anon-0123456789ab', '', '', 'guest-wifi', 'guest', 0),
                        (4, '10.0.2.1', '', '', 'staff-lan', 'staff', 0);",
        )
        .unwrap();
        let hourly = [
            (HOUR, "pupil", "", "allowed", 100),
            (HOUR, "pupil", "gambling", "blocked", 7),
            (HOUR, "pupil", "games", "blocked", 3),
            (HOUR, "pupil", "social-media", "allowed", 4),
            (HOUR, "guest", "", "allowed", 20),
            (HOUR, "", "", "refused", 2),
            (HOUR + 1, "pupil", "", "allowed", 50),
            (HOUR + 1, "staff", "", "safesearch", 5),
            (HOUR + 30, "pupil", "", "allowed", 9),
        ];
        for (hour, group, category, decision, count) in hourly {
            conn.execute(
                "INSERT INTO log_hourly (hour, group_name, category, decision, count) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hour, group, category, decision, count],
            )
            .unwrap();
        }
        let blocked = [
            (HOUR, 1, 1, "gambling", 5),
            (HOUR, 2, 1, "gambling", 2),
            (HOUR, 1, 2, "games", 3),
            (HOUR + 1, 3, 2, "games", 4),
            (HOUR + 1, 4, 3, "social-media", 1),
            (HOUR + 30, 4, 3, "social-media", 50),
        ];
        for (hour, client, name, category, count) in blocked {
            conn.execute(
                "INSERT INTO log_hourly_blocked (hour, client_id, name_id, category, count) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hour, client, name, category, count],
            )
            .unwrap();
        }
        (dir, path)
    }

    fn count(hour: i64, group: Option<&str>, lookups: u64, blocked: u64) -> HourCount {
        HourCount { hour, group: group.map(String::from), lookups, blocked }
    }

    #[test]
    fn hourly_counts_by_group_add_categories_and_decisions() {
        let (_dir, path) = database();
        assert_eq!(
            hourly_by_group(&path, HOUR, HOUR + 2).unwrap(),
            [
                count(HOUR, None, 2, 0),
                count(HOUR, Some("guest"), 20, 0),
                count(HOUR, Some("pupil"), 114, 10),
                count(HOUR + 1, Some("pupil"), 50, 0),
                count(HOUR + 1, Some("staff"), 5, 0),
            ]
        );
        assert_eq!(hourly_by_group(&path, HOUR + 2, HOUR + 31).unwrap(), [count(HOUR + 30, Some("pupil"), 9, 0)]);
        assert!(hourly_by_group(&path, HOUR + 31, HOUR + 100).unwrap().is_empty());
    }

    #[test]
    fn daily_counts_and_blocked_categories() {
        let (_dir, path) = database();
        let day = HOUR / 24;
        let days = daily_by_group(&path, day, day + 3).unwrap();
        // HOUR and HOUR + 1 share a day; HOUR + 30 is the next one.
        let first = HOUR / 24;
        let second = (HOUR + 30) / 24;
        assert_eq!(
            days,
            [
                DayCount { day: first, group: None, lookups: 2, blocked: 0 },
                DayCount { day: first, group: Some("guest".into()), lookups: 20, blocked: 0 },
                DayCount { day: first, group: Some("pupil".into()), lookups: 164, blocked: 10 },
                DayCount { day: first, group: Some("staff".into()), lookups: 5, blocked: 0 },
                DayCount { day: second, group: Some("pupil".into()), lookups: 9, blocked: 0 },
            ]
        );
        assert!(daily_by_group(&path, day + 5, day + 9).unwrap().is_empty());
        assert_eq!(
            top_blocked_categories(&path, HOUR, HOUR + 2, 10).unwrap(),
            [("gambling".to_string(), 7), ("games".to_string(), 3)]
        );
        assert_eq!(top_blocked_categories(&path, HOUR, HOUR + 2, 1).unwrap(), [("gambling".to_string(), 7)]);
        assert!(top_blocked_categories(&path, HOUR + 1, HOUR + 40, 10).unwrap().is_empty());
    }

    #[test]
    fn top_blocked_names_sum_clients_and_hours() {
        let (_dir, path) = database();
        let start = HOUR * HOUR_MS;
        // The window touches HOUR and HOUR + 1 (its end is exclusive).
        let names = top_blocked_names(&path, start + 1_000, start + 2 * HOUR_MS, 10).unwrap();
        assert_eq!(names, [("games.net".to_string(), 7), ("www.bet365.com".to_string(), 7), ("tiktok.com".into(), 1)]);
        assert_eq!(top_blocked_names(&path, start, start + 2 * HOUR_MS, 1).unwrap(), [("games.net".to_string(), 7)]);
        let later = top_blocked_names(&path, start + 2 * HOUR_MS, start + 31 * HOUR_MS, 10).unwrap();
        assert_eq!(later, [("tiktok.com".to_string(), 50)]);
        assert!(top_blocked_names(&path, start, start, 10).unwrap().is_empty());
    }

    #[test]
    fn top_blocked_clients_merge_a_device_seen_on_two_networks() {
        let (_dir, path) = database();
        let start = HOUR * HOUR_MS;
        let clients = top_blocked_clients(&path, start, start + 2 * HOUR_MS, 10).unwrap();
        let device = Some("LIB-PC-04".to_string());
        assert_eq!(
            clients,
            [
                ClientCount {
                    client: "10.0.0.7".into(),
                    device,
                    owner: Some("J. Smith".into()),
                    group: Some("pupil".into()),
                    count: 10
                },
                ClientCount {
                    client: "anon-0123456789ab".into(),
                    device: None,
                    owner: None,
                    group: Some("guest".into()),
                    count: 4
                },
                ClientCount {
                    client: "10.0.2.1".into(),
                    device: None,
                    owner: None,
                    group: Some("staff".into()),
                    count: 1
                },
            ]
        );
        assert_eq!(top_blocked_clients(&path, start, start + 2 * HOUR_MS, 1).unwrap().len(), 1);
    }

    #[test]
    fn top_keeps_the_largest() {
        let sums = HashMap::from([(1, 5), (2, 9), (3, 5), (4, 1)]);
        assert_eq!(top(sums.clone(), 1), [(2, 9)]);
        assert_eq!(top(sums.clone(), 2), [(2, 9), (1, 5), (3, 5)], "ties with the last kept are kept");
        assert_eq!(top(sums.clone(), 10), [(2, 9), (1, 5), (3, 5), (4, 1)]);
        assert!(top(sums, 0).is_empty());
    }
}
