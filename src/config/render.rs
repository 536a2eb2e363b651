//! The effective configuration (defaults filled in) written back as TOML:
//! the shapes of `shapes.rs` built from a [`Config`] and serialised, so the
//! output is TOML that [`Config::parse`] reads back to the same `Config`, and
//! each setting's words come from the one enum that reads them.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::shapes::{
    BlockAnswerKind, RawCache, RawCategories, RawConditional, RawConfig, RawDns, RawGroup, RawLists, RawLog, RawMode,
    RawNetwork, RawOverride, RawOverrideEntry, RawRateLimit, RawSchedule, RawServer, RawUpstream, Word, Youtube,
};
use super::timed::{self, OverrideEntry, OverrideKind};
use super::{Config, ForwardServer, LeasesFormat, Upstream};
use crate::policy::category::{self, CategoryDecl};
use crate::policy::group::{BlockAnswer, GroupPolicy, YoutubeMode};

/// Renders the effective configuration as TOML that `compile` accepts again,
/// under a comment naming where it came from.
pub(super) fn render(config: &Config) -> String {
    let body = toml::to_string(&shape(config))
        .unwrap_or_else(|error| format!("# the effective configuration cannot be written as TOML: {error}\n"));
    format!("# effective configuration from {}\n{body}", config.source)
}

/// A value with no place in a file (it was not read from one).
fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// A path as text (a path that is not UTF-8 is shown with replacement characters).
fn path(path: &Path) -> PathBuf {
    PathBuf::from(path.to_string_lossy().into_owned())
}

fn texts<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<Spanned<String>> {
    items.into_iter().map(|item| unplaced(item.to_string())).collect()
}

/// The shapes a file would have to hold to compile into `config`.
fn shape(config: &Config) -> RawConfig {
    RawConfig {
        data_dir: path(&config.data_dir),
        timezone: Some(unplaced(config.timezone_name.clone())),
        dns: RawDns {
            listen: unplaced(texts(&config.listen)),
            allow_open_resolver: config.allow_open_resolver,
            tcp_max_connections: unplaced(config.tcp.max_connections),
            tcp_per_client: unplaced(config.tcp.per_client),
        },
        upstream: upstream(&config.upstream),
        cache: RawCache {
            size: unplaced(config.cache.size),
            memory_mb: unplaced(config.cache.memory_bytes as u64 / (1024 * 1024)),
            min_ttl_secs: config.cache.min_ttl.as_secs(),
            max_ttl_secs: unplaced(config.cache.max_ttl.as_secs()),
            negative_max_ttl_secs: config.cache.negative_max_ttl.as_secs(),
            serve_stale_secs: config.cache.serve_stale_for.as_secs(),
            stale_answer_after_ms: millis(config.cache.stale_answer_after),
        },
        rate_limit: RawRateLimit {
            queries_per_second: config.rate_limit.queries_per_second.map(unplaced),
            burst: config.rate_limit.queries_per_second.map(|_| config.rate_limit.burst),
            exempt_loopback: config.rate_limit.exempt_loopback,
            ipv6_prefix: unplaced(config.rate_limit.ipv6_prefix),
        },
        lists: RawLists {
            dir: unplaced(path(&config.lists.dir)),
            enable: config.lists.enable.clone(),
            disable: config.lists.disable.clone(),
            update_hours: config.list_update_interval.map_or(0, |interval| interval.as_secs() / 3600),
            download_max_mb: config.downloads.max_bytes / (1024 * 1024),
            download_timeout_secs: config.downloads.timeout.as_secs(),
        },
        log: RawLog {
            enabled: config.log.enabled,
            database: path(&config.log.database_setting),
            retention_days: unplaced(config.log.settings.retention_days),
            guest_privacy: unplaced(Word::Known(config.log.settings.guest_privacy)),
            private_groups: config.log.settings.private_groups.clone(),
            leases_file: config.log.leases.as_ref().map(|(file, _)| path(file)),
            leases_format: unplaced(Word::Known(config.log.leases.as_ref().map_or(LeasesFormat::Dnsmasq, |l| l.1))),
        },
        categories: RawCategories {
            // The always-locked categories need no key; a locked custom
            // category is listed too (its declaration says so as well).
            lock: texts(config.locked.without(category::locked()).iter().map(|c| c.id)),
            custom: config
                .custom_categories
                .iter()
                .map(|custom| {
                    unplaced(CategoryDecl {
                        id: custom.id.to_string(),
                        bit: custom.bit,
                        name: custom.name.to_string(),
                        description: custom.description.to_string(),
                        kind: custom.kind,
                        answers: custom.answers.to_string(),
                        locked: custom.locked,
                        blocked_for: custom.blocked_for.iter().map(|g| g.to_string()).collect(),
                    })
                })
                .collect(),
        },
        groups: config.groups.values().map(|policy| (unplaced(policy.name.clone()), group(config, policy))).collect(),
        networks: config
            .networks
            .iter()
            .map(|network| RawNetwork {
                name: unplaced(network.name.clone()),
                cidrs: unplaced(texts(&network.cidrs)),
                group: unplaced(network.group.clone()),
            })
            .collect::<Vec<_>>(),
        dashboard: super::dashboard::render(&config.dashboard),
        metrics: super::metrics::render(&config.metrics),
        alerts: super::alerts::render(&config.alerts),
        block_page: super::block_page::render(&config.block_page),
        selftest: super::selftest::render(&config.selftest),
        school: super::school::render(&config.school),
        sync: super::sync::render(&config.sync),
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn upstream(upstream: &Upstream) -> RawUpstream {
    let servers = |servers: &[ForwardServer]| {
        servers
            .iter()
            .map(|server| RawServer {
                address: unplaced(server.address.to_string()),
                protocol: server.protocol,
                tls_name: server.tls_name.clone(),
            })
            .collect::<Vec<_>>()
    };
    match upstream {
        Upstream::Recursive { root_hints, conditional, timeout } => RawUpstream {
            mode: unplaced(RawMode::Recursive),
            timeout_ms: millis(*timeout),
            root_hints: Some(unplaced(root_hints.clone())),
            servers: unplaced(Vec::new()),
            conditional: conditional
                .iter()
                .map(|entry| RawConditional {
                    zone: unplaced(entry.zone.clone()),
                    servers: unplaced(servers(&entry.servers)),
                })
                .collect(),
        },
        Upstream::Forward { servers: forward, timeout } => RawUpstream {
            mode: unplaced(RawMode::Forward),
            timeout_ms: millis(*timeout),
            root_hints: None,
            servers: unplaced(servers(forward)),
            conditional: Vec::new(),
        },
    }
}

fn group(config: &Config, policy: &GroupPolicy) -> RawGroup {
    let overrides = |kind: OverrideKind| {
        let mut entries: Vec<&OverrideEntry> =
            config.overrides.iter().filter(|entry| entry.group == policy.name && entry.kind == kind).collect();
        entries.sort_by(|a, b| a.rule.cmp(&b.rule));
        entries.dedup_by(|a, b| a.rule == b.rule);
        entries
            .into_iter()
            .map(|entry| {
                unplaced(match (entry.reason.is_empty(), entry.until_ms) {
                    (true, None) => RawOverride::Name(entry.rule.clone()),
                    _ => RawOverride::Entry(RawOverrideEntry {
                        name: entry.rule.clone(),
                        reason: entry.reason.clone(),
                        until: entry.until_ms.map(timed::instant_text),
                    }),
                })
            })
            .collect()
    };
    let schedule = config
        .schedules
        .iter()
        .filter(|schedule| schedule.group == policy.name)
        .map(|schedule| {
            unplaced(RawSchedule {
                category: unplaced(schedule.category.clone()),
                days: unplaced(texts(schedule.days.iter().map(|day| timed::day_word(*day)))),
                from: unplaced(timed::clock_text(schedule.from_minute)),
                to: unplaced(timed::clock_text(schedule.to_minute)),
            })
        })
        .collect();
    let (kind, ipv4, ipv6) = match policy.block_answer {
        BlockAnswer::NxDomain => (BlockAnswerKind::NxDomain, None, None),
        BlockAnswer::NullAddress => (BlockAnswerKind::Null, None, None),
        BlockAnswer::BlockPage { ipv4, ipv6 } => (BlockAnswerKind::BlockPage, Some(ipv4), ipv6),
    };
    RawGroup {
        description: policy.description.clone(),
        block: Some(unplaced(texts(policy.blocked.iter().map(|c| c.id)))),
        allow: overrides(OverrideKind::Allow),
        deny: overrides(OverrideKind::Deny),
        block_answer: Some(unplaced(Word::Known(kind))),
        block_page_ipv4: ipv4,
        block_page_ipv6: ipv6,
        safesearch: Some(policy.safesearch),
        youtube: Some(unplaced(Word::Known(match policy.youtube {
            YoutubeMode::Strict => Youtube::Strict,
            YoutubeMode::Moderate => Youtube::Moderate,
            YoutubeMode::Off => Youtube::Off,
        }))),
        bypass: Some(policy.bypass),
        schedule,
    }
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_CONFIG;
    use super::*;
    use crate::store::Privacy;

    /// Reads `text`, renders it, reads the rendering: the two configs must be
    /// the same in every field a file sets, and render the same again.
    fn round_trip(text: &str, name: &str) -> String {
        let first = Config::parse(text, name).unwrap_or_else(|error| panic!("{error}"));
        let rendered = render(&first);
        let second = Config::parse(&rendered, "rendered").unwrap_or_else(|error| panic!("{error}\n{rendered}"));
        // Every field by name, so a new one is not forgotten here.
        let Config {
            source: _,
            file: _,
            listen,
            tcp,
            data_dir,
            networks,
            allow_open_resolver,
            groups,
            timezone: _,
            timezone_name,
            overrides,
            schedules,
            locked,
            custom_categories,
            lists,
            list_update_interval,
            downloads,
            upstream,
            cache,
            rate_limit,
            log,
            dashboard,
            metrics,
            alerts,
            block_page,
            selftest,
            school,
            sync,
        } = &first;
        assert_eq!(selftest, &second.selftest);
        assert_eq!(listen, &second.listen);
        assert_eq!(tcp, &second.tcp);
        assert_eq!(data_dir, &second.data_dir);
        assert_eq!(format!("{networks:?}"), format!("{:?}", second.networks));
        assert_eq!(allow_open_resolver, &second.allow_open_resolver);
        assert_eq!(groups, &second.groups);
        assert_eq!(timezone_name, &second.timezone_name);
        let sorted = |entries: &[crate::config::OverrideEntry]| {
            let mut entries = entries.to_vec();
            entries.sort_by(|a, b| (&a.group, a.kind.key(), &a.rule).cmp(&(&b.group, b.kind.key(), &b.rule)));
            entries
        };
        assert_eq!(sorted(overrides), sorted(&second.overrides));
        assert_eq!(schedules, &second.schedules);
        assert_eq!(locked, &second.locked);
        assert_eq!(custom_categories, &second.custom_categories);
        // `dir_line` is where `dir` was written, which differs by design.
        assert_eq!(
            (&lists.dir, &lists.enable, &lists.disable),
            (&second.lists.dir, &second.lists.enable, &second.lists.disable)
        );
        assert_eq!(list_update_interval, &second.list_update_interval);
        assert_eq!(format!("{downloads:?}"), format!("{:?}", second.downloads));
        assert_eq!(format!("{upstream:?}"), format!("{:?}", second.upstream));
        assert_eq!(format!("{cache:?}"), format!("{:?}", second.cache));
        assert_eq!(rate_limit, &second.rate_limit);
        assert_eq!(format!("{log:?}"), format!("{:?}", second.log));
        assert_eq!(dashboard, &second.dashboard);
        assert_eq!(metrics, &second.metrics);
        assert_eq!(alerts, &second.alerts);
        assert_eq!(block_page, &second.block_page);
        assert_eq!(school, &second.school);
        assert_eq!(sync, &second.sync);
        let again = render(&second);
        assert_eq!(rendered.lines().skip(1).collect::<Vec<_>>(), again.lines().skip(1).collect::<Vec<_>>());
        rendered
    }

    #[test]
    fn the_embedded_default_round_trips() {
        let rendered = round_trip(DEFAULT_CONFIG, "embedded default");
        assert!(rendered.starts_with("# effective configuration from embedded default\n"), "{rendered}");
    }

    #[test]
    fn the_example_config_round_trips() {
        let rendered = round_trip(include_str!("../../examples/hedgerow.toml"), "examples/hedgerow.toml");
        assert!(rendered.contains("\n[groups.staff]\n"), "{rendered}");
        assert!(rendered.contains("\nblock_answer = \"block-page\"\nblock_page_ipv4 = \"10.0.0.2\"\n"), "{rendered}");
    }

    /// Every key a file may set, each away from its default where it has one.
    const EVERY_KEY: &str = r#"
data_dir = "/srv/hedgerow \"data\""

[dns]
listen = ["127.0.0.1:5300", "[::1]:5300"]
allow_open_resolver = true
tcp_max_connections = 50
tcp_per_client = 5

[upstream]
mode = "recursive"
timeout_ms = 1500
root_hints = ["192.0.2.53", "2001:db8::53"]

[[upstream.conditional]]
zone = "School.Internal."
servers = [{ address = "10.0.0.5" }, { address = "10.0.0.6:5353", protocol = "tcp" }]

[[upstream.conditional]]
zone = "corp.example"
servers = [{ address = "192.0.2.7", protocol = "tls", tls_name = "dns.corp.example" }, { address = "192.0.2.8", protocol = "https", tls_name = "doh.corp.example" }]

[cache]
size = 500
memory_mb = 16
min_ttl_secs = 30
max_ttl_secs = 600
negative_max_ttl_secs = 120
serve_stale_secs = 7200
stale_answer_after_ms = 250

[rate_limit]
queries_per_second = 10
burst = 15
exempt_loopback = false
ipv6_prefix = 56

[lists]
dir = "my lists"
enable = ["ut1-gambling"]
disable = ["hedgerow-games"]
update_hours = 6
download_max_mb = 20
download_timeout_secs = 15

[log]
enabled = false
database = "logs/queries.db"
retention_days = 90
guest_privacy = "hash"
private_groups = ["guest", "visitors"]
leases_file = "/var/lib/dhcp/dhcpd.leases"
leases_format = "isc"

[categories]
lock = ["gambling", "render-test-61"]

[[categories.custom]]
id = "render-test-61"
bit = 61
name = "Render test"
description = "A school's own category, with \"quotes\""
kind = "extra"
answers = "none"
locked = false
blocked_for = ["pupil", "guest"]

[groups.pupil]
description = "Pupils"
block = ["uksic", "bypass", "games", "render-test-61", "!vpn-proxy"]
allow = ["BBC.co.uk", "=www.Example.org", "*.school.example"]
deny = ["*.tiktok.com", "=bad.example"]
block_answer = "null"
safesearch = false
youtube = "off"
bypass = false

[groups.staff]
block = ["default"]
block_answer = "block-page"
block_page_ipv4 = "10.0.0.2"
block_page_ipv6 = "fd00::2"
youtube = "strict"

[groups.visitors]
description = "Visitors to the Cafe\u0301"
block_answer = "nxdomain"
youtube = "moderate"
bypass = true

[[networks]]
name = "pupils"
cidrs = ["10.1.0.0/16", "fd00:1::/64"]
group = "pupil"

[[networks]]
name = "everyone else"
cidrs = ["0.0.0.0/0"]
group = "visitors"
"#;

    #[test]
    fn a_config_with_every_key_round_trips() {
        let rendered = round_trip(EVERY_KEY, "every-key.toml");
        for line in [
            "allow_open_resolver = true",
            "guest_privacy = \"hash\"",
            "leases_format = \"isc\"",
            "youtube = \"off\"",
            "block_answer = \"null\"",
            "block_page_ipv6 = \"fd00::2\"",
            "protocol = \"https\"",
            "[[categories.custom]]\nid = \"render-test-61\"\nbit = 61",
        ] {
            assert!(rendered.contains(line), "{line:?} missing from:\n{rendered}");
        }
        // Forward mode, with each protocol's default port filled in.
        let forward = "[upstream]\nmode = \"forward\"\ntimeout_ms = 900\n\
            [[upstream.servers]]\naddress = \"192.0.2.1\"\n\
            [[upstream.servers]]\naddress = \"192.0.2.2\"\nprotocol = \"tcp\"\n\
            [[upstream.servers]]\naddress = \"2001:db8::3\"\nprotocol = \"tls\"\ntls_name = \"dns.example\"\n\
            [[upstream.servers]]\naddress = \"192.0.2.4\"\nprotocol = \"https\"\ntls_name = \"doh.example\"\n\
            [[networks]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\ngroup = \"pupil\"\n";
        let rendered = round_trip(forward, "forward.toml");
        assert!(rendered.contains("mode = \"forward\"") && rendered.contains("\"[2001:db8::3]:853\""), "{rendered}");
        assert!(!rendered.contains("root_hints") && !rendered.contains("queries_per_second"), "{rendered}");
    }

    /// The rendering's words are the ones compiling reads: a word enum
    /// serialises to exactly what a file writes.
    #[test]
    fn each_settings_words_are_read_and_written_the_same() {
        use super::super::shapes::Words;
        fn check<T: Words + PartialEq + std::fmt::Debug>(words: &[&str]) {
            let written: Vec<String> = T::ALL.iter().map(|variant| variant.word()).collect();
            assert_eq!(written, words);
            for (variant, word) in T::ALL.iter().zip(words) {
                assert_eq!(T::from_word(word), Some(*variant));
            }
            assert_eq!(T::from_word("Strict"), None, "words are matched exactly");
        }
        check::<Youtube>(&["strict", "moderate", "off"]);
        check::<BlockAnswerKind>(&["nxdomain", "null", "block-page"]);
        check::<Privacy>(&["full", "truncate", "hash"]);
        check::<RawMode>(&["recursive", "forward"]);
        check::<super::super::ForwardProtocol>(&["udp", "tcp", "tls", "https"]);
        check::<LeasesFormat>(&["dnsmasq", "isc"]);
    }
}
