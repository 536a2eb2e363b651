//! access: is this source allowed to ask at all? Hedgerow is never an open
//! resolver: a source outside every configured network is REFUSED, and so is
//! a client over its own rate limit. The limit is per client, not per /24 or
//! per network, so one noisy device cannot starve a whole pupil VLAN. A
//! client is an IPv4 address, or an IPv6 prefix (`rate_limit.ipv6_prefix`,
//! default /64): a device may use any address in its prefix (RFC 8981 privacy
//! addresses rotate), so counting full IPv6 addresses would be no limit.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::decision::Decision;
use super::identify::{Client, NetworkMap};
use crate::config::RateLimit;

/// Who counts as one client for limits: the IPv4 address itself, or the
/// IPv6 address cut to its first `ipv6_prefix` bits. A dual-stack socket's
/// `::ffff:a.b.c.d` counts as the IPv4 address. Costs a few instructions.
pub fn client_key(address: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A token bucket per client (see [`client_key`]).
pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    exempt_loopback: bool,
    ipv6_prefix: u8,
}

impl ClientRateLimiter {
    /// Builds the limiter, or `None` when the config turns it off.
    pub fn new(settings: &RateLimit) -> Option<ClientRateLimiter> {
        let per_second = NonZeroU32::new(settings.queries_per_second?)?;
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(ClientRateLimiter {
            limiter: RateLimiter::keyed(quota),
            exempt_loopback: settings.exempt_loopback,
            ipv6_prefix: settings.ipv6_prefix,
        })
    }

    /// True when this client may ask one more question now.
    pub fn admit(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        (self.exempt_loopback && address.is_loopback())
            || self.limiter.check_key(&client_key(address, self.ipv6_prefix)).is_ok()
    }

    /// Forgets clients whose buckets are full again, so memory stays bounded
    /// by the number of recently active devices. Called periodically.
    pub fn forget_idle_clients(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The access stage: the client identity, or a final REFUSED decision.
pub fn admit<'a>(
    networks: &'a NetworkMap,
    limiter: Option<&ClientRateLimiter>,
    source: IpAddr,
) -> Result<&'a Arc<Client>, Decision> {
    let Some(client) = networks.identify(source) else {
        return Err(Decision::outsider());
    };
    if let Some(limiter) = limiter
        && !limiter.admit(source)
    {
        return Err(Decision::rate_limited(client));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_per_client_and_loopback_can_be_exempt() {
        let settings = RateLimit { queries_per_second: Some(1), burst: 3, exempt_loopback: true, ipv6_prefix: 64 };
        let limiter = ClientRateLimiter::new(&settings).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| limiter.admit(a)));
        assert!(!limiter.admit(a), "fourth query inside a second is over the burst");
        assert!(limiter.admit(b), "a neighbour on the same /24 is unaffected");
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..100).all(|_| limiter.admit(loopback)));
        assert!(
            ClientRateLimiter::new(&RateLimit {
                queries_per_second: None,
                burst: 0,
                exempt_loopback: true,
                ipv6_prefix: 64
            })
            .is_none()
        );
    }

    #[test]
    fn ipv6_addresses_in_one_prefix_share_a_bucket() {
        let settings = RateLimit { queries_per_second: Some(1), burst: 3, exempt_loopback: false, ipv6_prefix: 64 };
        let limiter = ClientRateLimiter::new(&settings).unwrap();
        // A device rotating privacy addresses within its /64.
        let rotating: Vec<IpAddr> = ["2001:db8:1:2::1", "2001:db8:1:2:a:b:c:d", "2001:db8:1:2:ffff::9"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert!(rotating.iter().all(|address| limiter.admit(*address)));
        assert!(
            !limiter.admit("2001:db8:1:2::77".parse().unwrap()),
            "a fourth address in the same /64 is over the burst"
        );
        assert!(limiter.admit("2001:db8:1:3::1".parse().unwrap()), "the next /64 is another client");

        // With prefix 128 every address is its own client, as before.
        let per_address = ClientRateLimiter::new(&RateLimit { ipv6_prefix: 128, ..settings }).unwrap();
        assert!((0..10).all(|i| per_address.admit(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i)))));

        assert_eq!(client_key("2001:db8:1:2:3:4:5:6".parse().unwrap(), 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
        assert_eq!(client_key("::ffff:10.0.0.7".parse().unwrap(), 64), "10.0.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_key("10.0.0.7".parse().unwrap(), 1), "10.0.0.7".parse::<IpAddr>().unwrap());
    }
}
