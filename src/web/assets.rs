//! The stylesheet, embedded in the binary and served under a name carrying
//! a hash of its content, so browsers may keep it for a year and still get
//! a new one with each change.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::WebError;

const STYLESHEET: &str = include_str!("../../web/static/hedgerow.css");

/// `hedgerow.<hash>.css`.
static STYLESHEET_NAME: LazyLock<String> = LazyLock::new(|| format!("hedgerow.{:016x}.css", fnv1a(STYLESHEET)));

/// The stylesheet's URL, for the layout.
pub(super) fn stylesheet_url() -> String {
    format!("/static/{}", *STYLESHEET_NAME)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

pub(super) async fn serve(Path(file): Path<String>) -> Response {
    if file != *STYLESHEET_NAME {
        return WebError::NotFound.into_response();
    }
    let mut response = STYLESHEET.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    response
}
