//! Unblock requests (issue 15): someone on a school network asks, from the
//! block page, for a blocked name to be unblocked (or a staff user asks from
//! the dashboard), and an admin approves (an allow override for the group,
//! made by the policy editor) or declines with a reply.
//!
//! Open requests for the same name and group are one decision: they are
//! shown together ([`UnblockStore::open_groups`]) and approved or declined
//! together, in one transaction. A request for a locked category can only
//! be declined. [`UnblockStore::counts`] is the review's over-blocking
//! measure: figures by category and group only, never a name, a client or a
//! requester. Every write is on a short-lived `synchronous=FULL` connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::StoreError;
use super::schema::{self, Purpose};

/// The longest reason kept, in characters.
pub const REASON_MAX: usize = 1000;
/// The longest requester name kept, in characters.
pub const REQUESTER_MAX: usize = 100;
/// The longest reply kept, in characters.
pub const REPLY_MAX: usize = 2000;

/// Where a request was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    BlockPage,
    Dashboard,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::BlockPage => "block-page",
            Source::Dashboard => "dashboard",
        }
    }
}

/// A request as made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    /// The blocked name, without the trailing dot, lower case.
    pub name: String,
    pub group: String,
    /// The category that blocked it ("" for a deny override).
    pub category: String,
    pub locked: bool,
    pub reason: String,
    pub requester: String,
    pub source: Source,
    /// The address as the query log names it ("" from the dashboard).
    pub client: String,
}

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnblockRequest {
    pub id: i64,
    pub name: String,
    pub group: String,
    pub category: String,
    pub locked: bool,
    pub reason: String,
    pub requester: String,
    /// "block-page" or "dashboard".
    pub source: String,
    pub client: String,
    pub created_ms: i64,
    /// "open", "approved" or "declined".
    pub state: String,
    pub decided_by: Option<String>,
    pub decided_ms: Option<i64>,
    pub reply: String,
    pub until_ms: Option<i64>,
    pub change_id: Option<i64>,
}

/// The open requests for one name and group: one decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenGroup {
    pub name: String,
    pub group: String,
    pub category: String,
    pub locked: bool,
    pub count: usize,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Newest first.
    pub requests: Vec<UnblockRequest>,
}

/// One decision: the requests for a name and group approved or declined together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub name: String,
    pub group: String,
    pub category: String,
    pub locked: bool,
    /// "approved" or "declined".
    pub state: String,
    pub decided_by: String,
    pub decided_ms: i64,
    pub reply: String,
    pub until_ms: Option<i64>,
    pub change_id: Option<i64>,
    pub count: usize,
    /// The first of them was asked at this instant.
    pub first_ms: i64,
    /// From the first request to the decision.
    pub ms_to_decide: i64,
}

/// Requests made in a period, for the review: figures only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub requested: i64,
    pub approved: i64,
    pub declined: i64,
    pub open: i64,
    /// From request to decision, over the decided ones.
    pub mean_ms_to_decide: Option<i64>,
    pub median_ms_to_decide: Option<i64>,
    pub by_category: Vec<CountLine>,
    pub by_group: Vec<CountLine>,
}

/// The figures of one category or group ("" as the category: blocked by a
/// deny override).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CountLine {
    pub key: String,
    pub requested: i64,
    pub approved: i64,
    pub declined: i64,
    pub open: i64,
}

/// Why a request or a decision was refused: the field it concerns and what to do.
#[derive(Debug, thiserror::Error)]
pub enum UnblockError {
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UnblockError {
    fn invalid(field: &'static str, message: impl Into<String>) -> UnblockError {
        UnblockError::Invalid { field, message: message.into() }
    }
}

/// Why a locked category's request cannot be approved (the page says it too).
pub const LOCKED_REFUSAL: &str = "this name is in a locked category (illegal content lists cannot be unblocked by \
                                  anyone); it can only be declined";

/// The unblock requests in the database `database`.
#[derive(Debug, Clone)]
pub struct UnblockStore {
    database: PathBuf,
}

const COLUMNS: &str = "id, name, group_name, category, locked, reason, requester, source, client, created_ms, state, \
                       decided_by, decided_ms, reply, until_ms, change_id";

fn read_request(row: &rusqlite::Row<'_>) -> rusqlite::Result<UnblockRequest> {
    Ok(UnblockRequest {
        id: row.get(0)?,
        name: row.get(1)?,
        group: row.get(2)?,
        category: row.get(3)?,
        locked: row.get::<_, i64>(4)? != 0,
        reason: row.get(5)?,
        requester: row.get(6)?,
        source: row.get(7)?,
        client: row.get(8)?,
        created_ms: row.get(9)?,
        state: row.get(10)?,
        decided_by: row.get(11)?,
        decided_ms: row.get(12)?,
        reply: row.get(13)?,
        until_ms: row.get(14)?,
        change_id: row.get(15)?,
    })
}

/// `text` trimmed, checked to be at most `max` characters.
fn bounded(text: &str, max: usize, field: &'static str, what: &str) -> Result<String, UnblockError> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(UnblockError::invalid(field, format!("{what} is too long: keep it to {max} characters")));
    }
    Ok(text.to_string())
}

impl UnblockStore {
    /// Opens (creating and migrating when needed) the database.
    pub fn open(database: &Path) -> Result<UnblockStore, StoreError> {
        drop(schema::open(database, Purpose::Config)?);
        Ok(UnblockStore { database: database.to_path_buf() })
    }

    pub fn database(&self) -> &Path {
        &self.database
    }

    /// Stores a request (its reason required, reason and requester within
    /// their limits); returns it as stored.
    pub fn submit(&self, request: &NewRequest, now_ms: i64) -> Result<UnblockRequest, UnblockError> {
        let reason = bounded(&request.reason, REASON_MAX, "reason", "the reason")?;
        if reason.is_empty() {
            return Err(UnblockError::invalid("reason", "say why this site is needed; the reason is required"));
        }
        let requester = bounded(&request.requester, REQUESTER_MAX, "requester", "the name")?;
        let name = request.name.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || request.group.is_empty() {
            return Err(UnblockError::invalid("name", "a request needs the blocked name and its group"));
        }
        let db = &self.database;
        let conn = schema::open(db, Purpose::Config)?;
        conn.execute(
            "INSERT INTO unblock_requests (name, group_name, category, locked, reason, requester, source, client,
                                           created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                name,
                request.group,
                request.category,
                i64::from(request.locked),
                reason,
                requester,
                request.source.as_str(),
                request.client,
                now_ms
            ],
        )
        .map_err(StoreError::sqlite(db, "store an unblock request"))?;
        let id = conn.last_insert_rowid();
        Ok(conn
            .query_row(&format!("SELECT {COLUMNS} FROM unblock_requests WHERE id = ?1"), [id], read_request)
            .map_err(StoreError::sqlite(db, "read the new unblock request"))?)
    }

    /// One request.
    pub fn get(&self, id: i64) -> Result<Option<UnblockRequest>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row(&format!("SELECT {COLUMNS} FROM unblock_requests WHERE id = ?1"), [id], read_request)
            .optional()
            .map_err(StoreError::sqlite(db, "read an unblock request"))
    }

    /// How many requests are open (the nav's count).
    pub fn open_count(&self) -> Result<i64, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        conn.query_row("SELECT count(*) FROM unblock_requests WHERE state = 'open'", [], |row| row.get(0))
            .map_err(StoreError::sqlite(db, "count the open unblock requests"))
    }

    /// The open requests, grouped by name and group; the group asked most
    /// recently first, each group's requests newest first.
    pub fn open_groups(&self) -> Result<Vec<OpenGroup>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM unblock_requests WHERE state = 'open' ORDER BY created_ms DESC, id DESC"
            ))
            .map_err(StoreError::sqlite(db, "read the open unblock requests"))?;
        let rows = statement
            .query_map([], read_request)
            .map_err(StoreError::sqlite(db, "read the open unblock requests"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::sqlite(db, "read the open unblock requests"))?;
        let mut groups: Vec<OpenGroup> = Vec::new();
        for request in rows {
            match groups.iter_mut().find(|g| g.name == request.name && g.group == request.group) {
                Some(group) => {
                    group.count += 1;
                    group.first_ms = group.first_ms.min(request.created_ms);
                    // Any request made while the category was locked keeps the whole group locked.
                    group.locked |= request.locked;
                    group.requests.push(request);
                }
                None => groups.push(OpenGroup {
                    name: request.name.clone(),
                    group: request.group.clone(),
                    category: request.category.clone(),
                    locked: request.locked,
                    count: 1,
                    first_ms: request.created_ms,
                    last_ms: request.created_ms,
                    requests: vec![request],
                }),
            }
        }
        Ok(groups)
    }

    /// The open requests for `name` and `group` (one group of [`Self::open_groups`]).
    pub fn open_group(&self, name: &str, group: &str) -> Result<Option<OpenGroup>, StoreError> {
        Ok(self.open_groups()?.into_iter().find(|g| g.name == name && g.group == group))
    }

    /// Decisions, newest first: `limit` of them after skipping `offset`.
    pub fn decided(&self, limit: usize, offset: usize) -> Result<Vec<Decision>, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(
                "SELECT name, group_name, max(category), max(locked), state, max(decided_by), decided_ms,
                        max(reply), max(until_ms), max(change_id), count(*), min(created_ms)
                 FROM unblock_requests WHERE state != 'open'
                 GROUP BY name, group_name, state, decided_ms
                 ORDER BY decided_ms DESC, name LIMIT ?1 OFFSET ?2",
            )
            .map_err(StoreError::sqlite(db, "read the decided unblock requests"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(0);
        let rows = statement
            .query_map(params![limit, offset], |row| {
                let decided_ms: i64 = row.get(6)?;
                let first_ms: i64 = row.get(11)?;
                Ok(Decision {
                    name: row.get(0)?,
                    group: row.get(1)?,
                    category: row.get(2)?,
                    locked: row.get::<_, i64>(3)? != 0,
                    state: row.get(4)?,
                    decided_by: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    decided_ms,
                    reply: row.get(7)?,
                    until_ms: row.get(8)?,
                    change_id: row.get(9)?,
                    count: usize::try_from(row.get::<_, i64>(10)?).unwrap_or(0),
                    first_ms,
                    ms_to_decide: decided_ms - first_ms,
                })
            })
            .map_err(StoreError::sqlite(db, "read the decided unblock requests"))?;
        rows.collect::<Result<_, _>>().map_err(StoreError::sqlite(db, "read the decided unblock requests"))
    }

    /// Checks that `name` and `group` have open requests that may be
    /// approved (none locked); the page asks before the override is made.
    pub fn check_approvable(&self, name: &str, group: &str) -> Result<OpenGroup, UnblockError> {
        let Some(open) = self.open_group(name, group)? else {
            return Err(UnblockError::invalid("name", format!("no open request for {name} ({group}) to decide")));
        };
        if open.locked {
            return Err(UnblockError::invalid("reply", LOCKED_REFUSAL));
        }
        Ok(open)
    }

    /// Approves every open request for `name` and `group`, in one
    /// transaction: `reply` is the allow override's reason, `until_ms` its
    /// expiry, `change_id` the change log row that made it. Returns how many
    /// were approved. A locked one refuses the whole approval.
    #[allow(clippy::too_many_arguments)]
    pub fn approve(
        &self,
        name: &str,
        group: &str,
        by: &str,
        reply: &str,
        until_ms: Option<i64>,
        change_id: Option<i64>,
        now_ms: i64,
    ) -> Result<usize, UnblockError> {
        let reply = bounded(reply, REPLY_MAX, "reply", "the reason")?;
        self.decide(name, group, |tx, db| {
            let locked: i64 = tx
                .query_row(
                    "SELECT count(*) FROM unblock_requests
                     WHERE state = 'open' AND name = ?1 AND group_name = ?2 AND locked = 1",
                    params![name, group],
                    |row| row.get(0),
                )
                .map_err(StoreError::sqlite(db, "read the open unblock requests"))?;
            if locked > 0 {
                return Err(UnblockError::invalid("reply", LOCKED_REFUSAL));
            }
            Ok(tx
                .execute(
                    "UPDATE unblock_requests SET state = 'approved', decided_by = ?3, decided_ms = ?4, reply = ?5,
                            until_ms = ?6, change_id = ?7
                     WHERE state = 'open' AND name = ?1 AND group_name = ?2",
                    params![name, group, by, now_ms, reply, until_ms, change_id],
                )
                .map_err(StoreError::sqlite(db, "approve the unblock requests"))?)
        })
    }

    /// Declines every open request for `name` and `group` with `reply`
    /// (required), in one transaction. Returns how many were declined.
    pub fn decline(&self, name: &str, group: &str, by: &str, reply: &str, now_ms: i64) -> Result<usize, UnblockError> {
        let reply = bounded(reply, REPLY_MAX, "reply", "the reply")?;
        if reply.is_empty() {
            return Err(UnblockError::invalid("reply", "write a reply saying why; it is kept with the request"));
        }
        self.decide(name, group, |tx, db| {
            Ok(tx
                .execute(
                    "UPDATE unblock_requests SET state = 'declined', decided_by = ?3, decided_ms = ?4, reply = ?5
                     WHERE state = 'open' AND name = ?1 AND group_name = ?2",
                    params![name, group, by, now_ms, reply],
                )
                .map_err(StoreError::sqlite(db, "decline the unblock requests"))?)
        })
    }

    fn decide(
        &self,
        name: &str,
        group: &str,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<usize, UnblockError>,
    ) -> Result<usize, UnblockError> {
        let db = &self.database;
        let mut conn = schema::open(db, Purpose::Config)?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(StoreError::sqlite(db, "start"))?;
        let changed = work(&tx, db)?;
        if changed == 0 {
            return Err(UnblockError::invalid(
                "name",
                format!("no open request for {name} ({group}) to decide; it may have been decided already"),
            ));
        }
        tx.commit().map_err(StoreError::sqlite(db, "save the decision"))?;
        Ok(changed)
    }

    /// The requests made in `[from_ms, to_ms)`, as figures: how many were
    /// made, approved, declined and are still open, the time to decide, by
    /// category and by group. No name, client or requester.
    pub fn counts(&self, from_ms: i64, to_ms: i64) -> Result<RequestCounts, StoreError> {
        let db = &self.database;
        let conn = schema::open(db, Purpose::Read)?;
        let mut statement = conn
            .prepare(
                "SELECT category, group_name, state, decided_ms - created_ms FROM unblock_requests
                 WHERE created_ms >= ?1 AND created_ms < ?2",
            )
            .map_err(StoreError::sqlite(db, "count the unblock requests"))?;
        let rows = statement
            .query_map(params![from_ms, to_ms], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?, row.get(3)?))
            })
            .map_err(StoreError::sqlite(db, "count the unblock requests"))?
            .collect::<Result<Vec<(String, String, String, Option<i64>)>, _>>()
            .map_err(StoreError::sqlite(db, "count the unblock requests"))?;
        let mut counts = RequestCounts::default();
        let mut by_category: BTreeMap<String, CountLine> = BTreeMap::new();
        let mut by_group: BTreeMap<String, CountLine> = BTreeMap::new();
        let mut times = Vec::new();
        for (category, group, state, took) in rows {
            counts.requested += 1;
            match state.as_str() {
                "approved" => counts.approved += 1,
                "declined" => counts.declined += 1,
                _ => counts.open += 1,
            }
            for line in [counts_line(&mut by_category, &category), counts_line(&mut by_group, &group)] {
                line.requested += 1;
                match state.as_str() {
                    "approved" => line.approved += 1,
                    "declined" => line.declined += 1,
                    _ => line.open += 1,
                }
            }
            if let Some(took) = took.filter(|_| state != "open") {
                times.push(took.max(0));
            }
        }
        if !times.is_empty() {
            times.sort_unstable();
            let total: i128 = times.iter().map(|&t| i128::from(t)).sum();
            counts.mean_ms_to_decide = i64::try_from(total / times.len() as i128).ok();
            let middle = times.len() / 2;
            counts.median_ms_to_decide =
                Some(if times.len() % 2 == 0 { (times[middle - 1] + times[middle]) / 2 } else { times[middle] });
        }
        counts.by_category = by_category.into_values().collect();
        counts.by_group = by_group.into_values().collect();
        Ok(counts)
    }
}

fn counts_line<'m>(lines: &'m mut BTreeMap<String, CountLine>, key: &str) -> &'m mut CountLine {
    lines.entry(key.to_string()).or_insert_with(|| CountLine { key: key.to_string(), ..CountLine::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, group: &str, reason: &str, locked: bool) -> NewRequest {
        NewRequest {
            name: name.into(),
            group: group.into(),
            category: if locked { "terrorism".into() } else { "games".into() },
            locked,
            reason: reason.into(),
            requester: "Sam".into(),
            source: Source::BlockPage,
            client: "10.0.0.5".into(),
        }
    }

    #[test]
    fn requests_are_checked_grouped_and_decided_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = UnblockStore::open(&dir.path().join("h.db")).unwrap();
        // Refused: no reason, a reason or name too long.
        let refused = |r: NewRequest| match store.submit(&r, 1) {
            Err(UnblockError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(request("a.test", "pupil", "  ", false)), "reason");
        assert_eq!(refused(request("a.test", "pupil", &"x".repeat(REASON_MAX + 1), false)), "reason");
        let mut long_name = request("a.test", "pupil", "ok", false);
        long_name.requester = "n".repeat(REQUESTER_MAX + 1);
        assert_eq!(refused(long_name), "requester");
        // A reason of exactly the limit (in characters, not bytes) is kept.
        let first = store.submit(&request("Game.Test.", "pupil", &"é".repeat(REASON_MAX), false), 1_000).unwrap();
        assert_eq!(
            (first.name.as_str(), first.state.as_str(), first.source.as_str()),
            ("game.test", "open", "block-page")
        );
        store.submit(&request("game.test", "pupil", "maths homework", false), 5_000).unwrap();
        store.submit(&request("game.test", "staff", "lesson", false), 3_000).unwrap();
        store.submit(&request("terror.test", "pupil", "history project", true), 4_000).unwrap();
        assert_eq!(store.open_count().unwrap(), 4);

        let groups = store.open_groups().unwrap();
        let keys: Vec<_> = groups.iter().map(|g| (g.name.as_str(), g.group.as_str(), g.count)).collect();
        assert_eq!(keys, [("game.test", "pupil", 2), ("terror.test", "pupil", 1), ("game.test", "staff", 1)]);
        assert_eq!((groups[0].first_ms, groups[0].last_ms), (1_000, 5_000));
        assert_eq!(groups[0].requests[0].reason, "maths homework", "newest first");

        // A locked one can only be declined.
        let error = store.approve("terror.test", "pupil", "admin", "ok", None, Some(1), 6_000).unwrap_err();
        assert!(error.to_string().contains("cannot be unblocked by anyone"), "{error}");
        assert!(store.check_approvable("terror.test", "pupil").is_err());
        assert_eq!(store.open_group("terror.test", "pupil").unwrap().unwrap().count, 1, "nothing decided");
        assert!(matches!(
            store.decline("terror.test", "pupil", "admin", " ", 6_000),
            Err(UnblockError::Invalid { field: "reply", .. })
        ));
        assert_eq!(store.decline("terror.test", "pupil", "admin", "Illegal content", 6_000).unwrap(), 1);

        // Both pupil requests for game.test are approved at once; staff's stays open.
        assert_eq!(store.check_approvable("game.test", "pupil").unwrap().count, 2);
        let approved =
            store.approve("game.test", "pupil", "admin", "Needed for maths", Some(99_000), Some(7), 9_000).unwrap();
        assert_eq!(approved, 2);
        assert!(store.approve("game.test", "pupil", "admin", "again", None, Some(8), 9_500).is_err(), "decided");
        let kept = store.get(first.id).unwrap().unwrap();
        assert_eq!(
            (kept.state.as_str(), kept.decided_by.as_deref(), kept.until_ms, kept.change_id, kept.reply.as_str()),
            ("approved", Some("admin"), Some(99_000), Some(7), "Needed for maths")
        );
        assert_eq!(store.open_groups().unwrap().len(), 1);

        let decided = store.decided(10, 0).unwrap();
        assert_eq!(decided.len(), 2);
        assert_eq!((decided[0].name.as_str(), decided[0].count, decided[0].ms_to_decide), ("game.test", 2, 8_000));
        assert_eq!((decided[1].state.as_str(), decided[1].locked), ("declined", true));
        assert_eq!(store.decided(1, 1).unwrap()[0].name, "terror.test");

        // The review's figures: no names anywhere.
        let counts = store.counts(0, 10_000).unwrap();
        assert_eq!((counts.requested, counts.approved, counts.declined, counts.open), (4, 2, 1, 1));
        // Decided after 8 000, 4 000 and 2 000 ms.
        assert_eq!((counts.mean_ms_to_decide, counts.median_ms_to_decide), (Some(4_666), Some(4_000)));
        let categories: Vec<_> = counts.by_category.iter().map(|l| (l.key.as_str(), l.requested, l.open)).collect();
        assert_eq!(categories, [("games", 3, 1), ("terrorism", 1, 0)]);
        let groups: Vec<_> = counts.by_group.iter().map(|l| (l.key.as_str(), l.approved, l.declined)).collect();
        assert_eq!(groups, [("pupil", 2, 1), ("staff", 0, 0)]);
        let json = serde_json::to_string(&counts).unwrap();
        assert!(!json.contains("game.test") && !json.contains("10.0.0.5") && !json.contains("Sam"), "{json}");
        assert_eq!(store.counts(2_000, 4_000).unwrap().requested, 1, "the period is [from, to)");
    }
}
