//! Start-up and reload: declarations -> inputs -> the compiled list on disk,
//! reused when its inputs have not changed, rebuilt when they have, and kept
//! (the last good list) when a rebuild fails.
//!
//! Files under the data folder:
//! - `lists.compiled`: the compiled list ([`ARTEFACT`]).
//! - `downloads/<id>.txt`: the last good copy of every source: the fetcher's
//!   copy of each URL source (already extracted from its archive), and the
//!   last copy of each local `path` source that passed the same checks
//!   (`download::update_local`). Every compile reads these copies, so
//!   a source that fails keeps its last good names.
//! - `lists-health.json`: how each source stands ([`super::health`]).

use std::path::{Path, PathBuf};

use super::compile::{self, CompileInput, CompileReport, SourceReport};
use super::compiled::{CompiledLists, ListError};
use super::downloads;
use super::health::{ListHealth, SourceState};
use super::sources::{Compiler, ListSettings, SourceDecl, SourceError, load_sources};

/// The compiled list's file name inside the data folder.
pub const ARTEFACT: &str = "lists.compiled";

/// Where the compiled list lives.
pub fn artefact_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ARTEFACT)
}

/// The exit status of `hedgerow lists compile` when it wrote the lists but
/// some source failed (its last good copy, if any, was used). A server
/// compiling in a child accepts it; a person sees a failure.
pub const EXIT_DEGRADED: i32 = 3;

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
    /// How each source stands (also saved to `data_dir/lists-health.json`
    /// by the server).
    pub health: ListHealth,
}

/// The enabled sources as compile inputs, in declaration order, each read
/// from its last good copy (see `download::refresh`, which makes them).
/// Sources with no copy yet are left out and reported.
pub fn plan(sources: &[SourceDecl], data_dir: &Path) -> (Vec<CompileInput>, Vec<SourceReport>) {
    let mut inputs = Vec::new();
    let mut skipped = Vec::new();
    for source in sources.iter().filter(|source| source.enabled) {
        let text = downloads::copy(&downloads::folder(data_dir), &source.id);
        if !text.is_file() {
            skipped.push(SourceReport::skipped(
                &source.id,
                format!(
                    "no good copy yet ({} is missing): the source has never been read successfully",
                    text.display()
                ),
            ));
            continue;
        }
        inputs.push(CompileInput { id: source.id.clone(), category: source.category, format: source.format, text });
    }
    (inputs, skipped)
}

/// The start-up and reload path. Reuses `data_dir/lists.compiled` when its
/// fingerprint matches the inputs, else compiles. If the declarations cannot
/// be read or the compile fails, the existing compiled list is kept (with
/// `stale` set and the error logged); only when there is none is it an error.
///
/// `refresh` brings the last good copies up to date for the declared
/// sources and says how each stands; `lists` reads copies but never makes
/// them, so the caller hands it in (`download::prepare` does).
pub fn prepare(settings: &ListSettings, data_dir: &Path, refresh: Refresh<'_>) -> Result<Prepared, ListError> {
    build(settings, data_dir, false, refresh)
}

/// What brings the last good copies of the declared sources up to date and
/// says how each stands (`download::refresh`).
pub type Refresh<'a> = &'a dyn Fn(&[SourceDecl], &Path) -> ListHealth;

/// Like [`prepare`] but always recompiles, and a failure is an error (for
/// `hedgerow lists compile`).
pub fn rebuild(settings: &ListSettings, data_dir: &Path, refresh: Refresh<'_>) -> Result<Prepared, ListError> {
    build(settings, data_dir, true, refresh)
}

fn build(settings: &ListSettings, data_dir: &Path, always: bool, refresh: Refresh<'_>) -> Result<Prepared, ListError> {
    let path = artefact_path(data_dir);
    let mut health = ListHealth { checked_at: crate::time::unix_now(), ..ListHealth::default() };
    let mut attempt = || -> Result<Prepared, ListError> {
        let sources = load_sources(settings)?;
        if sources.is_empty() {
            return Err(ListError::Sources(SourceError {
                file: settings.dir.clone(),
                line: None,
                message: "no *.toml file here declares a list source; set `[lists] dir` to the folder of source \
                          declarations (the shipped one is `lists/`, with hedgerow.toml)"
                    .to_string(),
            }));
        }
        health = refresh(&sources, &downloads::folder(data_dir));
        let (inputs, mut skipped) = plan(&sources, data_dir);
        // A skipped source says why its own source failed, not just "no copy".
        for report in &mut skipped {
            if let Some(reason) = health.sources.iter().find(|h| h.id == report.id).and_then(|h| h.reason.clone()) {
                report.error = Some(reason);
            }
        }
        if inputs.is_empty() && sources.iter().any(|source| source.enabled) {
            let why: Vec<String> =
                skipped.iter().map(|s| format!("{}: {}", s.id, s.error.as_deref().unwrap_or("?"))).collect();
            return Err(ListError::Build {
                path: path.clone(),
                why: format!(
                    "no enabled list source has ever been read successfully, so there is nothing to filter with \
                     ({}); fix the sources, or run `hedgerow lists update` for downloads",
                    why.join("; ")
                ),
            });
        }
        if !always {
            let wanted = compile::fingerprint(&inputs);
            match CompiledLists::open(&path) {
                Ok(lists) if lists.fingerprint() == wanted => {
                    tracing::info!(path = %path.display(), names = lists.len(), "compiled lists unchanged; reusing them");
                    return Ok(Prepared {
                        lists,
                        report: None,
                        path: path.clone(),
                        stale: None,
                        health: health.clone(),
                    });
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
            return Ok(Prepared { lists, report: None, path: path.clone(), stale: None, health: health.clone() });
        }
        let mut report = compile::compile(&inputs, &path)?;
        let lists = CompiledLists::open(&path)?;
        report.sources = in_declaration_order(&sources, report.sources, skipped);
        Ok(Prepared { lists, report: Some(report), path: path.clone(), stale: None, health: health.clone() })
    };
    let result = attempt();
    match result {
        Ok(prepared) => Ok(prepared),
        Err(error) if !always => match CompiledLists::open(&path) {
            Ok(lists) => {
                tracing::error!("{error}; keeping the last good compiled lists ({} names)", lists.len());
                health.error = Some(error.to_string());
                Ok(Prepared { lists, report: None, path, stale: Some(error.to_string()), health })
            }
            Err(_) => Err(error),
        },
        Err(error) => Err(error),
    }
}

/// Whether every enabled source is in force from a fresh read.
pub fn all_sources_ok(health: &ListHealth) -> bool {
    health.sources.iter().all(|source| source.state == SourceState::Ok)
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
    // EXIT_DEGRADED: written, with some source on its last good copy (the
    // health check here has already found and logged which).
    if !status.success() && status.code() != Some(EXIT_DEGRADED) {
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
