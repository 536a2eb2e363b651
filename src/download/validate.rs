//! Validation of a download or a local list before it may become the last
//! good copy: not empty, text (not binary, not a web page), has names, and
//! fewer than half its lines bad.

use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

use crate::lists::{
    parse::{self, Format},
    sources::{Location, SourceDecl},
};

/// How much of a download is searched for NUL bytes to tell binary data
/// from text (the same heuristic as git and grep).
pub(super) const SNIFF_BYTES: usize = 8 * 1024;

/// A download that passed the checks, with the validators for the next
/// conditional GET.
pub(super) struct NewList {
    pub text: String,
    pub names: usize,
    pub bad_lines: usize,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// Accepts the bytes as the new copy only if they look like a list in the
/// source's format: text, not a web page, with names to block and mostly
/// lines the parser understands (fewer than half of the lines that are not
/// blank or comments may be bad). `subject` names the bytes in messages
/// ("the download", "the file ...").
pub(super) fn validate(bytes: Vec<u8>, source: &SourceDecl, subject: &str) -> Result<NewList, String> {
    let check = where_to_check(source);
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return Err(format!(
            "{subject} is a tar archive; set `member` in {} to the file \
             inside it to use (for example `gambling/domains`)",
            source.declared_in.display()
        ));
    }
    sniff(&bytes[..bytes.len().min(SNIFF_BYTES)], subject, &check)?;
    // A stray bad byte is tolerated (lossy), a body made of them is not.
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let replaced = text.chars().filter(|&c| c == char::REPLACEMENT_CHARACTER).count();
            if replaced * 10 > text.chars().count() {
                return Err(format!("{subject} is binary data, not a text list; check {check}"));
            }
            text
        }
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    let (names, bad_lines) = judge(text.as_bytes(), text.as_bytes(), source, subject)?;
    Ok(NewList { text, names, bad_lines, etag: None, last_modified: None })
}

/// [`validate`] for a local file, read in a streaming way (a local list may
/// hold millions of names; the server checks it without holding it in
/// memory). The names it blocks and its bad lines.
pub(super) fn validate_file(path: &Path, source: &SourceDecl, subject: &str) -> Result<(usize, usize), String> {
    let open = || File::open(path).map(io::BufReader::new).map_err(|e| format!("cannot read {} ({e})", path.display()));
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    open()?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read {} ({e})", path.display()))?;
    sniff(&head, subject, &where_to_check(source))?;
    judge(open()?, open()?, source, subject)
}

fn where_to_check(source: &SourceDecl) -> String {
    match &source.location {
        Location::Url(_) => format!("the URL in {}", source.declared_in.display()),
        Location::Path(path) => format!("{} (declared in {})", path.display(), source.declared_in.display()),
    }
}

/// Rejects, from its first bytes, what is plainly not a text list: nothing
/// but white space, binary data, a web page.
fn sniff(head: &[u8], subject: &str, check: &str) -> Result<(), String> {
    if head.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{subject} is empty; check {check}"));
    }
    if head.contains(&0) {
        return Err(format!("{subject} is binary data, not a text list; check {check}"));
    }
    // Captive portals, CDNs and moved sites answer 200 with a page. Saying
    // so is clearer than "no names found".
    let head = String::from_utf8_lossy(head);
    let start: String =
        head.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}').chars().take(20).collect::<String>();
    let start = start.to_ascii_lowercase();
    if ["<!doctype", "<html", "<head", "<body", "<?xml"].iter().any(|tag| start.starts_with(tag)) {
        return Err(format!(
            "{subject} is a web page, not a list (often an error, login or \"moved\" page); check {check}"
        ));
    }
    Ok(())
}

/// Parses the list (counting, not collecting: millions of names cost no
/// memory here) and accepts it only with names to block and fewer than half
/// of its non-comment lines bad. Reads the text twice: once to parse, once
/// to count the lines that ought to be rules.
fn judge(
    parse_from: impl io::BufRead,
    count_from: impl io::BufRead,
    source: &SourceDecl,
    subject: &str,
) -> Result<(usize, usize), String> {
    let declared_in = source.declared_in.display();
    let format = source.format.as_str();
    let check = where_to_check(source);
    let mut names = 0usize;
    let report = parse::parse_stream(parse_from, source.format, |kind, _| {
        if matches!(kind, parse::RuleKind::Block) {
            names += 1;
        }
    })
    .map_err(|e| format!("cannot read {subject} ({e})"))?;
    let mut content = 0usize;
    for line in count_from.split(b'\n') {
        let line = line.map_err(|e| format!("cannot read {subject} ({e})"))?;
        if !is_blank_or_comment(&String::from_utf8_lossy(&line), source.format) {
            content += 1;
        }
    }
    let example = report
        .bad_examples
        .first()
        .map(|(number, line, why)| {
            let line: String = line.chars().take(60).collect();
            format!(" (first: line {number} `{line}`: {why})")
        })
        .unwrap_or_default();
    if content == 0 && names == 0 {
        return Err(format!("{subject} is empty (only blank lines and comments); check {check}"));
    }
    if names == 0 {
        return Err(format!(
            "{subject} holds no names to block ({content} lines, {} not understood as \
             `{format}`{example}); check {check} and `format` in {declared_in}",
            report.bad_lines
        ));
    }
    if report.bad_lines * 2 >= content {
        return Err(format!(
            "{} of {content} lines are not valid `{format}` lines{example}; check `format` \
             in {declared_in}, and that {check} still holds this list",
            report.bad_lines
        ));
    }
    Ok((names, report.bad_lines))
}

/// Whether the parser skips `line` as blank or a comment (mirrors
/// [`parse`]'s rules), so only lines that ought to be rules count when
/// judging how much of a download is bad.
fn is_blank_or_comment(line: &str, format: Format) -> bool {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    match format {
        _ if line.is_empty() => true,
        Format::Domains | Format::Hosts => line.starts_with('#'),
        // `##` and friends start adblock cosmetic rules, which are bad
        // lines, not comments.
        Format::Adblock => {
            line.starts_with('!')
                || (line.starts_with('[') && line.ends_with(']'))
                || (line.starts_with('#')
                    && !["##", "#@#", "#?#", "#$#", "#%#"].iter().any(|marker| line.starts_with(marker)))
        }
    }
}
