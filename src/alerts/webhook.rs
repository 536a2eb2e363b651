//! One outbox webhook call: the JSON body POSTed to `[alerts.webhook] url`,
//! signed so the receiver can tell it came from this Hedgerow and was not
//! changed or replayed later:
//!
//! ```text
//! Content-Type: application/json
//! X-Hedgerow-Timestamp: <unix seconds>
//! X-Hedgerow-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//! ```
//!
//! A 2xx answer is a delivery; anything else (a redirect too: none is
//! followed) is an error naming the status, and the message is retried.

use std::time::Duration;

use ring::hmac;
use ureq::http::Uri;

use crate::config::alerts::WebhookSettings;

/// How long one call may take, from connecting to the end of the answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// POSTs `body` to the webhook, signed with its secret at `timestamp`.
pub fn send(settings: &WebhookSettings, body: &str, timestamp: u64) -> Result<(), String> {
    let secret = settings.secret.read()?;
    let uri: Uri = settings.url.parse().map_err(|error| format!("the webhook URL is not a URL ({error})"))?;
    let loopback = uri.host().is_some_and(|host| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(TIMEOUT))
        .user_agent(concat!("hedgerow/", env!("CARGO_PKG_VERSION")))
        // A proxy from HTTPS_PROXY cannot reach this machine's loopback.
        .proxy(if loopback { None } else { ureq::Proxy::try_from_env() })
        .build()
        .new_agent();
    let response = agent
        .post(uri)
        .header("Content-Type", "application/json")
        .header("X-Hedgerow-Timestamp", timestamp.to_string())
        .header("X-Hedgerow-Signature", signature(&secret, timestamp, body))
        .send(body)
        .map_err(|error| match error {
            ureq::Error::Timeout(_) => {
                format!("the webhook {} did not answer within {} s", settings.url, TIMEOUT.as_secs())
            }
            other => format!("cannot reach the webhook {}: {other}", settings.url),
        })?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("the webhook {} answered {status}", settings.url)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_and_body() {
        // Python's hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest().
        assert_eq!(
            signature("key", 1_700_000_000, "{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
