//! The pages, one file each with its JSON twin, and what they share: the
//! [`Layout`] every template extends, form reading that turns a bad body
//! into a [`WebError`], and the client's address.

pub mod alerts;
pub mod audit;
pub mod changes;
pub mod checks;
pub mod device;
pub mod devices;
pub mod explorer;
pub mod home;
pub mod lists;
pub mod login;
pub mod monitor;
pub mod overview;
pub mod policy;
pub mod requests;
pub mod review;
pub mod servers;
pub mod setup;
pub mod test_name;
pub mod users;

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::WebError;
pub use super::layout::Layout;
use super::session::CurrentUser;
use crate::store::Role;

/// Renders a template as a page.
pub fn render(template: &impl Template) -> Result<Html<String>, WebError> {
    template.render().map(Html).map_err(|error| WebError::Internal(format!("a page template failed: {error}")))
}

/// Renders a template with a status (a form shown again with its errors).
pub fn render_with(status: axum::http::StatusCode, template: &impl Template) -> Response {
    match render(template) {
        Ok(html) => (status, html).into_response(),
        Err(error) => error.into_response(),
    }
}

/// A form body; one that cannot be read is a [`WebError`], never a 500.
/// Forms here have only text fields with defaults, so every value reaches
/// the handler, which checks it and answers beside its field.
pub struct Form<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &S) -> Result<Self, WebError> {
        axum::Form::<T>::from_request(request, state).await.map(|form| Form(form.0)).map_err(|error| {
            WebError::BadRequest {
                field: None,
                message: format!("the form could not be read ({error}); reload the page and try again"),
            }
        })
    }
}

/// A JSON body, with the same promise as [`Form`].
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &S) -> Result<Self, WebError> {
        axum::Json::<T>::from_request(request, state).await.map(|json| Json(json.0)).map_err(|error| {
            WebError::BadRequest { field: None, message: format!("the JSON body could not be read: {error}") }
        })
    }
}

/// The client's IP address as text ("unknown" when the server was not told).
pub struct ClientAddress(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, WebError> {
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip().to_string());
        Ok(ClientAddress(address.unwrap_or_else(|| "unknown".to_string())))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentUser {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, WebError> {
        Ok(parts.extensions.get::<CurrentUser>().cloned())
    }
}

/// A checkbox's value: present and not "off".
/// A form field's value, trimmed; `None` when it is empty.
pub fn text(value: &str) -> Option<String> {
    Some(value.trim().to_string()).filter(|value| !value.is_empty())
}

/// The first field with a message, as the [`WebError`] a download or an API
/// answer gives (a page shows every message beside its field instead).
pub fn first_error(fields: &[(&'static str, &String)]) -> WebError {
    let (field, message) = fields.iter().find(|(_, message)| !message.is_empty()).copied().unwrap_or(("", fields[0].1));
    WebError::bad(field, message.clone())
}

pub fn checked(value: &str) -> bool {
    !value.is_empty() && value != "off"
}

/// The roles ticked in a form (`role_admin`, `role_dsl`, `role_governor`).
pub fn ticked_roles(admin: &str, dsl: &str, governor: &str) -> Vec<Role> {
    [(admin, Role::Admin), (dsl, Role::Dsl), (governor, Role::Governor)]
        .into_iter()
        .filter(|(value, _)| checked(value))
        .map(|(_, role)| role)
        .collect()
}

/// A time as people at the school read it: `2026-11-30 13:45 GMT`, in the
/// configured time zone (the one schedules and expiries are written in).
pub fn when(state: &crate::web::AppState, time_ms: i64) -> String {
    state.config().local_time_text(time_ms)
}

/// Any path no route has.
pub async fn not_found() -> WebError {
    WebError::NotFound
}

/// A route asked for with a method it does not take.
pub async fn method_not_allowed() -> WebError {
    WebError::MethodNotAllowed
}

/// Percent-encodes a query value or path segment.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Form filters as a query string (for pager and CSV links): the non-empty
/// values, trimmed and percent-encoded.
pub fn query_string(pairs: &[(&str, &String)]) -> String {
    pairs
        .iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(key, value)| format!("{key}={}", encode(value.trim())))
        .collect::<Vec<_>>()
        .join("&")
}
