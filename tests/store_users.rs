//! Dashboard users, sessions, setup tokens and the login audit on real
//! SQLite files.

use std::path::PathBuf;

use hedgerow::store::users::MIN_PASSWORD_CHARS;
use hedgerow::store::{AuditEvent, LoginAudit, Role, Sessions, SetupError, SetupTokens, UserError, Users};

const PASSWORD: &str = "correct horse battery";
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

fn database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hedgerow.db");
    (dir, path)
}

#[test]
fn a_user_is_added_verified_disabled_and_given_roles() {
    let (_dir, db) = database();
    let users = Users::open(&db).unwrap();
    assert!(!users.any_admin().unwrap());
    let added = users.add("j.smith", PASSWORD, &[Role::Dsl, Role::Admin, Role::Dsl], 1_000).unwrap();
    assert_eq!(added.roles, vec![Role::Admin, Role::Dsl], "sorted, without repeats");
    assert_eq!((added.name.as_str(), added.disabled, added.created_ms), ("j.smith", false, 1_000));
    assert!(users.any_admin().unwrap());

    // The name matches in any case; the password exactly.
    assert_eq!(users.verify("J.Smith", PASSWORD).unwrap(), Some(added.clone()));
    assert_eq!(users.verify("j.smith", "correct horse battery ").unwrap(), None);
    assert_eq!(users.verify("j.smith", "Correct horse battery").unwrap(), None);
    assert_eq!(users.verify("nobody", PASSWORD).unwrap(), None);

    // The hash is Argon2id, never the password.
    let stored: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT password_hash FROM users", [], |row| row.get(0))
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains(PASSWORD));

    users.add("governor1", PASSWORD, &[Role::Governor], 2_000).unwrap();
    let changed = users.set_roles("governor1", &[Role::Governor, Role::Dsl]).unwrap();
    assert_eq!(changed.roles, vec![Role::Dsl, Role::Governor]);
    assert_eq!(users.get("GOVERNOR1").unwrap().unwrap().roles, vec![Role::Dsl, Role::Governor]);
    assert_eq!(users.set_roles("governor1", &[]).unwrap_err().field(), Some("roles"));

    let disabled = users.set_disabled("governor1", true).unwrap();
    assert!(disabled.disabled);
    assert_eq!(users.verify("governor1", PASSWORD).unwrap(), None, "a disabled user cannot log in");
    users.set_disabled("governor1", false).unwrap();
    assert!(users.verify("governor1", PASSWORD).unwrap().is_some());

    users.set_password("governor1", "a new long passphrase").unwrap();
    assert_eq!(users.verify("governor1", PASSWORD).unwrap(), None);
    assert!(users.verify("governor1", "a new long passphrase").unwrap().is_some());

    let names: Vec<String> = users.list().unwrap().into_iter().map(|user| user.name).collect();
    assert_eq!(names, vec!["governor1", "j.smith"]);
    assert!(matches!(users.set_disabled("ghost", true).unwrap_err(), UserError::NotFound(_)));

    // Another process opening the same file sees the same users.
    assert_eq!(Users::open(&db).unwrap().get("j.smith").unwrap(), Some(added));
}

#[test]
fn names_are_unique_ignoring_case_and_bad_values_name_their_field() {
    let (_dir, db) = database();
    let users = Users::open(&db).unwrap();
    users.add("Head", PASSWORD, &[Role::Admin], 0).unwrap();
    let error = users.add("head", PASSWORD, &[Role::Dsl], 0).unwrap_err();
    assert!(matches!(error, UserError::NameTaken(_)), "{error}");
    assert_eq!(error.field(), Some("name"));

    let short = "x".repeat(MIN_PASSWORD_CHARS - 1);
    let error = users.add("pat", &short, &[Role::Dsl], 0).unwrap_err();
    assert_eq!(error.field(), Some("password"));
    assert!(error.to_string().contains("at least 12 characters"), "{error}");
    // Twelve characters are enough, counted as characters, not bytes.
    users.add("pat", "ééééééééééé1", &[Role::Dsl], 0).unwrap();

    let error = users.add("no roles", PASSWORD, &[Role::Dsl], 0).unwrap_err();
    assert_eq!(error.field(), Some("name"));
    assert!(error.to_string().contains("may not contain ' '"), "{error}");
    assert_eq!(users.add("", PASSWORD, &[Role::Dsl], 0).unwrap_err().field(), Some("name"));
    assert_eq!(users.add("sam", PASSWORD, &[], 0).unwrap_err().field(), Some("roles"));
    assert_eq!(users.list().unwrap().len(), 2);
}

#[test]
fn the_last_enabled_admin_cannot_be_disabled_or_lose_the_role() {
    let (_dir, db) = database();
    let users = Users::open(&db).unwrap();
    users.add("ict", PASSWORD, &[Role::Admin], 0).unwrap();
    let error = users.set_disabled("ict", true).unwrap_err();
    assert!(matches!(error, UserError::LastAdmin(_)), "{error}");
    assert!(error.to_string().contains("last enabled admin"), "{error}");
    assert!(matches!(users.set_roles("ict", &[Role::Dsl]).unwrap_err(), UserError::LastAdmin(_)));
    assert!(users.get("ict").unwrap().unwrap().has(Role::Admin));

    // With a second admin, either may go.
    users.add("deputy", PASSWORD, &[Role::Admin], 0).unwrap();
    users.set_disabled("ict", true).unwrap();
    // The disabled one does not count: the deputy is now the last.
    assert!(matches!(users.set_roles("deputy", &[Role::Governor]).unwrap_err(), UserError::LastAdmin(_)));
    users.set_roles("ict", &[Role::Dsl]).unwrap();
    assert!(users.any_admin().unwrap());
}

#[test]
fn sessions_end_when_idle_too_long_or_too_old() {
    let (_dir, db) = database();
    let users = Users::open(&db).unwrap();
    let sessions = Sessions::open(&db).unwrap();
    let user = users.add("dsl", PASSWORD, &[Role::Dsl], 0).unwrap();
    let (idle, absolute) = (30 * MINUTE, 12 * HOUR);

    let new = sessions.create(user.id, "10.0.0.5", 0).unwrap();
    assert_eq!(new.raw_id.len(), 64);
    assert_ne!(new.raw_id, new.csrf_token);
    let session = sessions.lookup(&new.raw_id, 10 * MINUTE, idle, absolute).unwrap().unwrap();
    assert_eq!(session.user, user);
    assert_eq!(session.csrf_token, new.csrf_token);
    assert_eq!((session.created_ms, session.last_seen_ms), (0, 10 * MINUTE));
    assert_eq!(session.address, "10.0.0.5");
    // The raw id is not in the database.
    let stored: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT id_hash FROM sessions", [], |row| row.get(0))
        .unwrap();
    assert_ne!(stored, new.raw_id);
    // Seen again within the minute: last_seen stays (no write).
    let again = sessions.lookup(&new.raw_id, 10 * MINUTE + 30_000, idle, absolute).unwrap().unwrap();
    assert_eq!(again.last_seen_ms, 10 * MINUTE);

    // Idle: 31 minutes since last seen.
    assert_eq!(sessions.lookup(&new.raw_id, 41 * MINUTE, idle, absolute).unwrap(), None);
    // Gone for good, even for a lookup that would be in time.
    assert_eq!(sessions.lookup(&new.raw_id, 11 * MINUTE, idle, absolute).unwrap(), None);

    // Absolute: kept active every 20 minutes, it still ends after 12 hours.
    let new = sessions.create(user.id, "10.0.0.5", 0).unwrap();
    let mut now = 0;
    while now + 20 * MINUTE <= absolute {
        now += 20 * MINUTE;
        assert!(sessions.lookup(&new.raw_id, now, idle, absolute).unwrap().is_some(), "at {now}");
    }
    assert_eq!(sessions.lookup(&new.raw_id, absolute + 1, idle, absolute).unwrap(), None);

    assert_eq!(sessions.lookup("not a session", 0, idle, absolute).unwrap(), None);
    let new = sessions.create(user.id, "10.0.0.5", 0).unwrap();
    assert!(sessions.delete(&new.raw_id).unwrap());
    assert_eq!(sessions.lookup(&new.raw_id, 1, idle, absolute).unwrap(), None);
    assert!(!sessions.delete(&new.raw_id).unwrap());
}

#[test]
fn a_users_sessions_end_on_delete_for_user_disable_and_password_change() {
    let (_dir, db) = database();
    let users = Users::open(&db).unwrap();
    let sessions = Sessions::open(&db).unwrap();
    users.add("ict", PASSWORD, &[Role::Admin], 0).unwrap();
    let dsl = users.add("dsl", PASSWORD, &[Role::Dsl], 0).unwrap();
    let other = users.add("gov", PASSWORD, &[Role::Governor], 0).unwrap();
    let (idle, absolute) = (30 * MINUTE, 12 * HOUR);
    let alive = |raw: &str| sessions.lookup(raw, 1, idle, absolute).unwrap().is_some();

    let laptop = sessions.create(dsl.id, "10.0.0.5", 0).unwrap();
    let tablet = sessions.create(dsl.id, "10.0.0.6", 0).unwrap();
    let governor = sessions.create(other.id, "10.0.0.7", 0).unwrap();
    assert_eq!(sessions.delete_for_user(dsl.id).unwrap(), 2);
    assert!(!alive(&laptop.raw_id) && !alive(&tablet.raw_id));
    assert!(alive(&governor.raw_id), "another user's session is kept");

    let laptop = sessions.create(dsl.id, "10.0.0.5", 0).unwrap();
    users.set_password("dsl", "another long passphrase").unwrap();
    assert!(!alive(&laptop.raw_id), "a password change ends sessions");

    let laptop = sessions.create(dsl.id, "10.0.0.5", 0).unwrap();
    users.set_disabled("dsl", true).unwrap();
    assert!(!alive(&laptop.raw_id), "disabling ends sessions");
    assert_eq!(sessions.count_for_user(dsl.id).unwrap(), 0);

    // A session found for a user disabled behind its back is refused and removed.
    users.set_disabled("dsl", false).unwrap();
    let laptop = sessions.create(dsl.id, "10.0.0.5", 0).unwrap();
    rusqlite::Connection::open(&db).unwrap().execute("UPDATE users SET disabled = 1 WHERE name = 'dsl'", []).unwrap();
    assert!(!alive(&laptop.raw_id));
    assert_eq!(sessions.count_for_user(dsl.id).unwrap(), 0);

    // Roles changed: the session reads the user as they are now.
    let session = sessions.create(other.id, "10.0.0.7", 0).unwrap();
    users.set_roles("gov", &[Role::Governor, Role::Dsl]).unwrap();
    let found = sessions.lookup(&session.raw_id, 1, idle, absolute).unwrap().unwrap();
    assert_eq!(found.user.roles, vec![Role::Dsl, Role::Governor]);

    assert_eq!(sessions.delete_expired(2 * absolute, idle, absolute).unwrap(), 2);
}

#[test]
fn a_setup_token_makes_one_admin_once_before_it_expires() {
    let (_dir, db) = database();
    let tokens = SetupTokens::open(&db).unwrap();
    let users = Users::open(&db).unwrap();
    let raw = tokens.issue(0, HOUR).unwrap().expect("no admin yet, so a token");
    assert!(tokens.is_valid(&raw, 1).unwrap());
    assert!(!tokens.is_valid("guess", 1).unwrap());

    // A bad password is refused beside its field and leaves the token usable.
    let error = tokens.redeem_and_add_admin(&raw, "ict", "short", 1).unwrap_err();
    assert_eq!(error.field(), Some("password"));
    assert!(tokens.is_valid(&raw, 1).unwrap());
    assert!(matches!(tokens.redeem_and_add_admin("guess", "ict", PASSWORD, 1).unwrap_err(), SetupError::InvalidToken));

    let admin = tokens.redeem_and_add_admin(&raw, "ict", PASSWORD, 2).unwrap();
    assert_eq!(admin.roles, vec![Role::Admin]);
    assert_eq!(users.verify("ict", PASSWORD).unwrap(), Some(admin));
    // Single use.
    assert!(!tokens.is_valid(&raw, 3).unwrap());
    assert!(matches!(tokens.redeem_and_add_admin(&raw, "second", PASSWORD, 3).unwrap_err(), SetupError::InvalidToken));
    assert_eq!(users.list().unwrap().len(), 1);
    // Refused once an admin exists.
    assert_eq!(tokens.issue(4, HOUR).unwrap(), None);
}

#[test]
fn a_setup_token_expires_and_only_the_latest_works() {
    let (_dir, db) = database();
    let tokens = SetupTokens::open(&db).unwrap();
    let first = tokens.issue(0, HOUR).unwrap().unwrap();
    assert!(matches!(
        tokens.redeem_and_add_admin(&first, "ict", PASSWORD, HOUR).unwrap_err(),
        SetupError::InvalidToken
    ));
    assert!(!tokens.is_valid(&first, HOUR).unwrap());

    let second = tokens.issue(HOUR, HOUR).unwrap().unwrap();
    let third = tokens.issue(HOUR + 1, HOUR).unwrap().unwrap();
    assert!(!tokens.is_valid(&second, HOUR + 2).unwrap(), "a newer link withdraws the older");
    assert!(tokens.is_valid(&third, HOUR + 2).unwrap());

    // An admin made another way (the CLI) makes the token useless.
    Users::open(&db).unwrap().add("cli-admin", PASSWORD, &[Role::Admin], HOUR + 3).unwrap();
    assert!(!tokens.is_valid(&third, HOUR + 4).unwrap());
    assert!(matches!(
        tokens.redeem_and_add_admin(&third, "ict", PASSWORD, HOUR + 4).unwrap_err(),
        SetupError::AdminExists
    ));
    assert_eq!(Users::open(&db).unwrap().list().unwrap().len(), 1);
}

#[test]
fn audit_rows_are_listed_newest_first() {
    let (_dir, db) = database();
    let audit = LoginAudit::open(&db).unwrap();
    audit.record(AuditEvent::Added, "ict", "cli", 1_000).unwrap();
    audit.record(AuditEvent::Failure, "ICT", "10.0.0.9", 2_000).unwrap();
    audit.record(AuditEvent::Login, "ict", "10.0.0.5", 3_000).unwrap();
    audit.record(AuditEvent::Logout, "ict", "10.0.0.5", 3_000).unwrap();
    assert_eq!(audit.count().unwrap(), 4);
    let rows = audit.list(10, 0).unwrap();
    let seen: Vec<(i64, AuditEvent, &str)> =
        rows.iter().map(|row| (row.time_ms, row.event, row.address.as_str())).collect();
    assert_eq!(
        seen,
        vec![
            (3_000, AuditEvent::Logout, "10.0.0.5"),
            (3_000, AuditEvent::Login, "10.0.0.5"),
            (2_000, AuditEvent::Failure, "10.0.0.9"),
            (1_000, AuditEvent::Added, "cli"),
        ]
    );
    let page: Vec<AuditEvent> = audit.list(2, 1).unwrap().into_iter().map(|row| row.event).collect();
    assert_eq!(page, vec![AuditEvent::Login, AuditEvent::Failure]);

    assert_eq!(audit.failures_since(Some("ict"), None, 0).unwrap(), 1);
    assert_eq!(audit.failures_since(None, Some("10.0.0.9"), 0).unwrap(), 1);
    assert_eq!(audit.failures_since(Some("ict"), None, 2_001).unwrap(), 0);
}

#[test]
fn one_setup_token_raced_by_several_browsers_makes_exactly_one_admin() {
    let (_dir, db) = database();
    let raw = SetupTokens::open(&db).unwrap().issue(0, HOUR).unwrap().unwrap();
    let stored: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT token_hash FROM setup_tokens", [], |row| row.get(0))
        .unwrap();
    assert_ne!(stored, raw, "only the token's hash is stored");

    let outcomes: Vec<Result<String, String>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|racer| {
                let (db, raw) = (&db, &raw);
                scope.spawn(move || {
                    let tokens = SetupTokens::open(db).unwrap();
                    tokens
                        .redeem_and_add_admin(raw, &format!("admin{racer}"), PASSWORD, 1)
                        .map(|user| user.name)
                        .map_err(|error| error.to_string())
                })
            })
            .collect();
        racers.into_iter().map(|racer| racer.join().unwrap()).collect()
    });
    let made: Vec<&String> = outcomes.iter().filter_map(|outcome| outcome.as_ref().ok()).collect();
    assert_eq!(made.len(), 1, "{outcomes:?}");
    for refused in outcomes.iter().filter_map(|outcome| outcome.as_ref().err()) {
        assert!(refused.contains("unknown, used or expired") || refused.contains("already exists"), "{refused}");
    }
    let users = Users::open(&db).unwrap().list().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(&users[0].name, made[0]);
}
