//! `[block_page]`: where Hedgerow's own block page is served. A group whose
//! `block_answer` is `"block-page"` answers blocked names with
//! `block_page_ipv4`/`block_page_ipv6`: point those at this listener's
//! address (port 80 in production). Off unless `listen` is written; the
//! embedded default serves it on `127.0.0.1:8081`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::ConfigError;

/// The block page's settings, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockPageSettings {
    /// Addresses to serve it on (plain HTTP); empty: off.
    pub listen: Vec<SocketAddr>,
}

/// `[block_page]` as written.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlockPage {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    listen: Vec<Spanned<String>>,
}

/// Checks `[block_page]`; `text` and `source_name` give messages their file and line.
pub(super) fn compile(raw: RawBlockPage, text: &str, source_name: &str) -> Result<BlockPageSettings, ConfigError> {
    let mut listen = Vec::with_capacity(raw.listen.len());
    for written in &raw.listen {
        let value = written.get_ref().trim();
        let address = value.parse::<SocketAddr>().map_err(|_| ConfigError {
            source_name: source_name.to_string(),
            line: Some(crate::text::line_at(text, written.span().start)),
            message: format!(
                "[block_page] listen = {value:?} is not an address and port; write e.g. \"10.0.0.2:80\" (the address \
                 your groups' block_page_ipv4 names), or remove [block_page] to turn the block page off"
            ),
        })?;
        listen.push(address);
    }
    Ok(BlockPageSettings { listen })
}

pub(super) fn render(settings: &BlockPageSettings) -> RawBlockPage {
    RawBlockPage { listen: settings.listen.iter().map(|address| Spanned::new(0..0, address.to_string())).collect() }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const NETWORK: &str = "[[networks]]\nname = \"n\"\ncidrs = [\"10.0.0.0/24\"]\ngroup = \"pupil\"\n";

    #[test]
    fn off_unless_written_and_a_bad_address_names_its_line() {
        assert!(Config::parse(NETWORK, "school.toml").unwrap().block_page.listen.is_empty());
        let config =
            Config::parse(&format!("{NETWORK}[block_page]\nlisten = [\"10.0.0.2:80\"]\n"), "school.toml").unwrap();
        assert_eq!(config.block_page.listen, ["10.0.0.2:80".parse().unwrap()]);
        assert_eq!(Config::parse(&config.to_toml(), "rendered").unwrap().block_page, config.block_page);
        let error = Config::parse(&format!("{NETWORK}[block_page]\nlisten = [\"10.0.0.2\"]\n"), "school.toml")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("school.toml:6:") && error.contains("10.0.0.2:80"), "{error}");
    }
}
