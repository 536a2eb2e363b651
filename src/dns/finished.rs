//! The finished answer: what the listeners hand on once a query is answered.
//!
//! Every answer, whichever listener wrote it and whichever stage settled it,
//! is handed once to [`Pipeline::finish`](super::pipeline::Pipeline::finish)
//! as one [`Finished`] value, from one function (`listener::finish`). The
//! metrics (`crate::metrics`) and the query log are its [`Observer`]s
//! today; alerts subscribe to the same value. An observer never changes the
//! answer and never makes the DNS path wait: it gets a borrowed view, and
//! builds what it keeps only if it will keep it.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, RecordType};

use super::decision::Decision;

/// One answered query, borrowed from the listener that answered it.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// When the query arrived, UTC Unix milliseconds.
    pub time_ms: i64,
    pub source: IpAddr,
    pub name: &'a LowerName,
    pub record_type: RecordType,
    pub decision: &'a Decision,
    pub response_code: ResponseCode,
    /// True when no upstream was asked (cache hit or policy answer).
    pub cache_hit: bool,
    pub upstream_latency: Option<Duration>,
}

/// Something told of every finished answer. Called on the DNS path: it must
/// not wait, lock per answer, or allocate for a value it then drops.
pub trait Observer: Send + Sync {
    fn finished(&self, finished: &Finished<'_>);
}
