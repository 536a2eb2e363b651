//! The annual filtering review (issue 15) at `GET /review?year=2025`, for
//! governors, the DSL and admins: the nine sections the DfE standards ask a
//! school to show for one academic year (1 September to 31 August), built
//! from the config in force, the users, the daily roll-ups, the unblock
//! requests, the checks, the self-test runs, the change log and the alerts'
//! counts. Every figure is a count: no requested or looked-up name, no
//! device, owner or client address, so governors read the same page.
//!
//! The DSL and admins fill in the meeting's part while it is a draft (who
//! took part, what the school does about each technical limitation, notes,
//! the actions agreed and the next review's date) and mark it complete; the
//! whole review is then stored as JSON (`reviews.snapshot`) and the page is
//! drawn from it from then on, so its figures never change (even when
//! retention drops the days they came from). Every change to a complete
//! review is refused with 409, by any role, form or API (and by triggers in
//! SQL). Governors read only: the forms are not shown and the POSTs are 403.
//!
//! Routes: `GET /review`, `GET /api/review`; the forms `POST
//! /review/{year}/save`, `/review/{year}/actions`, `/review/{year}/actions/{id}`,
//! `/review/{year}/actions/{id}/remove`, `/review/{year}/complete`, and their
//! JSON twins (the same paths under `/api`).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::alerts::{YearCounts, academic_year, current_year, duration_words, year_counts};
use super::{Form, Json, Layout, render_with};
use crate::config::Config;
use crate::config::school::SchoolSettings;
use crate::config::timed::OverrideKind;
use crate::policy::category;
use crate::policy::group::{BlockAnswer, YoutubeMode};
use crate::store::changes::ChangeFilter;
use crate::store::review::{
    self, CheckRow, Review, ReviewAction, ReviewError, ReviewForm, ReviewStore, SelftestFigures,
};
use crate::store::{Role, StoreError};
use crate::web::chart::{Chart, Series};
use crate::web::{AppState, RequireAnyRole, RequireDsl, WebError};

/// The technical limitations every DNS filter has (section 8): id, title,
/// the limitation in plain words.
pub const LIMITATIONS: [(&str, &str, &str); 5] = [
    (
        "urls",
        "Full web addresses and search terms",
        "A DNS filter sees only the name of a site (such as www.example.com), never the full address of a page, \
         what is typed into a search box or what a page contains. It cannot block one page of a site it allows.",
    ),
    (
        "platforms",
        "Content inside allowed platforms",
        "Once a platform is allowed (a video site, a social network, an AI chat service), the filter cannot see \
         or judge what is shown inside it, such as the answers an AI chat gives.",
    ),
    (
        "https",
        "Block pages on secure (HTTPS) sites",
        "Almost every site uses HTTPS, so a blocked site usually shows a certificate warning or a connection \
         error rather than Hedgerow's block page. The site is still blocked.",
    ),
    (
        "offsite",
        "Devices on mobile data or another network",
        "Hedgerow filters only devices that use the school's network and its DNS. A phone on mobile data, or a \
         laptop at home, is not filtered by it.",
    ),
    (
        "hardcoded",
        "Apps with their own DNS (hard-coded DNS, DNS over HTTPS)",
        "Some apps and browsers send their lookups to their own servers, past the school's filter. Hedgerow \
         blocks the well-known ones (the bypass setting and the encrypted-DNS category), but a new or unknown \
         service can get through unless the firewall also blocks outgoing DNS.",
    ),
];

/// The most text one form field may hold.
const FIELD_LIMIT: usize = 4000;

// ---------------------------------------------------------------- the review's figures

/// A chart's figures (the snapshot keeps these; the SVG is drawn when shown).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChartData {
    pub id: String,
    pub title: String,
    pub columns: Vec<String>,
    pub series: Vec<(String, Vec<u64>)>,
}

impl ChartData {
    fn chart(&self) -> Chart {
        Chart {
            id: self.id.clone(),
            title: self.title.clone(),
            x_name: "Month".to_string(),
            y_name: "Blocked".to_string(),
            columns: self.columns.clone(),
            label_every: 2,
            series: self
                .series
                .iter()
                .map(|(label, values)| Series { label: label.clone(), values: values.clone() })
                .collect(),
        }
    }
    pub fn svg(&self) -> String {
        self.chart().svg()
    }
    pub fn legend(&self) -> String {
        self.chart().legend()
    }
    pub fn table(&self) -> String {
        self.chart().table()
    }
}

/// The users holding one role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleUsers {
    pub role: String,
    pub names: Vec<String>,
}

/// One group's settings (a column of section 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupColumn {
    pub name: String,
    pub description: String,
    pub safesearch: bool,
    pub youtube: String,
    pub bypass: bool,
    pub block_answer: String,
}

/// One category across the groups (a row of section 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoryRow {
    pub id: String,
    pub name: String,
    pub locked: bool,
    /// Blocked for each group, in the groups' order.
    pub blocked: Vec<bool>,
}

/// Section 2: what is blocked for whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyFigures {
    pub groups: Vec<GroupColumn>,
    pub categories: Vec<CategoryRow>,
    /// Enabled sources for the IWF (csam) and CTIRU (terrorism) categories
    /// other than Hedgerow's own test-name seed lists.
    pub iwf_sources: Vec<String>,
    pub ctiru_sources: Vec<String>,
    /// Why the list declarations could not be read ("" when they could).
    pub lists_problem: String,
}

/// One line of a count table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CountRow {
    pub label: String,
    /// One count per group (the groups' order), then the total.
    pub cells: Vec<u64>,
    pub total: u64,
}

/// Section 3: effectiveness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Effectiveness {
    pub days_rolled_up: u64,
    pub blocked: u64,
    pub safesearch: u64,
    pub bypass: u64,
    pub devices_per_day: String,
    pub groups: Vec<String>,
    pub by_group: ChartData,
    pub by_category: ChartData,
    /// Blocked by category (rows) and group (columns).
    pub category_rows: Vec<CountRow>,
    /// SafeSearch rewrites and bypass attempts by group.
    pub safesearch_rows: Vec<CountRow>,
}

/// An allow override in force (section 4): policy, which governors read on the Policy page too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverrideRow {
    pub group: String,
    pub name: String,
    pub reason: String,
    pub expiry: String,
}

/// Section 4: over-blocking.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverBlocking {
    pub requests: crate::store::unblock::RequestCounts,
    pub mean_to_decide: String,
    pub median_to_decide: String,
    pub overrides: Vec<OverrideRow>,
}

/// One change in the appendix (what the Change log page shows governors).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRow {
    pub when: String,
    pub user: String,
    pub kind: String,
    pub group: String,
    pub subject: String,
    pub old: String,
    pub new: String,
    pub reason: String,
}

/// Section 5: change control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeFigures {
    pub total: u64,
    pub by_kind: Vec<(String, u64)>,
    pub by_month: Vec<(String, u64)>,
    /// Oldest first.
    pub rows: Vec<ChangeRow>,
}

/// A manual check as listed (no device).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    pub when: String,
    pub checked_by: String,
    pub place: String,
    pub tested: String,
    pub problem: bool,
    pub result: String,
    pub action: String,
}

/// Self-test runs of one month, with the pass rate in words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelftestMonthView {
    pub month: String,
    pub runs: u64,
    pub failed_runs: u64,
    pub pass_rate: String,
}

/// Section 6: regular checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checks {
    pub as_expected: u64,
    pub problems: u64,
    pub rows: Vec<CheckView>,
    pub selftest: SelftestFigures,
    pub selftest_last: String,
    pub selftest_months: Vec<SelftestMonthView>,
}

/// A limitation and what the school does about it (section 8).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LimitationView {
    pub id: String,
    pub title: String,
    pub text: String,
    pub response: String,
}

/// The whole review of one year: what the page shows, and the snapshot
/// stored when it is marked complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewReport {
    /// The academic year's first calendar year (2025 for 2025-26).
    pub year: i16,
    pub academic_year: String,
    pub from_day: String,
    pub to_day: String,
    /// When the figures were read, in words.
    pub prepared: String,
    pub school: SchoolSettings,
    pub roles: Vec<RoleUsers>,
    pub participants: Vec<String>,
    pub policy: PolicyFigures,
    pub effectiveness: Effectiveness,
    pub over_blocking: OverBlocking,
    pub changes: ChangeFigures,
    pub checks: Checks,
    pub alerts: YearCounts,
    pub limitations: Vec<LimitationView>,
    pub notes: String,
    pub actions: Vec<ReviewAction>,
    pub next_review: String,
}

/// The year's first and last day, `YYYY-MM-DD`.
fn days(year: i16) -> (String, String) {
    (format!("{year:04}-09-01"), format!("{:04}-08-31", i32::from(year) + 1))
}

/// Month keys (`YYYY-MM`) and labels ("Sep 2025") of the academic year.
fn months(year: i16) -> Vec<(String, String)> {
    const SHORT: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    (0..12)
        .map(|step| {
            let (calendar, month) =
                if step < 4 { (i32::from(year), step + 9) } else { (i32::from(year) + 1, step - 3) };
            (format!("{calendar:04}-{month:02}"), format!("{} {calendar}", SHORT[month as usize - 1]))
        })
        .collect()
}

fn policy_figures(config: &Config) -> PolicyFigures {
    let groups: Vec<GroupColumn> = config
        .groups
        .values()
        .map(|policy| GroupColumn {
            name: policy.name.clone(),
            description: policy.description.clone(),
            safesearch: policy.safesearch,
            youtube: match policy.youtube {
                YoutubeMode::Strict => "strict",
                YoutubeMode::Moderate => "moderate",
                YoutubeMode::Off => "off",
            }
            .to_string(),
            bypass: policy.bypass,
            block_answer: match policy.block_answer {
                BlockAnswer::NxDomain => "no such site (NXDOMAIN)",
                BlockAnswer::NullAddress => "an empty address (0.0.0.0)",
                BlockAnswer::BlockPage { .. } => "the block page",
            }
            .to_string(),
        })
        .collect();
    let categories = category::all()
        .map(|c| {
            let locked = config.locked.contains(c.bit);
            CategoryRow {
                id: c.id.to_string(),
                name: c.name.to_string(),
                locked,
                blocked: config.groups.values().map(|policy| locked || policy.blocked.contains(c.bit)).collect(),
            }
        })
        .collect();
    let (mut iwf_sources, mut ctiru_sources, mut lists_problem) = (Vec::new(), Vec::new(), String::new());
    let declared = crate::serve::list_settings(config)
        .map_err(|error| error.to_string())
        .and_then(|settings| crate::lists::sources::load_sources(&settings).map_err(|error| error.to_string()));
    match declared {
        Ok(sources) => {
            for source in sources.iter().filter(|source| source.enabled) {
                let Some(category) = category::by_index(source.category) else { continue };
                // Hedgerow's own seed lists hold only SWGfL's test names.
                if source.id == format!("hedgerow-{}", category.id) {
                    continue;
                }
                match category.id {
                    "csam" => iwf_sources.push(source.id.clone()),
                    "terrorism" => ctiru_sources.push(source.id.clone()),
                    _ => {}
                }
            }
        }
        Err(problem) => lists_problem = problem,
    }
    PolicyFigures { groups, categories, iwf_sources, ctiru_sources, lists_problem }
}

fn effectiveness(database: &std::path::Path, year: i16, groups: &[String]) -> Result<Effectiveness, StoreError> {
    let (from_day, to_day) = days(year);
    // The totals, days and devices as `hedgerow log review` reads them (its names are left out).
    let annual = crate::store::retention::annual_review(database, &from_day, &to_day)?;
    let cells = review::month_cells(database, &from_day, &to_day)?;
    let months = months(year);
    let total_of = |decision: &str| annual.totals.iter().filter(|t| t.decision == decision).map(|t| t.count).sum();
    let index_of = |month: &str| months.iter().position(|(key, _)| key == month);
    let blocked: Vec<_> = cells.iter().filter(|cell| cell.decision == "blocked").collect();
    // Blocked per month, a series per group.
    let mut group_series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut category_totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut category_groups: BTreeMap<String, HashMap<String, u64>> = BTreeMap::new();
    for cell in &blocked {
        let Some(index) = index_of(&cell.month) else { continue };
        let label = if cell.group.is_empty() { "(no group)".to_string() } else { cell.group.clone() };
        group_series.entry(label).or_insert_with(|| vec![0; 12])[index] += cell.count;
        let category = if cell.category.is_empty() { "(deny override)".to_string() } else { cell.category.clone() };
        *category_totals.entry(category.clone()).or_default() += cell.count;
        *category_groups.entry(category).or_default().entry(cell.group.clone()).or_default() += cell.count;
    }
    // Blocked per month, a series per category: the five largest, the rest as "other".
    let mut ranked: Vec<(&String, &u64)> = category_totals.iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top: Vec<String> = ranked.iter().take(5).map(|(name, _)| (*name).clone()).collect();
    let mut category_series: Vec<(String, Vec<u64>)> = top.iter().map(|name| (name.clone(), vec![0; 12])).collect();
    let mut other = vec![0; 12];
    for cell in &blocked {
        let Some(index) = index_of(&cell.month) else { continue };
        let category = if cell.category.is_empty() { "(deny override)" } else { cell.category.as_str() };
        match category_series.iter_mut().find(|(name, _)| name == category) {
            Some((_, values)) => values[index] += cell.count,
            None => other[index] += cell.count,
        }
    }
    if other.iter().any(|count| *count > 0) {
        category_series.push(("other categories".to_string(), other));
    }
    let mut category_rows: Vec<CountRow> = category_groups
        .into_iter()
        .map(|(label, by_group)| {
            let cells: Vec<u64> = groups.iter().map(|group| by_group.get(group).copied().unwrap_or(0)).collect();
            CountRow { total: by_group.values().sum(), label, cells }
        })
        .collect();
    category_rows.sort_by(|a, b| b.total.cmp(&a.total).then(a.label.cmp(&b.label)));
    let safesearch_rows = ["safesearch", "bypass"]
        .into_iter()
        .map(|decision| {
            let counts: Vec<u64> = groups
                .iter()
                .map(|group| {
                    cells.iter().filter(|c| c.decision == decision && &c.group == group).map(|c| c.count).sum()
                })
                .collect();
            CountRow {
                label: if decision == "safesearch" { "SafeSearch rewrites" } else { "Bypass attempts blocked" }
                    .to_string(),
                total: cells.iter().filter(|c| c.decision == decision).map(|c| c.count).sum(),
                cells: counts,
            }
        })
        .collect();
    let columns: Vec<String> = months.iter().map(|(_, label)| label.clone()).collect();
    Ok(Effectiveness {
        days_rolled_up: annual.days_rolled_up,
        blocked: total_of("blocked"),
        safesearch: total_of("safesearch"),
        bypass: total_of("bypass"),
        devices_per_day: format!("{:.0}", annual.devices_per_day_average),
        groups: groups.to_vec(),
        by_group: ChartData {
            id: "review-blocked-groups".to_string(),
            title: "Blocked attempts per month, by group".to_string(),
            columns: columns.clone(),
            series: group_series.into_iter().collect(),
        },
        by_category: ChartData {
            id: "review-blocked-categories".to_string(),
            title: "Blocked attempts per month, by category".to_string(),
            columns,
            series: category_series,
        },
        category_rows,
        safesearch_rows,
    })
}

/// Builds the review of `year` now, with the meeting's part from `draft`.
fn build(state: &AppState, year: i16, draft: &Review) -> Result<ReviewReport, StoreError> {
    let config = state.config();
    let database = state.database();
    let (from_ms, to_ms) = academic_year(&config, year);
    let (from_day, to_day) = days(year);
    let now = crate::time::now_ms();

    let users = state.users().list()?;
    let roles =
        [(Role::Admin, "Admin (ICT lead)"), (Role::Dsl, "Designated Safeguarding Lead"), (Role::Governor, "Governor")]
            .into_iter()
            .map(|(role, label)| RoleUsers {
                role: label.to_string(),
                names: users
                    .iter()
                    .filter(|user| !user.disabled && user.has(role))
                    .map(|user| user.name.clone())
                    .collect(),
            })
            .collect();

    let policy = policy_figures(&config);
    let groups: Vec<String> = policy.groups.iter().map(|group| group.name.clone()).collect();
    let effectiveness = effectiveness(database, year, &groups)?;

    let requests = crate::store::unblock::UnblockStore::open(database)?.counts(from_ms, to_ms)?;
    let overrides = config
        .overrides
        .iter()
        .filter(|entry| entry.kind == OverrideKind::Allow && entry.in_force_at(now))
        .map(|entry| OverrideRow {
            group: entry.group.clone(),
            name: entry.rule.clone(),
            reason: entry.reason.clone(),
            expiry: entry.until_ms.map_or("no expiry".to_string(), |until| config.local_time_text(until)),
        })
        .collect();
    let over_blocking = OverBlocking {
        mean_to_decide: requests.mean_ms_to_decide.map_or("-".to_string(), duration_words),
        median_to_decide: requests.median_ms_to_decide.map_or("-".to_string(), duration_words),
        requests,
        overrides,
    };

    let mut changes = state.changes().search(&ChangeFilter {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        limit: 100_000,
        ..Default::default()
    })?;
    changes.reverse();
    let month_keys = months(year);
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_month: Vec<(String, u64)> = month_keys.iter().map(|(_, label)| (label.clone(), 0)).collect();
    for change in &changes {
        *by_kind.entry(change.kind.clone()).or_default() += 1;
        let month = jiff::Timestamp::from_millisecond(change.time_ms)
            .map(|at| at.to_zoned(config.timezone.clone()).strftime("%Y-%m").to_string())
            .unwrap_or_default();
        if let Some(index) = month_keys.iter().position(|(key, _)| *key == month) {
            by_month[index].1 += 1;
        }
    }
    let mut by_kind: Vec<(String, u64)> = by_kind.into_iter().collect();
    by_kind.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let changes = ChangeFigures {
        total: changes.len() as u64,
        by_kind,
        by_month,
        rows: changes
            .into_iter()
            .map(|change| ChangeRow {
                when: config.local_time_text(change.time_ms),
                new: if change.kind == "file-edit" {
                    "the config file was edited by hand (the difference is on the Change log page)".to_string()
                } else {
                    change.new
                },
                user: change.user,
                kind: change.kind,
                group: change.group.unwrap_or_default(),
                subject: change.subject,
                old: change.old,
                reason: change.reason,
            })
            .collect(),
    };

    let check_rows = review::manual_checks(database, from_ms, to_ms)?;
    let selftest = review::selftest_figures(database, from_ms, to_ms)?;
    let checks = Checks {
        as_expected: check_rows.iter().filter(|row| row.outcome == "as-expected").count() as u64,
        problems: check_rows.iter().filter(|row| row.outcome != "as-expected").count() as u64,
        rows: check_rows.into_iter().map(|row| check_view(&config, row)).collect(),
        selftest_last: match (selftest.last_run_ms, selftest.last_run_passed) {
            (Some(at), Some(true)) => format!("{}: every check as expected", config.local_time_text(at)),
            (Some(at), _) => format!("{}: at least one check failed", config.local_time_text(at)),
            _ => "no run this year".to_string(),
        },
        selftest_months: month_keys
            .iter()
            .map(|(key, label)| {
                let found = selftest.months.iter().find(|month| &month.month == key);
                let (runs, failed) = found.map_or((0, 0), |month| (month.runs, month.failed_runs));
                SelftestMonthView {
                    month: label.clone(),
                    runs,
                    failed_runs: failed,
                    pass_rate: if runs == 0 { "-".to_string() } else { format!("{}%", (runs - failed) * 100 / runs) },
                }
            })
            .collect(),
        selftest,
    };

    let alert_counts = state.alerts().counts(from_ms, to_ms)?;
    let mut alerts = year_counts(year, from_ms, to_ms, &alert_counts);

    // The month tables stop at this month (a year still running has no figures ahead).
    let this_month = jiff::Timestamp::from_millisecond(now)
        .map(|at| at.to_zoned(config.timezone.clone()).strftime("%Y-%m").to_string())
        .unwrap_or_default();
    let elapsed = month_keys.iter().filter(|(key, _)| *key <= this_month).count();
    alerts.months.truncate(elapsed);
    let mut checks = checks;
    checks.selftest_months.truncate(elapsed);
    let mut changes = changes;
    changes.by_month.truncate(elapsed);

    Ok(ReviewReport {
        year,
        academic_year: review::academic_year_label(&from_day),
        from_day,
        to_day,
        prepared: config.local_time_text(now),
        school: config.school.clone(),
        roles,
        participants: lines(&draft.participants),
        policy,
        effectiveness,
        over_blocking,
        changes,
        checks,
        alerts,
        limitations: LIMITATIONS
            .iter()
            .map(|(id, title, text)| LimitationView {
                id: id.to_string(),
                title: title.to_string(),
                text: text.to_string(),
                response: draft.limitations.get(*id).cloned().unwrap_or_default(),
            })
            .collect(),
        notes: draft.notes.clone(),
        actions: draft.actions.clone(),
        next_review: draft.next_review.clone(),
    })
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_string).collect()
}

fn check_view(config: &Config, row: CheckRow) -> CheckView {
    let place = match (row.network.is_empty(), row.group.is_empty()) {
        (false, false) => format!("{} network, {} group", row.network, row.group),
        (false, true) => format!("{} network", row.network),
        (true, false) => format!("{} group", row.group),
        (true, true) => "-".to_string(),
    };
    CheckView {
        when: config.local_time_text(row.checked_ms),
        checked_by: row.checked_by,
        place,
        tested: row.tested,
        problem: row.outcome != "as-expected",
        result: row.result,
        action: row.action,
    }
}

// ---------------------------------------------------------------- reading a year

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct YearQuery {
    year: String,
    /// After a form: what was saved ("review", "action"), for the notice.
    saved: String,
}

/// What a year's page needs: the review row (or an empty draft) and the figures.
struct Loaded {
    year: i16,
    years: Vec<i16>,
    review: Review,
    report: ReviewReport,
}

/// The year asked for (a bad or missing one is the current year).
fn chosen_year(state: &AppState, asked: &str) -> i16 {
    let current = current_year(&state.config(), crate::time::now_ms());
    asked.trim().parse::<i16>().ok().filter(|year| (2000..=current).contains(year)).unwrap_or(current)
}

fn load(state: &AppState, year: i16) -> Result<Loaded, StoreError> {
    let store = ReviewStore::open(state.database())?;
    let (from_day, to_day) = days(year);
    let review = store.get(&from_day)?.unwrap_or_else(|| Review::empty(&from_day, &to_day));
    let current = current_year(&state.config(), crate::time::now_ms());
    let mut years = review::data_years(state.database())?;
    years.push(current);
    years.push(year);
    years.retain(|each| (2000..=current).contains(each));
    years.sort_unstable_by(|a, b| b.cmp(a));
    years.dedup();
    // A signed-off review is shown as it was signed off.
    let from_snapshot =
        review.snapshot.as_deref().filter(|_| review.complete).and_then(|json| serde_json::from_str(json).ok());
    let report = match from_snapshot {
        Some(report) => report,
        None => build(state, year, &review)?,
    };
    Ok(Loaded { year, years, review, report })
}

// ---------------------------------------------------------------- the page

/// A draft's form as sent (kept when shown again with its errors).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SaveForm {
    pub participants: String,
    pub notes: String,
    pub next_review: String,
    pub limit_urls: String,
    pub limit_platforms: String,
    pub limit_https: String,
    pub limit_offsite: String,
    pub limit_hardcoded: String,
}

impl SaveForm {
    fn of(review: &Review) -> SaveForm {
        let get = |id: &str| review.limitations.get(id).cloned().unwrap_or_default();
        SaveForm {
            participants: review.participants.clone(),
            notes: review.notes.clone(),
            next_review: review.next_review.clone(),
            limit_urls: get("urls"),
            limit_platforms: get("platforms"),
            limit_https: get("https"),
            limit_offsite: get("offsite"),
            limit_hardcoded: get("hardcoded"),
        }
    }

    pub fn limitation(&self, id: &str) -> &str {
        match id {
            "urls" => &self.limit_urls,
            "platforms" => &self.limit_platforms,
            "https" => &self.limit_https,
            "offsite" => &self.limit_offsite,
            _ => &self.limit_hardcoded,
        }
    }

    fn check(&self) -> Result<ReviewForm, WebError> {
        let next_review = self.next_review.trim().to_string();
        if !next_review.is_empty() && next_review.parse::<jiff::civil::Date>().is_err() {
            return Err(WebError::bad("next_review", format!("{next_review:?} is not a date; write it as 2026-09-30")));
        }
        for (field, value) in [("participants", &self.participants), ("notes", &self.notes)] {
            if value.len() > FIELD_LIMIT {
                return Err(WebError::bad(field, format!("this is too long: keep it under {FIELD_LIMIT} characters")));
            }
        }
        let mut limitations = BTreeMap::new();
        for (id, _, _) in LIMITATIONS {
            let text = self.limitation(id).trim();
            if text.len() > FIELD_LIMIT {
                return Err(WebError::BadRequest {
                    field: Some(limit_field(id)),
                    message: format!("this is too long: keep it under {FIELD_LIMIT} characters"),
                });
            }
            if !text.is_empty() {
                limitations.insert(id.to_string(), text.to_string());
            }
        }
        Ok(ReviewForm {
            participants: self.participants.trim().to_string(),
            limitations,
            notes: self.notes.trim().to_string(),
            next_review,
        })
    }
}

fn limit_field(id: &str) -> &'static str {
    match id {
        "urls" => "limit_urls",
        "platforms" => "limit_platforms",
        "https" => "limit_https",
        "offsite" => "limit_offsite",
        _ => "limit_hardcoded",
    }
}

/// An action as sent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    pub action: String,
    pub owner: String,
    pub due: String,
}

impl ActionForm {
    fn check(&self) -> Result<(String, String, String), WebError> {
        let (action, owner, due) = (self.action.trim(), self.owner.trim(), self.due.trim());
        if action.is_empty() {
            return Err(WebError::bad("action", "say what is to be done"));
        }
        if action.len() > FIELD_LIMIT {
            return Err(WebError::bad("action", format!("keep it under {FIELD_LIMIT} characters")));
        }
        if owner.is_empty() {
            return Err(WebError::bad("owner", "name who will do it"));
        }
        if owner.len() > 200 {
            return Err(WebError::bad("owner", "keep the owner under 200 characters"));
        }
        if due.parse::<jiff::civil::Date>().is_err() {
            return Err(WebError::bad("due", "give the date it is due, as 2026-03-31"));
        }
        Ok((action.to_string(), owner.to_string(), due.to_string()))
    }
}

/// "Mark this review complete": the confirmation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CompleteForm {
    pub confirm: String,
}

/// What a form sent, and its error, when the page is shown again.
#[derive(Debug, Default)]
struct Kept {
    save: Option<SaveForm>,
    add: Option<ActionForm>,
    /// An action's edit that was refused: its id and what was sent.
    edit: Option<(i64, ActionForm)>,
    /// Which form the error belongs to ("save", "add", "edit", "complete").
    form: &'static str,
    /// What was just saved ("review", "action"), from the redirect.
    saved: String,
    field: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    layout: Layout,
    year: i16,
    years: Vec<(i16, String)>,
    report: ReviewReport,
    complete: bool,
    signed_off: String,
    editable: bool,
    /// A DSL or admin reading a draft that the governor cannot change: the note.
    can_complete: bool,
    save: SaveForm,
    add: ActionForm,
    edit_id: i64,
    edit: ActionForm,
    kept: Kept,
    print_script: String,
}

impl ReviewPage {
    /// The message for `field` of `form`, or "".
    fn error(&self, form: &str, field: &str) -> &str {
        if self.kept.form == form && self.kept.field == field { &self.kept.message } else { "" }
    }
    fn action_value<'a>(&'a self, action: &'a ReviewAction, field: &str) -> &'a str {
        let (id, sent) = (self.edit_id, &self.edit);
        match field {
            "action" if id == action.id => &sent.action,
            "owner" if id == action.id => &sent.owner,
            "due" if id == action.id => &sent.due,
            "action" => &action.action,
            "owner" => &action.owner,
            _ => &action.due,
        }
    }
    fn action_error(&self, action: &ReviewAction, field: &str) -> &str {
        if self.edit_id == action.id { self.error("edit", field) } else { "" }
    }
    fn limit_error(&self, id: &str) -> &str {
        self.error("save", limit_field(id))
    }
    fn charts(&self) -> [&ChartData; 2] {
        [&self.report.effectiveness.by_group, &self.report.effectiveness.by_category]
    }
    fn request_tables(&self) -> [(&'static str, &Vec<crate::store::unblock::CountLine>); 2] {
        let requests = &self.report.over_blocking.requests;
        [("By category", &requests.by_category), ("By group", &requests.by_group)]
    }
    fn alert_tables(&self) -> [(&'static str, &Vec<super::alerts::CountLine>); 2] {
        [("By severity", &self.report.alerts.severities), ("By category", &self.report.alerts.categories)]
    }
    fn blocked_cell(&self, row: &CategoryRow, index: &usize) -> bool {
        row.blocked.get(*index).copied().unwrap_or(false)
    }
}

fn signed_off(state: &AppState, review: &Review) -> String {
    match (&review.completed_by, review.completed_ms) {
        (Some(by), Some(at)) if review.complete => {
            format!("Signed off by {by} on {}", state.config().local_time_text(at))
        }
        _ => String::new(),
    }
}

async fn show(
    state: AppState,
    reader: &impl super::super::layout::Viewer,
    year: i16,
    kept: Kept,
    status: StatusCode,
) -> Result<Response, WebError> {
    let loaded = state.blocking(move |state| load(state, year)).await??;
    let user = reader.user();
    let may_edit = user.has(Role::Admin) || user.has(Role::Dsl);
    let editable = may_edit && !loaded.review.complete;
    let mut page = ReviewPage {
        layout: Layout::for_user("Annual filtering review", reader, "/review"),
        year: loaded.year,
        years: loaded.years.iter().map(|year| (*year, format!("{year}-{:02}", (i32::from(*year) + 1) % 100))).collect(),
        complete: loaded.review.complete,
        signed_off: signed_off(&state, &loaded.review),
        editable,
        can_complete: editable,
        save: kept.save.clone().unwrap_or_else(|| SaveForm::of(&loaded.review)),
        add: kept.add.clone().unwrap_or_default(),
        edit_id: 0,
        edit: ActionForm::default(),
        report: loaded.report,
        kept,
        print_script: format!("/static/{}", *crate::web::assets::REVIEW_SCRIPT_NAME),
    };
    if let Some((id, sent)) = page.kept.edit.clone() {
        page.edit_id = id;
        page.edit = sent;
    }
    Ok(render_with(status, &page))
}

/// `GET /review?year=2025`.
pub async fn page(
    State(state): State<AppState>,
    reader: RequireAnyRole,
    Query(query): Query<YearQuery>,
) -> Result<Response, WebError> {
    let year = chosen_year(&state, &query.year);
    let kept = Kept { saved: query.saved.trim().to_string(), ..Kept::default() };
    show(state, &reader, year, kept, StatusCode::OK).await
}

/// `GET /api/review?year=2025`: the same review as JSON.
pub async fn api(
    State(state): State<AppState>,
    _reader: RequireAnyRole,
    Query(query): Query<YearQuery>,
) -> Result<Response, WebError> {
    let year = chosen_year(&state, &query.year);
    let loaded = state.blocking(move |state| load(state, year)).await??;
    let body = serde_json::json!({
        "year": loaded.year,
        "academic_year": loaded.report.academic_year,
        "state": if loaded.review.complete { "complete" } else { "draft" },
        "completed_by": loaded.review.completed_by,
        "completed_ms": loaded.review.completed_ms,
        "years": loaded.years,
        "review": loaded.report,
    });
    Ok(axum::Json(body).into_response())
}

// ---------------------------------------------------------------- changes

/// One change to a draft.
enum Change {
    Save(SaveForm),
    Add(ActionForm),
    Edit(i64, ActionForm),
    Remove(i64),
    Complete(CompleteForm),
}

impl Change {
    fn form(&self) -> &'static str {
        match self {
            Change::Save(_) => "save",
            Change::Add(_) => "add",
            Change::Edit(..) | Change::Remove(_) => "edit",
            Change::Complete(_) => "complete",
        }
    }
    /// What the notice after it says was saved.
    fn saved(&self) -> &'static str {
        match self {
            Change::Save(_) => "review",
            Change::Complete(_) => "complete",
            _ => "action",
        }
    }
    /// Where the page goes back to afterwards.
    fn anchor(&self) -> &'static str {
        match self {
            Change::Save(_) => "#top",
            Change::Complete(_) => "#top",
            _ => "#actions",
        }
    }
}

fn refusal(error: ReviewError) -> WebError {
    match error {
        ReviewError::Complete(_) => WebError::Conflict(error.to_string()),
        ReviewError::NoSuchAction => WebError::bad("action", error.to_string()),
        ReviewError::Store(error) => error.into(),
    }
}

/// Checks and makes `change` to the review of `year` as `by`.
async fn apply(state: &AppState, year: &str, by: String, change: &Change) -> Result<(), WebError> {
    let current = current_year(&state.config(), crate::time::now_ms());
    let year =
        year.trim().parse::<i16>().ok().filter(|year| (2000..=current).contains(year)).ok_or(WebError::NotFound)?;
    let (start, end) = days(year);
    let store = state.blocking(|state| ReviewStore::open(state.database())).await??;
    // A complete review refuses everything, before any value is looked at.
    let found = {
        let (store, start) = (store.clone(), start.clone());
        state.blocking(move |_| store.get(&start)).await??
    };
    if found.is_some_and(|review| review.complete) {
        return Err(refusal(ReviewError::Complete(review::academic_year_label(&start))));
    }
    let now = crate::time::now_ms();
    let result = match change {
        Change::Save(form) => {
            let form = form.check()?;
            state.blocking(move |_| store.save(&start, &end, &form, &by, now)).await?
        }
        Change::Add(form) => {
            let (action, owner, due) = form.check()?;
            state.blocking(move |_| store.add_action(&start, &end, &action, &owner, &due, &by, now).map(|_| ())).await?
        }
        Change::Edit(id, form) => {
            let (action, owner, due) = form.check()?;
            let id = *id;
            state.blocking(move |_| store.edit_action(&start, id, &action, &owner, &due, &by, now)).await?
        }
        Change::Remove(id) => {
            let id = *id;
            state.blocking(move |_| store.remove_action(&start, id, &by, now)).await?
        }
        Change::Complete(form) => {
            if !super::checked(&form.confirm) {
                return Err(WebError::bad(
                    "confirm",
                    "tick the box to confirm the meeting agreed this record; it cannot be changed afterwards",
                ));
            }
            state
                .blocking(move |state| {
                    let draft = store.get(&start)?.unwrap_or_else(|| Review::empty(&start, &end));
                    let report = build(state, year, &draft).map_err(ReviewError::Store)?;
                    let snapshot = serde_json::to_string(&report)
                        .map_err(|error| ReviewError::Store(StoreError::Invalid(error.to_string())))?;
                    store.complete(&start, &end, &by, &snapshot, now)
                })
                .await?
        }
    };
    result.map_err(refusal)
}

/// A form's change: back to the page, or the page again with the error beside its field.
async fn form_change(state: AppState, editor: RequireDsl, year: String, change: Change) -> Result<Response, WebError> {
    match apply(&state, &year, editor.user.name.clone(), &change).await {
        Ok(()) => {
            Ok(Redirect::to(&format!("/review?year={}&saved={}{}", year.trim(), change.saved(), change.anchor()))
                .into_response())
        }
        Err(WebError::BadRequest { field, message }) => {
            let year = year.trim().parse::<i16>().map_err(|_| WebError::NotFound)?;
            let mut kept = Kept { form: change.form(), field: field.unwrap_or(""), message, ..Kept::default() };
            match change {
                Change::Save(form) => kept.save = Some(form),
                Change::Add(form) => kept.add = Some(form),
                Change::Edit(id, form) => kept.edit = Some((id, form)),
                Change::Remove(_) | Change::Complete(_) => {}
            }
            show(state, &editor, year, kept, StatusCode::BAD_REQUEST).await
        }
        Err(other) => Err(other),
    }
}

/// `POST /review/{year}/save`: the meeting's form.
pub async fn save(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Form(form): Form<SaveForm>,
) -> Result<Response, WebError> {
    form_change(state, editor, year, Change::Save(form)).await
}

/// `POST /review/{year}/actions`: add an action.
pub async fn add_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    form_change(state, editor, year, Change::Add(form)).await
}

/// `POST /review/{year}/actions/{id}`: change an action.
pub async fn edit_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path((year, id)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Result<Response, WebError> {
    form_change(state, editor, year, Change::Edit(id, form)).await
}

/// `POST /review/{year}/actions/{id}/remove`.
pub async fn remove_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path((year, id)): Path<(String, i64)>,
) -> Result<Response, WebError> {
    form_change(state, editor, year, Change::Remove(id)).await
}

/// `POST /review/{year}/complete`: sign the review off (with the confirmation ticked).
pub async fn complete(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Form(form): Form<CompleteForm>,
) -> Result<Response, WebError> {
    form_change(state, editor, year, Change::Complete(form)).await
}

/// The JSON answer of an API change: `{ "ok": true }` and the review's state.
async fn api_change(state: AppState, editor: RequireDsl, year: String, change: Change) -> Result<Response, WebError> {
    apply(&state, &year, editor.user.name.clone(), &change).await?;
    Ok(axum::Json(serde_json::json!({ "ok": true })).into_response())
}

/// `POST /api/review/{year}/save`: the meeting's form as JSON (the form's field names).
pub async fn api_save(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Json(form): Json<SaveForm>,
) -> Result<Response, WebError> {
    api_change(state, editor, year, Change::Save(form)).await
}

/// `POST /api/review/{year}/actions`: `{ "action", "owner", "due" }`.
pub async fn api_add_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Json(form): Json<ActionForm>,
) -> Result<Response, WebError> {
    api_change(state, editor, year, Change::Add(form)).await
}

/// `POST /api/review/{year}/actions/{id}`.
pub async fn api_edit_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path((year, id)): Path<(String, i64)>,
    Json(form): Json<ActionForm>,
) -> Result<Response, WebError> {
    api_change(state, editor, year, Change::Edit(id, form)).await
}

/// `POST /api/review/{year}/actions/{id}/remove`.
pub async fn api_remove_action(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path((year, id)): Path<(String, i64)>,
) -> Result<Response, WebError> {
    api_change(state, editor, year, Change::Remove(id)).await
}

/// `POST /api/review/{year}/complete`: `{ "confirm": "yes" }`.
pub async fn api_complete(
    State(state): State<AppState>,
    editor: RequireDsl,
    Path(year): Path<String>,
    Json(form): Json<CompleteForm>,
) -> Result<Response, WebError> {
    api_change(state, editor, year, Change::Complete(form)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_year_runs_september_to_august_in_twelve_months() {
        assert_eq!(days(2025), ("2025-09-01".to_string(), "2026-08-31".to_string()));
        let months = months(2025);
        assert_eq!(months.len(), 12);
        assert_eq!(months[0], ("2025-09".to_string(), "Sep 2025".to_string()));
        assert_eq!(months[11], ("2026-08".to_string(), "Aug 2026".to_string()));
    }

    #[test]
    fn forms_are_checked_beside_their_fields() {
        let bad = |form: ActionForm| match form.check() {
            Err(WebError::BadRequest { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let good = ActionForm { action: "Buy the IWF list".into(), owner: "Ian".into(), due: "2026-01-31".into() };
        assert!(good.check().is_ok());
        assert_eq!(bad(ActionForm { action: " ".into(), ..good.clone() }), Some("action"));
        assert_eq!(bad(ActionForm { owner: String::new(), ..good.clone() }), Some("owner"));
        assert_eq!(bad(ActionForm { due: "next week".into(), ..good }), Some("due"));
        let form = SaveForm { next_review: "soon".into(), ..Default::default() };
        assert!(matches!(form.check(), Err(WebError::BadRequest { field: Some("next_review"), .. })));
        let form = SaveForm { limit_https: "We tell pupils.".into(), ..Default::default() };
        assert_eq!(form.check().unwrap().limitations["https"], "We tell pupils.");
    }
}
