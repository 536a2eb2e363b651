//! The DNS side of Hedgerow: the server, the query path and its stages.

pub mod access;
pub mod cache;
pub mod decision;
pub mod identify;
pub mod pipeline;
pub mod server;
pub mod upstream;

pub use decision::{Decision, DecisionKind, Stage};
pub use pipeline::{Answer, Flow, Pipeline, Question, Requester};
pub use server::DnsServer;
