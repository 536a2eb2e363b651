//! identify: source address -> network (VLAN subnet) -> group.
//!
//! Schools have a handful of networks, so a list ordered most-specific first
//! is both the simplest and the fastest structure: a /32 demo network inside a
//! /8 wins, as longest-prefix matching requires.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::Network;
use crate::policy::GroupPolicy;

/// Who is asking, as far as policy cares: their network and its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub network: Arc<str>,
    pub group: Arc<str>,
    /// The group's policy, resolved once here rather than looked up per query.
    pub policy: Arc<GroupPolicy>,
}

/// Maps source addresses to the configured networks.
#[derive(Debug, Clone)]
pub struct NetworkMap {
    /// Every subnet with its client identity, longest prefix first.
    subnets: Vec<(IpNet, Arc<Client>)>,
}

impl NetworkMap {
    /// `policies` holds every group a network names (config validation
    /// guarantees it).
    pub fn new(networks: &[Network], policies: &HashMap<Arc<str>, Arc<GroupPolicy>>) -> NetworkMap {
        let mut subnets = Vec::new();
        for network in networks {
            let (group, policy) = policies.get_key_value(network.group.as_str()).expect("every network's group exists");
            let client = Arc::new(Client {
                network: Arc::from(network.name.as_str()),
                group: group.clone(),
                policy: policy.clone(),
            });
            subnets.extend(network.cidrs.iter().map(|cidr| (*cidr, client.clone())));
        }
        subnets.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()));
        NetworkMap { subnets }
    }

    /// The client identity for a source address, or `None` when it is in no
    /// configured network (and so must be refused).
    pub fn identify(&self, address: IpAddr) -> Option<&Arc<Client>> {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        let address = address.to_canonical();
        self.subnets.iter().find(|(net, _)| net.contains(&address)).map(|(_, client)| client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, cidrs: &[&str], group: &str) -> Network {
        Network { name: name.into(), cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(), group: group.into() }
    }

    #[test]
    fn longest_prefix_wins_and_unknown_is_none() {
        let config = crate::config::Config::embedded_default();
        let policies = config.groups.iter().map(|(n, p)| (Arc::from(n.as_str()), Arc::new(p.clone()))).collect();
        let map = NetworkMap::new(
            &[network("all", &["10.0.0.0/8"], "guest"), network("pupils", &["10.1.0.0/16", "fd00:1::/64"], "pupil")],
            &policies,
        );
        assert_eq!(&*map.identify("10.1.2.3".parse().unwrap()).unwrap().group, "pupil");
        assert_eq!(&*map.identify("10.2.2.3".parse().unwrap()).unwrap().group, "guest");
        assert_eq!(&*map.identify("fd00:1::5".parse().unwrap()).unwrap().group, "pupil");
        assert_eq!(&*map.identify("::ffff:10.1.0.9".parse().unwrap()).unwrap().group, "pupil");
        assert!(map.identify("192.0.2.1".parse().unwrap()).is_none());
        assert!(map.identify("fd00:2::1".parse().unwrap()).is_none());
    }
}
