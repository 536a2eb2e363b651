//! Real, in-process authoritative DNS servers on loopback, for integration tests.
//!
//! Built from hickory-server 0.26's own parts: a [`Catalog`] of
//! [`InMemoryZoneHandler`]s served by a [`Server`] on one UDP socket and one
//! TCP listener sharing a port.
//!
//! ```ignore
//! let auth = Authority::start(
//!     "127.0.0.1:0",
//!     vec![Zone::new("example.test.").a("www", "192.0.2.10")],
//! )
//! .await;
//! // ... point the resolver at auth.addr ...
//! auth.stop().await;
//! ```
//!
//! # Referrals
//!
//! hickory's in-memory handler (0.26.3) does not produce usable referrals:
//! a delegation comes back with AA set, for NS queries in the *answer*
//! section, and never with glue (its additional-record lookup for
//! `ns.child.` itself stops at the zone cut and returns the NS set again).
//! So the request handler here answers every query at or below a zone cut
//! itself with an RFC 1034 referral (AA clear, empty answer, child NS set in
//! the authority section, in-zone A/AAAA glue in the additional section) and
//! hands everything else to the [`Catalog`].

use std::{
    collections::BTreeSet,
    iter,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hickory_server::{
    Server,
    net::runtime::Time,
    proto::{
        op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode},
        rr::{
            LowerName, Name, RData, Record, RecordType,
            rdata::{A, AAAA, CNAME, NS, SOA, TXT},
        },
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType},
};
use tokio::net::{TcpListener, UdpSocket};

/// TTL given to records unless [`Zone::ttl`] says otherwise.
pub const DEFAULT_TTL: u32 = 300;
/// SOA MINIMUM (the negative-caching TTL) and the SOA record's own TTL.
pub const NEGATIVE_TTL: u32 = 60;
/// Serial of every test zone's SOA.
const SERIAL: u32 = 1;
/// Idle TCP connections are closed by the server after this long.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection outgoing response queue length (hickory's own tests use 32).
const TCP_RESPONSE_BUFFER: usize = 64;

/// An authoritative zone under construction: an origin plus its records.
///
/// Names passed to the builder methods are relative to the origin unless
/// they end in a dot; `"@"` (or `""`) is the apex. Every name must lie inside
/// the zone (a typo would otherwise silently never be served).
#[derive(Clone, Debug)]
pub struct Zone {
    origin: Name,
    records: Vec<Record>,
    ttl: u32,
}

impl Zone {
    /// A zone with an SOA (MINIMUM and TTL [`NEGATIVE_TTL`]) and an apex NS
    /// record pointing at `ns.<origin>`. Add an A record for `ns` yourself if
    /// clients need its address.
    pub fn new(origin: &str) -> Zone {
        let mut origin = Name::from_ascii(origin).unwrap_or_else(|e| panic!("invalid zone origin {origin:?}: {e}"));
        origin.set_fqdn(true);
        let ns_host = Name::from_ascii("ns").unwrap().append_domain(&origin).unwrap();
        let hostmaster = Name::from_ascii("hostmaster").unwrap().append_domain(&origin).unwrap();
        let soa = SOA::new(
            ns_host.clone(),
            hostmaster,
            SERIAL,
            3600,  // refresh
            600,   // retry
            86400, // expire
            NEGATIVE_TTL,
        );
        let mut zone = Zone { records: Vec::new(), ttl: DEFAULT_TTL, origin: origin.clone() };
        zone.push(Record::from_rdata(origin.clone(), NEGATIVE_TTL, RData::SOA(soa)));
        zone.push(Record::from_rdata(origin, DEFAULT_TTL, RData::NS(NS(ns_host))));
        zone
    }

    /// The zone's origin (always fully qualified).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Adds an A record.
    pub fn a(mut self, name: &str, ip: &str) -> Zone {
        let ip: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("bad IPv4 {ip:?}: {e}"));
        self.add(name, RData::A(A(ip)));
        self
    }

    /// Adds an AAAA record.
    pub fn aaaa(mut self, name: &str, ip: &str) -> Zone {
        let ip: Ipv6Addr = ip.parse().unwrap_or_else(|e| panic!("bad IPv6 {ip:?}: {e}"));
        self.add(name, RData::AAAA(AAAA(ip)));
        self
    }

    /// Adds a CNAME; a relative `target` is relative to the origin.
    pub fn cname(mut self, name: &str, target: &str) -> Zone {
        let target = self.target(target);
        self.add(name, RData::CNAME(CNAME(target)));
        self
    }

    /// Adds a TXT record holding `text` (split into 255-byte strings if longer).
    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        self.add(name, RData::TXT(TXT::new(split_txt(text))));
        self
    }

    /// Adds an NS record. At a name below the apex this is a delegation:
    /// queries at or under `name` get a referral to `ns_host`, with glue for
    /// `ns_host` if the zone has A/AAAA records for it. A relative `ns_host`
    /// is relative to the origin.
    pub fn ns(mut self, name: &str, ns_host: &str) -> Zone {
        let ns_host = self.target(ns_host);
        self.add(name, RData::NS(NS(ns_host)));
        self
    }

    /// Sets the TTL for records added after this call.
    ///
    /// hickory keeps one TTL per RRset, taken from the most recently added
    /// record of that set, so give all records of one name+type the same TTL.
    pub fn ttl(mut self, seconds: u32) -> Zone {
        self.ttl = seconds;
        self
    }

    /// Adds `count` A records at `name`: 10.0.0.1, 10.0.0.2, ... (10.0.x.y).
    /// About 30 of them push a UDP answer past 512 bytes.
    pub fn many_a(mut self, name: &str, count: usize) -> Zone {
        assert!(count < 65_536, "many_a: at most 65535 addresses fit in 10.0.0.0/16");
        for i in 1..=count as u32 {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
            self.add(name, RData::A(A(ip)));
        }
        self
    }

    /// Resolves an owner name, which must lie inside the zone.
    fn owner(&self, name: &str) -> Name {
        let owner = self.target(name);
        assert!(self.origin.zone_of(&owner), "{owner} is outside zone {}", self.origin);
        owner
    }

    /// Resolves a name as in a zone file: `@`/empty is the origin, a
    /// trailing dot makes it absolute, otherwise the origin is appended.
    fn target(&self, name: &str) -> Name {
        if name.is_empty() || name == "@" {
            return self.origin.clone();
        }
        Name::parse(name, Some(&self.origin))
            .unwrap_or_else(|e| panic!("invalid name {name:?} in zone {}: {e}", self.origin))
    }

    /// An HTTPS record (RFC 9460) in service mode for `name` itself, with
    /// these ALPN ids and, if given, an ECH config list.
    pub fn https(mut self, name: &str, alpn: &[&str], ech: Option<&[u8]>) -> Zone {
        use hickory_proto::rr::rdata::svcb::{Alpn, EchConfigList, SVCB, SvcParamKey, SvcParamValue};
        let mut params =
            vec![(SvcParamKey::Alpn, SvcParamValue::Alpn(Alpn(alpn.iter().map(|a| a.to_string()).collect())))];
        if let Some(ech) = ech {
            params.push((SvcParamKey::EchConfigList, SvcParamValue::EchConfigList(EchConfigList(ech.to_vec()))));
        }
        let rdata = RData::HTTPS(hickory_proto::rr::rdata::HTTPS(SVCB::new(1, Name::root(), params)));
        self.add(name, rdata);
        self
    }

    fn add(&mut self, name: &str, rdata: RData) {
        let record = Record::from_rdata(self.owner(name), self.ttl, rdata);
        self.push(record);
    }

    /// Appends a record, dropping exact duplicates (hickory rejects them).
    fn push(&mut self, record: Record) {
        if !self.records.contains(&record) {
            self.records.push(record);
        }
    }
}

/// Splits text into TXT character-strings of at most 255 bytes, on char boundaries.
fn split_txt(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    for c in text.chars() {
        if parts.last().unwrap().len() + c.len_utf8() > 255 {
            parts.push(String::new());
        }
        parts.last_mut().unwrap().push(c);
    }
    parts
}

/// A running authoritative server. Dropping it also shuts it down (its tasks
/// are aborted), but [`Authority::stop`] waits until the sockets are closed.
pub struct Authority {
    /// The UDP and TCP address the server listens on (same port for both).
    pub addr: SocketAddr,
    server: Server<CountingHandler>,
    queries: Arc<AtomicUsize>,
}

impl Authority {
    /// Serves `zones` on UDP and TCP at `addr`. With port 0 a free port is
    /// picked that is free for both protocols.
    ///
    /// Panics if the address cannot be bound. Note that on hosts running
    /// systemd-resolved, 127.0.0.53:53 and 127.0.0.54:53 are taken by it.
    pub async fn start(addr: &str, zones: Vec<Zone>) -> Authority {
        let requested: SocketAddr = addr.parse().unwrap_or_else(|e| panic!("invalid authority address {addr:?}: {e}"));
        let (udp, tcp) = bind_pair(requested).await;
        let addr = udp.local_addr().expect("local_addr of bound UDP socket");

        let queries = Arc::new(AtomicUsize::new(0));
        let mut server = Server::new(CountingHandler::new(zones, queries.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);

        Authority { addr, server, queries }
    }

    /// Shuts the server down and waits until its listening sockets are
    /// closed: afterwards UDP queries get ICMP port-unreachable (or time out)
    /// and TCP connects are refused. The address can be reused at once.
    pub async fn stop(mut self) {
        // An error here only means a listener task had already failed; the
        // sockets are closed either way once the tasks have finished.
        let _ = self.server.shutdown_gracefully().await;
    }

    /// How many requests this server has handled so far (UDP and TCP, any
    /// outcome; messages too short or malformed to parse are not counted).
    pub fn query_count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// Binds UDP, then TCP on the port UDP got. For port 0, retries with a new
/// port if that TCP port is taken; for a fixed port, retries briefly in case
/// a previous server on it is still shutting down.
async fn bind_pair(requested: SocketAddr) -> (UdpSocket, TcpListener) {
    const ATTEMPTS: usize = 20;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        match UdpSocket::bind(requested).await {
            Ok(udp) => {
                let port = udp.local_addr().expect("local_addr of bound UDP socket").port();
                match TcpListener::bind((requested.ip(), port)).await {
                    Ok(tcp) => return (udp, tcp),
                    Err(e) => last_error = Some(format!("TCP {}:{port}: {e}", requested.ip())),
                }
            }
            Err(e) => last_error = Some(format!("UDP {requested}: {e}")),
        }
        if requested.port() != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("could not bind authority on {requested} after {ATTEMPTS} attempts: {}", last_error.unwrap_or_default());
}

/// What the handler needs to know about one zone to build referrals.
struct ZoneCuts {
    origin: LowerName,
    /// Names below the apex that own NS records (delegation points).
    cuts: Vec<LowerName>,
    records: Vec<Record>,
}

/// Counts requests, answers delegations itself, passes the rest to the Catalog.
struct CountingHandler {
    catalog: Catalog,
    zones: Vec<ZoneCuts>,
    queries: Arc<AtomicUsize>,
}

impl CountingHandler {
    fn new(zones: Vec<Zone>, queries: Arc<AtomicUsize>) -> Self {
        let mut catalog = Catalog::new();
        let mut cuts = Vec::new();
        for zone in zones {
            let mut handler: InMemoryZoneHandler =
                InMemoryZoneHandler::empty(zone.origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
            for record in &zone.records {
                assert!(
                    handler.upsert_mut(record.clone(), SERIAL),
                    "zone {}: hickory refused {record} (CNAME next to other data?)",
                    zone.origin
                );
            }
            let origin = LowerName::new(&zone.origin);
            catalog.upsert(origin.clone(), vec![Arc::new(handler)]);

            let zone_cuts: BTreeSet<LowerName> = zone
                .records
                .iter()
                .filter(|r| r.record_type() == RecordType::NS)
                .map(|r| LowerName::new(&r.name))
                .filter(|name| *name != origin)
                .collect();
            cuts.push(ZoneCuts { origin, cuts: zone_cuts.into_iter().collect(), records: zone.records });
        }
        Self { catalog, zones: cuts, queries }
    }

    /// If `request` is a query at or below a zone cut, returns the referral's
    /// (authority NS records, additional glue records).
    fn referral(&self, request: &Request) -> Option<(Vec<Record>, Vec<Record>)> {
        let meta = &request.metadata;
        if meta.message_type != MessageType::Query || meta.op_code != OpCode::Query {
            return None;
        }
        // Let the Catalog produce its BADVERS answer.
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            return None;
        }
        let info = request.request_info().ok()?;
        let qname = info.query.name();
        let qtype = info.query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return None;
        }

        // The Catalog picks the most specific zone containing the name; so do we.
        let zone = self.zones.iter().filter(|z| z.origin.zone_of(qname)).max_by_key(|z| z.origin.num_labels())?;
        // The topmost cut wins: anything under it belongs to the child.
        let cut = zone.cuts.iter().filter(|cut| cut.zone_of(qname)).min_by_key(|cut| cut.num_labels())?;
        // DS lives on the parent side of the cut: an authoritative answer.
        if qtype == RecordType::DS && cut == qname {
            return None;
        }

        let ns: Vec<Record> = zone
            .records
            .iter()
            .filter(|r| r.record_type() == RecordType::NS && LowerName::new(&r.name) == *cut)
            .cloned()
            .collect();
        let glue = zone
            .records
            .iter()
            .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
            .filter(|r| {
                ns.iter().any(|ns| match &ns.data {
                    RData::NS(NS(host)) => LowerName::new(host) == LowerName::new(&r.name),
                    _ => false,
                })
            })
            .cloned()
            .collect();
        Some((ns, glue))
    }
}

#[async_trait::async_trait]
impl RequestHandler for CountingHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        self.queries.fetch_add(1, Ordering::SeqCst);

        let Some((ns, glue)) = self.referral(request) else {
            return self.catalog.handle_request::<R, T>(request, response_handle).await;
        };

        // Mirror the Catalog's EDNS handling: answer EDNS with EDNS.
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = false; // a referral is not an authoritative answer
        metadata.response_code = ResponseCode::NoError;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            iter::empty(),
            ns.iter(),
            iter::empty(),
            glue.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}
