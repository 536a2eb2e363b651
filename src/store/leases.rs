//! DHCP lease files, read so the log can name devices: dnsmasq's
//! `dnsmasq.leases` and ISC dhcpd's `dhcpd.leases`. Unreadable entries are
//! skipped (a lease file is rewritten by its server while we read it).

use std::net::IpAddr;

use super::time::{digits, parse_utc};

/// One address handed out by a DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    /// `aa:bb:cc:dd:ee:ff`; `None` for DHCPv6 leases (they carry an IAID).
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// When the lease ends (UTC Unix ms); `None` for an infinite lease.
    pub ends_ms: Option<i64>,
    /// False when the server says the lease is free, expired, released, ...
    pub active: bool,
}

impl Lease {
    /// True when the lease is active and has not ended by `now_ms`.
    pub fn is_current(&self, now_ms: i64) -> bool {
        self.active && self.ends_ms.is_none_or(|ends| ends > now_ms)
    }
}

/// Parses a dnsmasq lease file: one lease per line,
/// `<expiry epoch seconds, 0 = never> <mac> <ip> <hostname or *> <client-id or *>`;
/// `duid` lines and DHCPv6 leases (IAID in place of the MAC) are understood.
pub fn parse_dnsmasq_leases(text: &str) -> Vec<Lease> {
    let mut leases = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(expiry), Some(hardware), Some(ip), Some(hostname)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Some(expiry), Ok(ip)) = (digits::<i64>(expiry), ip.parse::<IpAddr>()) else {
            continue;
        };
        leases.push(Lease {
            ip,
            mac: normalise_mac(hardware),
            hostname: (hostname != "*").then(|| hostname.to_string()),
            ends_ms: (expiry != 0).then(|| expiry.saturating_mul(1000)),
            active: true,
        });
    }
    leases
}

/// Parses an ISC dhcpd lease file (`dhcpd.leases(5)`): `lease <ip> { ... }`
/// blocks with `ends`, `binding state`, `hardware ethernet` and
/// `client-hostname`. dhcpd appends a new block each time a lease changes, so
/// only the last block of each address is kept (in file order of those last
/// blocks). Other top-level statements (`server-duid`, `failover`, `host`
/// blocks, DHCPv6 `ia-na`) are skipped.
pub fn parse_isc_leases(text: &str) -> Vec<Lease> {
    let tokens = tokenize(text);
    let mut leases = Vec::new();
    let mut position = 0;
    while position < tokens.len() {
        if let (Some(Token::Word(keyword)), Some(Token::Word(address)), Some(Token::Open)) =
            (tokens.get(position), tokens.get(position + 1), tokens.get(position + 2))
            && keyword == "lease"
        {
            let (lease, next) = lease_block(&tokens, position + 3, address.parse().ok());
            leases.extend(lease);
            position = next;
        } else {
            position = skip_statement(&tokens, position);
        }
    }
    // Keep the last block of each address.
    let mut seen = std::collections::HashSet::new();
    let mut last: Vec<Lease> = leases.into_iter().rev().filter(|lease| seen.insert(lease.ip)).collect();
    last.reverse();
    last
}

/// `aa:bb:cc:dd:ee:ff` from six octets written with `:`, `-` or `.`
/// separators (or none), in either case.
pub fn normalise_mac(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).map(|i| &hex[i * 2..i * 2 + 2]).collect();
    Some(pairs.join(":"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Open,
    Close,
    Semicolon,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => {
                tokens.push(Token::Open);
                i += 1;
            }
            b'}' => {
                tokens.push(Token::Close);
                i += 1;
            }
            b';' => {
                tokens.push(Token::Semicolon);
                i += 1;
            }
            b'"' => {
                // dhcpd escapes quotes, backslashes and unprintable bytes (\ooo).
                let mut value = Vec::new();
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        let octal = &bytes[i + 1..bytes.len().min(i + 4)];
                        if octal.len() == 3 && octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                            value.push(octal.iter().fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')));
                            i += 4;
                        } else {
                            value.push(bytes[i + 1]);
                            i += 2;
                        }
                    } else {
                        value.push(bytes[i]);
                        i += 1;
                    }
                }
                i += 1;
                tokens.push(Token::Quoted(String::from_utf8_lossy(&value).into_owned()));
            }
            byte if byte.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !b"{};\"#".contains(&bytes[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(text[start..i].to_string()));
            }
        }
    }
    tokens
}

/// Skips one statement at `position`: up to its `;`, or to the end of the
/// block it opens. Returns the position after it (always past `position`).
fn skip_statement(tokens: &[Token], mut position: usize) -> usize {
    let start = position;
    let mut depth = 0usize;
    while position < tokens.len() {
        let token = &tokens[position];
        match token {
            // The end of the enclosing block ends an unterminated statement;
            // leave it for the block's reader (a stray one is skipped).
            Token::Close if depth == 0 => return if position == start { position + 1 } else { position },
            Token::Close if depth == 1 => return position + 1,
            Token::Close => depth -= 1,
            Token::Semicolon if depth == 0 => return position + 1,
            Token::Open => depth += 1,
            _ => {}
        }
        position += 1;
    }
    position
}

/// Reads the statements of a lease block starting after its `{`. Returns the
/// lease (if its address parsed) and the position after the closing `}`.
fn lease_block(tokens: &[Token], mut position: usize, ip: Option<IpAddr>) -> (Option<Lease>, usize) {
    let mut lease = ip.map(|ip| Lease { ip, mac: None, hostname: None, ends_ms: None, active: true });
    while position < tokens.len() {
        if tokens[position] == Token::Close {
            position += 1;
            break;
        }
        let start = position;
        position = skip_statement(tokens, position);
        let statement: Vec<&str> = tokens[start..position]
            .iter()
            .take_while(|token| matches!(token, Token::Word(_) | Token::Quoted(_)))
            .map(|token| match token {
                Token::Word(text) | Token::Quoted(text) => text.as_str(),
                _ => unreachable!("filtered to words"),
            })
            .collect();
        let Some(lease) = lease.as_mut() else { continue };
        match statement.as_slice() {
            ["ends", "never"] => lease.ends_ms = None,
            ["ends", "epoch", seconds, ..] => lease.ends_ms = digits::<i64>(seconds).map(|s| s.saturating_mul(1000)),
            ["ends", _weekday, date, clock] => {
                lease.ends_ms = parse_utc(&format!("{}T{clock}", date.replace('/', "-")));
            }
            ["binding", "state", state] => lease.active = *state == "active",
            ["hardware", "ethernet", mac] => lease.mac = normalise_mac(mac),
            ["client-hostname", name] => lease.hostname = Some(name.to_string()).filter(|name| !name.is_empty()),
            _ => {}
        }
    }
    (lease, position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_macs() {
        assert_eq!(normalise_mac("3C-22-FB-12-34-56").as_deref(), Some("3c:22:fb:12:34:56"));
        assert_eq!(normalise_mac("3c22.fb12.3456").as_deref(), Some("3c:22:fb:12:34:56"));
        assert_eq!(normalise_mac("123456789"), None);
        assert_eq!(normalise_mac("3c:22:fb:12:34:5g"), None);
    }

    #[test]
    fn isc_skips_nested_blocks_and_reads_escapes() {
        let text = r#"
failover peer "pair" state { my state normal at 1 2024/05/01 08:00:00; }
lease 10.1.0.9 {
  ends 3 2024/05/01 20:00:00;
  uid "\001<\"\373;}{";
  on expiry { set x = "y"; }
  hardware ethernet 3c:22:fb:00:00:09;
  client-hostname "J\303\251r\303\264me's iPad";
}
"#;
        let leases = parse_isc_leases(text);
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].hostname.as_deref(), Some("Jérôme's iPad"));
        assert_eq!(leases[0].mac.as_deref(), Some("3c:22:fb:00:00:09"));
        assert_eq!(leases[0].ends_ms, parse_utc("2024-05-01T20:00:00"));
    }
}
