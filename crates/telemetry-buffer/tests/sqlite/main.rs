//! The SQLite spool on real files: the claim/acknowledge contract shared with the in-memory
//! buffer, and a module for each section of `SqliteSpool`'s doc: its bounds, storage, claims
//! across connections, the delivery ledger and a busy file, wrong clocks, schema versions and
//! damage.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bounds;
mod claims;
mod clocks;
mod ledger;
mod log;
mod migrations;
mod pause;
mod recovery;
mod storage;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use telemetry_buffer::{
    BUSY_TIMEOUT, Buffer, BufferError, DeliveryLedger, SCHEMA_VERSION, SPOOL_FILE_NAME, SpoolError,
    SpoolLimits, SqliteSpool,
};
use telemetry_model::{EncodedEvent, EventId};
use telemetry_testkit::fixtures::encoded_events;

fn ids(events: &[EncodedEvent]) -> Vec<EventId> {
    events.iter().map(EncodedEvent::id).collect()
}

/// A directory with a spool path in it; the directory is deleted when this is dropped.
struct SpoolDir {
    dir: tempfile::TempDir,
}

impl SpoolDir {
    fn new() -> SpoolDir {
        SpoolDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(SPOOL_FILE_NAME)
    }

    fn open(&self, limits: SpoolLimits) -> SqliteSpool {
        let spool = SqliteSpool::open(self.path(), limits).unwrap();
        assert!(spool.recovery().is_none(), "{:?}", spool.recovery());
        spool
    }

    fn open_at(&self, limits: SpoolLimits, clock: &TestClock) -> SqliteSpool {
        let now = Arc::clone(&clock.0);
        SqliteSpool::open_with_clock(self.path(), limits, move || {
            UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst))
        })
        .unwrap()
    }

    /// A second, plain connection to the same file, to look behind the spool's back.
    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path()).unwrap()
    }
}

/// Checks the spool's running totals against the rows themselves.
fn assert_totals_match(dir: &SpoolDir, spool: &SqliteSpool) {
    let (rows, bytes, totals_rows, totals_bytes): (i64, i64, i64, i64) = dir
        .raw()
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(json AS BLOB))), 0),
                    (SELECT events FROM totals), (SELECT bytes FROM totals)
             FROM events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap();
    assert_eq!((totals_rows, totals_bytes), (rows, bytes));
    assert_eq!(spool.stats().unwrap().pending, rows as usize);
}

/// A clock that only moves when told to.
struct TestClock(Arc<AtomicU64>);

impl TestClock {
    fn new() -> TestClock {
        TestClock(Arc::new(AtomicU64::new(1_764_338_400)))
    }

    fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The clock stepping backwards, as a wall clock can when it is corrected.
    fn rewind(&self, seconds: u64) {
        self.0.fetch_sub(seconds, Ordering::SeqCst);
    }

    /// The clock reading `unix_seconds`, right or wrong.
    fn set(&self, unix_seconds: u64) {
        self.0.store(unix_seconds, Ordering::SeqCst);
    }
}

/// The claims the file holds, live or not, as `(first_seq, last_seq)`, oldest first.
fn claim_rows(dir: &SpoolDir) -> Vec<(i64, i64)> {
    let raw = dir.raw();
    let mut select = raw
        .prepare("SELECT first_seq, last_seq FROM claims ORDER BY first_seq")
        .unwrap();
    select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A spool in a directory of its own, for the contract suite.
struct OpenSpool {
    dir: SpoolDir,
    spool: SqliteSpool,
}

impl std::ops::Deref for OpenSpool {
    type Target = SqliteSpool;

    fn deref(&self) -> &SqliteSpool {
        &self.spool
    }
}

fn open(max_events: usize) -> OpenSpool {
    let dir = SpoolDir::new();
    let spool = dir.open(limits(max_events));
    OpenSpool { dir, spool }
}

/// The spool's running totals agree with its rows after every step of the contract.
fn check(open: &OpenSpool) {
    assert_totals_match(&open.dir, &open.spool);
}

telemetry_testkit::buffer_contract!(open: open, check: check);

fn limits(max_events: usize) -> SpoolLimits {
    SpoolLimits {
        max_events,
        ..SpoolLimits::default()
    }
}

#[test]
fn defaults_are_documented_values() {
    let limits = SpoolLimits::default();
    assert_eq!(limits.max_events, 100_000);
    assert_eq!(limits.max_bytes, 50 * 1024 * 1024);
    assert_eq!(limits.max_age, Duration::from_secs(30 * 24 * 3600));
    let dir = SpoolDir::new();
    let spool = dir.open(limits);
    assert_eq!(spool.kind(), "sqlite");
    assert_eq!(spool.claim_lease(), Duration::from_secs(60));
    assert_eq!(spool.path(), dir.path());
}

/// The creation time of the files the ledger and clock tests make, as [`TestClock::new`] reads.
const CREATED: u64 = 1_764_338_400;
const DAY: u64 = 24 * 60 * 60;
const YEAR: u64 = 365 * DAY;
