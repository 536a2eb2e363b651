//! The request path's packet reading: any bytes from a client become a
//! query, a header-only error answer (FORMERR, NOTIMP) or nothing (drop),
//! never a panic. A query read is answered (an empty REFUSED answer, as
//! the listener writes it) so the echo of the client's question is
//! exercised too.
#![no_main]

use hedgerow::dns::wire::{Rejection, WireAnswer, read_query, write_error};
use hickory_proto::op::{Message, ResponseCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|packet: &[u8]| {
    let mut out = Vec::new();
    match read_query(packet) {
        Ok(query) => {
            let limit = query.udp_limit();
            assert!((512..=usize::from(hedgerow::dns::wire::MAX_UDP_PAYLOAD)).contains(&limit));
            WireAnswer::empty(ResponseCode::Refused).write(&query, 0, None, None, limit, &mut out);
            // What is sent must be a DNS message that echoes the ID.
            let answer = Message::from_vec(&out).expect("the answer to a query read is a valid message");
            assert_eq!(answer.metadata.id, query.id);
        }
        Err(Rejection::Drop) => {}
        Err(Rejection::Error { id, flags, code }) => {
            write_error(id, flags, code, &mut out);
            assert_eq!(out.len(), 12);
            assert_eq!(&out[..2], &id.to_be_bytes());
        }
    }
});
