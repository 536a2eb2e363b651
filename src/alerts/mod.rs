//! Alerts for the Designated Safeguarding Lead (issue 14).
//!
//! ```text
//! Pipeline::finish -> AlertFeed (observer: blocked/bypass lookups only, own bounded channel)
//!   -> watch thread: rules::Engine (incidents) -> store::alerts (alert + its messages, one txn)
//!   -> deliver worker: outbox -> SMTP / webhook, retried with back-off, digests
//! ```
//!
//! - [`rules`]: which attempts raise an alert and how further attempts join it.
//! - [`feed`]: the bounded channel from the DNS path, apart from the log's.
//! - [`watch`]: the thread that runs the engine and writes alerts, and the rise rule.
//! - [`message`]: what an alert and a digest say, by e-mail and by webhook.
//! - [`deliver`]: the outbox worker (retries with back-off, digests), by
//!   [`smtp`] and [`webhook`].

pub mod deliver;
pub mod feed;
pub mod message;
pub mod rules;
pub mod smtp;
pub mod watch;
pub mod webhook;
