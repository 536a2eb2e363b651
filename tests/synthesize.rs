//! `hedgerow synthesize`: the synthetic school written into a real database
//! file by the real binary, read back with SQL and the block decoder.

use std::path::Path;
use std::process::{Command, Output};

use hedgerow::store::block;
use rusqlite::Connection;

fn synthesize(db: &Path, extra: &[&str]) -> Output {
    synthesize_seed(db, "4", extra)
}

fn synthesize_seed(db: &Path, seed: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hedgerow"))
        .arg("synthesize")
        .arg("--database")
        .arg(db)
        .args(["--days", "3", "--rows-per-day", "30000", "--devices", "150", "--seed", seed])
        .args(extra)
        .output()
        .expect("run hedgerow")
}

fn rows_written(output: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find_map(|l| l.strip_prefix("rows written: ")).expect("a rows line");
    line.trim().parse().unwrap()
}

/// Every sealed block, decoded, with the key's client.
fn decoded(conn: &Connection) -> Vec<block::BlockRow> {
    let mut statement = conn.prepare("SELECT key, rows, data FROM log_sealed ORDER BY key").unwrap();
    let mut rows = Vec::new();
    let blocks =
        statement.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?))).unwrap();
    for found in blocks {
        let (key, count, data) = found.unwrap();
        let (hour, client, _) = block::split_sealed_key(key);
        let before = rows.len();
        block::decode(&data, client, &mut rows).unwrap();
        assert_eq!(rows.len() - before, count as usize);
        assert!(rows[before..].iter().all(|r| r.time_ms.div_euclid(3_600_000) == hour));
    }
    rows
}

fn single(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn writes_a_school_whose_rows_counts_and_dictionaries_agree() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("school.db");
    let output = synthesize(&db, &[]);
    let written = rows_written(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("bytes on disk: ") && stdout.contains("rows/s"), "{stdout}");

    let conn = Connection::open(&db).unwrap();
    let rows = decoded(&conn);
    assert_eq!(rows.len() as u64, written);
    assert!(written > 30_000, "three days hold a school day or more: {written}");
    let ids: std::collections::HashSet<i64> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len(), "row ids are unique");
    // The hourly roll-up counts every row once.
    assert_eq!(single(&conn, "SELECT sum(count) FROM log_hourly") as u64, written);
    assert_eq!(single(&conn, "SELECT count(*) FROM log_fresh"), 0, "every hour is sealed");
    assert!(single(&conn, "SELECT sum(count) FROM log_hourly WHERE decision = 'blocked'") > 0);
    assert_eq!(
        single(&conn, "SELECT sum(count) FROM log_hourly WHERE decision = 'blocked'"),
        single(&conn, "SELECT sum(count) FROM log_hourly_blocked")
    );
    // Every id a row uses is in its dictionary.
    let known = |table: &str, id: u32| single(&conn, &format!("SELECT count(*) FROM {table} WHERE id = {id}")) == 1;
    let names: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.name).collect();
    assert_eq!(single(&conn, "SELECT count(*) FROM log_names") as usize, names.len(), "only used names");
    assert!(names.iter().take(200).all(|&id| known("log_names", id)));
    let outcomes: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.outcome).collect();
    assert!(outcomes.iter().all(|&id| known("log_outcomes", id)));
    assert_eq!(
        single(
            &conn,
            "SELECT count(*) FROM log_name_postings p LEFT JOIN log_names n ON n.id = p.name_id WHERE n.id IS NULL"
        ),
        0
    );
    // Three networks; pupils and staff named in the device table, guests hashed.
    for (group, network) in [("pupil", "pupils"), ("staff", "staff"), ("guest", "guests")] {
        let sql = format!("SELECT count(*) FROM log_clients WHERE group_name = '{group}' AND network = '{network}'");
        assert!(single(&conn, &sql) > 0, "{group}");
    }
    assert_eq!(
        single(&conn, "SELECT count(*) FROM log_clients WHERE group_name = 'guest' AND client NOT LIKE 'anon-%'"),
        0
    );
    assert_eq!(single(&conn, "SELECT count(*) FROM devices"), 150 - 15, "pupils and staff, not guests");
    assert_eq!(
        single(
            &conn,
            "SELECT count(*) FROM log_clients c JOIN devices d ON d.ip = c.client AND d.name = c.device AND d.owner = c.owner"
        ),
        single(&conn, "SELECT count(*) FROM log_clients WHERE group_name != 'guest'")
    );
    for decision in ["blocked", "safesearch", "bypass"] {
        let sql = format!("SELECT count(*) FROM log_outcomes WHERE decision = '{decision}'");
        assert!(single(&conn, &sql) > 0, "{decision} rows");
    }
    // The roll-ups of the complete days (all of them) hold every row.
    assert_eq!(single(&conn, "SELECT count(*) FROM rollup_days"), 3);
    assert_eq!(single(&conn, "SELECT sum(count) FROM daily_counts") as u64, written);
}

#[test]
fn refuses_an_existing_file_without_force_and_a_seed_gives_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("school.db");
    let first = rows_written(&synthesize(&db, &[]));
    let rows = decoded(&Connection::open(&db).unwrap());

    let refused = synthesize(&db, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    assert_eq!(decoded(&Connection::open(&db).unwrap()), rows, "the refused run left the file alone");

    assert_eq!(rows_written(&synthesize(&db, &["--force"])), first);
    assert_eq!(decoded(&Connection::open(&db).unwrap()), rows, "same seed, same rows");
    let other = dir.path().join("other.db");
    rows_written(&synthesize_seed(&other, "5", &[]));
    assert_ne!(decoded(&Connection::open(&other).unwrap()), rows);
}
