//! The query log's settings, read by the front door (`log.rs`) and the
//! writer thread (`writer.rs`) alike.

use std::time::Duration;

use super::StoreError;

/// How the log treats the client identity of rows from private groups.
/// Rows of private groups never carry a device name or owner.
/// Its words (`full`, `truncate`, `hash`) are the config's `guest_privacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// The full client address.
    #[default]
    Full,
    /// The client's network only: IPv4 /24 (`192.168.3.0/24`), IPv6 /48.
    Truncate,
    /// `anon-` and 12 hex digits of a keyed hash (HMAC-SHA256) of the address.
    /// The key is random per UTC day and deleted the day after, so a device is
    /// followable within a day and not across days.
    Hash,
}

/// How the query log behaves. Build with `..LogSettings::default()`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Days of raw rows kept, 1..=365 (default 30). Used by the retention job.
    pub retention_days: u32,
    /// The treatment of rows whose group is in `private_groups`.
    pub guest_privacy: Privacy,
    /// Groups whose rows get `guest_privacy` (default `["guest"]`).
    pub private_groups: Vec<String>,
    /// Rows that may wait for the writer before new ones are dropped (default
    /// 262,144: about 8 s at 32,000 queries/s, the soak's rate on the bench
    /// bed, where a cold cache's first minute kept the writer behind for tens
    /// of seconds and 65,536 shed rows). A waiting row takes about 250 bytes,
    /// allocated when it is queued and freed when it is written (the
    /// allocator keeps the high-water mark: the soak's first minute was 53 MiB
    /// higher after a full-rate burst had filled the channel).
    pub channel_capacity: usize,
    /// Rows per transaction at most (default 10,000, about 0.2 s of writing).
    /// Only bursts fill a batch (otherwise `flush_interval` closes it); a
    /// bigger batch writes each hot index page once for more rows. Measured
    /// here: 2,000 sustains about 37k rows/s, 10,000 about 59k.
    pub batch_max: usize,
    /// The longest a row waits in a part-filled batch (default 500 ms, at most 1 s).
    pub flush_interval: Duration,
    /// A cap on the database's size in pages as the writer sees it
    /// (`PRAGMA max_page_count`), so tests can fill "the disk" where no
    /// small file system can be mounted. `None` (the default) in service.
    pub max_pages: Option<u32>,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            retention_days: 30,
            guest_privacy: Privacy::Full,
            private_groups: vec!["guest".to_string()],
            channel_capacity: 262_144,
            batch_max: 10_000,
            flush_interval: Duration::from_millis(500),
            max_pages: None,
        }
    }
}

impl LogSettings {
    /// Checks the ranges; the message says which setting is wrong.
    pub fn validate(&self) -> Result<(), StoreError> {
        let problem = if !(1..=365).contains(&self.retention_days) {
            format!("retention_days is {}; it must be from 1 to 365", self.retention_days)
        } else if self.channel_capacity == 0 {
            "the query log's channel capacity must be at least 1".to_string()
        } else if self.batch_max == 0 {
            "the query log's batch size must be at least 1".to_string()
        } else if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(1) {
            format!("the query log's flush interval is {:?}; it must be from 1 ms to 1 s", self.flush_interval)
        } else {
            return Ok(());
        };
        Err(StoreError::Invalid(problem))
    }
}
