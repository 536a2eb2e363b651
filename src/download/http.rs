//! Downloading one list over HTTP(S): the request (redirects followed here,
//! each hop through the one URL rule, never from https down to http), the
//! conditional GET, the time and size limits, unpacking (gzip, tar) and the
//! failures explained for a person.

use std::{
    cell::RefCell,
    io::{self, Read},
    time::{Duration, Instant},
};

use flate2::read::GzDecoder;
use ureq::http::{StatusCode, Uri, header};

use super::state::DownloadState;
use super::validate::{NewList, validate};
use crate::lists::sources::{self, SourceDecl};

/// Redirect hops followed before giving up (browsers allow about 20; list
/// hosts use one or two).
const MAX_REDIRECTS: usize = 5;

/// How to download: limits and identity.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Limit on the whole request: connecting, every redirect and the body.
    pub timeout: Duration,
    /// Cap on the body as received, and again on the list once unpacked
    /// from gzip or tar, so a small archive cannot unpack into gigabytes.
    pub max_bytes: u64,
    /// Sent as `User-Agent`, so list publishers can see who fetches them.
    pub user_agent: String,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(60),
            // The biggest public lists (UT1 "adult", full HaGeZi) are tens of
            // MiB; this leaves room without letting a runaway server fill
            // memory on a small box.
            max_bytes: 200 * 1024 * 1024,
            user_agent: concat!("hedgerow/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

pub(super) enum Fetched {
    NotModified,
    List(NewList),
}

/// One download: request (following redirects), read within the limits,
/// unpack, validate. Errors are reasons for a person, without the
/// "keeping ..." ending.
pub(super) fn fetch(
    source: &SourceDecl,
    url: &str,
    validators: Option<&DownloadState>,
    settings: &FetchSettings,
) -> Result<Fetched, String> {
    let now = Instant::now();
    // A timeout too large to add is as good as none.
    let deadline = now.checked_add(settings.timeout).unwrap_or(now + Duration::from_secs(365 * 86_400));
    let declared_in = source.declared_in.display();
    let mut uri = check_url(url).map_err(|e| format!("{e}; fix the URL in {declared_in}"))?;

    let agent = ureq::Agent::config_builder()
        // Statuses and redirects are explained and checked below.
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(settings.user_agent.as_str())
        .build()
        .new_agent();

    let mut hops = 0;
    let mut response = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(settings.timeout, &uri));
        }
        let mut request = agent
            .get(uri.clone())
            .config()
            .timeout_global(Some(remaining))
            // A proxy from HTTPS_PROXY cannot reach this machine's loopback.
            .proxy(if is_loopback(&uri) { None } else { ureq::Proxy::try_from_env() })
            .build();
        if let Some(state) = validators {
            if let Some(etag) = &state.etag {
                request = request.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &state.last_modified {
                request = request.header(header::IF_MODIFIED_SINCE, date);
            }
        }
        let response = request.call().map_err(|e| describe_ureq(&e, &uri, settings))?;

        let status = response.status();
        if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            break response;
        }
        let location =
            response.headers().get(header::LOCATION).and_then(|value| value.to_str().ok()).ok_or_else(|| {
                format!("{uri} answered {status} without a usable Location; check the URL in {declared_in}")
            })?;
        hops += 1;
        if hops > MAX_REDIRECTS {
            return Err(format!(
                "more than {MAX_REDIRECTS} redirects starting from {url}; check the URL in {declared_in}"
            ));
        }
        let target = resolve_location(&uri, location);
        let next = check_url(&target).map_err(|e| format!("{uri} redirected to {target}, which is refused: {e}"))?;
        if is_https(&uri) && !is_https(&next) {
            return Err(format!(
                "{uri} redirected to plain http ({next}); refusing to give up https. \
                 Ask the list's publisher, or use an https URL that does not redirect"
            ));
        }
        uri = next;
    };

    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        return match validators {
            Some(_) => Ok(Fetched::NotModified),
            None => Err(format!(
                "{uri} answered 304 Not Modified to a request that was not conditional; \
                 the server is misbehaving"
            )),
        };
    }
    if !status.is_success() {
        return Err(describe_status(status, &uri, source));
    }

    let header_text = |name| {
        let value = response.headers().get(name)?.to_str().ok()?;
        Some(value.to_string())
    };
    let etag = header_text(header::ETAG);
    let last_modified = header_text(header::LAST_MODIFIED);

    // An early, clear refusal when the server admits the size up front. The
    // count while reading is what actually enforces the cap.
    if let Some(length) = response.body().content_length()
        && length > settings.max_bytes
    {
        return Err(format!(
            "{uri} is {} but the download size cap is {}; if the list really is \
             this big, raise the cap",
            human_bytes(length),
            human_bytes(settings.max_bytes)
        ));
    }

    let reading = Reading { uri: &uri, settings, deadline, failure: RefCell::new(None) };
    let member =
        source.member.as_deref().map(|m| m.trim_start_matches("./").trim_start_matches('/')).filter(|m| !m.is_empty());
    let path = uri_path(url).to_ascii_lowercase();
    let is_archive = member.is_some() || [".tar.gz", ".tgz", ".tar"].iter().any(|ext| path.ends_with(ext));
    let body = response.body_mut().as_reader();
    let bytes = reading.read_body(body, is_archive.then_some(member), source)?;

    let list = validate(bytes, source, "the download")?;
    Ok(Fetched::List(NewList { etag, last_modified, ..list }))
}

/// Shared by the layers that read a body, so the innermost one that knows
/// why reading stopped (cap, deadline, network) can say so: by the time an
/// error has come up through gzip and tar its cause is often lost.
struct Reading<'a> {
    uri: &'a Uri,
    settings: &'a FetchSettings,
    deadline: Instant,
    failure: RefCell<Option<String>>,
}

#[derive(Clone, Copy)]
enum Stage {
    /// Bytes as they come off the connection (after any Content-Encoding).
    Download,
    /// Bytes coming out of gunzip.
    Unpack,
}

impl Reading<'_> {
    /// Records why reading stopped, unless a lower layer already did.
    fn stop(&self, reason: String) {
        self.failure.borrow_mut().get_or_insert(reason);
    }

    /// The reason for a read error: the recorded one if any, else the
    /// deadline if it has passed, else `otherwise`.
    fn explain(&self, otherwise: impl FnOnce() -> String) -> String {
        if let Some(reason) = self.failure.borrow_mut().take() {
            return reason;
        }
        if Instant::now() >= self.deadline {
            return timed_out(self.settings.timeout, self.uri);
        }
        otherwise()
    }

    fn too_big(&self, stage: Stage) -> String {
        let cap = human_bytes(self.settings.max_bytes);
        match stage {
            Stage::Download => format!(
                "the download from {} is over the {cap} size cap; if the list really is \
                 this big, raise the cap",
                self.uri
            ),
            Stage::Unpack => format!(
                "the download from {} unpacks to more than the {cap} size cap; if the list \
                 really is this big, raise the cap",
                self.uri
            ),
        }
    }

    /// The list's bytes: the body itself, gunzipped if it is gzip, and if
    /// `archive` is `Some`, the chosen file from inside the tar.
    fn read_body(
        &self,
        body: impl Read,
        archive: Option<Option<&str>>,
        source: &SourceDecl,
    ) -> Result<Vec<u8>, String> {
        let mut download = Guarded::new(body, self, Stage::Download);
        // Peek at the magic number to spot gzip, whatever the URL or headers
        // say (servers label .tar.gz in every way imaginable), then put the
        // peeked bytes back in front.
        let mut magic = [0u8; 2];
        let mut got = 0;
        while got < magic.len() {
            match download.read(&mut magic[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.explain(|| e.to_string())),
            }
        }
        let stream = io::Cursor::new(magic[..got].to_vec()).chain(download);
        let gzipped = magic[..got] == [0x1f, 0x8b];
        let mut list: Box<dyn Read + '_> = if gzipped {
            Box::new(Guarded::new(GzDecoder::new(stream), self, Stage::Unpack))
        } else {
            Box::new(stream)
        };

        match archive {
            Some(member) => self.extract(list, member, source),
            None => {
                let mut bytes = Vec::new();
                list.read_to_end(&mut bytes)
                    .map_err(|e| self.explain(|| format!("reading from {} failed ({e})", self.uri)))?;
                Ok(bytes)
            }
        }
    }

    /// Takes one regular file out of a tar stream: the one whose path ends
    /// with `member` (whole path components, so `gambling/domains` matches
    /// `blacklists/gambling/domains` but not `gambling/domains.old`), or with
    /// no `member` the only file there is.
    fn extract(&self, stream: impl Read, member: Option<&str>, source: &SourceDecl) -> Result<Vec<u8>, String> {
        let declared_in = source.declared_in.display();
        let broken = |e: io::Error| {
            self.explain(|| format!("the download from {} is not a readable tar archive ({e})", self.uri))
        };
        let mut archive = tar::Archive::new(stream);
        let mut files = Vec::new();
        let mut only: Option<Vec<u8>> = None;
        for entry in archive.entries().map_err(broken)? {
            let mut entry = entry.map_err(broken)?;
            let path = entry.path().map_err(broken)?.into_owned();
            let kind = entry.header().entry_type();
            let wanted = match member {
                Some(member) => path.ends_with(member),
                None => kind.is_file(),
            };
            if wanted && (kind.is_symlink() || kind.is_hard_link()) {
                let target = entry.link_name().ok().flatten().map(|t| t.display().to_string()).unwrap_or_default();
                return Err(format!(
                    "`{}` in the archive is a link to `{target}`; set `member` in \
                     {declared_in} to the file it points to",
                    path.display()
                ));
            }
            if !kind.is_file() {
                continue;
            }
            if files.len() < 10 {
                files.push(path.display().to_string());
            }
            if !wanted {
                continue;
            }
            if member.is_none() && only.is_some() {
                return Err(format!(
                    "the archive holds several files ({} ...); set `member` in {declared_in} \
                     to the one to use",
                    files.join(", ")
                ));
            }
            if entry.header().size().is_ok_and(|size| size > self.settings.max_bytes) {
                return Err(self.too_big(Stage::Unpack));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(broken)?;
            if member.is_some() {
                return Ok(bytes);
            }
            only = Some(bytes);
        }
        if let Some(bytes) = only {
            return Ok(bytes);
        }
        let holds = if files.is_empty() { "no files at all".to_string() } else { files.join(", ") };
        Err(match member {
            Some(member) => format!(
                "the archive has no file ending in `{member}` (it holds {holds}); check \
                 `member` in {declared_in}"
            ),
            None => format!("the archive holds {holds}; check the URL in {declared_in}"),
        })
    }
}

/// A reader that enforces the size cap and the deadline, and records why it
/// stopped in the shared [`Reading`].
struct Guarded<'a, R> {
    inner: R,
    reading: &'a Reading<'a>,
    stage: Stage,
    count: u64,
}

impl<'a, R: Read> Guarded<'a, R> {
    fn new(inner: R, reading: &'a Reading<'a>, stage: Stage) -> Self {
        Guarded { inner, reading, stage, count: 0 }
    }
}

impl<R: Read> Read for Guarded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let reading = self.reading;
        // ureq's own timeout covers waiting on the network; this also covers
        // time spent unpacking.
        if Instant::now() >= reading.deadline {
            reading.stop(timed_out(reading.settings.timeout, reading.uri));
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Ask for at most one byte past the cap: enough to see it crossed,
        // without reading far beyond it.
        let room = reading.settings.max_bytes.saturating_sub(self.count) + 1;
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(n) => {
                self.count += n as u64;
                if self.count > reading.settings.max_bytes {
                    reading.stop(reading.too_big(self.stage));
                    return Err(io::Error::other("over the size cap"));
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                reading.stop(match self.stage {
                    Stage::Download => describe_io(&e, reading.uri, reading.settings),
                    Stage::Unpack => format!("the download from {} is damaged or not really gzip ({e})", reading.uri),
                });
                Err(e)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// URLs

/// Applies the one URL rule ([`sources::check_url`]) and parses the URL.
pub(super) fn check_url(url: &str) -> Result<Uri, String> {
    sources::check_url(url).map_err(|why| format!("`{}` {why}", url.trim()))?;
    url.trim().parse().map_err(|e| format!("`{url}` is not a valid URL ({e}); lists come from https:// URLs"))
}

fn is_https(uri: &Uri) -> bool {
    uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("https"))
}

fn is_loopback(uri: &Uri) -> bool {
    uri.host().is_some_and(sources::is_loopback_host)
}

/// The path part of a URL string, without query or fragment.
pub(super) fn uri_path(url: &str) -> &str {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => url,
    }
}

/// Resolves a `Location` header against the URL that sent it (RFC 3986
/// section 5.2, minus dot-segment removal, which servers do not send in
/// practice and which the check that follows makes harmless).
pub(super) fn resolve_location(base: &Uri, location: &str) -> String {
    let location = location.trim();
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map_or("", |a| a.as_str());
    if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    }
}

// ---------------------------------------------------------------------------
// Explaining failures

fn timed_out(timeout: Duration, uri: &Uri) -> String {
    format!(
        "timed out after {} downloading {uri}; the server is slow or unreachable, try \
         again later",
        human_duration(timeout)
    )
}

fn host_port(uri: &Uri) -> String {
    let host = uri.host().unwrap_or("?");
    let port = uri.port_u16().unwrap_or(if is_https(uri) { 443 } else { 80 });
    format!("{host}:{port}")
}

fn describe_status(status: StatusCode, uri: &Uri, source: &SourceDecl) -> String {
    let declared_in = source.declared_in.display();
    let advice = match status.as_u16() {
        404 | 410 => {
            format!("the list is not at this address (any more); check the URL in {declared_in}")
        }
        401 | 403 => "the server refused access; the list may need a subscription or key, \
                      or the publisher may block automated downloads"
            .to_string(),
        407 => "the proxy wants a login; put it in the proxy URL (HTTPS_PROXY)".to_string(),
        429 => "the server is limiting how often the list may be fetched; try again later".to_string(),
        500..=599 => "the server had a problem; this is usually temporary, try again later".to_string(),
        _ => format!("check the URL in {declared_in}"),
    };
    let reason = status.canonical_reason().unwrap_or("");
    format!("{uri} answered HTTP {} {reason}: {advice}", status.as_u16())
}

fn describe_ureq(error: &ureq::Error, uri: &Uri, settings: &FetchSettings) -> String {
    let at = host_port(uri);
    let host = uri.host().unwrap_or("?");
    match error {
        ureq::Error::Timeout(_) => timed_out(settings.timeout, uri),
        ureq::Error::HostNotFound => format!(
            "could not look up {host}; check the host name in the URL, and this machine's \
             own DNS settings"
        ),
        ureq::Error::ConnectionFailed => format!(
            "could not connect to {at}; check the URL, and that this machine can reach \
             the internet (firewall, proxy)"
        ),
        ureq::Error::Io(e) => describe_io(e, uri, settings),
        ureq::Error::Tls(e) => secure_failed(&at, host, e),
        ureq::Error::Rustls(e) => secure_failed(&at, host, e),
        ureq::Error::Protocol(e) => {
            format!("{at} did not answer with valid HTTP ({e}); check the URL's scheme and port")
        }
        ureq::Error::BodyExceedsLimit(_) => format!(
            "the download from {uri} is over the {} size cap; if the list really is this \
             big, raise the cap",
            human_bytes(settings.max_bytes)
        ),
        ureq::Error::Decompress(encoding, e) => {
            format!("could not decompress the {encoding} response from {at} ({e})")
        }
        ureq::Error::ConnectProxyFailed(e) => {
            format!("the proxy would not connect to {at} ({e}); check HTTPS_PROXY and NO_PROXY")
        }
        other => format!("downloading {uri} failed: {other}"),
    }
}

fn secure_failed(at: &str, host: &str, error: &dyn std::fmt::Display) -> String {
    format!(
        "the secure (TLS) connection to {at} failed ({error}); the server may not speak \
         https on this port, or its certificate is not valid for {host}. Check the URL, \
         and this machine's clock"
    )
}

fn describe_io(error: &io::Error, uri: &Uri, settings: &FetchSettings) -> String {
    // Errors from ureq's body reader arrive as io::Errors wrapping its own.
    if let Some(inner) = error.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
        return describe_ureq(inner, uri, settings);
    }
    let at = host_port(uri);
    match error.kind() {
        // rustls reports a failed handshake as invalid data.
        io::ErrorKind::InvalidData if is_https(uri) => secure_failed(&at, uri.host().unwrap_or("?"), error),
        io::ErrorKind::ConnectionRefused => format!(
            "{at} refused the connection: nothing is listening there; check the host and \
             port in the URL"
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => timed_out(settings.timeout, uri),
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => format!(
            "the connection to {at} dropped before the list was complete ({error}); try \
             again later"
        ),
        _ => format!("network error talking to {at} ({error})"),
    }
}

// ---------------------------------------------------------------------------
// Small formatting helpers

pub(super) fn human_bytes(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    let (unit, size) = match bytes {
        b if b >= MIB => ("MiB", MIB),
        b if b >= KIB => ("KiB", KIB),
        _ => return format!("{bytes} bytes"),
    };
    if bytes.is_multiple_of(size) {
        format!("{} {unit}", bytes / size)
    } else {
        format!("{:.1} {unit}", bytes as f64 / size as f64)
    }
}

pub(super) fn human_duration(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}
