-- Hedgerow schema 6: the query log at a secondary school's scale.
--
-- Rows are packed into blocks (src/store/block.rs) and refer to names,
-- clients and outcomes by id. The current hour's rows are in `log_fresh`, in
-- arrival order; when an hour is over the writer seals it into `log_sealed`,
-- one client's rows per block, and writes the hour's postings. The old
-- `query_log` and its sighting tables are converted by the store on first
-- open (store::upgrade) and then dropped.
-- In dictionaries '' stands for "none", so UNIQUE can see it.

CREATE TABLE log_names (
    id        INTEGER PRIMARY KEY,
    -- The name with its labels reversed (com.example.www): a name and all
    -- its subdomains are one range.
    rname     TEXT NOT NULL UNIQUE,
    -- UTC day number of the newest row naming it; retention deletes names
    -- no kept row uses.
    last_day  INTEGER NOT NULL
);

-- Who asked, as the row was written: later device changes do not rewrite
-- history. `client` is the address, or its privacy form for private groups.
CREATE TABLE log_clients (
    id          INTEGER PRIMARY KEY,
    client      TEXT NOT NULL,
    device      TEXT NOT NULL COLLATE NOCASE,
    owner       TEXT NOT NULL COLLATE NOCASE,
    network     TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    last_day    INTEGER NOT NULL,
    UNIQUE (client, device, owner, network, group_name)
);
CREATE INDEX log_clients_device ON log_clients (device) WHERE device != '';
CREATE INDEX log_clients_owner ON log_clients (owner) WHERE owner != '';

-- Why an answer was what it was (the Decision's kind, category, list, stage
-- and reason) and its response code: a few hundred distinct values.
CREATE TABLE log_outcomes (
    id             INTEGER PRIMARY KEY,
    decision       TEXT NOT NULL,
    category       TEXT NOT NULL,
    list           TEXT NOT NULL,
    stage          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    response_code  INTEGER NOT NULL,
    UNIQUE (decision, category, list, stage, reason, response_code)
);

-- The unsealed hours: one block per writer commit, rows of many clients.
CREATE TABLE log_fresh (
    id          INTEGER PRIMARY KEY,
    hour        INTEGER NOT NULL,
    last_row_id INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE INDEX log_fresh_hour ON log_fresh (hour);

-- Sealed hours: key = hour, client, chunk (block::sealed_key).
CREATE TABLE log_sealed (
    key   INTEGER PRIMARY KEY,
    rows  INTEGER NOT NULL,
    data  BLOB NOT NULL
);

-- Which clients asked for which names in a sealed hour (hour first: sealing
-- appends, retention deletes a range).
CREATE TABLE log_name_postings (
    hour       INTEGER NOT NULL,
    name_id    INTEGER NOT NULL,
    client_id  INTEGER NOT NULL,
    PRIMARY KEY (hour, name_id, client_id)
) WITHOUT ROWID;

-- Which clients had which outcome in a sealed hour, for outcomes that are
-- not a plain allowed answer (a decision other than allowed, or a category).
CREATE TABLE log_outcome_postings (
    hour        INTEGER NOT NULL,
    outcome_id  INTEGER NOT NULL,
    client_id   INTEGER NOT NULL,
    PRIMARY KEY (hour, outcome_id, client_id)
) WITHOUT ROWID;

-- Hourly roll-ups, written in the same transaction as the rows they count,
-- so they are exact. '' stands for "none".
CREATE TABLE log_hourly (
    hour        INTEGER NOT NULL,
    group_name  TEXT NOT NULL,
    category    TEXT NOT NULL,
    decision    TEXT NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (hour, group_name, category, decision)
) WITHOUT ROWID;

-- Blocked lookups per hour by client and name: top blocked names and
-- devices, and the daily top-blocked roll-up.
CREATE TABLE log_hourly_blocked (
    hour       INTEGER NOT NULL,
    client_id  INTEGER NOT NULL,
    name_id    INTEGER NOT NULL,
    category   TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (hour, client_id, name_id, category)
) WITHOUT ROWID;
