//! `hedgerow reload` (and `hedgerow lists reload`): ask the running server
//! to read its configuration and lists again and swap the policy in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hedgerow::config::Config;

use super::load_config;

/// `hedgerow reload` and `hedgerow lists reload`. The server reads the file
/// it was started with; the config given here only says where its data_dir
/// is, so a config that no longer validates still reaches the server, which
/// refuses it and says why (a file whose data_dir cannot be found at all is
/// refused here, with the same file:line error).
pub fn run(path: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let error = match load_config(path) {
        Ok(config) => return on(&config.data_dir),
        Err(error) => error,
    };
    let refused = || {
        eprintln!("{error:#}");
        eprintln!("hedgerow: reload refused, the running server was not asked: the policy in force stays");
        Ok(ExitCode::from(2))
    };
    match path.and_then(|path| data_dir_written_in(path)) {
        // No server there to say why: say it here.
        Some(data_dir) => on(&data_dir).or_else(|_| refused()),
        None => refused(),
    }
}

/// The `data_dir` a config file that does not validate still names: its
/// top-level `data_dir = "..."` line, or the default when the top level
/// (before the first table) has none and reads as TOML.
fn data_dir_written_in(path: &Path) -> Option<PathBuf> {
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

/// Asks the server whose control socket is in `data_dir` to reload, and prints its report.
pub fn on(data_dir: &Path) -> anyhow::Result<ExitCode> {
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
