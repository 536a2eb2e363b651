//! Presentation: how the command line (and, later, the dashboard) shows what
//! the library produces. Each function returns text and prints nothing, so
//! every front end shows the same words.
//!
//! Decisions themselves are put in words by [`crate::dns::Explanation`];
//! this module lays out log rows, the annual review, the device table, a
//! list compile report and the server's status around it. It depends on the
//! modules whose types it shows; nothing but front ends depends on it.

pub mod changes;
pub mod devices;
pub mod lists;
pub mod log;
pub mod metrics;
pub mod review;
pub mod selftest;
pub mod status;
pub mod users;

/// One row of a listing the command line prints as a table, CSV or JSON
/// lines (the device table, the users), in each of those forms.
pub trait ListRow {
    /// A JSON object on one line.
    fn json_line(&self) -> String;
    /// A CSV record (no line end).
    fn csv_line(&self) -> String;
    /// A line of the readable table.
    fn table_line(&self) -> String;
}
