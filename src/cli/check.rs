//! `hedgerow check`: the decision the server would take for a name, and
//! why, without asking upstream.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use hickory_proto::rr::{LowerName, Name, RecordType};

use hedgerow::config::Config;
use hedgerow::dns::{Explanation, Flow, Pipeline, Question, Requester, Stage};

/// Who `hedgerow check` asks as.
pub enum Asker {
    Client(IpAddr),
    Group(String),
    Device(String),
}

impl Asker {
    /// From `--client`, `--group` and `--device` (clap lets at most one
    /// through); none asks as a pupil.
    pub fn from_flags(client: Option<IpAddr>, group: Option<String>, device: Option<String>) -> Asker {
        match (client, group, device) {
            (Some(client), _, _) => Asker::Client(client),
            (_, Some(group), _) => Asker::Group(group),
            (_, _, Some(device)) => Asker::Device(device),
            (None, None, None) => Asker::Group("pupil".into()),
        }
    }
}

pub fn run(config: &Config, name: &str, asker: Asker, record_type: &str) -> anyhow::Result<ExitCode> {
    let record_type: RecordType = record_type
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("{record_type:?} is not a DNS record type (try A, AAAA, HTTPS, TXT)"))?;
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let name = Name::from_utf8(&fqdn).with_context(|| format!("{name:?} is not a valid domain name"))?;
    let question = Question { name: LowerName::from(name), record_type, dnssec_ok: false };
    let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    if let Asker::Group(group) = &asker
        && !config.groups.contains_key(group)
    {
        eprintln!(
            "hedgerow: no group named {group:?} in {}; the configured groups are: {}",
            config.source,
            groups.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    // A device asks from its address.
    let (requester, device) = match &asker {
        Asker::Client(ip) => (Requester::Source(*ip), None),
        Asker::Group(group) => (Requester::Group(group), None),
        Asker::Device(key) => {
            let (name, ip) = device_to_ask_as(config, key)?;
            (Requester::Source(ip), Some(name))
        }
    };
    // `check` needs the runtime only because the upstream is built; nothing is sent.
    let runtime = tokio::runtime::Runtime::new()?;
    let _guard = runtime.enter();
    let (lists, safesearch) = hedgerow::serve::load_lists(config)?;
    // The policy as in force now (expired overrides dropped, schedule windows open), as the server runs it.
    let in_force = hedgerow::serve::in_force(config, hedgerow::time::now_ms());
    let pipeline = Pipeline::new(&in_force, lists, safesearch, None)?;
    // The device table's groups, as the server applies them.
    let (_, device_groups) = hedgerow::serve::read_device_groups(&config.log.database)?;
    pipeline.replace_device_groups(&device_groups);
    println!("query:    {} {}", question.name, question.record_type);
    match (&requester, &device) {
        (Requester::Source(ip), Some(name)) => println!("asked by: device {name:?} at {ip}"),
        (Requester::Source(ip), None) => println!("asked by: client {ip}"),
        (Requester::Group(group), _) => println!("asked by: a member of group {group}"),
    }
    match pipeline.decide(requester.clone(), &question, false) {
        Flow::Final(answer) => {
            let decision = &answer.decision;
            println!("{}", Explanation::of(decision));
            let records: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
            if records.is_empty() {
                println!("answer:   {}", answer.response_code);
            } else {
                println!("answer:   {} {}", answer.response_code, records.join(", "));
            }
            if let (Requester::Source(ip), Stage::Access, None) = (&requester, decision.stage, &decision.network) {
                let networks: Vec<String> = config
                    .networks
                    .iter()
                    .map(|network| {
                        let cidrs: Vec<String> = network.cidrs.iter().map(ToString::to_string).collect();
                        format!("{} {}", network.name, cidrs.join(" "))
                    })
                    .collect();
                println!(
                    "REFUSED:  no configured network covers {ip}, so Hedgerow would refuse every query from it \
                     (whatever the device table says). Networks: {}",
                    networks.join("; ")
                );
            }
        }
        Flow::Resolve(pending) => {
            println!("{}", Explanation::of(&pending.policy_decision()));
            match &pending.rewrite {
                Some(rewrite) => println!(
                    "answer:   CNAME {} followed by its {} records ({}, not sent by `check`)",
                    rewrite.target,
                    question.record_type,
                    pipeline.upstream_description()
                ),
                None => println!("answer:   {} (not sent by `check`)", pipeline.upstream_description()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The one device `key` names, with an address to ask from.
fn device_to_ask_as(config: &Config, key: &str) -> anyhow::Result<(String, IpAddr)> {
    let database = &config.log.database;
    let found = hedgerow::store::devices::find_devices(database, key)?;
    let device = match found.len() {
        0 => anyhow::bail!(
            "no device named {key:?} in {} (`hedgerow devices list` shows them; give a name, IP or MAC)",
            database.display()
        ),
        1 => found.into_iter().next().expect("one device"),
        n => anyhow::bail!(
            "{n} devices are named {key:?}: {}; give the IP address or MAC of the one you mean",
            found
                .iter()
                .map(|d| d.ip.map_or_else(|| d.mac.clone().unwrap_or_default(), |ip| ip.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let Some(ip) = device.ip else {
        anyhow::bail!(
            "device {:?} has no IP address yet (known by MAC {} only; a DHCP lease or `hedgerow devices add --ip` gives it one), so its network is unknown",
            device.name,
            device.mac.as_deref().unwrap_or("?")
        );
    };
    Ok((device.name, ip))
}
