//! access: is this source allowed to ask at all? Hedgerow is never an open
//! resolver: a source outside every configured network is REFUSED, and so is
//! a client over its own rate limit. The limit is per client address, not per
//! /24 or per network, so one noisy device cannot starve a whole pupil VLAN.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::decision::{Decision, DecisionKind, Stage};
use super::identify::{Client, NetworkMap};
use crate::config::RateLimit;

/// A token bucket per client address.
pub struct ClientRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    exempt_loopback: bool,
}

impl ClientRateLimiter {
    /// Builds the limiter, or `None` when the config turns it off.
    pub fn new(settings: &RateLimit) -> Option<ClientRateLimiter> {
        let per_second = NonZeroU32::new(settings.queries_per_second?)?;
        let burst = NonZeroU32::new(settings.burst).unwrap_or(per_second);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(ClientRateLimiter { limiter: RateLimiter::keyed(quota), exempt_loopback: settings.exempt_loopback })
    }

    /// True when this client may ask one more question now.
    pub fn admit(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        (self.exempt_loopback && address.is_loopback()) || self.limiter.check_key(&address).is_ok()
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
        return Err(Decision::new(DecisionKind::Refused, Stage::Access, "source address is in no configured network"));
    };
    if let Some(limiter) = limiter
        && !limiter.admit(source)
    {
        let decision = Decision::new(DecisionKind::Refused, Stage::Access, "client is over its rate limit");
        return Err(decision.for_client(&client.network, &client.group));
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_per_client_and_loopback_can_be_exempt() {
        let settings = RateLimit { queries_per_second: Some(1), burst: 3, exempt_loopback: true };
        let limiter = ClientRateLimiter::new(&settings).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| limiter.admit(a)));
        assert!(!limiter.admit(a), "fourth query inside a second is over the burst");
        assert!(limiter.admit(b), "a neighbour on the same /24 is unaffected");
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..100).all(|_| limiter.admit(loopback)));
        assert!(
            ClientRateLimiter::new(&RateLimit { queries_per_second: None, burst: 0, exempt_loopback: true }).is_none()
        );
    }
}
