//! What each role can do (links only to pages that exist), shown on the
//! overview at `/` (`overview.rs`); `GET /api/me`: who you are for scripts,
//! with the CSRF token they must send back as `X-CSRF-Token`.

use crate::store::Role;
use crate::web::session::CurrentUser;

pub struct Part {
    pub title: &'static str,
    pub text: &'static str,
    /// A command on the server that does it today ("" for none).
    pub command: &'static str,
    pub links: Vec<(&'static str, &'static str)>,
}

pub fn parts(current: &CurrentUser) -> Vec<Part> {
    let mut parts = Vec::new();
    if current.user.has(Role::Admin) {
        parts.push(Part {
            title: "Admin (ICT lead)",
            text: "You manage who can log in and what each group may reach. Each policy change asks for a \
                   reason, is written to the config file and the change log, and is in force at once. A hand \
                   edit of the config file is recorded too when the server next reloads:",
            command: "hedgerow reload",
            links: vec![
                ("/policy", "Policy: categories, SafeSearch, YouTube, overrides and schedules per group"),
                ("/test", "Test a name: what a group gets for a name, and why"),
                ("/changes", "Change log: every change with who, when and why"),
                ("/users", "Users: add, disable, reset passwords, change roles"),
                ("/audit", "Login audit"),
            ],
        });
    }
    if current.user.has(Role::Dsl) {
        parts.push(Part {
            title: "Designated Safeguarding Lead",
            text: "You see who looked up what in the query log, and the alerts the rules raise (high ones are \
                   e-mailed to you too). You can test what a group gets for a name, ask the ICT lead to unblock \
                   one, and record the filter's checks for the annual review.",
            command: "",
            links: vec![
                ("/alerts", "Alerts: what the rules raised, to look into and close"),
                ("/log", "Query log: every lookup, by device, name, category or time"),
                ("/test", "Test a name"),
                ("/requests/new", "Ask to unblock a name"),
                ("/checks", "Checks: the daily self-test and the checks you record"),
                ("/review", "Annual filtering review"),
                ("/changes", "Change log"),
            ],
        });
    }
    if current.user.has(Role::Governor) {
        parts.push(Part {
            title: "Governor",
            text: "You can read the annual filtering review, the policy as it stands, every change made to it \
                   with its reason, and the alerts as counts, all read-only. No pupil's name or device is \
                   shown to you.",
            command: "",
            links: vec![
                ("/review", "Annual filtering review"),
                ("/policy", "Policy"),
                ("/changes", "Change log"),
                ("/alerts", "Alerts, as counts"),
                ("/test", "Test a name"),
            ],
        });
    }
    parts
}

pub async fn api_me(current: CurrentUser) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": current.user.name,
        "roles": current.user.roles,
        "csrf_token": current.csrf,
    }))
}
