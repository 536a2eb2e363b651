-- Hedgerow schema 8: alerts for the Designated Safeguarding Lead.

-- One incident is one alert: the first matching lookup raises it, further
-- ones by the same device join it (attempts, last_ms, names) until it has
-- been quiet for a while. `client` is the address as the query log names
-- it (a guest's pseudonym where the group's privacy hashes addresses), or
-- "group:<name>" for a rise in a group's blocks.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    rule            TEXT    NOT NULL,
    severity        TEXT    NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    category        TEXT    NOT NULL DEFAULT '',
    client          TEXT    NOT NULL,
    device          TEXT    NOT NULL DEFAULT '',
    owner           TEXT    NOT NULL DEFAULT '',
    network         TEXT    NOT NULL DEFAULT '',
    group_name      TEXT    NOT NULL DEFAULT '',
    first_ms        INTEGER NOT NULL,
    last_ms         INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    -- The names tried, one per line, the first 100.
    names           TEXT    NOT NULL DEFAULT '',
    -- The rule that fired, in words.
    summary         TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged', 'resolved')),
    acknowledged_by TEXT,
    acknowledged_ms INTEGER,
    resolved_by     TEXT,
    resolved_ms     INTEGER
);
CREATE INDEX alerts_by_time ON alerts (first_ms);
CREATE INDEX alerts_by_state ON alerts (state, first_ms);

-- The DSL's record of what was done: every note, acknowledgement and
-- resolution, never edited.
CREATE TABLE alert_notes (
    id        INTEGER PRIMARY KEY,
    alert_id  INTEGER NOT NULL REFERENCES alerts (id),
    time_ms   INTEGER NOT NULL,
    user_name TEXT    NOT NULL,
    action    TEXT    NOT NULL CHECK (action IN ('note', 'acknowledged', 'resolved', 'reopened')),
    text      TEXT    NOT NULL
);
CREATE INDEX alert_notes_by_alert ON alert_notes (alert_id, time_ms);

-- Every message to send (an alert, a digest, a test), written in the same
-- transaction as what it reports, and kept after it is sent or given up:
-- nothing is lost silently, and a restart carries on where it stopped.
CREATE TABLE alert_outbox (
    id         INTEGER PRIMARY KEY,
    channel    TEXT    NOT NULL CHECK (channel IN ('email', 'webhook')),
    kind       TEXT    NOT NULL CHECK (kind IN ('alert', 'digest', 'test')),
    alert_id   INTEGER REFERENCES alerts (id),
    -- E-mail: the addresses, one per line.
    recipients TEXT    NOT NULL DEFAULT '',
    subject    TEXT    NOT NULL DEFAULT '',
    -- E-mail: the text body; webhook: the JSON body.
    body       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_ms    INTEGER NOT NULL,
    last_error TEXT,
    state      TEXT    NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    done_ms    INTEGER
);
CREATE INDEX alert_outbox_due ON alert_outbox (state, next_ms);

-- When each digest last covered up to (so a restart neither repeats nor skips one).
CREATE TABLE alert_digests (
    kind    TEXT    PRIMARY KEY CHECK (kind IN ('daily', 'weekly')),
    upto_ms INTEGER NOT NULL
);
