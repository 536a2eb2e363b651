-- Hedgerow schema 9: what the DfE standards ask a school to show beyond
-- the blocking itself: unblock requests (over-blocking), the regular checks
-- (self-test runs and manual checks) and the annual filtering review.

-- An unblock request, from the block page (anyone on a school network) or
-- the dashboard (a staff user). Requests for the same name and group while
-- open are shown and decided together.
CREATE TABLE unblock_requests (
    id            INTEGER PRIMARY KEY,
    -- The blocked name, normalised as the blocklist matches it.
    name          TEXT    NOT NULL,
    -- The group whose answer was blocked (the requester's group).
    group_name    TEXT    NOT NULL,
    -- The category that blocked it when asked ('' when it was not blocked
    -- by a category, e.g. a deny override).
    category      TEXT    NOT NULL DEFAULT '',
    -- 1: a locked category (illegal content): it can only be declined.
    locked        INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
    -- Why the requester needs it, in their words.
    reason        TEXT    NOT NULL,
    -- The name the requester typed on the block page (optional), or the
    -- dashboard user who asked.
    requester     TEXT    NOT NULL DEFAULT '',
    source        TEXT    NOT NULL CHECK (source IN ('block-page', 'dashboard')),
    -- The address as the query log names it (a private group's pseudonym);
    -- '' from the dashboard. Shown to admins, never to governors.
    client        TEXT    NOT NULL DEFAULT '',
    created_ms    INTEGER NOT NULL,
    state         TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'approved', 'declined')),
    decided_by    TEXT,
    decided_ms    INTEGER,
    -- The admin's reply: required to decline, the override's reason when approved.
    reply         TEXT    NOT NULL DEFAULT '',
    -- Approved: the allow override's expiry (NULL: until removed).
    until_ms      INTEGER,
    -- Approved: the change log row that recorded the allow override.
    change_id     INTEGER
);
CREATE INDEX unblock_requests_by_state ON unblock_requests (state, name, group_name);
CREATE INDEX unblock_requests_by_time ON unblock_requests (created_ms);

-- One run of the built-in self-test: the running server asked over a real
-- socket, as each group, for known test names.
CREATE TABLE selftest_runs (
    id          INTEGER PRIMARY KEY,
    started_ms  INTEGER NOT NULL,
    finished_ms INTEGER NOT NULL,
    trigger     TEXT    NOT NULL CHECK (trigger IN ('dashboard', 'cli', 'schedule')),
    -- The dashboard user who ran it ('' for the CLI and the schedule).
    user_name   TEXT    NOT NULL DEFAULT '',
    checks      INTEGER NOT NULL,
    failures    INTEGER NOT NULL,
    -- Set when the run could not ask at all (no listener, no answer).
    error       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX selftest_runs_by_time ON selftest_runs (started_ms);

-- One question of a run: what the group got against what its policy says.
-- `name` is a test name (SWGfL's, a shipped list's, a SafeSearch or bypass
-- name), never a pupil's lookup.
CREATE TABLE selftest_results (
    run_id     INTEGER NOT NULL REFERENCES selftest_runs (id),
    group_name TEXT    NOT NULL,
    -- 'category', 'safesearch' or 'bypass'.
    kind       TEXT    NOT NULL CHECK (kind IN ('category', 'safesearch', 'bypass')),
    -- The category id, the search engine, or the bypass mechanism.
    subject    TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    -- In words: 'blocked', 'allowed', 'safesearch CNAME to ...', 'NXDOMAIN'.
    expected   TEXT    NOT NULL,
    got        TEXT    NOT NULL,
    passed     INTEGER NOT NULL CHECK (passed IN (0, 1))
);
CREATE INDEX selftest_results_by_run ON selftest_results (run_id);

-- A manual check recorded by a DSL or admin (for example SWGfL's
-- testfiltering.com from a pupil laptop on the pupil network).
CREATE TABLE manual_checks (
    id          INTEGER PRIMARY KEY,
    -- When the check was done (may be earlier than it was recorded).
    checked_ms  INTEGER NOT NULL,
    -- Who did the check, as typed.
    checked_by  TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    network     TEXT    NOT NULL DEFAULT '',
    group_name  TEXT    NOT NULL DEFAULT '',
    -- What was tested.
    tested      TEXT    NOT NULL,
    -- 'as-expected' or 'problem', and the result in words.
    outcome     TEXT    NOT NULL CHECK (outcome IN ('as-expected', 'problem')),
    result      TEXT    NOT NULL DEFAULT '',
    action      TEXT    NOT NULL DEFAULT '',
    -- The dashboard user who recorded it, and when.
    recorded_by TEXT    NOT NULL,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX manual_checks_by_time ON manual_checks (checked_ms);

-- The annual filtering review of one academic year. While a draft, the
-- review meeting fills it in; once complete it is a signed-off record:
-- `snapshot` holds the whole review as shown (JSON), and the triggers below
-- refuse any change to it or its actions, from any role, the API or SQL.
CREATE TABLE reviews (
    -- The academic year's first and last day, 'YYYY-MM-DD'.
    year_start   TEXT    PRIMARY KEY,
    year_end     TEXT    NOT NULL,
    -- Who took part, one per line ("name, role").
    participants TEXT    NOT NULL DEFAULT '',
    -- What the school does about each technical limitation (JSON object:
    -- limitation id -> text).
    limitations  TEXT    NOT NULL DEFAULT '{}',
    -- Anything else the meeting records.
    notes        TEXT    NOT NULL DEFAULT '',
    -- The next review's date, 'YYYY-MM-DD' ('' not yet set).
    next_review  TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT 'draft' CHECK (state IN ('draft', 'complete')),
    updated_by   TEXT    NOT NULL DEFAULT '',
    updated_ms   INTEGER NOT NULL DEFAULT 0,
    completed_by TEXT,
    completed_ms INTEGER,
    -- Complete: the review as it was signed off (JSON), shown from then on.
    snapshot     TEXT
);

-- The actions the review meeting agreed.
CREATE TABLE review_actions (
    id         INTEGER PRIMARY KEY,
    year_start TEXT    NOT NULL REFERENCES reviews (year_start),
    position   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    owner      TEXT    NOT NULL,
    -- 'YYYY-MM-DD'.
    due        TEXT    NOT NULL
);
CREATE INDEX review_actions_by_year ON review_actions (year_start, position);

-- Each trigger also covers REPLACE: SQLite deletes the row a REPLACE
-- conflicts with without firing DELETE triggers, so an INSERT or UPDATE that
-- would land on a complete review's row (or one of its actions' ids) is
-- refused before it can.
CREATE TRIGGER reviews_complete_no_insert BEFORE INSERT ON reviews
WHEN EXISTS (SELECT 1 FROM reviews WHERE year_start = NEW.year_start AND state = 'complete')
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;

CREATE TRIGGER reviews_complete_no_update BEFORE UPDATE ON reviews
WHEN OLD.state = 'complete'
  OR EXISTS (SELECT 1 FROM reviews WHERE year_start = NEW.year_start AND state = 'complete')
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;

CREATE TRIGGER reviews_complete_no_delete BEFORE DELETE ON reviews
WHEN OLD.state = 'complete'
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;

CREATE TRIGGER review_actions_complete_no_insert BEFORE INSERT ON review_actions
WHEN (SELECT state FROM reviews WHERE year_start = NEW.year_start) = 'complete'
  OR EXISTS (SELECT 1 FROM review_actions AS a JOIN reviews AS r ON r.year_start = a.year_start
             WHERE a.id = NEW.id AND r.state = 'complete')
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;

CREATE TRIGGER review_actions_complete_no_update BEFORE UPDATE ON review_actions
WHEN (SELECT state FROM reviews WHERE year_start = OLD.year_start) = 'complete'
  OR (SELECT state FROM reviews WHERE year_start = NEW.year_start) = 'complete'
  OR EXISTS (SELECT 1 FROM review_actions AS a JOIN reviews AS r ON r.year_start = a.year_start
             WHERE a.id = NEW.id AND r.state = 'complete')
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;

CREATE TRIGGER review_actions_complete_no_delete BEFORE DELETE ON review_actions
WHEN (SELECT state FROM reviews WHERE year_start = OLD.year_start) = 'complete'
BEGIN
    SELECT RAISE(ABORT, 'this review is complete and cannot be changed');
END;
