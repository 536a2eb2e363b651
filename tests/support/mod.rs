//! Shared helpers for Hedgerow's integration tests.
//!
//! Each integration test crate pulls this in with `mod support;`. Not every
//! test uses every helper, hence the blanket `dead_code` allowance.
#![allow(dead_code)]

pub mod authority;
pub mod browser;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod pair;
pub mod router;
pub mod server;
pub mod smtp;
