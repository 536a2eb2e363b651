//! The device table: IP or MAC -> name, owner label and group, filled by hand,
//! from a CSV file or from DHCP leases. The log writer copies a device's name
//! and owner into each row by client address.
//!
//! Who owns an address:
//! - By hand or CSV ([`upsert_device`], [`import_csv`]) the latest statement
//!   wins: the address moves to this device; an address-only entry for it is
//!   replaced, devices known by MAC keep their MAC and lose the address.
//! - A DHCP lease ([`import_leases`]) moves the address to the device with the
//!   lease's MAC (a known device keeps its hand-given name and owner), except
//!   that it never takes an address pinned by hand without a MAC.
//!
//! Every write is on a `synchronous=FULL` connection: configuration state is
//! never lost.

use std::net::IpAddr;
use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::csv;
pub use super::leases::{Lease, normalise_mac, parse_dnsmasq_leases, parse_isc_leases};
use super::schema::{self, Purpose};
use super::time::now_ms;

/// Where a device entry came from.
pub const SOURCES: [&str; 3] = ["manual", "csv", "dhcp"];

/// One device: at least an address or a MAC, and a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub ip: Option<IpAddr>,
    /// Any common spelling; stored as `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    pub name: String,
    /// The person the device belongs to, as the school labels them.
    pub owner: Option<String>,
    pub group: Option<String>,
    /// `manual`, `csv` or `dhcp`.
    pub source: String,
}

/// What [`import_csv`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows written (new or updated devices).
    pub imported: usize,
    /// Rows refused, with their line numbers.
    pub errors: Vec<RowError>,
    /// Header columns that are not device fields, and so were not read.
    pub ignored_columns: Vec<String>,
}

/// A CSV row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based; the header is line 1.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Adds a device or updates the one with the same MAC (or, without a MAC, the
/// address-only entry with the same address).
pub fn upsert_device(db: &Path, device: &Device) -> Result<(), StoreError> {
    let device = checked(device).map_err(StoreError::Invalid)?;
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    upsert(&tx, db, &device, now_ms())?;
    tx.commit().map_err(StoreError::sqlite(db, "save the device"))
}

/// Removes the device with this address or MAC; false if there was none.
pub fn remove_device(db: &Path, ip_or_mac: &str) -> Result<bool, StoreError> {
    let key = match ip_or_mac.trim().parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => normalise_mac(ip_or_mac)
            .ok_or_else(|| StoreError::Invalid(format!("{ip_or_mac:?} is neither an IP address nor a MAC address")))?,
    };
    let conn = schema::open(db, Purpose::Config)?;
    let removed = conn
        .execute("DELETE FROM devices WHERE ip = ?1 OR mac = ?1", [key])
        .map_err(StoreError::sqlite(db, "remove the device"))?;
    Ok(removed > 0)
}

/// Every device, by name.
pub fn list_devices(db: &Path) -> Result<Vec<Device>, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let mut statement = conn
        .prepare("SELECT ip, mac, name, owner, group_name, source FROM devices ORDER BY name COLLATE NOCASE, id")
        .map_err(StoreError::sqlite(db, "list devices"))?;
    let rows = statement.query_map([], device_row).map_err(StoreError::sqlite(db, "list devices"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "list devices"))
}

/// Imports devices from CSV text whose header names the columns `ip`, `mac`,
/// `name`, `owner`, `group` (any order, any case; `name` and one of `ip` or
/// `mac` required; other columns are ignored and listed in the report).
/// Good rows are saved in one transaction; bad rows are reported by line.
pub fn import_csv(db: &Path, csv_text: &str) -> Result<ImportReport, StoreError> {
    import_csv_checked(db, csv_text, None)
}

/// [`import_csv`], refusing rows whose `group` is not one of `groups` (the
/// configured groups): a device's group decides its policy, so a typo must
/// not be stored.
pub fn import_csv_for_groups(db: &Path, csv_text: &str, groups: &[&str]) -> Result<ImportReport, StoreError> {
    import_csv_checked(db, csv_text, Some(groups))
}

fn import_csv_checked(db: &Path, csv_text: &str, groups: Option<&[&str]>) -> Result<ImportReport, StoreError> {
    const FIELDS: [&str; 5] = ["ip", "mac", "name", "owner", "group"];
    let mut records = csv::parse(csv_text).into_iter();
    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err((line, message))) => return Err(StoreError::Invalid(format!("CSV line {line}: {message}"))),
        None => {
            return Err(StoreError::Invalid(
                "the CSV is empty; its first line must be a header such as ip,mac,name,owner,group".into(),
            ));
        }
    };
    let columns: Vec<String> = header.fields.iter().map(|field| field.to_ascii_lowercase()).collect();
    let column = |name: &str| columns.iter().position(|column| column == name);
    let mut report = ImportReport {
        ignored_columns: header
            .fields
            .iter()
            .filter(|field| !FIELDS.contains(&field.to_ascii_lowercase().as_str()))
            .cloned()
            .collect(),
        ..ImportReport::default()
    };
    if column("name").is_none() || (column("ip").is_none() && column("mac").is_none()) {
        return Err(StoreError::Invalid(format!(
            "CSV line {}: the header must name a `name` column and an `ip` or `mac` column (ip,mac,name,owner,group); found {}",
            header.line,
            header.fields.join(",")
        )));
    }

    let mut devices = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err((line, message)) => {
                report.errors.push(RowError { line, message });
                continue;
            }
        };
        if record.fields.len() > columns.len() {
            report.errors.push(RowError {
                line: record.line,
                message: format!("{} fields, but the header has {}", record.fields.len(), columns.len()),
            });
            continue;
        }
        let field = |name: &str| {
            column(name).and_then(|index| record.fields.get(index)).map(|value| value.trim()).filter(|v| !v.is_empty())
        };
        let ip = match field("ip").map(|ip| ip.parse::<IpAddr>()) {
            None => None,
            Some(Ok(ip)) => Some(ip),
            Some(Err(_)) => {
                let message = format!("{:?} is not an IP address", field("ip").unwrap_or_default());
                report.errors.push(RowError { line: record.line, message });
                continue;
            }
        };
        let device = Device {
            ip,
            mac: field("mac").map(str::to_string),
            name: field("name").unwrap_or_default().to_string(),
            owner: field("owner").map(str::to_string),
            group: field("group").map(str::to_string),
            source: "csv".to_string(),
        };
        if let (Some(groups), Some(group)) = (groups, &device.group)
            && let Err(message) = check_group(group, groups)
        {
            report.errors.push(RowError { line: record.line, message });
            continue;
        }
        match checked(&device) {
            Ok(device) => devices.push(device),
            Err(message) => report.errors.push(RowError { line: record.line, message }),
        }
    }

    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    let now = now_ms();
    for device in &devices {
        upsert(&tx, db, device, now)?;
    }
    tx.commit().map_err(StoreError::sqlite(db, "save the imported devices"))?;
    report.imported = devices.len();
    Ok(report)
}

/// `Ok` when `group` is one of `groups`; otherwise the message naming them.
pub fn check_group(group: &str, groups: &[&str]) -> Result<(), String> {
    if groups.contains(&group.trim()) {
        Ok(())
    } else {
        Err(format!("group {:?} is not configured; the configured groups are: {}", group.trim(), groups.join(", ")))
    }
}

/// The devices a command names: by IP address, by MAC, or else by name
/// (case-insensitive; several devices may share a name).
pub fn find_devices(db: &Path, key: &str) -> Result<Vec<Device>, StoreError> {
    let (column, value) = device_key(key);
    let sql = format!(
        "SELECT ip, mac, name, owner, group_name, source FROM devices WHERE {column} ORDER BY name COLLATE NOCASE, id"
    );
    let conn = schema::open(db, Purpose::Read)?;
    let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "find devices"))?;
    let rows = statement.query_map([value], device_row).map_err(StoreError::sqlite(db, "find devices"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "find devices"))
}

/// Removes the one device `key` names (IP, MAC or name) and returns it;
/// `None` when none matches. A name shared by several devices is refused
/// (name the one to remove by IP or MAC).
pub fn remove_named_device(db: &Path, key: &str) -> Result<Option<Device>, StoreError> {
    let (column, value) = device_key(key);
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    let found: Vec<Device> = {
        let sql = format!("SELECT ip, mac, name, owner, group_name, source FROM devices WHERE {column}");
        let mut statement = tx.prepare(&sql).map_err(StoreError::sqlite(db, "find devices"))?;
        let rows = statement.query_map([&value], device_row).map_err(StoreError::sqlite(db, "find devices"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "find devices"))?
    };
    match found.len() {
        0 => return Ok(None),
        1 => {}
        n => {
            let which: Vec<String> = found.iter().map(describe_key).collect();
            return Err(StoreError::Invalid(format!(
                "{n} devices are named {key:?} ({}); remove one by its IP address or MAC",
                which.join("; ")
            )));
        }
    }
    tx.execute(&format!("DELETE FROM devices WHERE {column}"), [&value])
        .map_err(StoreError::sqlite(db, "remove the device"))?;
    tx.commit().map_err(StoreError::sqlite(db, "remove the device"))?;
    Ok(found.into_iter().next())
}

/// Devices with an address and a group: what decides a device's policy.
/// With the table's generation (it changes on every write), so a reader
/// can skip reloading an unchanged table.
pub fn device_groups(db: &Path) -> Result<(i64, Vec<Device>), StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    let read = StoreError::sqlite(db, "read the device table");
    let generation: i64 = conn
        .query_row("SELECT value FROM store_state WHERE key = 'devices_generation'", [], |row| row.get(0))
        .map_err(StoreError::sqlite(db, "read the device table's generation"))?;
    let mut statement = conn
        .prepare(
            "SELECT ip, mac, name, owner, group_name, source FROM devices \
             WHERE ip IS NOT NULL AND group_name IS NOT NULL ORDER BY id",
        )
        .map_err(StoreError::sqlite(db, "read the device table"))?;
    let rows = statement.query_map([], device_row).map_err(StoreError::sqlite(db, "read the device table"))?;
    let devices = rows.collect::<Result<_, _>>().map_err(read)?;
    Ok((generation, devices))
}

/// The device table's generation: it changes whenever the table does.
pub fn generation(db: &Path) -> Result<i64, StoreError> {
    let conn = schema::open(db, Purpose::Read)?;
    conn.query_row("SELECT value FROM store_state WHERE key = 'devices_generation'", [], |row| row.get(0))
        .map_err(StoreError::sqlite(db, "read the device table's generation"))
}

/// The SQL condition (one `?1`) and value that find the device(s) `key` names.
fn device_key(key: &str) -> (&'static str, String) {
    let key = key.trim();
    if let Ok(ip) = key.parse::<IpAddr>() {
        return ("ip = ?1", ip.to_canonical().to_string());
    }
    if let Some(mac) = normalise_mac(key) {
        return ("mac = ?1", mac);
    }
    ("name = ?1 COLLATE NOCASE", key.to_string())
}

fn describe_key(device: &Device) -> String {
    match (&device.ip, &device.mac) {
        (Some(ip), Some(mac)) => format!("{ip} / {mac}"),
        (Some(ip), None) => ip.to_string(),
        (None, Some(mac)) => mac.clone(),
        (None, None) => device.name.clone(),
    }
}

fn device_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        ip: row.get::<_, Option<String>>(0)?.and_then(|ip| ip.parse().ok()),
        mac: row.get(1)?,
        name: row.get(2)?,
        owner: row.get(3)?,
        group: row.get(4)?,
        source: row.get(5)?,
    })
}

/// Applies the current leases (active and not ended now) to the device table;
/// returns how many were applied. See the module notes for who wins an address.
pub fn import_leases(db: &Path, leases: &[Lease]) -> Result<usize, StoreError> {
    import_leases_at(db, leases, now_ms())
}

/// [`import_leases`] with the time that decides which leases are current.
pub fn import_leases_at(db: &Path, leases: &[Lease], now_ms: i64) -> Result<usize, StoreError> {
    import_leases_counted(db, leases, now_ms).map(|counted| counted.applied)
}

/// What one reading of a leases file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LeaseImport {
    /// Leases in the file.
    pub leases: usize,
    /// Of those, current (active and not ended).
    pub current: usize,
    /// Current leases applied (not refused by a hand-pinned address).
    pub applied: usize,
    /// Devices named, added or given a new address by this reading.
    pub changed: usize,
}

/// [`import_leases_at`], counting what changed.
pub fn import_leases_counted(db: &Path, leases: &[Lease], now_ms: i64) -> Result<LeaseImport, StoreError> {
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    let mut counted = LeaseImport { leases: leases.len(), ..LeaseImport::default() };
    for lease in leases.iter().filter(|lease| lease.is_current(now_ms)) {
        counted.current += 1;
        if let Some(changed) = apply_lease(&tx, db, lease, now_ms)? {
            counted.applied += 1;
            counted.changed += changed;
        }
    }
    tx.commit().map_err(StoreError::sqlite(db, "save the leases"))?;
    Ok(counted)
}

/// A device with its MAC normalised, or why it cannot be stored.
fn checked(device: &Device) -> Result<Device, String> {
    let mac = match device.mac.as_deref().map(str::trim).filter(|mac| !mac.is_empty()) {
        None => None,
        Some(mac) => Some(normalise_mac(mac).ok_or_else(|| format!("{mac:?} is not a MAC address"))?),
    };
    let name = device.name.trim();
    if name.is_empty() {
        return Err("the device has no name".into());
    }
    if device.ip.is_none() && mac.is_none() {
        return Err(format!("{name:?} has neither an IP address nor a MAC address"));
    }
    if !SOURCES.contains(&device.source.as_str()) {
        return Err(format!("source {:?} is not one of {}", device.source, SOURCES.join(", ")));
    }
    let label = |value: &Option<String>| value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(String::from);
    Ok(Device {
        ip: device.ip.map(|ip| ip.to_canonical()),
        mac,
        name: name.to_string(),
        owner: label(&device.owner),
        group: label(&device.group),
        source: device.source.clone(),
    })
}

fn upsert(tx: &Transaction<'_>, db: &Path, device: &Device, now: i64) -> Result<(), StoreError> {
    let ip = device.ip.map(|ip| ip.to_string());
    let mut id = match &device.mac {
        Some(mac) => device_id(tx, db, "SELECT id FROM devices WHERE mac = ?1", mac)?,
        None => None,
    };
    if id.is_none()
        && let Some(ip) = &ip
    {
        id = device_id(tx, db, "SELECT id FROM devices WHERE ip = ?1 AND mac IS NULL", ip)?;
    }
    if let Some(ip) = &ip {
        release_ip(tx, db, ip, id)?;
    }
    let save = StoreError::sqlite(db, "save a device");
    match id {
        Some(id) => tx
            .execute(
                "UPDATE devices SET ip = COALESCE(?1, ip), mac = COALESCE(?2, mac), name = ?3, owner = ?4, \
                 group_name = ?5, source = ?6, updated_ms = ?7 WHERE id = ?8",
                params![ip, device.mac, device.name, device.owner, device.group, device.source, now, id],
            )
            .map_err(save)?,
        None => tx
            .execute(
                "INSERT INTO devices (ip, mac, name, owner, group_name, source, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![ip, device.mac, device.name, device.owner, device.group, device.source, now],
            )
            .map_err(save)?,
    };
    Ok(())
}

/// Takes `ip` away from every device but `keep`: address-only entries go,
/// devices with a MAC stay without an address.
fn release_ip(tx: &Transaction<'_>, db: &Path, ip: &str, keep: Option<i64>) -> Result<(), StoreError> {
    let keep = keep.unwrap_or(-1);
    tx.execute("DELETE FROM devices WHERE ip = ?1 AND mac IS NULL AND id != ?2", params![ip, keep])
        .map_err(StoreError::sqlite(db, "move an address between devices"))?;
    tx.execute("UPDATE devices SET ip = NULL WHERE ip = ?1 AND id != ?2", params![ip, keep])
        .map_err(StoreError::sqlite(db, "move an address between devices"))?;
    Ok(())
}

fn device_id(tx: &Transaction<'_>, db: &Path, sql: &str, key: &str) -> Result<Option<i64>, StoreError> {
    tx.query_row(sql, [key], |row| row.get(0)).optional().map_err(StoreError::sqlite(db, "look up a device"))
}

/// Applies one lease: the devices it changed (0 when all was as the lease
/// says); `None` when it was not applied (a hand-pinned address, or nothing
/// to name the device by).
fn apply_lease(tx: &Transaction<'_>, db: &Path, lease: &Lease, now: i64) -> Result<Option<usize>, StoreError> {
    let ip = lease.ip.to_canonical().to_string();
    let lookup = StoreError::sqlite(db, "look up a device");
    let holder: Option<(i64, Option<String>, String)> = tx
        .query_row("SELECT id, mac, source FROM devices WHERE ip = ?1", [&ip], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()
        .map_err(lookup)?;
    if let Some((_, None, source)) = &holder
        && source != "dhcp"
    {
        return Ok(None);
    }
    let hostname = lease.hostname.as_deref().map(str::trim).filter(|name| !name.is_empty());
    let save = StoreError::sqlite(db, "save a lease");
    let Some(mac) = &lease.mac else {
        // A DHCPv6 lease: no MAC to tie it to, so an address-only entry.
        let Some(name) = hostname else { return Ok(None) };
        let changed = match holder {
            Some((id, None, _)) => tx
                .execute(
                    "UPDATE devices SET name = ?1, updated_ms = ?2 WHERE id = ?3 AND name IS NOT ?1",
                    params![name, now, id],
                )
                .map_err(save)?,
            _ => {
                release_ip(tx, db, &ip, None)?;
                tx.execute(
                    "INSERT INTO devices (ip, name, source, updated_ms) VALUES (?1, ?2, 'dhcp', ?3)",
                    params![ip, name, now],
                )
                .map_err(save)?
            }
        };
        return Ok(Some(changed));
    };
    let known: Option<(i64, String)> = tx
        .query_row("SELECT id, source FROM devices WHERE mac = ?1", [mac], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map_err(StoreError::sqlite(db, "look up a device"))?;
    release_ip(tx, db, &ip, known.as_ref().map(|(id, _)| *id))?;
    let changed = match known {
        // Named by hand or CSV: keep the name, owner and group; only the address moves.
        Some((id, source)) if source != "dhcp" => tx
            .execute("UPDATE devices SET ip = ?1, updated_ms = ?2 WHERE id = ?3 AND ip IS NOT ?1", params![ip, now, id])
            .map_err(save)?,
        Some((id, _)) => tx
            .execute(
                "UPDATE devices SET ip = ?1, name = COALESCE(?2, name), updated_ms = ?3 \
                 WHERE id = ?4 AND (ip IS NOT ?1 OR name IS NOT COALESCE(?2, name))",
                params![ip, hostname, now, id],
            )
            .map_err(save)?,
        None => tx
            .execute(
                "INSERT INTO devices (ip, mac, name, source, updated_ms) VALUES (?1, ?2, ?3, 'dhcp', ?4)",
                params![ip, mac, hostname.unwrap_or(mac), now],
            )
            .map_err(save)?,
    };
    Ok(Some(changed))
}

// --- The Devices page (issue 13): rows by id, the device audit, the leases status ---

/// A device with its row id (the dashboard edits by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    pub id: i64,
    #[serde(flatten)]
    pub device: Device,
    pub updated_ms: i64,
}

const ROW_COLUMNS: &str = "id, ip, mac, name, owner, group_name, source, updated_ms";

fn device_row_with_id(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: row.get(0)?,
        device: Device {
            ip: row.get::<_, Option<String>>(1)?.and_then(|ip| ip.parse().ok()),
            mac: row.get(2)?,
            name: row.get(3)?,
            owner: row.get(4)?,
            group: row.get(5)?,
            source: row.get(6)?,
        },
        updated_ms: row.get(7)?,
    })
}

/// Every device with its id, by name.
pub fn list_device_rows(db: &Path) -> Result<Vec<DeviceRow>, StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    let sql = format!("SELECT {ROW_COLUMNS} FROM devices ORDER BY name COLLATE NOCASE, id");
    let mut statement = conn.prepare(&sql).map_err(StoreError::sqlite(db, "list devices"))?;
    let rows = statement.query_map([], device_row_with_id).map_err(StoreError::sqlite(db, "list devices"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "list devices"))
}

/// The device with this id.
pub fn get_device(db: &Path, id: i64) -> Result<Option<DeviceRow>, StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    let sql = format!("SELECT {ROW_COLUMNS} FROM devices WHERE id = ?1");
    conn.query_row(&sql, [id], device_row_with_id).optional().map_err(StoreError::sqlite(db, "read a device"))
}

/// Why a device form was refused, by field (`ip`, `mac`, `name`, `group`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Adds a device by hand (updating the one with the same MAC, as
/// [`upsert_device`] does) and returns its id.
pub fn add_device(db: &Path, device: &Device) -> Result<i64, StoreError> {
    let device = checked(device).map_err(StoreError::Invalid)?;
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    upsert(&tx, db, &device, now_ms())?;
    let id: i64 = match (&device.mac, &device.ip) {
        (Some(mac), _) => tx.query_row("SELECT id FROM devices WHERE mac = ?1", [mac], |row| row.get(0)),
        (None, Some(ip)) => tx.query_row("SELECT id FROM devices WHERE ip = ?1", [ip.to_string()], |row| row.get(0)),
        (None, None) => unreachable!("checked() requires an address or a MAC"),
    }
    .map_err(StoreError::sqlite(db, "read the saved device"))?;
    tx.commit().map_err(StoreError::sqlite(db, "save the device"))?;
    Ok(id)
}

/// Replaces every field of device `id` (its source becomes `manual`). The
/// address moves to it from any other device; a MAC another device has is
/// refused beside the `mac` field. `Ok(None)`: there is no such device.
pub fn update_device(db: &Path, id: i64, device: &Device) -> Result<Result<Option<DeviceRow>, FieldError>, StoreError> {
    let device = match checked(device) {
        Ok(device) => device,
        Err(message) => return Ok(Err(FieldError { field: "name", message })),
    };
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    let exists: Option<i64> = tx
        .query_row("SELECT id FROM devices WHERE id = ?1", [id], |row| row.get(0))
        .optional()
        .map_err(StoreError::sqlite(db, "look up a device"))?;
    if exists.is_none() {
        return Ok(Ok(None));
    }
    if let Some(mac) = &device.mac {
        let other: Option<String> = tx
            .query_row("SELECT name FROM devices WHERE mac = ?1 AND id != ?2", params![mac, id], |row| row.get(0))
            .optional()
            .map_err(StoreError::sqlite(db, "look up a device"))?;
        if let Some(other) = other {
            let message = format!("{mac} is already the MAC of {other:?}; edit or remove that device first");
            return Ok(Err(FieldError { field: "mac", message }));
        }
    }
    let ip = device.ip.map(|ip| ip.to_string());
    if let Some(ip) = &ip {
        release_ip(&tx, db, ip, Some(id))?;
    }
    tx.execute(
        "UPDATE devices SET ip = ?1, mac = ?2, name = ?3, owner = ?4, group_name = ?5, source = 'manual', \
         updated_ms = ?6 WHERE id = ?7",
        params![ip, device.mac, device.name, device.owner, device.group, now_ms(), id],
    )
    .map_err(StoreError::sqlite(db, "save the device"))?;
    let sql = format!("SELECT {ROW_COLUMNS} FROM devices WHERE id = ?1");
    let saved = tx.query_row(&sql, [id], device_row_with_id).map_err(StoreError::sqlite(db, "read a device"))?;
    tx.commit().map_err(StoreError::sqlite(db, "save the device"))?;
    Ok(Ok(Some(saved)))
}

/// Removes device `id`; the device removed, `None` when there was none.
pub fn remove_device_by_id(db: &Path, id: i64) -> Result<Option<DeviceRow>, StoreError> {
    let mut conn = schema::open(db, Purpose::Config)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
    let sql = format!("SELECT {ROW_COLUMNS} FROM devices WHERE id = ?1");
    let found =
        tx.query_row(&sql, [id], device_row_with_id).optional().map_err(StoreError::sqlite(db, "read a device"))?;
    if found.is_some() {
        tx.execute("DELETE FROM devices WHERE id = ?1", [id]).map_err(StoreError::sqlite(db, "remove the device"))?;
    }
    tx.commit().map_err(StoreError::sqlite(db, "remove the device"))?;
    Ok(found)
}

/// A device in one line, for the device audit: `lab-pc-3 (ip 10.0.0.5, mac -, owner Ms Ng, group staff)`.
pub fn describe(device: &Device) -> String {
    let or_dash = |value: Option<&str>| value.unwrap_or("-").to_string();
    format!(
        "{} (ip {}, mac {}, owner {}, group {})",
        device.name,
        device.ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into()),
        or_dash(device.mac.as_deref()),
        or_dash(device.owner.as_deref()),
        or_dash(device.group.as_deref()),
    )
}

/// One change to the device table made on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceChange {
    pub time_ms: i64,
    /// The admin who made it.
    pub user: String,
    /// Their address.
    pub address: String,
    /// `added`, `edited`, `removed` or `imported`.
    pub action: String,
    /// The device's name (for `imported`: the file's summary).
    pub device: String,
    pub old: String,
    pub new: String,
}

/// Appends one row to the device audit.
pub fn record_device_change(db: &Path, change: &DeviceChange) -> Result<(), StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    conn.execute(
        "INSERT INTO device_audit (time_ms, user_name, address, action, device, old_value, new_value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![change.time_ms, change.user, change.address, change.action, change.device, change.old, change.new],
    )
    .map_err(StoreError::sqlite(db, "record a device change"))?;
    Ok(())
}

/// The latest `limit` device changes, newest first.
pub fn recent_device_changes(db: &Path, limit: usize) -> Result<Vec<DeviceChange>, StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    let mut statement = conn
        .prepare(
            "SELECT time_ms, user_name, address, action, device, old_value, new_value FROM device_audit \
             ORDER BY time_ms DESC, id DESC LIMIT ?1",
        )
        .map_err(StoreError::sqlite(db, "read the device audit"))?;
    let rows = statement
        .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
            Ok(DeviceChange {
                time_ms: row.get(0)?,
                user: row.get(1)?,
                address: row.get(2)?,
                action: row.get(3)?,
                device: row.get(4)?,
                old: row.get(5)?,
                new: row.get(6)?,
            })
        })
        .map_err(StoreError::sqlite(db, "read the device audit"))?;
    rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the device audit"))
}

/// The DHCP leases file's last reading, as the server recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LeasesStatus {
    pub file: String,
    pub format: String,
    /// The last successful reading.
    pub read_ms: Option<i64>,
    pub leases: usize,
    pub current: usize,
    pub changed: usize,
    /// The last failure, when it is newer than the last success.
    pub error: Option<String>,
    pub error_ms: Option<i64>,
}

/// Records a reading of the leases `file`: its counts, or why it failed (a
/// failure keeps the last good reading's counts and time).
pub fn record_leases_read(
    db: &Path,
    file: &str,
    format: &str,
    outcome: &Result<LeaseImport, String>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    let save = StoreError::sqlite(db, "record the leases reading");
    match outcome {
        Ok(counted) => conn.execute(
            "INSERT INTO leases_status (id, file, format, read_ms, leases, current, changed, error, error_ms) \
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL) ON CONFLICT (id) DO UPDATE SET file = excluded.file, \
             format = excluded.format, read_ms = excluded.read_ms, leases = excluded.leases, \
             current = excluded.current, changed = excluded.changed, error = NULL, error_ms = NULL",
            params![file, format, now_ms, counted.leases as i64, counted.current as i64, counted.changed as i64],
        ),
        Err(error) => conn.execute(
            "INSERT INTO leases_status (id, file, format, error, error_ms) VALUES (1, ?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET file = excluded.file, format = excluded.format, \
             error = excluded.error, error_ms = excluded.error_ms",
            params![file, format, error, now_ms],
        ),
    }
    .map_err(save)?;
    Ok(())
}

/// The last recorded reading of the leases file, if any.
pub fn leases_status(db: &Path) -> Result<Option<LeasesStatus>, StoreError> {
    let conn = schema::open(db, Purpose::Config)?;
    conn.query_row(
        "SELECT file, format, read_ms, leases, current, changed, error, error_ms FROM leases_status WHERE id = 1",
        [],
        |row| {
            Ok(LeasesStatus {
                file: row.get(0)?,
                format: row.get(1)?,
                read_ms: row.get(2)?,
                leases: row.get::<_, i64>(3)? as usize,
                current: row.get::<_, i64>(4)? as usize,
                changed: row.get::<_, i64>(5)? as usize,
                error: row.get(6)?,
                error_ms: row.get(7)?,
            })
        },
    )
    .optional()
    .map_err(StoreError::sqlite(db, "read the leases status"))
}
