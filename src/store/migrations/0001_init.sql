-- Hedgerow schema 1: devices, the query log and its daily roll-ups.
-- A released migration is never edited: change the schema in a new file.

-- Configuration state -------------------------------------------------------

-- Devices: IP or MAC -> name, owner, group. `ip` is unique: the latest
-- statement about an address (hand entry, CSV, DHCP lease) wins it.
CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    ip          TEXT UNIQUE,
    mac         TEXT UNIQUE,
    name        TEXT NOT NULL,
    owner       TEXT,
    group_name  TEXT,
    source      TEXT NOT NULL CHECK (source IN ('manual', 'csv', 'dhcp')),
    updated_ms  INTEGER NOT NULL,
    CHECK (ip IS NOT NULL OR mac IS NOT NULL)
);

-- Small counters and flags. `devices_generation` changes whenever `devices`
-- does, so the log writer knows when to reload its attribution cache.
CREATE TABLE store_state (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_state (key, value) VALUES ('devices_generation', 0);

CREATE TRIGGER devices_inserted AFTER INSERT ON devices BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'devices_generation';
END;
CREATE TRIGGER devices_updated AFTER UPDATE ON devices BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'devices_generation';
END;
CREATE TRIGGER devices_deleted AFTER DELETE ON devices BEGIN
    UPDATE store_state SET value = value + 1 WHERE key = 'devices_generation';
END;

-- Per-day random keys for hashing private groups' client addresses. The
-- writer deletes a day's key once the day is over, so yesterday's hashes can
-- no longer be linked to addresses.
CREATE TABLE privacy_keys (
    day  TEXT PRIMARY KEY,
    key  BLOB NOT NULL
) WITHOUT ROWID;

-- The query log ---------------------------------------------------------------

-- One row per answered query. `device` and `owner` are copied from `devices`
-- when the row is written, so later device changes do not rewrite history.
-- `rname` is `name` with its labels reversed (com.example.www) for suffix search.
-- Ids only grow: retention never deletes the newest row, so SQLite never
-- reuses one (and no AUTOINCREMENT bookkeeping costs a write per row).
CREATE TABLE query_log (
    id             INTEGER PRIMARY KEY,
    time_ms        INTEGER NOT NULL,
    client         TEXT NOT NULL,
    device         TEXT COLLATE NOCASE,
    owner          TEXT COLLATE NOCASE,
    network        TEXT,
    group_name     TEXT,
    name           TEXT NOT NULL,
    rname          TEXT NOT NULL,
    record_type    INTEGER NOT NULL,
    decision       TEXT NOT NULL,
    category       TEXT,
    list           TEXT,
    response_code  INTEGER NOT NULL,
    upstream_ms    INTEGER,
    cache_hit      INTEGER NOT NULL
);

-- Indexes whose new entries land in few places, so a batch dirties few pages
-- (a per-row index on the name or the device, with an insertion point per
-- distinct value, cost the writer three quarters of its speed; see
-- benches/store.rs). Time first, with the name to filter on without reading rows:
CREATE INDEX query_log_time ON query_log (time_ms, rname);
-- One insertion point per client address:
CREATE INDEX query_log_client ON query_log (client, time_ms);
-- A handful of insertion points each, and only for the few rows that are not
-- plain allowed lookups (a search for `allowed` uses the time index):
CREATE INDEX query_log_decision ON query_log (decision, time_ms) WHERE decision != 'allowed';
CREATE INDEX query_log_category ON query_log (category, time_ms) WHERE category IS NOT NULL;

-- Which names were asked for in which hour (hour = time_ms / 3,600,000): one
-- row per name and hour, however many queries. A name search reads the hours
-- here, then only those hours of the log.
CREATE TABLE name_hours (
    rname  TEXT NOT NULL,
    hour   INTEGER NOT NULL,
    PRIMARY KEY (rname, hour)
) WITHOUT ROWID;

-- Which client address carried which device name and owner on which day
-- (day = time_ms / 86,400,000; '' for no owner). A search by device or owner
-- reads the addresses here, then uses the client index.
CREATE TABLE client_labels (
    day     INTEGER NOT NULL,
    client  TEXT NOT NULL,
    device  TEXT NOT NULL COLLATE NOCASE,
    owner   TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (day, client, device, owner)
) WITHOUT ROWID;
CREATE INDEX client_labels_device ON client_labels (device, day);
CREATE INDEX client_labels_owner ON client_labels (owner, day);

-- Daily roll-ups, kept for years ----------------------------------------------

-- Days (UTC, YYYY-MM-DD) whose roll-ups are computed; a day is rolled up once.
CREATE TABLE rollup_days (
    day            TEXT PRIMARY KEY,
    raw_rows       INTEGER NOT NULL,
    rolled_up_ms   INTEGER NOT NULL
) WITHOUT ROWID;

-- '' stands for "none" in group_name and category.
CREATE TABLE daily_counts (
    day         TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    category    TEXT NOT NULL,
    decision    TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (day, group_name, category, decision)
) WITHOUT ROWID;

-- The 20 most blocked names of each day and group.
CREATE TABLE daily_top_blocked (
    day         TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    name        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (day, group_name, name)
) WITHOUT ROWID;

-- Distinct client identities seen on a day.
CREATE TABLE daily_devices (
    day               TEXT PRIMARY KEY,
    distinct_devices  INTEGER NOT NULL
) WITHOUT ROWID;
