//! Where accepted events live: the [`Store`] trait and its embedded SQLite implementation.
//!
//! A store keeps each event once by `event_id`, erases a session in the same transaction that
//! receives its `deletion_request`, refuses later events of an erased session, deletes what is
//! older than the retention, and answers the report's queries. Everything it is given has
//! already passed [`crate::validate`].

mod postgres;
mod sqlite;
mod summary;

use std::collections::BTreeMap;

use telemetry_model::{Event, HourTimestamp};

use crate::report::{Report, ReportQuery};
use crate::validate::{Catalogs, RefusalCounts};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// One request's share of a group commit: the events to store and the events already refused.
#[derive(Debug, Default)]
pub struct WriteJob {
    /// Checked events, in the order they arrived (`deletion_request`s among them).
    pub events: Vec<Event>,
    /// Events refused while checking, counted with the write so the counts survive a restart.
    pub refused: RefusalCounts,
}

/// What a store did with one [`WriteJob`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Events stored for the first time, and deletion requests carried out.
    pub accepted: u64,
    /// Events (or deletion requests) already stored or carried out before.
    pub duplicates: u64,
    /// Events refused, by reason: those refused while checking and those the store refused
    /// (events of an erased session).
    pub refused: RefusalCounts,
}

/// What one retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Events deleted.
    pub events: u64,
    /// Days whose aggregates were kept (with no session ids) before their events went.
    pub days_rolled_up: u64,
}

/// A store failed; nothing of the write was committed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {message}")]
pub struct StoreError {
    context: &'static str,
    message: String,
    transient: bool,
}

impl StoreError {
    /// An error of `context` (what the store was doing) with the cause's message.
    pub fn new(context: &'static str, error: impl std::fmt::Display) -> StoreError {
        StoreError {
            context,
            message: error.to_string(),
            transient: false,
        }
    }

    /// The same error, marked as one that the same work may not meet again (a deadlock the
    /// database broke, a serialization failure): the store retries such a write at once.
    pub(crate) fn transient(mut self) -> StoreError {
        self.transient = true;
        self
    }

    /// Whether the same work may succeed when tried again at once (the database broke a
    /// deadlock by aborting it, or a serialization failure): the store retries such a write.
    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// Storage for accepted events.
///
/// Implementations must be safe to share between tasks. A write is all or nothing: when
/// [`Store::write`] returns an error, none of its jobs was committed, so the collector answers
/// 503 and the client sends the batch again.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records the SDKs' catalogs, so reports list every declared feature, used or not.
    async fn register_catalogs(&self, catalogs: &Catalogs) -> Result<(), StoreError>;

    /// Writes several jobs in one transaction (a group commit) and returns, in order, what
    /// happened to each.
    async fn write(&self, jobs: Vec<WriteJob>) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Deletes every event older than `oldest`, first keeping each affected day's aggregates
    /// (which carry no session ids), and forgets erased sessions as old.
    async fn expire(&self, oldest: HourTimestamp) -> Result<Expired, StoreError>;

    /// The report for one SDK over a range of days.
    async fn report(&self, query: &ReportQuery) -> Result<Report, StoreError>;

    /// The SDKs that have catalogs or events, for a report that names none.
    async fn sdks(&self) -> Result<Vec<String>, StoreError>;

    /// How many [`Store::write`] calls the collector may run at once: 1 (the default) for a
    /// store with a single writer, more for a database that commits transactions side by side.
    fn concurrent_writes(&self) -> usize {
        1
    }
}

/// An enum's name on the wire (`run`, `macos`, `1-10s`), as both stores keep it.
pub(crate) fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Counts by key, as reports show them.
pub(crate) type Counts = BTreeMap<String, u64>;
