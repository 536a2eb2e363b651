//! The SafeSearch map: which search hosts are rewritten to which safe host,
//! under which group setting. Data (`lists/safesearch/rewrites.toml`), so it
//! can be updated without a release.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::group::{GroupPolicy, YoutubeMode};

/// The group setting that turns a rewrite on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// `safesearch = true`: web search engines.
    Safesearch,
    /// `youtube = "strict"`.
    YoutubeStrict,
    /// `youtube = "moderate"`.
    YoutubeModerate,
}

impl Setting {
    fn applies_to(self, policy: &GroupPolicy) -> bool {
        match self {
            Setting::Safesearch => policy.safesearch,
            Setting::YoutubeStrict => policy.youtube == YoutubeMode::Strict,
            Setting::YoutubeModerate => policy.youtube == YoutubeMode::Moderate,
        }
    }
}

/// Where a rewritten name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A CNAME to this host (lower case, no trailing dot), whose own records follow it.
    Host(String),
    /// An A record with this address (engines that publish an address).
    Address(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub service: String,
    pub setting: Setting,
    pub target: Target,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Host(host) => write!(f, "{} SafeSearch: CNAME to {host}", self.service),
            Target::Address(address) => write!(f, "{} SafeSearch: address {address}", self.service),
        }
    }
}

/// Every rewritable name and its rewrites (YouTube names have two, strict
/// and moderate; the group's setting picks one).
#[derive(Debug, Clone, Default)]
pub struct SafeSearchMap {
    names: HashMap<String, Vec<Arc<Rewrite>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct SafeSearchError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    #[serde(default)]
    rewrite: Vec<RawRewrite>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    service: String,
    setting: Setting,
    target: Option<Spanned<String>>,
    target_address: Option<Ipv4Addr>,
    names: Vec<Spanned<String>>,
}

impl SafeSearchMap {
    /// Reads the map; a missing file is an empty map (SafeSearch then does
    /// nothing, which the server logs).
    pub fn load(path: &Path) -> Result<SafeSearchMap, SafeSearchError> {
        match std::fs::read_to_string(path) {
            Ok(text) => SafeSearchMap::parse(&text, &path.display().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(SafeSearchMap::default()),
            Err(error) => {
                Err(SafeSearchError { file: path.display().to_string(), line: None, message: error.to_string() })
            }
        }
    }

    pub fn parse(text: &str, file: &str) -> Result<SafeSearchMap, SafeSearchError> {
        let line_of = |offset: usize| Some(crate::text::line_at(text, offset));
        let error = |offset: Option<usize>, message: String| SafeSearchError {
            file: file.to_string(),
            line: offset.and_then(line_of),
            message,
        };
        let raw: RawMap =
            toml::from_str(text).map_err(|e| error(e.span().map(|s| s.start), e.message().to_string()))?;
        let mut map = SafeSearchMap::default();
        for rewrite in raw.rewrite {
            let target = match (&rewrite.target, rewrite.target_address) {
                (Some(host), None) => Target::Host(normalise(host.get_ref()).ok_or_else(|| {
                    error(Some(host.span().start), format!("target {:?} is not a host name", host.get_ref()))
                })?),
                (None, Some(address)) => Target::Address(address),
                _ => {
                    return Err(error(
                        None,
                        format!("rewrite for {:?} needs exactly one of target or target_address", rewrite.service),
                    ));
                }
            };
            let shared = Arc::new(Rewrite { service: rewrite.service, setting: rewrite.setting, target });
            for name in &rewrite.names {
                let normal = normalise(name.get_ref()).ok_or_else(|| {
                    error(Some(name.span().start), format!("{:?} is not a host name", name.get_ref()))
                })?;
                map.names.entry(normal).or_default().push(shared.clone());
            }
        }
        Ok(map)
    }

    /// The rewrite `policy` applies to `name` (lower case, no trailing dot).
    pub fn find(&self, name: &str, policy: &GroupPolicy) -> Option<&Rewrite> {
        self.names.get(name)?.iter().find(|rewrite| rewrite.setting.applies_to(policy)).map(|r| &**r)
    }

    /// Every rewritable name, for tests and the review.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn normalise(name: &str) -> Option<String> {
    crate::name::normalise(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::group::{BlockAnswer, Overrides, default_blocked};

    fn policy(safesearch: bool, youtube: YoutubeMode) -> GroupPolicy {
        GroupPolicy {
            name: "g".into(),
            description: String::new(),
            blocked: default_blocked("g"),
            allow: Overrides::default(),
            deny: Overrides::default(),
            block_answer: BlockAnswer::NxDomain,
            safesearch,
            youtube,
            bypass: true,
        }
    }

    #[test]
    fn shipped_map_loads_and_settings_pick_the_target() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/lists/safesearch/rewrites.toml");
        let map = SafeSearchMap::load(Path::new(path)).unwrap();
        assert!(map.len() > 380, "{} names", map.len());
        let strict = policy(true, YoutubeMode::Strict);
        let moderate = policy(false, YoutubeMode::Moderate);
        let off = policy(false, YoutubeMode::Off);
        assert_eq!(
            map.find("www.google.co.uk", &strict).unwrap().target,
            Target::Host("forcesafesearch.google.com".into())
        );
        assert!(map.find("www.google.co.uk", &moderate).is_none(), "web search off for this group");
        assert_eq!(map.find("www.youtube.com", &strict).unwrap().target, Target::Host("restrict.youtube.com".into()));
        assert_eq!(
            map.find("m.youtube.com", &moderate).unwrap().target,
            Target::Host("restrictmoderate.youtube.com".into())
        );
        assert!(map.find("www.youtube.com", &off).is_none());
        assert_eq!(map.find("yandex.ru", &strict).unwrap().target, Target::Address("213.180.193.56".parse().unwrap()));
        assert!(map.find("mail.google.com", &strict).is_none(), "only the search hosts");
    }

    #[test]
    fn bad_map_names_the_line() {
        let text = "[[rewrite]]\nservice = \"x\"\nsetting = \"safesearch\"\ntarget = \"safe.example\"\nnames = [\n\"ok.example\",\n\"not a name\"]\n";
        let error = SafeSearchMap::parse(text, "m.toml").unwrap_err();
        assert_eq!(error.line, Some(7), "{error}");
    }
}
