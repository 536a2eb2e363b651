//! Hedgerow: a DNS filtering resolver for small schools.
//!
//! See `ARCHITECTURE.md` for the bird's-eye view and the code map.

pub mod alerts;
pub mod backup;
pub mod config;
pub mod control;
pub mod dns;
pub mod download;
pub mod files;
pub mod lists;
pub mod metrics;
pub mod name;
pub mod policy;
pub mod policy_editor;
pub mod policy_files;
pub mod present;
pub mod priority;
pub mod review;
pub mod serve;
pub mod store;
pub mod sync;
pub mod synth;
mod text;
pub mod time;
pub mod web;
