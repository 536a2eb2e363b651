-- The change-control log: every policy change (from the dashboard, a hand
-- edit of the config file, an override lapsing), who made it, old -> new and
-- why. Indexed for the change log page's filters.
CREATE TABLE change_log (
    id          INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    user_name   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    group_name  TEXT,
    subject     TEXT NOT NULL,
    old_value   TEXT NOT NULL,
    new_value   TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX change_log_time ON change_log (time_ms);
CREATE INDEX change_log_user ON change_log (user_name, time_ms);
CREATE INDEX change_log_group ON change_log (group_name, time_ms);
CREATE INDEX change_log_kind ON change_log (kind, time_ms);

-- The config file text last recorded (one row), so a hand edit is noticed.
CREATE TABLE config_snapshots (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    time_ms     INTEGER NOT NULL,
    config_text TEXT NOT NULL
);
