//! `hedgerow lists compile|update|reload`.

use std::process::ExitCode;

use hedgerow::config::Config;
use hedgerow::present;

#[derive(clap::Subcommand)]
pub enum ListsAction {
    /// Compile the enabled sources into the list file the server loads.
    Compile,
    /// Download URL sources (conditional GET; a failure keeps the last good copy), then compile.
    Update,
    /// The same as `hedgerow reload`: the whole policy (config and lists)
    /// reloads, so the lists never run ahead of the config that names them.
    Reload,
}

pub fn run(config: &Config, action: ListsAction) -> anyhow::Result<ExitCode> {
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
                let downloads = hedgerow::lists::downloads::folder(&config.data_dir);
                let total =
                    declared.iter().filter(|s| s.enabled && matches!(s.location, sources::Location::Url(_))).count();
                let mut done = 0;
                let outcomes =
                    download::update_all_with(&declared, &downloads, &config.downloads, |source, outcome| {
                        if outcome.is_none() {
                            done += 1;
                        }
                        eprintln!("{}", present::lists::download_progress(done, total, source, outcome));
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
            if let Some(report) = &prepared.report {
                print!("{}", present::lists::compile_report(report, &prepared.health, &prepared.path));
            }
            let problems: Vec<_> = prepared.health.problems().collect();
            for source in &problems {
                eprintln!("hedgerow: {}", present::lists::problem(source));
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
        ListsAction::Reload => super::reload::on(&config.data_dir),
    }
}
