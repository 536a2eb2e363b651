//! `GET/POST /login` and `POST /logout`. A login makes a new session (the
//! id is renewed: any session of the cookie the browser came with is
//! deleted), and is throttled per account and per address.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ClientAddress, Form, Layout, render, render_with};
use crate::store::AuditEvent;
use crate::web::session::{self, CurrentUser};
use crate::web::throttle::Failure;
use crate::web::{AppState, WebError};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    name: String,
    error: String,
    notice: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    name: String,
    password: String,
    next: String,
}

/// Where to go after login: a path on this site, never elsewhere.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\");
    if local && !next.starts_with("/login") { next } else { "/" }
}

pub async fn form(current: Option<CurrentUser>, Query(query): Query<LoginQuery>) -> Result<Response, WebError> {
    if current.is_some() {
        return Ok(Redirect::to(safe_next(&query.next)).into_response());
    }
    let page = LoginPage {
        layout: Layout::anonymous("Log in"),
        next: safe_next(&query.next).to_string(),
        name: String::new(),
        error: String::new(),
        notice: String::new(),
    };
    Ok(render(&page)?.into_response())
}

pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: axum::http::HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let now = crate::time::now_ms();
    let name: String = form.name.trim().chars().take(64).collect();
    let next = safe_next(&form.next).to_string();
    let again = |status: StatusCode, error: String| {
        let page = LoginPage {
            layout: Layout::anonymous("Log in"),
            next: next.clone(),
            name: name.clone(),
            error,
            notice: String::new(),
        };
        render_with(status, &page)
    };
    if let Some(until) = state.throttle().locked_until(&name, &address, now) {
        return Ok(again(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed logins for this account or from this address: try again after {} (or ask an \
                 admin to reset the password)",
                super::when(&state, until + 59_999)
            ),
        ));
    }
    let old_session = session::cookie(&headers, session::COOKIE);
    let verified = {
        let (name, password, address) = (name.clone(), form.password, address.clone());
        state
            .blocking(move |state| -> Result<_, WebError> {
                let Some(user) = state.users().verify(&name, &password)? else {
                    state.audit().record(AuditEvent::Failure, &name, &address, now)?;
                    if state.throttle().failed(&name, &address, now) == Failure::NowLocked {
                        state.audit().record(AuditEvent::Lockout, &name, &address, now)?;
                    }
                    return Ok(None);
                };
                state.throttle().succeeded(&name);
                if let Some(old) = old_session {
                    state.sessions().delete(&old)?;
                }
                let session = state.sessions().create(user.id, &address, now)?;
                state.audit().record(AuditEvent::Login, &user.name, &address, now)?;
                Ok(Some(session))
            })
            .await??
    };
    let Some(session) = verified else {
        return Ok(again(
            StatusCode::UNAUTHORIZED,
            "the user name or password is wrong (or the account is disabled); check both and try again".to_string(),
        ));
    };
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::session_cookie(&session.raw_id, state.settings().tls));
    Ok(response)
}

pub async fn logout(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    current: CurrentUser,
) -> Result<Response, WebError> {
    let now = crate::time::now_ms();
    state
        .blocking(move |state| -> Result<(), WebError> {
            state.sessions().delete(&current.raw_id)?;
            state.audit().record(AuditEvent::Logout, &current.user.name, &address, now)?;
            Ok(())
        })
        .await??;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(header::SET_COOKIE, session::cleared_cookie(state.settings().tls));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/users?page=2"), "/users?page=2");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next(""), "/");
        assert_eq!(safe_next("/login"), "/");
    }
}
