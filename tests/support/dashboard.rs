//! A plain HTTP client for the dashboard of a real running server, as a
//! browser would use it without JavaScript: one session cookie, the CSRF
//! token read from each page's forms, the page's own origin on every POST,
//! and redirects not followed (so a test sees the 303 that acknowledges a
//! change).

use std::time::Duration;

/// One HTTP answer, body read.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// A client holding the cookies it is given (the `hedgerow_session`
/// cookie) between requests.
pub struct DashboardClient {
    base: String,
    agent: ureq::Agent,
    cookies: Vec<(String, String)>,
}

impl DashboardClient {
    /// `base` is `http://127.0.0.1:<port>`, no trailing slash.
    pub fn new(base: &str) -> DashboardClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        DashboardClient { base: base.trim_end_matches('/').to_string(), agent, cookies: Vec::new() }
    }

    pub fn get(&mut self, path: &str) -> Answer {
        let url = self.url(path);
        let mut request = self.agent.get(&url);
        if let Some(cookie) = self.cookie() {
            request = request.header("Cookie", cookie);
        }
        let response = request.call().unwrap_or_else(|error| panic!("GET {url}: {error}"));
        self.answer(response)
    }

    /// POSTs `fields` as a form from the dashboard's own origin.
    pub fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let url = self.url(path);
        let mut request = self.agent.post(&url).header("Origin", &self.base);
        if let Some(cookie) = self.cookie() {
            request = request.header("Cookie", cookie);
        }
        let response = request.send_form(fields.iter().copied()).unwrap_or_else(|error| panic!("POST {url}: {error}"));
        self.answer(response)
    }

    /// Logs in as `name` (GET /login for its CSRF token, then POST); panics
    /// unless the login is acknowledged with a redirect.
    pub fn log_in(&mut self, name: &str, password: &str) {
        let page = self.get("/login");
        let mut fields = vec![("name", name), ("password", password)];
        let token = csrf_token(&page.body);
        if let Some(token) = &token {
            fields.push(("csrf", token));
        }
        let answer = self.post_form("/login", &fields);
        assert!((300..400).contains(&answer.status), "login as {name} refused: {} {}", answer.status, answer.body);
    }

    /// The `Cookie` header this client sends (`hedgerow_session=...`), once
    /// it holds a cookie.
    pub fn cookie(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(self.cookies.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("; "))
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") { path.to_string() } else { format!("{}{path}", self.base) }
    }

    fn answer(&mut self, mut response: ureq::http::Response<ureq::Body>) -> Answer {
        for value in response.headers().get_all("set-cookie") {
            let Ok(value) = value.to_str() else { continue };
            let pair = value.split(';').next().unwrap_or("").trim();
            if let Some((name, cookie)) = pair.split_once('=') {
                self.cookies.retain(|(held, _)| held != name);
                // An empty value (or an expiry in the past) deletes it.
                let expired = value.to_ascii_lowercase().contains("max-age=0");
                if !cookie.is_empty() && !expired {
                    self.cookies.push((name.to_string(), cookie.to_string()));
                }
            }
        }
        let status = response.status().as_u16();
        let location = response.headers().get("location").and_then(|value| value.to_str().ok()).map(str::to_string);
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Answer { status, location, body }
    }
}

/// The value of the first `csrf` field in `html` (`name="csrf" value="..."`,
/// either attribute first).
pub fn csrf_token(html: &str) -> Option<String> {
    for tag in html.split('<').filter(|tag| tag.starts_with("input")) {
        let tag = tag.split('>').next().unwrap_or("");
        if attribute(tag, "name").as_deref() == Some("csrf") {
            return attribute(tag, "value");
        }
    }
    None
}

/// The value of `name="..."` in one tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let mut search = tag;
    loop {
        let at = search.find(&needle)?;
        // A whole attribute name, not the end of a longer one.
        let whole = at == 0 || search.as_bytes()[at - 1].is_ascii_whitespace();
        let rest = &search[at + needle.len()..];
        if whole {
            return rest.split('"').next().map(unescape);
        }
        search = rest;
    }
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#x27;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}
