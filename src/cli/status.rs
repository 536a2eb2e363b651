//! `hedgerow status`: ask the running server how it stands.

use std::process::ExitCode;

use anyhow::Context;
use hedgerow::config::Config;
use hedgerow::control::{Request, request};
use hedgerow::present;

use super::StatusFormat;

pub fn run(config: &Config, format: StatusFormat) -> anyhow::Result<ExitCode> {
    let reply = request(&config.data_dir, Request::Status, std::time::Duration::from_secs(10))?;
    let status = reply.status.context("the server's reply carried no status")?;
    match format {
        StatusFormat::Json => print!("{}", present::status::json(&status)?),
        StatusFormat::Table => print!("{}", present::status::table(&status)),
    }
    Ok(ExitCode::SUCCESS)
}
