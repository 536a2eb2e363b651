//! The DNS server: hickory-server's UDP and TCP listeners, and the request
//! handler that turns a request into a [`Question`], runs the pipeline and
//! writes the answer (EDNS echoed, TC set by the encoder when a UDP answer
//! exceeds the client's buffer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

use super::decision::{Decision, DecisionKind, Stage};
use super::pipeline::{Answer, Pipeline, Question};

/// The UDP payload size Hedgerow offers (the DNS Flag Day 2020 value, which
/// avoids IP fragmentation on every common path).
const MAX_UDP_PAYLOAD: u16 = 1232;
/// Queries in progress at once. hickory spawns a task per UDP query without
/// bound; past this the server answers SERVFAIL at once instead of queueing
/// without limit while upstreams are slow.
const MAX_IN_FLIGHT: usize = 20_000;
/// How long an idle TCP connection is kept.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs queries through the pipeline.
pub struct QueryHandler {
    pipeline: Arc<Pipeline>,
    in_flight: Arc<Semaphore>,
}

impl QueryHandler {
    pub fn new(pipeline: Arc<Pipeline>) -> QueryHandler {
        QueryHandler {
            pipeline,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Reads the question, or says which error code the request earns.
    fn question(request: &Request) -> Result<Question, (ResponseCode, &'static str)> {
        if request.metadata.op_code != OpCode::Query {
            return Err((ResponseCode::NotImp, "only standard queries are served"));
        }
        let [query] = request.queries.queries() else {
            return Err((
                ResponseCode::FormErr,
                "a query must carry exactly one question",
            ));
        };
        if query.query_class() != DNSClass::IN {
            return Err((ResponseCode::NotImp, "only the IN class is served"));
        }
        Ok(Question {
            name: query.name().clone(),
            record_type: query.query_type(),
            dnssec_ok: request
                .edns
                .as_ref()
                .is_some_and(|edns| edns.flags().dnssec_ok),
        })
    }
}

#[async_trait::async_trait]
impl RequestHandler for QueryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // RFC 6891 section 6.1.1: a request with OPT gets OPT back, and the
        // UDP size is the smaller of the client's buffer and ours.
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut reply = Edns::new();
            reply.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            reply.set_dnssec_ok(edns.flags().dnssec_ok);
            reply
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &response_edns {
            builder.edns(edns);
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = true;

        // RFC 6891 section 6.1.3: only EDNS version 0 exists.
        let unsupported_edns = request.edns.as_ref().is_some_and(|edns| edns.version() > 0);
        let answer = match Self::question(request) {
            _ if unsupported_edns => {
                error_answer(ResponseCode::BADVERS, "unsupported EDNS version")
            }
            Err((code, reason)) => error_answer(code, reason),
            Ok(question) => match self.in_flight.clone().try_acquire_owned() {
                Ok(_permit) => self.pipeline.answer(request.src().ip(), &question).await,
                Err(_) => error_answer(ResponseCode::ServFail, "too many queries in progress"),
            },
        };
        tracing::debug!(src = %request.src(), decision = %answer.decision, "answered");

        metadata.response_code = answer.response_code;
        let limit = match &response_edns {
            Some(edns) => usize::from(edns.max_payload()),
            None => 512,
        };
        let fits = request.protocol() != Protocol::Udp || fits_in_datagram(request, &answer, limit);
        // RFC 6891 section 7: an answer too large for the client's buffer
        // goes as header, question and OPT with TC set, so the client retries
        // over TCP knowing we speak EDNS. (hickory's encoder would fill the
        // buffer with records and leave the OPT out.)
        metadata.truncation = !fits;
        let (answers, authorities) = if fits {
            (&answer.answers[..], &answer.authorities[..])
        } else {
            (&[][..], &[][..])
        };
        let response = builder.build(metadata, answers.iter(), authorities.iter(), [], []);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "could not send the answer");
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// True when the answer fits in a UDP datagram of `limit` bytes. Common
/// answers (a few A/AAAA/CNAME records) are sized from an upper bound without
/// encoding; anything else is encoded once to measure it.
fn fits_in_datagram(request: &Request, answer: &Answer, limit: usize) -> bool {
    const HEADER: usize = 12;
    const OPT: usize = 11;
    const RECORD_FIXED: usize = 10; // type, class, TTL, RDLENGTH
    let question: usize = request
        .queries
        .queries()
        .iter()
        .map(|q| q.name().len() + 1 + 4)
        .sum();
    let fixed = HEADER + question + OPT;
    let records = || answer.answers.iter().chain(&answer.authorities);
    let mut upper_bound = fixed;
    let mut sized = true;
    for record in records() {
        upper_bound += record.name.len() + 1 + RECORD_FIXED;
        upper_bound += match &record.data {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            RData::CNAME(target) => target.0.len() + 1,
            _ => {
                sized = false;
                0
            }
        };
    }
    if sized && upper_bound <= limit {
        return true;
    }
    let mut buffer = Vec::with_capacity(limit);
    let mut encoder = BinEncoder::new(&mut buffer);
    for record in records() {
        if record.emit(&mut encoder).is_err() {
            return false;
        }
    }
    fixed + buffer.len() <= limit
}

fn error_answer(response_code: ResponseCode, reason: &'static str) -> Answer {
    Answer {
        response_code,
        answers: Vec::new(),
        authorities: Vec::new(),
        decision: Decision::new(DecisionKind::Error, Stage::Parse, reason),
        cache_hit: false,
        upstream_latency: None,
    }
}

/// A running DNS server and the addresses it really listens on (port 0 in the
/// config becomes the port the OS picked).
pub struct DnsServer {
    server: Server<QueryHandler>,
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address and starts serving.
    pub async fn start(
        pipeline: Arc<Pipeline>,
        listen: &[SocketAddr],
    ) -> std::io::Result<DnsServer> {
        let mut server = Server::new(QueryHandler::new(pipeline));
        let mut udp_addrs = Vec::new();
        let mut tcp_addrs = Vec::new();
        for address in listen {
            let (udp, tcp) = bind_pair(*address).await?;
            udp_addrs.push(udp.local_addr()?);
            tcp_addrs.push(tcp.local_addr()?);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64 * 1024);
        }
        Ok(DnsServer {
            server,
            udp_addrs,
            tcp_addrs,
        })
    }

    /// Serves until the listeners fail.
    pub async fn run(mut self) -> std::io::Result<()> {
        self.server
            .block_until_done()
            .await
            .map_err(std::io::Error::other)
    }

    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// Binds UDP and TCP on the same port. With port 0 the OS picks the UDP port,
/// and TCP is bound to the same number (retried if that TCP port is taken).
async fn bind_pair(address: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let explain = |error: std::io::Error, proto: &str, at: SocketAddr| {
        let hint = match error.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
            }
            std::io::ErrorKind::AddrInUse => {
                " (another DNS server may be running there: stop it or change dns.listen)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (this machine has no such address: check dns.listen)"
            }
            _ => "",
        };
        std::io::Error::new(
            error.kind(),
            format!("cannot listen on {proto} {at}: {error}{hint}"),
        )
    };
    if address.port() != 0 {
        let udp = UdpSocket::bind(address)
            .await
            .map_err(|e| explain(e, "UDP", address))?;
        let tcp = TcpListener::bind(address)
            .await
            .map_err(|e| explain(e, "TCP", address))?;
        return Ok((udp, tcp));
    }
    let mut last_error = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(address)
            .await
            .map_err(|e| explain(e, "UDP", address))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(address.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => last_error = Some(explain(error, "TCP", address)),
        }
    }
    Err(last_error.expect("at least one attempt"))
}
