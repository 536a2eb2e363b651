//! The stylesheet, embedded in the binary and served under a name carrying
//! a hash of its content, so browsers may keep it for a year and still get
//! a new one with each change.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::WebError;
use super::layout::{STYLESHEET, STYLESHEET_NAME};

/// Lists (issue 13): the script that shows "update now"'s progress.
pub(super) const LISTS_SCRIPT: &str = include_str!("../../web/static/lists.js");

/// `lists.<hash>.js`.
pub(super) static LISTS_SCRIPT_NAME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("lists.{:016x}.js", super::layout::fnv1a(LISTS_SCRIPT)));

/// The review (issue 15): the "Print / save as PDF" button's one line.
pub(super) const REVIEW_SCRIPT: &str = include_str!("../../web/static/review.js");

/// `review.<hash>.js`.
pub(super) static REVIEW_SCRIPT_NAME: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("review.{:016x}.js", super::layout::fnv1a(REVIEW_SCRIPT)));

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let script = if file == *LISTS_SCRIPT_NAME {
        Some(LISTS_SCRIPT)
    } else if file == *REVIEW_SCRIPT_NAME {
        Some(REVIEW_SCRIPT)
    } else {
        None
    };
    if let Some(script) = script {
        let mut response = script.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
        return response;
    }
    if file != *STYLESHEET_NAME {
        return WebError::NotFound.into_response();
    }
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
