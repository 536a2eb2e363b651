//! Dashboard users as `hedgerow user list` prints them (and the dashboard's
//! users page can show them): name, roles, whether disabled, when added.

use crate::store::User;
use crate::store::csv::format_record;
use crate::time::format_utc;

/// A user as shown (never with a password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserView<'a> {
    pub name: &'a str,
    /// Comma-separated: `admin,dsl`.
    pub roles: String,
    pub disabled: bool,
    /// UTC, ISO 8601.
    pub created: String,
}

impl<'a> UserView<'a> {
    /// The CSV header and JSON keys, in order.
    pub const FIELDS: [&'static str; 4] = ["name", "roles", "disabled", "created"];

    pub fn of(user: &'a User) -> UserView<'a> {
        UserView {
            name: &user.name,
            roles: user.roles_text(),
            disabled: user.disabled,
            created: format_utc(user.created_ms),
        }
    }

    /// The fields as text, in [`Self::FIELDS`] order.
    pub fn cells(&self) -> [String; 4] {
        [self.name.to_string(), self.roles.clone(), self.disabled.to_string(), self.created.clone()]
    }
}

impl super::ListRow for UserView<'_> {
    /// A JSON object on one line.
    fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A CSV record (no line end).
    fn csv_line(&self) -> String {
        format_record(&self.cells())
    }

    /// A line of the readable table.
    fn table_line(&self) -> String {
        let state = if self.disabled { "disabled" } else { "enabled" };
        format!("{:<32} {:<20} {state:<8} {}", self.name, self.roles, self.created)
    }
}

/// The CSV header of the user rows' `csv_line`s.
pub fn csv_header() -> String {
    UserView::FIELDS.join(",")
}

/// The header line of the user rows' `table_line`s.
pub fn table_header() -> String {
    format!("{:<32} {:<20} {:<8} {}", "name", "roles", "state", "created (UTC)")
}

/// What the table shows when there are no users.
pub const TABLE_EMPTY: &str = "(no users: add the first admin with `hedgerow user add NAME --role admin`)";
