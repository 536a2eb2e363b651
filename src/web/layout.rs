//! The layout every page extends: the title, who is logged in, a nav of
//! only what their roles may use, the logout form's CSRF token, and the
//! stylesheet's URL (named by a hash of its content, so it can be cached
//! for a year).

use std::sync::LazyLock;

use crate::store::{Role, User};

pub(super) const STYLESHEET: &str = include_str!("../../web/static/hedgerow.css");

/// `hedgerow.<hash>.css`.
pub(super) static STYLESHEET_NAME: LazyLock<String> =
    LazyLock::new(|| format!("hedgerow.{:016x}.css", fnv1a(STYLESHEET)));

/// The stylesheet's URL, for the layout.
pub(super) fn stylesheet_url() -> String {
    format!("/static/{}", *STYLESHEET_NAME)
}

pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// What the shared layout shows: the title, who is logged in, the nav
/// (only what their roles may use) and the CSRF token for the logout form.
pub struct Layout {
    pub title: String,
    pub stylesheet: String,
    pub user: Option<LayoutUser>,
    pub csrf: String,
    pub nav: Vec<NavItem>,
    /// A line under the header on every page (a secondary says whose policy it follows).
    pub server_note: Option<ServerNote>,
}

/// A line about this server shown on every page; `bad` when it needs action.
#[derive(Debug, Clone)]
pub struct ServerNote {
    pub text: String,
    pub bad: bool,
}

pub struct LayoutUser {
    pub name: String,
    pub roles: String,
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
    /// A count shown after the label ("Alerts 3"), with its meaning for screen readers.
    pub badge: Option<(i64, &'static str)>,
}

/// Who a page is for: the user, the session's CSRF token, and the open
/// alerts for the nav (implemented by the session's extractors).
pub trait Viewer {
    fn user(&self) -> &User;
    fn csrf(&self) -> &str;
    /// Alerts not acknowledged yet, when this viewer is shown them.
    fn open_alerts(&self) -> Option<i64>;
    /// Unblock requests waiting for a decision, when this viewer decides them.
    fn open_requests(&self) -> Option<i64> {
        None
    }
    /// The line about this server (a secondary's), when there is one.
    fn server_note(&self) -> Option<&ServerNote> {
        None
    }
}

impl<V: Viewer + ?Sized> Viewer for &V {
    fn user(&self) -> &User {
        (**self).user()
    }
    fn csrf(&self) -> &str {
        (**self).csrf()
    }
    fn open_alerts(&self) -> Option<i64> {
        (**self).open_alerts()
    }
    fn open_requests(&self) -> Option<i64> {
        (**self).open_requests()
    }
    fn server_note(&self) -> Option<&ServerNote> {
        (**self).server_note()
    }
}

impl NavItem {
    fn new(href: &'static str, label: &'static str, current: bool) -> NavItem {
        NavItem { href, label, current, badge: None }
    }
}

impl Layout {
    /// For pages shown before login (and errors).
    pub fn anonymous(title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            stylesheet: stylesheet_url(),
            user: None,
            csrf: String::new(),
            nav: Vec::new(),
            server_note: None,
        }
    }

    /// For a logged-in user on the page at `path`.
    pub fn for_user(title: &str, current: &impl Viewer, path: &str) -> Layout {
        let (user, csrf) = (current.user(), current.csrf());
        let mut nav = vec![NavItem::new("/", "Home", path == "/")];
        let here = |href: &str| path == href || path.starts_with(&format!("{href}/"));
        if user.has(Role::Admin) || user.has(Role::Governor) {
            nav.push(NavItem::new("/policy", "Policy", here("/policy")));
        }
        if Role::ALL.iter().any(|role| user.has(*role)) {
            nav.push(NavItem::new("/test", "Test a name", here("/test")));
            nav.push(NavItem::new("/changes", "Change log", here("/changes")));
        }
        // The query log explorer (issue 13, explorer).
        if user.has(Role::Admin) || user.has(Role::Dsl) {
            nav.push(NavItem::new("/log", "Query log", here("/log") || here("/device")));
        }
        // Alerts (issue 14): the inbox for the DSL and admins, the counts for governors.
        if Role::ALL.iter().any(|role| user.has(*role)) {
            let mut item = NavItem::new("/alerts", "Alerts", here("/alerts"));
            item.badge = current.open_alerts().filter(|open| *open > 0).map(|open| (open, "open"));
            nav.push(item);
        }
        // Checks (issue 15): the self-test and the manual checks log.
        if user.has(Role::Admin) || user.has(Role::Dsl) {
            nav.push(NavItem::new("/checks", "Checks", here("/checks")));
        }
        // The annual filtering review (issue 15).
        if Role::ALL.iter().any(|role| user.has(*role)) {
            nav.push(NavItem::new("/review", "Review", here("/review")));
        }
        // The Devices page (issue 13, devices).
        if user.has(Role::Admin) {
            nav.push(NavItem::new("/devices", "Devices", here("/devices")));
        }
        if user.has(Role::Admin) {
            nav.push(NavItem::new("/users", "Users", path == "/users"));
            nav.push(NavItem::new("/audit", "Login audit", path == "/audit"));
        }
        // Unblock requests (issue 15): decided by admins, the open count in the nav.
        if user.has(Role::Admin) {
            let mut item = NavItem::new("/requests", "Requests", here("/requests"));
            item.badge = current.open_requests().filter(|open| *open > 0).map(|open| (open, "open"));
            nav.push(item);
        } else if user.has(Role::Dsl) {
            nav.push(NavItem::new("/requests/new", "Ask to unblock", here("/requests/new")));
        }
        // Lists (issue 13, lists).
        if user.has(Role::Admin) {
            nav.push(NavItem::new("/lists", "Lists", here("/lists")));
        }
        // Servers (issue 16): the primary and its secondaries.
        if user.has(Role::Admin) {
            nav.push(NavItem::new("/servers", "Servers", here("/servers")));
        }
        Layout {
            title: title.to_string(),
            stylesheet: stylesheet_url(),
            user: Some(LayoutUser { name: user.name.clone(), roles: user.roles_text().replace(',', ", ") }),
            csrf: csrf.to_string(),
            nav,
            server_note: current.server_note().cloned(),
        }
    }
}
