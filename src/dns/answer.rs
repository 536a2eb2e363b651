//! The answer types several stages share: the question as the pipeline
//! sees it, a finished [`Answer`] with its decision, an upstream's answer or
//! error, and the RFC 8914 detail. A leaf: it depends on no stage.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Record, RecordType};

use super::decision::Decision;

/// The question as the pipeline sees it (one per message).
#[derive(Debug, Clone)]
pub struct Question {
    pub name: LowerName,
    pub record_type: RecordType,
    pub dnssec_ok: bool,
}

/// A finished answer and the decision behind it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response_code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub decision: Decision,
    /// RFC 8914 detail for the client (blocked answers carry their category).
    pub extended_error: Option<ExtendedError>,
    /// True when no upstream was asked (cache hit or policy answer).
    pub cache_hit: bool,
    pub upstream_latency: Option<Duration>,
}

impl Answer {
    pub fn empty(response_code: ResponseCode, decision: Decision) -> Answer {
        Answer {
            response_code,
            answers: Vec::new(),
            authorities: Vec::new(),
            decision,
            extended_error: None,
            cache_hit: false,
            upstream_latency: None,
        }
    }

    pub(super) fn from_upstream(answer: UpstreamAnswer, decision: Decision) -> Answer {
        Answer {
            response_code: answer.response_code,
            answers: answer.answers,
            authorities: answer.authorities,
            decision,
            extended_error: None,
            cache_hit: false,
            upstream_latency: None,
        }
    }
}

/// An answer from upstream: positive, NXDOMAIN or NODATA.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub response_code: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream answered {0}")]
    Failed(ResponseCode),
    #[error("upstream failed: {0}")]
    Other(String),
    /// A failure on this machine (no socket to send from), which says
    /// nothing about the server, so it is not marked down for it.
    #[error("cannot ask upstream: {0}")]
    Local(String),
    #[error("cannot build the upstream: {0}")]
    Setup(String),
}

/// An RFC 8914 Extended DNS Error to attach to an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedError {
    /// 15 = Blocked, 17 = Filtered, ...
    pub info_code: u16,
    pub text: String,
}
