//! Start-up and reload: declarations -> inputs -> the compiled list on disk,
//! reused when its inputs have not changed, rebuilt when they have, and kept
//! (the last good list) when a rebuild fails.
//!
//! Files under the data folder:
//! - `lists.compiled`: the compiled list ([`ARTEFACT`]).
//! - `downloads/<id>.txt`: the fetcher's copy of each URL source, already
//!   extracted from its archive.

use std::path::{Path, PathBuf};

use super::compile::{self, CompileInput, CompileReport, SourceReport};
use super::compiled::{CompiledLists, ListError};
use super::sources::{Compiler, ListSettings, Location, SourceDecl, load_sources};

/// The compiled list's file name inside the data folder.
pub const ARTEFACT: &str = "lists.compiled";

/// Where the compiled list lives.
pub fn artefact_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ARTEFACT)
}

/// Where the fetcher keeps a URL source's downloaded text.
pub fn download_path(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("downloads").join(format!("{id}.txt"))
}

/// The lists ready to serve.
#[derive(Debug)]
pub struct Prepared {
    pub lists: CompiledLists,
    /// `None` when the existing compiled list was reused (or kept, see `stale`).
    pub report: Option<CompileReport>,
    /// The compiled list file.
    pub path: PathBuf,
    /// `Some(why)` when building a new list failed and the last good one was
    /// kept; the error is logged too.
    pub stale: Option<String>,
}

/// The enabled sources as compile inputs, in declaration order. URL sources
/// not downloaded yet are left out and reported.
pub fn plan(sources: &[SourceDecl], data_dir: &Path) -> (Vec<CompileInput>, Vec<SourceReport>) {
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for source in sources.iter().filter(|source| source.enabled) {
        let text = match &source.location {
            Location::Path(path) => path.clone(),
            Location::Url(_) => {
                let download = download_path(data_dir, &source.id);
                if !download.is_file() {
                    skipped.push(SourceReport::skipped(
                        &source.id,
                        format!("not downloaded yet ({} is missing); run `hedgerow lists update`", download.display()),
                    ));
                    continue;
                }
                download
            }
        };
        inputs.push(CompileInput { id: source.id.clone(), category: source.category, format: source.format, text });
    }
    (inputs, skipped)
}

/// The start-up and reload path. Reuses `data_dir/lists.compiled` when its
/// fingerprint matches the inputs, else compiles. If the declarations cannot
/// be read or the compile fails, the existing compiled list is kept (with
/// `stale` set and the error logged); only when there is none is it an error.
pub fn prepare(settings: &ListSettings, data_dir: &Path) -> Result<Prepared, ListError> {
    build(settings, data_dir, false)
}

/// Like [`prepare`] but always recompiles, and a failure is an error (for
/// `hedgerow lists compile`).
pub fn rebuild(settings: &ListSettings, data_dir: &Path) -> Result<Prepared, ListError> {
    build(settings, data_dir, true)
}

fn build(settings: &ListSettings, data_dir: &Path, always: bool) -> Result<Prepared, ListError> {
    let path = artefact_path(data_dir);
    let attempt = || -> Result<Prepared, ListError> {
        let sources = load_sources(settings)?;
        let (inputs, skipped) = plan(&sources, data_dir);
        if !always {
            let wanted = compile::fingerprint(&inputs);
            match CompiledLists::open(&path) {
                Ok(lists) if lists.fingerprint() == wanted => {
                    tracing::info!(path = %path.display(), names = lists.len(), "compiled lists unchanged; reusing them");
                    return Ok(Prepared { lists, report: None, path: path.clone(), stale: None });
                }
                Ok(_) => tracing::info!("list sources changed; recompiling"),
                Err(ListError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!("{error}; recompiling"),
            }
        }
        if let (false, Compiler::Child { program, args }) = (always, &settings.compiler) {
            compile_in_child(program, args, &path)?;
            let lists = CompiledLists::open(&path)?;
            tracing::info!(names = lists.len(), path = %path.display(), "lists compiled by a child process");
            return Ok(Prepared { lists, report: None, path: path.clone(), stale: None });
        }
        let mut report = compile::compile(&inputs, &path)?;
        let lists = CompiledLists::open(&path)?;
        report.sources = in_declaration_order(&sources, report.sources, skipped);
        Ok(Prepared { lists, report: Some(report), path: path.clone(), stale: None })
    };
    match attempt() {
        Ok(prepared) => Ok(prepared),
        Err(error) if !always => match CompiledLists::open(&path) {
            Ok(lists) => {
                tracing::error!("{error}; keeping the last good compiled lists ({} names)", lists.len());
                Ok(Prepared { lists, report: None, path, stale: Some(error.to_string()) })
            }
            Err(_) => Err(error),
        },
        Err(error) => Err(error),
    }
}

/// Runs `program args...` to compile the lists to `path`; its output (the
/// per-source report and warnings) goes to this process's stderr.
fn compile_in_child(program: &Path, args: &[std::ffi::OsString], path: &Path) -> Result<(), ListError> {
    let failed = |why: String| ListError::Build { path: path.to_path_buf(), why };
    let status = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(|error| failed(format!("cannot run the list compiler {}: {error}", program.display())))?;
    if !status.success() {
        return Err(failed(format!(
            "the list compiler ({}) failed with {status}; its messages are above",
            program.display()
        )));
    }
    Ok(())
}

fn in_declaration_order(
    sources: &[SourceDecl],
    compiled: Vec<SourceReport>,
    skipped: Vec<SourceReport>,
) -> Vec<SourceReport> {
    let mut all: Vec<SourceReport> = compiled.into_iter().chain(skipped).collect();
    let position = |id: &str| sources.iter().position(|source| source.id == id).unwrap_or(usize::MAX);
    all.sort_by_key(|report| position(&report.id));
    all
}
