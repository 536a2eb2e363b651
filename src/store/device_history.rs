//! What the dashboard's device page shows of one device: the addresses and
//! groups it was seen with (`log_clients`), its blocked lookups by category
//! and day (from the `log_hourly_blocked` roll-up, never the rows), and its
//! recent lookups (a [`search`](super::search::search) by the same label).
//!
//! A device is named as a search's client filter names it: an IP address
//! (exact), else a device name, owner label or stored client text (names
//! case-insensitive). Its `log_clients` entries are every way its rows name
//! it: one per address, network and group it was seen with.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};
use super::seal;
use super::time::{DAY_MS, HOUR_MS, day_string};

/// One way a device's rows name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// `log_clients.id`.
    pub id: u32,
    /// The address, or its privacy form for private groups.
    pub client: String,
    pub device: Option<String>,
    pub owner: Option<String>,
    pub network: Option<String>,
    pub group: Option<String>,
    /// The UTC day (`2026-11-30`) of the newest row naming it this way.
    pub last_day: String,
}

/// Blocked lookups of one category on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCount {
    /// `2026-11-30`, as the caller's `day_of` names the hour's day.
    pub day: String,
    /// Empty for a block of no category (a custom block).
    pub category: String,
    pub count: u64,
}

/// Every way the rows name the device `label`, newest first (by last day,
/// then client). Empty when the log has never seen it.
pub fn seen(db: &Path, label: &str) -> Result<Vec<Seen>, StoreError> {
    let label = label.trim();
    if label.is_empty() {
        return Ok(Vec::new());
    }
    let conn = schema::open(db, Purpose::Read)?;
    let failed = || StoreError::sqlite(db, "read the query log's clients");
    let columns = "id, client, device, owner, network, group_name, last_day";
    let sql = match label.parse::<IpAddr>() {
        Ok(_) => format!("SELECT {columns} FROM log_clients WHERE client = ?1"),
        // The conditions on '' let SQLite use the partial indexes.
        Err(_) => format!(
            "SELECT {columns} FROM log_clients WHERE device = ?1 AND device != '' \
             UNION SELECT {columns} FROM log_clients WHERE owner = ?1 AND owner != '' \
             UNION SELECT {columns} FROM log_clients WHERE client = ?1"
        ),
    };
    let label = match label.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => label.to_string(),
    };
    let mut statement = conn.prepare(&sql).map_err(failed())?;
    let some = |text: String| (!text.is_empty()).then_some(text);
    let rows = statement
        .query_map([&label], |row| {
            Ok((
                Seen {
                    id: row.get(0)?,
                    client: row.get(1)?,
                    device: some(row.get(2)?),
                    owner: some(row.get(3)?),
                    network: some(row.get(4)?),
                    group: some(row.get(5)?),
                    last_day: String::new(),
                },
                row.get::<_, i64>(6)?,
            ))
        })
        .map_err(failed())?;
    let mut found: Vec<(Seen, i64)> = rows.collect::<Result<_, _>>().map_err(failed())?;
    found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.client.cmp(&b.0.client)).then(a.0.id.cmp(&b.0.id)));
    Ok(found
        .into_iter()
        .map(|(mut seen, day)| {
            seen.last_day = day_string(day);
            seen
        })
        .collect())
}

/// Blocked lookups of the clients `ids` (from [`seen`]) by day and category
/// in the hours `from_ms..to_ms` touches, oldest day first, then category.
/// `day_of` names the day of an instant (UTC ms), so the school's days can
/// be used; [`utc_day`] for UTC.
pub fn blocked_by_day(
    db: &Path,
    ids: &[u32],
    from_ms: i64,
    to_ms: i64,
    day_of: &dyn Fn(i64) -> String,
) -> Result<Vec<DayCount>, StoreError> {
    if ids.is_empty() || to_ms <= from_ms {
        return Ok(Vec::new());
    }
    let conn = schema::open(db, Purpose::Read)?;
    let failed = || StoreError::sqlite(db, "read the blocked-lookup counts");
    // The sealed rows' counts and the fresh rows' (seal::fresh_blocked), in
    // one transaction.
    let tx = conn.unchecked_transaction().map_err(failed())?;
    // The key leads with (hour, client_id): one short range per hour and client.
    let mut statement = tx
        .prepare_cached(
            "SELECT category, sum(count) FROM log_hourly_blocked WHERE hour = ?1 AND client_id = ?2 GROUP BY category",
        )
        .map_err(failed())?;
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let first = from_ms.div_euclid(HOUR_MS);
    let last = (to_ms - 1).div_euclid(HOUR_MS);
    for hour in first..=last {
        let mut day: Option<String> = None;
        for &id in ids {
            let mut rows = statement.query(rusqlite::params![hour, id]).map_err(failed())?;
            while let Some(row) = rows.next().map_err(failed())? {
                let category: String = row.get(0).map_err(failed())?;
                let count: i64 = row.get(1).map_err(failed())?;
                let day = day.get_or_insert_with(|| day_of(hour * HOUR_MS)).clone();
                *counts.entry((day, category)).or_default() += count.max(0) as u64;
            }
        }
    }
    for (hour, fresh) in seal::fresh_blocked(&tx, first..last + 1).map_err(failed())? {
        let day = day_of(hour * HOUR_MS);
        for ((client, _, category), count) in fresh {
            if ids.contains(&client) {
                *counts.entry((day.clone(), category.to_string())).or_default() += count.max(0) as u64;
            }
        }
    }
    Ok(counts.into_iter().map(|((day, category), count)| DayCount { day, category, count }).collect())
}

/// The UTC day of an instant, `2026-11-30`.
pub fn utc_day(time_ms: i64) -> String {
    day_string(time_ms.div_euclid(DAY_MS))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::LogSettings;
    use crate::store::log::import_records;
    use crate::store::record::QueryRecord;
    use crate::store::search::{Search, search};

    const DAY0: i64 = 20_400 * DAY_MS;

    fn record(time_ms: i64, client: &str, group: &str, name: &str, category: Option<&str>) -> QueryRecord {
        QueryRecord {
            time_ms,
            client: client.parse().unwrap(),
            network: Some(Arc::from(format!("{group}-net"))),
            group: Some(Arc::from(group)),
            name: name.to_string(),
            record_type: 1,
            decision: if category.is_some() { "blocked" } else { "allowed" },
            category: category.map(Arc::from),
            list: category.map(|c| Arc::from(format!("{c}-list"))),
            response_code: if category.is_some() { 3 } else { 0 },
            upstream_ms: None,
            cache_hit: false,
            stage: None,
            reason: None,
        }
    }

    fn school() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("log.db");
        let mut records = Vec::new();
        for day in 0..3 {
            let at = DAY0 + day * DAY_MS + 9 * HOUR_MS;
            for n in 0..(day + 1) {
                records.push(record(at + n * 1000, "10.0.0.5", "pupil", "bet.example", Some("gambling")));
            }
            records.push(record(at + 5000, "10.0.0.5", "pupil", "chat.example", Some("chat")));
            records.push(record(at + 6000, "10.0.0.5", "pupil", "ok.example", None));
            records.push(record(at + 7000, "10.0.1.9", "staff", "bet.example", Some("gambling")));
            records.push(record(at + 8000, "10.0.1.9", "staff", "ok.example", None));
        }
        import_records(&db, records, &LogSettings::default()).unwrap();
        (dir, db)
    }

    #[test]
    fn seen_by_address_and_unknown() {
        let (_dir, db) = school();
        let seen = seen(&db, "10.0.0.5").unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].client, "10.0.0.5");
        assert_eq!(seen[0].group.as_deref(), Some("pupil"));
        assert_eq!(seen[0].network.as_deref(), Some("pupil-net"));
        assert_eq!(seen[0].last_day, utc_day(DAY0 + 2 * DAY_MS));
        assert!(super::seen(&db, "no-such-device").unwrap().is_empty());
        assert!(super::seen(&db, "  ").unwrap().is_empty());
    }

    #[test]
    fn blocked_counts_by_day_and_category() {
        let (_dir, db) = school();
        let ids: Vec<u32> = seen(&db, "10.0.0.5").unwrap().iter().map(|s| s.id).collect();
        let counts = blocked_by_day(&db, &ids, DAY0, DAY0 + 3 * DAY_MS, &utc_day).unwrap();
        let got: Vec<(String, &str, u64)> =
            counts.iter().map(|c| (c.day.clone(), c.category.as_str(), c.count)).collect();
        let day = |n: i64| utc_day(DAY0 + n * DAY_MS);
        assert_eq!(
            got,
            vec![
                (day(0), "chat", 1),
                (day(0), "gambling", 1),
                (day(1), "chat", 1),
                (day(1), "gambling", 2),
                (day(2), "chat", 1),
                (day(2), "gambling", 3),
            ]
        );
        // A window of one day; and no ids, nothing.
        let one = blocked_by_day(&db, &ids, DAY0 + DAY_MS, DAY0 + 2 * DAY_MS, &utc_day).unwrap();
        assert_eq!(one.iter().map(|c| c.count).sum::<u64>(), 3);
        assert!(blocked_by_day(&db, &[], DAY0, DAY0 + DAY_MS, &utc_day).unwrap().is_empty());
    }

    #[test]
    fn search_by_group() {
        let (_dir, db) = school();
        let staff = search(&db, &Search { group: Some("staff".into()), limit: 1000, ..Search::default() }).unwrap();
        assert_eq!(staff.len(), 6);
        assert!(staff.iter().all(|row| row.group.as_deref() == Some("staff")));
        let pupil_blocked = search(
            &db,
            &Search { group: Some("pupil".into()), decision: Some("blocked".into()), limit: 1000, ..Search::default() },
        )
        .unwrap();
        assert_eq!(pupil_blocked.len(), 9);
        // A client of another group matches nothing.
        let none =
            search(&db, &Search { group: Some("staff".into()), client: Some("10.0.0.5".into()), ..Search::default() })
                .unwrap();
        assert!(none.is_empty());
        assert!(search(&db, &Search { group: Some("nobody".into()), ..Search::default() }).unwrap().is_empty());
    }
}
