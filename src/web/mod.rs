//! The web dashboard: an axum [`Router`] of server-rendered pages and a JSON
//! API under `/api/`, served by Hedgerow itself.
//!
//! Every request passes, in order (outermost first):
//!
//! ```text
//! security::headers      CSP, X-Frame-Options, Referrer-Policy, nosniff, Cache-Control on every response
//! error::render          a WebError becomes an HTML page, or JSON under /api/
//! security::check_host   Host not one of [dashboard] hosts or a listen address -> 421
//! security::check_origin non-GET whose Origin (or Referer) is not this origin -> 403
//! session::load          the session cookie -> the user (request extension); non-GET: the CSRF token
//! route                  each handler's extractors: CurrentUser, RequireAdmin, ... (roles in the server)
//! ```
//!
//! - `error.rs`: [`WebError`], one error for pages and API;
//! - `security.rs`: the Host and Origin checks and the response headers;
//! - `session.rs`: the cookie, the CSRF check and the role extractors;
//! - `throttle.rs`: failed logins per account and per address;
//! - `tls.rs`: the certificate and key, and serving over TLS;
//! - `layout.rs`: the layout every page extends (nav by role, the stylesheet's URL);
//! - `assets.rs`: the stylesheet, embedded, served under a content hash;
//! - `chart.rs`: charts drawn on the server as SVG, with a table of the same figures;
//! - `pages/`: one file per page (login and setup, home, users, audit) with its API twin.

mod assets;
pub mod block_page;
pub mod chart;
mod error;
mod layout;
mod pages;
mod security;
mod session;
mod sync;
mod throttle;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};

use crate::config::Config;
use crate::dns::Pipeline;
use crate::policy_editor::PolicyEditor;
use crate::store::changes::ChangeLog;
use crate::store::{LoginAudit, Sessions, SetupTokens, StoreError, Users};

pub use error::WebError;
// Overview (issue 13): the figures and their page, for benches/overview.rs.
pub use pages::monitor::{Monitor, serve as serve_metrics};
pub use pages::overview::{Overview, figures as overview_figures, render_figures as render_overview};
pub use session::{CurrentUser, Require, RequireAdmin, RequireAnyRole, RequireDsl, RequireGovernorOrAdmin};
pub use throttle::Throttle;
pub use tls::{acceptor as tls_acceptor, serve_tls};

/// What every handler may reach. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The running resolver (for the pages to come: test a name, status).
    pipeline: Arc<Pipeline>,
    users: Users,
    sessions: Sessions,
    audit: LoginAudit,
    setup: SetupTokens,
    settings: WebSettings,
    throttle: Throttle,
    /// The configuration in force (the policy pages show it).
    config: ConfigSource,
    /// Writes policy changes; `None` when no config file can be written.
    editor: Option<Arc<PolicyEditor>>,
    changes: ChangeLog,
    /// The database of the dashboard, the query log and its roll-ups
    /// (`[log] database`): the overview reads it, `/ready` checks it.
    database: std::path::PathBuf,
    /// Lists (issue 13): the running server's whole-lists reload, and the
    /// progress of the one "update now" at a time.
    reload_lists: Option<crate::policy_editor::ReloadFn>,
    lists_update: pages::lists::UpdateSlot,
    /// Alerts (issue 14): the DSL's alerts and the outbox, in the same
    /// database as the query log they are raised from.
    alerts: crate::store::alerts::AlertStore,
    /// Checks (issue 15): the running server's self-test (`None` for a
    /// fixed config), and the checks' tables.
    selftest: Option<crate::store::checks::RunFn>,
    /// Primary, secondary or alone (`[sync]`).
    sync: crate::sync::Side,
    checks: crate::store::checks::ChecksStore,
    /// Unblock requests (issue 15), from the block page and the dashboard.
    unblock: crate::store::unblock::UnblockStore,
}

/// The configuration in force now: the server's last good reload.
pub type ConfigSource = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

/// What the policy pages read and write through.
#[derive(Clone)]
pub struct PolicyAccess {
    pub config: ConfigSource,
    pub editor: Option<Arc<PolicyEditor>>,
    /// The running server's whole-lists reload, with its reload lock
    /// taken (the Lists page's "update now" runs it after the downloads).
    pub reload_lists: Option<crate::policy_editor::ReloadFn>,
    /// The running server's self-test (the Checks page's "run now").
    pub selftest: Option<crate::store::checks::RunFn>,
    /// Primary, secondary or alone (`[sync]`).
    pub sync: crate::sync::Side,
}

impl PolicyAccess {
    /// A fixed configuration, shown read-only (no editor).
    pub fn fixed(config: &Config) -> PolicyAccess {
        let config = Arc::new(config.clone());
        PolicyAccess {
            config: Arc::new(move || config.clone()),
            editor: None,
            reload_lists: None,
            selftest: None,
            sync: crate::sync::Side::Alone,
        }
    }
}

/// The dashboard's settings, from `[dashboard]`.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Host names the Host header may carry (lower case, no port).
    pub hosts: Vec<String>,
    /// The listen addresses: their IPs are always allowed as the Host.
    pub listen: Vec<SocketAddr>,
    /// Served over TLS: cookies are Secure and the origin is https.
    pub tls: bool,
    pub idle_ms: i64,
    pub absolute_ms: i64,
}

impl WebSettings {
    pub fn from_config(config: &Config) -> WebSettings {
        let millis = |duration: std::time::Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        WebSettings {
            hosts: config.dashboard.hosts.clone(),
            listen: config.dashboard.listen.clone(),
            tls: false,
            idle_ms: millis(config.dashboard.idle),
            absolute_ms: millis(config.dashboard.absolute),
        }
    }
}

impl AppState {
    /// The state for `config`'s database (`[log] database`, where the
    /// devices table lives too), creating its tables when missing.
    /// The policy pages show `config`, read-only.
    pub fn new(pipeline: Arc<Pipeline>, config: &Config) -> Result<AppState, StoreError> {
        AppState::with_policy(
            pipeline,
            &config.log.database,
            WebSettings::from_config(config),
            PolicyAccess::fixed(config),
        )
    }

    /// The state of a running server: its configuration in force and its
    /// policy editor (see `serve::Running::policy_access`).
    pub fn with_policy(
        pipeline: Arc<Pipeline>,
        database: &std::path::Path,
        settings: WebSettings,
        policy: PolicyAccess,
    ) -> Result<AppState, StoreError> {
        Ok(AppState {
            inner: Arc::new(Inner {
                pipeline,
                users: Users::open(database)?,
                sessions: Sessions::open(database)?,
                audit: LoginAudit::open(database)?,
                setup: SetupTokens::open(database)?,
                settings,
                throttle: Throttle::default(),
                config: policy.config,
                editor: policy.editor,
                changes: ChangeLog::open(database)?,
                database: database.to_path_buf(),
                reload_lists: policy.reload_lists,
                lists_update: pages::lists::UpdateSlot::default(),
                alerts: crate::store::alerts::AlertStore::open(database)?,
                selftest: policy.selftest,
                sync: policy.sync,
                checks: crate::store::checks::ChecksStore::open(database)?,
                unblock: crate::store::unblock::UnblockStore::open(database)?,
            }),
        })
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.inner.pipeline
    }
    /// Every figure of the running server now (`/metrics` and the overview).
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.inner.pipeline.metrics().snapshot()
    }
    pub fn users(&self) -> &Users {
        &self.inner.users
    }
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }
    pub fn audit(&self) -> &LoginAudit {
        &self.inner.audit
    }
    pub fn setup_tokens(&self) -> &SetupTokens {
        &self.inner.setup
    }
    pub fn settings(&self) -> &WebSettings {
        &self.inner.settings
    }
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }
    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        (self.inner.config)()
    }
    pub fn editor(&self) -> Option<&Arc<PolicyEditor>> {
        self.inner.editor.as_ref()
    }
    pub fn changes(&self) -> &ChangeLog {
        &self.inner.changes
    }
    /// The database of the dashboard and the query log (`[log] database`).
    pub fn database(&self) -> &std::path::Path {
        &self.inner.database
    }

    /// The DSL's alerts and the outbox (issue 14).
    pub fn alerts(&self) -> &crate::store::alerts::AlertStore {
        &self.inner.alerts
    }

    /// The running server's self-test (`None` for a fixed config).
    pub(crate) fn selftest(&self) -> Option<&crate::store::checks::RunFn> {
        self.inner.selftest.as_ref()
    }

    /// Primary, secondary or alone (`[sync]`).
    pub(crate) fn sync(&self) -> &crate::sync::Side {
        &self.inner.sync
    }

    /// Why the policy pages are read-only here: on a secondary, that the
    /// policy is its primary's; else `fallback` (no writable config file).
    pub(crate) fn read_only_note(&self, fallback: &str) -> String {
        match self.sync().follower() {
            Some(follower) => format!(
                "This is a secondary server: its policy comes from the primary at {} and is changed there. Here it \
                 is shown read-only.",
                follower.primary()
            ),
            None => fallback.to_string(),
        }
    }
    /// Self-test runs and manual checks (issue 15).
    pub fn checks(&self) -> &crate::store::checks::ChecksStore {
        &self.inner.checks
    }
    /// Unblock requests (issue 15).
    pub fn unblock(&self) -> &crate::store::unblock::UnblockStore {
        &self.inner.unblock
    }

    /// The running server's whole-lists reload (`None` for a fixed config).
    pub(crate) fn reload_lists(&self) -> Option<&crate::policy_editor::ReloadFn> {
        self.inner.reload_lists.as_ref()
    }
    /// "Update now"'s progress (Lists).
    pub(crate) fn lists_update(&self) -> &pages::lists::UpdateSlot {
        &self.inner.lists_update
    }

    /// Runs store work (SQLite, Argon2) off the async workers.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&AppState) -> T + Send + 'static,
    ) -> Result<T, WebError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || work(&state))
            .await
            .map_err(|error| WebError::Internal(format!("a dashboard task failed: {error}")))
    }
}

/// The whole dashboard: every page and API route behind the checks drawn
/// in this module's documentation.
pub fn app(state: AppState) -> Router {
    Router::new()
        // Overview (issue 13, "overview"): the figures at `/` and their JSON.
        .route("/", get(pages::overview::page))
        .route("/api/overview", get(pages::overview::api))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/setup/{token}", get(pages::setup::form).post(pages::setup::submit))
        .route("/users", get(pages::users::page).post(pages::users::add))
        .route("/users/{name}/{action}", post(pages::users::change))
        .route("/audit", get(pages::audit::page))
        .route("/policy", get(pages::policy::overview))
        .route("/policy/{group}", get(pages::policy::group_page))
        .route("/policy/{group}/{form}", post(pages::policy::change))
        .route("/test", get(pages::test_name::page).post(pages::test_name::submit))
        .route("/changes", get(pages::changes::page))
        .route("/changes.csv", get(pages::changes::csv))
        // The query log explorer and the device page (issue 13, explorer).
        .route("/log", get(pages::explorer::page))
        .route("/log.csv", get(pages::explorer::csv))
        .route("/api/log", get(pages::explorer::api))
        .route("/device/{client}", get(pages::device::page))
        // Lists (issue 13, lists): the sources, "update now" and its progress, enable/disable.
        .route("/lists", get(pages::lists::page))
        .route("/lists/update", post(pages::lists::update))
        .route("/lists/source/{id}", post(pages::lists::switch))
        .route("/api/lists", get(pages::lists::api))
        .route("/api/lists/update", get(pages::lists::api_progress).post(pages::lists::api_update))
        .route("/api/lists/source/{id}", post(pages::lists::api_switch))
        // The Devices page (issue 13, devices): the table, add/edit/remove, CSV in and out, leases.
        .route("/devices", get(pages::devices::page).post(pages::devices::add))
        .route("/devices.csv", get(pages::devices::csv))
        .route("/devices/import", post(pages::devices::import))
        .route("/devices/leases", post(pages::devices::read_leases))
        .route("/devices/{id}/edit", get(pages::devices::edit_form).post(pages::devices::edit))
        .route("/devices/{id}/remove", post(pages::devices::remove))
        .route("/api/devices", get(pages::devices::api))
        // Alerts (issue 14): the DSL's inbox (governors: the year's counts), one alert and its
        // record, the rules (saved through the policy editor), delivery and the outbox.
        .route("/alerts", get(pages::alerts::page))
        .route("/alerts/rules", get(pages::alerts::rules).post(pages::alerts::add_rule))
        .route("/alerts/rules/{id}", post(pages::alerts::change_rule))
        .route("/alerts/delivery", get(pages::alerts::delivery))
        .route("/alerts/delivery/test/{channel}", post(pages::alerts::send_test))
        .route("/alerts/delivery/retry/{id}", post(pages::alerts::retry))
        .route("/alerts/{id}", get(pages::alerts::detail))
        .route("/alerts/{id}/{action}", post(pages::alerts::action))
        .route("/api/alerts", get(pages::alerts::api_list))
        .route("/api/alerts/summary", get(pages::alerts::api_summary))
        .route("/api/alerts/{id}", get(pages::alerts::api_detail))
        .route("/api/alerts/{id}/{action}", post(pages::alerts::api_action))
        .route("/api/alerts/rules/{id}", post(pages::alerts::api_change_rule))
        // Checks (issue 15): the self-test (run now, the latest run, history, each run) and the
        // manual checks log (DSL and admins; governors see the review's summary instead).
        .route("/checks", get(pages::checks::page))
        .route("/checks.csv", get(pages::checks::csv))
        .route("/checks/selftest", post(pages::checks::run_now))
        .route("/checks/selftest/{id}", get(pages::checks::run_page))
        .route("/checks/manual", post(pages::checks::add_manual))
        .route("/api/checks", get(pages::checks::api))
        .route("/api/checks/selftest", post(pages::checks::api_run))
        .route("/api/checks/manual", post(pages::checks::api_manual))
        // Unblock requests (issue 15): admins decide them (approve: an allow override through the
        // policy editor; decline: a reply); staff users (admin, dsl) ask from the dashboard.
        .route("/requests", get(pages::requests::page))
        .route("/requests/new", get(pages::requests::new_form).post(pages::requests::new_submit))
        .route("/requests/{action}", post(pages::requests::decide))
        .route("/api/requests", get(pages::requests::api_list).post(pages::requests::api_decide))
        // The annual filtering review (issue 15): every role reads it; the DSL and admins fill in
        // the draft and mark it complete; a complete review refuses every change (409).
        .route("/review", get(pages::review::page))
        .route("/review/{year}/save", post(pages::review::save))
        .route("/review/{year}/actions", post(pages::review::add_action))
        .route("/review/{year}/actions/{id}", post(pages::review::edit_action))
        .route("/review/{year}/actions/{id}/remove", post(pages::review::remove_action))
        .route("/review/{year}/complete", post(pages::review::complete))
        .route("/api/review", get(pages::review::api))
        .route("/api/review/{year}/save", post(pages::review::api_save))
        .route("/api/review/{year}/actions", post(pages::review::api_add_action))
        .route("/api/review/{year}/actions/{id}", post(pages::review::api_edit_action))
        .route("/api/review/{year}/actions/{id}/remove", post(pages::review::api_remove_action))
        .route("/api/review/{year}/complete", post(pages::review::api_complete))
        .route("/api/me", get(pages::home::api_me))
        .route("/api/users", get(pages::users::api_list).post(pages::users::api_add))
        .route("/api/audit", get(pages::audit::api_list))
        .route("/api/policy", get(pages::policy::api_overview))
        .route("/api/check", post(pages::test_name::api_check))
        .route("/api/changes", get(pages::changes::api_list))
        .route("/api/policy/{group}", get(pages::policy::api_group).post(pages::policy::api_change))
        // Primary and secondary (issue 16): the pair's page, and the signed machine-to-machine routes.
        .route("/servers", get(pages::servers::page))
        .route("/servers/sync", post(pages::servers::sync_now))
        .route("/api/servers", get(pages::servers::api))
        .route(crate::sync::PULL_PATH, post(sync::pull))
        .route(crate::sync::NOTIFY_PATH, post(sync::notify))
        .route("/static/{file}", get(assets::serve))
        // monitor: liveness and readiness, no login (the metrics listener serves them too)
        .route("/health", get(pages::monitor::health))
        .route("/ready", get(pages::monitor::dashboard_ready))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), session::load))
        .layer(from_fn_with_state(state.clone(), security::check_origin))
        .layer(from_fn_with_state(state.clone(), security::check_host))
        .layer(axum::middleware::from_fn(error::render))
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}

/// Serves the dashboard on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, app(state).into_make_service_with_connect_info::<SocketAddr>()).await
}
