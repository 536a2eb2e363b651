//! `hedgerow log tail|search|review`: read the query log and its roll-ups.

use std::process::ExitCode;

use anyhow::Context;
use hedgerow::config::Config;
use hedgerow::present;
use hedgerow::store::LogRow;
use hedgerow::store::retention::AnnualFigures;

use super::OutputFormat;

#[derive(clap::Subcommand)]
pub enum LogAction {
    /// The newest rows (with --follow, keep printing new ones).
    Tail {
        #[arg(long, default_value_t = 20)]
        lines: usize,
        #[arg(long)]
        follow: bool,
    },
    /// Rows matching every given filter, newest first.
    Search {
        /// Client IP or device name.
        #[arg(long)]
        client: Option<String>,
        /// A name; also matches its subdomains.
        #[arg(long)]
        name: Option<String>,
        /// A category id (gambling, social-media, ...).
        #[arg(long)]
        category: Option<String>,
        /// allowed, blocked, safesearch, bypass, refused or error.
        #[arg(long)]
        decision: Option<String>,
        /// UTC time or day: 2026-11-23 or 2026-11-23T08:30:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Paging: rows older than this id (the last id of the previous page).
        #[arg(long)]
        before_id: Option<i64>,
    },
    /// Figures for the annual filtering review, from the daily roll-ups only.
    Review {
        /// First day (UTC), e.g. 2025-09-01.
        #[arg(long)]
        from: String,
        /// Last day (UTC), e.g. 2026-07-31.
        #[arg(long)]
        to: String,
    },
}

pub fn run(config: &Config, action: LogAction, format: OutputFormat) -> anyhow::Result<ExitCode> {
    use hedgerow::store::{self, Search};
    let database = &config.log.database;
    let time = |text: Option<String>| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            store::time::parse_utc(&t)
                .or_else(|| store::time::parse_day(&t))
                .with_context(|| format!("{t:?} is not a UTC time; write 2026-11-23 or 2026-11-23T08:30:00Z"))
        })
        .transpose()
    };
    match action {
        LogAction::Tail { lines, follow } => {
            let newest = store::search::search(database, &Search { limit: lines, ..Search::default() })?;
            let mut last_id = newest.first().map_or(0, |row| row.id);
            print_rows(newest.into_iter().rev().collect(), format, true);
            if follow {
                // Until interrupted.
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    let rows = store::search::tail(database, last_id, 1_000)?;
                    if let Some(id) = rows.iter().map(|row| row.id).max() {
                        last_id = id;
                    }
                    print_rows(rows, format, false);
                }
            }
        }
        LogAction::Search { client, name, category, decision, since, until, limit, before_id } => {
            let category = category.map(|category| category.trim().to_ascii_lowercase());
            if let Some(category) = &category
                && hedgerow::policy::category::index_of(category).is_none()
            {
                let ids = hedgerow::policy::category::known_ids();
                anyhow::bail!("--category {category:?} is not a category; the categories are: {}", ids.join(", "));
            }
            let decision = decision.map(|decision| decision.trim().to_ascii_lowercase());
            if let Some(decision) = &decision
                && !store::record::DECISIONS.contains(&decision.as_str())
            {
                anyhow::bail!(
                    "--decision {decision:?} is not a decision; the decisions are: {}",
                    store::record::DECISIONS.join(", ")
                );
            }
            let query = Search {
                client,
                name,
                category,
                group: None,
                decision,
                since_ms: time(since)?,
                until_ms: time(until)?,
                limit,
                before_id,
            };
            let rows = store::search::search(database, &query)?;
            if let (OutputFormat::Table, Some(last)) = (format, rows.last()) {
                eprintln!("(next page: --before-id {})", last.id);
            }
            print_rows(rows, format, true);
        }
        LogAction::Review { from, to } => {
            let figures = store::retention::annual_review(database, &from, &to)?;
            print_review(&figures, format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The annual review figures: a readable report, JSON, or CSV rows of
/// `section,key,decision,count`.
fn print_review(figures: &AnnualFigures, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => print!("{}", present::review::json(figures)?),
        OutputFormat::Csv => print!("{}", present::review::csv(figures)),
        OutputFormat::Table => print!("{}", present::review::table(figures)),
    }
    Ok(())
}

/// Log rows, oldest to newest as given, with a header line first when `header`.
fn print_rows(rows: Vec<LogRow>, format: OutputFormat, header: bool) {
    match format {
        OutputFormat::Json => {
            for row in rows {
                println!("{}", present::log::json_line(row));
            }
        }
        OutputFormat::Csv => {
            if header {
                println!("{}", present::log::csv_header());
            }
            for row in rows {
                println!("{}", present::log::csv_line(row));
            }
        }
        OutputFormat::Table => {
            if header {
                println!("{}", present::log::table_header());
            }
            for row in rows {
                println!("{}", present::log::table_line(row));
            }
        }
    }
}
