//! The query-type stage: questions a resolver should not send upstream.
//!
//! - ANY gets the RFC 8482 minimal answer: one synthesized HINFO record,
//!   CPU "RFC8482" and OS "" (section 4.2). ANY is a favourite of
//!   amplification attacks and has no reliable meaning at a resolver (a
//!   cache holds whatever types were asked before); clients that need a type
//!   ask for it.
//! - Meta types (RFC 6895 section 3.1: 0, OPT, and 128-254, among them TKEY,
//!   TSIG, IXFR, AXFR, MAILB, MAILA) get NOTIMP, RFC 1035 section 4.1.1's
//!   "the name server does not support the requested kind of query": they
//!   ask for no data a resolver holds (zone transfers come from a zone's
//!   primary; MAILA/MAILB are obsolete, RFC 2505/RFC 6895), and RFC 9824
//!   section 3.5 notes that resolvers return errors for meta types rather
//!   than resolving them. Upstream would only answer SERVFAIL or REFUSED,
//!   which the cache does not keep, so every repeat would go upstream again.
//!
//! The stage runs after the policy stages, so a blocked name is still
//! blocked whatever the type.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::answer::{Answer, Question};
use super::decision::Decision;
use super::identify::Client;

/// TTL of the synthesized HINFO. RFC 8482 section 6 leaves it to the
/// operator; an hour keeps repeat ANY queries in the clients' own caches.
pub const ANY_HINFO_TTL: u32 = 3_600;

const TYPE_ANY: u16 = 255;
const TYPE_OPT: u16 = 41;

/// True for the meta types answered NOTIMP.
pub fn is_meta(record_type: u16) -> bool {
    matches!(record_type, 0 | TYPE_OPT | 128..=254)
}

/// The local answer for ANY or a meta type; `None` for every other type
/// (one comparison on the common path).
pub fn answer(question: &Question, client: &Client) -> Option<Answer> {
    let code = u16::from(question.record_type);
    if code == TYPE_ANY {
        let decision = Decision::any_minimal(client);
        let mut answer = Answer::empty(ResponseCode::NoError, decision);
        let hinfo = RData::HINFO(HINFO::new("RFC8482".to_string(), String::new()));
        answer.answers.push(Record::from_rdata(Name::from(&question.name), ANY_HINFO_TTL, hinfo));
        return Some(answer);
    }
    if is_meta(code) {
        let name = match question.record_type {
            RecordType::Unknown(_) | RecordType::ZERO => format!("TYPE{code}"),
            known => known.to_string(),
        };
        let decision = Decision::meta_type(client, &name);
        return Some(Answer::empty(ResponseCode::NotImp, decision));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_types_are_the_rfc_6895_ranges() {
        for meta in [0, 41, 128, 249, 250, 251, 252, 253, 254] {
            assert!(is_meta(meta), "{meta}");
        }
        for data in [1, 5, 16, 28, 33, 43, 48, 64, 65, 255, 256, 257, 65_280] {
            assert!(!is_meta(data), "{data}");
        }
    }
}
