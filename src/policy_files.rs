//! The files that make a school's policy besides the config: its lists
//! folder (the declarations, the local lists under it, the SafeSearch map
//! and the self-test names read beside them) and any local list declared
//! outside it. `hedgerow backup` archives them; the primary's policy bundle
//! (`crate::sync`) carries them to its secondaries.

use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::lists::sources::{self, Location};

/// A file of the policy: its name in an archive or bundle, and where it is now.
pub struct Source {
    pub name: String,
    pub path: PathBuf,
}

/// Adds the lists' declarations and local lists to `files`; returns the
/// lists folder copied (None: the built-in lists). The policy bundle of
/// `crate::sync` takes the same files.
pub fn lists_sources(
    config: &Config,
    files: &mut Vec<Source>,
    notes: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let dir = &config.lists.dir;
    if std::fs::read_dir(dir).is_err() && config.lists.dir_line.is_none() {
        notes.push(
            "no lists folder: the server filters with the lists built into the binary; nothing to copy".to_string(),
        );
        return Ok(None);
    }
    // The whole folder: the declarations, the local lists under it, and the
    // files read beside them (safesearch/rewrites.toml, selftest/names.toml).
    let mut found = Vec::new();
    walk(dir, Path::new(""), &mut found)?;
    found.sort();
    for relative in found {
        files.push(Source { name: format!("lists/{}", relative.to_string_lossy()), path: dir.join(&relative) });
    }
    let declared = sources::load_sources(&config.lists)
        .map_err(|error| format!("the lists' declarations have a problem, fix it first: {error}"))?;
    for source in declared {
        let Location::Path(path) = &source.location else { continue };
        if !path.is_file() {
            notes.push(format!("local source `{}`: {} is missing; not in the backup", source.id, path.display()));
            continue;
        }
        let name = match path.strip_prefix(dir) {
            Ok(relative) if safe_relative(relative) => format!("lists/{}", relative.to_string_lossy()),
            _ => {
                let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or("list".into());
                notes.push(format!(
                    "local source `{}` is declared outside the lists folder ({}): restored as outside/{}/{file}; \
                     point its `path` there",
                    source.id,
                    path.display(),
                    source.id
                ));
                format!("outside/{}/{file}", source.id)
            }
        };
        if !files.iter().any(|known| known.name == name) {
            files.push(Source { name, path: path.clone() });
        }
    }
    Ok(Some(dir.display().to_string()))
}

/// Every regular file under `dir/relative` (hidden ones skipped), relative to `dir`.
fn walk(dir: &Path, relative: &Path, found: &mut Vec<PathBuf>) -> Result<(), String> {
    let folder = dir.join(relative);
    let entries = std::fs::read_dir(&folder)
        .map_err(|error| format!("cannot read the lists folder {} ({error})", folder.display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot read the lists folder {} ({error})", folder.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = relative.join(entry.file_name());
        let kind = std::fs::metadata(entry.path())
            .map_err(|error| format!("cannot read {} ({error})", entry.path().display()))?;
        if kind.is_dir() {
            walk(dir, &path, found)?;
        } else if kind.is_file() {
            found.push(path);
        }
    }
    Ok(())
}

/// True for a relative path of plain names only (no `..`, no root).
pub fn safe_relative(path: &Path) -> bool {
    path.components().count() > 0 && path.components().all(|part| matches!(part, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_names_are_safe() {
        assert!(safe_relative(Path::new("lists/seed/games.txt")));
        assert!(safe_relative(Path::new("hedgerow.toml")));
        assert!(!safe_relative(Path::new("../hedgerow.toml")));
        assert!(!safe_relative(Path::new("lists/../../etc/passwd")));
        assert!(!safe_relative(Path::new("/etc/passwd")));
        assert!(!safe_relative(Path::new("./x")));
        assert!(!safe_relative(Path::new("")));
    }
}
