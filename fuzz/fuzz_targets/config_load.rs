//! The config loader from text: Ok or a ConfigError, never a panic. A
//! config that loads renders back to TOML that loads again.
#![no_main]

use hedgerow::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = Config::parse(text, "fuzz.toml") {
        let rendered = config.to_toml();
        if let Err(error) = Config::parse(&rendered, "rendered.toml") {
            panic!("a loaded config renders to TOML that does not load: {error}\n{rendered}");
        }
    }
});
