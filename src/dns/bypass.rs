//! bypass: the names devices use to find a way around the filter, answered
//! so that they stay on Hedgerow. Each answer is a `Decision` of kind
//! `Bypass`, so alerts can tell "tried to get round the filter" from "tried
//! to visit a blocked site". (The `vpn-proxy` and `encrypted-dns` categories
//! are in the category lists; their blocks are also of kind `Bypass`.)

use hickory_proto::op::ResponseCode;

/// How a canary name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAnswer {
    NxDomain,
    /// NOERROR with no records.
    NoData,
}

impl CanaryAnswer {
    pub fn response_code(self) -> ResponseCode {
        match self {
            CanaryAnswer::NxDomain => ResponseCode::NXDomain,
            CanaryAnswer::NoData => ResponseCode::NoError,
        }
    }
}

/// A name answered by the bypass stage, any record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    pub name: &'static str,
    pub answer: CanaryAnswer,
    pub reason: &'static str,
}

pub const CANARIES: &[Canary] = &[
    Canary {
        name: "use-application-dns.net",
        answer: CanaryAnswer::NxDomain,
        reason: "Firefox's DNS-over-HTTPS canary: NXDOMAIN keeps Firefox's own encrypted DNS off",
    },
    Canary {
        name: "mask.icloud.com",
        answer: CanaryAnswer::NxDomain,
        reason: "iCloud Private Relay: NXDOMAIN makes Apple devices fall back to this resolver",
    },
    Canary {
        name: "mask-h2.icloud.com",
        answer: CanaryAnswer::NxDomain,
        reason: "iCloud Private Relay: NXDOMAIN makes Apple devices fall back to this resolver",
    },
    Canary {
        name: "_dns.resolver.arpa",
        answer: CanaryAnswer::NoData,
        reason: "discovery of designated encrypted resolvers (DDR, RFC 9462): no answer, so clients do not upgrade away",
    },
];

/// The canary for `name` (lower case, no trailing dot), if it is one.
pub fn canary(name: &[u8]) -> Option<&'static Canary> {
    CANARIES.iter().find(|canary| canary.name.as_bytes() == name)
}
