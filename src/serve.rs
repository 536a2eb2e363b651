//! Starting Hedgerow: from a validated [`Config`] to running listeners and
//! the background upkeep. Used by `hedgerow serve` and by the tests, so the
//! tests exercise exactly what a school runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dns::{DnsServer, Pipeline};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the upstream resolver: {0}")]
    Upstream(#[from] crate::dns::upstream::UpstreamError),
    #[error("cannot create the data directory {path}: {error} (set data_dir to a writable folder)")]
    DataDir { path: String, error: std::io::Error },
    #[error("{0}")]
    Listen(#[from] std::io::Error),
}

/// A running Hedgerow instance.
pub struct Running {
    pub pipeline: Arc<Pipeline>,
    server: DnsServer,
    upkeep: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The UDP addresses really bound (port 0 resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.server.udp_addrs
    }

    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.server.tcp_addrs
    }

    /// Serves until the listeners fail or the process is stopped.
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.run().await;
        self.upkeep.abort();
        result
    }

    /// Stops serving and closes the sockets.
    pub async fn stop(self) {
        self.upkeep.abort();
        self.server.stop().await;
    }
}

/// Starts the DNS server described by `config`.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        error,
    })?;
    let pipeline = Arc::new(Pipeline::new(config)?);
    let server = DnsServer::start(pipeline.clone(), &config.listen).await?;
    let upkeep = tokio::spawn({
        let pipeline = pipeline.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                pipeline.tidy();
            }
        }
    });
    tracing::info!(
        udp = ?server.udp_addrs,
        tcp = ?server.tcp_addrs,
        upstream = pipeline.upstream_description(),
        source = %config.source,
        "hedgerow is serving DNS"
    );
    Ok(Running {
        pipeline,
        server,
        upkeep,
    })
}
