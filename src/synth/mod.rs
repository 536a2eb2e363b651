//! The synthetic school: a realistic query log of a 1,500-pupil secondary
//! school (about 2,500 devices), written straight into a Hedgerow database
//! for benchmarks and for developing the dashboard and alerts against
//! (`hedgerow synthesize`, `benches/log_scale.rs`).
//!
//! - [`school`]: devices on three networks (pupils 10.10.0.0/16, staff
//!   10.20.0.0/16, guests 10.30.0.0/16 written as hashed `anon-` clients, a
//!   new hash each day), named devices with owners in the device table, the
//!   day's rhythm (weekdays 08:00-16:00 UTC busy, evenings and weekends quiet);
//! - [`names`]: names drawn with a Zipf-like skew over real domains (the UT1
//!   lists and the adult list in `../shared/data`) and generated ones for the
//!   long tail;
//! - [`traffic`]: each hour's rows, decided as the real pipeline decides
//!   (cache, upstream, blocked by category, bypass, SafeSearch, errors), and
//!   incident devices making repeated attempts at one category.
//!
//! One thread generates hours while another writes them: dictionaries with
//! plain SQL, rows as sealed blocks with postings and hourly counts
//! ([`crate::store::seal::write_sealed_hour`]), one transaction per hour;
//! then the daily roll-ups ([`crate::store::retention::roll_up`]). The same
//! seed and options give the same database.

pub mod names;
pub mod random;
pub mod school;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, TransactionBehavior, params};

use crate::name::reversed_name;
use crate::store::StoreError;
use crate::store::schema::{self, Purpose};
use crate::store::{retention, seal};
use crate::time::DAY_MS;
use names::Names;
use traffic::{Hour, Traffic};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Days of log, ending before `end_day`.
    pub days: u32,
    /// Rows on a school day (weekends have about a twentieth).
    pub rows_per_school_day: u64,
    pub devices: usize,
    pub seed: u64,
    /// The folder holding `ut1/` and `adult/` (`../shared/data`).
    pub data: PathBuf,
    /// The UTC day number after the last generated day.
    pub end_day: i64,
}

impl Options {
    /// A month of a secondary school's traffic ending yesterday (UTC).
    pub fn school(data: PathBuf) -> Options {
        Options {
            days: 30,
            rows_per_school_day: 5_000_000,
            devices: 2_500,
            seed: 1,
            data,
            end_day: crate::time::day_number(crate::time::now_ms()),
        }
    }

    /// The first generated day.
    pub fn first_day(&self) -> i64 {
        self.end_day - i64::from(self.days)
    }

    /// Rows the options produce, before incidents (which add a few hundred a day).
    pub fn planned_rows(&self) -> u64 {
        (self.first_day()..self.end_day).map(|day| school::rows_in_day(day, self.rows_per_school_day)).sum()
    }

    /// Sets `rows_per_school_day` so that about `total` rows are generated.
    pub fn with_total_rows(mut self, total: u64) -> Options {
        let per_unit: u64 =
            (self.first_day()..self.end_day).map(|day| school::rows_in_day(day, 1_000_000)).sum::<u64>().max(1);
        self.rows_per_school_day = (total as f64 * 1e6 / per_unit as f64).round() as u64;
        self
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: u64,
    pub names: u64,
    pub clients: u64,
    pub outcomes: u64,
    /// The database file and its WAL, after a final checkpoint.
    pub bytes: u64,
    pub seconds: f64,
    /// The newest row's time (UTC Unix ms).
    pub newest_ms: i64,
}

/// Progress after each day: (days done, days, rows so far).
pub type Progress<'a> = &'a mut dyn FnMut(u32, u32, u64);

/// Writes the synthetic school into `db` (a new or empty database).
pub fn synthesize(db: &Path, options: &Options, progress: Progress<'_>) -> Result<Report, StoreError> {
    let started = Instant::now();
    let mut conn = schema::open(db, Purpose::Maintenance)?;
    let sql = |action| StoreError::sqlite(db, action);
    let existing: i64 = conn
        .query_row("SELECT (SELECT count(*) FROM log_sealed) + (SELECT count(*) FROM log_fresh)", [], |r| r.get(0))
        .map_err(sql("read the query log"))?;
    if existing > 0 {
        return Err(StoreError::Invalid(format!(
            "{}: already holds a query log; synthesize into a new file",
            db.display()
        )));
    }
    // A bulk load of a throw-away file: no fsyncs, a big page cache.
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .map_err(sql("configure the connection"))?;

    let names = Names::load(&options.data, options.seed, Names::tail_for(options.rows_per_school_day))
        .map_err(StoreError::Invalid)?;
    let devices = school::devices(options.devices.max(3), options.seed, |rng| names.benign(rng));
    write_devices(&conn, db, &devices, options.end_day * DAY_MS)?;
    let mut traffic = Traffic::new(names, devices, options.seed);

    let (first_day, end_day) = (options.first_day(), options.end_day);
    let per_day = options.rows_per_school_day;
    let mut rows = 0u64;
    let mut newest_ms = 0;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Hour>(2);
    let traffic = std::thread::scope(|scope| -> Result<Traffic, StoreError> {
        let generator = scope.spawn(move || {
            for hour in first_day * 24..end_day * 24 {
                let target = school::rows_in_hour(hour.div_euclid(24), hour.rem_euclid(24) as usize, per_day);
                if sender.send(traffic.hour(hour, target)).is_err() {
                    break;
                }
            }
            traffic
        });
        for mut hour in receiver {
            rows += hour.rows.len() as u64;
            if let Some(last) = hour.rows.last() {
                newest_ms = last.time_ms;
            }
            write_hour(&mut conn, db, &mut hour)?;
            if hour.hour.rem_euclid(24) == 23 {
                let done = (hour.hour.div_euclid(24) - first_day + 1) as u32;
                progress(done, options.days, rows);
            }
        }
        Ok(generator.join().expect("the generator thread does not panic"))
    })?;

    write_dictionaries(&mut conn, db, &traffic)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sql("checkpoint"))?;
    drop(conn);
    retention::roll_up(db, end_day * DAY_MS + retention::ROLLUP_GRACE_MS + 1)?;
    let conn = schema::open(db, Purpose::Maintenance)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(sql("checkpoint"))?;
    let count = |table: &str| -> Result<u64, StoreError> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql("count the dictionaries"))
    };
    let report = Report {
        rows,
        names: count("log_names")?,
        clients: count("log_clients")?,
        outcomes: count("log_outcomes")?,
        bytes: bytes_on_disk(db),
        seconds: started.elapsed().as_secs_f64(),
        newest_ms,
    };
    Ok(report)
}

/// The database file plus its WAL, in bytes.
pub fn bytes_on_disk(db: &Path) -> u64 {
    let size = |path: PathBuf| std::fs::metadata(path).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db.to_path_buf()) + size(PathBuf::from(wal))
}

/// Pupils' and staff devices into the device table (guests are not in it).
fn write_devices(conn: &Connection, db: &Path, devices: &[school::Device], now_ms: i64) -> Result<(), StoreError> {
    let sql = |action| StoreError::sqlite(db, action);
    let tx = conn.unchecked_transaction().map_err(sql("start writing devices"))?;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO devices (ip, mac, name, owner, group_name, source, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'csv', ?6)",
            )
            .map_err(sql("write devices"))?;
        for device in devices.iter().filter(|d| !d.name.is_empty()) {
            insert
                .execute(params![
                    device.ip.to_string(),
                    device.mac,
                    device.name,
                    device.owner,
                    device.group.name(),
                    now_ms
                ])
                .map_err(sql("write devices"))?;
        }
        tx.execute("UPDATE store_state SET value = value + 1 WHERE key = 'devices_generation'", [])
            .map_err(sql("write devices"))?;
    }
    tx.commit().map_err(sql("write devices"))
}

/// One hour in one transaction: its new clients and outcomes, then its rows.
fn write_hour(conn: &mut Connection, db: &Path, hour: &mut Hour) -> Result<(), StoreError> {
    let sql = |action| StoreError::sqlite(db, action);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("start an hour"))?;
    {
        let day = hour.hour.div_euclid(24);
        let mut client = tx
            .prepare_cached(
                "INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sql("write a client"))?;
        for (id, entry) in &hour.new_clients {
            client
                .execute(params![id, entry.client, entry.device, entry.owner, entry.network, entry.group, day])
                .map_err(sql("write a client"))?;
        }
        let mut outcome = tx
            .prepare_cached(
                "INSERT INTO log_outcomes (id, decision, category, list, stage, reason, response_code) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sql("write an outcome"))?;
        for (id, o) in &hour.new_outcomes {
            outcome
                .execute(params![id, o.decision, o.category, o.list, o.stage, o.reason, o.response_code])
                .map_err(sql("write an outcome"))?;
        }
    }
    seal::write_sealed_hour(&tx, hour.hour, &mut hour.rows, true).map_err(sql("write an hour's rows"))?;
    tx.commit().map_err(sql("commit an hour"))
}

/// The names used (with the day each was last used) and the clients' last days.
fn write_dictionaries(conn: &mut Connection, db: &Path, traffic: &Traffic) -> Result<(), StoreError> {
    let sql = |action| StoreError::sqlite(db, action);
    let tx = conn.transaction().map_err(sql("start the dictionaries"))?;
    {
        let mut used: Vec<(String, u32, i64)> = traffic
            .name_last_day
            .iter()
            .enumerate()
            .filter(|(_, day)| **day != 0)
            .map(|(index, &day)| (reversed_name(&traffic.names.names[index]), index as u32 + 1, day))
            .collect();
        used.sort_unstable();
        let mut insert = tx
            .prepare("INSERT INTO log_names (id, rname, last_day) VALUES (?1, ?2, ?3)")
            .map_err(sql("write names"))?;
        for (rname, id, day) in &used {
            insert.execute(params![id, rname, day]).map_err(sql("write names"))?;
        }
        let mut update =
            tx.prepare("UPDATE log_clients SET last_day = ?2 WHERE id = ?1").map_err(sql("write clients"))?;
        for (index, day) in traffic.client_last_day.iter().enumerate() {
            update.execute(params![index as i64 + 1, day]).map_err(sql("write clients"))?;
        }
    }
    tx.commit().map_err(sql("commit the dictionaries"))
}
