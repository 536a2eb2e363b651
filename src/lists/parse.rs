//! Reads the three list formats into block and allow rules.
//!
//! | format    | a block rule               | an exception (allow)  | comments                   |
//! |-----------|----------------------------|-----------------------|----------------------------|
//! | `domains` | `example.com`, `*.example.com` | —                 | `#` (whole line or trailing) |
//! | `hosts`   | `0.0.0.0 a.example b.example` | —                  | `#`                        |
//! | `adblock` | `\|\|example.com^`          | `@@\|\|example.com^`   | `!`, `[Adblock Plus 2.0]`, `# ...` |
//!
//! A rule covers the name and all its subdomains. Every format accepts a
//! byte-order mark, CRLF line ends, upper case and internationalised names.
//! A line that cannot be used is a *bad line*: counted, the first five kept
//! as examples with the reason, and never fatal.
//!
//! Decisions worth knowing:
//! - A bare single label (`com`) in a `domains` or `hosts` file is a bad line:
//!   one stray word would otherwise block a whole top-level domain. Write
//!   `*.zip` (domains) or `||zip^` (adblock) to mean it.
//! - Adblock rules that a DNS filter cannot honour (paths, `##` cosmetic
//!   rules, regular expressions, `$` options other than `important`, `all`,
//!   `document`/`doc`) are bad lines with the reason "not a DNS-level rule".
//!   `||name` without the closing `^` is taken as `||name^`.
//! - In `hosts` files the loopback and broadcast entries (`localhost`,
//!   `localhost.localdomain`, `broadcasthost`, `ip6-localhost`, `0.0.0.0`, ...)
//!   are skipped without complaint; any address may lead the line.

use std::io::{self, BufRead};
use std::net::IpAddr;

use crate::name::{is_ip_address, normalise_into};

/// The format of a list file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Domains,
    Hosts,
    Adblock,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Domains => "domains",
            Format::Hosts => "hosts",
            Format::Adblock => "adblock",
        }
    }
}

/// One rule, with its name normalised. A rule covers the name and all its
/// subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Block(String),
    /// An adblock exception (`@@||name^`): un-blocks the list's category at
    /// this level and below.
    Allow(String),
}

/// Whether a streamed rule blocks or allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Block,
    Allow,
}

/// At most this many bad lines are kept as examples.
pub const MAX_BAD_EXAMPLES: usize = 5;
/// Example lines are cut to this many characters.
const MAX_EXAMPLE_CHARS: usize = 200;

/// What [`parse`] found.
#[derive(Debug, Default)]
pub struct ParseReport {
    pub rules: Vec<Rule>,
    /// Lines read, including comments and blank lines.
    pub lines: usize,
    pub bad_lines: usize,
    /// (line number from 1, the line, why it is bad); at most five.
    pub bad_examples: Vec<(usize, String, String)>,
}

/// Parses a whole list held in memory. Never fails: unusable lines are
/// counted in the report.
pub fn parse(text: &str, format: Format) -> ParseReport {
    let mut rules = Vec::new();
    let mut report = parse_stream(text.as_bytes(), format, |kind, name| {
        rules.push(match kind {
            RuleKind::Block => Rule::Block(name.to_string()),
            RuleKind::Allow => Rule::Allow(name.to_string()),
        })
    })
    .expect("reading from memory cannot fail");
    report.rules = rules;
    report
}

/// Parses a list from a reader, handing each rule's normalised name to
/// `on_rule` instead of collecting them: the compiler reads multi-million
/// line files this way. The returned report has no `rules`. Fails only if
/// reading fails; a line that is not UTF-8 is a bad line.
pub fn parse_stream<R: BufRead>(
    mut reader: R,
    format: Format,
    mut on_rule: impl FnMut(RuleKind, &str),
) -> io::Result<ParseReport> {
    let mut report = ParseReport::default();
    let mut raw = Vec::with_capacity(256);
    let mut scratch = String::with_capacity(256);
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw)? == 0 {
            break;
        }
        report.lines += 1;
        let number = report.lines;
        let mut bytes = raw.as_slice();
        if number == 1 {
            bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
        }
        let outcome = match std::str::from_utf8(bytes) {
            Ok(line) => parse_line(line, format, &mut scratch, &mut on_rule),
            Err(_) => Err("the line is not valid UTF-8".to_string()),
        };
        if let Err(why) = outcome {
            report.bad_lines += 1;
            if report.bad_examples.len() < MAX_BAD_EXAMPLES {
                let line = String::from_utf8_lossy(bytes);
                let line = line.trim_end_matches(['\r', '\n']);
                let shown: String = line.chars().take(MAX_EXAMPLE_CHARS).collect();
                report.bad_examples.push((number, shown, why));
            }
        }
    }
    Ok(report)
}

/// One line: `Ok` if it was used or is a comment/blank, `Err(why)` if bad.
fn parse_line(
    line: &str,
    format: Format,
    scratch: &mut String,
    on_rule: &mut impl FnMut(RuleKind, &str),
) -> Result<(), String> {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if line.is_empty() {
        return Ok(());
    }
    match format {
        Format::Domains => domains_line(line, scratch, on_rule),
        Format::Hosts => hosts_line(line, scratch, on_rule),
        Format::Adblock => adblock_line(line, scratch, on_rule),
    }
}

fn strip_hash_comment(line: &str) -> &str {
    match line.find('#') {
        Some(at) => line[..at].trim_end(),
        None => line,
    }
}

/// Normalises `name` into `scratch` and checks it is a usable list entry.
/// `whole_tld_ok`: the rule said explicitly that it means a whole TLD.
fn list_name(name: &str, whole_tld_ok: bool, scratch: &mut String) -> Result<(), String> {
    if is_ip_address(name) {
        return Err(format!("`{name}` is an IP address; lists block names (the DNS query), not addresses"));
    }
    normalise_into(name, scratch).map_err(|error| error.to_string())?;
    if !whole_tld_ok && !scratch.contains('.') {
        return Err(format!(
            "`{scratch}` is a single label, which would block a whole top-level domain; \
             write `*.{scratch}` in a domains list if that is meant"
        ));
    }
    Ok(())
}

fn domains_line(line: &str, scratch: &mut String, on_rule: &mut impl FnMut(RuleKind, &str)) -> Result<(), String> {
    let line = strip_hash_comment(line);
    if line.is_empty() {
        return Ok(());
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    if words.next().is_some() {
        if first.parse::<IpAddr>().is_ok() {
            return Err("this looks like a hosts-file line; declare the source with format = \"hosts\"".into());
        }
        return Err("more than one word on the line; a domains list has one name a line".into());
    }
    if first.starts_with("||") || first.starts_with("@@") {
        return Err("this looks like an adblock rule; declare the source with format = \"adblock\"".into());
    }
    let (name, wildcard) = match first.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (first, false),
    };
    list_name(name, wildcard, scratch)?;
    on_rule(RuleKind::Block, scratch);
    Ok(())
}

/// Host names in hosts files that are the machine itself, not a site.
const HOSTS_SKIPPED: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "localdomain",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

fn hosts_line(line: &str, scratch: &mut String, on_rule: &mut impl FnMut(RuleKind, &str)) -> Result<(), String> {
    let line = strip_hash_comment(line);
    if line.is_empty() {
        return Ok(());
    }
    let mut words = line.split_whitespace();
    let address = words.next().unwrap_or_default();
    let address = address.split('%').next().unwrap_or(address); // fe80::1%lo0
    if address.parse::<IpAddr>().is_err() {
        return Err(format!(
            "a hosts line starts with an address such as 0.0.0.0, not `{address}`; \
             for one name a line declare the source with format = \"domains\""
        ));
    }
    let mut names = 0;
    let mut first_error = None;
    for word in words {
        if HOSTS_SKIPPED.iter().any(|skip| word.eq_ignore_ascii_case(skip)) {
            names += 1;
            continue;
        }
        names += 1;
        match list_name(word, false, scratch) {
            Ok(()) => on_rule(RuleKind::Block, scratch),
            Err(why) => {
                first_error.get_or_insert(why);
            }
        }
    }
    if names == 0 {
        return Err("an address with no name after it".into());
    }
    match first_error {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// `$` options that do not change what a DNS filter should do.
const ADBLOCK_IGNORABLE_OPTIONS: &[&str] = &["important", "all", "document", "doc"];

const NOT_DNS_LEVEL: &str = "not a DNS-level rule";

fn adblock_line(line: &str, scratch: &mut String, on_rule: &mut impl FnMut(RuleKind, &str)) -> Result<(), String> {
    if line.starts_with('!') || (line.starts_with('[') && line.ends_with(']')) {
        return Ok(());
    }
    // Cosmetic rules: `##`, `#@#`, `#?#`, `#$#`, `#%#` anywhere.
    if ["##", "#@#", "#?#", "#$#", "#%#", "#@?#", "#@$#"].iter().any(|m| line.contains(m)) {
        return Err(format!("{NOT_DNS_LEVEL} (a cosmetic rule)"));
    }
    if line.starts_with('#') {
        return Ok(()); // hosts-style comment, common in DNS filter lists
    }
    let (kind, rule) = match line.strip_prefix("@@") {
        Some(rest) => (RuleKind::Allow, rest),
        None => (RuleKind::Block, line),
    };
    let Some(body) = rule.strip_prefix("||") else {
        return Err(format!("{NOT_DNS_LEVEL} (DNS rules look like `||example.com^`)"));
    };
    let (pattern, options) = match body.split_once('$') {
        Some((pattern, options)) => (pattern, Some(options)),
        None => (body, None),
    };
    if let Some(options) = options
        && let Some(unsupported) = options
            .split(',')
            .map(str::trim)
            .find(|option| !ADBLOCK_IGNORABLE_OPTIONS.iter().any(|ok| option.eq_ignore_ascii_case(ok)))
    {
        return Err(format!("{NOT_DNS_LEVEL} (the option ${unsupported})"));
    }
    let name = pattern.strip_suffix("^|").or_else(|| pattern.strip_suffix('^')).unwrap_or(pattern);
    if name.contains(['/', '^', '*', '|', '?', '=', ':']) {
        return Err(format!("{NOT_DNS_LEVEL} (it has a path, port or wildcard)"));
    }
    list_name(name, true, scratch)?;
    on_rule(kind, scratch);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(report: &ParseReport) -> Vec<&str> {
        report
            .rules
            .iter()
            .filter_map(|rule| match rule {
                Rule::Block(name) => Some(name.as_str()),
                Rule::Allow(_) => None,
            })
            .collect()
    }

    #[test]
    fn domains_format() {
        let text = "\u{feff}# a list\r\nExample.COM\r\n\r\n*.wild.example  # trailing\r\nbücher.example\nbad name here\nzip\n*.zip\n";
        let report = parse(text, Format::Domains);
        assert_eq!(blocks(&report), ["example.com", "wild.example", "xn--bcher-kva.example", "zip"]);
        assert_eq!(report.lines, 8);
        assert_eq!(report.bad_lines, 2);
        assert_eq!(report.bad_examples[0].0, 6);
        assert!(report.bad_examples[1].2.contains("single label"), "{:?}", report.bad_examples);
    }

    /// Found by fuzzing: a byte-order mark inside a line (not at the file's
    /// start) hid an address from the check, and `0.0.0.0` became a rule.
    #[test]
    fn address_behind_a_mid_line_byte_order_mark_is_a_bad_line() {
        for format in [Format::Domains, Format::Hosts, Format::Adblock] {
            let line = match format {
                Format::Domains => "0.0.0.0\u{feff}# comment\n",
                Format::Hosts => "0.0.0.0 10.0.0.\u{feff}1\n",
                Format::Adblock => "||0.0.0.0\u{feff}^\n",
            };
            let report = parse(line, format);
            assert!(report.rules.is_empty(), "{format:?}: {:?}", report.rules);
            assert_eq!(report.bad_lines, 1, "{format:?}");
        }
    }

    #[test]
    fn hosts_format() {
        let text = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n0.0.0.0 0.0.0.0\n0.0.0.0 a.example B.example # c\n127.0.0.1\tc.example\nexample.org\n0.0.0.0\n";
        let report = parse(text, Format::Hosts);
        assert_eq!(blocks(&report), ["a.example", "b.example", "c.example"]);
        assert_eq!(report.bad_lines, 2, "{:?}", report.bad_examples);
    }

    #[test]
    fn adblock_format() {
        let text = "[Adblock Plus 2.0]\n! Title: x\n||ads.example^\n@@||good.ads.example^\n||t.example^$important\n||p.example/path^\n||o.example^$third-party\nexample.com##.banner\n/regex/\n||zip^\n";
        let report = parse(text, Format::Adblock);
        assert_eq!(
            report.rules,
            [
                Rule::Block("ads.example".into()),
                Rule::Allow("good.ads.example".into()),
                Rule::Block("t.example".into()),
                Rule::Block("zip".into()),
            ]
        );
        assert_eq!(report.bad_lines, 4);
        assert!(report.bad_examples.iter().all(|(_, _, why)| why.starts_with(NOT_DNS_LEVEL)));
    }

    #[test]
    fn at_most_five_examples() {
        let text = "bad line\n".repeat(9);
        let report = parse(&text, Format::Domains);
        assert_eq!(report.bad_lines, 9);
        assert_eq!(report.bad_examples.len(), MAX_BAD_EXAMPLES);
    }

    #[test]
    fn invalid_utf8_is_a_bad_line() {
        let mut names = Vec::new();
        let report = parse_stream(&b"a.example\n\xff\xfe.example\nb.example"[..], Format::Domains, |_, n| {
            names.push(n.to_string())
        })
        .unwrap();
        assert_eq!(names, ["a.example", "b.example"]);
        assert_eq!(report.bad_lines, 1);
    }
}
