//! `hedgerow selftest`: asks the running server (through its control
//! socket) to run the built-in self-test, and prints the run. Exit 0 when
//! every check passed, 1 on any failure, 2 when the server could not be asked.

use std::path::PathBuf;
use std::process::ExitCode;

use hedgerow::control::{ControlError, Request, request};

use super::{StatusFormat, load_config};

/// How long the server may take: every group's questions, upstream included.
const WAIT: std::time::Duration = std::time::Duration::from_secs(300);

pub fn run(path: Option<&PathBuf>, format: StatusFormat) -> anyhow::Result<ExitCode> {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("hedgerow: {error:#}");
            eprintln!("hedgerow: the self-test did not run: the server could not be found");
            return Ok(ExitCode::from(2));
        }
    };
    let reply = match request(&config.data_dir, Request::Selftest, WAIT) {
        Ok(reply) => reply,
        Err(error @ ControlError::NotRunning { .. }) => {
            eprintln!("hedgerow: {error}");
            eprintln!("hedgerow: the self-test asks the running server; start it first (hedgerow serve --config ...)");
            return Ok(ExitCode::from(2));
        }
        Err(error) => {
            eprintln!("hedgerow: {error}");
            eprintln!("hedgerow: the self-test did not run");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(report) = reply.selftest else {
        eprintln!("hedgerow: the server did not return a self-test run (an older server?)");
        return Ok(ExitCode::from(2));
    };
    match format {
        StatusFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        StatusFormat::Table => print!("{}", hedgerow::present::selftest::table(&report)),
    }
    Ok(if report.run.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
