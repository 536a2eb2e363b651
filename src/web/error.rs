//! [`WebError`]: the one error of the dashboard. A handler or extractor
//! returns it; [`render`] turns it into a friendly page for people, or
//! `{ "error": ..., "field": ... }` under `/api/`, since only it knows which
//! the request was. A bad form value is a `BadRequest` naming its field,
//! never a 500.

use askama::Template;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WebError {
    /// No live session: pages go to the login form, the API answers 401.
    #[error("log in first")]
    LoggedOut,
    /// Logged in, but no role allows this.
    #[error("{0}")]
    Forbidden(String),
    /// The request failed a security check (CSRF token, Origin).
    #[error("{0}")]
    Refused(String),
    /// The Host header names none of the dashboard's names.
    #[error("{0}")]
    WrongHost(String),
    #[error("there is no such page")]
    NotFound,
    /// A page asked for with a method it does not take (a GET of a form's target).
    #[error("this address does not take that kind of request; go back to the dashboard and use its forms")]
    MethodNotAllowed,
    /// The thing cannot be changed in its state (a signed-off review): 409.
    #[error("{0}")]
    Conflict(String),
    /// A bad value, named by its form field when it has one.
    #[error("{message}")]
    BadRequest { field: Option<&'static str>, message: String },
    /// Our fault: logged, and shown without detail.
    #[error("{0}")]
    Internal(String),
    /// The server cannot do it now (the disk is full): 503, said in words
    /// (no path: anyone may meet it, on the login form too); logged with detail.
    #[error("{message}")]
    Unavailable { message: &'static str, detail: String },
}

/// What a request that had to write is told when the disk is full.
const DISK_FULL: &str = "The server's disk is full, so the dashboard cannot save this. DNS is still answering. \
                         Free some space on the server (the ICT lead can), then try again";

impl WebError {
    pub fn bad(field: &'static str, message: impl Into<String>) -> WebError {
        WebError::BadRequest { field: Some(field), message: message.into() }
    }

    fn status(&self) -> StatusCode {
        match self {
            WebError::LoggedOut => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) | WebError::Refused(_) => StatusCode::FORBIDDEN,
            WebError::WrongHost(_) => StatusCode::MISDIRECTED_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn field(&self) -> Option<&'static str> {
        match self {
            WebError::BadRequest { field, .. } => *field,
            _ => None,
        }
    }

    /// What a person or a script is told (an internal error's detail is logged, not shown).
    fn public_message(&self) -> String {
        match self {
            WebError::Internal(_) => {
                "something went wrong on the server; the details are in Hedgerow's log. Try again, and tell \
                 the ICT lead if it happens again"
                    .to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for WebError {
    fn from(error: StoreError) -> WebError {
        if error.is_disk_full() {
            WebError::Unavailable { message: DISK_FULL, detail: error.to_string() }
        } else {
            WebError::Internal(error.to_string())
        }
    }
}

/// The error travels in the response's extensions to [`render`].
#[derive(Clone)]
struct Unrendered(WebError);

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        response.extensions_mut().insert(Unrendered(self));
        response
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: super::layout::Layout,
    status: u16,
    title: &'static str,
    message: String,
}

/// Middleware: renders a [`WebError`] for whoever asked.
pub(super) async fn render(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let wanted = request.uri().path_and_query().map(|target| target.as_str().to_string()).unwrap_or_default();
    let response = next.run(request).await;
    let Some(Unrendered(error)) = response.extensions().get::<Unrendered>().cloned() else {
        return response;
    };
    if let WebError::Internal(detail) = &error {
        tracing::error!(%detail, "dashboard request failed");
    }
    if let WebError::Unavailable { detail, .. } = &error {
        tracing::warn!(%detail, "dashboard request refused: the disk is full");
    }
    let status = error.status();
    if api {
        let body = serde_json::json!({ "error": error.public_message(), "field": error.field() });
        return (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    }
    if let WebError::LoggedOut = error {
        return Redirect::to(&format!("/login?next={}", percent_encode(&wanted))).into_response();
    }
    let title = match &error {
        WebError::LoggedOut => "Please log in",
        WebError::Forbidden(_) => "Not allowed",
        WebError::Refused(_) => "Request refused",
        WebError::WrongHost(_) => "Wrong address",
        WebError::NotFound => "Not found",
        WebError::MethodNotAllowed => "Not a page",
        WebError::Conflict(_) => "Cannot be changed",
        WebError::BadRequest { .. } => "Please check what you sent",
        WebError::Internal(_) => "Something went wrong",
        WebError::Unavailable { .. } => "The disk is full",
    };
    let page = ErrorPage {
        layout: super::layout::Layout::anonymous(title),
        status: status.as_u16(),
        title,
        message: error.public_message(),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, error.public_message()).into_response(),
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub(super) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store write that meets a full disk is a 503 saying so (no path),
    /// any other store error an internal error.
    #[test]
    fn a_full_disk_is_said_in_words_and_other_store_errors_are_internal() {
        let store_error = |code| StoreError::Sqlite {
            path: "/var/lib/hedgerow/hedgerow.db".into(),
            action: "save the session",
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        let full = WebError::from(store_error(rusqlite::ffi::SQLITE_FULL));
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let message = full.public_message();
        assert!(message.contains("disk is full") && message.contains("DNS is still answering"), "{message}");
        assert!(!message.contains("/var/lib"), "no path: {message}");
        let other = WebError::from(store_error(rusqlite::ffi::SQLITE_CORRUPT));
        assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn percent_encoding_keeps_paths_readable() {
        assert_eq!(super::percent_encode("/users?page=2&x=a b"), "/users%3Fpage%3D2%26x%3Da%20b");
    }
}
