//! `hedgerow user` as an ICT lead runs it: the real binary on a temp config,
//! with the users, sessions and login audit read back from the real
//! database file.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use hedgerow::store::{AuditEvent, LoginAudit, Role, Sessions, Users};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const CONFIG_HELP: &str = "Config file (default: the embedded demo config)";
const PASSWORD: &str = "correct horse battery";

/// A config in a tempdir whose data_dir (and so database) is in the tempdir.
struct School {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl School {
    fn new() -> School {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hedgerow.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {data:?}\n[dns]\nlisten = [\"127.0.0.1:0\"]\n[upstream]\nmode = \"forward\"\n\
                 [[upstream.servers]]\naddress = \"127.0.0.1:9\"\n\
                 [[networks]]\nname = \"demo-pupil\"\ncidrs = [\"127.0.0.1/32\"]\ngroup = \"pupil\"\n",
                data = dir.path().join("data").display().to_string(),
            ),
        )
        .unwrap();
        School { dir, config }
    }

    /// Runs `hedgerow ARGS --config FILE` with `stdin` piped in.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(BINARY)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        assert!(output.status.success(), "{args:?} failed: {}", text(&output.stderr));
        text(&output.stdout)
    }

    /// Runs a command that must exit 1; its stderr.
    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {}{}", text(&output.stdout), text(&output.stderr));
        text(&output.stderr)
    }

    /// Adds a user with PASSWORD from stdin.
    fn add(&self, name: &str, roles: &[&str]) {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        for role in roles {
            args.extend(["--role", role]);
        }
        self.ok(&args, &format!("{PASSWORD}\n"));
    }

    fn database(&self) -> PathBuf {
        self.dir.path().join("data").join("hedgerow.db")
    }

    fn users(&self) -> Users {
        Users::open(&self.database()).unwrap()
    }

    /// The login audit, oldest first: (event, user, address).
    fn audit(&self) -> Vec<(AuditEvent, String, String)> {
        let audit = LoginAudit::open(&self.database()).unwrap();
        let mut rows: Vec<_> =
            audit.list(100, 0).unwrap().into_iter().map(|row| (row.event, row.user_name, row.address)).collect();
        rows.reverse();
        rows
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn users_are_added_listed_and_audited() {
    let school = School::new();
    // No database yet: no users, and nothing is created.
    let listed = school.ok(&["user", "list"], "");
    assert!(listed.contains("no users"), "{listed}");
    assert!(!school.database().exists());

    let added =
        school.ok(&["user", "add", "ict.lead", "--role", "admin", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(added.contains("added ict.lead (admin)"), "{added}");
    // Several roles, repeated or comma-separated; CRLF from a Windows script is fine.
    school.ok(
        &["user", "add", "dsl", "--role", "dsl,governor", "--role", "dsl", "--password-stdin"],
        &format!("{PASSWORD}\r\n"),
    );

    let users = school.users();
    let ict = users.verify("ict.lead", PASSWORD).unwrap().expect("the password from stdin works");
    assert_eq!(ict.roles, vec![Role::Admin]);
    assert_eq!(users.verify("dsl", PASSWORD).unwrap().unwrap().roles, vec![Role::Dsl, Role::Governor]);

    let table = school.ok(&["user", "list"], "");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("name") && lines[0].contains("roles"), "{table}");
    assert!(
        lines[1].starts_with("dsl") && lines[1].contains("dsl,governor") && lines[1].contains("enabled"),
        "{table}"
    );
    assert!(lines[2].starts_with("ict.lead") && lines[2].contains("admin"), "{table}");

    let json = school.ok(&["user", "list", "--format", "json"], "");
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["name"], "dsl");
    assert_eq!(first["roles"], "dsl,governor");
    assert_eq!(first["disabled"], false);
    assert!(first.get("password_hash").is_none());
    assert!(!json.contains("argon2"), "{json}");
    let csv = school.ok(&["user", "list", "--format", "csv"], "");
    assert_eq!(csv.lines().next(), Some("name,roles,disabled,created"));

    let cli = |event, name: &str| (event, name.to_string(), "cli".to_string());
    assert_eq!(school.audit(), vec![cli(AuditEvent::Added, "ict.lead"), cli(AuditEvent::Added, "dsl")]);
}

#[test]
fn bad_names_passwords_and_roles_are_refused_with_what_to_do() {
    let school = School::new();
    school.add("Head", &["admin"]);
    let stdin = format!("{PASSWORD}\n");

    let error = school.fails(&["user", "add", "head", "--role", "dsl", "--password-stdin"], &stdin);
    assert!(error.contains("already a user \"Head\""), "{error}");
    let error = school.fails(&["user", "add", "pat", "--role", "dsl", "--password-stdin"], "too short\n");
    assert!(error.contains("at least 12 characters"), "{error}");
    let error = school.fails(&["user", "add", "pat", "--role", "dsl", "--password-stdin"], "");
    assert!(error.contains("no password on stdin"), "{error}");
    let error = school.fails(&["user", "add", "pat", "--role", "teacher", "--password-stdin"], &stdin);
    assert!(error.contains("--role: \"teacher\" is not a role: use admin, dsl or governor"), "{error}");
    let error = school.fails(&["user", "add", "pat smith", "--role", "dsl", "--password-stdin"], &stdin);
    assert!(error.contains("may not contain ' '"), "{error}");
    let error = school.fails(&["user", "passwd", "nobody", "--password-stdin"], &stdin);
    assert!(error.contains("no user \"nobody\"") && error.contains("hedgerow user list"), "{error}");
    let error = school.fails(&["user", "enable", "nobody"], "");
    assert!(error.contains("no user \"nobody\""), "{error}");

    assert_eq!(school.users().list().unwrap().len(), 1);
    assert_eq!(school.audit().len(), 1, "only the one added user is in the audit");
}

#[test]
fn the_last_admin_can_be_neither_disabled_nor_demoted() {
    let school = School::new();
    school.add("ict", &["admin"]);
    let error = school.fails(&["user", "disable", "ict"], "");
    assert!(
        error.contains("\"ict\" is the last enabled admin") && error.contains("make another user an admin"),
        "{error}"
    );
    let error = school.fails(&["user", "roles", "ict", "--role", "dsl"], "");
    assert!(error.contains("last enabled admin"), "{error}");
    assert!(school.users().get("ict").unwrap().unwrap().has(Role::Admin));

    school.add("deputy", &["dsl"]);
    let changed = school.ok(&["user", "roles", "deputy", "--role", "admin", "--role", "dsl"], "");
    assert!(changed.contains("deputy now has the roles admin,dsl"), "{changed}");
    school.ok(&["user", "roles", "ict", "--role", "governor"], "");
    assert_eq!(school.users().get("ict").unwrap().unwrap().roles, vec![Role::Governor]);
    assert_eq!(school.audit().last().unwrap().0, AuditEvent::Roles);
}

#[test]
fn passwd_and_disable_end_sessions_and_enable_lets_the_user_back() {
    let school = School::new();
    school.add("ict", &["admin"]);
    school.add("dsl", &["dsl"]);
    let sessions = Sessions::open(&school.database()).unwrap();
    let dsl = school.users().get("dsl").unwrap().unwrap();
    let alive = |raw: &str| sessions.lookup(raw, hedgerow::time::now_ms(), i64::MAX, i64::MAX).unwrap().is_some();

    let session = sessions.create(dsl.id, "10.0.0.5", hedgerow::time::now_ms()).unwrap();
    assert!(alive(&session.raw_id));
    let said = school.ok(&["user", "passwd", "DSL", "--password-stdin"], "a brand new passphrase\n");
    assert!(said.contains("password set for dsl"), "{said}");
    assert!(!alive(&session.raw_id), "a password reset ends the user's sessions");
    let users = school.users();
    assert!(users.verify("dsl", PASSWORD).unwrap().is_none());
    assert!(users.verify("dsl", "a brand new passphrase").unwrap().is_some());

    let session = sessions.create(dsl.id, "10.0.0.5", hedgerow::time::now_ms()).unwrap();
    school.ok(&["user", "disable", "dsl"], "");
    assert!(!alive(&session.raw_id), "disabling ends the user's sessions");
    assert!(users.verify("dsl", "a brand new passphrase").unwrap().is_none());
    let listed = school.ok(&["user", "list"], "");
    assert!(listed.lines().any(|line| line.starts_with("dsl") && line.contains("disabled")), "{listed}");

    school.ok(&["user", "enable", "dsl"], "");
    assert!(users.verify("dsl", "a brand new passphrase").unwrap().is_some());

    let events: Vec<AuditEvent> = school.audit().into_iter().map(|(event, ..)| event).collect();
    assert_eq!(
        events,
        vec![AuditEvent::Added, AuditEvent::Added, AuditEvent::Password, AuditEvent::Disabled, AuditEvent::Enabled]
    );
}

/// Runs `command` on a pseudo-terminal (util-linux `script`), typing `typed`.
fn on_a_terminal(school: &School, args: &str, typed: &str) -> Output {
    let command = format!("{BINARY} {args} --config {}", school.config.display());
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(school.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    child.stdin.take().unwrap().write_all(typed.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn without_password_stdin_the_password_is_asked_for_twice_on_the_terminal() {
    let school = School::new();
    let output = on_a_terminal(&school, "user add ict --role admin", &format!("{PASSWORD}\n{PASSWORD}\n"));
    let said = text(&output.stdout);
    assert!(output.status.success(), "{said}{}", text(&output.stderr));
    assert!(said.contains("New password (at least 12 characters):"), "{said}");
    assert!(said.contains("The same password again:"), "{said}");
    assert!(school.users().verify("ict", PASSWORD).unwrap().is_some());

    let output = on_a_terminal(&school, "user passwd ict", "one long passphrase\nanother long one!!\n");
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("the two passwords differ; nothing was changed"), "{}", text(&output.stdout));
    assert!(school.users().verify("ict", PASSWORD).unwrap().is_some(), "the password is unchanged");

    // With no terminal at all (a new session has none) and no
    // --password-stdin, it says what to do.
    let output = Command::new("setsid")
        .args(["-w", BINARY, "user", "add", "dsl", "--role", "dsl", "--config"])
        .arg(&school.config)
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `setsid` runs the command without a terminal");
    assert_eq!(output.status.code(), Some(1));
    let error = text(&output.stderr);
    assert!(
        error.contains("cannot ask for the password on a terminal") && error.contains("--password-stdin"),
        "{error}"
    );
    assert!(school.users().get("dsl").unwrap().is_none());
}

#[test]
fn every_user_command_describes_config_in_its_help() {
    for command in [&["user"][..], &["user", "add"], &["user", "list"], &["user", "passwd"], &["user", "roles"]] {
        let output = Command::new(BINARY).args(command).arg("--help").output().unwrap();
        assert!(output.status.success(), "{command:?}");
        let help = text(&output.stdout);
        assert!(help.contains(CONFIG_HELP), "{command:?} --help does not describe --config:\n{help}");
    }
}
