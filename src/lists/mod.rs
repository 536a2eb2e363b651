//! Blocklists: declared sources -> parse (domains, hosts, adblock) ->
//! normalise -> compile (fst + bloom, a versioned file) -> open (read into huge-page memory).
//! `fetch` keeps downloaded copies of URL sources up to date.
//!
//! This module knows nothing of sockets, SQLite or HTTP serving; the DNS
//! path only calls [`compiled::CompiledLists::lookup`].

pub mod compile;
pub mod compiled;
pub mod downloads;
pub mod fetch;
pub mod floor;
pub mod health;
pub mod load;
pub mod parse;
pub mod sources;
