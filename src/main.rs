//! The `hedgerow` command line.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hickory_proto::rr::{LowerName, Name, RecordType};

use hedgerow::config::Config;
use hedgerow::dns::{Flow, Pipeline, Question, Requester};

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
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    CheckConfig { file: PathBuf },
    /// Build, download or reload the blocklists.
    Lists {
        #[command(subcommand)]
        action: ListsAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Read the query log: recent rows, or a search.
    Log {
        #[command(subcommand)]
        action: LogAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Output: table (default), json (one object a line) or csv.
        #[arg(long, global = true, default_value = "table")]
        format: OutputFormat,
    },
    /// The device table that names clients in the log.
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Show the decision the server would take for a name, and why, without asking upstream.
    Check {
        name: String,
        /// Ask as this client address (its network decides the group).
        #[arg(long, conflicts_with = "group")]
        client: Option<IpAddr>,
        /// Ask as a member of this group.
        #[arg(long)]
        group: Option<String>,
        /// Record type.
        #[arg(long = "type", default_value = "A")]
        record_type: String,
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
    /// Tell the running server to rebuild and swap in its lists (sends SIGHUP).
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
        #[arg(long)]
        group: Option<String>,
    },
    /// Import devices from a CSV file with a header: ip,mac,name,owner,group.
    ImportCsv { file: PathBuf },
    /// Import a DHCP leases file (dnsmasq or ISC dhcpd).
    ImportLeases {
        file: PathBuf,
        /// dnsmasq or isc.
        #[arg(long, default_value = "dnsmasq")]
        leases_format: hedgerow::config::LeasesFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
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
        Command::Lists { action, config } => {
            let config = load_config(config.as_ref())?;
            lists(&config, action)
        }
        Command::Log { action, config, format } => {
            let config = load_config(config.as_ref())?;
            log(&config, action, format)
        }
        Command::Devices { action, config } => {
            let config = load_config(config.as_ref())?;
            devices(&config, action)
        }
        Command::Check { name, client, group, record_type, config } => {
            let config = load_config(config.as_ref())?;
            check(&config, &name, client, group.as_deref(), &record_type)
        }
    }
}

fn check(
    config: &Config,
    name: &str,
    client: Option<IpAddr>,
    group: Option<&str>,
    record_type: &str,
) -> anyhow::Result<ExitCode> {
    let record_type: RecordType = record_type
        .to_ascii_uppercase()
        .parse()
        .with_context(|| format!("{record_type:?} is not a DNS record type (try A, AAAA, HTTPS, TXT)"))?;
    let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    let name = Name::from_utf8(&fqdn).with_context(|| format!("{name:?} is not a valid domain name"))?;
    let question = Question { name: LowerName::from(name), record_type, dnssec_ok: false };
    // `check` needs the runtime only because the upstream is built; nothing is sent.
    let runtime = tokio::runtime::Runtime::new()?;
    let _guard = runtime.enter();
    let (lists, safesearch) = hedgerow::serve::load_lists(config)?;
    let pipeline = Pipeline::new(config, lists, safesearch, None)?;
    let requester = match (client, group) {
        (_, Some(group)) => Requester::Group(group),
        (Some(client), None) => Requester::Source(client),
        (None, None) => Requester::Group("pupil"),
    };
    println!("query:    {} {}", question.name, question.record_type);
    match &requester {
        Requester::Source(ip) => println!("asked by: client {ip}"),
        Requester::Group(group) => println!("asked by: a member of group {group}"),
    }
    match pipeline.decide(requester, &question, false) {
        Flow::Final(answer) => {
            let decision = &answer.decision;
            println!("decision: {}", decision.kind.as_str());
            println!("stage:    {}", decision.stage.as_str());
            print_identity(decision.network.as_deref(), decision.group.as_deref());
            if let Some(category) = &decision.category {
                println!("category: {category}");
            }
            if let Some(list) = &decision.list {
                println!("list:     {list}");
            }
            let records: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
            if records.is_empty() {
                println!("answer:   {}", answer.response_code);
            } else {
                println!("answer:   {} {}", answer.response_code, records.join(", "));
            }
            println!("reason:   {}", decision.reason);
        }
        Flow::Resolve(pending) => {
            let client = &pending.client;
            if let Some(rewrite) = &pending.rewrite {
                println!("decision: {}", rewrite.decision.kind.as_str());
                println!("stage:    {}", rewrite.decision.stage.as_str());
                print_identity(Some(&client.network), Some(&client.group));
                println!(
                    "answer:   CNAME {} followed by its {} records ({}, not sent by `check`)",
                    rewrite.target,
                    question.record_type,
                    pipeline.upstream_description()
                );
                println!("reason:   {}", rewrite.decision.reason);
                return Ok(ExitCode::SUCCESS);
            }
            println!("decision: allowed");
            println!("stage:    upstream");
            print_identity(Some(&client.network), Some(&client.group));
            println!("answer:   {} (not sent by `check`)", pipeline.upstream_description());
            match &pending.note {
                Some(note) => println!("reason:   {note}"),
                None => println!("reason:   no policy stage stops this name for group {}", client.group),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lists(config: &Config, action: ListsAction) -> anyhow::Result<ExitCode> {
    use hedgerow::lists::{fetch, load, sources};
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
                let outcomes = fetch::update_all_with(&declared, &downloads, &config.downloads, |source, outcome| {
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
                        Some(fetch::FetchOutcome::Updated { names, bad_lines }) => {
                            eprintln!("[{done}/{total}] {id}: downloaded, {names} names, {bad_lines} bad lines")
                        }
                        Some(fetch::FetchOutcome::NotModified) => eprintln!("[{done}/{total}] {id}: not modified"),
                        Some(fetch::FetchOutcome::Failed { reason }) => {
                            eprintln!("[{done}/{total}] {id}: FAILED: {reason}")
                        }
                    }
                });
                downloads_failed = outcomes
                    .iter()
                    .filter(|(_, outcome)| matches!(outcome, fetch::FetchOutcome::Failed { .. }))
                    .count();
                if total == 0 {
                    eprintln!("no enabled list source is a download; compiling the local ones");
                }
            }
            std::fs::create_dir_all(&config.data_dir)?;
            let prepared = load::rebuild(&settings, &config.data_dir)?;
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
        ListsAction::Reload => {
            let pid_file = hedgerow::serve::pid_file(config);
            let pid = std::fs::read_to_string(&pid_file).with_context(|| {
                format!("cannot read {} (is hedgerow serve running with this config?)", pid_file.display())
            })?;
            let status = std::process::Command::new("kill").args(["-HUP", pid.trim()]).status()?;
            anyhow::ensure!(
                status.success(),
                "could not signal process {} (stale pid file {}?)",
                pid.trim(),
                pid_file.display()
            );
            println!("asked hedgerow (pid {}) to reload its lists", pid.trim());
            Ok(ExitCode::SUCCESS)
        }
    }
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
            println!("{}", serde_json::to_string_pretty(&figures)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_rows(rows: Vec<hedgerow::store::LogRow>, format: OutputFormat, header: bool) {
    match format {
        OutputFormat::Json => {
            for row in rows {
                println!("{}", serde_json::to_string(&row).unwrap_or_default());
            }
        }
        OutputFormat::Csv => {
            if header {
                println!(
                    "id,time,client,device,owner,network,group,name,type,decision,category,list,rcode,upstream_ms,cache_hit"
                );
            }
            for row in rows {
                let cells = [
                    row.id.to_string(),
                    hedgerow::store::time::format_utc(row.time_ms),
                    row.client,
                    row.device.unwrap_or_default(),
                    row.owner.unwrap_or_default(),
                    row.network.unwrap_or_default(),
                    row.group.unwrap_or_default(),
                    row.name,
                    hickory_proto::rr::RecordType::from(row.record_type).to_string(),
                    row.decision,
                    row.category.unwrap_or_default(),
                    row.list.unwrap_or_default(),
                    hickory_proto::op::ResponseCode::from_low(row.response_code as u8).to_str().to_string(),
                    row.upstream_ms.map(|ms| ms.to_string()).unwrap_or_default(),
                    row.cache_hit.to_string(),
                ];
                println!("{}", hedgerow::store::csv::format_record(&cells));
            }
        }
        OutputFormat::Table => {
            if header {
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {}",
                    "time (UTC)", "client", "device", "group", "name", "type", "decision", "category/list"
                );
            }
            for row in rows {
                let device = match (&row.device, &row.owner) {
                    (Some(device), Some(owner)) => format!("{device} ({owner})"),
                    (Some(device), None) => device.clone(),
                    _ => String::new(),
                };
                let why = match (&row.category, &row.list) {
                    (Some(category), Some(list)) => format!("{category} / {list}"),
                    (Some(category), None) => category.clone(),
                    _ => String::new(),
                };
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<40} {:<6} {:<10} {}",
                    hedgerow::store::time::format_utc(row.time_ms),
                    row.client,
                    device,
                    row.group.unwrap_or_default(),
                    row.name,
                    hickory_proto::rr::RecordType::from(row.record_type).to_string(),
                    row.decision,
                    why
                );
            }
        }
    }
}

fn devices(config: &Config, action: DevicesAction) -> anyhow::Result<ExitCode> {
    use hedgerow::store::{self, Device};
    let database = &config.log.database;
    std::fs::create_dir_all(&config.data_dir)?;
    match action {
        DevicesAction::Add { ip, mac, name, owner, group } => {
            anyhow::ensure!(
                ip.is_some() || mac.is_some(),
                "give --ip or --mac (or both) so the device can be recognised"
            );
            store::devices::upsert_device(database, &Device { ip, mac, name, owner, group, source: "manual".into() })?;
            println!("device saved");
        }
        DevicesAction::ImportCsv { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = store::devices::import_csv(database, &text)?;
            println!("{} devices imported", report.imported);
            for error in &report.errors {
                println!("  {}: {error}", file.display());
            }
            if !report.ignored_columns.is_empty() {
                println!("  columns not read: {}", report.ignored_columns.join(", "));
            }
        }
        DevicesAction::ImportLeases { file, leases_format } => {
            let count =
                hedgerow::serve::import_leases_file(database, &file, leases_format).map_err(anyhow::Error::msg)?;
            println!("{count} leases read");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_identity(network: Option<&str>, group: Option<&str>) {
    if let Some(network) = network {
        println!("network:  {network}");
    }
    if let Some(group) = group {
        println!("group:    {group}");
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
