//! Blocklists: declared sources -> parse (domains, hosts, adblock) ->
//! normalise -> compile (fst + bloom, a versioned file) -> open (read into huge-page memory).
//! The last good copies it reads are made by `download` (which may use
//! `lists`; `lists` never uses it): `lists` does no HTTP.
//!
//! This module knows nothing of sockets, SQLite or HTTP serving; the DNS
//! path only calls [`compiled::CompiledLists::lookup`].

pub mod compile;
pub mod compiled;
pub mod downloads;
pub mod floor;
pub mod health;
pub mod load;
pub mod parse;
pub mod sources;
