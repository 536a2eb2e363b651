//! Searching the query log's blocks: every kind of filter, time windows and
//! paging, across sealed hours (per-client blocks found through postings)
//! and fresh hours (mixed blocks decoded whole), each result checked
//! against a brute-force filter of `read::rows_between`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hedgerow::store::block::{self, BlockRow};
use hedgerow::store::devices::{Device, upsert_device};
use hedgerow::store::read::{count_rows, rows_between};
use hedgerow::store::record::QueryRecord;
use hedgerow::store::schema::MIGRATIONS;
use hedgerow::store::search::{LogRow, Search, export, search, tail};
use hedgerow::store::time::{DAY_MS, day_number, now_ms, parse_utc};
use hedgerow::store::{LogSettings, Privacy, QueryLog};
use rusqlite::{Connection, params};

const HOUR_MS: i64 = 3_600_000;

/// `search`'s answer, by brute force over every row: the matching rows,
/// newest first by time, then id; after `before_id`, below that row if it
/// is one of them, else below its id's time.
fn expected(all: &[LogRow], query: &Search) -> Vec<LogRow> {
    let mut rows = matching(all, query);
    rows.sort_by_key(|row| std::cmp::Reverse((row.time_ms, row.id)));
    if let Some(before) = query.before_id {
        let id_time = block::id_time_ms(before);
        let position = rows.iter().find(|row| row.id == before).map_or((id_time, before), |row| (row.time_ms, row.id));
        rows.retain(|row| (row.time_ms, row.id) < position);
    }
    rows.truncate(query.limit);
    rows
}

/// The rows matching `query`'s filters and window, in `all`'s order.
fn matching(all: &[LogRow], query: &Search) -> Vec<LogRow> {
    fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|value| !value.is_empty())
    }
    all.iter()
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
        .cloned()
        .collect()
}

/// Every page of `query`, following `before_id` until a page comes back
/// empty; the pages must have no row twice and no gap.
fn all_pages(db: &Path, query: &Search, expected_rows: usize) -> Vec<LogRow> {
    let mut rows: Vec<LogRow> = Vec::new();
    for _ in 0..=expected_rows / query.limit + 1 {
        let page = search(db, &Search { before_id: rows.last().map(|row| row.id), ..query.clone() }).unwrap();
        assert!(page.len() <= query.limit);
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
    panic!("{query:?}: more pages than rows: paging went round in a loop");
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
    build_over(rows, fresh_hours, 72)
}

/// `rows` rows spread over `hours` hours, the last `fresh_hours` of them fresh.
fn build_over(rows: usize, fresh_hours: i64, hours: i64) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    let mut conn = Connection::open(&db).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    for migration in MIGRATIONS {
        conn.execute_batch(migration.sql).unwrap();
    }
    conn.pragma_update(None, "user_version", MIGRATIONS.len() as u32).unwrap();

    let start_ms = parse_utc("2026-11-02T00:00:00Z").unwrap();
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
                            group: None,
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
        let whole = expected(&all, &Search { limit: usize::MAX, ..query.clone() });
        let paged = all_pages(&built.db, &query, whole.len());
        assert!(whole.len() > query.limit, "{query:?}: too few rows to page");
        assert_eq!(paged, whole, "{query:?}");
        // An export (the CSV's) reads each hour once and gives the same rows
        // in batches of at most `limit`.
        let mut exported = Vec::new();
        export(&built.db, &query, |batch| {
            assert!(!batch.is_empty() && batch.len() <= query.limit, "{query:?}: a batch of {}", batch.len());
            exported.extend(batch);
            true
        })
        .unwrap();
        assert_eq!(exported, whole, "{query:?}");
        // It stops when told to.
        let mut batches = 0;
        export(&built.db, &query, |_| {
            batches += 1;
            false
        })
        .unwrap();
        assert_eq!(batches, 1);
    }
}

/// Hours of 12,000 rows, sealed and fresh: a page keeps only the newest rows
/// it needs while it reads an hour (`read::keep_newest`), and still finds
/// exactly what brute force finds, on the first page and every later one.
#[test]
fn dense_hours_page_as_brute_force_does() {
    let built = build_over(36_000, 1, 3);
    let all = rows_between(&built.db, i64::MIN, i64::MAX).unwrap();
    for query in [
        Search { limit: 50, ..Search::default() },
        Search { decision: Some("blocked".into()), limit: 50, ..Search::default() },
        Search { limit: 5_000, ..Search::default() },
    ] {
        assert_eq!(search(&built.db, &query).unwrap(), expected(&all, &query), "{query:?}");
    }
    let query = Search { limit: 3_000, ..Search::default() };
    let whole = expected(&all, &Search { limit: usize::MAX, ..query.clone() });
    assert_eq!(all_pages(&built.db, &query, built.rows), whole);
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

// Rows written through QueryLog -----------------------------------------------

/// A decision with its category and list, as the DNS path hands them over.
const DECISIONS_WRITTEN: [(&str, Option<&str>, u16); 6] = [
    ("allowed", None, 0),
    ("blocked", Some("games"), 3),
    ("allowed", Some("social-media"), 0),
    ("blocked", Some("gambling"), 3),
    ("safesearch", None, 0),
    ("bypass", None, 3),
];

/// (address, group): pupils with and without a device name, staff, and
/// guests (hashed: their client text changes by day).
const ADDRESSES: [(&str, &str); 6] = [
    ("10.1.0.5", "pupil"),
    ("10.1.0.6", "pupil"),
    ("10.1.0.7", "pupil"),
    ("::ffff:10.2.0.9", "staff"),
    ("10.9.0.20", "guest"),
    ("10.9.0.21", "guest"),
];

fn record(random: &mut Random, time_ms: i64) -> QueryRecord {
    let skewed = |random: &mut Random, n: usize| {
        let top = random.below(n as u64) + 1;
        random.below(top) as usize
    };
    let (client, group) = ADDRESSES[skewed(random, ADDRESSES.len())];
    let (decision, category, response_code) = DECISIONS_WRITTEN[skewed(random, DECISIONS_WRITTEN.len())];
    QueryRecord {
        time_ms,
        client: client.parse().unwrap(),
        network: Some(Arc::from(format!("{group}-vlan"))),
        group: Some(Arc::from(group)),
        name: NAMES[skewed(random, NAMES.len())].to_string(),
        record_type: [1, 28, 65][random.below(3) as usize],
        decision,
        category: category.map(Arc::from),
        list: category.map(|category| Arc::from(format!("hedgerow-{category}"))),
        response_code,
        upstream_ms: (random.below(3) == 0).then(|| random.below(300) as u32),
        cache_hit: random.below(2) == 0,
        stage: Some(if category.is_some() { "blocklist" } else { "upstream" }),
        reason: category.map(|category| Cow::Owned(format!("in {category}"))),
    }
}

fn device(ip: &str, name: &str, owner: &str) -> Device {
    Device {
        ip: Some(ip.parse().unwrap()),
        mac: None,
        name: name.into(),
        owner: Some(owner.into()),
        group: None,
        source: "manual".into(),
    }
}

#[test]
fn searches_over_rows_the_writer_wrote_match_brute_force() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    upsert_device(&db, &device("10.1.0.5", "LIB-PC-01", "Library")).unwrap();
    upsert_device(&db, &device("10.1.0.6", "Y7-iPad-12", "Jane Smith")).unwrap();
    let settings = LogSettings { guest_privacy: Privacy::Hash, batch_max: 300, ..LogSettings::default() };
    let log = QueryLog::open(&db, settings).unwrap();
    let now = now_ms();
    let this_hour = now.div_euclid(HOUR_MS) * HOUR_MS;
    let start = this_hour - 3 * DAY_MS;
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    // Three days in arrival order (sealed as the hours end)...
    let mut times: Vec<i64> = (0..4_000).map(|_| start + random.below((this_hour - start) as u64) as i64).collect();
    times.sort_unstable();
    let mut written = 0;
    for time in times {
        log.record(record(&mut random, time));
        written += 1;
    }
    log.flush();
    // ...rows arriving late for an hour already sealed (sealed again, in
    // chunks after the first ones)...
    let late_hour = this_hour - 30 * HOUR_MS;
    for n in 0..60 {
        log.record(record(&mut random, late_hour + n * 50_000));
        written += 1;
    }
    log.flush();
    // ...and the current hour, not over, so still fresh.
    for n in 0..300 {
        log.record(record(&mut random, this_hour + (now - this_hour) * n / 300));
        written += 1;
    }
    log.close();

    let conn = Connection::open(&db).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
    assert!(count("SELECT count(*) FROM log_sealed") > 0);
    assert!(count("SELECT count(DISTINCT hour) FROM log_name_postings") > 48, "the past hours are sealed");
    if (now_ms() - 60_000).div_euclid(HOUR_MS) < now.div_euclid(HOUR_MS) {
        assert!(count("SELECT count(*) FROM log_fresh") > 0, "the current hour is fresh");
    }

    let all = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(all.len(), written);
    assert_eq!(count_rows(&db).unwrap(), written as u64);
    // Tail follows arrival (ids): the late rows come after the rows of the
    // hours before them.
    let mut by_id = all.clone();
    by_id.sort_by_key(|row| row.id);
    assert_ne!(by_id, all, "some rows arrived late");
    assert_eq!(tail(&db, 0, usize::MAX).unwrap(), by_id);
    assert_eq!(tail(&db, by_id[by_id.len() - 200].id, 1_000).unwrap(), by_id[by_id.len() - 199..].to_vec());
    let guest = all.iter().find(|row| row.client.starts_with("anon-")).expect("hashed guests").client.clone();

    let windows = [
        (None, None),
        (Some(this_hour - HOUR_MS), Some(this_hour)),
        (Some(this_hour - DAY_MS), None),
        (Some(late_hour), Some(late_hour + HOUR_MS)),
        (Some(start + 5 * HOUR_MS + 17), Some(this_hour - 40 * HOUR_MS)),
    ];
    let clients = [None, Some("10.1.0.5"), Some("10.2.0.9"), Some("y7-ipad-12"), Some("LIBRARY"), Some(guest.as_str())];
    let names = [None, Some("example.com"), Some("www.games.net"), Some("games.net")];
    let outcomes = [(None, None), (Some("games"), None), (None, Some("blocked")), (Some("games"), Some("blocked"))];
    let outcomes = outcomes.into_iter().chain([(Some("social-media"), Some("allowed")), (None, Some("allowed"))]);
    let outcomes: Vec<_> = outcomes.collect();
    let mut nonempty = 0;
    for (since_ms, until_ms) in windows {
        for client in clients {
            for name in names {
                for (category, decision) in outcomes.iter().copied() {
                    let query = Search {
                        client: client.map(String::from),
                        name: name.map(String::from),
                        category: category.map(String::from),
                        decision: decision.map(String::from),
                        group: None,
                        since_ms,
                        until_ms,
                        limit: 20,
                        before_id: None,
                    };
                    let found = search(&db, &query).unwrap();
                    assert_eq!(found, expected(&all, &query), "{query:?}");
                    nonempty += usize::from(!found.is_empty());
                }
            }
        }
    }
    assert!(nonempty > 200, "only {nonempty} searches found rows");

    for query in [
        Search { limit: 61, ..Search::default() },
        Search { client: Some("LIB-PC-01".into()), limit: 17, ..Search::default() },
        Search { name: Some("games.net".into()), limit: 9, ..Search::default() },
        Search { category: Some("gambling".into()), limit: 4, ..Search::default() },
        Search { decision: Some("allowed".into()), since_ms: Some(late_hour), limit: 40, ..Search::default() },
        // One row a page: every late row ends a page once.
        Search {
            since_ms: Some(late_hour - HOUR_MS),
            until_ms: Some(late_hour + HOUR_MS),
            limit: 1,
            ..Search::default()
        },
    ] {
        let whole = expected(&all, &Search { limit: usize::MAX, ..query.clone() });
        assert!(whole.len() > query.limit, "{query:?}: too few rows to page");
        assert_eq!(all_pages(&db, &query, whole.len()), whole, "{query:?}");
    }
}

/// A name with more subdomains than are worth one index seek each: the
/// hour's postings are scanned instead, with the same answer.
#[test]
fn a_name_with_hundreds_of_subdomains_is_found_through_the_postings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hedgerow.db");
    let log = QueryLog::open(&db, LogSettings { batch_max: 500, ..LogSettings::default() }).unwrap();
    let this_hour = now_ms().div_euclid(HOUR_MS) * HOUR_MS;
    let mut random = Random(0x0123_4567_89ab_cdef);
    let mut written = 0;
    for n in 0..3_000i64 {
        let time_ms = this_hour - 5 * HOUR_MS + n * (5 * HOUR_MS) / 3_000;
        let mut row = record(&mut random, time_ms);
        row.name = match n % 4 {
            0 | 1 => format!("host{}.cdn.example.net", n % 701),
            // Neighbours of the range that must not match.
            2 => ["example-cdn.net", "notexample.net", "example.network"][(n % 3) as usize].to_string(),
            _ => row.name,
        };
        log.record(row);
        written += 1;
    }
    log.close();

    let all = rows_between(&db, i64::MIN, i64::MAX).unwrap();
    assert_eq!(all.len(), written);
    let conn = Connection::open(&db).unwrap();
    let names: i64 = conn
        .query_row(
            "SELECT count(*) FROM log_names WHERE rname >= 'net.example.' AND rname < 'net.example/'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(names > 500, "{names} names under example.net: too few to take the scanning path");
    for query in [
        Search { name: Some("example.net".into()), limit: 30, ..Search::default() },
        Search { name: Some("cdn.example.net".into()), client: Some("10.1.0.6".into()), ..Search::default() },
        Search {
            name: Some("example.net".into()),
            decision: Some("blocked".into()),
            since_ms: Some(this_hour - 3 * HOUR_MS),
            until_ms: Some(this_hour - HOUR_MS),
            ..Search::default()
        },
    ] {
        let found = search(&db, &query).unwrap();
        assert!(!found.is_empty(), "{query:?}");
        assert_eq!(found, expected(&all, &query), "{query:?}");
    }
    let query = Search { name: Some("example.net".into()), limit: 37, ..Search::default() };
    let whole = expected(&all, &Search { limit: usize::MAX, ..query.clone() });
    assert_eq!(all_pages(&db, &query, whole.len()), whole);
}
