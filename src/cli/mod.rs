//! The `hedgerow` commands, one file each: argument handling, a call into
//! the library, and printing what it returns (the layout of that output is
//! in [`hedgerow::present`], shared with the dashboard to come).

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use clap::Subcommand;

use hedgerow::config::Config;

pub mod backup;
pub mod check;
pub mod check_config;
pub mod devices;
pub mod lists;
pub mod log;
pub mod reload;
pub mod selftest;
pub mod serve;
pub mod status;
pub mod synthesize;
pub mod user;

pub use devices::DevicesAction;
pub use lists::ListsAction;
pub use log::LogAction;
pub use user::UserAction;

#[derive(Subcommand)]
pub enum Command {
    /// Run the DNS server. Without --config it runs on ./data/hedgerow.toml,
    /// written from the embedded demo config first when missing (the file
    /// the dashboard's policy changes are written into).
    Serve {
        /// Config file (default: the embedded demo config), kept as ./data/hedgerow.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Show the running server: pid, uptime, addresses, lists, upstream, log.
    /// Exits 1 when no server is running on the config's data_dir.
    Status {
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output: table (default) or json.
        #[arg(long, default_value = "table")]
        format: StatusFormat,
    },
    /// Tell the running server (through its control socket in data_dir) to
    /// read its configuration file and lists again, check them, and swap the
    /// whole policy in at once; then re-read the device table. A config or
    /// lists it cannot use change nothing: exit 2 with the reason (file:line).
    /// Settings only a restart applies are named. Exits 1 when no server runs
    /// on that data_dir.
    Reload {
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists; only its data_dir
        /// is read here: the server reads the file it was started with.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Ask the running server to run its built-in self-test: as each group,
    /// over a real socket to its own listener, the test names of each
    /// category (SWGfL's testfiltering.com names among them), SafeSearch and
    /// bypass names, each compared with what the policy says; the run is
    /// stored and a failure raises an alert. Prints a table per group. Exits
    /// 0 when all passed, 1 on any failure, 2 when the server could not be asked.
    Selftest {
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists; only its data_dir
        /// is read here.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the run as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Build, download or reload the blocklists.
    Lists {
        #[command(subcommand)]
        action: ListsAction,
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Read the query log: recent rows, or a search.
    Log {
        #[command(subcommand)]
        action: LogAction,
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Output: table (default), json (one object a line) or csv.
        #[arg(long, global = true, default_value = "table")]
        format: OutputFormat,
    },
    /// The device table: names clients in the log; a device's group decides its policy.
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Output of list and show: table (default), json (one object a line) or csv.
        #[arg(long, global = true, default_value = "table")]
        format: OutputFormat,
    },
    /// Dashboard accounts: add users with roles (admin, dsl, governor), set
    /// passwords, disable, enable, change roles. Each change is written to
    /// the login audit.
    User {
        #[command(subcommand)]
        action: UserAction,
        /// Config file (default: the embedded demo config).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Output of list: table (default), json (one object a line) or csv.
        #[arg(long, global = true, default_value = "table")]
        format: OutputFormat,
    },
    /// Show the decision the server would take for a name, and why, without asking upstream.
    Check {
        name: String,
        /// Ask as this client address (its network decides the group, unless
        /// the device table gives the device at that address a group).
        #[arg(long, conflicts_with_all = ["group", "device"])]
        client: Option<IpAddr>,
        /// Ask as a member of this group.
        #[arg(long, conflicts_with = "device")]
        group: Option<String>,
        /// Ask as this device of the device table (name, IP or MAC): its
        /// address's network and its group.
        #[arg(long)]
        device: Option<String>,
        /// Record type.
        #[arg(long = "type", default_value = "A")]
        record_type: String,
        /// Config file (default: the embedded demo config), or ./data/hedgerow.toml when it exists.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a synthetic school's query log (about 2,500 devices, a month of
    /// lookups) into a new database, for benchmarks and development.
    Synthesize(synthesize::SynthesizeArgs),
    /// Write one file (.tar.gz) holding the config file, the lists'
    /// declarations and local lists, the last good downloads and a
    /// consistent copy of the database (taken while the server runs). The
    /// compiled lists are not in it: they are rebuilt at start. Exits 2 when
    /// it cannot be taken; FILE is then not written.
    Backup {
        /// The archive to write (e.g. hedgerow-2026-12-01.tar.gz).
        file: PathBuf,
        /// The server's config file (default: ./data/hedgerow.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Make the key a primary and its secondaries share ([sync] key_file):
    /// 32 random bytes as hex, in a new file readable by its owner only.
    /// Copy the file to each secondary. An existing file is never replaced.
    SyncKey {
        /// Where to write it (e.g. /etc/hedgerow/sync.key).
        file: PathBuf,
    },
    /// Check a backup (its manifest, every file's SHA-256, the database's
    /// integrity, the config with its lists) and restore it into a new
    /// directory DIR: DIR/hedgerow.toml (data_dir = DIR/data, [lists] dir =
    /// DIR/lists), DIR/lists/, DIR/data/. Nothing is touched when a check
    /// fails. Refused when a server runs on DIR's data: stop it first.
    Restore {
        /// An archive `hedgerow backup` wrote.
        file: PathBuf,
        /// The directory to restore into (new, unless --force).
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// DIR exists (a stopped server's): move it aside to
        /// DIR.replaced-<time> and restore in its place.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// Prints a listing (devices, users): JSON lines, CSV under `csv_header`, or
/// a table under `table_header` (`empty` in place of no rows).
pub fn print_rows<R: hedgerow::present::ListRow>(
    rows: &[R],
    format: OutputFormat,
    csv_header: String,
    table_header: String,
    empty: &str,
) {
    match format {
        OutputFormat::Json => rows.iter().for_each(|row| println!("{}", row.json_line())),
        OutputFormat::Csv => {
            println!("{csv_header}");
            rows.iter().for_each(|row| println!("{}", row.csv_line()));
        }
        OutputFormat::Table => {
            println!("{table_header}");
            rows.iter().for_each(|row| println!("{}", row.table_line()));
            if rows.is_empty() {
                println!("{empty}");
            }
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
}

/// Sets up logging to stderr: the server logs at info, other commands only warnings.
pub fn init_logging(serving: bool) {
    // hickory logs every request at INFO and the recursor warns on routine
    // NODATA probes: quiet them unless RUST_LOG asks otherwise. One-shot
    // commands print their own results, so only warnings go to stderr.
    let default = if serving {
        "info,hickory_server=warn,hickory_resolver=error,hickory_net=error,hickory_proto=error"
    } else {
        "warn,hickory_resolver=error,hickory_net=error,hickory_proto=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// The config file `serve` uses when given no `--config` (the embedded
/// default's `data_dir` is `./data`).
pub const DEFAULT_CONFIG_FILE: &str = "./data/hedgerow.toml";

/// The config file at `path`; without one, `./data/hedgerow.toml` when it
/// exists, else the embedded default.
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let default_file = Path::new(DEFAULT_CONFIG_FILE);
    Ok(match path {
        Some(path) => Config::load(path)?,
        None if default_file.is_file() => Config::load(default_file)?,
        None => Config::embedded_default(),
    })
}

/// The file `serve` runs on: `path`, or `./data/hedgerow.toml`, written
/// from the embedded default first when missing, so a running server always
/// has a file to write policy changes into.
pub fn serve_config_file(path: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = path {
        return Ok(path.clone());
    }
    let file = PathBuf::from(DEFAULT_CONFIG_FILE);
    if !file.exists() {
        let folder = file.parent().expect("the default config file has a folder");
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {} for the config file", folder.display()))?;
        hedgerow::files::write_atomically(&file, |out| out.write_all(hedgerow::config::DEFAULT_CONFIG.as_bytes()))
            .with_context(|| format!("cannot write the default config to {}", file.display()))?;
        tracing::info!(file = %file.display(), "wrote the default configuration; policy changes are kept in it");
    }
    Ok(file)
}
