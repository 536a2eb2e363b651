//! The query log's dictionaries: names, clients and outcomes interned into
//! `log_names`, `log_clients` and `log_outcomes`, with in-memory maps so a
//! row costs a hash lookup, not a query.
//!
//! A name's or client's `last_day` is written when it is first used on a
//! later day than the one recorded, with `ON CONFLICT(id)` so a row that
//! retention deleted meanwhile comes back with the same id. Ids are handed
//! out here (one above the highest in the table when first needed), never
//! by SQLite, so an id the maps still hold is never given to another name
//! after retention deleted the highest rows.
//!
//! A failed transaction may have rolled back ids the maps hold: the owner
//! then calls [`Dictionary::forget`].

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

// hashbrown's map with its default hasher (foldhash, seeded per process):
// the writer hashes two or three keys per row, and SipHash, std's, was a
// tenth of its time at 70,000 rows/s.
use hashbrown::{Equivalent, HashMap};
use rusqlite::{Connection, OptionalExtension, params};

use super::seal::Meanings;
use crate::name::reversed_name;

/// Names held in memory at most; past it the map starts again (the table
/// still has them all), so memory stays bounded however many names a school
/// looks up.
const NAMES_HELD: usize = 1_000_000;

/// An interned entry: its id and the newest day written for it.
#[derive(Clone, Copy)]
struct Entry {
    id: u32,
    last_day: i64,
}

/// A client identity as a row carries it ('' for none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientFields<'a> {
    pub(crate) client: &'a str,
    pub(crate) device: &'a str,
    pub(crate) owner: &'a str,
    pub(crate) network: &'a str,
    pub(crate) group: &'a str,
}

/// An outcome as a row carries it ('' for none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutcomeFields<'a> {
    pub(crate) decision: &'a str,
    pub(crate) category: &'a str,
    pub(crate) list: &'a str,
    pub(crate) stage: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) response_code: u16,
}

/// A client as the DNS path hands it over: address, network, group.
#[derive(PartialEq, Eq)]
struct Address {
    ip: IpAddr,
    network: Option<Arc<str>>,
    group: Option<Arc<str>>,
}

/// [`Address`] borrowed from a row, for lookups that clone nothing.
pub(crate) struct AddressRef<'a> {
    pub(crate) ip: IpAddr,
    pub(crate) network: Option<&'a Arc<str>>,
    pub(crate) group: Option<&'a Arc<str>>,
}

impl Hash for Address {
    fn hash<H: Hasher>(&self, state: &mut H) {
        AddressRef { ip: self.ip, network: self.network.as_ref(), group: self.group.as_ref() }.hash(state);
    }
}

impl Hash for AddressRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ip.hash(state);
        self.network.map(|network| &**network).hash(state);
        self.group.map(|group| &**group).hash(state);
    }
}

impl Equivalent<Address> for AddressRef<'_> {
    fn equivalent(&self, key: &Address) -> bool {
        self.ip == key.ip
            && self.network.map(|network| &**network) == key.network.as_deref()
            && self.group.map(|group| &**group) == key.group.as_deref()
    }
}

/// Addresses held in [`Dictionary::known_client`]'s map at most.
const ADDRESSES_HELD: usize = 100_000;

#[derive(Default)]
pub(crate) struct Dictionary {
    names: HashMap<Box<str>, Entry>,
    clients: HashMap<Box<str>, Entry>,
    outcomes: HashMap<Box<str>, u32>,
    /// Client ids by address, network and group, with the day each was
    /// interned for: a row from a client already seen today skips the
    /// privacy treatment, formatting its address and hashing its identity.
    /// Cleared when the device table changes (a device's name is part of
    /// the identity).
    addresses: HashMap<Address, Entry>,
    next_name: Option<u32>,
    next_client: Option<u32>,
    /// Groups and outcome meanings of the ids handed out, for the hourly counts.
    pub(crate) meanings: Meanings,
    key: String,
}

impl Dictionary {
    /// Forgets everything held (after a rolled-back transaction).
    pub(crate) fn forget(&mut self) {
        *self = Dictionary::default();
    }

    /// The client id [`Dictionary::remember_client`] was given for `address`
    /// on `day`, if any.
    pub(crate) fn known_client(&self, address: &AddressRef<'_>, day: i64) -> Option<u32> {
        self.addresses.get(address).filter(|entry| entry.last_day == day).map(|entry| entry.id)
    }

    /// Keeps the client id `address` was interned as on `day`.
    pub(crate) fn remember_client(&mut self, address: &AddressRef<'_>, day: i64, id: u32) {
        if self.addresses.len() >= ADDRESSES_HELD {
            self.addresses.clear();
        }
        let key = Address { ip: address.ip, network: address.network.cloned(), group: address.group.cloned() };
        self.addresses.insert(key, Entry { id, last_day: day });
    }

    /// The device table changed: client identities must be worked out again.
    pub(crate) fn devices_changed(&mut self) {
        self.addresses.clear();
    }

    /// The id of `name` (as queried; the table holds it with its labels
    /// reversed), created or given `day` as needed. The map is keyed by the
    /// name as queried, so a row whose name is held (almost every row) costs
    /// one hash lookup and no allocation.
    pub(crate) fn name(&mut self, conn: &Connection, name: &str, day: i64) -> rusqlite::Result<u32> {
        if self.names.len() >= NAMES_HELD && !self.names.contains_key(name) {
            self.names.clear();
            self.names.shrink_to(NAMES_HELD / 4);
        }
        let next = &mut self.next_name;
        let rname = std::cell::OnceCell::new();
        let rname = || rname.get_or_init(|| reversed_name(name)).as_str();
        intern(
            &mut self.names,
            name,
            day,
            || {
                conn.prepare_cached("SELECT id, last_day FROM log_names WHERE rname = ?1")?
                    .query_row([rname()], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            },
            || next_id(conn, "log_names", next),
            |id| put_name(conn, id, rname(), day),
        )
    }

    /// The id of a client identity, created or given `day` as needed.
    pub(crate) fn client(&mut self, conn: &Connection, fields: ClientFields<'_>, day: i64) -> rusqlite::Result<u32> {
        self.key.clear();
        for part in [fields.client, fields.device, fields.owner, fields.network, fields.group] {
            self.key.push_str(part);
            self.key.push('\0');
        }
        let next = &mut self.next_client;
        let id = intern(
            &mut self.clients,
            &self.key,
            day,
            || {
                conn.prepare_cached(
                    "SELECT id, last_day FROM log_clients \
                     WHERE client = ?1 AND device = ?2 AND owner = ?3 AND network = ?4 AND group_name = ?5",
                )?
                .query_row(params![fields.client, fields.device, fields.owner, fields.network, fields.group], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
            },
            || next_id(conn, "log_clients", next),
            |id| put_client(conn, id, fields, day),
        )?;
        self.meanings.know_group(id, fields.group);
        Ok(id)
    }

    /// The id of an outcome, created as needed (outcomes are few and kept).
    pub(crate) fn outcome(&mut self, conn: &Connection, fields: OutcomeFields<'_>) -> rusqlite::Result<u32> {
        self.key.clear();
        for part in [fields.decision, fields.category, fields.list, fields.stage, fields.reason] {
            self.key.push_str(part);
            self.key.push('\0');
        }
        let [high, low] = fields.response_code.to_be_bytes();
        self.key.extend([char::from(high), char::from(low)]);
        if let Some(&id) = self.outcomes.get(self.key.as_str()) {
            return Ok(id);
        }
        let values =
            params![fields.decision, fields.category, fields.list, fields.stage, fields.reason, fields.response_code];
        let found: Option<u32> = conn
            .prepare_cached(
                "SELECT id FROM log_outcomes WHERE decision = ?1 AND category = ?2 AND list = ?3 \
                 AND stage = ?4 AND reason = ?5 AND response_code = ?6",
            )?
            .query_row(values, |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached(
                    "INSERT INTO log_outcomes (decision, category, list, stage, reason, response_code) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(values)?;
                u32::try_from(conn.last_insert_rowid()).map_err(|_| too_many("log_outcomes"))?
            }
        };
        self.outcomes.insert(self.key.as_str().into(), id);
        self.meanings.know_outcome(id, fields.decision, fields.category);
        Ok(id)
    }
}

const UPSERT_NAME: &str = "INSERT INTO log_names (id, rname, last_day) VALUES (?1, ?2, ?3) \
     ON CONFLICT(id) DO UPDATE SET last_day = max(last_day, excluded.last_day)";
const UPSERT_CLIENT: &str = "INSERT INTO log_clients (id, client, device, owner, network, group_name, last_day) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(id) DO UPDATE SET last_day = max(last_day, excluded.last_day)";

/// Writes a name with `day` as its newest use: creates it, moves its
/// `last_day` on, or re-creates it with the same id after retention.
fn put_name(conn: &Connection, id: u32, rname: &str, day: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(UPSERT_NAME)?.execute(params![id, rname, day]).map(drop)
}

/// [`put_name`] for a client identity.
fn put_client(conn: &Connection, id: u32, fields: ClientFields<'_>, day: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(UPSERT_CLIENT)?
        .execute(params![id, fields.client, fields.device, fields.owner, fields.network, fields.group, day])
        .map(drop)
}

/// The id under `key`: from the in-memory map `held`, else from the table
/// (`find`), else a new one (`new_id`). The row is written (`put`) when it is
/// new or first used on a later `day`, so `last_day` moves on once a day and
/// a row retention deleted comes back with the same id.
fn intern(
    held: &mut HashMap<Box<str>, Entry>,
    key: &str,
    day: i64,
    find: impl FnOnce() -> rusqlite::Result<Option<(u32, i64)>>,
    new_id: impl FnOnce() -> rusqlite::Result<u32>,
    put: impl FnOnce(u32) -> rusqlite::Result<()>,
) -> rusqlite::Result<u32> {
    if let Some(entry) = held.get_mut(key) {
        if entry.last_day < day {
            put(entry.id)?;
            entry.last_day = day;
        }
        return Ok(entry.id);
    }
    let entry = match find()? {
        Some((id, last_day)) => {
            if last_day < day {
                put(id)?;
            }
            Entry { id, last_day: last_day.max(day) }
        }
        None => {
            let id = new_id()?;
            put(id)?;
            Entry { id, last_day: day }
        }
    };
    held.insert(key.into(), entry);
    Ok(entry.id)
}

/// The next id of `table`, read from the table the first time.
fn next_id(conn: &Connection, table: &'static str, next: &mut Option<u32>) -> rusqlite::Result<u32> {
    let id = match *next {
        Some(id) => id,
        None => {
            let max: Option<i64> =
                conn.prepare_cached(&format!("SELECT max(id) FROM {table}"))?.query_row([], |row| row.get(0))?;
            u32::try_from(max.unwrap_or(0) + 1).map_err(|_| too_many(table))?
        }
    };
    *next = Some(id.checked_add(1).ok_or_else(|| too_many(table))?);
    Ok(id)
}

fn too_many(table: &'static str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("{table} has run out of ids").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{self, Purpose};

    fn client(name: &str) -> ClientFields<'_> {
        ClientFields { client: name, device: "LIB-PC-01", owner: "", network: "lan", group: "pupil" }
    }

    #[test]
    fn ids_are_stable_last_day_moves_on_and_retention_deletes_come_back_with_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema::open(&dir.path().join("log.db"), Purpose::Log).unwrap();
        let mut dict = Dictionary::default();
        let a = dict.name(&conn, "com.example", 10).unwrap();
        let b = dict.name(&conn, "com.example.www", 10).unwrap();
        assert_ne!(a, b);
        assert_eq!(dict.name(&conn, "com.example", 10).unwrap(), a);
        let c = dict.client(&conn, client("10.0.0.1"), 10).unwrap();
        let last_day = |table: &str, id: u32| -> Option<i64> {
            conn.query_row(&format!("SELECT last_day FROM {table} WHERE id = ?1"), [id], |row| row.get(0))
                .optional()
                .unwrap()
        };
        // A later day is written once, on first use.
        assert_eq!(dict.name(&conn, "com.example", 12).unwrap(), a);
        assert_eq!(last_day("log_names", a), Some(12));
        assert_eq!(last_day("log_names", b), Some(10));
        // Retention deletes what was last used before its cutoff; the
        // writer's next use re-creates it with the same id.
        conn.execute_batch("DELETE FROM log_names WHERE last_day < 11; DELETE FROM log_clients;").unwrap();
        assert_eq!(dict.name(&conn, "com.example.www", 13).unwrap(), b);
        assert_eq!(last_day("log_names", b), Some(13));
        assert_eq!(dict.client(&conn, client("10.0.0.1"), 13).unwrap(), c);
        assert_eq!(last_day("log_clients", c), Some(13));
        // A new name never takes an id the maps hold, even after the
        // highest row was deleted.
        conn.execute("DELETE FROM log_names WHERE id = ?1", [b]).unwrap();
        let d = dict.name(&conn, "org.other", 13).unwrap();
        assert!(d > b);
        // After a rollback the maps are forgotten and read back from the table.
        dict.forget();
        assert_eq!(dict.name(&conn, "com.example", 14).unwrap(), a);
        assert_eq!(last_day("log_names", a), Some(14));
        assert_eq!(dict.client(&conn, client("10.0.0.1"), 14).unwrap(), c);
        assert_eq!(last_day("log_clients", c), Some(14));
        // The device name is matched without regard to case, as the table's
        // unique constraint (NOCASE) sees it.
        let lower = ClientFields { device: "lib-pc-01", ..client("10.0.0.1") };
        assert_eq!(dict.client(&conn, lower, 14).unwrap(), c);
        // Finding a name in the table used no id: the next new one follows d.
        assert_eq!(dict.name(&conn, "org.third", 14).unwrap(), d + 1);
        let games = OutcomeFields {
            decision: "blocked",
            category: "games",
            list: "g",
            stage: "",
            reason: "",
            response_code: 3,
        };
        let same = dict.outcome(&conn, games).unwrap();
        dict.forget();
        let again = dict.outcome(&conn, games).unwrap();
        assert_eq!(same, again);
    }
}
