//! `hedgerow check-config`: validate a config file (and the lists it names)
//! and print the effective configuration. Exits 2 when it is not valid.

use std::path::Path;
use std::process::ExitCode;

use hedgerow::config::Config;

pub fn run(file: &Path) -> ExitCode {
    let config = match Config::load(file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    // Everything `serve` would load, not only the file itself.
    let lists = hedgerow::serve::check_lists(&config);
    for note in &lists.notes {
        eprintln!("note: {note}");
    }
    for error in &lists.errors {
        eprintln!("{error}");
    }
    if !lists.errors.is_empty() {
        eprintln!("{}: configuration is NOT valid ({} problem(s) above)", file.display(), lists.errors.len());
        return ExitCode::from(2);
    }
    print!("{}", config.to_toml());
    eprintln!("{}: configuration is valid ({} list sources enabled)", file.display(), lists.sources);
    ExitCode::SUCCESS
}
