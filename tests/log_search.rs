//! Searching the query log's blocks: every kind of filter, time windows and
//! paging, across sealed hours (per-client blocks found through postings)
//! and fresh hours (mixed blocks decoded whole), each result checked
//! against a brute-force filter of `read::rows_between`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hedgerow::store::block::{self, BlockRow};
use hedgerow::store::read::{count_rows, rows_between};
use hedgerow::store::schema::MIGRATIONS;
use hedgerow::store::search::{LogRow, Search, search, tail};
use hedgerow::store::time::{DAY_MS, day_number, parse_utc};
use rusqlite::{Connection, params};

const HOUR_MS: i64 = 3_600_000;

/// `search`'s answer, by brute force over every row.
fn expected(all: &[LogRow], query: &Search) -> Vec<LogRow> {
    fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|value| !value.is_empty())
    }
    let mut rows: Vec<LogRow> = all
        .iter()
        .filter(|row| match text(&query.client) {
            None => true,
            Some(client) => match client.parse::<IpAddr>() {
                Ok(ip) => row.client == ip.to_canonical().to_string(),
                Err(_) => {
                    row.client == client
                        || row.device.as_deref().is_some_and(|device| device.eq_ignore_ascii_case(client))
                        || row.owner.as_deref().is_some_and(|owner| owner.eq_ignore_ascii_case(client))
                }
            },
        })
        .filter(|row| match text(&query.name) {
            None => true,
            Some(name) => {
                let name = name.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
                row.name == name || row.name.ends_with(&format!(".{name}"))
            }
        })
        .filter(|row| text(&query.category).is_none_or(|category| row.category.as_deref() == Some(category)))
        .filter(|row| text(&query.decision).is_none_or(|decision| row.decision == decision))
        .filter(|row| query.since_ms.is_none_or(|since| row.time_ms >= since))
        .filter(|row| query.until_ms.is_none_or(|until| row.time_ms < until))
        .filter(|row| query.before_id.is_none_or(|before| row.id < before))
        .cloned()
        .collect();
    rows.sort_by(|a, b| b.id.cmp(&a.id));
    rows.truncate(query.limit);
    rows
}

/// Every page of `query`, following `before_id` until a page comes back
/// empty; the pages must have no row twice and no gap.
fn all_pages(db: &Path, query: &Search) -> Vec<LogRow> {
    let mut rows: Vec<LogRow> = Vec::new();
    loop {
        let page = search(db, &Search { before_id: rows.last().map(|row| row.id), ..query.clone() }).unwrap();
        assert!(page.len() <= query.limit);
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

// A database built by hand, as schema 6 lays it out ---------------------------

/// (client, device, owner, network, group)
const CLIENTS: [(&str, &str, &str, &str, &str); 6] = [
    ("10.0.0.7", "LIB-PC-04", "Year 9: J. Smith", "pupil-wifi", "pupil"),
    ("10.0.0.8", "lib-pc-05", "", "pupil-wifi", "pupil"),
    // The same device on another address.
    ("10.0.1.9", "LIB-PC-04", "Year 9: J. Smith", "pupil-wifi", "pupil"),
    ("anon-0123456789ab", "", "", "guest-wifi", "guest"),
    ("192.168.3.0/24", "", "", "guest-wifi", "guest"),
    ("10.0.2.1", "STAFF-LAPTOP-1", "Mrs Jones", "staff-lan", "staff"),
];

const NAMES: [&str; 10] = [
    "example.com",
    "www.example.com",
    "a.b.example.com",
    "example.co",
    "badexample.com",
    "games.net",
    "www.games.net",
    "www.bet365.com",
    "www.google.com",
    "use-application-dns.net",
];

/// (decision, category, list, stage, reason, response code)
const OUTCOMES: [(&str, &str, &str, &str, &str, u16); 8] = [
    ("allowed", "", "", "upstream", "", 0),
    ("allowed", "social-media", "hedgerow-social", "blocklist", "allow override", 0),
    ("blocked", "games", "hedgerow-games", "blocklist", "in games", 3),
    ("blocked", "gambling", "hedgerow-gambling", "blocklist", "in gambling", 3),
    ("blocked", "games", "ut1-games", "inspection", "CNAME in games", 3),
    ("safesearch", "", "", "safesearch", "forced", 0),
    ("bypass", "", "", "bypass", "canary", 3),
    ("refused", "", "", "access", "outside", 5),
];

/// A tiny xorshift: the same "random" rows on every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Three days of rows from the first hour of `start_day`: the last
/// `fresh_hours` hours unsealed, the others sealed in small chunks (so a
/// client's hour spans several blocks), and late rows of one sealed hour
/// still fresh.
struct Built {
    _dir: tempfile::TempDir,
    db: PathBuf,
    start_ms: i64,
    rows: usize,
}

fn build(rows: usize, fresh_hours: i64) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let mut conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for migration in MIGRATIONS {
        conn.execute_batch(migration.sql).unwrap();
    }
    conn.pragma_update(None, "user_version", MIGRATIONS.len() as u32).unwrap();

    let start_ms = parse_utc("2026-11-02T00:00:00Z").unwrap();
    let hours = 72;
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut times: Vec<i64> = (0..rows).map(|_| start_ms + random.below((hours * HOUR_MS) as u64) as i64).collect();
    times.sort_unstable();
    let mut last_id = 0;
    let all: Vec<BlockRow> = times
        .into_iter()
        .map(|time_ms| {
            last_id = block::row_id(time_ms, last_id);
            // Skewed: the first names, clients and outcomes most often.
            let skewed = |random: &mut Random, n: u64| {
                let top = random.below(n) + 1;
                random.below(top) as u32
            };
            let outcome = skewed(&mut random, OUTCOMES.len() as u64) + 1;
            BlockRow {
                id: last_id,
                time_ms,
                client: skewed(&mut random, CLIENTS.len() as u64) + 1,
                name: skewed(&mut random, NAMES.len() as u64) + 1,
                record_type: [1, 28, 65][random.below(3) as usize],
                outcome,
                cache_hit: random.below(2) == 0,
                upstream_ms: (random.below(3) == 0).then(|| random.below(200) as u32),
            }
        })
        .collect();
    // Every third row of a late-evening hour on day 1 arrived late: fresh.
    let late_hour = start_ms / HOUR_MS + 22;
    let fresh_from = start_ms / HOUR_MS + hours - fresh_hours;

    let tx = conn.transaction().unwrap();
    let last_day = |pick: &dyn Fn(&BlockRow) -> u32, id: u32| {
        all.iter().filter(|row| pick(row) == id).map(|row| day_number(row.time_ms)).max().unwrap_or(0)
    };
    for (index, (client, device, owner, network, group)) in CLIENTS.iter().enumerate() {
        let id = index as u32 + 1;
        tx.execute(
            "INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, client, device, owner, network, group, last_day(&|row| row.client, id)],
        )
        .unwrap();
    }
    for (index, name) in NAMES.iter().enumerate() {
        let id = index as u32 + 1;
        let rname = name.rsplit('.').collect::<Vec<_>>().join(".");
        tx.execute(
            "INSERT INTO log_names (id, rname, last_day) VALUES (?1, ?2, ?3)",
            params![id, rname, last_day(&|row| row.name, id)],
        )
        .unwrap();
    }
    for (index, (decision, category, list, stage, reason, rcode)) in OUTCOMES.iter().enumerate() {
        tx.execute(
            "INSERT INTO log_outcomes (id, decision, category, list, stage, reason, response_code) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![index as u32 + 1, decision, category, list, stage, reason, rcode],
        )
        .unwrap();
    }

    let mut by_hour: BTreeMap<i64, Vec<BlockRow>> = BTreeMap::new();
    for (index, row) in all.iter().enumerate() {
        let hour = row.time_ms.div_euclid(HOUR_MS);
        let fresh = hour >= fresh_from || (hour == late_hour && index % 3 == 0);
        by_hour.entry(if fresh { -hour } else { hour }).or_default().push(*row);
    }
    for (key, mut rows) in by_hour {
        if key < 0 {
            // Fresh: blocks of up to 40 rows in arrival order, many clients each.
            for chunk in rows.chunks(40) {
                let mut data = Vec::new();
                block::encode(chunk, true, &mut data);
                tx.execute(
                    "INSERT INTO log_fresh (hour, last_row_id, data) VALUES (?1, ?2, ?3)",
                    params![-key, chunk.iter().map(|row| row.id).max().unwrap(), data],
                )
                .unwrap();
            }
            continue;
        }
        let hour = key;
        rows.sort_by_key(|row| (row.client, row.id));
        let mut names = BTreeSet::new();
        let mut outcomes = BTreeSet::new();
        for client_rows in rows.chunk_by(|a, b| a.client == b.client) {
            let client = client_rows[0].client;
            for (chunk, block_rows) in client_rows.chunks(7).enumerate() {
                let mut data = Vec::new();
                block::encode(block_rows, false, &mut data);
                tx.execute(
                    "INSERT INTO log_sealed (key, rows, data) VALUES (?1, ?2, ?3)",
                    params![block::sealed_key(hour, client, chunk as u32), block_rows.len() as i64, data],
                )
                .unwrap();
            }
            for row in client_rows {
                names.insert((row.name, client));
                let (decision, category, ..) = OUTCOMES[row.outcome as usize - 1];
                if decision != "allowed" || !category.is_empty() {
                    outcomes.insert((row.outcome, client));
                }
            }
        }
        for (name, client) in names {
            tx.execute(
                "INSERT INTO log_name_postings (hour, name_id, client_id) VALUES (?1, ?2, ?3)",
                params![hour, name, client],
            )
            .unwrap();
        }
        for (outcome, client) in outcomes {
            tx.execute(
                "INSERT INTO log_outcome_postings (hour, outcome_id, client_id) VALUES (?1, ?2, ?3)",
                params![hour, outcome, client],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();

    Built { _dir: dir, db, start_ms, rows }
}

/// The windows searched: none, an hour, a day, the fresh hours and the
/// sealed hour with late rows, and a stretch over the sealed/fresh edge.
fn windows(start_ms: i64) -> Vec<(Option<i64>, Option<i64>)> {
    vec![
        (None, None),
        (Some(start_ms + 30 * HOUR_MS), Some(start_ms + 31 * HOUR_MS)),
        (Some(start_ms + DAY_MS), Some(start_ms + 2 * DAY_MS)),
        (Some(start_ms + 22 * HOUR_MS + 1_234), Some(start_ms + 23 * HOUR_MS)),
        (Some(start_ms + 66 * HOUR_MS + 999), None),
        (None, Some(start_ms + 12 * HOUR_MS)),
    ]
}

const CLIENT_FILTERS: [Option<&str>; 8] = [
    None,
    Some("10.0.0.7"),
    Some("lib-pc-04"),
    Some("year 9: j. smith"),
    Some("anon-0123456789ab"),
    Some("192.168.3.0/24"),
    Some("10.9.9.9"),
    Some("nobody"),
];
const NAME_FILTERS: [Option<&str>; 6] =
    [None, Some("example.com"), Some("*.example.com"), Some("WWW.Games.NET."), Some("google.com"), Some("nothing.org")];
const CATEGORY_FILTERS: [Option<&str>; 4] = [None, Some("games"), Some("gambling"), Some("social-media")];
const DECISION_FILTERS: [Option<&str>; 5] =
    [None, Some("allowed"), Some("blocked"), Some("safesearch"), Some("refused")];

#[test]
fn every_filter_and_window_finds_what_brute_force_finds() {
    let built = build(3_000, 3);
    let all = rows_between(&built.db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(all.len(), built.rows);
    assert_eq!(count_rows(&built.db).unwrap(), built.rows as u64);
    let mut searched = 0;
    let mut nonempty = 0;
    for (since_ms, until_ms) in windows(built.start_ms) {
        for client in CLIENT_FILTERS {
            for name in NAME_FILTERS {
                for category in CATEGORY_FILTERS {
                    for decision in DECISION_FILTERS {
                        // Keep the product small: at most two of the four filters.
                        let given = [client.is_some(), name.is_some(), category.is_some(), decision.is_some()];
                        if given.iter().filter(|&&given| given).count() > 2 {
                            continue;
                        }
                        let query = Search {
                            client: client.map(String::from),
                            name: name.map(String::from),
                            category: category.map(String::from),
                            decision: decision.map(String::from),
                            since_ms,
                            until_ms,
                            limit: 25,
                            before_id: None,
                        };
                        let found = search(&built.db, &query).unwrap();
                        assert_eq!(found, expected(&all, &query), "{query:?}");
                        searched += 1;
                        nonempty += usize::from(!found.is_empty());
                    }
                }
            }
        }
    }
    assert!(nonempty > searched / 3, "{nonempty} of {searched} searches found rows: the data is too thin to test");
}

#[test]
fn pages_have_no_duplicates_and_no_gaps_across_sealed_and_fresh_hours() {
    let built = build(2_000, 4);
    let all = rows_between(&built.db, i64::MIN, i64::MAX).unwrap();
    let queries = [
        Search { limit: 97, ..Search::default() },
        Search { client: Some("LIB-PC-04".into()), limit: 13, ..Search::default() },
        Search { name: Some("example.com".into()), limit: 11, ..Search::default() },
        Search { category: Some("games".into()), decision: Some("blocked".into()), limit: 5, ..Search::default() },
        Search { decision: Some("allowed".into()), limit: 50, ..Search::default() },
        Search {
            client: Some("10.0.0.8".into()),
            since_ms: Some(built.start_ms + 20 * HOUR_MS),
            until_ms: Some(built.start_ms + 70 * HOUR_MS),
            limit: 3,
            ..Search::default()
        },
    ];
    for query in queries {
        let paged = all_pages(&built.db, &query);
        let whole = expected(&all, &Search { limit: usize::MAX, ..query.clone() });
        assert!(whole.len() > query.limit, "{query:?}: too few rows to page");
        assert_eq!(paged, whole, "{query:?}");
    }
}

#[test]
fn a_page_after_an_id_that_is_gone_still_continues_by_id() {
    let built = build(500, 2);
    let all = rows_between(&built.db, i64::MIN, i64::MAX).unwrap();
    // An id between two rows (as after retention removed the row shown last).
    let middle = &all[all.len() / 2];
    let query = Search { before_id: Some(middle.id - 1), limit: 10, ..Search::default() };
    let page = search(&built.db, &query).unwrap();
    assert_eq!(page, expected(&all, &query));
    assert!(page.iter().all(|row| row.id < middle.id - 1));
}

#[test]
fn tail_gives_the_newest_rows_oldest_first_and_follows() {
    let built = build(1_000, 2);
    let all = rows_between(&built.db, i64::MIN, i64::MAX).unwrap();
    let last = tail(&built.db, 0, 5).unwrap();
    assert_eq!(last, all[all.len() - 5..].to_vec());
    // A follower that printed up to a row in a sealed hour gets the rest.
    let from = all.len() - 300;
    assert_eq!(tail(&built.db, all[from].id, 10_000).unwrap(), all[from + 1..].to_vec());
    // More arrived than the limit: the newest ones.
    assert_eq!(tail(&built.db, all[from].id, 7).unwrap(), all[all.len() - 7..].to_vec());
    assert!(tail(&built.db, all.last().unwrap().id, 10).unwrap().is_empty());
    assert_eq!(tail(&built.db, 0, usize::MAX).unwrap(), all);
}
