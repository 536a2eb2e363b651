//! `GET /users` (admin): every user, with forms to add one, change roles,
//! reset a password, disable or enable. Each change asks for a reason and
//! is written to the change log (kind `user`: who, old -> new, why) and to
//! the login audit (the user changed, with the acting admin beside the
//! address: `10.0.20.7 by ann`). The last enabled admin can be neither disabled nor
//! lose the admin role (the store refuses; the message shows beside the
//! form). `GET/POST /api/users`: the list and the add, as JSON.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ClientAddress, Form, Json, Layout, render_with, ticked_roles, when};
use crate::store::changes::NewChange;
use crate::store::{AuditEvent, Role, User, UserError};
use crate::web::{AppState, RequireAdmin, WebError};

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    rows: Vec<Row>,
    add: AddView,
    notice: String,
    /// On a secondary: users come from the primary ('' elsewhere).
    read_only: String,
}

struct Row {
    id: i64,
    name: String,
    roles: String,
    admin: bool,
    dsl: bool,
    governor: bool,
    disabled: bool,
    created: String,
    /// `roles`, `password` or `disabled` when this user's form was refused.
    error_field: &'static str,
    error: String,
}

#[derive(Default)]
struct AddView {
    name: String,
    admin: bool,
    dsl: bool,
    governor: bool,
    reason: String,
    field: &'static str,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddForm {
    name: String,
    password: String,
    reason: String,
    role_admin: String,
    role_dsl: String,
    role_governor: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChangeForm {
    password: String,
    reason: String,
    role_admin: String,
    role_dsl: String,
    role_governor: String,
}

/// Which user form a refusal belongs to.
enum Refused {
    Add(AddView),
    Change { name: String, field: &'static str, message: String },
}

async fn show(
    state: &AppState,
    admin: &RequireAdmin,
    status: StatusCode,
    refused: Option<Refused>,
    notice: String,
) -> Result<Response, WebError> {
    let users = state.blocking(|state| state.users().list()).await??;
    let (add, change) = match refused {
        Some(Refused::Add(add)) => (add, None),
        Some(Refused::Change { name, field, message }) => (AddView::default(), Some((name, field, message))),
        None => (AddView::default(), None),
    };
    let rows = users
        .into_iter()
        .map(|user| {
            let (error_field, error) = match &change {
                Some((name, field, message)) if name.eq_ignore_ascii_case(&user.name) => (*field, message.clone()),
                _ => ("", String::new()),
            };
            Row {
                id: user.id,
                roles: user.roles_text().replace(',', ", "),
                admin: user.has(Role::Admin),
                dsl: user.has(Role::Dsl),
                governor: user.has(Role::Governor),
                disabled: user.disabled,
                created: when(state, user.created_ms),
                name: user.name,
                error_field,
                error,
            }
        })
        .collect();
    let read_only = match state.sync().follower() {
        Some(follower) => format!(
            "This is a secondary server: its users and roles come from the primary at {} and are changed there.",
            follower.primary()
        ),
        None => String::new(),
    };
    let page = UsersPage { layout: Layout::for_user("Users", &admin, "/users"), rows, add, notice, read_only };
    Ok(render_with(status, &page))
}

pub async fn page(State(state): State<AppState>, admin: RequireAdmin) -> Result<Response, WebError> {
    show(&state, &admin, StatusCode::OK, None, String::new()).await
}

/// Users are changed on the primary only: a secondary takes them from it
/// and would lose a change made here at its next sync.
fn refuse_on_secondary(state: &AppState) -> Result<(), WebError> {
    match state.sync().follower() {
        Some(follower) => Err(WebError::Conflict(format!(
            "this is a secondary server: its users come from the primary at {}; add or change users there",
            follower.primary()
        ))),
        None => Ok(()),
    }
}

/// The address recorded with a change: where from, and which admin.
fn acting(address: &str, admin: &RequireAdmin) -> String {
    format!("{address} by {}", admin.user.name)
}

/// What a user change is, for the change log: `admin` who made it, the user
/// changed, old -> new, and why.
fn user_change(admin: &str, user: &str, old: String, new: String, reason: &str) -> NewChange {
    NewChange {
        time_ms: crate::time::now_ms(),
        user: admin.to_string(),
        kind: "user".to_string(),
        group: None,
        subject: format!("user {user}"),
        old,
        new,
        reason: reason.trim().to_string(),
    }
}

/// A user's roles and state in words: `dsl, governor` or `disabled (dsl)`.
fn standing(user: &User) -> String {
    let roles = user.roles_text().replace(',', ", ");
    if user.disabled { format!("disabled ({roles})") } else { roles }
}

/// Adds a user, audits it and records it in the change log; a refusal
/// comes back as the store's error.
async fn add_user(
    state: &AppState,
    admin: &RequireAdmin,
    (name, password, roles): (String, String, Vec<Role>),
    reason: String,
    address: String,
) -> Result<Result<User, UserError>, WebError> {
    let admin = admin.user.name.clone();
    state
        .blocking(move |state| {
            let now = crate::time::now_ms();
            let added = state.users().add(&name, &password, &roles, now)?;
            state.audit().record(AuditEvent::Added, &added.name, &address, now)?;
            state.changes().record_only(&user_change(
                &admin,
                &added.name,
                "(none)".into(),
                standing(&added),
                &reason,
            ))?;
            Ok(added)
        })
        .await
}

/// The refusal of a change with no reason, for the form's `field`.
fn no_reason() -> String {
    "say why: the reason is written to the change log with your name".to_string()
}

pub async fn add(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Form(form): Form<AddForm>,
) -> Result<Response, WebError> {
    refuse_on_secondary(&state)?;
    let name = form.name.trim().to_string();
    let roles = ticked_roles(&form.role_admin, &form.role_dsl, &form.role_governor);
    let refused = |field: &'static str, message: String| AddView {
        name: name.clone(),
        admin: roles.contains(&Role::Admin),
        dsl: roles.contains(&Role::Dsl),
        governor: roles.contains(&Role::Governor),
        reason: form.reason.clone(),
        field,
        message,
    };
    if form.reason.trim().is_empty() {
        let add = refused("reason", no_reason());
        return show(&state, &admin, StatusCode::BAD_REQUEST, Some(Refused::Add(add)), String::new()).await;
    }
    let user = (name.clone(), form.password.clone(), roles.clone());
    match add_user(&state, &admin, user, form.reason.clone(), acting(&address, &admin)).await? {
        Ok(user) => show(&state, &admin, StatusCode::OK, None, format!("Added {}.", user.name)).await,
        Err(UserError::Store(error)) => Err(error.into()),
        Err(error) => {
            let add = refused(error.field().unwrap_or("name"), error.to_string());
            show(&state, &admin, StatusCode::BAD_REQUEST, Some(Refused::Add(add)), String::new()).await
        }
    }
}

pub async fn change(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, WebError> {
    refuse_on_secondary(&state)?;
    let field: &'static str = match action.as_str() {
        "roles" => "roles",
        "password" => "password",
        "disable" | "enable" => "disabled",
        _ => return Err(WebError::NotFound),
    };
    if form.reason.trim().is_empty() {
        let field = match field {
            "roles" => "roles-reason",
            "password" => "password-reason",
            _ => "disabled-reason",
        };
        let refused = Refused::Change { name, field, message: no_reason() };
        return show(&state, &admin, StatusCode::BAD_REQUEST, Some(refused), String::new()).await;
    }
    let address = acting(&address, &admin);
    let admin_name = admin.user.name.clone();
    let roles = ticked_roles(&form.role_admin, &form.role_dsl, &form.role_governor);
    let outcome = {
        let name = name.clone();
        state
            .blocking(move |state| -> Result<User, UserError> {
                let now = crate::time::now_ms();
                let before = state.users().get(&name)?.ok_or_else(|| UserError::NotFound(name.clone()))?;
                let (user, event) = match action.as_str() {
                    "roles" => (state.users().set_roles(&name, &roles)?, AuditEvent::Roles),
                    "password" => (state.users().set_password(&name, &form.password)?, AuditEvent::Password),
                    "disable" => (state.users().set_disabled(&name, true)?, AuditEvent::Disabled),
                    _ => (state.users().set_disabled(&name, false)?, AuditEvent::Enabled),
                };
                state.audit().record(event, &user.name, &address, now)?;
                let (old, new) = match event {
                    AuditEvent::Password => ("password".to_string(), "password reset".to_string()),
                    _ => (standing(&before), standing(&user)),
                };
                state.changes().record_only(&user_change(&admin_name, &user.name, old, new, &form.reason))?;
                Ok(user)
            })
            .await?
    };
    match outcome {
        Ok(_) => Ok(Redirect::to("/users").into_response()),
        Err(UserError::Store(error)) => Err(error.into()),
        Err(UserError::NotFound(_)) => Err(WebError::NotFound),
        Err(error) => {
            // The last-admin refusal belongs beside the form that tried it.
            let field = match (&error, field) {
                (UserError::LastAdmin(_), "disabled") => "disabled",
                (UserError::LastAdmin(_), _) => "roles",
                _ => error.field().filter(|f| *f != "name").unwrap_or(field),
            };
            let refused = Refused::Change { name, field, message: error.to_string() };
            show(&state, &admin, StatusCode::BAD_REQUEST, Some(refused), String::new()).await
        }
    }
}

pub async fn api_list(State(state): State<AppState>, _admin: RequireAdmin) -> Result<axum::Json<Vec<User>>, WebError> {
    Ok(axum::Json(state.blocking(|state| state.users().list()).await??))
}

#[derive(Deserialize)]
pub struct NewUser {
    name: String,
    password: String,
    roles: Vec<String>,
    /// Why: written to the change log.
    #[serde(default)]
    reason: String,
}

pub async fn api_add(
    State(state): State<AppState>,
    admin: RequireAdmin,
    ClientAddress(address): ClientAddress,
    Json(new): Json<NewUser>,
) -> Result<Response, WebError> {
    refuse_on_secondary(&state)?;
    let mut roles = Vec::new();
    for word in &new.roles {
        roles
            .push(Role::parse(word).ok_or_else(|| {
                WebError::bad("roles", format!("{word:?} is not a role: use admin, dsl or governor"))
            })?);
    }
    if new.reason.trim().is_empty() {
        return Err(WebError::bad("reason", no_reason()));
    }
    let user = (new.name.trim().to_string(), new.password, roles);
    match add_user(&state, &admin, user, new.reason, acting(&address, &admin)).await? {
        Ok(user) => Ok((StatusCode::CREATED, axum::Json(user)).into_response()),
        Err(UserError::Store(error)) => Err(error.into()),
        Err(error) => Err(WebError::BadRequest { field: error.field(), message: error.to_string() }),
    }
}
