-- Hedgerow schema 4: dashboard users and their roles, server-side sessions,
-- the login audit and one-time setup tokens for the first admin.
-- Secrets are never stored raw: passwords as Argon2id PHC strings, session
-- ids and setup tokens as the SHA-256 (hex) of the raw value.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_ms    INTEGER NOT NULL
);

CREATE TABLE user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    TEXT    NOT NULL CHECK (role IN ('admin', 'dsl', 'governor')),
    PRIMARY KEY (user_id, role)
) WITHOUT ROWID;

CREATE INDEX user_roles_by_role ON user_roles (role, user_id);

CREATE TABLE sessions (
    id_hash      TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    address      TEXT    NOT NULL
) WITHOUT ROWID;

CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE login_audit (
    id        INTEGER PRIMARY KEY,
    time_ms   INTEGER NOT NULL,
    user_name TEXT    NOT NULL,
    address   TEXT    NOT NULL,
    event     TEXT    NOT NULL CHECK (event IN ('login', 'failure', 'logout', 'lockout', 'setup', 'password',
                                                'roles', 'disabled', 'enabled', 'added'))
);

CREATE INDEX login_audit_by_time ON login_audit (time_ms);

CREATE TABLE setup_tokens (
    token_hash TEXT    PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms    INTEGER
) WITHOUT ROWID;
