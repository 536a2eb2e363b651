//! The `hedgerow` command line: parses the arguments and hands each command
//! to its file under `src/cli/`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::{Command, ListsAction, load_config};

#[derive(Parser)]
#[command(name = "hedgerow", version, about = "A DNS filtering resolver for small schools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(matches!(cli.command, Command::Serve { .. }));
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hedgerow: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => cli::serve::run(config.as_ref()),
        Command::CheckConfig { file } => Ok(cli::check_config::run(&file)),
        Command::Status { config, format } => cli::status::run(&load_config(config.as_ref())?, format),
        Command::Reload { config } | Command::Lists { action: ListsAction::Reload, config } => {
            cli::reload::run(config.as_ref())
        }
        Command::Selftest { config, json } => {
            cli::selftest::run(config.as_ref(), if json { cli::StatusFormat::Json } else { cli::StatusFormat::Table })
        }
        Command::Lists { action, config } => cli::lists::run(&load_config(config.as_ref())?, action),
        Command::Log { action, config, format } => cli::log::run(&load_config(config.as_ref())?, action, format),
        Command::Devices { action, config, format } => {
            cli::devices::run(&load_config(config.as_ref())?, action, format)
        }
        Command::User { action, config, format } => cli::user::run(&load_config(config.as_ref())?, action, format),
        Command::Check { name, client, group, device, record_type, config } => {
            let config = load_config(config.as_ref())?;
            cli::check::run(&config, &name, cli::check::Asker::from_flags(client, group, device), &record_type)
        }
        Command::Synthesize(args) => cli::synthesize::run(args).map(|()| ExitCode::SUCCESS),
        Command::Backup { file, config } => Ok(cli::backup::backup(&file, config.as_ref())),
        Command::Restore { file, into, force } => Ok(cli::backup::restore(&file, &into, force)),
        Command::SyncKey { file } => match hedgerow::sync::make_key(&file) {
            Ok(()) => {
                println!(
                    "wrote a new sync key to {}; copy it to each secondary and name it in [sync] key_file on both",
                    file.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => {
                eprintln!("{error}");
                Ok(ExitCode::from(2))
            }
        },
    }
}
