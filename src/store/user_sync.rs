//! The users and roles a secondary takes from its primary (`crate::sync`):
//! exported with their password hashes (never a password), and put in place
//! whole on the secondary in one transaction. A user whose hash, roles or
//! disabled state changed, or who is gone, loses their sessions there.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::users::{Role, Users, begin, connect};

/// One user as the primary has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncedUser {
    pub name: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
}

/// What taking the primary's users changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersTaken {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl UsersTaken {
    /// "users: added a; changed b; removed c", or `None` when nothing changed.
    pub fn summary(&self) -> Option<String> {
        let parts: Vec<String> = [("added", &self.added), ("changed", &self.changed), ("removed", &self.removed)]
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what} {}", names.join(", ")))
            .collect();
        (!parts.is_empty()).then(|| format!("users: {}", parts.join("; ")))
    }
}

impl Users {
    /// Every user with their hash and roles, by name.
    pub fn export(&self) -> Result<Vec<SyncedUser>, StoreError> {
        let database = self.database();
        let conn = connect(database)?;
        let mut statement = conn
            .prepare(
                "SELECT users.name, users.password_hash, users.disabled, group_concat(user_roles.role)
                 FROM users LEFT JOIN user_roles ON user_roles.user_id = users.id
                 GROUP BY users.id ORDER BY users.name COLLATE NOCASE",
            )
            .map_err(StoreError::sqlite(database, "export the users"))?;
        let rows = statement
            .query_map([], |row| {
                let roles: Option<String> = row.get(3)?;
                let mut roles: Vec<String> =
                    roles.unwrap_or_default().split(',').filter(|role| !role.is_empty()).map(str::to_string).collect();
                roles.sort();
                Ok(SyncedUser { name: row.get(0)?, password_hash: row.get(1)?, disabled: row.get(2)?, roles })
            })
            .map_err(StoreError::sqlite(database, "export the users"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(database, "export the users"))
    }

    /// Makes the users exactly `users` (matched by name, any case), in one
    /// transaction. Roles this build does not know are dropped.
    pub fn take(&self, users: &[SyncedUser], now_ms: i64) -> Result<UsersTaken, StoreError> {
        let database = self.database().to_path_buf();
        let fail = |what: &'static str| StoreError::sqlite(&database, what);
        let current = self.export()?;
        let mut conn = connect(&database)?;
        let tx = begin(&mut conn, &database)?;
        let mut taken = UsersTaken::default();
        for user in users {
            let roles: Vec<Role> = user.roles.iter().filter_map(|role| Role::parse(role)).collect();
            let mut wanted = user.clone();
            wanted.roles = roles.iter().map(|role| role.as_str().to_string()).collect();
            wanted.roles.sort();
            match current.iter().find(|known| known.name.eq_ignore_ascii_case(&user.name)) {
                Some(known) if *known == wanted => continue,
                Some(_) => {
                    let id: i64 = tx
                        .query_row("SELECT id FROM users WHERE name = ?1", [&user.name], |row| row.get(0))
                        .map_err(fail("find the user"))?;
                    tx.execute(
                        "UPDATE users SET name = ?1, password_hash = ?2, disabled = ?3 WHERE id = ?4",
                        params![user.name, user.password_hash, user.disabled, id],
                    )
                    .map_err(fail("update the user"))?;
                    tx.execute("DELETE FROM sessions WHERE user_id = ?1", [id]).map_err(fail("end the sessions"))?;
                    tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [id]).map_err(fail("set the roles"))?;
                    insert_roles(&tx, id, &roles).map_err(fail("set the roles"))?;
                    taken.changed.push(user.name.clone());
                }
                None => {
                    tx.execute(
                        "INSERT INTO users (name, password_hash, disabled, created_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![user.name, user.password_hash, user.disabled, now_ms],
                    )
                    .map_err(fail("add the user"))?;
                    insert_roles(&tx, tx.last_insert_rowid(), &roles).map_err(fail("set the roles"))?;
                    taken.added.push(user.name.clone());
                }
            }
        }
        for known in &current {
            if !users.iter().any(|user| user.name.eq_ignore_ascii_case(&known.name)) {
                // Sessions and roles go with the user (ON DELETE CASCADE).
                tx.execute("DELETE FROM users WHERE name = ?1", [&known.name]).map_err(fail("remove the user"))?;
                taken.removed.push(known.name.clone());
            }
        }
        tx.commit().map_err(fail("save the users"))?;
        Ok(taken)
    }
}

fn insert_roles(tx: &rusqlite::Transaction<'_>, user_id: i64, roles: &[Role]) -> rusqlite::Result<()> {
    for role in roles {
        tx.execute("INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)", params![user_id, role.as_str()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secondary_takes_the_primary_users_whole() {
        let dir = tempfile::tempdir().unwrap();
        let primary = Users::open(&dir.path().join("primary.db")).unwrap();
        primary.add("ict.lead", "a long password here", &[Role::Admin], 1).unwrap();
        primary.add("dsl", "another long password", &[Role::Dsl, Role::Governor], 1).unwrap();
        let secondary = Users::open(&dir.path().join("secondary.db")).unwrap();
        secondary.add("old.admin", "an old long password", &[Role::Admin], 1).unwrap();
        let exported = primary.export().unwrap();
        let taken = secondary.take(&exported, 2).unwrap();
        assert_eq!(taken.added, ["dsl", "ict.lead"]);
        assert_eq!(taken.removed, ["old.admin"]);
        assert_eq!(secondary.export().unwrap(), exported);
        assert!(secondary.verify("ict.lead", "a long password here").unwrap().is_some());
        assert!(secondary.verify("old.admin", "an old long password").unwrap().is_none());
        assert_eq!(secondary.take(&exported, 3).unwrap(), UsersTaken::default(), "the same users change nothing");
        primary.set_roles("dsl", &[Role::Dsl]).unwrap();
        let taken = secondary.take(&primary.export().unwrap(), 4).unwrap();
        assert_eq!(taken.changed, ["dsl"]);
        assert_eq!(taken.summary().unwrap(), "users: changed dsl");
        assert_eq!(secondary.get("dsl").unwrap().unwrap().roles, [Role::Dsl]);
    }
}
