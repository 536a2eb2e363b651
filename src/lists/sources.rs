//! Source declarations: which lists exist, their category and format, and
//! where they come from. They live in `lists/*.toml`:
//!
//! ```toml
//! [[source]]
//! id = "hedgerow-gambling"          # lower-case letters, digits, '-', '_', '.'; unique across files
//! category = "gambling"             # a category id (src/policy/category.rs)
//! format = "domains"                # domains | hosts | adblock
//! path = "seed/gambling.txt"        # relative to this file's folder ...
//! # url = "https://example.org/list.tar.gz"   # ... or a download (https only)
//! # member = "gambling/domains"     # the file inside a .tar.gz download
//! enabled = true                    # default true
//! description = "What it is, who curates it, its licence"
//! ```
//!
//! The config's `[lists] enable` / `disable` turn declared sources on or off
//! by id without editing these files.
//!
//! `categories.toml` in the same folder is not a source file: it is the
//! category table, built into the binary ([`crate::policy::category`]), so
//! the copy on disk is documentation and is skipped here. A school adds
//! categories in the config (`[[categories.custom]]`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::parse::Format;
use crate::policy::category;

/// The category table's file name in a lists folder (skipped as a source).
pub const CATEGORIES_FILE: &str = "categories.toml";

/// A declared source, checked.
#[derive(Debug, Clone)]
pub struct SourceDecl {
    pub id: String,
    /// The category's bit ([`crate::policy::category::Category::bit`]).
    pub category: u8,
    pub format: Format,
    pub location: Location,
    pub enabled: bool,
    pub description: String,
    /// The file inside a `.tar.gz` download, e.g. `gambling/domains`.
    pub member: Option<String>,
    /// The toml file that declares it.
    pub declared_in: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file, resolved relative to the declaring toml's folder.
    Path(PathBuf),
    /// A download: `https://...`, or `http://` to a loopback host (tests and
    /// local mirrors).
    Url(String),
}

/// Where declarations live and which to switch on or off (from the config).
#[derive(Debug, Clone, Default)]
pub struct ListSettings {
    /// The folder of `*.toml` declarations.
    pub dir: PathBuf,
    /// The config line that sets `dir`, or `None` when it was not written
    /// (the default `lists`, relative to the working folder). A folder the
    /// config names must exist; a missing default falls back to the lists
    /// built into the binary (see `serve::list_settings`).
    pub dir_line: Option<usize>,
    /// Ids turned on although declared `enabled = false`.
    pub enable: Vec<String>,
    /// Ids turned off although declared enabled.
    pub disable: Vec<String>,
    /// How a server builds the compiled list when its inputs changed (not
    /// a config key: `hedgerow serve` chooses a child process).
    pub compiler: Compiler,
}

/// Where a compile runs.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// On a thread of this process (the library default, and the CLI).
    #[default]
    InProcess,
    /// In a child process, `program args...`, which must write the compiled
    /// list of these same settings (`hedgerow lists compile --config F`). A
    /// compile of millions of names takes a few hundred MB for a few seconds;
    /// in a child that memory is gone when it exits, so a server's RSS
    /// during a reload stays near the old plus the new compiled lists.
    Child { program: PathBuf, args: Vec<std::ffi::OsString> },
}

/// A declaration problem: the file, the line when known, and what to change.
#[derive(Debug, Clone, thiserror::Error)]
pub struct SourceError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: Spanned<String>,
    category: Spanned<String>,
    format: Spanned<Format>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    description: String,
    member: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// One toml file's text, for turning byte spans into line numbers.
struct Declarations<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Declarations<'_> {
    fn line_of(&self, span: &Range<usize>) -> usize {
        crate::text::line_at(self.text, span.start)
    }

    fn error(&self, span: &Range<usize>, message: impl Into<String>) -> SourceError {
        SourceError { file: self.file.to_path_buf(), line: Some(self.line_of(span)), message: message.into() }
    }
}

/// Reads every `*.toml` in `settings.dir` (in file-name order) and applies
/// `enable`/`disable`. Returns every declared source, disabled ones included
/// with `enabled: false`. Unknown keys or categories, duplicate ids, a source
/// with both or neither of `path` and `url`, and URLs that are not https (or
/// http to a loopback host) are errors naming the file and line.
pub fn load_sources(settings: &ListSettings) -> Result<Vec<SourceDecl>, SourceError> {
    let dir = &settings.dir;
    let entries = std::fs::read_dir(dir).map_err(|error| SourceError {
        file: dir.clone(),
        line: None,
        message: format!(
            "cannot read the list declarations folder ({error}); set `[lists] dir` in the config \
             to the folder holding the *.toml source declarations"
        ),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .filter(|path| path.file_name().is_none_or(|name| name != CATEGORIES_FILE))
        .collect();
    files.sort();

    let mut sources: Vec<SourceDecl> = Vec::new();
    let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|error| SourceError {
            file: file.clone(),
            line: None,
            message: format!("cannot read the file ({error}); check its permissions"),
        })?;
        for (decl, line) in parse_file(file, &text)? {
            if let Some((first_file, first_line)) = seen.get(&decl.id) {
                return Err(SourceError {
                    file: file.clone(),
                    line: Some(line),
                    message: format!(
                        "the source id `{}` is already declared at {}:{}; give each source its own id",
                        decl.id,
                        first_file.display(),
                        first_line
                    ),
                });
            }
            seen.insert(decl.id.clone(), (file.clone(), line));
            sources.push(decl);
        }
    }

    for (ids, enabled) in [(&settings.enable, true), (&settings.disable, false)] {
        for id in ids {
            if enabled && settings.disable.contains(id) {
                return Err(SourceError {
                    file: dir.clone(),
                    line: None,
                    message: format!(
                        "the source `{id}` is in both `[lists] enable` and `[lists] disable`; keep it in one"
                    ),
                });
            }
            let Some(source) = sources.iter_mut().find(|source| &source.id == id) else {
                let known: Vec<&str> = sources.iter().map(|source| source.id.as_str()).collect();
                let close: Vec<&str> = known.iter().copied().filter(|known| is_close(id, known)).collect();
                let which = if enabled { "enable" } else { "disable" };
                let hint = match close.as_slice() {
                    [] => String::new(),
                    close => format!(
                        "did you mean {}? ",
                        close.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(" or ")
                    ),
                };
                return Err(SourceError {
                    file: dir.clone(),
                    line: None,
                    message: format!(
                        "`[lists] {which}` names `{id}`, which no *.toml here declares; {hint}known ids: {}",
                        known.join(", ")
                    ),
                });
            };
            source.enabled = enabled;
        }
    }
    Ok(sources)
}

/// Whether `known` is probably what `wanted` meant: one contains the other,
/// or they are at most two edits apart.
fn is_close(wanted: &str, known: &str) -> bool {
    if known.contains(wanted) || wanted.contains(known) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (wanted.chars().collect(), known.chars().collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row.push((previous[j] + cost).min(previous[j + 1] + 1).min(row[j] + 1));
        }
        previous = row;
    }
    previous[b.len()] <= 2
}

/// Parses and checks one declarations file. Returns each source with the line
/// its table starts on.
fn parse_file(file: &Path, text: &str) -> Result<Vec<(SourceDecl, usize)>, SourceError> {
    let declarations = Declarations { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|error| {
        let line = error.span().map(|span| declarations.line_of(&span));
        SourceError { file: file.to_path_buf(), line, message: error.message().trim().to_string() }
    })?;
    let folder = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::with_capacity(raw.source.len());
    for spanned in raw.source {
        let table_span = spanned.span();
        let raw = spanned.into_inner();
        let id = check_id(&declarations, &raw.id)?;
        let category = category::index_of(raw.category.get_ref()).ok_or_else(|| {
            let known = category::known_ids();
            declarations.error(
                &raw.category.span(),
                format!("unknown category `{}`; use one of: {}", raw.category.get_ref(), known.join(", ")),
            )
        })?;
        let location = match (&raw.path, &raw.url) {
            (Some(path), None) => {
                if path.get_ref().trim().is_empty() {
                    return Err(declarations.error(&path.span(), "`path` is empty; name the list file"));
                }
                Location::Path(folder.join(path.get_ref()))
            }
            (None, Some(url)) => Location::Url(check_declared_url(&declarations, url)?),
            (Some(_), Some(url)) => {
                return Err(declarations.error(
                    &url.span(),
                    format!("source `{id}` has both `path` and `url`; keep one (a local file or a download)"),
                ));
            }
            (None, None) => {
                return Err(declarations.error(
                    &table_span,
                    format!("source `{id}` has neither `path` nor `url`; add where the list comes from"),
                ));
            }
        };
        let member = match raw.member {
            None => None,
            Some(member) => {
                if matches!(location, Location::Path(_)) {
                    return Err(declarations.error(
                        &member.span(),
                        "`member` names a file inside a .tar.gz download; it only goes with `url`",
                    ));
                }
                let name = member.get_ref();
                if name.is_empty() || name.starts_with('/') || name.split('/').any(|part| part == "..") {
                    return Err(declarations.error(
                        &member.span(),
                        format!(
                            "`member = \"{name}\"` must be a relative path inside the archive, like \"gambling/domains\""
                        ),
                    ));
                }
                Some(name.clone())
            }
        };
        out.push((
            SourceDecl {
                id,
                category,
                format: *raw.format.get_ref(),
                location,
                enabled: raw.enabled,
                description: raw.description,
                member,
                declared_in: file.to_path_buf(),
            },
            declarations.line_of(&table_span),
        ));
    }
    Ok(out)
}

/// What a source id may be: [`valid_id`] in words.
pub const ID_RULE: &str = "1-64 lower-case letters, digits, '-', '_' or '.', not starting with '-', '_' or '.'";

/// The one rule for source ids. Ids name download files (`downloads/<id>.txt`)
/// and appear in logs, so they are kept to a safe alphabet that cannot escape
/// the folder or hide as a dotfile. Declarations are checked with it, and the
/// downloads check it again before naming a file.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !id.starts_with(['-', '_', '.'])
}

fn check_id(declarations: &Declarations<'_>, id: &Spanned<String>) -> Result<String, SourceError> {
    let text = id.get_ref();
    if valid_id(text) {
        Ok(text.clone())
    } else {
        Err(declarations.error(
            &id.span(),
            format!("the id `{text}` must be {ID_RULE} (it names a download file), like \"ut1-gambling\""),
        ))
    }
}

/// The one rule for source URLs, for declarations and for every download
/// and redirect: https anywhere, plain http only to this machine (tests,
/// local mirrors: `localhost`, 127.0.0.0/8, `[::1]`), a host, no user name
/// or password, no spaces. The scheme's letter case does not matter.
/// Returns why a URL is refused, to follow the URL in a message.
pub fn check_url(url: &str) -> Result<(), String> {
    let text = url.trim();
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err("must start with https://".into());
    };
    let https = scheme.eq_ignore_ascii_case("https");
    if !https && !scheme.eq_ignore_ascii_case("http") {
        return Err("must start with https://".into());
    }
    if text.chars().any(char::is_whitespace) {
        return Err("contains a space".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry a user name or password".into());
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("has no host name".into());
    }
    if !https {
        if !is_loopback_host(host) {
            return Err("uses plain http, which anyone on the path can alter; use https:// (plain http is only for \
                 127.0.0.1, localhost and [::1])"
                .into());
        }
    }
    Ok(())
}

/// This machine, as a URL's host names it: `localhost`, 127.0.0.0/8 or
/// `::1` (brackets around an IPv6 address are allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_declared_url(declarations: &Declarations<'_>, url: &Spanned<String>) -> Result<String, SourceError> {
    let text = url.get_ref().trim();
    check_url(text).map_err(|why| declarations.error(&url.span(), format!("the url `{text}` {why}")))?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(SourceDecl, usize)>, SourceError> {
        parse_file(Path::new("/lists/test.toml"), text)
    }

    #[test]
    fn a_full_declaration() {
        let text = r#"
# comment
[[source]]
id = "ut1-gambling"
category = "gambling"
format = "domains"
url = "https://dsi.ut-capitole.fr/blacklists/download/gambling.tar.gz"
member = "gambling/domains"
enabled = false
description = "UT1"

[[source]]
id = "seed"
category = "ads"
format = "adblock"
path = "seed/ads.txt"
"#;
        let sources = parse(text).unwrap();
        assert_eq!(sources.len(), 2);
        let (gambling, line) = &sources[0];
        assert_eq!(*line, 3);
        assert_eq!(gambling.category, category::index_of("gambling").unwrap());
        assert!(!gambling.enabled);
        assert_eq!(gambling.member.as_deref(), Some("gambling/domains"));
        let (seed, _) = &sources[1];
        assert!(seed.enabled);
        assert_eq!(seed.location, Location::Path(PathBuf::from("/lists/seed/ads.txt")));
        assert_eq!(seed.format, Format::Adblock);
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        let base = "[[source]]\nid = \"a\"\nformat = \"domains\"\n";
        let error = error_of(&format!("{base}category = \"gamblin\"\npath = \"x\"\n"));
        assert!(error.starts_with("/lists/test.toml:4: unknown category `gamblin`"), "{error}");
        let error = error_of(&format!("{base}category = \"gambling\"\npath = \"x\"\ncolour = 1\n"));
        assert!(error.starts_with("/lists/test.toml:6: "), "{error}");
        assert!(error.contains("colour"), "{error}");
        let error = error_of(&format!("{base}category = \"gambling\"\n"));
        assert!(error.contains("neither `path` nor `url`"), "{error}");
        let error = error_of(&format!("{base}category = \"gambling\"\npath = \"x\"\nurl = \"https://a.example/\"\n"));
        assert!(error.starts_with("/lists/test.toml:6: source `a` has both"), "{error}");
        let error = error_of(&format!("{base}category = \"gambling\"\nurl = \"http://lists.example/x\"\n"));
        assert!(error.contains("plain http"), "{error}");
        let error = error_of(&format!("{base}category = \"gambling\"\nurl = \"ftp://lists.example/x\"\n"));
        assert!(error.contains("https://"), "{error}");
        let error = error_of("[[source]]\nid = \"../x\"\nformat = \"domains\"\ncategory = \"ads\"\npath = \"x\"\n");
        assert!(error.starts_with("/lists/test.toml:2: the id"), "{error}");
        let error = error_of("[[source]]\nid = \"a\"\nformat = \"csv\"\ncategory = \"ads\"\npath = \"x\"\n");
        assert!(error.starts_with("/lists/test.toml:3: "), "{error}");
        assert!(error.contains("domains"), "{error}");
        let error = error_of(&format!("{base}category = \"ads\"\npath = \"x\"\nmember = \"a/b\"\n"));
        assert!(error.contains("only goes with `url`"), "{error}");
    }

    #[test]
    fn loopback_http_is_allowed() {
        let base = "[[source]]\nid = \"a\"\nformat = \"domains\"\ncategory = \"ads\"\n";
        for url in ["http://127.0.0.1:8080/x.txt", "http://localhost/x", "http://[::1]:99/x"] {
            assert!(parse(&format!("{base}url = \"{url}\"\n")).is_ok(), "{url}");
        }
        assert!(parse(&format!("{base}url = \"http://127.0.0.1.evil.example/x\"\n")).is_err());
    }
}
