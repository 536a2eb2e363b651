//! Dashboard users: names, Argon2id password hashes, roles, and the one-time
//! setup tokens that make the first admin.
//!
//! - A name is 1-64 ASCII letters, digits, `.`, `-`, `_` or `@`, unique
//!   ignoring case. A password is at least [`MIN_PASSWORD_CHARS`] characters.
//!   A user holds at least one [`Role`].
//! - Passwords are stored as Argon2id PHC strings (default parameters, a
//!   random salt each); [`Users::verify`] costs one Argon2id verification
//!   whether or not the name exists, so timing does not tell names apart.
//! - There is always an enabled admin once there has been one: the last one
//!   can be neither disabled nor lose the admin role ([`UserError::LastAdmin`]).
//! - Disabling a user or setting their password ends their sessions in the
//!   same transaction.
//! - A setup token ([`SetupTokens`]) is issued only while no admin exists; it
//!   is redeemed once, before it expires, in the same transaction that adds
//!   the admin, so one token can never make two admins.
//!
//! Every write is on a short-lived `synchronous=FULL` connection (as the
//! device table): an acknowledged change survives a power cut.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted, in characters (hashing has a cost).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// The longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// What a user may do in the dashboard; a user may hold several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The ICT lead: everything, policy and users included.
    Admin,
    /// The Designated Safeguarding Lead: the query log, devices, alerts, checks.
    Dsl,
    /// Read-only: policy as it stands, the change log and the review.
    Governor,
}

impl Role {
    /// Every role, in the order they are shown.
    pub const ALL: [Role; 3] = [Role::Admin, Role::Dsl, Role::Governor];

    /// The word stored and shown: `admin`, `dsl` or `governor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dsl => "dsl",
            Role::Governor => "governor",
        }
    }

    /// The role a word names (any case, surrounding space ignored).
    pub fn parse(word: &str) -> Option<Role> {
        let word = word.trim();
        Role::ALL.into_iter().find(|role| role.as_str().eq_ignore_ascii_case(word))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(word: &str) -> Result<Role, String> {
        Role::parse(word).ok_or_else(|| format!("{word:?} is not a role: use admin, dsl or governor"))
    }
}

/// One dashboard user (never with the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    /// Sorted, without repeats; never empty.
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub created_ms: i64,
}

impl User {
    /// Whether the user holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The roles as words, comma-separated (`admin,dsl`).
    pub fn roles_text(&self) -> String {
        self.roles.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Why a user change was refused. Each message says what to do;
/// [`UserError::field`] names the form field it belongs beside.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Name(String),
    #[error("the name {0:?} is taken (names are the same whatever their case): choose another")]
    NameTaken(String),
    #[error(
        "the password is too short: use at least {MIN_PASSWORD_CHARS} characters (a few words strung together is easy to remember)"
    )]
    PasswordTooShort,
    #[error("the password is too long: use at most {MAX_PASSWORD_CHARS} characters")]
    PasswordTooLong,
    #[error("give the user at least one role: admin, dsl or governor")]
    NoRoles,
    #[error("there is no user {0:?}: check the name (`hedgerow user list` shows them)")]
    NotFound(String),
    #[error(
        "{0:?} is the last enabled admin: make another user an admin first, or nobody could manage users and policy"
    )]
    LastAdmin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UserError {
    /// The form field the error belongs beside: `name`, `password` or
    /// `roles`; `None` for a store failure.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            UserError::Name(_) | UserError::NameTaken(_) | UserError::NotFound(_) => Some("name"),
            UserError::PasswordTooShort | UserError::PasswordTooLong => Some("password"),
            UserError::NoRoles | UserError::LastAdmin(_) => Some("roles"),
            UserError::Store(_) => None,
        }
    }
}

/// Checks a user name: 1-64 ASCII letters, digits, `.`, `-`, `_` or `@`.
pub fn check_name(name: &str) -> Result<(), UserError> {
    if name.is_empty() {
        return Err(UserError::Name("give a user name".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(UserError::Name(format!("the name is too long: use at most {MAX_NAME_CHARS} characters")));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))) {
        return Err(UserError::Name(format!(
            "the name may not contain {bad:?}: use letters a-z, digits and . - _ @ (for example j.smith)"
        )));
    }
    Ok(())
}

/// Checks a password's length (at least 12, at most 1024 characters).
pub fn check_password(password: &str) -> Result<(), UserError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(UserError::PasswordTooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(UserError::PasswordTooLong);
    }
    Ok(())
}

/// The roles sorted and without repeats; at least one.
fn checked_roles(roles: &[Role]) -> Result<Vec<Role>, UserError> {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(UserError::NoRoles);
    }
    Ok(roles)
}

/// An Argon2id PHC string of `password` with a fresh random salt.
fn hash_password(password: &str) -> Result<String, StoreError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| StoreError::Invalid(format!("cannot hash the password ({error})")))
}

/// Whether `password` matches the PHC string `hash` (false for a damaged hash).
fn password_matches(password: &str, hash: &str) -> bool {
    Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// A hash no password is known to match, verified against for unknown names
/// so that they cost as much as known ones.
fn stand_in_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut random = [0u8; 32];
        fill_random(&mut random);
        hash_password(&hex(&random)).unwrap_or_default()
    })
}

/// Fills `bytes` from the operating system's random source.
pub(crate) fn fill_random(bytes: &mut [u8]) {
    use rand::TryRngCore;
    rand::rngs::OsRng.try_fill_bytes(bytes).expect("the operating system's random source failed");
}

/// 32 random bytes as 64 lower-case hex digits (URL-safe): a session id,
/// CSRF token or setup token.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    hex(&bytes)
}

/// The SHA-256 of a raw secret as hex: what is stored in its place.
pub(crate) fn token_hash(raw: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, raw.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// A `synchronous=FULL` connection for configuration state.
pub(crate) fn connect(database: &Path) -> Result<Connection, StoreError> {
    schema::open(database, Purpose::Config)
}

pub(crate) fn begin<'c>(conn: &'c mut Connection, database: &Path) -> Result<Transaction<'c>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(database, "start"))
}

const USER_COLUMNS: &str = "id, name, disabled, created_ms";

/// Reads a user row (`USER_COLUMNS`) and then its roles.
pub(crate) fn user_by(
    conn: &Connection,
    database: &Path,
    condition: &str,
    key: &dyn rusqlite::ToSql,
) -> Result<Option<User>, StoreError> {
    let user = conn
        .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE {condition}"), [key], user_row)
        .optional()
        .map_err(StoreError::sqlite(database, "read a user"))?;
    match user {
        Some(mut user) => {
            user.roles = roles_of(conn, database, user.id)?;
            Ok(Some(user))
        }
        None => Ok(None),
    }
}

fn user_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User { id: row.get(0)?, name: row.get(1)?, roles: Vec::new(), disabled: row.get(2)?, created_ms: row.get(3)? })
}

fn roles_of(conn: &Connection, database: &Path, user_id: i64) -> Result<Vec<Role>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT role FROM user_roles WHERE user_id = ?1")
        .map_err(StoreError::sqlite(database, "read a user's roles"))?;
    let words = statement
        .query_map([user_id], |row| row.get::<_, String>(0))
        .map_err(StoreError::sqlite(database, "read a user's roles"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::sqlite(database, "read a user's roles"))?;
    let mut roles: Vec<Role> = words.iter().filter_map(|word| Role::parse(word)).collect();
    roles.sort();
    Ok(roles)
}

/// Enabled users holding the admin role.
fn enabled_admins(conn: &Connection, database: &Path) -> Result<u64, StoreError> {
    conn.query_row(
        "SELECT count(*) FROM users JOIN user_roles ON user_roles.user_id = users.id
         WHERE user_roles.role = 'admin' AND users.disabled = 0",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|count| count as u64)
    .map_err(StoreError::sqlite(database, "count the admins"))
}

/// Inserts a checked user with an already-hashed password.
fn insert_user(
    tx: &Transaction<'_>,
    database: &Path,
    name: &str,
    hash: &str,
    roles: &[Role],
    now_ms: i64,
) -> Result<User, UserError> {
    let taken: bool = tx
        .query_row("SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)", [name], |row| row.get(0))
        .map_err(StoreError::sqlite(database, "look the name up"))?;
    if taken {
        return Err(UserError::NameTaken(name.to_string()));
    }
    tx.execute(
        "INSERT INTO users (name, password_hash, disabled, created_ms) VALUES (?1, ?2, 0, ?3)",
        params![name, hash, now_ms],
    )
    .map_err(StoreError::sqlite(database, "add the user"))?;
    let id = tx.last_insert_rowid();
    write_roles(tx, database, id, roles)?;
    Ok(User { id, name: name.to_string(), roles: roles.to_vec(), disabled: false, created_ms: now_ms })
}

fn write_roles(tx: &Transaction<'_>, database: &Path, user_id: i64, roles: &[Role]) -> Result<(), StoreError> {
    tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [user_id])
        .map_err(StoreError::sqlite(database, "set the user's roles"))?;
    for role in roles {
        tx.execute("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)", params![user_id, role.as_str()])
            .map_err(StoreError::sqlite(database, "set the user's roles"))?;
    }
    Ok(())
}

/// The users table of one database.
#[derive(Debug, Clone)]
pub struct Users {
    database: PathBuf,
}

impl Users {
    /// The database file the users are in.
    pub fn database(&self) -> &Path {
        &self.database
    }

    /// The users of `database`, creating it or bringing its schema up to date.
    pub fn open(database: &Path) -> Result<Users, StoreError> {
        connect(database)?;
        Ok(Users { database: database.to_path_buf() })
    }

    /// Adds a user. The name, password and roles are checked first (see
    /// [`UserError::field`]); the password is hashed before the write.
    pub fn add(&self, name: &str, password: &str, roles: &[Role], now_ms: i64) -> Result<User, UserError> {
        check_name(name)?;
        check_password(password)?;
        let roles = checked_roles(roles)?;
        let hash = hash_password(password)?;
        let mut conn = connect(&self.database)?;
        let tx = begin(&mut conn, &self.database)?;
        let user = insert_user(&tx, &self.database, name, &hash, &roles, now_ms)?;
        tx.commit().map_err(StoreError::sqlite(&self.database, "save the user"))?;
        Ok(user)
    }

    /// The enabled user whose name (any case) and password match; `None` for
    /// an unknown name, a wrong password or a disabled user. Costs one
    /// Argon2id verification in every case.
    pub fn verify(&self, name: &str, password: &str) -> Result<Option<User>, StoreError> {
        let conn = connect(&self.database)?;
        let found: Option<(i64, String)> = conn
            .query_row("SELECT id, password_hash FROM users WHERE name = ?1", [name], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(StoreError::sqlite(&self.database, "read a user"))?;
        let Some((id, hash)) = found else {
            password_matches(password, stand_in_hash());
            return Ok(None);
        };
        if !password_matches(password, &hash) {
            return Ok(None);
        }
        Ok(user_by(&conn, &self.database, "id = ?1", &id)?.filter(|user| !user.disabled))
    }

    /// The user with this name (any case).
    pub fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        let conn = connect(&self.database)?;
        user_by(&conn, &self.database, "name = ?1", &name)
    }

    /// The user with this id.
    pub fn get_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        let conn = connect(&self.database)?;
        user_by(&conn, &self.database, "id = ?1", &id)
    }

    /// Every user, by name (ignoring case); one query, however many users.
    pub fn list(&self) -> Result<Vec<User>, StoreError> {
        let conn = connect(&self.database)?;
        let mut statement = conn
            .prepare(
                "SELECT users.id, users.name, users.disabled, users.created_ms, group_concat(user_roles.role)
                 FROM users LEFT JOIN user_roles ON user_roles.user_id = users.id
                 GROUP BY users.id ORDER BY users.name COLLATE NOCASE",
            )
            .map_err(StoreError::sqlite(&self.database, "list users"))?;
        let rows = statement
            .query_map([], |row| {
                let mut user = user_row(row)?;
                let roles: Option<String> = row.get(4)?;
                user.roles = roles.as_deref().unwrap_or_default().split(',').filter_map(Role::parse).collect();
                user.roles.sort();
                Ok(user)
            })
            .map_err(StoreError::sqlite(&self.database, "list users"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(&self.database, "list users"))
    }

    /// Sets a user's password and ends all their sessions.
    pub fn set_password(&self, name: &str, password: &str) -> Result<User, UserError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        self.change(name, |tx, database, user| {
            tx.execute("UPDATE users SET password_hash = ?1 WHERE id = ?2", params![hash, user.id])
                .map_err(StoreError::sqlite(database, "set the password"))?;
            end_sessions(tx, database, user.id)?;
            Ok(())
        })
    }

    /// Replaces a user's roles (at least one). The last enabled admin keeps
    /// the admin role.
    pub fn set_roles(&self, name: &str, roles: &[Role]) -> Result<User, UserError> {
        let roles = checked_roles(roles)?;
        self.change(name, |tx, database, user| {
            if user.has(Role::Admin) && !roles.contains(&Role::Admin) && !user.disabled {
                refuse_last_admin(tx, database, user)?;
            }
            write_roles(tx, database, user.id, &roles)?;
            user.roles = roles.clone();
            Ok(())
        })
    }

    /// Disables (ending their sessions) or enables a user. The last enabled
    /// admin cannot be disabled.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, UserError> {
        self.change(name, |tx, database, user| {
            if disabled && !user.disabled && user.has(Role::Admin) {
                refuse_last_admin(tx, database, user)?;
            }
            tx.execute("UPDATE users SET disabled = ?1 WHERE id = ?2", params![disabled, user.id])
                .map_err(StoreError::sqlite(database, "disable or enable the user"))?;
            if disabled {
                end_sessions(tx, database, user.id)?;
            }
            user.disabled = disabled;
            Ok(())
        })
    }

    /// Whether any enabled user holds the admin role.
    pub fn any_admin(&self) -> Result<bool, StoreError> {
        let conn = connect(&self.database)?;
        Ok(enabled_admins(&conn, &self.database)? > 0)
    }

    /// Runs `edit` on the named user in one transaction, returning the user
    /// as `edit` left them.
    fn change(
        &self,
        name: &str,
        edit: impl FnOnce(&Transaction<'_>, &Path, &mut User) -> Result<(), UserError>,
    ) -> Result<User, UserError> {
        let mut conn = connect(&self.database)?;
        let tx = begin(&mut conn, &self.database)?;
        let mut user =
            user_by(&tx, &self.database, "name = ?1", &name)?.ok_or_else(|| UserError::NotFound(name.to_string()))?;
        edit(&tx, &self.database, &mut user)?;
        tx.commit().map_err(StoreError::sqlite(&self.database, "save the user"))?;
        Ok(user)
    }
}

fn refuse_last_admin(tx: &Transaction<'_>, database: &Path, user: &User) -> Result<(), UserError> {
    if enabled_admins(tx, database)? <= 1 {
        return Err(UserError::LastAdmin(user.name.clone()));
    }
    Ok(())
}

fn end_sessions(tx: &Transaction<'_>, database: &Path, user_id: i64) -> Result<usize, StoreError> {
    tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])
        .map_err(StoreError::sqlite(database, "end the user's sessions"))
}

/// Why a setup token did not make an admin.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "this setup link is unknown, used or expired: restart `hedgerow serve` for a new one, or run `hedgerow user add NAME --role admin`"
    )]
    InvalidToken,
    #[error("an admin already exists: log in, or ask an admin for an account")]
    AdminExists,
    #[error(transparent)]
    User(#[from] UserError),
}

impl SetupError {
    /// The form field the error belongs beside (see [`UserError::field`]).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            SetupError::User(error) => error.field(),
            _ => None,
        }
    }
}

impl From<StoreError> for SetupError {
    fn from(error: StoreError) -> SetupError {
        SetupError::User(UserError::Store(error))
    }
}

/// One-time tokens (for a setup link) that make the first admin.
#[derive(Debug, Clone)]
pub struct SetupTokens {
    database: PathBuf,
}

impl SetupTokens {
    /// The setup tokens of `database`, creating it or bringing its schema up to date.
    pub fn open(database: &Path) -> Result<SetupTokens, StoreError> {
        connect(database)?;
        Ok(SetupTokens { database: database.to_path_buf() })
    }

    /// A new raw token valid for `valid_ms`, or `None` when an enabled admin
    /// exists. Tokens issued before and not used are withdrawn: only the
    /// latest link works. Only the token's hash is stored.
    pub fn issue(&self, now_ms: i64, valid_ms: i64) -> Result<Option<String>, StoreError> {
        let mut conn = connect(&self.database)?;
        let tx = begin(&mut conn, &self.database)?;
        if enabled_admins(&tx, &self.database)? > 0 {
            return Ok(None);
        }
        let raw = random_token();
        tx.execute("DELETE FROM setup_tokens WHERE used_ms IS NULL", [])
            .map_err(StoreError::sqlite(&self.database, "withdraw old setup tokens"))?;
        tx.execute(
            "INSERT INTO setup_tokens (token_hash, created_ms, expires_ms, used_ms) VALUES (?1, ?2, ?3, NULL)",
            params![token_hash(&raw), now_ms, now_ms.saturating_add(valid_ms)],
        )
        .map_err(StoreError::sqlite(&self.database, "save the setup token"))?;
        tx.commit().map_err(StoreError::sqlite(&self.database, "save the setup token"))?;
        Ok(Some(raw))
    }

    /// Whether `raw` is an unused, unexpired token while no admin exists
    /// (to show the setup form; nothing is changed).
    pub fn is_valid(&self, raw: &str, now_ms: i64) -> Result<bool, StoreError> {
        let conn = connect(&self.database)?;
        Ok(enabled_admins(&conn, &self.database)? == 0 && usable(&conn, &self.database, raw, now_ms)?)
    }

    /// Adds the first admin with `raw`: in one transaction the token is
    /// checked (known, unused, unexpired), no enabled admin may exist, the
    /// admin is added and the token marked used. A refused name or password
    /// leaves the token unused so the form can be sent again.
    pub fn redeem_and_add_admin(&self, raw: &str, name: &str, password: &str, now_ms: i64) -> Result<User, SetupError> {
        check_name(name)?;
        check_password(password)?;
        {
            // Fail fast, before the cost of hashing.
            let conn = connect(&self.database)?;
            if !usable(&conn, &self.database, raw, now_ms)? {
                return Err(SetupError::InvalidToken);
            }
        }
        let hash = hash_password(password)?;
        let mut conn = connect(&self.database)?;
        let tx = begin(&mut conn, &self.database)?;
        if !usable(&tx, &self.database, raw, now_ms)? {
            return Err(SetupError::InvalidToken);
        }
        if enabled_admins(&tx, &self.database)? > 0 {
            return Err(SetupError::AdminExists);
        }
        let user = insert_user(&tx, &self.database, name, &hash, &[Role::Admin], now_ms)?;
        tx.execute("UPDATE setup_tokens SET used_ms = ?1 WHERE token_hash = ?2", params![now_ms, token_hash(raw)])
            .map_err(StoreError::sqlite(&self.database, "mark the setup token used"))?;
        tx.commit().map_err(StoreError::sqlite(&self.database, "save the admin"))?;
        Ok(user)
    }
}

fn usable(conn: &Connection, database: &Path, raw: &str, now_ms: i64) -> Result<bool, StoreError> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM setup_tokens WHERE token_hash = ?1 AND used_ms IS NULL AND expires_ms > ?2)",
        params![token_hash(raw), now_ms],
        |row| row.get(0),
    )
    .map_err(StoreError::sqlite(database, "check the setup token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_and_print_as_their_words() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert_eq!(Role::parse(" DSL "), Some(Role::Dsl));
        assert_eq!(Role::parse("teacher"), None);
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "j.smith", "ict-lead_2", "head@school.sch.uk", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "j smith", "jörg", "a/b", &"x".repeat(65)] {
            assert_eq!(check_name(bad).unwrap_err().field(), Some("name"), "{bad}");
        }
    }

    #[test]
    fn a_token_hash_is_sha256_hex() {
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let token = random_token();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(token, random_token());
    }
}
