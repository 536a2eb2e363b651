//! identify: source address -> network (VLAN subnet) -> group, and the
//! device table's group for a registered device.
//!
//! Schools have a handful of networks, so a list ordered most-specific first
//! is both the simplest and the fastest structure: a /32 demo network inside a
//! /8 wins, as longest-prefix matching requires.
//!
//! A device whose table entry names a group gets that group wherever it is on
//! the school's networks (a teacher's laptop on the pupil Wi-Fi gets staff
//! policy). The address -> group map is loaded from SQLite off the DNS path
//! and is part of the `NetworkMap`, which is part of the policy snapshot: a
//! new map means a new snapshot, swapped in whole like any other policy
//! change. A school with no device groups pays one emptiness check a query.
//! The access check is not affected: an address in no network stays refused.

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
    /// The device-table entry whose `group` chose `group`, when one did
    /// (otherwise the group is the network's).
    pub device: Option<Arc<str>>,
}

/// Maps source addresses to the configured networks, and registered devices
/// to their groups.
#[derive(Debug, Clone)]
pub struct NetworkMap {
    /// Every subnet with its client identity, longest prefix first.
    subnets: Vec<(IpNet, Arc<Client>)>,
    /// Every configured group, to resolve the device table's group names.
    policies: HashMap<Arc<str>, Arc<GroupPolicy>>,
    /// Device address -> client with the device's group (and its network).
    devices: HashMap<IpAddr, Arc<Client>>,
}

/// A device-table entry that names a group, as loaded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    pub ip: IpAddr,
    /// The device's name in the table.
    pub device: String,
    pub group: String,
}

/// What [`NetworkMap::replace_device_groups`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceGroupsReport {
    /// Devices whose group now applies.
    pub applied: usize,
    /// Entries not applied, and why (unknown group, address in no network).
    pub skipped: Vec<String>,
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
                device: None,
            });
            subnets.extend(network.cidrs.iter().map(|cidr| (*cidr, client.clone())));
        }
        subnets.sort_by(|a, b| b.0.prefix_len().cmp(&a.0.prefix_len()));
        NetworkMap { subnets, policies: policies.clone(), devices: HashMap::new() }
    }

    /// The client identity for a source address, or `None` when it is in no
    /// configured network (and so must be refused).
    pub fn identify(&self, address: IpAddr) -> Option<&Arc<Client>> {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d.
        let address = address.to_canonical();
        self.subnets.iter().find(|(net, _)| net.contains(&address)).map(|(_, client)| client)
    }

    /// The identity to use for `source`, already admitted as `client` (its
    /// network's): the device table's group when the device is registered
    /// with one. Costs one emptiness check when no device names a group.
    pub fn with_device_group(&self, source: IpAddr, client: &Arc<Client>) -> Arc<Client> {
        if self.devices.is_empty() {
            return client.clone();
        }
        self.devices.get(&source.to_canonical()).cloned().unwrap_or_else(|| client.clone())
    }

    /// This map with `devices` as its device groups. An entry naming a group
    /// that is not configured, or an address in no network, is skipped and
    /// reported (the access check refuses such an address anyway).
    pub fn with_device_groups(&self, devices: &[DeviceGroup]) -> (NetworkMap, DeviceGroupsReport) {
        let mut report = DeviceGroupsReport::default();
        let mut map = HashMap::with_capacity(devices.len());
        for entry in devices {
            let ip = entry.ip.to_canonical();
            let Some((group, policy)) = self.policies.get_key_value(entry.group.as_str()) else {
                report.skipped.push(format!(
                    "device {:?} ({ip}): group {:?} is not configured (configured groups: {})",
                    entry.device,
                    entry.group,
                    self.group_names().join(", ")
                ));
                continue;
            };
            let Some(network) = self.identify(ip) else {
                report.skipped.push(format!(
                    "device {:?}: {ip} is in no configured network, so it is refused whatever its group",
                    entry.device
                ));
                continue;
            };
            let client = Client {
                network: network.network.clone(),
                group: group.clone(),
                policy: policy.clone(),
                device: Some(Arc::from(entry.device.as_str())),
            };
            map.insert(ip, Arc::new(client));
        }
        report.applied = map.len();
        (NetworkMap { subnets: self.subnets.clone(), policies: self.policies.clone(), devices: map }, report)
    }

    /// How many devices have a group of their own now.
    pub fn device_groups(&self) -> usize {
        self.devices.len()
    }

    /// The configured group names, sorted.
    pub fn group_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.policies.keys().map(|name| &**name).collect();
        names.sort_unstable();
        names
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

    #[test]
    fn a_device_group_applies_on_any_network_but_never_admits_an_outsider() {
        let config = crate::config::Config::embedded_default();
        let policies = config.groups.iter().map(|(n, p)| (Arc::from(n.as_str()), Arc::new(p.clone()))).collect();
        let map = NetworkMap::new(&[network("pupil-wifi", &["10.1.0.0/16"], "pupil")], &policies);
        let laptop: IpAddr = "10.1.0.7".parse().unwrap();
        let pupil = map.identify(laptop).unwrap().clone();
        assert!(Arc::ptr_eq(&map.with_device_group(laptop, &pupil), &pupil), "no devices: the network's client");

        let entry = |ip: &str, device: &str, group: &str| DeviceGroup {
            ip: ip.parse().unwrap(),
            device: device.into(),
            group: group.into(),
        };
        let (map, report) = map.with_device_groups(&[
            entry("10.1.0.7", "T-laptop", "staff"),
            entry("10.1.0.8", "Odd", "teachers"),
            entry("192.0.2.1", "Away", "staff"),
        ]);
        assert_eq!(report.applied, 1);
        assert!(report.skipped[0].contains("\"teachers\" is not configured") && report.skipped[0].contains("staff"));
        assert!(report.skipped[1].contains("in no configured network"));
        let client = map.with_device_group(laptop, &pupil);
        assert_eq!(
            (&*client.network, &*client.group, client.device.as_deref()),
            ("pupil-wifi", "staff", Some("T-laptop"))
        );
        let other: IpAddr = "10.1.0.9".parse().unwrap();
        assert_eq!(&*map.with_device_group(other, &pupil).group, "pupil");
        assert!(map.identify("192.0.2.1".parse().unwrap()).is_none(), "the device table admits no one");

        let (map, _) = map.with_device_groups(&[]);
        assert_eq!(&*map.with_device_group(laptop, &pupil).group, "pupil");
    }
}
