//! `hedgerow backup FILE` and `hedgerow restore FILE --into DIR`: the
//! arguments and the printing; the work is [`hedgerow::backup`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hedgerow::config::Config;

/// Writes the backup; exits 2 when it cannot be taken (nothing is written).
pub fn backup(file: &Path, config: Option<&PathBuf>) -> ExitCode {
    let config_file = match config {
        Some(path) => path.clone(),
        None if Path::new(super::DEFAULT_CONFIG_FILE).is_file() => PathBuf::from(super::DEFAULT_CONFIG_FILE),
        None => {
            eprintln!("give the server's config file with --config (there is no {})", super::DEFAULT_CONFIG_FILE);
            return ExitCode::from(2);
        }
    };
    let loaded = match Config::load(&config_file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    match hedgerow::backup::backup(&loaded, &config_file, file) {
        Ok(manifest) => {
            let bytes: u64 = manifest.files.iter().map(|entry| entry.size).sum();
            for note in &manifest.notes {
                eprintln!("note: {note}");
            }
            println!(
                "backed up {} ({} files, {} bytes before compression, database {}) to {}",
                config_file.display(),
                manifest.files.len(),
                bytes,
                manifest.database,
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("backup not written: {error}");
            ExitCode::from(2)
        }
    }
}

/// Restores into `into`; exits 2 when refused (nothing is changed).
pub fn restore(file: &Path, into: &Path, force: bool) -> ExitCode {
    match hedgerow::backup::restore(file, into, force) {
        Ok(restored) => {
            if let Some(previous) = &restored.previous {
                println!("the directory that was there is kept at {}", previous.display());
            }
            for note in &restored.manifest.notes {
                eprintln!("note: {note}");
            }
            println!(
                "restored the backup of {} taken {} (Hedgerow {}) into {}\nstart it with: hedgerow serve --config {}",
                restored.manifest.config_file,
                restored.manifest.created,
                restored.manifest.hedgerow_version,
                into.display(),
                restored.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nothing restored: {error}");
            ExitCode::from(2)
        }
    }
}
