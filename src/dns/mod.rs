//! The DNS side of Hedgerow: the server, the query path and its stages.

pub mod access;
pub mod answer;
pub mod blocklist;
pub mod bypass;
pub mod cache;
pub mod decision;
pub mod explain;
pub mod finished;
pub mod forward;
pub mod identify;
pub mod listener;
pub mod pipeline;
pub mod query_type;
pub mod ready;
mod respond;
pub mod tcp;
pub mod udp;
pub mod upstream;
pub mod wire;

pub use answer::{Answer, Question};
pub use decision::{Decision, DecisionKind, Stage};
pub use explain::Explanation;
pub use finished::{Finished, Observer};
pub use listener::DnsServer;
pub use pipeline::{Flow, Immediate, Pipeline, PolicySnapshot, Requester};
