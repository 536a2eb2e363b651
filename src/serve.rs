//! Starting Hedgerow: from a validated [`Config`] to running listeners and
//! the background work (list reloads and updates, upkeep). Used by
//! `hedgerow serve` and by the tests, so the tests exercise exactly what a
//! school runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, LeasesFormat};
use crate::dns::identify::{DeviceGroup, DeviceGroupsReport};
use crate::dns::{DnsServer, Pipeline};
use crate::lists::compiled::CompiledLists;
use crate::lists::{fetch, load, sources};
use crate::policy::SafeSearchMap;
use crate::store::{self, QueryLog};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the upstream resolver: {0}")]
    Upstream(#[from] crate::dns::upstream::UpstreamError),
    #[error("cannot create the data directory {path}: {error} (set data_dir to a writable folder)")]
    DataDir { path: String, error: std::io::Error },
    #[error("{0}")]
    Lists(String),
    #[error("{0}")]
    Policy(String),
    #[error("query log: {0}")]
    Log(String),
    #[error("{0}")]
    Listen(#[from] std::io::Error),
}

/// A running Hedgerow instance.
pub struct Running {
    pub pipeline: Arc<Pipeline>,
    server: DnsServer,
    background: Vec<tokio::task::JoinHandle<()>>,
    config: Arc<Config>,
    /// The control socket; dropped (and its file removed) with the server.
    _control: crate::control::ControlServer,
}

impl Running {
    /// The UDP addresses really bound (port 0 resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.server.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.server.tcp_addrs
    }

    /// Rebuilds the lists from their sources (when they changed) and swaps
    /// them in; on failure the lists in use stay. What SIGHUP does.
    pub async fn reload_lists(&self) -> Result<(), StartError> {
        reload_lists(&self.config, &self.pipeline).await
    }

    /// Serves until the listeners fail or the process is stopped.
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.run().await;
        self.background.iter().for_each(|task| task.abort());
        result
    }

    /// Stops serving and closes the sockets.
    pub async fn stop(self) {
        self.background.iter().for_each(|task| task.abort());
        self.server.stop().await;
    }
}

/// Starts the DNS server described by `config`.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StartError::DataDir { path: config.data_dir.display().to_string(), error })?;
    // First, so a second server on this data_dir is refused before it loads anything.
    let mut control = crate::control::ControlServer::claim(&config.data_dir)
        .map_err(|error| StartError::Listen(std::io::Error::other(error.to_string())))?;
    let config = Arc::new(config.clone());
    let (lists, safesearch) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || load_lists(&config)).await.expect("list loading does not panic")?
    };
    check_overrides(&config, &lists)?;
    let log = if config.log.enabled {
        let log = QueryLog::open(&config.log.database, config.log.settings.clone())
            .map_err(|error| StartError::Log(error.to_string()))?;
        Some(log)
    } else {
        None
    };
    let pipeline = Arc::new(Pipeline::new(&config, lists, safesearch, log)?);
    let server = DnsServer::start(pipeline.clone(), &config).await?;
    let started = (std::time::Instant::now(), crate::time::now_ms());
    refresh_device_groups(&config, &pipeline).await;
    control
        .serve(crate::control::ServerInfo {
            config: config.clone(),
            pipeline: pipeline.clone(),
            udp: server.udp_addrs.clone(),
            tcp: server.tcp_addrs.clone(),
            started: started.0,
            started_unix_ms: started.1,
            reloading: tokio::sync::Mutex::new(()),
        })
        .map_err(|error| StartError::Listen(std::io::Error::other(error.to_string())))?;

    let mut background = vec![tokio::spawn({
        let pipeline = pipeline.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                pipeline.tidy();
            }
        }
    })];
    background.push(tokio::spawn(reload_on_sighup(config.clone(), pipeline.clone())));
    background.push(tokio::spawn(device_groups_on_schedule(config.clone(), pipeline.clone())));
    if config.log.enabled {
        // Roll-ups and retention run on their own thread, hourly.
        let _ = store::retention::spawn_retention(config.log.database.clone(), config.log.settings.retention_days);
        if let Some((file, format)) = config.log.leases.clone() {
            background.push(tokio::spawn(read_leases_on_schedule(config.log.database.clone(), file, format)));
        }
    }
    if let Some(interval) = config.list_update_interval {
        background.push(tokio::spawn(update_on_schedule(config.clone(), pipeline.clone(), interval)));
    }
    tracing::info!(
        udp = ?server.udp_addrs,
        tcp = ?server.tcp_addrs,
        upstream = pipeline.upstream_description(),
        listed_names = pipeline.lists().len(),
        source = %config.source,
        "hedgerow is serving DNS"
    );
    Ok(Running { pipeline, server, background, config, _control: control })
}

/// The SafeSearch map's place in the lists folder.
pub fn safesearch_map_path(config: &Config) -> PathBuf {
    config.lists.dir.join("safesearch").join("rewrites.toml")
}

/// Loads the compiled lists (compiling them first when their sources
/// changed) and the SafeSearch map. A missing lists folder is not fatal (the
/// resolver runs unfiltered and says so); a broken source declaration or map
/// is, since it is configuration.
pub fn load_lists(config: &Config) -> Result<(CompiledLists, SafeSearchMap), StartError> {
    if !config.lists.dir.is_dir() {
        tracing::warn!(
            dir = %config.lists.dir.display(),
            "no lists folder here: serving without blocklists or SafeSearch (set [lists] dir to the folder of source declarations)"
        );
        return Ok((CompiledLists::empty(), SafeSearchMap::default()));
    }
    let safesearch =
        SafeSearchMap::load(&safesearch_map_path(config)).map_err(|error| StartError::Lists(error.to_string()))?;
    if safesearch.is_empty() {
        tracing::warn!(path = %safesearch_map_path(config).display(), "no SafeSearch map: search engines are not rewritten");
    }
    let prepared =
        load::prepare(&config.lists, &config.data_dir).map_err(|error| StartError::Lists(error.to_string()))?;
    if let Some(why) = &prepared.stale {
        tracing::warn!(%why, "building the lists failed; keeping the last good lists");
    }
    if let Some(report) = &prepared.report {
        for source in &report.sources {
            if let Some(error) = &source.error {
                tracing::warn!(list = %source.id, %error, "list source skipped");
            }
            if source.bad_lines > 0 {
                tracing::warn!(list = %source.id, bad_lines = source.bad_lines, examples = ?source.bad_examples, "list has lines that are not names");
            }
        }
        tracing::info!(
            names = report.names,
            sources = report.sources.len(),
            elapsed_ms = report.elapsed_ms,
            "lists compiled"
        );
    }
    Ok((prepared.lists, safesearch))
}

/// An allow override may not un-block a name in a locked category. The
/// blocklist stage enforces that anyway (locked categories are checked
/// first); this makes the attempt a start-up error the ICT lead sees.
pub fn check_overrides(config: &Config, lists: &CompiledLists) -> Result<(), StartError> {
    for group in config.groups.values() {
        for rule in group.allow.rules() {
            let name = rule.trim_start_matches('=');
            let locked = lists.lookup(name.as_bytes()).intersection(config.locked);
            if !locked.is_empty() {
                return Err(StartError::Policy(format!(
                    "{}: [groups.{}] allow = {rule:?} would unblock a name in locked category {locked}; locked categories cannot be unblocked by any override: remove it",
                    config.source, group.name
                )));
            }
        }
    }
    Ok(())
}

/// Rebuilds the lists off the runtime's threads and swaps them in.
pub async fn reload_lists(config: &Arc<Config>, pipeline: &Pipeline) -> Result<(), StartError> {
    let config = config.clone();
    let (lists, safesearch) =
        tokio::task::spawn_blocking(move || load_lists(&config)).await.expect("list loading does not panic")?;
    tracing::info!(listed_names = lists.len(), safesearch_names = safesearch.len(), "lists reloaded");
    pipeline.replace_lists(lists, safesearch);
    Ok(())
}

async fn reload_on_sighup(config: Arc<Config>, pipeline: Arc<Pipeline>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload lists by restarting");
        return;
    };
    while hangup.recv().await.is_some() {
        if let Err(error) = reload_lists(&config, &pipeline).await {
            tracing::warn!(%error, "list reload failed; the lists in use stay");
        }
    }
}

/// Downloads URL sources on a schedule, then recompiles and swaps if any
/// changed. A failed download keeps the last good copy (see `lists::fetch`).
async fn update_on_schedule(config: Arc<Config>, pipeline: Arc<Pipeline>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let update_config = config.clone();
        let changed = tokio::task::spawn_blocking(move || update_sources(&update_config)).await.unwrap_or(false);
        if changed && let Err(error) = reload_lists(&config, &pipeline).await {
            tracing::warn!(%error, "list reload after update failed; the lists in use stay");
        }
    }
}

/// Reads the DHCP leases file every minute and names devices from it.
async fn read_leases_on_schedule(database: PathBuf, file: PathBuf, format: LeasesFormat) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    let mut last_modified = None;
    loop {
        tick.tick().await;
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        if modified.is_none() || modified == last_modified {
            continue;
        }
        last_modified = modified;
        let (database, file) = (database.clone(), file.clone());
        let result = tokio::task::spawn_blocking(move || import_leases_file(&database, &file, format)).await;
        match result {
            Ok(Ok(count)) => tracing::info!(devices = count, "DHCP leases read"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the DHCP leases"),
            Err(_) => {}
        }
    }
}

/// Imports a leases file into the devices table; the number of leases read.
pub fn import_leases_file(database: &Path, file: &Path, format: LeasesFormat) -> Result<usize, String> {
    let text = std::fs::read_to_string(file).map_err(|error| format!("{}: {error}", file.display()))?;
    let leases = match format {
        LeasesFormat::Dnsmasq => store::leases::parse_dnsmasq_leases(&text),
        LeasesFormat::Isc => store::leases::parse_isc_leases(&text),
    };
    store::devices::import_leases(database, &leases).map_err(|error| error.to_string())
}

/// Downloads every enabled URL source; true when any changed.
pub fn update_sources(config: &Config) -> bool {
    if !config.lists.dir.is_dir() {
        return false;
    }
    let declared = match sources::load_sources(&config.lists) {
        Ok(declared) => declared,
        Err(error) => {
            tracing::warn!(%error, "cannot read the list sources");
            return false;
        }
    };
    let downloads = config.data_dir.join("downloads");
    let outcomes = fetch::update_all(&declared, &downloads, &config.downloads);
    outcomes.iter().any(|(_, outcome)| matches!(outcome, fetch::FetchOutcome::Updated { .. }))
}

/// The whole reload the control channel's `reload` runs: the lists (as
/// SIGHUP does), then the device table's groups.
pub async fn reload_all(
    config: &Arc<Config>,
    pipeline: &Arc<Pipeline>,
) -> Result<crate::control::ReloadReport, StartError> {
    reload_lists(config, pipeline).await?;
    let devices = refresh_device_groups(config, pipeline).await;
    Ok(crate::control::ReloadReport { listed_names: pipeline.lists().len(), devices })
}

/// Reads the device table's groups (off the runtime's threads) and swaps
/// them into the pipeline. A missing database means no devices; a broken
/// one keeps the groups in use and says why.
pub async fn refresh_device_groups(config: &Arc<Config>, pipeline: &Arc<Pipeline>) -> DeviceGroupsReport {
    let database = config.log.database.clone();
    let loaded = tokio::task::spawn_blocking(move || read_device_groups(&database)).await;
    match loaded {
        Ok(Ok((_, devices))) => apply_device_groups(pipeline, &devices),
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot read the device table; the device groups in use stay");
            DeviceGroupsReport { applied: pipeline.device_groups(), skipped: vec![error.to_string()] }
        }
        Err(_) => DeviceGroupsReport::default(),
    }
}

/// The device table's groups and its generation; none while there is no
/// database yet.
pub fn read_device_groups(database: &Path) -> Result<(i64, Vec<DeviceGroup>), store::StoreError> {
    let (generation, devices) = match store::devices::device_groups(database) {
        Ok(found) => found,
        Err(store::StoreError::Missing { .. }) => return Ok((0, Vec::new())),
        Err(error) => return Err(error),
    };
    let entries = devices
        .into_iter()
        .filter_map(|device| Some(DeviceGroup { ip: device.ip?, device: device.name, group: device.group? }))
        .collect();
    Ok((generation, entries))
}

/// Swaps `devices` in and logs what was skipped.
pub fn apply_device_groups(pipeline: &Pipeline, devices: &[DeviceGroup]) -> DeviceGroupsReport {
    let report = pipeline.replace_device_groups(devices);
    for why in &report.skipped {
        tracing::warn!("device table: {why}; this device gets its network's group");
    }
    tracing::info!(devices = report.applied, "device groups loaded");
    report
}

/// Keeps the device groups current: on SIGHUP, and whenever the device
/// table changed (a lease import, `hedgerow devices add`), checked every
/// few seconds with one single-row read.
async fn device_groups_on_schedule(config: Arc<Config>, pipeline: Arc<Pipeline>) {
    const CHECK_EVERY: Duration = Duration::from_secs(10);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    // The first check is one period after start, which loaded the groups.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    let database = config.log.database.clone();
    let mut seen = None;
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hangup.as_mut() { Some(signal) => signal.recv().await, None => None } } => true,
        };
        let database_now = database.clone();
        let generation =
            tokio::task::spawn_blocking(move || store::devices::generation(&database_now).ok()).await.ok().flatten();
        if forced || generation != seen {
            seen = generation;
            refresh_device_groups(&config, &pipeline).await;
        }
    }
}
