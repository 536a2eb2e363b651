//! The list parsers, every format, on any bytes: a line that cannot be used
//! is a bad line, never a panic; every rule is a normalised name.
#![no_main]

use hedgerow::lists::parse::{Format, Rule, RuleKind, parse, parse_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Domains, Format::Hosts, Format::Adblock] {
        // The streamed path (how downloads are compiled) takes any bytes.
        let mut streamed = Vec::new();
        let report = parse_stream(data, format, |kind, name| streamed.push((kind, name.to_string())))
            .expect("reading from memory cannot fail");
        assert!(report.bad_lines <= report.lines);
        assert!(report.bad_examples.len() <= hedgerow::lists::parse::MAX_BAD_EXAMPLES);
        for (_, name) in &streamed {
            assert!(!name.is_empty());
            assert_eq!(hedgerow::name::normalise(name).as_deref(), Ok(name.as_str()), "rule not normalised");
        }
        // The in-memory path agrees with the streamed one on text.
        if let Ok(text) = std::str::from_utf8(data) {
            let whole = parse(text, format);
            assert_eq!(whole.lines, report.lines);
            assert_eq!(whole.bad_lines, report.bad_lines);
            let rules: Vec<(RuleKind, String)> = whole
                .rules
                .into_iter()
                .map(|rule| match rule {
                    Rule::Block(name) => (RuleKind::Block, name),
                    Rule::Allow(name) => (RuleKind::Allow, name),
                })
                .collect();
            assert_eq!(rules, streamed);
        }
    }
});
