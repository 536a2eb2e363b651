//! Name handling, one home for every part of Hedgerow (a leaf: it depends on
//! no other module): one spelling per name ([`normalise`]: lower case, no
//! trailing dot, internationalised names in punycode (UTS 46), every label
//! checked), names reversed by label ([`push_reversed`], [`reversed_name`])
//! and the dotted form of a wire name ([`dotted`]).
//!
//! Lists, overrides and `hedgerow check` all go through [`normalise`], so a
//! name typed as `Bücher.Example.` and a list line `xn--bcher-kva.example`
//! meet as the same key.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// The longest name in presentation form without the trailing dot (RFC 1035
/// allows 255 octets on the wire, which is 253 characters written out).
pub const MAX_NAME_LEN: usize = 253;
/// The longest label (RFC 1035 section 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a usable domain name. Each message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name contains a space or other whitespace; write one name, without spaces")]
    Whitespace,
    #[error("`{0}` is an IP address, not a domain name")]
    IpAddress(String),
    #[error("the name has an empty label (a leading dot or two dots in a row)")]
    EmptyLabel,
    #[error("the label `{label}` is {len} bytes long; labels are at most 63")]
    LabelTooLong { label: String, len: usize },
    #[error("the name is {0} bytes long; names are at most 253")]
    TooLong(usize),
    #[error("the name contains {0:?}; only letters, digits, '-' and '_' may appear between the dots")]
    BadCharacter(char),
    #[error("the name is not a valid internationalised domain name (UTS 46)")]
    Idna,
}

/// Normalises a domain name: lower case, one trailing dot removed,
/// internationalised labels converted to punycode (UTS 46), every label 1-63
/// bytes of letters, digits, '-' or '_', the whole at most 253 bytes.
/// Rejects the empty name, IP addresses and names with spaces. The caller
/// trims surrounding whitespace.
pub fn normalise(name: &str) -> Result<String, NameError> {
    let mut out = String::with_capacity(name.len());
    normalise_into(name, &mut out)?;
    Ok(out)
}

/// [`normalise`] into a reused buffer (cleared first): the list compiler calls
/// this millions of times and must not allocate per name.
pub fn normalise_into(name: &str, out: &mut String) -> Result<(), NameError> {
    out.clear();
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let ascii = name.is_ascii();
    if name.bytes().any(|b| b.is_ascii_whitespace()) || (!ascii && name.chars().any(char::is_whitespace)) {
        return Err(NameError::Whitespace);
    }
    if is_ip_address(name) {
        return Err(NameError::IpAddress(name.to_string()));
    }
    if ascii && !has_punycode_label(name) {
        // The common case: plain ASCII. Lower-case it and check the labels.
        out.push_str(name);
        out.make_ascii_lowercase();
    } else {
        // Unicode, or punycode that UTS 46 must validate. The URL deny list
        // lets '_' through (real names use it) and stops '/', ':', '@'.
        if name.ends_with('.') {
            return Err(NameError::EmptyLabel);
        }
        let ascii = Uts46::new()
            .to_ascii(name.as_bytes(), AsciiDenyList::URL, Hyphens::Allow, DnsLength::Ignore)
            .map_err(|_| first_bad_character(name).unwrap_or(NameError::Idna))?;
        out.push_str(ascii.strip_suffix('.').unwrap_or(&ascii));
        if out.is_empty() {
            return Err(NameError::Empty);
        }
        // UTS 46 drops invisible characters (U+FEFF, soft hyphens) and maps
        // full-width digits, so the mapped name can be an address the input
        // was not (found by fuzzing the list parsers).
        if is_ip_address(out) {
            return Err(NameError::IpAddress(out.clone()));
        }
    }
    check_labels(out)
}

/// True for the textual forms of IPv4 and IPv6 addresses, with or without
/// the brackets a URL puts round IPv6.
pub fn is_ip_address(text: &str) -> bool {
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return text.parse::<Ipv4Addr>().is_ok();
    }
    if !text.contains(':') {
        return false; // the cheap answer for almost every name
    }
    let unbracketed = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    unbracketed.parse::<Ipv6Addr>().is_ok()
}

fn has_punycode_label(name: &str) -> bool {
    name.contains("--") && name.split('.').any(|label| label.len() >= 4 && label[..4].eq_ignore_ascii_case("xn--"))
}

/// Gives a precise message for the common UTS 46 failures (a stray '/', ':'
/// or '@' pasted from a URL).
fn first_bad_character(name: &str) -> Option<NameError> {
    name.chars().find(|c| c.is_ascii() && !is_label_byte(*c as u8) && *c != '.').map(NameError::BadCharacter)
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

/// Checks an already lower-case ASCII name label by label, in one pass.
fn check_labels(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    let mut label_len = 0;
    for (at, byte) in name.bytes().enumerate() {
        if byte == b'.' {
            if label_len == 0 {
                return Err(NameError::EmptyLabel);
            }
            label_len = 0;
        } else if is_label_byte(byte) {
            label_len += 1;
            if label_len > MAX_LABEL_LEN {
                let start = at + 1 - label_len;
                let label = name[start..].split('.').next().unwrap_or_default();
                return Err(NameError::LabelTooLong { label: label.to_string(), len: label.len() });
            }
        } else {
            // Report the character as written (the name is ASCII here).
            return Err(NameError::BadCharacter(char::from(byte)));
        }
    }
    if label_len == 0 {
        return Err(NameError::EmptyLabel);
    }
    Ok(())
}

/// Writes `name` (dotted, e.g. `www.example.com`) reversed by label
/// (`com.example.www`) onto `out`: the key order of the compiled list, which
/// puts every parent domain on the path to its subdomains.
pub fn push_reversed(name: &[u8], out: &mut Vec<u8>) {
    let mut first = true;
    for label in name.rsplit(|b| *b == b'.') {
        if !first {
            out.push(b'.');
        }
        first = false;
        out.extend_from_slice(label);
    }
}

/// A name with its labels reversed (`www.example.com` -> `com.example.www`),
/// as stored in the `rname` column so that "this domain and everything under
/// it" is one index range: `rname = 'com.example' OR rname LIKE 'com.example.%'`
/// (searched as `>= 'com.example.' AND < 'com.example/'`).
pub fn reversed_name(name: &str) -> String {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut reversed = String::with_capacity(name.len());
    for (index, label) in name.rsplit('.').enumerate() {
        if index > 0 {
            reversed.push('.');
        }
        reversed.push_str(label);
    }
    reversed
}

/// The lower-case dotted form of a name without the trailing dot, written
/// into `buffer` (no allocation): what the lists and overrides match on.
pub fn dotted<'b>(name: &Name, buffer: &'b mut [u8; 256]) -> &'b [u8] {
    let mut len = 0;
    for label in name.iter() {
        if len > 0 {
            buffer[len] = b'.';
            len += 1;
        }
        let end = (len + label.len()).min(buffer.len());
        buffer[len..end].copy_from_slice(&label[..end - len]);
        buffer[len..end].make_ascii_lowercase();
        len = end;
    }
    &buffer[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`fuzz/corpus/list_parse/crash-ip-behind-bom`): an
    /// address with an invisible or full-width character passed the address
    /// check and came out of UTS 46 as a bare address.
    #[test]
    fn address_hidden_by_invisible_or_full_width_characters_is_refused() {
        for hidden in ["0.0.0.0\u{feff}", "10.0.\u{ad}0.1", "\u{ff11}\u{ff10}.0.0.1", "1.2.3.4\u{200b}"] {
            assert!(matches!(normalise(hidden), Err(NameError::IpAddress(_))), "{hidden:?}: {:?}", normalise(hidden));
        }
        assert_eq!(normalise("b\u{fc}cher.example").unwrap(), "xn--bcher-kva.example");
    }

    #[test]
    fn lower_case_and_trailing_dot() {
        assert_eq!(normalise("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(normalise("_dmarc.example.com").unwrap(), "_dmarc.example.com");
        assert_eq!(normalise("a-b.example").unwrap(), "a-b.example");
    }

    #[test]
    fn internationalised_names_become_punycode() {
        assert_eq!(normalise("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalise("BÜCHER.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalise("xn--bcher-kva.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalise("XN--BCHER-KVA.example").unwrap(), "xn--bcher-kva.example");
        assert_eq!(normalise("münchen.de").unwrap(), "xn--mnchen-3ya.de");
    }

    #[test]
    fn rejects_what_is_not_a_name() {
        assert_eq!(normalise(""), Err(NameError::Empty));
        assert_eq!(normalise("."), Err(NameError::Empty));
        assert_eq!(normalise("exa mple.com"), Err(NameError::Whitespace));
        assert_eq!(normalise("1.2.3.4"), Err(NameError::IpAddress("1.2.3.4".into())));
        assert_eq!(normalise("::1"), Err(NameError::IpAddress("::1".into())));
        assert_eq!(normalise("[2001:db8::1]"), Err(NameError::IpAddress("[2001:db8::1]".into())));
        assert_eq!(normalise("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(normalise(".example.com"), Err(NameError::EmptyLabel));
        assert_eq!(normalise("example.com.."), Err(NameError::EmptyLabel));
        assert_eq!(normalise("example.com/path"), Err(NameError::BadCharacter('/')));
        assert_eq!(normalise("*.example.com"), Err(NameError::BadCharacter('*')));
        assert_eq!(normalise("bücher.example/x"), Err(NameError::BadCharacter('/')));
        assert!(matches!(normalise(&"a".repeat(64)), Err(NameError::LabelTooLong { len: 64, .. })));
        assert!(normalise(&"a".repeat(63)).is_ok());
        let long = vec!["abcdefghi"; 26].join("."); // 259 bytes
        assert_eq!(normalise(&long), Err(NameError::TooLong(259)));
        assert!(normalise("xn--zz.example").is_err(), "bad punycode is rejected");
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let message = normalise("a..b").unwrap_err().to_string();
        assert!(message.contains("empty label"), "{message}");
        let message = normalise("1.2.3.4").unwrap_err().to_string();
        assert!(message.contains("IP address"), "{message}");
    }

    #[test]
    fn reversal_by_label() {
        let mut out = Vec::new();
        push_reversed(b"www.example.com", &mut out);
        assert_eq!(out, b"com.example.www");
        out.clear();
        push_reversed(b"com", &mut out);
        assert_eq!(out, b"com");
    }

    #[test]
    fn dotted_is_lower_case_without_trailing_dot() {
        let mut buffer = [0u8; 256];
        let name = Name::from_ascii("WWW.Example.COM.").unwrap();
        assert_eq!(dotted(&name, &mut buffer), b"www.example.com");
        assert_eq!(dotted(&Name::root(), &mut buffer), b"");
    }

    #[test]
    fn reverses_labels() {
        assert_eq!(reversed_name("www.example.com"), "com.example.www");
        assert_eq!(reversed_name("example.com."), "com.example");
        assert_eq!(reversed_name("localhost"), "localhost");
        assert_eq!(reversed_name(""), "");
    }
}
