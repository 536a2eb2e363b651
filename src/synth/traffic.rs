//! One hour of the school's traffic: lookups by the devices on site, each
//! an A query with AAAA and HTTPS beside it as browsers send them, decided
//! as the real pipeline decides (`dns/decision.rs`): cache or upstream,
//! blocked by category (or `bypass` for bypass categories), SafeSearch
//! rewrites for pupils and guests, bypass canaries, the odd upstream
//! failure; plus the incident devices' repeated attempts at one category.
//! Outcomes and clients are interned here into dictionary ids.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::names::{CANARIES, CATEGORIES, Names, REWRITES, Special};
use super::random::{Rng, Weighted, mix};
use super::school::{self, Device, Group};
use crate::store::QueryRecord;
use crate::store::block::{BlockRow, row_id};
use crate::store::record::NAME_MARK;

const UPSTREAM: &str = "forwarded to the configured upstream servers";
const FROM_CACHE: &str = "answered from the cache";
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_HTTPS: u16 = 65;
const TYPE_SVCB: u16 = 64;

/// A `log_outcomes` row ('' for none).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub decision: &'static str,
    pub category: &'static str,
    pub list: &'static str,
    pub stage: &'static str,
    pub reason: String,
    pub response_code: u16,
}

/// A `log_clients` row ('' for none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEntry {
    pub client: String,
    pub device: String,
    pub owner: String,
    pub network: &'static str,
    pub group: &'static str,
}

/// One generated hour: its rows (in time order, ids assigned) and the
/// dictionary entries first used in it.
#[derive(Debug, Default)]
pub struct Hour {
    pub hour: i64,
    pub rows: Vec<BlockRow>,
    pub new_clients: Vec<(u32, ClientEntry)>,
    pub new_outcomes: Vec<(u32, Outcome)>,
}

/// The traffic generator: owns the dictionaries' ids as they are handed out.
pub struct Traffic {
    pub names: Names,
    pub devices: Vec<Device>,
    seed: u64,
    outcomes: HashMap<Outcome, u32>,
    /// Outcome id - 1 to outcome.
    outcome_list: Vec<Outcome>,
    /// Blocked outcomes by category entry (the reason's name is stored as
    /// `record::NAME_MARK`, as the writer stores it).
    blocked: HashMap<u8, u32>,
    /// Client id of each named device (pupils, staff); guests get one per day.
    named_clients: Vec<u32>,
    guest_clients: HashMap<(usize, i64), u32>,
    next_client: u32,
    /// Newest day each name and client id was used on (0: never).
    pub name_last_day: Vec<i64>,
    pub client_last_day: Vec<i64>,
    /// The device (index into `devices`) of each client id.
    pub client_device: Vec<usize>,
    last_id: i64,
    pending_clients: Vec<(u32, ClientEntry)>,
    pending_outcomes: Vec<(u32, Outcome)>,
}

impl Traffic {
    pub fn new(names: Names, devices: Vec<Device>, seed: u64) -> Traffic {
        let mut traffic = Traffic {
            name_last_day: vec![0; names.names.len()],
            names,
            devices,
            seed,
            outcomes: HashMap::new(),
            outcome_list: Vec::new(),
            blocked: HashMap::new(),
            named_clients: Vec::new(),
            guest_clients: HashMap::new(),
            next_client: 1,
            client_last_day: Vec::new(),
            client_device: Vec::new(),
            last_id: 0,
            pending_clients: Vec::new(),
            pending_outcomes: Vec::new(),
        };
        for index in 0..traffic.devices.len() {
            let device = &traffic.devices[index];
            if device.group == Group::Guest {
                traffic.named_clients.push(0);
                continue;
            }
            let entry = ClientEntry {
                client: device.ip.to_string(),
                device: device.name.clone(),
                owner: device.owner.clone(),
                network: device.group.network(),
                group: device.group.name(),
            };
            let id = traffic.new_client(entry, index);
            traffic.named_clients.push(id);
        }
        traffic
    }

    fn new_client(&mut self, entry: ClientEntry, device: usize) -> u32 {
        let id = self.next_client;
        self.next_client += 1;
        self.client_last_day.push(0);
        self.client_device.push(device);
        self.pending_clients.push((id, entry));
        id
    }

    fn outcome(&mut self, outcome: Outcome) -> u32 {
        if let Some(&id) = self.outcomes.get(&outcome) {
            return id;
        }
        let id = self.outcomes.len() as u32 + 1;
        self.outcomes.insert(outcome.clone(), id);
        self.outcome_list.push(outcome.clone());
        self.pending_outcomes.push((id, outcome));
        id
    }

    /// The client id of device `index` on `day` (guests: a hashed address,
    /// a new one each day, as `guest_privacy = "hash"` writes them).
    fn client(&mut self, index: usize, day: i64) -> u32 {
        let id = if self.devices[index].group == Group::Guest {
            match self.guest_clients.get(&(index, day)) {
                Some(&id) => id,
                None => {
                    let hash = mix(self.seed ^ mix(day as u64) ^ u64::from(u32::from(self.devices[index].ip)));
                    let entry = ClientEntry {
                        client: format!("anon-{:012x}", hash >> 16),
                        device: String::new(),
                        owner: String::new(),
                        network: Group::Guest.network(),
                        group: Group::Guest.name(),
                    };
                    let id = self.new_client(entry, index);
                    self.guest_clients.insert((index, day), id);
                    id
                }
            }
        } else {
            self.named_clients[index]
        };
        self.client_last_day[id as usize - 1] = day;
        id
    }

    /// Generates `hour` (hours since the epoch) with about `target` rows.
    pub fn hour(&mut self, hour: i64, target: u64) -> Hour {
        let day = hour.div_euclid(24);
        let hour_of_day = hour.rem_euclid(24) as usize;
        let start_ms = hour * 3_600_000;
        let mut rng = Rng::new(self.seed, 0x686f_7572_0000_0000 ^ hour as u64);
        let active: Vec<usize> =
            (0..self.devices.len()).filter(|&i| school::present(self.seed, i, self.devices[i].group, day)).collect();
        let pick = Weighted::new(active.iter().map(|&i| {
            let device = &self.devices[i];
            device.weight * school::group_factor(device.group, day, hour_of_day)
        }));
        let mut rows = Vec::with_capacity(target as usize + 64);
        if active.is_empty() {
            return self.finish(hour, rows);
        }
        let category_pick: [Weighted; 3] = [0, 1, 2].map(|g| Weighted::new(CATEGORIES.iter().map(|c| c.share[g])));
        let category_share: [f64; 3] = [0, 1, 2].map(|g| CATEGORIES.iter().map(|c| c.share[g]).sum());
        while (rows.len() as u64) < target {
            let Some(slot) = pick.sample(&mut rng) else { break };
            let index = active[slot];
            let group = self.devices[index].group;
            let (name, category) = if rng.chance(category_share[group as usize]) {
                let category = category_pick[group as usize].sample(&mut rng).expect("shares are positive");
                (self.names.in_category(category, &mut rng), Some(category))
            } else if rng.chance(0.5) {
                let favourites = &self.devices[index].favourites;
                let zipf = school::favourite_zipf(favourites.len());
                (favourites[zipf.sample(&mut rng)], None)
            } else {
                (self.names.benign(&mut rng), None)
            };
            let time_ms = start_ms + rng.below(3_599_990) as i64;
            self.lookup(&mut rng, &mut rows, index, day, time_ms, name, category);
        }
        // Incident devices: bursts of attempts at their category.
        for index in 0..self.devices.len() {
            let Some(incident) = self.devices[index].incident else { continue };
            let hours = school::incident_hours(self.seed, index, day);
            for _ in hours.iter().filter(|&&h| h == hour_of_day) {
                let category = CATEGORIES
                    .iter()
                    .position(|c| c.id == school::INCIDENT_CATEGORIES[incident])
                    .expect("incident categories are in CATEGORIES");
                let begin = start_ms + rng.below(2_300_000) as i64;
                for _ in 0..40 + rng.below(160) {
                    let name = {
                        let (ids, _) = &self.names.categories[category];
                        ids[rng.below(ids.len().min(30) as u64) as usize]
                    };
                    let time_ms = begin + rng.below(1_200_000) as i64;
                    self.lookup(&mut rng, &mut rows, index, day, time_ms, name, Some(category));
                }
            }
        }
        self.finish(hour, rows)
    }

    /// One lookup: an A row, and AAAA and HTTPS rows as browsers send them.
    #[allow(clippy::too_many_arguments)]
    fn lookup(
        &mut self,
        rng: &mut Rng,
        rows: &mut Vec<BlockRow>,
        index: usize,
        day: i64,
        time_ms: i64,
        name: u32,
        category: Option<usize>,
    ) {
        let client = self.client(index, day);
        self.name_last_day[name as usize - 1] = day;
        let group = self.devices[index].group;
        let special = self.names.special(name);
        let types: &[u16] = match (special, rng.chance(0.85), rng.chance(0.4)) {
            (Special::Canary(3), _, _) => &[TYPE_SVCB],
            (_, true, true) => &[TYPE_A, TYPE_AAAA, TYPE_HTTPS],
            (_, true, false) => &[TYPE_A, TYPE_AAAA],
            (_, false, true) => &[TYPE_A, TYPE_HTTPS],
            (_, false, false) => &[TYPE_A],
        };
        // Popular names are usually cached; the long tail is not.
        let cached = rng.chance(if category.is_none() && name <= 2_000 { 0.85 } else { 0.5 });
        let failed = !cached && rng.chance(0.0008);
        let nxdomain = !cached && name > 2_000 && rng.chance(0.03);
        for (n, &record_type) in types.iter().enumerate() {
            let mut row = BlockRow {
                id: 0,
                time_ms: time_ms + n as i64,
                client,
                name,
                record_type,
                outcome: 0,
                cache_hit: false,
                upstream_ms: None,
            };
            let outcome = match (special, category) {
                (Special::Canary(i), _) => {
                    let (_, reason, code) = CANARIES[i as usize];
                    Outcome {
                        decision: "bypass",
                        category: "",
                        list: "",
                        stage: "bypass",
                        reason: reason.to_string(),
                        response_code: code,
                    }
                }
                (Special::SafeSearch(i), _) if group != Group::Staff => {
                    let (service, _, host) = REWRITES[i as usize];
                    row.cache_hit = true;
                    Outcome {
                        decision: "safesearch",
                        category: "",
                        list: "",
                        stage: "safesearch",
                        reason: format!("{service} SafeSearch: CNAME to {host} (group {})", group.name()),
                        response_code: 0,
                    }
                }
                (_, Some(c)) if CATEGORIES[c].blocked_for.contains(&group.name()) => {
                    row.outcome = self.blocked_outcome(c);
                    rows.push(row);
                    continue;
                }
                _ if failed => Outcome {
                    decision: "error",
                    category: "",
                    list: "",
                    stage: "upstream",
                    reason: "no upstream answer: request timed out".to_string(),
                    response_code: 2,
                },
                _ if cached => {
                    row.cache_hit = true;
                    Outcome {
                        decision: "allowed",
                        category: "",
                        list: "",
                        stage: "cache",
                        reason: FROM_CACHE.to_string(),
                        response_code: 0,
                    }
                }
                _ => {
                    row.upstream_ms = Some(2 + rng.exponential(22.0).min(3_000.0) as u32);
                    Outcome {
                        decision: "allowed",
                        category: "",
                        list: "",
                        stage: "upstream",
                        reason: UPSTREAM.to_string(),
                        response_code: if nxdomain { 3 } else { 0 },
                    }
                }
            };
            row.outcome = self.outcome(outcome);
            rows.push(row);
        }
    }

    /// `row` as the DNS path hands it to the query log (the client's real
    /// address, before the writer's attribution and privacy): for driving
    /// [`crate::store::QueryLog`] with the school's traffic.
    pub fn record(&self, row: &BlockRow) -> QueryRecord {
        let device = &self.devices[self.client_device[row.client as usize - 1]];
        let outcome = &self.outcome_list[row.outcome as usize - 1];
        let text = |s: &str| (!s.is_empty()).then(|| Arc::from(s));
        QueryRecord {
            time_ms: row.time_ms,
            client: IpAddr::V4(device.ip),
            network: Some(Arc::from(device.group.network())),
            group: Some(Arc::from(device.group.name())),
            name: self.names.name(row.name).to_string(),
            record_type: row.record_type,
            decision: outcome.decision,
            category: text(outcome.category),
            list: text(outcome.list),
            response_code: outcome.response_code,
            upstream_ms: row.upstream_ms,
            cache_hit: row.cache_hit,
            stage: Some(outcome.stage),
            reason: Some(Cow::Owned(outcome.reason.clone())),
        }
    }

    /// The outcome of a name blocked by `CATEGORIES[c]`, worded as
    /// `dns/blocklist.rs` words it.
    fn blocked_outcome(&mut self, c: usize) -> u32 {
        if let Some(&id) = self.blocked.get(&(c as u8)) {
            return id;
        }
        let spec = &CATEGORIES[c];
        let mut reason = format!("{NAME_MARK} is in category {} (listed exactly in list {})", spec.id, spec.list);
        if spec.locked {
            reason.push_str("; the category is locked, so no override or group setting allows it");
        }
        let id = self.outcome(Outcome {
            decision: if spec.bypass { "bypass" } else { "blocked" },
            category: spec.id,
            list: spec.list,
            stage: "blocklist",
            reason,
            response_code: 3,
        });
        self.blocked.insert(c as u8, id);
        id
    }

    fn finish(&mut self, hour: i64, mut rows: Vec<BlockRow>) -> Hour {
        rows.sort_by_key(|row| row.time_ms);
        for row in &mut rows {
            row.id = row_id(row.time_ms, self.last_id);
            self.last_id = row.id;
        }
        Hour {
            hour,
            rows,
            new_clients: std::mem::take(&mut self.pending_clients),
            new_outcomes: std::mem::take(&mut self.pending_outcomes),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::synth::names::default_data_dir;

    /// A small school over one Monday, from the real lists.
    fn monday(seed: u64) -> (Traffic, Vec<Hour>) {
        let names = Names::load(&default_data_dir(), seed, 20_000).expect("../shared/data has the UT1 lists");
        let devices = school::devices(400, seed, |rng| names.benign(rng));
        let mut traffic = Traffic::new(names, devices, seed);
        let day = crate::time::parse_day("2026-11-30").unwrap();
        let hours = (day * 24..day * 24 + 24)
            .map(|hour| traffic.hour(hour, school::rows_in_hour(day, hour.rem_euclid(24) as usize, 200_000)))
            .collect();
        (traffic, hours)
    }

    #[test]
    fn an_hour_is_the_same_for_a_seed_and_differs_for_another() {
        let (_, first) = monday(5);
        let (_, again) = monday(5);
        let (_, other) = monday(6);
        assert_eq!(first[10].rows, again[10].rows);
        assert_eq!(first[10].new_outcomes, again[10].new_outcomes);
        assert_ne!(first[10].rows, other[10].rows);
    }

    #[test]
    fn rows_are_in_their_hour_in_id_order_with_known_dictionary_ids() {
        let (traffic, hours) = monday(1);
        let clients: HashSet<u32> = hours.iter().flat_map(|h| h.new_clients.iter().map(|c| c.0)).collect();
        let outcomes: HashSet<u32> = hours.iter().flat_map(|h| h.new_outcomes.iter().map(|o| o.0)).collect();
        let mut last = 0;
        for hour in &hours {
            for row in &hour.rows {
                assert_eq!(row.time_ms.div_euclid(3_600_000), hour.hour);
                assert!(row.id > last, "ids increase");
                last = row.id;
                assert!(clients.contains(&row.client) && outcomes.contains(&row.outcome));
                assert!(traffic.name_last_day[row.name as usize - 1] != 0);
            }
        }
        // The day's rows come out as planned (incidents add a few hundred).
        let total: usize = hours.iter().map(|h| h.rows.len()).sum();
        assert!((200_000..203_000).contains(&total), "{total} rows");
        // Lessons are busy, the night is not.
        assert!(hours[10].rows.len() > 20 * hours[3].rows.len());
    }

    #[test]
    fn outcomes_are_a_realistic_mix() {
        let (traffic, hours) = monday(1);
        let outcomes: HashMap<u32, Outcome> = hours.iter().flat_map(|h| h.new_outcomes.iter().cloned()).collect();
        let clients: HashMap<u32, ClientEntry> = hours.iter().flat_map(|h| h.new_clients.iter().cloned()).collect();
        let rows: Vec<&BlockRow> = hours.iter().flat_map(|h| &h.rows).collect();
        let share = |pred: &dyn Fn(&BlockRow, &Outcome, &ClientEntry) -> bool| {
            rows.iter().filter(|r| pred(r, &outcomes[&r.outcome], &clients[&r.client])).count() as f64
                / rows.len() as f64
        };
        let blocked = share(&|_, o, _| o.decision == "blocked");
        assert!((0.01..0.08).contains(&blocked), "blocked share {blocked}");
        let categories: HashSet<&str> =
            outcomes.values().filter(|o| o.decision == "blocked").map(|o| o.category).collect();
        assert!(categories.len() >= 8, "{categories:?}");
        let safesearch = share(&|_, o, _| o.decision == "safesearch");
        assert!((0.002..0.05).contains(&safesearch), "safesearch share {safesearch}");
        assert_eq!(share(&|_, o, c| o.decision == "safesearch" && c.group == "staff"), 0.0);
        assert!(share(&|_, o, _| o.decision == "bypass" && o.stage == "bypass") > 0.0, "canaries");
        assert!(share(&|_, o, _| o.decision == "bypass" && o.category == "vpn-proxy") > 0.0);
        let cached = share(&|r, o, _| o.stage == "cache" && r.cache_hit);
        assert!((0.3..0.9).contains(&cached), "cache share {cached}");
        assert!(share(&|r, o, _| o.stage == "upstream" && o.decision == "allowed" && r.upstream_ms.is_none()) == 0.0);
        // Staff are blocked far less than pupils (their groups block less).
        let of = |group: &str, decision: &str| {
            share(&|_, o, c| c.group == group && o.decision == decision) / share(&|_, _, c| c.group == group)
        };
        assert!(of("pupil", "blocked") > 3.0 * of("staff", "blocked"));
        // A/AAAA/HTTPS all present, A the most.
        let types = |t: u16| rows.iter().filter(|r| r.record_type == t).count();
        assert!(types(TYPE_A) > types(TYPE_AAAA) && types(TYPE_AAAA) > types(TYPE_HTTPS) && types(TYPE_HTTPS) > 0);
        // Names are skewed: the 1% most asked names take a large share.
        let mut per_name: HashMap<u32, usize> = HashMap::new();
        rows.iter().for_each(|r| *per_name.entry(r.name).or_default() += 1);
        let mut counts: Vec<usize> = per_name.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts[..counts.len() / 100].iter().sum();
        assert!(top as f64 > 0.3 * rows.len() as f64, "top 1% of {} names: {top}", counts.len());
        assert!(counts.len() > 5_000, "a long tail: {} names", counts.len());
        let _ = traffic;
    }

    #[test]
    fn guests_are_hashed_and_incident_devices_keep_trying_one_category() {
        let (traffic, hours) = monday(1);
        let clients: HashMap<u32, ClientEntry> = hours.iter().flat_map(|h| h.new_clients.iter().cloned()).collect();
        for client in clients.values() {
            match client.group {
                "guest" => {
                    assert!(client.client.starts_with("anon-") && client.client.len() == 17, "{client:?}");
                    assert!(client.device.is_empty() && client.network == "guests");
                }
                _ => assert!(client.client.starts_with("10.") && !client.device.is_empty() && !client.owner.is_empty()),
            }
        }
        let outcomes: HashMap<u32, Outcome> = hours.iter().flat_map(|h| h.new_outcomes.iter().cloned()).collect();
        // Some incident device made a burst of 40+ attempts in one category within an hour.
        let day = crate::time::parse_day("2026-11-30").unwrap();
        let incident = (0..traffic.devices.len())
            .find(|&i| traffic.devices[i].incident.is_some() && !school::incident_hours(1, i, day).is_empty())
            .expect("an incident device is active on some Monday hour");
        let category = school::INCIDENT_CATEGORIES[traffic.devices[incident].incident.unwrap()];
        let client = traffic.named_clients[incident];
        let attempts = hours
            .iter()
            .flat_map(|h| &h.rows)
            .filter(|r| r.client == client && outcomes[&r.outcome].category == category)
            .count();
        assert!(attempts >= 40, "{attempts} attempts at {category}");
    }
}
