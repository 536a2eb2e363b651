//! The floor: the shipped source declarations, seed lists and SafeSearch
//! map, embedded in the binary so they are always there. `hedgerow serve`
//! on the embedded default config filters wherever it is started (a folder
//! without `lists/`), and a lists folder that has no SafeSearch map still
//! gets the shipped one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::policy::SafeSearchMap;

/// Every embedded file, by its path inside a lists folder.
pub const FILES: &[(&str, &str)] = &[
    ("hedgerow.toml", include_str!("../../lists/hedgerow.toml")),
    ("seed/ads.txt", include_str!("../../lists/seed/ads.txt")),
    ("seed/ai-chat.txt", include_str!("../../lists/seed/ai-chat.txt")),
    ("seed/chat.txt", include_str!("../../lists/seed/chat.txt")),
    ("seed/csam.txt", include_str!("../../lists/seed/csam.txt")),
    ("seed/dating.txt", include_str!("../../lists/seed/dating.txt")),
    ("seed/discrimination.txt", include_str!("../../lists/seed/discrimination.txt")),
    ("seed/drugs.txt", include_str!("../../lists/seed/drugs.txt")),
    ("seed/encrypted-dns.txt", include_str!("../../lists/seed/encrypted-dns.txt")),
    ("seed/extremism.txt", include_str!("../../lists/seed/extremism.txt")),
    ("seed/fraud.txt", include_str!("../../lists/seed/fraud.txt")),
    ("seed/gambling.txt", include_str!("../../lists/seed/gambling.txt")),
    ("seed/games.txt", include_str!("../../lists/seed/games.txt")),
    ("seed/malware.txt", include_str!("../../lists/seed/malware.txt")),
    ("seed/misinformation.txt", include_str!("../../lists/seed/misinformation.txt")),
    ("seed/piracy.txt", include_str!("../../lists/seed/piracy.txt")),
    ("seed/pornography.txt", include_str!("../../lists/seed/pornography.txt")),
    ("seed/self-harm.txt", include_str!("../../lists/seed/self-harm.txt")),
    ("seed/social-media.txt", include_str!("../../lists/seed/social-media.txt")),
    ("seed/streaming.txt", include_str!("../../lists/seed/streaming.txt")),
    ("seed/terrorism.txt", include_str!("../../lists/seed/terrorism.txt")),
    ("seed/violence.txt", include_str!("../../lists/seed/violence.txt")),
    ("seed/vpn-proxy.txt", include_str!("../../lists/seed/vpn-proxy.txt")),
    ("safesearch/rewrites.toml", include_str!("../../lists/safesearch/rewrites.toml")),
];

/// The shipped SafeSearch map's text.
pub const SAFESEARCH_MAP: &str = include_str!("../../lists/safesearch/rewrites.toml");

/// Where the embedded lists are written out, inside the data folder.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join("builtin-lists")
}

/// Writes the embedded lists folder under `data_dir` (files whose content
/// already matches are left alone, so their modification times, and so the
/// compiled list's fingerprint, stay put) and returns its path.
pub fn write_out(data_dir: &Path) -> std::io::Result<PathBuf> {
    let root = folder(data_dir);
    for (name, text) in FILES {
        let path = root.join(name);
        if std::fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        crate::files::write_atomically(&path, |file| file.write_all(text.as_bytes()))?;
    }
    Ok(root)
}

/// The shipped SafeSearch map.
pub fn safesearch() -> SafeSearchMap {
    SafeSearchMap::parse(SAFESEARCH_MAP, "embedded lists/safesearch/rewrites.toml")
        .expect("the shipped SafeSearch map parses (checked by a unit test)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lists::sources::{ListSettings, load_sources};

    #[test]
    fn the_floor_declares_every_shipped_seed_and_parses() {
        assert!(!safesearch().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let root = write_out(dir.path()).unwrap();
        let sources = load_sources(&ListSettings { dir: root.clone(), ..Default::default() }).unwrap();
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/lists/seed")).unwrap().count();
        assert_eq!(sources.len(), shipped, "every seed list is declared and embedded");
        for source in &sources {
            let crate::lists::sources::Location::Path(path) = &source.location else { panic!("{}", source.id) };
            assert!(path.is_file(), "{}", path.display());
        }
        // Written again unchanged: nothing is rewritten.
        let before = std::fs::metadata(root.join("hedgerow.toml")).unwrap().modified().unwrap();
        write_out(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(root.join("hedgerow.toml")).unwrap().modified().unwrap(), before);
    }
}
