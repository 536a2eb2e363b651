//! Configuration: the TOML a school writes, parsed with `deny_unknown_fields`,
//! then checked and compiled into [`Config`], the type the server runs on.
//!
//! Every error names the file, the line and what to change, because the person
//! reading it is an ICT lead at a terminal, not the author of this code.
//!
//! - `shapes.rs`: the TOML shapes serde reads and writes (each setting's words once);
//! - `compile.rs`: shapes -> [`Config`], with every check and its message;
//! - `render.rs`: [`Config`] -> shapes -> TOML ([`Config::to_toml`]).

pub mod alerts;
pub mod block_page;
mod compile;
mod dashboard;
pub mod edit;
mod metrics;
mod render;
pub mod school;
pub mod selftest;
mod shapes;
pub mod sync;
pub mod timed;

// Word-valued settings are defined with their words, in the shapes.
pub use shapes::{ForwardProtocol, LeasesFormat};

pub use dashboard::{DashboardSettings, TlsFiles};
pub use metrics::{BearerToken, MetricsSettings};

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::lists::sources::ListSettings;
use crate::policy::{CategorySet, GroupPolicy};

pub use compile::{DEFAULT_CONFIG, covers_the_internet};
pub use timed::{OverrideEntry, OverrideKind, Schedule};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from, for messages ("embedded default" or a path).
    pub source: String,
    /// The file it was read from ([`Config::load`]); `None` for the embedded
    /// default and for text parsed in-process. A reload reads it again.
    pub file: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    /// Limits on DNS-over-TCP connections (`[dns] tcp_*`).
    pub tcp: TcpSettings,
    pub data_dir: PathBuf,
    pub networks: Vec<Network>,
    /// `[dns] allow_open_resolver`: networks may cover the whole address
    /// space. Refused unless set; warned about at start when set.
    pub allow_open_resolver: bool,
    /// Every group's policy as written: all its overrides, schedules not
    /// applied. What is in force at a moment is [`Config::groups_at`].
    pub groups: BTreeMap<String, GroupPolicy>,
    /// The school's time zone (`timezone`, default Europe/London), for schedules.
    pub timezone: jiff::tz::TimeZone,
    /// Its IANA name as written.
    pub timezone_name: String,
    /// Every allow and deny override with its reason and expiry.
    pub overrides: Vec<OverrideEntry>,
    /// Every `[[groups.<g>.schedule]]` window.
    pub schedules: Vec<Schedule>,
    /// Categories always blocked for every group (the defaults plus `[categories] lock`).
    pub locked: CategorySet,
    /// The school's own categories (`[[categories.custom]]`), registered
    /// with [`crate::policy::category::register`] when the config was read.
    pub custom_categories: Vec<&'static crate::policy::Category>,
    /// Where the list source declarations are.
    pub lists: ListSettings,
    /// How often URL sources are downloaded again (None: never).
    pub list_update_interval: Option<Duration>,
    /// Limits on list downloads.
    pub downloads: crate::download::FetchSettings,
    pub upstream: Upstream,
    pub cache: CacheSettings,
    pub rate_limit: RateLimit,
    pub log: LogConfig,
    /// The web dashboard (`[dashboard]`).
    pub dashboard: DashboardSettings,
    /// The Prometheus endpoint (`[metrics]`); off by default.
    pub metrics: MetricsSettings,
    /// Alerts for the DSL (`[alerts]`): rules and delivery.
    pub alerts: alerts::AlertSettings,
    /// Hedgerow's own block page (`[block_page]`); off unless written.
    pub block_page: block_page::BlockPageSettings,
    /// When the built-in self-test runs by itself (`[selftest]`): daily at 07:30 by default.
    pub selftest: selftest::SelftestSettings,
    /// The school and who is responsible (`[school]`), for the annual review.
    pub school: school::SchoolSettings,
    /// Primary and secondary (`[sync]`): who owns the policy.
    pub sync: sync::SyncSettings,
}

/// The query log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub enabled: bool,
    /// The SQLite file (under data_dir unless absolute).
    pub database: PathBuf,
    /// The `database` setting as written (relative to data_dir).
    pub database_setting: PathBuf,
    pub settings: crate::store::LogSettings,
    /// A DHCP leases file read on a schedule to name devices.
    pub leases: Option<(PathBuf, LeasesFormat)>,
}

/// A network (VLAN subnet) and the group its clients belong to.
#[derive(Debug, Clone)]
pub struct Network {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub group: String,
}

#[derive(Debug, Clone)]
pub enum Upstream {
    /// Resolve from the root hints, sending internal zones to named servers.
    Recursive { root_hints: Vec<IpAddr>, conditional: Vec<ConditionalForward>, timeout: Duration },
    /// Send every query to these servers, in order of preference.
    Forward { servers: Vec<ForwardServer>, timeout: Duration },
}

/// An internal zone (the school's own domain) answered by a named server.
#[derive(Debug, Clone)]
pub struct ConditionalForward {
    pub zone: String,
    pub servers: Vec<ForwardServer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardServer {
    pub address: SocketAddr,
    pub protocol: ForwardProtocol,
    /// The TLS name to verify for `tls` and `https`.
    pub tls_name: Option<String>,
}

/// Limits on DNS-over-TCP connections. TCP is what a client falls back to
/// when a UDP answer is truncated, so it must stay available to insiders
/// while someone holds connections open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// Connections open at once from clients in configured networks; when
    /// full, the longest-idle connection is closed to make room (RFC 7766
    /// section 6.2.3).
    pub max_connections: usize,
    /// Connections open at once from one client (an IPv4 address, or an IPv6
    /// prefix of `rate_limit.ipv6_prefix` bits).
    pub per_client: usize,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most answers held at once.
    pub size: usize,
    /// Most memory the cached answers may take, in bytes (records and their
    /// pre-encoded wire form, estimated per entry).
    pub memory_bytes: usize,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    /// Upper bound for caching NXDOMAIN/NODATA (RFC 2308 takes the SOA minimum).
    pub negative_max_ttl: Duration,
    /// How long past expiry an answer may still be served when every upstream
    /// fails (RFC 8767 suggests one to three days).
    pub serve_stale_for: Duration,
    /// RFC 8767 client response timer: how long a query with a stale answer
    /// in hand waits for upstream before it is answered stale (the refresh
    /// goes on in the background).
    pub stale_answer_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Queries per second per client address; `None` turns the limit off.
    pub queries_per_second: Option<u32>,
    pub burst: u32,
    pub exempt_loopback: bool,
    /// IPv6 clients are counted by this prefix, not by full address: a device
    /// can take any address in its /64 (privacy addresses), so a per-address
    /// limit is no limit. IPv4 clients are counted by full address.
    pub ipv6_prefix: u8,
}

/// A configuration error, already worded for the person who must fix it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.source_name, line, self.message),
            None => write!(f, "{}: {}", self.source_name, self.message),
        }
    }
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            source_name: path.display().to_string(),
            line: None,
            message: format!("cannot read the config file ({error}); check the path and its permissions"),
        })?;
        let name = path.display().to_string();
        let mut config = match sync::load_secondary(&text, &name, None)? {
            Some(config) => config,
            None => Config::parse(&text, &name)?,
        };
        config.file = Some(path.to_path_buf());
        Ok(config)
    }

    /// The embedded default: demo networks on loopback, no root needed.
    pub fn embedded_default() -> Config {
        Config::parse(DEFAULT_CONFIG, "embedded default")
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    /// Parses and validates TOML text; `source_name` is used in messages.
    pub fn parse(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        compile::compile(text, source_name)
    }

    /// The group a network belongs to.
    pub fn group(&self, name: &str) -> Option<&GroupPolicy> {
        self.groups.get(name)
    }

    /// Renders the effective configuration as TOML, defaults filled in.
    pub fn to_toml(&self) -> String {
        render::render(self)
    }
}
