//! Who is asking: the session cookie, the CSRF check and the role
//! extractors.
//!
//! - The cookie `hedgerow_session` holds a random id (the database keeps only
//!   its hash): HttpOnly, SameSite=Strict, Path=/, and Secure over TLS. A
//!   session ends after `[dashboard] idle_minutes` without a request and
//!   `absolute_hours` after login ([`crate::store::Sessions::lookup`]).
//! - [`load`] looks the session up once per request and, for every request
//!   that changes something, checks its CSRF token (form field `csrf` or
//!   header `X-CSRF-Token`) here, in one place, not per handler. Only the
//!   login and setup forms, which have no session yet, go without (the
//!   Origin check and SameSite=Strict cover them).
//! - Handlers say who may call them in their signature: [`CurrentUser`] for
//!   anyone logged in, [`RequireAdmin`], [`RequireDsl`],
//!   [`RequireGovernorOrAdmin`]. An admin may do everything.

use std::marker::PhantomData;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{AppState, WebError};
use crate::store::{Role, User};

/// The session cookie's name.
pub const COOKIE: &str = "hedgerow_session";

/// The most a form body may hold (the CSRF check reads it).
const FORM_LIMIT: usize = 64 * 1024;
/// The CSV import's form: about 20,000 devices.
const IMPORT_LIMIT: usize = 2 * 1024 * 1024;

/// The logged-in user of this request (any role).
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub user: User,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
    /// The raw session id from the cookie (to end it at logout).
    pub(super) raw_id: String,
    /// Alerts not yet acknowledged, for the nav of a DSL's or admin's page
    /// (`None` for governors, the API and forms' answers).
    pub open_alerts: Option<i64>,
    /// Unblock requests waiting for a decision, for an admin's nav (issue 15).
    pub open_requests: Option<i64>,
    /// A secondary's line about whose policy it follows (issue 16).
    pub server_note: Option<super::layout::ServerNote>,
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, WebError> {
        parts.extensions.get::<CurrentUser>().cloned().ok_or(WebError::LoggedOut)
    }
}

impl super::layout::Viewer for CurrentUser {
    fn user(&self) -> &User {
        &self.user
    }
    fn csrf(&self) -> &str {
        &self.csrf
    }
    fn open_alerts(&self) -> Option<i64> {
        self.open_alerts
    }
    fn open_requests(&self) -> Option<i64> {
        self.open_requests
    }
    fn server_note(&self) -> Option<&super::layout::ServerNote> {
        self.server_note.as_ref()
    }
}

impl<R: RoleSet> super::layout::Viewer for Require<R> {
    fn user(&self) -> &User {
        &self.0.user
    }
    fn csrf(&self) -> &str {
        &self.0.csrf
    }
    fn open_alerts(&self) -> Option<i64> {
        self.0.open_alerts
    }
    fn open_requests(&self) -> Option<i64> {
        self.0.open_requests
    }
    fn server_note(&self) -> Option<&super::layout::ServerNote> {
        self.0.server_note.as_ref()
    }
}

/// A set of roles any one of which allows a route.
pub trait RoleSet: Send + Sync + 'static {
    const ROLES: &'static [Role];
    /// Who may, in words, for the refusal.
    const WHO: &'static str;
}

pub struct AdminRole;
impl RoleSet for AdminRole {
    const ROLES: &'static [Role] = &[Role::Admin];
    const WHO: &'static str = "an admin";
}

pub struct DslRole;
impl RoleSet for DslRole {
    const ROLES: &'static [Role] = &[Role::Dsl, Role::Admin];
    const WHO: &'static str = "the DSL or an admin";
}

pub struct GovernorOrAdminRole;
impl RoleSet for GovernorOrAdminRole {
    const ROLES: &'static [Role] = &[Role::Governor, Role::Admin];
    const WHO: &'static str = "a governor or an admin";
}

pub struct AnyRole;
impl RoleSet for AnyRole {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Dsl, Role::Governor];
    const WHO: &'static str = "an admin, the DSL or a governor";
}

/// A logged-in user holding one of `R`'s roles; anyone else gets 403.
pub struct Require<R: RoleSet>(pub CurrentUser, PhantomData<R>);

pub type RequireAdmin = Require<AdminRole>;
pub type RequireDsl = Require<DslRole>;
pub type RequireGovernorOrAdmin = Require<GovernorOrAdminRole>;
/// Any of the three roles (the pages every role may read).
pub type RequireAnyRole = Require<AnyRole>;

impl<R: RoleSet> std::ops::Deref for Require<R> {
    type Target = CurrentUser;
    fn deref(&self) -> &CurrentUser {
        &self.0
    }
}

impl<S: Send + Sync, R: RoleSet> FromRequestParts<S> for Require<R> {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, WebError> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        if R::ROLES.iter().any(|role| current.user.has(*role)) {
            Ok(Require(current, PhantomData))
        } else {
            Err(WebError::Forbidden(format!(
                "Only {} may use this page. You are logged in as {} ({}); ask an admin if you need it.",
                R::WHO,
                current.user.name,
                current.user.roles_text()
            )))
        }
    }
}

/// The value of cookie `name` in `headers`.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
}

/// The Set-Cookie value that starts a session.
pub(super) fn session_cookie(raw_id: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}={raw_id}; HttpOnly; SameSite=Strict; Path=/{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("hedgerow_session=; Path=/"))
}

/// The Set-Cookie value that ends one.
pub(super) fn cleared_cookie(tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}"))
        .unwrap_or_else(|_| HeaderValue::from_static("hedgerow_session=; Path=/; Max-Age=0"))
}

/// Requests that change something without a session: the login and setup forms.
fn needs_no_session(path: &str) -> bool {
    // The sync routes are signed with the shared key instead (web/sync.rs).
    path == "/login" || path.starts_with("/setup/") || super::sync::is_signed_route(path)
}

/// Middleware: the session (as a [`CurrentUser`] extension) and the CSRF check.
pub(super) async fn load(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // A page (not the API, a form or the stylesheet) shows the open alerts in its nav.
    let path = parts.uri.path();
    let page = parts.method == Method::GET && !path.starts_with("/api/") && !path.starts_with("/static/");
    let current = match cookie(&parts.headers, COOKIE) {
        Some(raw_id) if !raw_id.is_empty() => {
            let settings = state.settings().clone();
            let looked_up = state
                .blocking(move |state| {
                    let found = state.sessions().lookup(
                        &raw_id,
                        crate::time::now_ms(),
                        settings.idle_ms,
                        settings.absolute_ms,
                    )?;
                    let Some(session) = found else { return Ok(None) };
                    let open = if page && (session.user.has(Role::Dsl) || session.user.has(Role::Admin)) {
                        let filter = crate::store::alerts::AlertFilter {
                            state: Some(crate::store::alerts::AlertState::Open),
                            ..Default::default()
                        };
                        state.alerts().count(&filter).ok()
                    } else {
                        None
                    };
                    // Unblock requests (issue 15): the open count in an admin's nav.
                    let requests =
                        if page && session.user.has(Role::Admin) { state.unblock().open_count().ok() } else { None };
                    Ok::<_, crate::store::StoreError>(Some((raw_id, session, open, requests)))
                })
                .await;
            match looked_up {
                Ok(Ok(found)) => found.map(|(raw_id, session, open_alerts, open_requests)| CurrentUser {
                    user: session.user,
                    csrf: session.csrf_token,
                    raw_id,
                    open_alerts,
                    open_requests,
                    server_note: if page { super::sync::note(&state) } else { None },
                }),
                Ok(Err(error)) => return WebError::from(error).into_response(),
                Err(error) => return error.into_response(),
            }
        }
        _ => None,
    };
    let changes = parts.method != Method::GET && parts.method != Method::HEAD;
    let body = if changes && !needs_no_session(parts.uri.path()) {
        let Some(current) = &current else {
            return WebError::LoggedOut.into_response();
        };
        // The Devices page's CSV import (issue 13, devices) takes a whole school's table.
        let limit = if parts.uri.path() == "/devices/import" { IMPORT_LIMIT } else { FORM_LIMIT };
        let bytes = match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => bytes,
            Err(_) => return WebError::bad("csrf", "the form is too large").into_response(),
        };
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
            .or_else(|| form_field(&bytes, "csrf"));
        if !sent.is_some_and(|sent| same_secret(sent.as_bytes(), current.csrf.as_bytes())) {
            return WebError::Refused(
                "this form's security token is missing or out of date (it changes at each login), so nothing was \
                 changed. Reload the page and try again"
                    .to_string(),
            )
            .into_response();
        }
        Body::from(bytes)
    } else {
        body
    };
    if let Some(current) = current {
        parts.extensions.insert(current);
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
pub(super) fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').filter_map(|pair| pair.split_once('=')).find_map(|(key, value)| {
        (percent_decode(key).as_deref() == Some(name)).then(|| percent_decode(value)).flatten()
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 2;
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_form_fields_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; hedgerow_session=abc-_; b=2"));
        assert_eq!(cookie(&headers, COOKIE).as_deref(), Some("abc-_"));
        assert_eq!(cookie(&headers, "c"), None);
        assert_eq!(form_field(b"name=x&csrf=t%2Bk+n&z=1", "csrf").as_deref(), Some("t+k n"));
        assert_eq!(form_field(b"name=x", "csrf"), None);
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"ab", b"abc"));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = session_cookie("id", false);
        assert_eq!(plain.to_str().unwrap(), "hedgerow_session=id; HttpOnly; SameSite=Strict; Path=/");
        assert!(session_cookie("id", true).to_str().unwrap().ends_with("; Secure"));
    }
}
