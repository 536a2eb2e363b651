mod support;
use std::sync::Arc;
use hickory_server::{Server, proto::rr::{LowerName, Name, RData, Record, rdata::{A, NS, SOA}, RecordType}, store::in_memory::InMemoryZoneHandler, zone_handler::{AxfrPolicy, Catalog, ZoneType}};
use tokio::net::UdpSocket;
#[tokio::test]
async fn raw_catalog() {
    let o = Name::from_ascii("test.").unwrap();
    let mut h: InMemoryZoneHandler = InMemoryZoneHandler::empty(o.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let n = |s: &str| Name::from_ascii(s).unwrap();
    h.upsert_mut(Record::from_rdata(o.clone(), 60, RData::SOA(SOA::new(n("ns.test."), n("h.test."), 1, 1, 1, 1, 60))), 1);
    h.upsert_mut(Record::from_rdata(o.clone(), 60, RData::NS(NS(n("ns.test.")))), 1);
    h.upsert_mut(Record::from_rdata(n("example.test."), 60, RData::NS(NS(n("ns.example.test.")))), 1);
    h.upsert_mut(Record::from_rdata(n("ns.example.test."), 60, RData::A(A([127,0,0,55].into()))), 1);
    let mut c = Catalog::new();
    c.upsert(LowerName::new(&o), vec![Arc::new(h)]);
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let mut s = Server::new(c);
    s.register_socket(udp);
    for (q, t) in [("www.example.test", RecordType::A), ("example.test", RecordType::NS)] {
        let r = support::client::query_udp(addr, q, t).await;
        println!("{q} {t}: aa={} ans={:?} auth={:?} add={:?}", r.metadata.authoritative, r.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>(), r.authorities.iter().map(|r| r.to_string()).collect::<Vec<_>>(), r.additionals.iter().map(|r| r.to_string()).collect::<Vec<_>>());
    }
}
