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
use crate::download;
use crate::lists::compiled::CompiledLists;
use crate::lists::health::ListHealth;
use crate::lists::sources::ListSettings;
use crate::lists::{downloads, floor, sources};
use crate::policy::SafeSearchMap;
use crate::store::{self, QueryLog};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the upstream resolver: {0}")]
    Upstream(#[from] crate::dns::answer::UpstreamError),
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
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "cannot listen for the dashboard on {address}: {error}; change [dashboard] listen in the config to a free \
         address (or listen = [] to turn the dashboard off)"
    )]
    Dashboard { address: SocketAddr, error: std::io::Error },
    #[error("{0}")]
    DashboardTls(String),
    #[error(
        "cannot listen for the block page on {address}: {error}; change [block_page] listen in the config to a free \
         address (or remove [block_page] to turn the block page off)"
    )]
    BlockPage { address: SocketAddr, error: std::io::Error },
    #[error(
        "cannot listen for metrics on {address}: {error}; change [metrics] listen in the config to a free address \
         (or remove it to turn metrics off)"
    )]
    Metrics { address: SocketAddr, error: std::io::Error },
    #[error(
        "[metrics] bearer_token_file {path}: {error}; write the token into that file (e.g. openssl rand -hex 32 > {path})"
    )]
    MetricsToken { path: String, error: String },
    #[error("the dashboard cannot open its database: {0}")]
    DashboardStore(#[from] crate::store::StoreError),
    #[error("[sync]: {0}")]
    Sync(String),
}

/// A running Hedgerow instance.
pub struct Running {
    pub pipeline: Arc<Pipeline>,
    server: DnsServer,
    background: Vec<tokio::task::JoinHandle<()>>,
    config: Arc<Config>,
    reloader: Arc<Reloader>,
    /// Policy changes written into the config file, recorded and reloaded
    /// (the dashboard's); `None` when there is no config file it can write.
    pub editor: Option<Arc<crate::policy_editor::PolicyEditor>>,
    /// Primary, secondary or alone (`[sync]`).
    sync: crate::sync::Side,
    /// The dashboard's addresses, as bound (port 0 resolved).
    dashboard: Vec<SocketAddr>,
    /// The control socket; dropped (and its file removed) with the server.
    _control: crate::control::ControlServer,
    /// The dashboard's and metrics' runtime; stopped with the server.
    _web: WebRuntime,
    /// The block page's addresses, as bound (port 0 resolved).
    block_page: Vec<SocketAddr>,
    /// The alerts' watch thread (when the query log is on).
    alerts: Option<crate::alerts::watch::Watch>,
    /// The alert outbox worker (issue 14); told to stop when dropped.
    _delivery: Option<crate::alerts::deliver::Delivery>,
}

/// The dashboard's and the metrics listener's own runtime. Their requests
/// (pages, log searches, CSV exports, scrapes) run on its threads, in the
/// idle class ([`crate::priority`]), never on the workers that answer cache
/// misses: a page being read does not hold up a query, and a school's
/// traffic does not wait for a governor's report.
struct WebRuntime(Option<tokio::runtime::Runtime>);

impl WebRuntime {
    fn start() -> Result<WebRuntime, StartError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("web")
            .on_thread_start(crate::priority::yield_to_dns)
            .enable_all()
            .build()
            .map_err(|error| {
                StartError::Listen(std::io::Error::other(format!("cannot start the web runtime: {error}")))
            })?;
        Ok(WebRuntime(Some(runtime)))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> tokio::task::JoinHandle<()> {
        self.0.as_ref().expect("the web runtime runs until dropped").spawn(task)
    }

    /// Serves `listener` (bound on the main runtime, so the start-up can
    /// say at once when its address is taken) with `serve` on this runtime.
    fn serve<F>(
        &self,
        listener: tokio::net::TcpListener,
        serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
    ) -> std::io::Result<tokio::task::JoinHandle<()>>
    where
        F: Future<Output = ()> + Send,
    {
        // Registered again with this runtime's reactor.
        let listener = listener.into_std()?;
        Ok(self.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => serve(listener).await,
                Err(error) => tracing::error!(%error, "cannot serve a dashboard or metrics listener"),
            }
        }))
    }
}

impl Drop for WebRuntime {
    fn drop(&mut self) {
        // Allowed inside the main runtime, unlike dropping a runtime.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Running {
    /// The UDP addresses really bound (port 0 resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.server.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.server.tcp_addrs
    }

    /// The dashboard's addresses as bound; empty when `[dashboard] listen = []`.
    pub fn dashboard_addrs(&self) -> &[SocketAddr] {
        &self.dashboard
    }

    /// The block page's addresses, as bound (port 0 resolved).
    pub fn block_page_addrs(&self) -> &[SocketAddr] {
        &self.block_page
    }

    /// What the dashboard's policy pages read (the configuration in force)
    /// and write through (the editor).
    pub fn policy_access(&self) -> crate::web::PolicyAccess {
        policy_access(&self.reloader, self.editor.clone(), self.sync.clone())
    }

    /// Rebuilds the lists from their sources (when they changed) and swaps
    /// them in; on failure the lists in use stay. What SIGHUP does.
    pub async fn reload_lists(&self) -> Result<(), StartError> {
        let _one_at_a_time = self.reloader.one_at_a_time.lock().await;
        let result = reload_lists(&self.reloader.config(), &self.pipeline).await;
        self.pipeline.metrics().reloaded(result.is_ok());
        result
    }

    /// The whole reload (`hedgerow reload`, SIGHUP): the configuration file
    /// again, the lists, the device table; see [`reload_all`].
    pub async fn reload(&self) -> Result<crate::control::ReloadReport, StartError> {
        reload_all(&self.reloader).await
    }

    /// How each list source stood at the last load or reload (the record in
    /// `data_dir/lists-health.json`).
    pub fn list_health(&self) -> Option<ListHealth> {
        ListHealth::read(&self.config.data_dir)
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
        if let Some(alerts) = self.alerts {
            let _ = tokio::task::spawn_blocking(move || alerts.stop()).await;
        }
    }
}

/// Starts the DNS server described by `config`.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|error| StartError::DataDir { path: config.data_dir.display().to_string(), error })?;
    // First, so a second server on this data_dir is refused before it loads anything.
    let mut control = crate::control::ControlServer::claim(&config.data_dir)
        .map_err(|error| StartError::Listen(std::io::Error::other(error.to_string())))?;
    warn_about_open_networks(config);
    raise_open_files_limit();
    // Before the slow work, so an address in use is said at once.
    let dashboard_listeners = bind_dashboard(config).await?;
    let metrics_listener = bind_metrics(config).await?;
    let mut block_page_listeners = Vec::with_capacity(config.block_page.listen.len());
    for &address in &config.block_page.listen {
        let listener =
            tokio::net::TcpListener::bind(address).await.map_err(|error| StartError::BlockPage { address, error })?;
        block_page_listeners.push(listener);
    }
    let dashboard_tls = match &config.dashboard.tls {
        Some(files) if !config.dashboard.listen.is_empty() => {
            Some(crate::web::tls_acceptor(&files.cert, &files.key).map_err(StartError::DashboardTls)?)
        }
        _ => None,
    };
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
    let now = crate::time::now_ms();
    let pipeline = Arc::new(Pipeline::new(&in_force(&config, now), lists, safesearch, log)?);
    let server = DnsServer::start(pipeline.clone(), &config).await?;
    install_gauges(&pipeline, &config);
    let started = (std::time::Instant::now(), crate::time::now_ms());
    refresh_device_groups(&config, &pipeline).await;
    let reloader = Arc::new(Reloader {
        started_with: config.clone(),
        current: arc_swap::ArcSwap::new(config.clone()),
        pipeline: pipeline.clone(),
        one_at_a_time: Arc::new(tokio::sync::Mutex::new(())),
        clock: tokio::sync::Notify::new(),
        policy_changed: tokio::sync::Notify::new(),
    });
    notice_file_edit(&config).await;
    record_lapses(&config, now).await;
    let editor = policy_editor(&config, &reloader).map(Arc::new);
    control
        .serve(crate::control::ServerInfo {
            config: config.clone(),
            pipeline: pipeline.clone(),
            udp: server.udp_addrs.clone(),
            tcp: server.tcp_addrs.clone(),
            started: started.0,
            started_unix_ms: started.1,
            reload: {
                let reloader = reloader.clone();
                Arc::new(move || {
                    let reloader = reloader.clone();
                    Box::pin(async move { reload_all(&reloader).await.map_err(|error| error.to_string()) })
                })
            },
            selftest: selftest_runner(&reloader),
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
    let sync = start_sync(&config, &reloader, &mut background)?;
    background.push(tokio::spawn(reload_on_sighup(reloader.clone())));
    background.push(tokio::spawn(policy_clock(reloader.clone())));
    background.push(tokio::spawn(selftest_on_schedule(reloader.clone())));
    let web = WebRuntime::start()?;
    let dashboard = start_dashboard(
        &config,
        &pipeline,
        policy_access(&reloader, editor.clone(), sync.clone()),
        dashboard_listeners,
        dashboard_tls,
        &web,
    )
    .await?;
    background.push(tokio::spawn(device_groups_on_schedule(config.clone(), pipeline.clone())));
    // The block page: its own small server on the web runtime, sharing nothing with the dashboard.
    // Its unblock requests (issue 15) go to the database the dashboard reads.
    let requests = if block_page_listeners.is_empty() || !writes_database(&config) {
        None
    } else {
        match store::unblock::UnblockStore::open(&config.log.database) {
            Ok(store) => Some(Arc::new(crate::web::block_page::Requests::new(store, &config.log.settings))),
            Err(error) => {
                tracing::error!(%error, "the block page cannot take unblock requests");
                None
            }
        }
    };
    let mut block_page = Vec::with_capacity(block_page_listeners.len());
    for listener in block_page_listeners {
        block_page.extend(listener.local_addr().ok());
        let (pipeline, requests) = (pipeline.clone(), requests.clone());
        web.serve(listener, |listener| async move {
            if let Err(error) = crate::web::block_page::serve(listener, pipeline, requests).await {
                tracing::error!(%error, "the block page stopped serving");
            }
        })
        .map_err(StartError::Listen)?;
    }
    if !block_page.is_empty() {
        tracing::info!(addresses = ?block_page, "block page");
    }
    if let Some((listener, token)) = metrics_listener {
        let monitor = crate::web::Monitor {
            pipeline: pipeline.clone(),
            database: writes_database(&config).then(|| config.log.database.clone()),
            token: token.map(Arc::from),
        };
        tracing::info!(address = ?listener.local_addr().ok(), "metrics at /metrics, /health, /ready");
        web.serve(listener, |listener| async move {
            if let Err(error) = crate::web::serve_metrics(listener, monitor).await {
                tracing::error!(%error, "the metrics listener stopped serving");
            }
        })
        .map_err(StartError::Listen)?;
    }
    if config.log.enabled {
        // Roll-ups and retention run on their own thread, hourly.
        let _ = store::retention::spawn_retention(config.log.database.clone(), config.log.settings.retention_days);
        if let Some((file, format)) = config.log.leases.clone() {
            background.push(tokio::spawn(read_leases_on_schedule(config.log.database.clone(), file, format)));
        }
    }
    if let Some(interval) = config.list_update_interval {
        background.push(tokio::spawn(update_on_schedule(reloader.clone(), interval)));
    }
    // Alerts for the DSL (issue 14), kept in the database: only with the query log on.
    let (alerts, delivery) = if config.log.enabled {
        let (watch, delivery) = start_alerts(&config, &pipeline, &reloader)?;
        (Some(watch), Some(delivery))
    } else {
        (None, None)
    };
    tracing::info!(
        udp = ?server.udp_addrs,
        tcp = ?server.tcp_addrs,
        upstream = pipeline.upstream_description(),
        listed_names = pipeline.lists().len(),
        source = %config.source,
        "hedgerow is serving DNS"
    );
    Ok(Running {
        pipeline,
        server,
        background,
        config,
        reloader,
        editor,
        sync,
        dashboard,
        _control: control,
        _web: web,
        block_page,
        alerts,
        _delivery: delivery,
    })
}

/// Subscribes the alerts' feed to the pipeline and starts the thread that
/// runs the rules on it (the pipeline's feed -> the watch thread -> alerts and
/// their messages in the database), and the outbox worker that sends the
/// messages, retries and digests; both read the config in force at each step.
fn start_alerts(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    reloader: &Arc<Reloader>,
) -> Result<(crate::alerts::watch::Watch, crate::alerts::deliver::Delivery), StartError> {
    let store = crate::store::alerts::AlertStore::open(&config.log.database)
        .map_err(|error| StartError::Log(format!("alerts: {error}")))?;
    let in_force: crate::alerts::watch::ConfigFn = {
        let reloader = reloader.clone();
        Arc::new(move || reloader.config())
    };
    let (feed, receiver) = crate::alerts::feed::AlertFeed::new(&reloader.config().alerts.rules);
    pipeline.set_alert_feed(feed);
    let watch = crate::alerts::watch::spawn(receiver, store.clone(), in_force.clone())
        .map_err(|error| StartError::Log(error.to_string()))?;
    Ok((watch, crate::alerts::deliver::spawn(store, in_force)))
}

/// The figures other parts keep, read when a metrics snapshot is taken:
/// the cache's size, the query log's rows, the lists in force and their
/// health record. Holds the pipeline weakly (the pipeline owns the metrics).
fn install_gauges(pipeline: &Arc<Pipeline>, config: &Config) {
    let weak = Arc::downgrade(pipeline);
    let data_dir = config.data_dir.clone();
    let outbox = config.log.enabled.then(|| store::alerts::AlertStore::open(&config.log.database).ok()).flatten();
    pipeline.metrics().set_gauges(Box::new(move |snapshot| {
        if let Some(pipeline) = weak.upgrade() {
            let (entries, bytes) = pipeline.cache_size();
            snapshot.cache_entries = entries as u64;
            snapshot.cache_bytes = bytes;
            snapshot.listed_names = pipeline.lists().len() as u64;
            if let Some(log) = pipeline.log() {
                snapshot.log_enabled = true;
                snapshot.log_written = log.written();
                snapshot.log_dropped = log.dropped();
                (snapshot.log_state, snapshot.log_not_written_since_ms) = match log.state() {
                    store::LogState::Ok => ("ok", None),
                    store::LogState::DiskFull { since_ms, .. } => ("disk_full", Some(since_ms)),
                    store::LogState::WriteFailing { since_ms, .. } => ("write_failing", Some(since_ms)),
                };
            }
            snapshot.alert_lookups_dropped = pipeline.alert_feed().map_or(0, |feed| feed.dropped());
        }
        // The alert outbox (issue 14): one count query per snapshot.
        if let Some(outbox) = &outbox
            && let Ok(counts) = outbox.outbox_counts()
        {
            snapshot.alert_messages = Some(crate::metrics::AlertMessageFigures {
                pending: (counts.pending - counts.retrying).max(0) as u64,
                retrying: counts.retrying.max(0) as u64,
                failed: counts.failed.max(0) as u64,
                sent: counts.sent.max(0) as u64,
            });
        }
        if let Some(store) = &outbox
            && let Ok(states) = store.state_counts()
        {
            snapshot.alerts_by_state = Some(states.map(|count| count.max(0) as u64));
        }
        if let Some(health) = ListHealth::read(&data_dir) {
            let now = crate::time::now_ms().max(0) as u64 / 1000;
            snapshot.lists_checked_at = Some(health.checked_at);
            snapshot.lists_error = health.error.clone();
            snapshot.lists = health
                .sources
                .into_iter()
                .map(|source| crate::metrics::ListFigures {
                    state: match source.state {
                        crate::lists::health::SourceState::Ok => "ok",
                        crate::lists::health::SourceState::Degraded => "degraded",
                        crate::lists::health::SourceState::Missing => "missing",
                    },
                    entries: source.names.map(|names| names as u64),
                    age_seconds: source.copy_from.map(|from| now.saturating_sub(from)),
                    failing_since: source.since,
                    last_failure: source.reason,
                    id: source.id,
                    category: source.category,
                })
                .collect();
        }
    }));
}

/// Binds `[metrics] listen` (when set) and reads its bearer token.
async fn bind_metrics(config: &Config) -> Result<Option<(tokio::net::TcpListener, Option<String>)>, StartError> {
    let Some(address) = config.metrics.listen else {
        return Ok(None);
    };
    let token = match &config.metrics.bearer_token {
        None => None,
        Some(crate::config::BearerToken::Inline(token)) => Some(token.clone()),
        Some(crate::config::BearerToken::File(path)) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|error| StartError::MetricsToken { path: shown.clone(), error: error.to_string() })?;
            let token = text.trim().to_string();
            if token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()) {
                return Err(StartError::MetricsToken {
                    path: shown,
                    error: "the token must be at least 16 visible characters with no spaces".into(),
                });
            }
            Some(token)
        }
    };
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|error| StartError::Metrics { address, error })?;
    Ok(Some((listener, token)))
}

/// Whether the server writes its database (the query log, or the
/// dashboard's users and sessions): readiness then checks it is writable.
pub fn writes_database(config: &Config) -> bool {
    config.log.enabled || !config.dashboard.listen.is_empty()
}

/// Binds every `[dashboard] listen` address; a failure names the address and the setting.
async fn bind_dashboard(config: &Config) -> Result<Vec<tokio::net::TcpListener>, StartError> {
    let mut listeners = Vec::with_capacity(config.dashboard.listen.len());
    for &address in &config.dashboard.listen {
        let listener =
            tokio::net::TcpListener::bind(address).await.map_err(|error| StartError::Dashboard { address, error })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Serves the dashboard on `listeners` and, while no admin exists, issues a
/// setup link (valid 60 minutes) and says it loudly. Returns the bound addresses.
async fn start_dashboard(
    config: &Config,
    pipeline: &Arc<Pipeline>,
    policy: crate::web::PolicyAccess,
    listeners: Vec<tokio::net::TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    web: &WebRuntime,
) -> Result<Vec<SocketAddr>, StartError> {
    if listeners.is_empty() {
        return Ok(Vec::new());
    }
    let addresses: Vec<SocketAddr> = listeners.iter().filter_map(|listener| listener.local_addr().ok()).collect();
    let mut settings = crate::web::WebSettings::from_config(config);
    settings.listen = addresses.clone();
    settings.tls = tls.is_some();
    let state = {
        let (pipeline, database) = (pipeline.clone(), config.log.database.clone());
        tokio::task::spawn_blocking(move || crate::web::AppState::with_policy(pipeline, &database, settings, policy))
            .await
            .expect("opening the dashboard's stores does not panic")?
    };
    let token = {
        let tokens = state.setup_tokens().clone();
        tokio::task::spawn_blocking(move || tokens.issue(crate::time::now_ms(), SETUP_LINK_VALID_MS))
            .await
            .expect("issuing a setup token does not panic")?
    };
    for listener in listeners {
        let (state, tls) = (state.clone(), tls.clone());
        web.serve(listener, |listener| async move {
            let served = match tls {
                Some(acceptor) => crate::web::serve_tls(listener, state, acceptor).await,
                None => crate::web::serve(listener, state).await,
            };
            if let Err(error) = served {
                tracing::error!(%error, "the dashboard stopped serving");
            }
        })
        .map_err(StartError::Listen)?;
    }
    web.spawn({
        // Expired sessions are never honoured; this only keeps the table small.
        let (sessions, settings) = (state.sessions().clone(), state.settings().clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                let sessions = sessions.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    sessions.delete_expired(crate::time::now_ms(), settings.idle_ms, settings.absolute_ms)
                })
                .await;
            }
        }
    });
    let base = dashboard_url(addresses[0], tls.is_some());
    tracing::info!(addresses = ?addresses, "dashboard at {base}/");
    if let Some(token) = token {
        let line = format!(
            "No admin yet. Open {base}/setup/{token} within 60 minutes to create the first admin (or run: hedgerow \
             user add NAME --role admin)."
        );
        tracing::warn!("{line}");
        eprintln!("{line}");
    }
    Ok(addresses)
}

/// How long a setup link printed at start works.
const SETUP_LINK_VALID_MS: i64 = 60 * 60 * 1000;

/// The URL a person on this machine opens for a listen address (loopback for a wildcard).
fn dashboard_url(address: SocketAddr, tls: bool) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, address.port()))
}

/// Raises the soft limit on open files to the hard limit (at most 65,536):
/// TCP clients, the upstream socket pool and the database each hold file
/// descriptors, and the common soft default of 1,024 is below what
/// `dns.tcp_max_connections` alone allows.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = limit.rlim_max.min(65_536);
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::warn!(
                    soft = limit.rlim_cur,
                    "cannot raise the open files limit; raise LimitNOFILE / ulimit -n"
                );
            }
        }
    }
}

/// `[dns] allow_open_resolver = true` lets networks cover the whole address
/// space; that is said at every start, since it is rarely what a school wants.
fn warn_about_open_networks(config: &Config) {
    if !config.allow_open_resolver {
        return;
    }
    for network in &config.networks {
        for cidr in network.cidrs.iter().filter(|cidr| crate::config::covers_the_internet(cidr)) {
            tracing::warn!(
                network = %network.name,
                %cidr,
                "OPEN RESOLVER: this network covers the whole internet (allow_open_resolver = true); anyone who \
                 can reach this server can use it. Limit it with a firewall, or list the school's own subnets"
            );
        }
    }
}

/// The SafeSearch map's place in the lists folder.
pub fn safesearch_map_path(config: &Config) -> PathBuf {
    config.lists.dir.join("safesearch").join("rewrites.toml")
}

/// What loading the lists produced.
pub struct LoadedLists {
    pub lists: CompiledLists,
    pub safesearch: SafeSearchMap,
    /// How each source stands (also in `data_dir/lists-health.json`).
    pub health: ListHealth,
}

/// The list settings to load from. Hedgerow never starts unfiltered:
/// - `[lists] dir` readable: it.
/// - `[lists] dir` not written in the config and the default `lists/` not
///   here (the embedded default run from any folder, or a config that leaves
///   the key out): the shipped lists embedded in the binary (the floor),
///   written out under `data_dir/builtin-lists`, with a loud warning.
/// - `[lists] dir` written but missing or unreadable: a config error naming
///   the file and line (a mistyped path must not mean no filtering).
pub fn list_settings(config: &Config) -> Result<ListSettings, StartError> {
    let dir = &config.lists.dir;
    let unreadable = match std::fs::read_dir(dir) {
        Ok(_) => return Ok(config.lists.clone()),
        Err(error) => error,
    };
    match config.lists.dir_line {
        None => {
            let floor = floor::write_out(&config.data_dir).map_err(|error| {
                StartError::Lists(format!(
                    "there is no lists folder at {} and the built-in lists cannot be written under {} ({error}); \
                     set [lists] dir to the folder of source declarations, or make data_dir writable",
                    dir.display(),
                    config.data_dir.display()
                ))
            })?;
            // Said once a process: start-up, the update schedule and reloads
            // all come here, and the fallback is the same each time.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    missing = %dir.display(),
                    using = %floor.display(),
                    "NO LISTS FOLDER HERE: filtering with the lists built into this binary (seed lists and \
                     SafeSearch only). Set [lists] dir in the config to your lists folder (the shipped one is lists/)"
                );
            });
            Ok(ListSettings { dir: floor, ..config.lists.clone() })
        }
        Some(line) => Err(StartError::Lists(format!(
            "{}:{line}: [lists] dir = {:?} cannot be read ({unreadable}); Hedgerow will not run without its \
             blocklists. Set it to the folder holding the *.toml source declarations (a release ships it as \
             lists/, with hedgerow.toml), e.g. dir = {:?}",
            config.source,
            dir.display().to_string(),
            if dir == Path::new("/usr/share/hedgerow/lists") {
                "/opt/hedgerow/lists"
            } else {
                "/usr/share/hedgerow/lists"
            },
        ))),
    }
}

/// Reads the SafeSearch map of a lists folder. A folder without one gets
/// the map built into the binary (SafeSearch is never silently off); a map
/// that does not parse is a configuration error.
fn load_safesearch(dir: &Path) -> Result<SafeSearchMap, StartError> {
    let path = dir.join("safesearch").join("rewrites.toml");
    if !path.exists() {
        tracing::warn!(
            path = %path.display(),
            "no SafeSearch map in the lists folder: using the map built into this binary"
        );
        return Ok(floor::safesearch());
    }
    let map = SafeSearchMap::load(&path).map_err(|error| StartError::Lists(error.to_string()))?;
    if map.is_empty() {
        tracing::warn!(path = %path.display(), "the SafeSearch map is empty: search engines are not rewritten");
    }
    Ok(map)
}

/// Loads the compiled lists (compiling them first when their sources
/// changed) and the SafeSearch map. See [`load_lists_with_health`].
pub fn load_lists(config: &Config) -> Result<(CompiledLists, SafeSearchMap), StartError> {
    load_lists_with_health(config).map(|loaded| (loaded.lists, loaded.safesearch))
}

/// Loads the lists, failing closed: an unreadable lists folder named in the
/// config, a SafeSearch map that does not parse, or no good copy of any
/// source (and no compiled list to fall back on) is an error, never an
/// empty filter. A source that fails keeps its last good copy and is
/// reported in the health record (logged at error level and saved to
/// `data_dir/lists-health.json`).
pub fn load_lists_with_health(config: &Config) -> Result<LoadedLists, StartError> {
    let settings = list_settings(config)?;
    let safesearch = load_safesearch(&settings.dir)?;
    let prepared =
        download::prepare(&settings, &config.data_dir).map_err(|error| StartError::Lists(error.to_string()))?;
    if let Some(report) = &prepared.report {
        for source in &report.sources {
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
    prepared.health.log();
    prepared.health.save(&config.data_dir);
    Ok(LoadedLists { lists: prepared.lists, safesearch, health: prepared.health })
}

/// What `hedgerow check-config` finds in the lists a config would load.
#[derive(Debug, Default)]
pub struct ListCheck {
    /// Each makes the config invalid: `serve` would refuse it, or would run
    /// with less filtering than the config describes.
    pub errors: Vec<String>,
    /// Worth knowing, not fatal (downloads not fetched yet, the built-in
    /// lists in use).
    pub notes: Vec<String>,
    /// Enabled sources.
    pub sources: usize,
}

/// Validates everything `serve` would load for the lists, without writing
/// anything: the lists folder, the source declarations (parsed), the
/// `[lists] enable`/`disable` ids, each enabled local list file (it must
/// read and pass the same checks as at start), and the SafeSearch map.
pub fn check_lists(config: &Config) -> ListCheck {
    let mut check = ListCheck::default();
    if std::fs::read_dir(&config.lists.dir).is_err() && config.lists.dir_line.is_none() {
        check.notes.push(format!(
            "there is no lists folder at {} (the default, relative to the working folder): `serve` would filter \
             with the lists built into this binary only; set [lists] dir to your lists folder",
            config.lists.dir.display()
        ));
        // Checked as `serve` would use them (`enable`/`disable` ids must
        // name built-in sources), in a scratch folder, not data_dir.
        let scratch = std::env::temp_dir().join(format!("hedgerow-check-{}", std::process::id()));
        match floor::write_out(&scratch) {
            Ok(dir) => check_declared(config, &ListSettings { dir, ..config.lists.clone() }, &mut check),
            Err(error) => check.errors.push(format!("cannot write the built-in lists to check them: {error}")),
        }
        let _ = std::fs::remove_dir_all(&scratch);
        return check;
    }
    match list_settings(config) {
        Ok(settings) => check_declared(config, &settings, &mut check),
        Err(error) => check.errors.push(error.to_string()),
    }
    check
}

fn check_declared(config: &Config, settings: &ListSettings, check: &mut ListCheck) {
    let map = settings.dir.join("safesearch").join("rewrites.toml");
    if map.exists() {
        if let Err(error) = SafeSearchMap::load(&map) {
            check.errors.push(error.to_string());
        }
    } else {
        check
            .notes
            .push(format!("{} is missing: `serve` would use the SafeSearch map built into this binary", map.display()));
    }
    let declared = match sources::load_sources(settings) {
        Ok(declared) => declared,
        Err(error) => {
            check.errors.push(error.to_string());
            return;
        }
    };
    if declared.is_empty() {
        check.errors.push(format!(
            "{}: no *.toml file here declares a list source; set [lists] dir to the folder of source declarations",
            settings.dir.display()
        ));
    }
    for source in declared.iter().filter(|source| source.enabled) {
        check.sources += 1;
        match &source.location {
            sources::Location::Path(_) => {
                if let Err(why) = download::check_local(source) {
                    let kept = downloads::copy(&downloads::folder(&config.data_dir), &source.id).is_file();
                    let effect = if kept { "its last good copy would be used" } else { "it would block nothing" };
                    check.errors.push(format!(
                        "list source `{}` ({}): {why}; {effect}",
                        source.id,
                        source.declared_in.display()
                    ));
                }
            }
            sources::Location::Url(url) => {
                if !downloads::copy(&downloads::folder(&config.data_dir), &source.id).is_file() {
                    check.notes.push(format!(
                        "list source `{}` ({url}) is not downloaded yet; run `hedgerow lists update`",
                        source.id
                    ));
                }
            }
        }
    }
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

/// Loads the lists for a reload off the runtime's threads. When they cannot
/// be loaded at all, the failure is recorded in the health record (the lists
/// in force stay: the caller swaps nothing).
async fn load_lists_for_reload(config: &Arc<Config>) -> Result<LoadedLists, StartError> {
    let load_config = config.clone();
    let loaded = in_idle_class("hedgerow-lists", move || load_lists_with_health(&load_config)).await;
    if let Err(error) = &loaded {
        let mut health = ListHealth::read(&config.data_dir).unwrap_or_default();
        health.checked_at = download::unix_now();
        health.error = Some(format!("reload failed, the last good lists stay: {error}"));
        health.save(&config.data_dir);
    }
    loaded
}

/// Runs `work` on a thread of its own in the idle class ([`crate::priority`]),
/// as is the list compiler it may start (a child keeps its parent's class):
/// a compile takes seconds of CPU, which on a busy server must come from idle
/// time, not from DNS answers or the query log. On the runtime's blocking
/// pool the compiler ran at normal priority, and the query log shed rows at
/// each list change during the soak.
async fn in_idle_class<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::priority::yield_to_dns();
            let _ = done.send(work());
        })
        .expect("the operating system starts a thread");
    result.await.expect("list loading does not panic")
}

/// Rebuilds the lists off the runtime's threads and swaps them in. When the
/// lists cannot be loaded at all (the folder vanished or became unreadable,
/// the SafeSearch map broke) nothing is swapped: the lists and map in force
/// stay, the error is logged and recorded in the health record.
pub async fn reload_lists(config: &Arc<Config>, pipeline: &Pipeline) -> Result<(), StartError> {
    match load_lists_for_reload(config).await {
        Ok(loaded) => {
            tracing::info!(
                listed_names = loaded.lists.len(),
                safesearch_names = loaded.safesearch.len(),
                "lists reloaded"
            );
            pipeline.replace_lists(loaded.lists, loaded.safesearch);
            Ok(())
        }
        Err(error) => {
            tracing::error!(
                %error,
                listed_names = pipeline.lists().len(),
                "LIST RELOAD FAILED: the lists in force stay (last good)"
            );
            Err(error)
        }
    }
}

async fn reload_on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with `hedgerow reload` or by restarting");
        return;
    };
    while hangup.recv().await.is_some() {
        // A failure is logged (at error level) by reload_all itself.
        let _ = reload_all(&reloader).await;
    }
}

/// Downloads URL sources on a schedule, then recompiles and swaps if any
/// changed. A failed download keeps the last good copy (see `download`).
async fn update_on_schedule(reloader: Arc<Reloader>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let update_config = reloader.config();
        let changed = in_idle_class("hedgerow-update", move || update_sources(&update_config)).await;
        let _one_at_a_time = reloader.one_at_a_time.lock().await;
        if !changed {
            continue;
        }
        let result = reload_lists(&reloader.config(), &reloader.pipeline).await;
        reloader.pipeline.metrics().reloaded(result.is_ok());
        if let Err(error) = result {
            tracing::warn!(%error, "list reload after update failed; the lists in use stay");
        }
    }
}

/// Reads the DHCP leases file every minute and names devices from it.
async fn read_leases_on_schedule(database: PathBuf, file: PathBuf, format: LeasesFormat) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    // `Some(None)`: last seen missing or unreadable (read once, so the
    // Devices page shows why; read again when it appears).
    let mut last_modified = None;
    loop {
        tick.tick().await;
        let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        if last_modified == Some(modified) {
            continue;
        }
        last_modified = Some(modified);
        let (database, file) = (database.clone(), file.clone());
        let result = tokio::task::spawn_blocking(move || read_leases_file(&database, &file, format)).await;
        match result {
            Ok(Ok(counted)) => tracing::info!(leases = counted.current, changed = counted.changed, "DHCP leases read"),
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the DHCP leases"),
            Err(_) => {}
        }
    }
}

/// Imports a leases file into the devices table and records the reading
/// (its counts, or why it failed) for the Devices page.
pub fn read_leases_file(
    database: &Path,
    file: &Path,
    format: LeasesFormat,
) -> Result<store::devices::LeaseImport, String> {
    let outcome =
        std::fs::read_to_string(file).map_err(|error| format!("{}: {error}", file.display())).and_then(|text| {
            let leases = match format {
                LeasesFormat::Dnsmasq => store::leases::parse_dnsmasq_leases(&text),
                LeasesFormat::Isc => store::leases::parse_isc_leases(&text),
            };
            store::devices::import_leases_counted(database, &leases, crate::time::now_ms())
                .map_err(|error| error.to_string())
        });
    let word = match format {
        LeasesFormat::Dnsmasq => "dnsmasq",
        LeasesFormat::Isc => "isc",
    };
    let file_text = file.display().to_string();
    if let Err(error) = store::devices::record_leases_read(database, &file_text, word, &outcome, crate::time::now_ms())
    {
        tracing::warn!(%error, "cannot record the DHCP leases reading");
    }
    outcome
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
    let Ok(settings) = list_settings(config) else {
        return false;
    };
    let declared = match sources::load_sources(&settings) {
        Ok(declared) => declared,
        Err(error) => {
            tracing::warn!(%error, "cannot read the list sources");
            return false;
        }
    };
    let downloads = downloads::folder(&config.data_dir);
    let outcomes = download::update_all(&declared, &downloads, &config.downloads);
    outcomes.iter().any(|(_, outcome)| matches!(outcome, download::FetchOutcome::Updated { .. }))
}

/// What a whole reload needs: the configuration in force and the one the
/// server started with (its restart-only settings), the pipeline, and one
/// reload at a time.
pub struct Reloader {
    started_with: Arc<Config>,
    /// The policy settings of the last good reload, with the restart-only
    /// settings of `started_with`; list updates and reloads read it.
    current: arc_swap::ArcSwap<Config>,
    pipeline: Arc<Pipeline>,
    /// A reload, a list update's reload, a SIGHUP or a policy edit waits
    /// for the one running.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    /// Wakes the policy clock after a reload (the schedules may have changed).
    clock: tokio::sync::Notify,
    /// Told after each whole reload that succeeded: a primary then tells
    /// its secondaries.
    policy_changed: tokio::sync::Notify,
}

impl Reloader {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.current.load_full()
    }

    /// The configuration the server started with (its file, data_dir, log).
    pub fn started_with(&self) -> &Arc<Config> {
        &self.started_with
    }
}

fn policy_access(
    reloader: &Arc<Reloader>,
    editor: Option<Arc<crate::policy_editor::PolicyEditor>>,
    sync: crate::sync::Side,
) -> crate::web::PolicyAccess {
    let reload_lists: crate::policy_editor::ReloadFn = {
        let reloader = reloader.clone();
        Arc::new(move || {
            let reloader = reloader.clone();
            Box::pin(async move {
                let _one_at_a_time = reloader.one_at_a_time.lock().await;
                let result = reload_lists(&reloader.config(), &reloader.pipeline).await;
                reloader.pipeline.metrics().reloaded(result.is_ok());
                result.map_err(|error| error.to_string())
            })
        })
    };
    let reloader = reloader.clone();
    let selftest = Some(selftest_runner(&reloader));
    crate::web::PolicyAccess {
        config: Arc::new(move || reloader.config()),
        editor,
        reload_lists: Some(reload_lists),
        selftest,
        sync,
    }
}

/// Primary and secondary (`[sync]`): reads the key, and starts the
/// secondary's follower (its first try at once) or the primary's
/// notifier (after each whole reload that succeeded).
fn start_sync(
    config: &Config,
    reloader: &Arc<Reloader>,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<crate::sync::Side, StartError> {
    use crate::config::sync::SyncRole;
    let key = match config.sync.role {
        SyncRole::Alone => return Ok(crate::sync::Side::Alone),
        _ => crate::sync::SyncKey::read(&config.sync.key_file).map_err(StartError::Sync)?,
    };
    match &config.sync.role {
        SyncRole::Alone => Ok(crate::sync::Side::Alone),
        SyncRole::Primary { secondaries } => {
            let (secondaries, notify_key, name) = (secondaries.clone(), key.clone(), crate::sync::follow::host_name());
            let changed = reloader.clone();
            background.push(tokio::spawn(async move {
                loop {
                    changed.policy_changed.notified().await;
                    if secondaries.is_empty() {
                        continue;
                    }
                    let (secondaries, key, name) = (secondaries.clone(), notify_key.clone(), name.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || crate::sync::peers::notify_all(&secondaries, &key, &name))
                            .await;
                }
            }));
            Ok(crate::sync::Side::Primary { key, peers: Arc::new(crate::sync::peers::Peers::default()) })
        }
        SyncRole::Secondary { .. } => {
            let reload: crate::policy_editor::ReloadFn = {
                let reloader = reloader.clone();
                Arc::new(move || {
                    let reloader = reloader.clone();
                    Box::pin(async move { reload_all(&reloader).await.map(|_| ()).map_err(|error| error.to_string()) })
                })
            };
            let report: Arc<dyn Fn() -> crate::sync::Report + Send + Sync> = {
                let reloader = reloader.clone();
                let started_ms = crate::time::now_ms();
                Arc::new(move || {
                    let config = reloader.config();
                    let lists = ListHealth::summary(ListHealth::read(&config.data_dir).as_ref());
                    crate::sync::Report {
                        name: crate::sync::follow::host_name(),
                        dns: config.listen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                        hedgerow_version: env!("CARGO_PKG_VERSION").to_string(),
                        started_ms,
                        answered: reloader.pipeline.metrics().lookups(),
                        lists,
                        ..Default::default()
                    }
                })
            };
            let follower =
                crate::sync::follow::Follower::for_server(config, key, reload, report).map(Arc::new).ok_or_else(
                    || StartError::Sync("a secondary must be started from its config file (--config)".into()),
                )?;
            background.push(tokio::spawn(follower.clone().run()));
            Ok(crate::sync::Side::Secondary(follower))
        }
    }
}

/// The policy editor of a server started from a writable config file: it
/// holds the reload lock, the reload itself and the override check.
fn policy_editor(config: &Config, reloader: &Arc<Reloader>) -> Option<crate::policy_editor::PolicyEditor> {
    // A secondary's policy is its primary's: changed there, never here.
    if config.sync.primary().is_some() {
        return None;
    }
    let reload: crate::policy_editor::ReloadFn = {
        let reloader = reloader.clone();
        Arc::new(move || {
            let reloader = reloader.clone();
            Box::pin(async move {
                let result = reload_policy(&reloader).await;
                reloader.pipeline.metrics().reloaded(result.is_ok());
                if let Err(error) = &result {
                    tracing::error!(%error, "RELOAD REFUSED: the policy in force stays");
                }
                result.map(|_| ()).map_err(|error| error.to_string())
            })
        })
    };
    let check: crate::policy_editor::CheckFn = {
        let pipeline = reloader.pipeline.clone();
        Arc::new(move |config: &Config| check_overrides(config, &pipeline.lists()).map_err(|error| error.to_string()))
    };
    crate::policy_editor::PolicyEditor::for_server(config, reloader.one_at_a_time.clone(), reload, check)
}

/// The self-test (issue 15) as the server runs it: one function for the
/// CLI (through the control socket), the dashboard and the schedule.
pub type SelftestFn = crate::control::Selftest;

fn selftest_runner(reloader: &Arc<Reloader>) -> SelftestFn {
    let reloader = reloader.clone();
    Arc::new(move |trigger, user| {
        let reloader = reloader.clone();
        Box::pin(async move { run_selftest(&reloader, trigger, user).await })
    })
}

/// Runs the self-test daily at `[selftest] daily_at` school time (read from
/// the config in force at each look, so a reload moves it), on the main
/// runtime, never on the DNS threads. A server started after today's time
/// first runs tomorrow. Looks every 30 s, so a changed wall clock is caught.
async fn selftest_on_schedule(reloader: Arc<Reloader>) {
    const LOOK: Duration = Duration::from_secs(30);
    let mut last_day = None;
    loop {
        let config = reloader.config();
        let now_ms = crate::time::now_ms();
        if let Some((day, due_ms)) = selftest_due(&config, now_ms) {
            match last_day {
                // The first look: a time already past today waits for tomorrow.
                None => last_day = Some(if now_ms >= due_ms { day } else { day.yesterday().unwrap_or(day) }),
                Some(last) if last != day && now_ms >= due_ms && config.selftest.enabled => {
                    last_day = Some(day);
                    match run_selftest(&reloader, crate::store::checks::Trigger::Schedule, String::new()).await {
                        Ok(report) if report.run.passed() => {}
                        Ok(report) => tracing::warn!(run = report.run.id, "the scheduled self-test failed"),
                        Err(error) => tracing::error!(%error, "the scheduled self-test could not run"),
                    }
                }
                Some(_) => {}
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// Today's date in school time and when today's self-test is due (UTC ms).
fn selftest_due(config: &Config, now_ms: i64) -> Option<(jiff::civil::Date, i64)> {
    let now = jiff::Timestamp::from_millisecond(now_ms).ok()?.to_zoned(config.timezone.clone());
    let (hour, minute) = config.selftest.daily_at;
    let due = now.date().at(hour as i8, minute as i8, 0, 0).to_zoned(config.timezone.clone()).ok()?;
    Some((now.date(), due.timestamp().as_millisecond()))
}

/// One self-test at a time: a second waits for the first.
static SELFTEST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the self-test against this server's own listener with the policy in
/// force (`review::selftest`), stores the run and its results in one
/// transaction, and, when anything failed (or the run could not ask at all),
/// raises one high alert (rule "selftest") so the DSL and the ICT lead see
/// it in /alerts and by e-mail (unless `[alerts] enabled = false`). Each
/// failing run raises its own alert: at most one a day from the schedule.
pub async fn run_selftest(
    reloader: &Reloader,
    trigger: crate::store::checks::Trigger,
    user: String,
) -> Result<crate::store::checks::RunReport, String> {
    use crate::review::selftest;
    let _one_at_a_time = SELFTEST.lock().await;
    let config = reloader.config();
    let started_ms = crate::time::now_ms();
    let map_path = safesearch_map_path(&config);
    let safesearch = tokio::task::spawn_blocking(move || match SafeSearchMap::load(&map_path) {
        Ok(map) if !map.is_empty() => map,
        _ => floor::safesearch(),
    })
    .await
    .map_err(|error| format!("the self-test could not start: {error}"))?;
    let planned = selftest::plan(&config, &safesearch, started_ms);
    let (results, error) = match selftest::ask_all(&reloader.pipeline, &planned).await {
        Ok(results) => (results, String::new()),
        Err(error) => (Vec::new(), error),
    };
    let run =
        crate::store::checks::NewRun { started_ms, finished_ms: crate::time::now_ms(), trigger, user, results, error };
    let database = config.log.database.clone();
    tokio::task::spawn_blocking(move || store_selftest(&database, &config, &run))
        .await
        .map_err(|error| format!("the self-test could not be stored: {error}"))?
}

/// Stores a run; raises the alert for a failed one.
fn store_selftest(
    database: &Path,
    config: &Config,
    run: &crate::store::checks::NewRun,
) -> Result<crate::store::checks::RunReport, String> {
    let checks = crate::store::checks::ChecksStore::open(database).map_err(|error| error.to_string())?;
    let stored = checks.record_run(run).map_err(|error| error.to_string())?;
    let results = checks.results(stored.id).map_err(|error| error.to_string())?;
    if !stored.passed() && !config.alerts.enabled {
        tracing::warn!(
            run = stored.id,
            failures = stored.failures,
            "SELF-TEST FAILED (no alert: [alerts] enabled = false)"
        );
    } else if !stored.passed() {
        let failed = crate::present::selftest::most_serious_first(&results);
        let groups: std::collections::BTreeSet<&str> = failed.iter().map(|r| r.group.as_str()).collect();
        let mut names: Vec<String> = Vec::new();
        for result in &failed {
            if !names.contains(&result.name) {
                names.push(result.name.clone());
            }
        }
        let summary = if stored.error.is_empty() {
            let first: Vec<String> =
                failed.iter().take(3).map(|r| crate::review::selftest::describe_failure(r)).collect();
            format!(
                "the self-test failed {} of {} checks (run {}): {}{}",
                stored.failures,
                stored.checks,
                stored.id,
                first.join("; "),
                if failed.len() > first.len() { "; ..." } else { "" }
            )
        } else {
            format!("the self-test could not run (run {}): {}", stored.id, stored.error)
        };
        let alert = crate::store::alerts::NewAlert {
            rule: "selftest".into(),
            severity: "high".into(),
            category: None,
            client: "selftest".into(),
            group: groups.into_iter().collect::<Vec<_>>().join(", "),
            first_ms: stored.started_ms,
            last_ms: stored.finished_ms,
            attempts: stored.failures.max(1),
            names,
            summary,
            ..Default::default()
        };
        let raised = crate::store::alerts::AlertStore::open(database).and_then(|alerts| {
            alerts.raise(&alert, crate::time::now_ms(), |stored| crate::alerts::message::alert_messages(stored, config))
        });
        match raised {
            Ok(alert) => {
                tracing::warn!(run = stored.id, alert = alert.id, failures = stored.failures, "SELF-TEST FAILED")
            }
            Err(error) => {
                tracing::error!(run = stored.id, %error, "SELF-TEST FAILED and its alert could not be stored")
            }
        }
    } else {
        tracing::info!(run = stored.id, checks = stored.checks, "self-test passed");
    }
    Ok(crate::store::checks::RunReport { run: stored, results })
}

/// `config` with its groups as in force at `now_ms` (overrides past their
/// `until` dropped, schedule windows open): what the pipeline is built from.
pub fn in_force(config: &Config, now_ms: i64) -> Config {
    let mut in_force = config.clone();
    in_force.groups = config.groups_at(now_ms);
    in_force
}

/// Swaps in the policy in force whenever a schedule window opens or closes
/// or an override lapses, in memory (the file is not read again), and
/// records each lapse once. Wakes at least every minute, so a change of the
/// wall clock is caught, and after every reload.
async fn policy_clock(reloader: Arc<Reloader>) {
    const RECHECK: Duration = Duration::from_secs(60);
    loop {
        let now = crate::time::now_ms();
        let Some(next) = reloader.config().next_policy_change_after(now) else {
            tokio::select! {
                _ = tokio::time::sleep(RECHECK) => {}
                _ = reloader.clock.notified() => {}
            }
            continue;
        };
        let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(0)).min(RECHECK);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reloader.clock.notified() => continue,
        }
        let now = crate::time::now_ms();
        if now < next {
            continue;
        }
        let _one_at_a_time = reloader.one_at_a_time.lock().await;
        let config = reloader.config();
        apply_report(&reloader.pipeline.replace_policy_keeping_lists(&in_force(&config, now)));
        tracing::info!("policy in force changed (a schedule window or an override's expiry)");
        record_lapses(&config, now).await;
    }
}

/// Records one `lapse` change for each override of `config` past its
/// `until` that has none yet. Failures are logged: a lapse takes effect
/// whether or not it could be recorded.
pub async fn record_lapses(config: &Config, now_ms: i64) {
    let lapsed: Vec<crate::config::OverrideEntry> = config.lapsed_overrides(now_ms).cloned().collect();
    if lapsed.is_empty() {
        return;
    }
    let config = config.clone();
    let result = tokio::task::spawn_blocking(move || crate::policy_editor::record_lapses(&config, &lapsed)).await;
    if let Ok(Err(error)) = result {
        tracing::warn!(%error, "cannot record the lapsed overrides in the change log");
    }
}

/// Compares the config file with the text last recorded in the change log
/// and records a difference as a `file-edit` (see
/// [`crate::policy_editor::notice_file_edit`]). Failures are logged.
pub async fn notice_file_edit(config: &Config) {
    let Some(path) = config.file.clone() else {
        return;
    };
    let database = config.log.database.clone();
    let result =
        tokio::task::spawn_blocking(move || crate::policy_editor::notice_file_edit(&path, &database, None)).await;
    if let Ok(Err(error)) = result {
        tracing::warn!(%error, "cannot compare the config file with the change log");
    }
}

/// The whole reload (`hedgerow reload`, the control channel's `reload`,
/// SIGHUP): reads the configuration file the server started with again (the
/// embedded default is parsed again; a config given in-process, with no
/// file, stays), loads the lists it names, checks its overrides against
/// them, and swaps the whole policy (networks, groups, locks, overrides,
/// SafeSearch, block answers, rate limits, lists) into the pipeline in one
/// step; then reads the device table's groups. A config that does not
/// parse or validate, or lists that cannot be loaded, change nothing: the
/// policy in force stays and the error (file:line for the config) is logged
/// and returned. Settings that only a restart applies are reported in
/// `restart_needed` when they differ, and are not applied.
pub async fn reload_all(reloader: &Reloader) -> Result<crate::control::ReloadReport, StartError> {
    let _one_at_a_time = reloader.one_at_a_time.lock().await;
    let result = reload_policy(reloader).await;
    reloader.pipeline.metrics().reloaded(result.is_ok());
    if let Err(error) = &result {
        tracing::error!(%error, "RELOAD REFUSED: the policy in force stays");
    }
    result
}

/// The whole reload with [`Reloader::lock`] already held (a policy edit's).
pub async fn reload_policy(reloader: &Reloader) -> Result<crate::control::ReloadReport, StartError> {
    let running = reloader.config();
    let started = &reloader.started_with;
    let mut config = match &started.file {
        Some(path) => Config::load(path)?,
        None if started.source == "embedded default" => Config::parse(crate::config::DEFAULT_CONFIG, &started.source)?,
        None => Config::clone(&running),
    };
    let restart_needed = keep_restart_only(started, &mut config);
    // How lists compile is the running process's (set by `serve`), not the file's.
    config.lists.compiler = started.lists.compiler.clone();
    let config = Arc::new(config);
    let loaded = load_lists_for_reload(&config).await?;
    check_overrides(&config, &loaded.lists)?;
    let listed_names = loaded.lists.len();
    tracing::info!(listed_names, safesearch_names = loaded.safesearch.len(), "lists reloaded");
    let pipeline = &reloader.pipeline;
    let now = crate::time::now_ms();
    apply_report(&pipeline.replace_policy(&in_force(&config, now), loaded.lists, loaded.safesearch));
    reloader.current.store(config.clone());
    reloader.clock.notify_one();
    reloader.policy_changed.notify_one();
    notice_file_edit(&config).await;
    record_lapses(&config, now).await;
    warn_about_open_networks(&config);
    for what in &restart_needed {
        tracing::warn!("restart to apply: {what}");
    }
    tracing::info!(
        config = %config.source,
        groups = config.groups.len(),
        networks = config.networks.len(),
        listed_names,
        "policy reloaded"
    );
    let devices = refresh_device_groups(&config, pipeline).await;
    Ok(crate::control::ReloadReport {
        listed_names: pipeline.lists().len(),
        devices,
        config: config.source.clone(),
        restart_needed,
    })
}

/// The settings a reload cannot apply (the lists compile into data_dir, the
/// log is open on its database, the sockets are bound): each one that differs
/// between the running server (`started`) and the configuration read again
/// (`new`) is put back as started and named, as "dns.listen changed from ...
/// to ...". One list, so what is kept and what is reported cannot drift apart.
pub fn keep_restart_only(started: &Config, new: &mut Config) -> Vec<String> {
    fn keep<T: std::fmt::Debug + Clone>(key: &str, started: &T, new: &mut T, changed: &mut Vec<String>) {
        let (old, now) = (format!("{started:?}"), format!("{new:?}"));
        if old != now {
            changed.push(format!("{key} changed from {old} to {now}"));
            *new = started.clone();
        }
    }
    let mut changed = Vec::new();
    keep("dns.listen", &started.listen, &mut new.listen, &mut changed);
    keep("dns.tcp_max_connections", &started.tcp.max_connections, &mut new.tcp.max_connections, &mut changed);
    keep("dns.tcp_per_client", &started.tcp.per_client, &mut new.tcp.per_client, &mut changed);
    keep("data_dir", &started.data_dir, &mut new.data_dir, &mut changed);
    keep("[upstream]", &started.upstream, &mut new.upstream, &mut changed);
    keep("[cache]", &started.cache, &mut new.cache, &mut changed);
    keep("[log]", &started.log, &mut new.log, &mut changed);
    keep("lists.update_hours", &started.list_update_interval, &mut new.list_update_interval, &mut changed);
    // The dashboard's listeners and settings are fixed when it starts.
    keep("[dashboard]", &started.dashboard, &mut new.dashboard, &mut changed);
    // The metrics listener is bound once, at start.
    keep("[metrics]", &started.metrics, &mut new.metrics, &mut changed);
    // Who owns the policy is settled at start (the follower or notifier runs).
    keep("[sync]", &started.sync, &mut new.sync, &mut changed);
    changed
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
    apply_report(&report);
    report
}

/// Logs what applying the device table's groups did.
fn apply_report(report: &DeviceGroupsReport) {
    for why in &report.skipped {
        tracing::warn!("device table: {why}; this device gets its network's group");
    }
    tracing::info!(devices = report.applied, "device groups loaded");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A list reload, and the compiler process it starts, run in the idle
    /// class: field 41 of `/proc/<pid>/stat` is the scheduling policy.
    #[test]
    fn list_loading_and_the_compiler_it_starts_run_in_the_idle_class() {
        fn policy(stat: &str) -> i32 {
            // After the command name, which ends at the last ')': field 3 on.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            fields[41 - 3].parse().unwrap()
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (thread, child) = runtime.block_on(in_idle_class("test-idle", || {
            let thread = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let child = std::process::Command::new("cat").arg("/proc/self/stat").output().unwrap();
            (thread, String::from_utf8(child.stdout).unwrap())
        }));
        assert_eq!(policy(&thread), libc::SCHED_IDLE, "{thread}");
        assert_eq!(policy(&child), libc::SCHED_IDLE, "{child}");
        let here = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert_eq!(policy(&here), libc::SCHED_OTHER, "the caller's own thread is left as it was");
    }

    #[test]
    fn the_daily_self_test_is_due_at_its_school_time() {
        let config = Config::parse(
            "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n[selftest]\ndaily_at = \"07:30\"\n",
            "school.toml",
        )
        .unwrap();
        // 1 July 2026 (British Summer Time, UTC+1): due at 06:30 UTC.
        let summer = crate::time::parse_utc("2026-07-01T12:00:00.000Z").unwrap();
        let (day, due) = selftest_due(&config, summer).unwrap();
        assert_eq!(day.to_string(), "2026-07-01");
        assert_eq!(crate::time::format_utc(due), "2026-07-01T06:30:00.000Z");
        // 1 December (GMT): 07:30 UTC.
        let winter = crate::time::parse_utc("2026-12-01T00:10:00.000Z").unwrap();
        assert_eq!(crate::time::format_utc(selftest_due(&config, winter).unwrap().1), "2026-12-01T07:30:00.000Z");
    }
}
