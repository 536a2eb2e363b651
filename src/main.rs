//! The `hedgerow` command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hickory_proto::rr::{LowerName, Name, RecordType};

use hedgerow::config::Config;
use hedgerow::dns::{Explanation, Flow, Pipeline, Question, Requester, Stage};

#[derive(Parser)]
#[command(name = "hedgerow", version, about = "A DNS filtering resolver for small schools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DNS server (on the embedded default config when no --config is given).
    Serve {
        /// Config file (default: the embedded demo config).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Show the running server: pid, uptime, addresses, lists, upstream, log.
    /// Exits 1 when no server is running on the config's data_dir.
    Status {
        /// Config file (default: the embedded demo config).
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
        /// Config file (default: the embedded demo config); only its data_dir
        /// is read here: the server reads the file it was started with.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Build, download or reload the blocklists.
    Lists {
        #[command(subcommand)]
        action: ListsAction,
        /// Config file (default: the embedded demo config).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Read the query log: recent rows, or a search.
    Log {
        #[command(subcommand)]
        action: LogAction,
        /// Config file (default: the embedded demo config).
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
        /// Config file (default: the embedded demo config).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Output of list and show: table (default), json (one object a line) or csv.
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
        /// Config file (default: the embedded demo config).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ListsAction {
    /// Compile the enabled sources into the list file the server loads.
    Compile,
    /// Download URL sources (conditional GET; a failure keeps the last good copy), then compile.
    Update,
    /// The same as `hedgerow reload`: the whole policy (config and lists)
    /// reloads, so the lists never run ahead of the config that names them.
    Reload,
}

#[derive(Subcommand)]
enum LogAction {
    /// The newest rows (with --follow, keep printing new ones).
    Tail {
        #[arg(long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        follow: bool,
    },
    /// Rows matching every given filter, newest first.
    Search {
        /// Client IP or device name.
        #[arg(long)]
        client: Option<String>,
        /// A name; also matches its subdomains.
        #[arg(long)]
        name: Option<String>,
        /// A category id (gambling, social-media, ...).
        #[arg(long)]
        category: Option<String>,
        /// allowed, blocked, safesearch, bypass, refused or error.
        #[arg(long)]
        decision: Option<String>,
        /// UTC time or day: 2026-11-23 or 2026-11-23T08:30:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Paging: rows older than this id (the last id of the previous page).
        #[arg(long)]
        before_id: Option<i64>,
    },
    /// Figures for the annual filtering review, from the daily roll-ups only.
    Review {
        /// First day (UTC), e.g. 2025-09-01.
        #[arg(long)]
        from: String,
        /// Last day (UTC), e.g. 2026-07-31.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Add or update one device.
    Add {
        #[arg(long)]
        ip: Option<IpAddr>,
        #[arg(long)]
        mac: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// The device's group wherever it is on the school's networks (a configured group).
        #[arg(long)]
        group: Option<String>,
    },
    /// Import devices from a CSV file with a header: ip,mac,name,owner,group.
    /// Good rows are saved; bad rows are reported by line and the exit is 1.
    ImportCsv { file: PathBuf },
    /// Import a DHCP leases file (dnsmasq or ISC dhcpd).
    ImportLeases {
        file: PathBuf,
        /// dnsmasq or isc.
        #[arg(long, default_value = "dnsmasq")]
        leases_format: hedgerow::config::LeasesFormat,
    },
    /// Every device, by name.
    List,
    /// The devices a name, IP or MAC names, with the network and group they get.
    Show {
        /// Device name (case-insensitive), IP address or MAC.
        device: String,
    },
    /// Remove the device a name, IP or MAC names (a shared name is refused).
    Remove {
        /// Device name (case-insensitive), IP address or MAC.
        device: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusFormat {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Serve { .. }));
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hedgerow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(serving: bool) {
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

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config: config_path } => {
            let mut config = load_config(config_path.as_ref())?;
            // Compiles run in a child process (see `lists::sources::Compiler`).
            if let Ok(program) = std::env::current_exe() {
                let mut args: Vec<std::ffi::OsString> = vec!["lists".into(), "compile".into()];
                if let Some(path) = &config_path {
                    args.extend(["--config".into(), std::path::absolute(path)?.into_os_string()]);
                }
                config.lists.compiler = hedgerow::lists::sources::Compiler::Child { program, args };
            }
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async {
                let running = hedgerow::serve::start(&config).await?;
                let pipeline = running.pipeline.clone();
                tokio::select! {
                    result = running.run() => result.context("the DNS server stopped")?,
                    _ = shutdown_signal() => tracing::info!("shutting down"),
                }
                // Write what the query log still holds before exiting.
                if let Some(log) = pipeline.log() {
                    log.flush();
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                // Everything `serve` would load, not only the file itself.
                let lists = hedgerow::serve::check_lists(&config);
                for note in &lists.notes {
                    eprintln!("note: {note}");
                }
                for error in &lists.errors {
                    eprintln!("{error}");
                }
                if !lists.errors.is_empty() {
                    eprintln!(
                        "{}: configuration is NOT valid ({} problem(s) above)",
                        file.display(),
                        lists.errors.len()
                    );
                    return Ok(ExitCode::from(2));
                }
                print!("{}", config.to_toml());
                eprintln!("{}: configuration is valid ({} list sources enabled)", file.display(), lists.sources);
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{error}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Status { config, format } => {
            let config = load_config(config.as_ref())?;
            status(&config, format)
        }
        Command::Reload { config } | Command::Lists { action: ListsAction::Reload, config } => reload(config.as_ref()),
        Command::Lists { action, config } => {
            let config = load_config(config.as_ref())?;
            lists(&config, action)
        }
        Command::Log { action, config, format } => {
            let config = load_config(config.as_ref())?;
            log(&config, action, format)
        }
        Command::Devices { action, config, format } => {
            let config = load_config(config.as_ref())?;
            devices(&config, action, format)
        }
        Command::Check { name, client, group, device, record_type, config } => {
            let config = load_config(config.as_ref())?;
            let asker = match (client, group, device) {
                (Some(client), _, _) => Asker::Client(client),
                (_, Some(group), _) => Asker::Group(group),
                (_, _, Some(device)) => Asker::Device(device),
                (None, None, None) => Asker::Group("pupil".into()),
            };
            check(&config, &name, asker, &record_type)
        }
    }
}

/// Who `hedgerow check` asks as.
enum Asker {
    Client(IpAddr),
    Group(String),
    Device(String),
}

fn check(config: &Config, name: &str, asker: Asker, record_type: &str) -> anyhow::Result<ExitCode> {
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
    let pipeline = Pipeline::new(config, lists, safesearch, None)?;
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

fn lists(config: &Config, action: ListsAction) -> anyhow::Result<ExitCode> {
    use hedgerow::download;
    use hedgerow::lists::{load, sources};
    match action {
        ListsAction::Compile | ListsAction::Update => {
            // The same folder `serve` uses (the built-in lists when the
            // default folder is absent); a mistyped [lists] dir is an error.
            let settings = hedgerow::serve::list_settings(config)?;
            let mut downloads_failed = 0;
            if matches!(action, ListsAction::Update) {
                let declared = sources::load_sources(&settings)?;
                let downloads = load::downloads_dir(&config.data_dir);
                let total =
                    declared.iter().filter(|s| s.enabled && matches!(s.location, sources::Location::Url(_))).count();
                let mut done = 0;
                let outcomes =
                    download::update_all_with(&declared, &downloads, &config.downloads, |source, outcome| {
                        let id = &source.id;
                        match outcome {
                            None => {
                                done += 1;
                                let url = match &source.location {
                                    sources::Location::Url(url) => url.as_str(),
                                    sources::Location::Path(_) => "",
                                };
                                eprintln!("[{done}/{total}] {id}: downloading {url} ...");
                            }
                            Some(download::FetchOutcome::Updated { names, bad_lines }) => {
                                eprintln!("[{done}/{total}] {id}: downloaded, {names} names, {bad_lines} bad lines")
                            }
                            Some(download::FetchOutcome::NotModified) => {
                                eprintln!("[{done}/{total}] {id}: not modified")
                            }
                            Some(download::FetchOutcome::Failed { reason }) => {
                                eprintln!("[{done}/{total}] {id}: FAILED: {reason}")
                            }
                        }
                    });
                downloads_failed = outcomes
                    .iter()
                    .filter(|(_, outcome)| matches!(outcome, download::FetchOutcome::Failed { .. }))
                    .count();
                if total == 0 {
                    eprintln!("no enabled list source is a download; compiling the local ones");
                }
            }
            std::fs::create_dir_all(&config.data_dir)?;
            let prepared = download::rebuild(&settings, &config.data_dir)?;
            if let Some(why) = &prepared.stale {
                eprintln!("hedgerow: compile failed, the last good lists stay: {why}");
                return Ok(ExitCode::FAILURE);
            }
            let health = |id: &str| prepared.health.sources.iter().find(|h| h.id == id);
            if let Some(report) = &prepared.report {
                for source in &report.sources {
                    let status = match (health(&source.id), &source.error) {
                        (_, Some(error)) => format!("FAILED: {error}"),
                        (Some(h), None) if h.state != hedgerow::lists::health::SourceState::Ok => {
                            "FAILED: serving its last good copy (see below)".to_string()
                        }
                        _ => "ok".to_string(),
                    };
                    println!(
                        "{:32} {:>9} names {:>6} exceptions {:>6} bad lines  {status}",
                        source.id, source.names, source.exceptions, source.bad_lines
                    );
                    for (line, text, why) in &source.bad_examples {
                        println!("    line {line}: {text:?}: {why}");
                    }
                }
                println!(
                    "{} names in {} ({} bytes) in {} ms",
                    report.names,
                    prepared.path.display(),
                    report.file_bytes,
                    report.elapsed_ms
                );
            }
            let problems: Vec<_> = prepared.health.problems().collect();
            for source in &problems {
                let what = match source.state {
                    hedgerow::lists::health::SourceState::Degraded => "serving its last good copy",
                    _ => "NO good copy, it blocks nothing",
                };
                eprintln!(
                    "hedgerow: list source `{}` failed ({what}): {}",
                    source.id,
                    source.reason.as_deref().unwrap_or("?")
                );
            }
            if downloads_failed > 0 || !problems.is_empty() {
                eprintln!(
                    "hedgerow: the lists were written, but {} source(s) failed{}; fix them and run this again",
                    problems.len().max(downloads_failed),
                    if downloads_failed > 0 { format!(" ({downloads_failed} download(s))") } else { String::new() }
                );
                return Ok(ExitCode::from(load::EXIT_DEGRADED as u8));
            }
            Ok(ExitCode::SUCCESS)
        }
        ListsAction::Reload => reload_on(&config.data_dir),
    }
}

/// `hedgerow reload` and `hedgerow lists reload`. The server reads the file
/// it was started with; the config given here only says where its data_dir
/// is, so a config that no longer validates still reaches the server, which
/// refuses it and says why (a file whose data_dir cannot be found at all is
/// refused here, with the same file:line error).
fn reload(path: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let error = match load_config(path) {
        Ok(config) => return reload_on(&config.data_dir),
        Err(error) => error,
    };
    let refused = || {
        eprintln!("{error:#}");
        eprintln!("hedgerow: reload refused, the running server was not asked: the policy in force stays");
        Ok(ExitCode::from(2))
    };
    match path.and_then(|path| data_dir_written_in(path)) {
        // No server there to say why: say it here.
        Some(data_dir) => reload_on(&data_dir).or_else(|_| refused()),
        None => refused(),
    }
}

/// The `data_dir` a config file that does not validate still names: its
/// top-level `data_dir = "..."` line, or the default when the top level
/// (before the first table) has none and reads as TOML.
fn data_dir_written_in(path: &std::path::Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let top: Vec<&str> = text.lines().take_while(|line| !line.trim_start().starts_with('[')).collect();
    for line in &top {
        if line.trim_start().starts_with("data_dir")
            && let Ok(table) = line.parse::<toml::Table>()
        {
            return table.get("data_dir")?.as_str().map(PathBuf::from);
        }
    }
    top.join("\n").parse::<toml::Table>().ok().map(|_| Config::embedded_default().data_dir)
}

fn reload_on(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    use hedgerow::control::{ControlError, Request, request};
    // Compiling big lists can take minutes on a small machine.
    let reply = match request(data_dir, Request::Reload, std::time::Duration::from_secs(600)) {
        Ok(reply) => reply,
        Err(ControlError::Failed(why)) => {
            eprintln!("hedgerow: reload refused: {why}");
            return Ok(ExitCode::from(2));
        }
        Err(error) => return Err(error.into()),
    };
    let report = reply.reload.unwrap_or_default();
    println!(
        "reloaded {}: {} listed names; {} devices with a group of their own",
        report.config, report.listed_names, report.devices.applied
    );
    for why in &report.devices.skipped {
        eprintln!("  device table: {why}");
    }
    for what in &report.restart_needed {
        println!("restart to apply: {what} (the running server keeps the old value)");
    }
    Ok(ExitCode::SUCCESS)
}

fn status(config: &Config, format: StatusFormat) -> anyhow::Result<ExitCode> {
    use hedgerow::control::{Request, request};
    let reply = request(&config.data_dir, Request::Status, std::time::Duration::from_secs(10))?;
    let status = reply.status.context("the server's reply carried no status")?;
    match format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
        StatusFormat::Table => {
            let addresses =
                |addrs: &[std::net::SocketAddr]| addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            println!("running:        yes (pid {}, hedgerow {})", status.pid, status.version);
            println!("config:         {}", status.config);
            println!("data_dir:       {}", status.data_dir.display());
            println!("started:        {} (up {} s)", status.started, status.uptime_seconds);
            println!("udp:            {}", addresses(&status.udp));
            println!("tcp:            {}", addresses(&status.tcp));
            println!("listed names:   {}", status.listed_names);
            println!("upstream:       {}", status.upstream);
            println!("query log:      {}", if status.log_enabled { "on" } else { "off" });
            println!("database:       {}", status.database.display());
            println!("device groups:  {}", status.device_groups);
            let lists = &status.lists;
            let problems: Vec<_> = lists.problems().collect();
            if lists.is_healthy() {
                println!("lists:          {} sources, all in force", lists.sources.len());
            } else {
                println!(
                    "lists:          {} sources, {} NOT in force as configured",
                    lists.sources.len(),
                    problems.len()
                );
            }
            if let Some(error) = &lists.error {
                println!("  {error}");
            }
            for source in problems {
                let state = match source.state {
                    hedgerow::lists::health::SourceState::Degraded => "degraded, serving its last good copy",
                    _ => "missing, blocking nothing",
                };
                println!("  {}: {state}: {}", source.id, source.reason.as_deref().unwrap_or("no reason recorded"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn log(config: &Config, action: LogAction, format: OutputFormat) -> anyhow::Result<ExitCode> {
    use hedgerow::store::{self, Search};
    let database = &config.log.database;
    let time = |text: Option<String>| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            store::time::parse_utc(&t)
                .or_else(|| store::time::parse_day(&t))
                .with_context(|| format!("{t:?} is not a UTC time; write 2026-11-23 or 2026-11-23T08:30:00Z"))
        })
        .transpose()
    };
    match action {
        LogAction::Tail { lines, follow } => {
            let newest = store::search::search(database, &Search { limit: lines, ..Search::default() })?;
            let mut last_id = newest.first().map_or(0, |row| row.id);
            print_rows(newest.into_iter().rev().collect(), format, true);
            while follow {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let rows = store::search::tail(database, last_id, 1_000)?;
                if let Some(row) = rows.last() {
                    last_id = row.id;
                }
                print_rows(rows, format, false);
            }
        }
        LogAction::Search { client, name, category, decision, since, until, limit, before_id } => {
            let category = category.map(|category| category.trim().to_ascii_lowercase());
            if let Some(category) = &category
                && hedgerow::policy::category::index_of(category).is_none()
            {
                let ids = hedgerow::policy::category::known_ids();
                anyhow::bail!("--category {category:?} is not a category; the categories are: {}", ids.join(", "));
            }
            let decision = decision.map(|decision| decision.trim().to_ascii_lowercase());
            if let Some(decision) = &decision
                && !store::record::DECISIONS.contains(&decision.as_str())
            {
                anyhow::bail!(
                    "--decision {decision:?} is not a decision; the decisions are: {}",
                    store::record::DECISIONS.join(", ")
                );
            }
            let query = Search {
                client,
                name,
                category,
                decision,
                since_ms: time(since)?,
                until_ms: time(until)?,
                limit,
                before_id,
            };
            let rows = store::search::search(database, &query)?;
            if let (OutputFormat::Table, Some(last)) = (format, rows.last()) {
                eprintln!("(next page: --before-id {})", last.id);
            }
            print_rows(rows, format, true);
        }
        LogAction::Review { from, to } => {
            let figures = store::retention::annual_review(database, &from, &to)?;
            print_review(&figures, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The annual review figures: a readable report, JSON, or CSV rows of
/// `section,key,decision,count`.
fn print_review(figures: &hedgerow::store::retention::AnnualFigures, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(figures)?),
        OutputFormat::Csv => {
            let row = |cells: [&str; 4]| println!("{}", hedgerow::store::csv::format_record(&cells.map(String::from)));
            row(["section", "key", "decision", "count"]);
            row(["period", &figures.from_day, "", ""]);
            row(["period", &figures.to_day, "", ""]);
            row(["days_rolled_up", "", "", &figures.days_rolled_up.to_string()]);
            for total in &figures.totals {
                row(["total", "", &total.decision, &total.count.to_string()]);
            }
            for month in &figures.by_month {
                row(["month", &month.month, &month.decision, &month.count.to_string()]);
            }
            for group in &figures.by_group {
                row(["group", &group.group, &group.decision, &group.count.to_string()]);
            }
            for category in &figures.by_category {
                row(["category", &category.category, &category.decision, &category.count.to_string()]);
            }
            for name in &figures.top_blocked {
                row(["top_blocked", &name.name, "blocked", &name.count.to_string()]);
            }
            row(["devices_per_day_average", "", "", &format!("{:.1}", figures.devices_per_day_average)]);
            row(["devices_busiest_day", "", "", &figures.devices_busiest_day.to_string()]);
            row(["registered_devices", "", "", &figures.registered_devices.to_string()]);
        }
        OutputFormat::Table => {
            println!(
                "Filtering review {} to {} ({} days with records)",
                figures.from_day, figures.to_day, figures.days_rolled_up
            );
            println!();
            println!("{:<12} {:>12}", "decision", "queries");
            for total in &figures.totals {
                println!("{:<12} {:>12}", total.decision, total.count);
            }
            let table = |title: &str, rows: Vec<(&str, &str, u64)>| {
                if rows.is_empty() {
                    return;
                }
                println!();
                println!("{:<32} {:<12} {:>12}", title, "decision", "queries");
                for (key, decision, count) in rows {
                    println!("{:<32} {:<12} {:>12}", if key.is_empty() { "(none)" } else { key }, decision, count);
                }
            };
            table("month", figures.by_month.iter().map(|m| (m.month.as_str(), m.decision.as_str(), m.count)).collect());
            table("group", figures.by_group.iter().map(|g| (g.group.as_str(), g.decision.as_str(), g.count)).collect());
            table(
                "category",
                figures.by_category.iter().map(|c| (c.category.as_str(), c.decision.as_str(), c.count)).collect(),
            );
            if !figures.top_blocked.is_empty() {
                println!();
                println!("{:<45} {:>12}", "most blocked name", "queries");
                for name in &figures.top_blocked {
                    println!("{:<45} {:>12}", name.name, name.count);
                }
            }
            println!();
            println!("devices a day (average): {:.1}", figures.devices_per_day_average);
            println!("devices on the busiest day: {}", figures.devices_busiest_day);
            println!("registered devices now: {}", figures.registered_devices);
        }
    }
    Ok(())
}

fn print_rows(rows: Vec<hedgerow::store::LogRow>, format: OutputFormat, header: bool) {
    use hedgerow::store::search::ExportRow;
    match format {
        OutputFormat::Json => {
            for row in rows {
                println!("{}", serde_json::to_string(&ExportRow::from_row(row)).unwrap_or_default());
            }
        }
        OutputFormat::Csv => {
            if header {
                println!("{}", ExportRow::FIELDS.join(","));
            }
            for row in rows {
                println!("{}", hedgerow::store::csv::format_record(&ExportRow::from_row(row).cells()));
            }
        }
        OutputFormat::Table => {
            if header {
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {:<11} {}",
                    "time (UTC)", "client", "device", "group", "name", "type", "decision", "stage", "reason"
                );
            }
            for row in rows {
                let why = Explanation::of_row(&row).reason_text();
                let row = ExportRow::from_row(row);
                let device = match (&row.device, &row.owner) {
                    (Some(device), Some(owner)) => format!("{device} ({owner})"),
                    (Some(device), None) => device.clone(),
                    _ => String::new(),
                };
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {:<11} {}",
                    row.time,
                    row.client,
                    device,
                    row.group.unwrap_or_default(),
                    row.name,
                    row.record_type,
                    row.decision,
                    row.stage.unwrap_or_default(),
                    why
                );
            }
        }
    }
}

fn devices(config: &Config, action: DevicesAction, format: OutputFormat) -> anyhow::Result<ExitCode> {
    use hedgerow::store::{self, Device};
    let database = &config.log.database;
    std::fs::create_dir_all(&config.data_dir)?;
    let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
    match action {
        DevicesAction::Add { ip, mac, name, owner, group } => {
            anyhow::ensure!(
                ip.is_some() || mac.is_some(),
                "give --ip or --mac (or both) so the device can be recognised"
            );
            if let Some(group) = &group {
                store::devices::check_group(group, &groups)
                    .map_err(|why| anyhow::anyhow!("--group: {why} (in {})", config.source))?;
            }
            store::devices::upsert_device(database, &Device { ip, mac, name, owner, group, source: "manual".into() })?;
            println!("device saved");
        }
        DevicesAction::ImportCsv { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = store::devices::import_csv_for_groups(database, &text, &groups)?;
            println!("{} devices imported", report.imported);
            if !report.ignored_columns.is_empty() {
                println!("  columns not read: {}", report.ignored_columns.join(", "));
            }
            if !report.errors.is_empty() {
                for error in &report.errors {
                    eprintln!("{}: {error}", file.display());
                }
                eprintln!(
                    "hedgerow: {} rows of {} were not imported (the others were); mend them and import the file again",
                    report.errors.len(),
                    file.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        }
        DevicesAction::ImportLeases { file, leases_format } => {
            let count =
                hedgerow::serve::import_leases_file(database, &file, leases_format).map_err(anyhow::Error::msg)?;
            println!("{count} leases read");
        }
        DevicesAction::List => {
            // No database yet is an empty table, not an error.
            let devices = match store::devices::list_devices(database) {
                Err(store::StoreError::Missing { .. }) => Vec::new(),
                found => found?,
            };
            print_devices(config, &devices, format);
        }
        DevicesAction::Show { device } => {
            let devices = match store::devices::find_devices(database, &device) {
                Err(store::StoreError::Missing { .. }) => Vec::new(),
                found => found?,
            };
            if devices.is_empty() {
                eprintln!(
                    "hedgerow: no device {device:?} in {} (give a name, IP or MAC; `hedgerow devices list` shows them)",
                    database.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            print_devices(config, &devices, format);
        }
        DevicesAction::Remove { device } => match store::devices::remove_named_device(database, &device)? {
            Some(removed) => println!("removed device {:?}", removed.name),
            None => {
                eprintln!(
                    "hedgerow: no device {device:?} in {} (give a name, IP or MAC; `hedgerow devices list` shows them)",
                    database.display()
                );
                return Ok(ExitCode::FAILURE);
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// A device as `devices list` and `show` print it: its table entry, plus
/// the network its address is in and the group it gets there.
#[derive(serde::Serialize)]
struct DeviceOut<'a> {
    name: &'a str,
    ip: Option<String>,
    mac: Option<&'a str>,
    owner: Option<&'a str>,
    group: Option<&'a str>,
    source: &'a str,
    /// The configured network the address is in (none: refused).
    network: Option<String>,
    /// The group its queries get: the device's own, else the network's.
    effective_group: Option<String>,
}

fn print_devices(config: &Config, devices: &[hedgerow::store::Device], format: OutputFormat) {
    let network_of = |ip: IpAddr| {
        let ip = ip.to_canonical();
        config
            .networks
            .iter()
            .flat_map(|network| network.cidrs.iter().map(move |cidr| (cidr, network)))
            .filter(|(cidr, _)| cidr.contains(&ip))
            .max_by_key(|(cidr, _)| cidr.prefix_len())
            .map(|(_, network)| network)
    };
    let rows: Vec<DeviceOut<'_>> = devices
        .iter()
        .map(|device| {
            let network = device.ip.and_then(network_of);
            let effective_group = network.map(|network| device.group.clone().unwrap_or_else(|| network.group.clone()));
            DeviceOut {
                name: &device.name,
                ip: device.ip.map(|ip| ip.to_string()),
                mac: device.mac.as_deref(),
                owner: device.owner.as_deref(),
                group: device.group.as_deref(),
                source: &device.source,
                network: network.map(|network| network.name.clone()),
                effective_group,
            }
        })
        .collect();
    const FIELDS: [&str; 8] = ["name", "ip", "mac", "owner", "group", "source", "network", "effective_group"];
    let cells = |row: &DeviceOut<'_>| {
        [
            row.name.to_string(),
            row.ip.clone().unwrap_or_default(),
            row.mac.unwrap_or_default().to_string(),
            row.owner.unwrap_or_default().to_string(),
            row.group.unwrap_or_default().to_string(),
            row.source.to_string(),
            row.network.clone().unwrap_or_default(),
            row.effective_group.clone().unwrap_or_default(),
        ]
    };
    match format {
        OutputFormat::Json => {
            for row in &rows {
                println!("{}", serde_json::to_string(row).unwrap_or_default());
            }
        }
        OutputFormat::Csv => {
            println!("{}", FIELDS.join(","));
            for row in &rows {
                println!("{}", hedgerow::store::csv::format_record(&cells(row)));
            }
        }
        OutputFormat::Table => {
            println!(
                "{:<24} {:<16} {:<18} {:<16} {:<8} {:<7} {:<14} {}",
                "name", "ip", "mac", "owner", "group", "source", "network", "gets group"
            );
            for row in &rows {
                let [name, ip, mac, owner, group, source, network, effective] = cells(row);
                let network =
                    if row.ip.is_some() && network.is_empty() { "(none: refused)".to_string() } else { network };
                println!("{name:<24} {ip:<16} {mac:<18} {owner:<16} {group:<8} {source:<7} {network:<14} {effective}");
            }
            if rows.is_empty() {
                println!("(no devices)");
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
}
