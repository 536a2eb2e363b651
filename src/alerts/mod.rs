//! Alerts for the Designated Safeguarding Lead (issue 14), built in parts.
//!
//! Here so far: the rules and the incident grouping ([`rules`]), pure and
//! in memory: an [`rules::Attempt`] (one blocked or bypass lookup, as the
//! pipeline's observer will hand it on) goes in, and out comes what changed:
//! a new incident to raise, or a lookup joining an open one. Still to come:
//! the observer on `Pipeline::finish` (off the DNS path, through its own
//! channel so log shedding never loses an alert), incidents in SQLite, the
//! dashboard's inbox, and delivery by e-mail and webhook.

pub mod rules;
