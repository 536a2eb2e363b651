//! One query's way through a listener, shared by UDP (`udp.rs`) and TCP
//! (`tcp.rs`): read the packet, answer at once what needs no waiting, hand
//! the rest to the pipeline's upstream path, write the answer and pass the
//! finished answer to the observer.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::DNSClass;

use super::answer::{Answer, Question};
use super::decision::Decision;
use super::finished::Finished;
use super::pipeline::{Arrival, Immediate, Pending, Pipeline, Requester};
use super::wire::{self, Rejection, WireAnswer, WireQuery};

/// What the synchronous part made of a packet.
pub(super) enum Step {
    /// The response is in the output buffer.
    Reply,
    /// Send nothing (not a query, or too short to answer).
    Silent,
    /// Resolve upstream, then write.
    Resolve(WireQuery, Question, Pending),
}

/// Reads a packet and answers it if that needs no waiting.
pub(super) fn step(
    pipeline: &Pipeline,
    arrival: Arrival,
    packet: &[u8],
    source: SocketAddr,
    limit: Option<usize>,
    out: &mut Vec<u8>,
) -> Step {
    let mut query = match wire::read_query(packet) {
        Ok(query) => query,
        Err(Rejection::Drop) => return Step::Silent,
        Err(Rejection::Error { id, flags, code }) => {
            // No question could be read, so there is nothing to log.
            wire::write_error(id, flags, code, out);
            return Step::Reply;
        }
    };
    // The server's own queries (readiness probe, self-test) may ask as a
    // group; every other query is decided by its source address. One
    // relaxed atomic load while none is in flight. Their sockets are UDP
    // (`limit` is None only for UDP): a TCP connection from a port that
    // happens to share a registered UDP port's number is an ordinary query.
    let internal = if limit.is_none() { pipeline.internal(source) } else { None };
    query.internal = internal.is_some();
    let limit = limit.unwrap_or_else(|| query.udp_limit());
    // RFC 6891 section 6.1.3: only EDNS version 0 exists.
    if query.edns.is_some_and(|edns| edns.version > 0) {
        return write_error_answer(
            pipeline,
            arrival,
            source,
            &query,
            ResponseCode::BADVERS,
            "unsupported EDNS version",
            limit,
            out,
        );
    }
    if query.class != u16::from(DNSClass::IN) {
        return write_error_answer(
            pipeline,
            arrival,
            source,
            &query,
            ResponseCode::NotImp,
            "only the IN class is served",
            limit,
            out,
        );
    }
    let question = Question {
        name: query.name.clone(),
        record_type: query.record_type,
        dnssec_ok: query.edns.is_some_and(|edns| edns.dnssec_ok),
    };
    let immediate = match internal.as_ref().and_then(|internal| internal.group.as_deref()) {
        Some(group) => pipeline.answer_now_as(Requester::Group(group), &question, arrival.at),
        None => pipeline.answer_now_at(source.ip(), &question, arrival.at),
    };
    match immediate {
        Immediate::Answer(answer) => {
            write_answer(&query, &answer, limit, out);
            finish_answer(pipeline, arrival, source, &query, &answer);
            Step::Reply
        }
        Immediate::Cached { entry, age, decision } => match entry.wire() {
            Some(wire) => {
                wire.write(&query, age, None, None, limit, out);
                let code = entry.stored().response_code;
                finish(pipeline, arrival, source, &query, &decision, code, true, None);
                Step::Reply
            }
            None => write_error_answer(
                pipeline,
                arrival,
                source,
                &query,
                ResponseCode::ServFail,
                "cached answer could not be encoded",
                limit,
                out,
            ),
        },
        Immediate::Upstream(pending) => Step::Resolve(query, question, pending),
    }
}

/// Hands a finished answer to the pipeline's observers: the one place the
/// listeners (UDP and TCP, policy answers, cache hits, upstream answers and
/// errors alike) do so. Observers never change the answer or wait. The
/// server's own queries' answers (the readiness probe, the self-test:
/// [`Pipeline::internal`], marked on the query when it was read) are not
/// traffic: neither counted, logged nor seen by the alerts' feed.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    decision: &Decision,
    response_code: ResponseCode,
    cache_hit: bool,
    upstream_latency: Option<Duration>,
) {
    if query.internal {
        return;
    }
    pipeline.finish(&Finished {
        time_ms: arrival.unix_ms,
        source: source.ip(),
        name: &query.name,
        record_type: query.record_type,
        decision,
        response_code,
        cache_hit,
        upstream_latency,
    });
}

/// [`finish`] for a pipeline [`Answer`].
pub(super) fn finish_answer(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    answer: &Answer,
) {
    let Answer { decision, response_code, cache_hit, upstream_latency, .. } = answer;
    finish(pipeline, arrival, source, query, decision, *response_code, *cache_hit, *upstream_latency);
}

pub(super) fn write_error_answer(
    pipeline: &Pipeline,
    arrival: Arrival,
    source: SocketAddr,
    query: &WireQuery,
    code: ResponseCode,
    reason: &'static str,
    limit: usize,
    out: &mut Vec<u8>,
) -> Step {
    let answer = Answer::empty(code, Decision::unanswerable(reason));
    write_answer(query, &answer, limit, out);
    finish_answer(pipeline, arrival, source, query, &answer);
    Step::Reply
}

/// Writes a pipeline answer (records with TTLs already counted down).
pub(super) fn write_answer(query: &WireQuery, answer: &Answer, limit: usize, out: &mut Vec<u8>) {
    let wire = WireAnswer::encode_parts(
        &query.name,
        query.record_type,
        answer.response_code,
        &answer.answers,
        &answer.authorities,
    )
    .unwrap_or_else(|| WireAnswer::empty(ResponseCode::ServFail));
    wire.write(query, 0, None, answer.extended_error.as_ref(), limit, out);
}
