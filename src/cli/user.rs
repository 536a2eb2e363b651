//! `hedgerow user add|list|passwd|disable|enable|roles`: dashboard accounts.
//!
//! Each change is written to the login audit as done from address `cli`.
//! Passwords are asked for twice on the terminal with echo off, or read as
//! one line from stdin with `--password-stdin` (for scripts); never taken as
//! an argument, where `ps` and shell history would show them.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::Context;
use hedgerow::config::Config;
use hedgerow::present::users::{self as present, UserView};
use hedgerow::store::users::{MIN_PASSWORD_CHARS, check_name, check_password};
use hedgerow::store::{AuditEvent, LoginAudit, Role, User, Users};
use hedgerow::time::now_ms;

use super::OutputFormat;

/// The address the login audit records for the command line.
const CLI_ADDRESS: &str = "cli";

#[derive(clap::Subcommand)]
pub enum UserAction {
    /// Add a user. Without --password-stdin the password is asked for twice
    /// on the terminal (at least 12 characters).
    Add {
        /// Letters, digits and . - _ @ (1-64 characters; case does not make a new name).
        name: String,
        /// admin, dsl or governor; repeat or separate with commas for several.
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<String>,
        /// Read the password as one line from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Every user: name, roles, enabled or disabled, when added.
    List,
    /// Set a user's password (asked for twice, or --password-stdin); ends their sessions.
    Passwd {
        name: String,
        /// Read the password as one line from stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Stop a user logging in and end their sessions (not the last enabled admin).
    Disable { name: String },
    /// Let a disabled user log in again.
    Enable { name: String },
    /// Replace a user's roles (the last enabled admin keeps admin).
    Roles {
        name: String,
        /// admin, dsl or governor; repeat or separate with commas for several.
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<String>,
    },
}

pub fn run(config: &Config, action: UserAction, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let database = &config.log.database;
    if let UserAction::List = action {
        // No database yet is no users, not an error (and creates nothing).
        let users = if database.exists() { Users::open(database)?.list()? } else { Vec::new() };
        print_users(&users, format);
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data folder {}", config.data_dir.display()))?;
    let users = Users::open(database)?;
    let (event, user) = match action {
        UserAction::List => unreachable!("listed above"),
        UserAction::Add { name, roles, password_stdin } => {
            check_name(&name)?;
            let roles = parse_roles(&roles)?;
            if let Some(user) = users.get(&name)? {
                anyhow::bail!(
                    "there is already a user {:?} (names are the same whatever their case): choose another name, or set theirs with `hedgerow user passwd {}`",
                    user.name,
                    user.name
                );
            }
            let password = read_password(password_stdin)?;
            let user = users.add(&name, &password, &roles, now_ms())?;
            println!("added {} ({})", user.name, user.roles_text());
            (AuditEvent::Added, user)
        }
        UserAction::Passwd { name, password_stdin } => {
            let found = existing(&users, &name)?;
            let password = read_password(password_stdin)?;
            let user = users.set_password(&found.name, &password)?;
            println!("password set for {}; their dashboard sessions were ended", user.name);
            (AuditEvent::Password, user)
        }
        UserAction::Disable { name } => {
            let user = users.set_disabled(&name, true)?;
            println!("disabled {}; their dashboard sessions were ended", user.name);
            (AuditEvent::Disabled, user)
        }
        UserAction::Enable { name } => {
            let user = users.set_disabled(&name, false)?;
            println!("enabled {}", user.name);
            (AuditEvent::Enabled, user)
        }
        UserAction::Roles { name, roles } => {
            let user = users.set_roles(&name, &parse_roles(&roles)?)?;
            println!("{} now has the roles {}", user.name, user.roles_text());
            (AuditEvent::Roles, user)
        }
    };
    LoginAudit::open(database)?.record(event, &user.name, CLI_ADDRESS, now_ms())?;
    Ok(ExitCode::SUCCESS)
}

/// The `--role` words as roles; an unknown word is named with the choices.
fn parse_roles(words: &[String]) -> anyhow::Result<Vec<Role>> {
    words.iter().map(|word| word.parse::<Role>().map_err(|why| anyhow::anyhow!("--role: {why}"))).collect()
}

/// The user with this name, or an error that says how to find the names.
fn existing(users: &Users, name: &str) -> anyhow::Result<User> {
    users
        .get(name)?
        .ok_or_else(|| anyhow::anyhow!("there is no user {name:?}: check the name (`hedgerow user list` shows them)"))
}

/// A new password: one line of stdin, or asked for twice on the terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        anyhow::ensure!(
            !password.is_empty(),
            "no password on stdin: give it as one line, e.g. `printf '%s\\n' \"$PASSWORD\" | hedgerow user ...`"
        );
        check_password(password)?;
        return Ok(password.to_string());
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|error| {
            anyhow::anyhow!(
                "cannot ask for the password on a terminal ({error}): run this in a terminal, or give --password-stdin and pipe the password in"
            )
        })
    };
    let first = ask(&format!("New password (at least {MIN_PASSWORD_CHARS} characters): "))?;
    check_password(&first)?;
    let second = ask("The same password again: ")?;
    anyhow::ensure!(first == second, "the two passwords differ; nothing was changed: run the command again");
    Ok(first)
}

fn print_users(users: &[User], format: OutputFormat) {
    let rows: Vec<UserView<'_>> = users.iter().map(UserView::of).collect();
    super::print_rows(&rows, format, present::csv_header(), present::table_header(), present::TABLE_EMPTY);
}
