//! DNS wire format for Hedgerow's own listeners: reading a query, and
//! writing every answer from a [`WireAnswer`] (records encoded once, TTLs
//! patched at send time).
//!
//! Why not hickory-server's listener: it decodes into owned types, spawns a
//! task per UDP query and re-encodes every answer; on the loopback bed that
//! capped cached answers well below Unbound. Here a cache hit is a header, the
//! client's own question bytes, the pre-encoded records and an OPT record.
//! Compression pointers in the stored records point at the question (offset
//! 12), which is valid for every client because the question name has the
//! same length whatever its letter case.

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use super::answer::{ExtendedError, UpstreamAnswer};

const HEADER_LEN: usize = 12;
const OPT_LEN: usize = 11;
const TYPE_OPT: u16 = 41;
/// The UDP payload size Hedgerow offers (the DNS Flag Day 2020 value, which
/// avoids IP fragmentation on every common path).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// RFC 8914 Extended DNS Error option code.
const OPTION_EDE: u16 = 15;

/// The client's EDNS(0) OPT record, as far as answering needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsRequest {
    pub udp_size: u16,
    pub dnssec_ok: bool,
    pub version: u8,
}

/// A standard query with one question, read from the wire.
#[derive(Debug, Clone)]
pub struct WireQuery {
    pub id: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// The question exactly as the client sent it (name, type, class), echoed
    /// back so the client's letter case (0x20 randomisation) survives.
    pub question: Vec<u8>,
    pub name: LowerName,
    pub record_type: RecordType,
    pub class: u16,
    pub edns: Option<EdnsRequest>,
    /// One of the server's own queries (readiness probe, self-test): set by
    /// the listener from [`super::Pipeline::internal`] when the query is
    /// read; its answer reaches no observer.
    pub internal: bool,
}

impl WireQuery {
    /// Largest response this client accepts over UDP (RFC 1035: 512 without EDNS).
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(edns) => usize::from(edns.udp_size.clamp(512, MAX_UDP_PAYLOAD)),
            None => 512,
        }
    }
}

/// Why a packet cannot be answered as a normal query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Shorter than a header, or a response: no answer is sent.
    Drop,
    /// Answer with this code (header only, echoing the ID).
    Error { id: u16, flags: u16, code: ResponseCode },
}

/// Reads a query. Plain queries (one question, at most an OPT record) are
/// read directly; anything else goes through hickory's full decoder, which
/// either yields an answerable query or the error code to send.
pub fn read_query(packet: &[u8]) -> Result<WireQuery, Rejection> {
    if packet.len() < HEADER_LEN {
        return Err(Rejection::Drop);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(Rejection::Drop); // a response: never answer (reflection)
    }
    read_plain_query(packet, id, flags).ok_or(()).or_else(|()| read_unusual_query(packet, id, flags))
}

fn read_plain_query(packet: &[u8], id: u16, flags: u16) -> Option<WireQuery> {
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let opcode = (flags >> 11) & 0xF;
    if opcode != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    // The question name: uncompressed labels up to the root label.
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None; // a compression pointer or reserved label type
        }
        at += 1 + len;
        if at - HEADER_LEN > 255 {
            return None;
        }
    }
    let name_end = at;
    let fixed = packet.get(at..at + 4)?;
    let record_type = RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]]));
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    let question = packet[HEADER_LEN..at].to_vec();

    let edns = if count(10) == 1 {
        // Only an OPT record at the root is read here.
        let opt = packet.get(at..at + OPT_LEN)?;
        if opt[0] != 0 || u16::from_be_bytes([opt[1], opt[2]]) != TYPE_OPT {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([opt[9], opt[10]]));
        if packet.len() != at + OPT_LEN + rdlen {
            return None;
        }
        Some(EdnsRequest {
            udp_size: u16::from_be_bytes([opt[3], opt[4]]),
            version: opt[6],
            dnssec_ok: opt[7] & 0x80 != 0,
        })
    } else if packet.len() != at {
        return None;
    } else {
        None
    };

    let mut decoder = BinDecoder::new(&packet[HEADER_LEN..name_end]);
    let name = Name::read(&mut decoder).ok()?;
    Some(WireQuery {
        id,
        recursion_desired: flags & 0x0100 != 0,
        checking_disabled: flags & 0x0010 != 0,
        question,
        name: LowerName::from(name),
        record_type,
        class,
        edns,
        internal: false,
    })
}

/// The general path: hickory's decoder, for queries with other records
/// (TSIG, several additionals), odd opcodes or malformed content.
fn read_unusual_query(packet: &[u8], id: u16, flags: u16) -> Result<WireQuery, Rejection> {
    let error = |code| Rejection::Error { id, flags, code };
    let message = Message::from_vec(packet).map_err(|_| error(ResponseCode::FormErr))?;
    if message.metadata.message_type != MessageType::Query {
        return Err(Rejection::Drop);
    }
    if message.metadata.op_code != OpCode::Query {
        return Err(error(ResponseCode::NotImp));
    }
    let [query] = &message.queries[..] else {
        return Err(error(ResponseCode::FormErr));
    };
    let mut question = Vec::new();
    let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut question);
    hickory_proto::serialize::binary::BinEncodable::emit(query, &mut encoder)
        .map_err(|_| error(ResponseCode::FormErr))?;
    Ok(WireQuery {
        id,
        recursion_desired: message.metadata.recursion_desired,
        checking_disabled: message.metadata.checking_disabled,
        question,
        name: LowerName::from(query.name().clone()),
        record_type: query.query_type(),
        class: u16::from(query.query_class()),
        edns: message.edns.as_ref().map(|edns| EdnsRequest {
            udp_size: edns.max_payload(),
            dnssec_ok: edns.flags().dnssec_ok,
            version: edns.version(),
        }),
        internal: false,
    })
}

/// An answer's records encoded once, with the offset of every TTL so the
/// countdown can be written at send time.
#[derive(Debug, Clone)]
pub struct WireAnswer {
    response_code: ResponseCode,
    answer_count: u16,
    authority_count: u16,
    /// The answer and authority sections, encoded after a question at offset 12.
    records: Vec<u8>,
    /// (offset in `records`, TTL as stored).
    ttls: Vec<(u32, u32)>,
}

impl WireAnswer {
    /// Encodes an answer for questions named `name` (any letter case; only
    /// the length matters for compression offsets).
    pub fn encode(name: &LowerName, record_type: RecordType, answer: &UpstreamAnswer) -> Option<WireAnswer> {
        Self::encode_parts(name, record_type, answer.response_code, &answer.answers, &answer.authorities)
    }

    /// [`WireAnswer::encode`] from borrowed parts.
    pub fn encode_parts(
        name: &LowerName,
        record_type: RecordType,
        response_code: ResponseCode,
        answers: &[Record],
        authorities: &[Record],
    ) -> Option<WireAnswer> {
        if answers.is_empty() && authorities.is_empty() {
            return Some(WireAnswer::empty(response_code));
        }
        let mut message = Message::response(0, OpCode::Query);
        message.add_query(Query::query(Name::from(name), record_type));
        message.answers = answers.to_vec();
        message.authorities = authorities.to_vec();
        let bytes = message.to_vec().ok()?;
        let question_end = HEADER_LEN + name_wire_len(&bytes[HEADER_LEN..])? + 4;
        let answer_count = u16::try_from(answers.len()).ok()?;
        let authority_count = u16::try_from(authorities.len()).ok()?;
        let records = bytes[question_end..].to_vec();
        let mut ttls = Vec::with_capacity(usize::from(answer_count + authority_count));
        let mut at = 0;
        for _ in 0..(answer_count + authority_count) {
            at += name_wire_len(&records[at..])?;
            let ttl_at = at + 4;
            let fixed = records.get(at..at + 10)?;
            let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            ttls.push((u32::try_from(ttl_at).ok()?, ttl));
            at += 10 + rdlen;
        }
        Some(WireAnswer { response_code, answer_count, authority_count, records, ttls })
    }

    /// Bytes held by the encoded records (for the cache's memory bound).
    pub fn records_capacity(&self) -> usize {
        self.records.capacity()
    }

    /// TTL offsets held (for the cache's memory bound).
    pub fn ttls_capacity(&self) -> usize {
        self.ttls.capacity()
    }

    /// An answer with no records (REFUSED, SERVFAIL, NODATA, ...).
    pub fn empty(response_code: ResponseCode) -> WireAnswer {
        WireAnswer { response_code, answer_count: 0, authority_count: 0, records: Vec::new(), ttls: Vec::new() }
    }

    /// Writes the response to `query` into `out`. TTLs are reduced by
    /// `age` seconds, or replaced by `fixed_ttl`. When the records do not
    /// fit in `limit` bytes, the response is header, question and OPT with
    /// TC set (RFC 6891 section 7), so the client retries over TCP.
    pub fn write(
        &self,
        query: &WireQuery,
        age: u32,
        fixed_ttl: Option<u32>,
        extended_error: Option<&ExtendedError>,
        limit: usize,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let opt_len = match (&query.edns, extended_error) {
            (None, _) => 0,
            (Some(_), None) => OPT_LEN,
            (Some(_), Some(error)) => OPT_LEN + 6 + error.text.len(),
        };
        let full = HEADER_LEN + query.question.len() + self.records.len() + opt_len;
        let truncated = full > limit;
        let (answers, authorities) = if truncated { (0, 0) } else { (self.answer_count, self.authority_count) };
        write_header(out, query, self.response_code, truncated, answers, authorities, query.edns.is_some());
        out.extend_from_slice(&query.question);
        if !truncated {
            let start = out.len();
            out.extend_from_slice(&self.records);
            for &(offset, ttl) in &self.ttls {
                let ttl = fixed_ttl.unwrap_or(ttl.saturating_sub(age));
                let at = start + offset as usize;
                out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
        if let Some(edns) = &query.edns {
            write_opt(out, edns.dnssec_ok, self.response_code, extended_error);
        }
    }
}

fn write_header(
    out: &mut Vec<u8>,
    query: &WireQuery,
    code: ResponseCode,
    truncated: bool,
    answers: u16,
    authorities: u16,
    opt: bool,
) {
    let code = u16::from(code);
    let mut flags: u16 = 0x8000 | 0x0080; // QR, RA
    if truncated {
        flags |= 0x0200;
    }
    if query.recursion_desired {
        flags |= 0x0100;
    }
    if query.checking_disabled {
        flags |= 0x0010;
    }
    flags |= code & 0x000F;
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&authorities.to_be_bytes());
    out.extend_from_slice(&u16::from(opt).to_be_bytes());
}

fn write_opt(out: &mut Vec<u8>, dnssec_ok: bool, code: ResponseCode, extended_error: Option<&ExtendedError>) {
    out.push(0); // root owner
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    out.push(((u16::from(code) >> 4) & 0xFF) as u8); // extended RCODE
    out.push(0); // version
    out.push(if dnssec_ok { 0x80 } else { 0 });
    out.push(0);
    match extended_error {
        None => out.extend_from_slice(&0u16.to_be_bytes()),
        Some(error) => {
            let option_len = 2 + error.text.len();
            out.extend_from_slice(&((4 + option_len) as u16).to_be_bytes());
            out.extend_from_slice(&OPTION_EDE.to_be_bytes());
            out.extend_from_slice(&(option_len as u16).to_be_bytes());
            out.extend_from_slice(&error.info_code.to_be_bytes());
            out.extend_from_slice(error.text.as_bytes());
        }
    }
}

/// A header-only error response (FORMERR, NOTIMP) for a request whose
/// question could not be read.
pub fn write_error(id: u16, request_flags: u16, code: ResponseCode, out: &mut Vec<u8>) {
    out.clear();
    let flags = 0x8000 | 0x0080 | (request_flags & 0x7900) | (u16::from(code) & 0x000F);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// Length of the (possibly compressed) name at the start of `bytes`.
fn name_wire_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l <= 63 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Edns;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::A;

    fn query_bytes(name: &str, edns: bool) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(4096);
            opt.set_dnssec_ok(true);
            message.set_edns(opt);
        }
        message.to_vec().unwrap()
    }

    #[test]
    fn cached_answer_round_trips_with_ttl_countdown_and_client_case() {
        let query = read_query(&query_bytes("WwW.Example.COM.", true)).unwrap();
        assert_eq!(query.name.to_string(), "www.example.com.");
        assert_eq!(query.edns, Some(EdnsRequest { udp_size: 4096, dnssec_ok: true, version: 0 }));
        let owner = Name::from_ascii("www.example.com.").unwrap();
        let answer = UpstreamAnswer {
            response_code: ResponseCode::NoError,
            answers: vec![
                Record::from_rdata(owner.clone(), 300, RData::A(A::new(192, 0, 2, 1))),
                Record::from_rdata(owner, 300, RData::A(A::new(192, 0, 2, 2))),
            ],
            authorities: vec![],
        };
        let wire = WireAnswer::encode(&query.name, RecordType::A, &answer).unwrap();
        let mut out = Vec::new();
        wire.write(&query, 100, None, None, query.udp_limit(), &mut out);
        let response = Message::from_vec(&out).unwrap();
        assert_eq!(response.metadata.id, 0x1234);
        assert!(response.metadata.recursion_available && response.metadata.recursion_desired);
        assert_eq!(response.queries[0].name().to_ascii(), "WwW.Example.COM.");
        assert_eq!(response.answers.len(), 2);
        assert!(response.answers.iter().all(|r| r.ttl == 200));
        assert_eq!(response.answers[1].name.to_ascii().to_lowercase(), "www.example.com.");
        assert!(response.edns.as_ref().unwrap().flags().dnssec_ok);
    }

    #[test]
    fn oversized_answer_is_truncated_with_opt_kept() {
        let query = read_query(&query_bytes("big.example.", true)).unwrap();
        let owner = Name::from_ascii("big.example.").unwrap();
        let answers = (0..200)
            .map(|i| Record::from_rdata(owner.clone(), 60, RData::A(A::new(10, 0, (i / 256) as u8, i as u8))))
            .collect();
        let answer = UpstreamAnswer { response_code: ResponseCode::NoError, answers, authorities: vec![] };
        let wire = WireAnswer::encode(&query.name, RecordType::A, &answer).unwrap();
        let mut out = Vec::new();
        wire.write(&query, 0, None, None, query.udp_limit(), &mut out);
        assert!(out.len() <= 1232);
        let response = Message::from_vec(&out).unwrap();
        assert!(response.metadata.truncation);
        assert!(response.answers.is_empty() && response.edns.is_some());
        wire.write(&query, 0, None, None, 65_535, &mut out);
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 200);
    }

    #[test]
    fn extended_error_is_readable() {
        let query = read_query(&query_bytes("blocked.example.", true)).unwrap();
        let error = ExtendedError { info_code: 15, text: "category: gambling".into() };
        let mut out = Vec::new();
        WireAnswer::empty(ResponseCode::NXDomain).write(&query, 0, None, Some(&error), 1232, &mut out);
        let response = Message::from_vec(&out).unwrap();
        assert_eq!(response.metadata.response_code, ResponseCode::NXDomain);
        let options = response.edns.unwrap();
        let Some(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(15, data)) =
            options.option(hickory_proto::rr::rdata::opt::EdnsCode::from(15))
        else {
            panic!("no EDE option");
        };
        assert_eq!(&data[..2], &15u16.to_be_bytes());
        assert_eq!(&data[2..], b"category: gambling");
    }

    #[test]
    fn bad_packets_are_dropped_or_formerr() {
        assert_eq!(read_query(b"\x01\x02").unwrap_err(), Rejection::Drop);
        let mut bytes = query_bytes("www.example.", false);
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(read_query(&bytes), Err(Rejection::Error { code: ResponseCode::FormErr, .. })));
        let mut response = query_bytes("www.example.", false);
        response[2] |= 0x80;
        assert_eq!(read_query(&response).unwrap_err(), Rejection::Drop);
    }
}
