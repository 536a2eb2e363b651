//! The school's devices and its rhythm: pupils, staff and guests on their
//! own networks, busy on weekdays 08:00-16:00 (UTC), quiet at night and at
//! weekends.

use std::net::Ipv4Addr;

use super::random::{Rng, Zipf, mix};

/// The three groups, in the order of [`super::names::CategorySpec::share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Pupil = 0,
    Staff = 1,
    Guest = 2,
}

impl Group {
    pub fn name(self) -> &'static str {
        ["pupil", "staff", "guest"][self as usize]
    }

    /// The network the group's devices are on (one subnet each).
    pub fn network(self) -> &'static str {
        ["pupils", "staff", "guests"][self as usize]
    }

    /// The group's subnet: 10.10.0.0/16, 10.20.0.0/16, 10.30.0.0/16.
    pub fn subnet(self) -> Ipv4Addr {
        Ipv4Addr::new(10, [10, 20, 30][self as usize], 0, 0)
    }
}

#[derive(Debug, Clone)]
pub struct Device {
    pub ip: Ipv4Addr,
    pub group: Group,
    /// Device name and owner in the device table ('' for guests).
    pub name: String,
    pub owner: String,
    pub mac: String,
    /// How busy the device is compared with others of its group.
    pub weight: f64,
    /// Name ids this device asks for again and again (its apps and sites).
    pub favourites: Vec<u32>,
    /// An incident device: index into [`super::names::CATEGORIES`] it keeps trying.
    pub incident: Option<usize>,
}

const FIRST: &[&str] = &[
    "Amelia", "Oliver", "Isla", "George", "Ava", "Noah", "Mia", "Arthur", "Ivy", "Leo", "Freya", "Oscar", "Lily",
    "Harry", "Florence", "Muhammad", "Willow", "Jack", "Rosie", "Charlie", "Sophia", "Theo", "Grace", "Finley", "Evie",
    "Alfie", "Poppy", "Jacob", "Ella", "Henry", "Aisha", "Thomas", "Zara", "Reuben", "Hannah", "Kai",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel", "Robinson", "Wright",
    "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Thomas", "Clarke", "Jackson", "Wood",
    "Harris", "Edwards", "Turner", "Martin", "Cooper", "Hill", "Ward", "Hughes", "Khan", "Moore", "Begum", "Ali",
];
const PUPIL_KINDS: &[&str] = &["ipad", "chromebook", "laptop", "phone"];

/// Categories incident devices keep trying (indexes into CATEGORIES by id).
pub const INCIDENT_CATEGORIES: &[&str] = &["pornography", "gambling", "vpn-proxy", "violence", "drugs", "games"];

/// `count` devices: 76% pupils, 14% staff, 10% guests; a handful of pupils
/// (one per 400 devices, at least 3) are incident devices.
pub fn devices(count: usize, seed: u64, benign: impl Fn(&mut Rng) -> u32) -> Vec<Device> {
    let staff = (count * 14 / 100).max(1);
    let guests = (count / 10).max(1);
    let pupils = count.saturating_sub(staff + guests).max(1);
    let mut devices = Vec::with_capacity(count);
    let mut incidents = (count / 400).max(3);
    for (group, n) in [(Group::Pupil, pupils), (Group::Staff, staff), (Group::Guest, guests)] {
        for i in 0..n {
            let mut rng = Rng::new(seed, mix(0x6465_7600 + group as u64) ^ i as u64);
            let base = u32::from(group.subnet());
            // 250 hosts a /24 from .1, from 10.x.1.0/24 on.
            let ip = Ipv4Addr::from(base + (1 + i as u32 / 250) * 256 + 1 + i as u32 % 250);
            let first = FIRST[rng.below(FIRST.len() as u64) as usize];
            let last = LAST[rng.below(LAST.len() as u64) as usize];
            let (name, owner) = match group {
                Group::Pupil => (
                    format!("{}-y{}-{:04}", PUPIL_KINDS[rng.below(4) as usize], 7 + rng.below(7), i + 1),
                    format!("{first} {last}"),
                ),
                Group::Staff => (format!("staff-laptop-{:03}", i + 1), format!("{first} {last}")),
                Group::Guest => (String::new(), String::new()),
            };
            let mac = format!(
                "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                group as u8,
                rng.below(256),
                rng.below(256),
                (i >> 8) & 0xff,
                i & 0xff
            );
            // Log-normal-ish activity: a few devices are very busy.
            let weight = (rng.exponential(1.0) + 0.2).powf(1.5);
            let favourites = (0..20 + rng.below(40)).map(|_| benign(&mut rng)).collect();
            let incident = (group == Group::Pupil && i % 97 == 41 && incidents > 0).then(|| {
                incidents -= 1;
                (i / 97) % INCIDENT_CATEGORIES.len()
            });
            devices.push(Device { ip, group, name, owner, mac, weight, favourites, incident });
        }
    }
    devices
}

/// Monday = 0 .. Sunday = 6 of a UTC day number (1970-01-01 was a Thursday).
pub fn weekday(day: i64) -> i64 {
    (day + 3).rem_euclid(7)
}

pub fn is_school_day(day: i64) -> bool {
    weekday(day) < 5
}

/// Relative traffic of an hour of the day (UTC) on a school day.
const SCHOOL_DAY: [f64; 24] = [
    0.3, 0.3, 0.3, 0.3, 0.3, 0.4, 0.8, 3.0, 9.0, 10.0, 10.0, 10.0, 9.0, 10.0, 10.0, 8.0, 4.0, 2.0, 1.2, 0.8, 0.6, 0.5,
    0.4, 0.3,
];
/// ... and at a weekend (a few staff, devices left on).
const WEEKEND: [f64; 24] = [
    0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.2, 0.3, 0.35, 0.35, 0.35, 0.35, 0.35, 0.3, 0.25, 0.2, 0.2, 0.15, 0.15,
    0.1, 0.1, 0.1,
];

/// Rows in hour `hour_of_day` of `day`, for a school day of `per_school_day` rows.
pub fn rows_in_hour(day: i64, hour_of_day: usize, per_school_day: u64) -> u64 {
    let total: f64 = SCHOOL_DAY.iter().sum();
    let shape = if is_school_day(day) { SCHOOL_DAY } else { WEEKEND };
    (per_school_day as f64 * shape[hour_of_day] / total).round() as u64
}

/// Rows of a whole day.
pub fn rows_in_day(day: i64, per_school_day: u64) -> u64 {
    (0..24).map(|h| rows_in_hour(day, h, per_school_day)).sum()
}

/// How much of an hour's traffic a group makes, relative to its devices' weights.
pub fn group_factor(group: Group, day: i64, hour_of_day: usize) -> f64 {
    let school = is_school_day(day);
    let lessons = (8..16).contains(&hour_of_day);
    match group {
        Group::Pupil if school && lessons => 1.0,
        Group::Pupil => 0.03,
        Group::Staff if school && (7..18).contains(&hour_of_day) => 1.2,
        Group::Staff => 0.15,
        Group::Guest if school && (9..16).contains(&hour_of_day) => 1.0,
        Group::Guest => 0.01,
    }
}

/// True when a device is on site that day: most pupils and staff every
/// school day, each guest on about one school day in six.
pub fn present(seed: u64, device: usize, group: Group, day: i64) -> bool {
    let mut rng = Rng::new(seed, mix(day as u64) ^ (device as u64).wrapping_mul(0x1000_0001));
    match group {
        Group::Pupil => rng.chance(0.93),
        Group::Staff => rng.chance(0.9),
        Group::Guest => rng.chance(0.16),
    }
}

/// The hours of `day` (0..24) in which an incident device makes its
/// attempts: on about a third of school days, one to three lesson hours.
pub fn incident_hours(seed: u64, device: usize, day: i64) -> Vec<usize> {
    let mut rng = Rng::new(seed, mix(0x696e_6300 ^ day as u64) ^ device as u64);
    if !is_school_day(day) || !rng.chance(0.35) {
        return Vec::new();
    }
    (0..1 + rng.below(3)).map(|_| 8 + rng.below(8) as usize).collect()
}

/// Device weights are skewed; this is the skew of names in a device's favourites.
pub fn favourite_zipf(len: usize) -> Zipf {
    Zipf::new(len, 0.8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn school_days_peak_in_lessons_and_weekends_are_quiet() {
        // 2026-11-30 is a Monday.
        let monday = crate::time::parse_day("2026-11-30").unwrap();
        assert_eq!(weekday(monday), 0);
        assert!(is_school_day(monday) && !is_school_day(monday + 5) && !is_school_day(monday + 6));
        let nine = rows_in_hour(monday, 9, 5_000_000);
        let three = rows_in_hour(monday, 3, 5_000_000);
        let evening = rows_in_hour(monday, 20, 5_000_000);
        assert!(nine > 20 * three && nine > 10 * evening, "{nine} {three} {evening}");
        let day = rows_in_day(monday, 5_000_000);
        assert!((4_990_000..=5_010_000).contains(&day), "{day}");
        assert!(rows_in_day(monday + 5, 5_000_000) < day / 10);
        assert!(group_factor(Group::Pupil, monday, 10) > 10.0 * group_factor(Group::Pupil, monday, 20));
        assert!(group_factor(Group::Staff, monday + 6, 10) < group_factor(Group::Staff, monday, 10));
    }

    #[test]
    fn devices_fill_three_networks_with_named_pupils_and_staff() {
        let devices = devices(2_500, 9, |rng| rng.below(1000) as u32 + 1);
        assert_eq!(devices.len(), 2_500);
        let count = |g| devices.iter().filter(|d| d.group == g).count();
        assert_eq!((count(Group::Pupil), count(Group::Staff), count(Group::Guest)), (1_900, 350, 250));
        let ips: std::collections::HashSet<_> = devices.iter().map(|d| d.ip).collect();
        assert_eq!(ips.len(), 2_500, "addresses are distinct");
        for device in &devices {
            assert_eq!(device.ip.octets()[1], [10, 20, 30][device.group as usize]);
            assert_eq!(device.name.is_empty(), device.group == Group::Guest);
            assert_eq!(device.owner.is_empty(), device.group == Group::Guest);
        }
        let incidents = devices.iter().filter(|d| d.incident.is_some()).count();
        assert!((3..=10).contains(&incidents), "{incidents} incident devices");
        let names: std::collections::HashSet<_> =
            devices.iter().filter(|d| d.group != Group::Guest).map(|d| &d.name).collect();
        assert_eq!(names.len(), 2_250, "device names are distinct");
    }

    #[test]
    fn guests_come_some_days_and_incidents_happen_in_lessons() {
        let monday = crate::time::parse_day("2026-11-30").unwrap();
        let guest_days = (0..1000).filter(|&d| present(1, 7, Group::Guest, monday + d * 7)).count();
        let pupil_days = (0..1000).filter(|&d| present(1, 7, Group::Pupil, monday + d * 7)).count();
        assert!((100..240).contains(&guest_days), "{guest_days}");
        assert!(pupil_days > 880, "{pupil_days}");
        let hours: Vec<usize> = (0..200).flat_map(|d| incident_hours(1, 3, monday + d)).collect();
        assert!(!hours.is_empty() && hours.iter().all(|h| (8..16).contains(h)));
        assert!((0..200).all(|d| is_school_day(monday + d) || incident_hours(1, 3, monday + d).is_empty()));
    }
}
