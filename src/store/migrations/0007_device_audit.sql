-- Hedgerow schema 7: who changed the device table from the dashboard, and
-- the DHCP leases file's last reading (the Devices page shows both).

-- Every device added, edited, removed or imported on the Devices page:
-- the admin, their address, the device and its old and new values. Admin
-- only (device names and owners: governors never read this table).
CREATE TABLE device_audit (
    id        INTEGER PRIMARY KEY,
    time_ms   INTEGER NOT NULL,
    user_name TEXT    NOT NULL,
    address   TEXT    NOT NULL,
    action    TEXT    NOT NULL CHECK (action IN ('added', 'edited', 'removed', 'imported')),
    device    TEXT    NOT NULL,
    old_value TEXT    NOT NULL,
    new_value TEXT    NOT NULL
);
CREATE INDEX device_audit_by_time ON device_audit (time_ms);

-- The last reading of the DHCP leases file (one row): kept on disk, so the
-- page tells the truth after a restart too.
CREATE TABLE leases_status (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    file        TEXT    NOT NULL,
    format      TEXT    NOT NULL,
    read_ms     INTEGER,
    leases      INTEGER NOT NULL DEFAULT 0,
    current     INTEGER NOT NULL DEFAULT 0,
    changed     INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    error_ms    INTEGER
);
