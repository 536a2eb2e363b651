//! `hedgerow serve`: run the DNS server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::{load_config, serve_config_file};

pub fn run(config_path: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let path = serve_config_file(config_path)?;
    // A secondary's first start: its policy comes from the primary first.
    hedgerow::sync::follow::first_policy(&path).map_err(anyhow::Error::msg)?;
    let mut config = load_config(Some(&path))?;
    // Compiles run in a child process (see `lists::sources::Compiler`).
    if let Ok(program) = std::env::current_exe() {
        let mut args: Vec<std::ffi::OsString> = vec!["lists".into(), "compile".into()];
        args.extend(["--config".into(), std::path::absolute(&path)?.into_os_string()]);
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
}
