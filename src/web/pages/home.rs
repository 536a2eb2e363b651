//! `GET /`: who you are and what your roles let you do (links only to pages
//! that exist); `GET /api/me`: the same for scripts, with the CSRF token
//! they must send back as `X-CSRF-Token`.

use askama::Template;
use axum::response::{IntoResponse, Response};

use super::{Layout, render};
use crate::store::Role;
use crate::web::WebError;
use crate::web::session::CurrentUser;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    layout: Layout,
    name: String,
    roles: Vec<&'static str>,
    parts: Vec<Part>,
}

struct Part {
    title: &'static str,
    text: &'static str,
    /// A command on the server that does it today ("" for none).
    command: &'static str,
    links: Vec<(&'static str, &'static str)>,
}

fn parts(current: &CurrentUser) -> Vec<Part> {
    let mut parts = Vec::new();
    if current.user.has(Role::Admin) {
        parts.push(Part {
            title: "Admin (ICT lead)",
            text: "You manage who can log in and what each group may reach. Policy pages arrive with the next \
                   part of the dashboard; until then, policy is changed in the config file and applied on the \
                   server with",
            command: "hedgerow reload",
            links: vec![("/users", "Users: add, disable, reset passwords, change roles"), ("/audit", "Login audit")],
        });
    }
    if current.user.has(Role::Dsl) {
        parts.push(Part {
            title: "Designated Safeguarding Lead",
            text: "You will read the query log, devices and alerts here. Those pages come in a later part of the \
                   dashboard; today the server shows them with",
            command: "hedgerow log search",
            links: Vec::new(),
        });
    }
    if current.user.has(Role::Governor) {
        parts.push(Part {
            title: "Governor",
            text: "You will read the policy as it stands, the change log and the annual review here, read-only. \
                   Those pages come in a later part of the dashboard.",
            command: "",
            links: Vec::new(),
        });
    }
    parts
}

pub async fn page(current: CurrentUser) -> Result<Response, WebError> {
    let page = HomePage {
        layout: Layout::for_user("Home", &current.user, &current.csrf, "/"),
        name: current.user.name.clone(),
        roles: current.user.roles.iter().map(|role| role.as_str()).collect(),
        parts: parts(&current),
    };
    Ok(render(&page)?.into_response())
}

pub async fn api_me(current: CurrentUser) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": current.user.name,
        "roles": current.user.roles,
        "csrf_token": current.csrf,
    }))
}
