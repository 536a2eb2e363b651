//! The device table as `hedgerow devices list` and `show` print it: each
//! entry with the network its address is in and the group it gets there.

use std::net::IpAddr;

use crate::config::Network;
use crate::store::Device;
use crate::store::csv::format_record;

/// A device as it is shown: its table entry, plus the network its address
/// is in and the group it gets there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceView<'a> {
    pub name: &'a str,
    pub ip: Option<String>,
    pub mac: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub source: &'a str,
    /// The configured network the address is in (none: refused).
    pub network: Option<String>,
    /// The group its queries get: the device's own, else the network's.
    pub effective_group: Option<String>,
}

impl<'a> DeviceView<'a> {
    /// The CSV header and JSON keys, in order.
    pub const FIELDS: [&'static str; 8] =
        ["name", "ip", "mac", "owner", "group", "source", "network", "effective_group"];

    /// `device` as the configured `networks` place it (the most specific
    /// network whose range holds its address).
    pub fn of(networks: &[Network], device: &'a Device) -> DeviceView<'a> {
        let network_of = |ip: IpAddr| {
            let ip = ip.to_canonical();
            networks
                .iter()
                .flat_map(|network| network.cidrs.iter().map(move |cidr| (cidr, network)))
                .filter(|(cidr, _)| cidr.contains(&ip))
                .max_by_key(|(cidr, _)| cidr.prefix_len())
                .map(|(_, network)| network)
        };
        let network = device.ip.and_then(network_of);
        let effective_group = network.map(|network| device.group.clone().unwrap_or_else(|| network.group.clone()));
        DeviceView {
            name: &device.name,
            ip: device.ip.map(|ip| ip.to_string()),
            mac: device.mac.as_deref(),
            owner: device.owner.as_deref(),
            group: device.group.as_deref(),
            source: &device.source,
            network: network.map(|network| network.name.clone()),
            effective_group,
        }
    }

    /// The fields as text, in [`Self::FIELDS`] order (a missing one empty).
    pub fn cells(&self) -> [String; 8] {
        [
            self.name.to_string(),
            self.ip.clone().unwrap_or_default(),
            self.mac.unwrap_or_default().to_string(),
            self.owner.unwrap_or_default().to_string(),
            self.group.unwrap_or_default().to_string(),
            self.source.to_string(),
            self.network.clone().unwrap_or_default(),
            self.effective_group.clone().unwrap_or_default(),
        ]
    }
}

impl super::ListRow for DeviceView<'_> {
    /// A JSON object on one line.
    fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A CSV record (no line end).
    fn csv_line(&self) -> String {
        format_record(&self.cells())
    }

    /// A line of the readable table; an address in no network says it is refused.
    fn table_line(&self) -> String {
        let [name, ip, mac, owner, group, source, network, effective] = self.cells();
        let network = if self.ip.is_some() && network.is_empty() { "(none: refused)".to_string() } else { network };
        format!("{name:<24} {ip:<16} {mac:<18} {owner:<16} {group:<8} {source:<7} {network:<14} {effective}")
    }
}

/// The CSV header of the device rows' `csv_line`s.
pub fn csv_header() -> String {
    DeviceView::FIELDS.join(",")
}

/// The header line of the device rows' `table_line`s.
pub fn table_header() -> String {
    format!(
        "{:<24} {:<16} {:<18} {:<16} {:<8} {:<7} {:<14} {}",
        "name", "ip", "mac", "owner", "group", "source", "network", "gets group"
    )
}

/// What the table shows when there are no devices.
pub const TABLE_EMPTY: &str = "(no devices)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::present::ListRow;

    fn networks() -> Vec<Network> {
        vec![
            Network { name: "school".into(), cidrs: vec!["10.0.0.0/8".parse().unwrap()], group: "pupil".into() },
            Network { name: "staffroom".into(), cidrs: vec!["10.1.0.0/16".parse().unwrap()], group: "staff".into() },
        ]
    }

    fn device(ip: Option<&str>, group: Option<&str>) -> Device {
        Device {
            ip: ip.map(|ip| ip.parse().unwrap()),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            name: "lab-3".into(),
            owner: None,
            group: group.map(String::from),
            source: "manual".into(),
        }
    }

    #[test]
    fn the_most_specific_network_decides_unless_the_device_has_a_group() {
        let networks = networks();
        let staff = device(Some("10.1.2.3"), None);
        let view = DeviceView::of(&networks, &staff);
        assert_eq!(view.network.as_deref(), Some("staffroom"));
        assert_eq!(view.effective_group.as_deref(), Some("staff"));
        let own = device(Some("10.1.2.3"), Some("sixth-form"));
        assert_eq!(DeviceView::of(&networks, &own).effective_group.as_deref(), Some("sixth-form"));
        // An IPv4-mapped IPv6 address is the IPv4 one.
        let mapped = device(Some("::ffff:10.2.0.1"), None);
        assert_eq!(DeviceView::of(&networks, &mapped).network.as_deref(), Some("school"));
    }

    #[test]
    fn an_address_outside_every_network_shows_refused_and_no_address_shows_nothing() {
        let networks = networks();
        let outside = device(Some("192.0.2.1"), None);
        let view = DeviceView::of(&networks, &outside);
        assert_eq!((view.network.clone(), view.effective_group.clone()), (None, None));
        assert!(view.table_line().contains("(none: refused)"), "{}", view.table_line());
        let mac_only = device(None, None);
        assert!(!DeviceView::of(&networks, &mac_only).table_line().contains("refused"));
    }

    #[test]
    fn csv_and_json_agree_field_by_field() {
        let networks = networks();
        let staff = device(Some("10.1.2.3"), None);
        let view = DeviceView::of(&networks, &staff);
        let json: serde_json::Value = serde_json::from_str(&view.json_line()).unwrap();
        let cells: Vec<String> = view.csv_line().split(',').map(String::from).collect();
        assert_eq!(csv_header().split(',').count(), cells.len());
        for (name, cell) in DeviceView::FIELDS.iter().zip(&cells) {
            let text = json[*name].as_str().unwrap_or_default();
            assert_eq!(text, cell, "field {name}");
        }
    }
}
