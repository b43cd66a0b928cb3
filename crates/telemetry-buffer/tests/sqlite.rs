//! The SQLite spool on real files: the claim/acknowledge contract shared with the in-memory
//! buffer, its bounds, persistence, claims across connections, the delivery ledger, a busy file,
//! wrong clocks, schema versions and damage.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

#[test]
fn byte_bound_drops_the_oldest_and_counts_them() {
    let size = encoded_events(1)[0].json().len() as u64;
    assert!(
        encoded_events(20)
            .iter()
            .all(|event| event.json().len() as u64 == size),
        "the fixture's events all have one size, which the cases below rely on"
    );
    // (max bytes, appended, expected pending, expected dropped)
    let cases = [
        (3 * size, 5, 3, 2),
        (3 * size + size / 2, 5, 3, 2),
        (3 * size - 1, 5, 2, 3),
        (size, 1, 1, 0),
        (size - 1, 1, 0, 1),
        (0, 4, 0, 4),
        (u64::MAX, 5, 5, 0),
    ];
    for (max_bytes, appended, pending, dropped) in cases {
        let dir = SpoolDir::new();
        let spool = dir.open(SpoolLimits {
            max_bytes,
            ..SpoolLimits::default()
        });
        let events = encoded_events(appended);
        spool.append(events.clone()).unwrap();
        let stats = spool.stats().unwrap();
        let case = (max_bytes, appended);
        assert_eq!(stats.pending, pending, "{case:?}");
        assert_eq!(stats.dropped_full, dropped, "{case:?}");
        assert_totals_match(&dir, &spool);
        let kept = spool
            .claim(usize::MAX)
            .unwrap()
            .map(|claim| claim.events)
            .unwrap_or_default();
        assert_eq!(ids(&kept), ids(&events[appended - pending..]), "{case:?}");
    }
}

#[test]
fn age_bound_drops_old_events_on_append_and_claim() {
    let max_age = Duration::from_secs(3_600);
    // (seconds between the two appends, events of the first append kept)
    let cases = [(0, 3), (3_599, 3), (3_600, 3), (3_601, 0), (86_400, 0)];
    for (advance, kept) in cases {
        let dir = SpoolDir::new();
        let clock = TestClock::new();
        let spool = dir.open_at(
            SpoolLimits {
                max_age,
                ..SpoolLimits::default()
            },
            &clock,
        );
        let old = encoded_events(3);
        spool.append(old.clone()).unwrap();
        clock.advance(advance);
        let new = encoded_events(2);
        spool.append(new.clone()).unwrap();
        let stats = spool.stats().unwrap();
        assert_eq!(stats.pending, kept + 2, "{advance}");
        assert_eq!(stats.dropped_age, (3 - kept) as u64, "{advance}");
        assert_eq!(stats.dropped_full, 0, "{advance}");
        let claim = spool.claim(usize::MAX).unwrap().unwrap();
        let expected: Vec<EventId> = ids(&old[3 - kept..]).into_iter().chain(ids(&new)).collect();
        assert_eq!(ids(&claim.events), expected, "{advance}");
    }

    // Without another append, claiming drops what is too old instead of sending it.
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(
        SpoolLimits {
            max_age,
            ..SpoolLimits::default()
        },
        &clock,
    );
    spool.append(encoded_events(4)).unwrap();
    clock.advance(3_601);
    assert!(spool.claim(10).unwrap().is_none());
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_age), (0, 4));
}

#[test]
fn claimed_events_are_not_dropped_while_their_lease_runs() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(
        SpoolLimits {
            max_events: 2,
            max_age: Duration::from_secs(10),
            ..SpoolLimits::default()
        },
        &clock,
    );
    spool.append(encoded_events(2)).unwrap();
    let claim = spool.claim(2).unwrap().unwrap();
    clock.advance(30);
    spool.append(encoded_events(3)).unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!(stats.pending, 2, "all three new ones dropped");
    assert_eq!((stats.dropped_full, stats.dropped_age), (3, 0));
    spool.acknowledge(claim.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
}

/// The spool does not look up event ids (see "Storage" on `SqliteSpool`): delivery is at least
/// once and receivers drop duplicates by id, so an event appended twice is sent twice, in order,
/// and never lost or mistaken for a conflict.
#[test]
fn an_event_appended_twice_is_kept_twice_in_order() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let events = encoded_events(3);
    let twice: Vec<EncodedEvent> = events.iter().chain(&events).cloned().collect();
    spool.append(twice.clone()).unwrap();
    // Also while a copy is claimed.
    let claim = spool.claim(1).unwrap().unwrap();
    spool.append(events[..1].to_vec()).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 7);
    assert_totals_match(&dir, &spool);
    spool.acknowledge(claim.id).unwrap();
    let rest = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&twice[1..])
        .into_iter()
        .chain(ids(&events[..1]))
        .collect();
    assert_eq!(ids(&rest.events), expected);
    spool.acknowledge(rest.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_eq!(spool.stats().unwrap().dropped_total(), 0);
    assert_totals_match(&dir, &spool);
}

#[test]
fn events_claims_and_counters_persist_across_reopen() {
    let dir = SpoolDir::new();
    let events = encoded_events(6);
    // The first spool stays open, as another process delivering from the same file would.
    let holder = dir.open(limits(5));
    holder.append(events.clone()).unwrap();
    let claim = holder.claim(2).unwrap().unwrap();
    assert_eq!(ids(&claim.events), ids(&events[1..3]));
    let spool = dir.open(limits(5));
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_full), (5, 1));
    let rest = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&rest.events),
        ids(&events[3..]),
        "the claim made through the other connection still holds its events"
    );
    spool.acknowledge(claim.id).unwrap();
    spool.release(rest.id).unwrap();
    drop(spool);
    drop(holder);
    let spool = dir.open(limits(5));
    assert_eq!(spool.stats().unwrap().pending, 3);
    assert_eq!(spool.purge().unwrap(), 3);
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_eq!(
        spool.stats().unwrap().dropped_full,
        1,
        "purge is not a drop"
    );
}

#[test]
fn expired_claims_can_be_claimed_again() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir
        .open_at(SpoolLimits::default(), &clock)
        .with_claim_lease(Duration::from_secs(60));
    let events = encoded_events(4);
    spool.append(events.clone()).unwrap();

    // A holder that dies: its claim is never acknowledged nor released.
    let abandoned = spool.claim(2).unwrap().unwrap();
    clock.advance(59);
    let others = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&others.events),
        ids(&events[2..]),
        "the lease still runs"
    );
    spool.release(others.id).unwrap();
    clock.advance(1);
    let again = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&again.events),
        ids(&events),
        "expired events come back in their place"
    );
    assert!(
        matches!(
            spool.acknowledge(abandoned.id),
            Err(BufferError::UnknownClaim(_))
        ),
        "the old holder lost its events to the new claim"
    );

    // An expired claim that nobody took over can still be acknowledged.
    clock.advance(600);
    spool.acknowledge(again.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);

    let spool = spool.with_claim_lease(Duration::ZERO);
    assert_eq!(
        spool.claim_lease(),
        Duration::from_secs(1),
        "at least a second"
    );
}

#[test]
fn an_expired_claim_taken_over_in_part_cannot_be_acknowledged_late() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir
        .open_at(SpoolLimits::default(), &clock)
        .with_claim_lease(Duration::from_secs(60));
    let events = encoded_events(5);
    spool.append(events.clone()).unwrap();
    let abandoned = spool.claim(4).unwrap().unwrap();
    clock.advance(60);
    let taker = spool.claim(2).unwrap().unwrap();
    assert_eq!(ids(&taker.events), ids(&events[..2]));
    assert_eq!(claim_rows(&dir).len(), 1, "the expired claim is gone");
    for late in [spool.acknowledge(abandoned.id), spool.release(abandoned.id)] {
        assert!(
            matches!(late, Err(BufferError::UnknownClaim(_))),
            "{late:?}"
        );
    }
    assert_eq!(
        spool.stats().unwrap().pending,
        5,
        "the late acknowledgement deleted nothing"
    );
    let rest = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&rest.events),
        ids(&events[2..]),
        "what the new claim did not take is free again, in order"
    );
    spool.acknowledge(taker.id).unwrap();
    spool.acknowledge(rest.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_released_claim_comes_back_first_and_is_claimed_again() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let events = encoded_events(5);
    spool.append(events.clone()).unwrap();
    let first = spool.claim(3).unwrap().unwrap();
    spool.release(first.id).unwrap();
    assert!(claim_rows(&dir).is_empty());
    for again in [spool.release(first.id), spool.acknowledge(first.id)] {
        assert!(
            matches!(again, Err(BufferError::UnknownClaim(_))),
            "{again:?}"
        );
    }
    let head = spool.claim(2).unwrap().unwrap();
    let tail = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&head.events), ids(&events[..2]));
    assert_eq!(ids(&tail.events), ids(&events[2..]));
    assert_eq!(claim_rows(&dir), [(1, 2), (3, 5)]);
    spool.acknowledge(tail.id).unwrap();
    spool.release(head.id).unwrap();
    let last = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&last.events), ids(&events[..2]));
    spool.acknowledge(last.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_claim_stops_at_events_a_live_claim_holds() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir
        .open_at(SpoolLimits::default(), &clock)
        .with_claim_lease(Duration::from_secs(60));
    let events = encoded_events(6);
    spool.append(events.clone()).unwrap();
    let first = spool.claim(2).unwrap().unwrap();
    let second = spool.claim(2).unwrap().unwrap();
    spool.release(first.id).unwrap();
    let again = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&again.events),
        ids(&events[..2]),
        "one run: it stops where the second claim's events begin"
    );
    let rest = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&rest.events), ids(&events[4..]), "it skips them");
    assert!(spool.claim(10).unwrap().is_none(), "everything is claimed");
    assert_eq!(claim_rows(&dir), [(1, 2), (3, 4), (5, 6)]);

    // Once the leases run out, one claim takes everything across the old ranges, and the
    // expired claims are gone.
    spool.release(again.id).unwrap();
    clock.advance(60);
    let all = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&all.events), ids(&events));
    assert_eq!(claim_rows(&dir), [(1, 6)]);
    for late in [second.id, rest.id] {
        let late = spool.acknowledge(late);
        assert!(
            matches!(late, Err(BufferError::UnknownClaim(_))),
            "{late:?}"
        );
    }
    spool.acknowledge(all.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_late_acknowledgement_never_deletes_events_appended_after_its_claim() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir
        .open_at(
            SpoolLimits {
                max_age: Duration::from_secs(100),
                ..SpoolLimits::default()
            },
            &clock,
        )
        .with_claim_lease(Duration::from_secs(60));
    spool.append(encoded_events(2)).unwrap();
    let expired = spool.claim(2).unwrap().unwrap();
    clock.advance(200);
    // The claimed events are past both their lease and their age: the append drops them all,
    // which leaves no row at all before the new one goes in.
    let newer = encoded_events(1);
    spool.append(newer.clone()).unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_age), (1, 2));
    // Nobody else claimed the expired claim's events, so acknowledging it works, and it
    // deletes only what its range covered: the new event has a `seq` of its own.
    spool.acknowledge(expired.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 1);
    assert_totals_match(&dir, &spool);
    let seq_before_purge: i64 = dir
        .raw()
        .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(seq_before_purge, 3);

    // Nor does emptying the spool make a `seq` come round again.
    let claim = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&claim.events), ids(&newer));
    assert_eq!(spool.purge().unwrap(), 1);
    spool.append(encoded_events(1)).unwrap();
    let seq_after_purge: i64 = dir
        .raw()
        .query_row("SELECT MIN(seq) FROM events", [], |row| row.get(0))
        .unwrap();
    assert!(seq_after_purge > seq_before_purge, "{seq_after_purge}");
    assert!(matches!(
        spool.acknowledge(claim.id),
        Err(BufferError::UnknownClaim(_))
    ));
    assert_eq!(spool.stats().unwrap().pending, 1);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_late_acknowledgement_after_some_of_its_events_were_dropped_keeps_totals_exact() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir
        .open_at(limits(4), &clock)
        .with_claim_lease(Duration::from_secs(60));
    let claimed = encoded_events(3);
    spool.append(claimed).unwrap();
    let expired = spool.claim(3).unwrap().unwrap();
    clock.advance(60);
    // Its events count as unclaimed now: the oldest of them makes room for the new ones.
    let newer = encoded_events(2);
    spool.append(newer.clone()).unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_full), (4, 1));
    assert_totals_match(&dir, &spool);
    spool.acknowledge(expired.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 2);
    assert_totals_match(&dir, &spool);
    let rest = spool.claim(10).unwrap().unwrap();
    assert_eq!(ids(&rest.events), ids(&newer));
}

#[test]
fn claiming_drops_old_events_that_a_backward_clock_put_behind_younger_ones() {
    let max_age = Duration::from_secs(3_600);
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(
        SpoolLimits {
            max_age,
            ..SpoolLimits::default()
        },
        &clock,
    );
    // A day after the file was created, so that the clock stepping back below stays after it
    // (an event stamped before the file existed is not old but implausible: see
    // `events_stamped_at_an_implausible_time_are_kept_as_fresh`).
    clock.advance(86_400);
    let first = encoded_events(3);
    spool.append(first.clone()).unwrap();
    // The clock steps 30 seconds back: these events look 30 seconds older than the first ones.
    // (A step back of more than a claim lease would make the first events' time implausible,
    // and they would count as appended now.)
    clock.rewind(30);
    let behind = encoded_events(2);
    spool.append(behind.clone()).unwrap();
    // An hour later (by the clock), `behind` is past `max_age` and the first events are not.
    clock.advance(3_601);
    let last = encoded_events(1);
    spool.append(last.clone()).unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!(
        (stats.pending, stats.dropped_age),
        (6, 0),
        "appending looks only at the oldest events, which are young enough"
    );
    let claim = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&first).into_iter().chain(ids(&last)).collect();
    assert_eq!(
        ids(&claim.events),
        expected,
        "the old events are never handed out"
    );
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_age), (4, 2));
    assert_totals_match(&dir, &spool);
    spool.acknowledge(claim.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

#[test]
fn two_spools_on_one_file_never_claim_the_same_event() {
    const EVENTS: usize = 1_500;
    const LOCKSTEP_ROUNDS: usize = 50;
    let dir = SpoolDir::new();
    let events = encoded_events(EVENTS);
    dir.open(SpoolLimits::default())
        .append(events.clone())
        .unwrap();

    let barrier = Barrier::new(2);
    let held: Mutex<HashSet<EventId>> = Mutex::new(HashSet::new());
    let delivered: Vec<Vec<EventId>> = std::thread::scope(|scope| {
        let workers: Vec<_> = [3, 7]
            .into_iter()
            .map(|batch| {
                let (dir, barrier, held) = (&dir, &barrier, &held);
                scope.spawn(move || {
                    // Each thread has its own spool, so its own connection to the file.
                    let spool = dir.open(SpoolLimits::default());
                    let mut delivered = Vec::new();
                    // In step: both claim at once and hold their claims together, so neither
                    // can starve the other, and the claims are compared while both are live.
                    for _ in 0..LOCKSTEP_ROUNDS {
                        barrier.wait();
                        let claim = spool.claim(batch).unwrap().unwrap();
                        for event in &claim.events {
                            assert!(held.lock().unwrap().insert(event.id()), "claimed twice");
                        }
                        barrier.wait();
                        delivered.extend(ids(&claim.events));
                        spool.acknowledge(claim.id).unwrap();
                    }
                    // Then free running, as fast as each can, until nothing is left.
                    while let Some(claim) = spool.claim(batch).unwrap() {
                        delivered.extend(ids(&claim.events));
                        spool.acknowledge(claim.id).unwrap();
                    }
                    delivered
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });

    let all: Vec<EventId> = delivered.concat();
    let unique: HashSet<EventId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "an event was delivered twice");
    assert_eq!(unique, ids(&events).into_iter().collect::<HashSet<_>>());
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, 0);
}

#[test]
fn spools_opened_at_once_on_a_new_file_set_it_up_once() {
    const SPOOLS: usize = 4;
    let dir = SpoolDir::new();
    let start = Barrier::new(SPOOLS);
    std::thread::scope(|scope| {
        for _ in 0..SPOOLS {
            let (dir, start) = (&dir, &start);
            scope.spawn(move || {
                start.wait();
                dir.open(SpoolLimits::default())
                    .append(encoded_events(10))
                    .unwrap();
            });
        }
    });
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, SPOOLS * 10);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    for version in [SCHEMA_VERSION + 1, 99, -1] {
        let dir = SpoolDir::new();
        dir.raw()
            .execute_batch(&format!(
                "CREATE TABLE future (x); PRAGMA user_version = {version};"
            ))
            .unwrap();
        let error = SqliteSpool::open(dir.path(), SpoolLimits::default()).unwrap_err();
        assert!(
            matches!(error, SpoolError::NewerSchema { found, supported: SCHEMA_VERSION, .. } if found == version),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("schema version {version}")),
            "{message}"
        );
        assert_eq!(
            std::fs::read_dir(dir.dir.path()).unwrap().count(),
            1,
            "nothing was moved aside"
        );
        let tables: i64 = dir
            .raw()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'future'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }
}

#[test]
fn a_new_file_is_migrated_to_the_current_schema_in_wal_mode() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let auto_vacuum: i64 = raw
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
    spool.append(encoded_events(1)).unwrap();
    assert!(
        dir.dir
            .path()
            .join(format!("{SPOOL_FILE_NAME}-wal"))
            .exists(),
        "writes go through the write-ahead log"
    );
    // An empty file (say, created by `touch`) is a new database, not damage.
    let empty = SpoolDir::new();
    std::fs::write(empty.path(), b"").unwrap();
    let spool = empty.open(SpoolLimits::default());
    spool.append(encoded_events(2)).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 2);
}

/// The schema version 1 of this library wrote, as it wrote it.
const VERSION_1_SCHEMA: &str = "
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        json TEXT NOT NULL,
        byte_len INTEGER NOT NULL,
        inserted_at INTEGER NOT NULL,
        claim_id INTEGER,
        claim_expires_at INTEGER
    );
    CREATE INDEX events_by_claim ON events (claim_id) WHERE claim_id IS NOT NULL;
    CREATE INDEX events_by_age ON events (inserted_at);
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES
        ('dropped_full', 0), ('dropped_age', 0), ('dropped_invalid', 0);
    CREATE TABLE totals (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    );
    INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
    CREATE TRIGGER events_counted_on_insert AFTER INSERT ON events BEGIN
        UPDATE totals SET events = events + 1, bytes = bytes + NEW.byte_len;
    END;
    CREATE TRIGGER events_counted_on_delete AFTER DELETE ON events BEGIN
        UPDATE totals SET events = events - 1, bytes = bytes - OLD.byte_len;
    END;
    PRAGMA user_version = 1;";

/// What a spool file's schema is made of: every table's columns and indexes, the other
/// indexes and triggers, and the rows a new file starts with (`created_at` aside, which a
/// migrated file from before it was recorded does not have).
fn schema_of(raw: &rusqlite::Connection) -> Vec<String> {
    use rusqlite::types::ValueRef;
    let rows = |sql: &str| -> Vec<String> {
        let mut statement = raw.prepare(sql).unwrap();
        let columns = statement.column_count();
        statement
            .query_map([], |row| {
                let values: Vec<String> = (0..columns)
                    .map(|column| match row.get_ref(column).unwrap() {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(value) => value.to_string(),
                        ValueRef::Real(value) => value.to_string(),
                        ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
                        ValueRef::Blob(bytes) => format!("{bytes:?}"),
                    })
                    .collect();
                Ok(values.join(" "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut schema = Vec::new();
    for table in rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") {
        schema.push(format!("table {table}"));
        schema.extend(rows(&format!("PRAGMA table_info({table})")));
        schema.extend(rows(&format!(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list('{table}') ORDER BY name"
        )));
    }
    schema.extend(rows(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('index', 'trigger') ORDER BY name",
    ));
    schema.extend(rows(
        "SELECT key, value FROM meta WHERE key != 'created_at' ORDER BY key",
    ));
    schema.extend(rows("SELECT * FROM totals"));
    schema.extend(rows("PRAGMA auto_vacuum"));
    schema
}

#[test]
fn a_new_file_gets_in_one_step_the_schema_a_migrated_file_ends_with() {
    let migrated = SpoolDir::new();
    {
        let raw = migrated.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_1_SCHEMA).unwrap();
    }
    drop(migrated.open(SpoolLimits::default()));
    let new = SpoolDir::new();
    drop(new.open(SpoolLimits::default()));

    let new_schema = schema_of(&new.raw());
    assert!(new_schema.len() > 10, "{new_schema:#?}");
    assert_eq!(new_schema, schema_of(&migrated.raw()));
    let version = |dir: &SpoolDir| -> i64 {
        dir.raw()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!((version(&new), version(&migrated)), (3, 3));
}

#[test]
fn a_version_1_file_is_migrated_keeping_events_order_and_counters() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let now = clock.0.load(Ordering::SeqCst) as i64;
    let events = encoded_events(5);
    // Keys with gaps, as deletes leave them, and not in the order of the event ids.
    let seqs = [3_i64, 4, 7, 8, 12];
    {
        let raw = dir.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_1_SCHEMA).unwrap();
        for (event, seq) in events.iter().zip(seqs) {
            raw.execute(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    seq,
                    event.id().to_string(),
                    event.json(),
                    event.json().len() as i64,
                    now - 60
                ],
            )
            .unwrap();
        }
        // The third event is claimed the way version 1 claimed, with its lease still running.
        raw.execute(
            "UPDATE events SET claim_id = 42, claim_expires_at = ?1 WHERE seq = 7",
            [now + 3_600],
        )
        .unwrap();
        raw.execute_batch(
            "UPDATE meta SET value = 5 WHERE key = 'dropped_full';
             UPDATE meta SET value = 2 WHERE key = 'dropped_age';
             UPDATE meta SET value = 1 WHERE key = 'dropped_invalid';",
        )
        .unwrap();
    }

    let spool = dir.open_at(SpoolLimits::default(), &clock);
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    assert_eq!(SCHEMA_VERSION, 3);
    let stats = spool.stats().unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.dropped_full,
            stats.dropped_age,
            stats.dropped_invalid
        ),
        (5, 5, 2, 1)
    );
    assert_totals_match(&dir, &spool);
    let kept: Vec<i64> = raw
        .prepare("SELECT seq FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, seqs, "the keys, and so the order, are kept");
    let columns: Vec<String> = raw
        .prepare("SELECT name FROM pragma_table_info('events')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        ["seq", "event_id", "json", "byte_len", "inserted_at"]
    );
    let leftovers: Vec<String> = raw
        .prepare(
            "SELECT name FROM sqlite_schema
             WHERE type IN ('trigger', 'index') AND tbl_name = 'events'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The version 1 claim was released; a new event goes after the migrated ones.
    let version_1_claim = spool.acknowledge(telemetry_buffer::ClaimId(42));
    assert!(
        matches!(version_1_claim, Err(BufferError::UnknownClaim(_))),
        "{version_1_claim:?}"
    );
    let newer = encoded_events(1);
    spool.append(newer.clone()).unwrap();
    let claim = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&events).into_iter().chain(ids(&newer)).collect();
    assert_eq!(ids(&claim.events), expected);
    assert_eq!(
        claim.events[..5],
        events[..],
        "the bytes come back unchanged"
    );
    assert_eq!(claim_rows(&dir), [(3, 13)]);
    spool.acknowledge(claim.id).unwrap();
    assert_totals_match(&dir, &spool);

    // A migrated file opens again as it is.
    drop(spool);
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().dropped_total(), 8);
}

/// The schema version 2 of this library left a new file with, as it wrote it.
const VERSION_2_SCHEMA: &str = "
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        json TEXT NOT NULL,
        byte_len INTEGER NOT NULL,
        inserted_at INTEGER NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES
        ('dropped_full', 0), ('dropped_age', 0), ('dropped_invalid', 0);
    CREATE TABLE totals (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 1
    );
    INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
    CREATE TABLE claims (
        claim_id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    PRAGMA user_version = 2;";

#[test]
fn a_version_2_file_is_migrated_keeping_its_claims() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let now = clock.0.load(Ordering::SeqCst) as i64;
    let events = encoded_events(4);
    let seqs = [5_i64, 6, 9, 10];
    {
        let raw = dir.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_2_SCHEMA).unwrap();
        let mut bytes = 0;
        for (event, seq) in events.iter().zip(seqs) {
            let len = event.json().len() as i64;
            bytes += len;
            raw.execute(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![seq, event.id().to_string(), event.json(), len, now - 60],
            )
            .unwrap();
        }
        // A claim on the first two events, its lease (the default 60 s) still running; `seq`
        // 11 was used by an event since deleted.
        let claimed = (events[0].json().len() + events[1].json().len()) as i64;
        raw.execute(
            "INSERT INTO claims (claim_id, first_seq, last_seq, events, bytes, expires_at)
             VALUES (42, 5, 6, 2, ?1, ?2)",
            [claimed, now + 30],
        )
        .unwrap();
        raw.execute(
            "UPDATE totals SET events = 4, bytes = ?1, next_seq = 12",
            [bytes],
        )
        .unwrap();
    }

    let spool = dir.open_at(SpoolLimits::default(), &clock);
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let indexes: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "the event id is no longer indexed");
    assert_eq!(spool.stats().unwrap().pending, 4);
    assert_totals_match(&dir, &spool);

    // The claim is still held: only the other two are handed out, and it can be acknowledged.
    let newer = encoded_events(1);
    spool.append(newer.clone()).unwrap();
    let claim = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&events[2..]).into_iter().chain(ids(&newer)).collect();
    assert_eq!(ids(&claim.events), expected);
    assert_eq!(
        claim.events[..2],
        events[2..],
        "the bytes come back unchanged"
    );
    let new_rows: Vec<(i64, i64)> = claim_rows(&dir)
        .into_iter()
        .filter(|&range| range != (5, 6))
        .collect();
    assert_eq!(new_rows, [(9, 12)], "the next `seq` was kept");
    spool
        .acknowledge(telemetry_buffer::ClaimId(42))
        .expect("a version 2 claim survives the migration");
    spool.acknowledge(claim.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

/// A valid spool file holding some events, as bytes, with its log folded in.
fn spool_file_bytes() -> Vec<u8> {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    spool.append(encoded_events(200)).unwrap();
    drop(spool);
    // The last connection to close checkpoints the log into the file.
    std::fs::read(dir.path()).unwrap()
}

#[test]
fn damaged_files_are_moved_aside_and_replaced() {
    let valid = spool_file_bytes();
    assert!(valid.len() > 16 * 4096, "{}", valid.len());
    let mut garbled = valid.clone();
    for byte in &mut garbled[4096..] {
        *byte ^= 0x5a;
    }
    let random: Vec<u8> = (0..20_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases: [(&str, Vec<u8>); 7] = [
        ("text", b"this is not a database, it is a note\n".to_vec()),
        ("random bytes", random),
        ("truncated inside the header", valid[..50].to_vec()),
        ("truncated to the header", valid[..100].to_vec()),
        ("truncated to the first page", valid[..4096].to_vec()),
        ("truncated to half", valid[..valid.len() / 2].to_vec()),
        ("pages overwritten", garbled),
    ];
    for (case, bytes) in cases {
        let dir = SpoolDir::new();
        std::fs::write(dir.path(), &bytes).unwrap();
        let spool = SqliteSpool::open(dir.path(), SpoolLimits::default())
            .unwrap_or_else(|error| panic!("{case}: {error}"));
        let recovery = spool
            .recovery()
            .unwrap_or_else(|| panic!("{case}: no recovery"));
        assert_eq!(recovery.damaged, dir.path(), "{case}");
        let moved_name = recovery.moved_to.file_name().unwrap().to_str().unwrap();
        let seconds = moved_name
            .strip_prefix(&format!("{SPOOL_FILE_NAME}.corrupt-"))
            .unwrap_or_else(|| panic!("{case}: {moved_name}"));
        let seconds: u64 = seconds.parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(seconds) < 60, "{case}: {seconds}");
        assert_eq!(recovery.moved_to.parent(), dir.path().parent(), "{case}");
        assert!(
            std::fs::read(&recovery.moved_to).unwrap() == bytes,
            "{case}: the damaged file is moved as it was, unchanged"
        );
        let message = recovery.to_string();
        for path in [&recovery.damaged, &recovery.moved_to] {
            assert!(
                message.contains(&path.display().to_string()),
                "{case}: {message}"
            );
        }
        // The new spool works, and is healthy for the next process.
        let events = encoded_events(3);
        spool.append(events.clone()).unwrap();
        assert_eq!(
            ids(&spool.claim(10).unwrap().unwrap().events),
            ids(&events),
            "{case}"
        );
        drop(spool);
        dir.open(SpoolLimits::default());
    }
}

#[test]
fn a_second_recovery_in_the_same_second_gets_its_own_name() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let mut moved = Vec::new();
    for _ in 0..3 {
        std::fs::write(dir.path(), b"not a database, again").unwrap();
        let spool = dir.open_at(SpoolLimits::default(), &clock);
        moved.push(spool.recovery().unwrap().moved_to.clone());
    }
    let names: Vec<&str> = moved
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap())
        .collect();
    let stem = format!(
        "{SPOOL_FILE_NAME}.corrupt-{}",
        clock.0.load(Ordering::SeqCst)
    );
    assert_eq!(
        names,
        [stem.clone(), format!("{stem}-1"), format!("{stem}-2")]
    );
}

#[test]
fn invalid_rows_are_deleted_and_counted_never_sent() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let events = encoded_events(6);
    spool.append(events.clone()).unwrap();
    let other = encoded_events(1).remove(0);
    let raw = dir.raw();
    // (what damaged the row, the update)
    let damage = [
        (
            "not JSON",
            "UPDATE events SET json = '{\"event_id\":' WHERE event_id = ?1",
        ),
        (
            "JSON of another event",
            "UPDATE events SET json = ?2 WHERE event_id = ?1",
        ),
        (
            "not an event",
            "UPDATE events SET json = '{\"x\":1}' WHERE event_id = ?1",
        ),
        (
            "a blob",
            "UPDATE events SET json = x'00ff' WHERE event_id = ?1",
        ),
        (
            "an id that is no id",
            "UPDATE events SET event_id = 'nope' WHERE event_id = ?1",
        ),
    ];
    for (index, (case, sql)) in damage.iter().enumerate() {
        let id = events[index].id().to_string();
        let changed = if sql.contains("?2") {
            raw.execute(sql, rusqlite::params![id, other.json()])
        } else {
            raw.execute(sql, rusqlite::params![id])
        };
        assert_eq!(changed.unwrap(), 1, "{case}");
    }
    let claim = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&claim.events),
        ids(&events[5..]),
        "only the intact event is sent"
    );
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_invalid), (1, 5));
    assert_totals_match(&dir, &spool);

    // A claim keeps looking past invalid rows until it is full.
    spool.acknowledge(claim.id).unwrap();
    let events = encoded_events(4);
    spool.append(events.clone()).unwrap();
    raw.execute(
        "UPDATE events SET json = 'garbage' WHERE event_id IN (?1, ?2)",
        rusqlite::params![events[0].id().to_string(), events[1].id().to_string()],
    )
    .unwrap();
    let claim = spool.claim(2).unwrap().unwrap();
    assert_eq!(ids(&claim.events), ids(&events[2..]));
    assert_eq!(spool.stats().unwrap().dropped_invalid, 7);
    assert_totals_match(&dir, &spool);
}

#[test]
fn unusable_locations_fail_with_a_message_naming_the_file() {
    let dir = SpoolDir::new();
    let cases = [
        (
            "a missing directory",
            dir.dir.path().join("missing").join(SPOOL_FILE_NAME),
        ),
        ("a directory", dir.dir.path().to_path_buf()),
        // procfs refuses new files even to root, unlike a directory without write permission.
        (
            "a read-only file system",
            PathBuf::from("/proc/telemetry-spool-test.sqlite3"),
        ),
    ];
    for (case, path) in cases {
        let error = SqliteSpool::open(&path, SpoolLimits::default()).unwrap_err();
        assert!(
            matches!(error, SpoolError::Open { .. }),
            "{case}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{case}: {message}"
        );
        assert!(
            message.starts_with("cannot open the telemetry spool"),
            "{case}: {message}"
        );
    }
    assert!(dir.dir.path().is_dir(), "the directory was left alone");
}

// The delivery ledger.

/// The creation time of the files the ledger and clock tests make, as [`TestClock::new`] reads.
const CREATED: u64 = 1_764_338_400;
const DAY: u64 = 24 * 60 * 60;
const YEAR: u64 = 365 * DAY;

/// A ledger with every field set to a value of its own, its times finer than a millisecond.
fn full_ledger() -> DeliveryLedger {
    let at = |seconds, nanos| Some(UNIX_EPOCH + Duration::new(seconds, nanos));
    DeliveryLedger {
        delivered: 11,
        failed_deliveries: 12,
        last_sent: at(CREATED, 123_456_789),
        dropped_queue_full: 13,
        dropped_scrubbed: 14,
        dropped_storage: 15,
        dropped_rejected: 16,
        dropped_invalid: 18,
        purged: 17,
        not_before: at(CREATED + 3_600, 999_999_999),
        consecutive_failures: u32::MAX,
        circuit_open_until: at(CREATED + 7_200, 1),
    }
}

/// `ledger` with its times cut to the millisecond, as the spool keeps them.
fn to_the_millisecond(mut ledger: DeliveryLedger) -> DeliveryLedger {
    let cut = |time: Option<SystemTime>| {
        time.map(|time| {
            let since = time.duration_since(UNIX_EPOCH).unwrap();
            UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
        })
    };
    ledger.last_sent = cut(ledger.last_sent);
    ledger.not_before = cut(ledger.not_before);
    ledger.circuit_open_until = cut(ledger.circuit_open_until);
    ledger
}

#[test]
fn a_ledger_reads_back_field_for_field() {
    let huge = DeliveryLedger {
        delivered: u64::MAX,
        purged: i64::MAX as u64 + 1,
        ..DeliveryLedger::default()
    };
    let huge_as_kept = DeliveryLedger {
        delivered: i64::MAX as u64,
        purged: i64::MAX as u64,
        ..DeliveryLedger::default()
    };
    // (case, the ledger written, the ledger `update_ledger` returns and every later read gives)
    let cases = [
        (
            "every field set, times to the millisecond",
            to_the_millisecond(full_ledger()),
            to_the_millisecond(full_ledger()),
        ),
        (
            "times finer than a millisecond are kept to the millisecond",
            full_ledger(),
            to_the_millisecond(full_ledger()),
        ),
        (
            "counts stop at the largest SQLite integer",
            huge,
            huge_as_kept,
        ),
        (
            "times at or before the Unix epoch are unset",
            DeliveryLedger {
                last_sent: Some(UNIX_EPOCH),
                not_before: Some(UNIX_EPOCH - Duration::from_secs(1)),
                ..DeliveryLedger::default()
            },
            DeliveryLedger::default(),
        ),
        (
            "empty",
            DeliveryLedger::default(),
            DeliveryLedger::default(),
        ),
    ];
    for (case, written, read) in cases {
        let dir = SpoolDir::new();
        let spool = dir.open(SpoolLimits::default());
        let returned = spool
            .update_ledger(&mut |ledger| *ledger = written.clone())
            .unwrap();
        assert_eq!(returned, read, "{case}: returned");
        assert_eq!(spool.ledger().unwrap(), read, "{case}: read by the writer");
        drop(spool);
        let reopened = dir.open(SpoolLimits::default());
        assert_eq!(
            reopened.ledger().unwrap(),
            read,
            "{case}: read after reopening"
        );
        // Writing it again as read changes nothing.
        let again = reopened
            .update_ledger(&mut |ledger| *ledger = read.clone())
            .unwrap();
        assert_eq!(again, read, "{case}: written again");
    }
}

#[test]
fn counts_added_by_two_spools_on_one_file_are_all_kept() {
    const ROUNDS: u64 = 150;
    let dir = SpoolDir::new();
    dir.open(SpoolLimits::default());
    let start = Barrier::new(2);
    let purged_by_each: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (dir, start) = (&dir, &start);
                scope.spawn(move || {
                    // Each thread has its own spool, so its own connection to the file.
                    let spool = dir.open(SpoolLimits::default());
                    let mut purged = 0;
                    start.wait();
                    for round in 0..ROUNDS {
                        spool
                            .update_ledger(&mut |ledger| {
                                ledger.delivered += 1;
                                ledger.failed_deliveries += 2;
                                ledger.consecutive_failures += 1;
                            })
                            .unwrap();
                        // `purge` adds to the ledger too, racing the other thread's updates.
                        spool.append(encoded_events(1)).unwrap();
                        if round % 10 == 9 {
                            purged += spool.purge().unwrap() as u64;
                        }
                    }
                    purged + spool.purge().unwrap() as u64
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let ledger = dir.open(SpoolLimits::default()).ledger().unwrap();
    assert_eq!(ledger.delivered, 2 * ROUNDS);
    assert_eq!(ledger.failed_deliveries, 4 * ROUNDS);
    assert_eq!(u64::from(ledger.consecutive_failures), 2 * ROUNDS);
    assert_eq!(purged_by_each.iter().sum::<u64>(), 2 * ROUNDS);
    assert_eq!(ledger.purged, 2 * ROUNDS, "every purged event is counted");
}

#[test]
fn purge_adds_what_it_deleted_to_the_ledger() {
    // (events appended, of which claimed, purged before by earlier processes)
    let cases = [(0, 0, 0), (4, 0, 0), (4, 2, 0), (5, 5, 3), (1, 0, 1_000)];
    for (appended, claimed, earlier) in cases {
        let case = (appended, claimed, earlier);
        let dir = SpoolDir::new();
        let spool = dir.open(SpoolLimits::default());
        spool
            .update_ledger(&mut |ledger| {
                ledger.purged = earlier;
                ledger.delivered = 9;
            })
            .unwrap();
        spool.append(encoded_events(appended)).unwrap();
        if claimed > 0 {
            spool.claim(claimed).unwrap().unwrap();
        }
        assert_eq!(spool.purge().unwrap(), appended, "{case:?}");
        let expected = DeliveryLedger {
            purged: earlier + appended as u64,
            delivered: 9,
            ..DeliveryLedger::default()
        };
        assert_eq!(spool.ledger().unwrap(), expected, "{case:?}");
        drop(spool);
        let spool = dir.open(SpoolLimits::default());
        assert_eq!(
            spool.ledger().unwrap(),
            expected,
            "{case:?}: after reopening"
        );
        assert_eq!(
            spool.stats().unwrap().dropped_total(),
            0,
            "purging is no drop"
        );
    }
}

/// The schema version 3 of this library left a new file with before the ledger existed (and
/// before it recorded when a file was created), as it wrote it.
const VERSION_3_SCHEMA: &str = "
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL,
        json TEXT NOT NULL,
        byte_len INTEGER NOT NULL,
        inserted_at INTEGER NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES
        ('dropped_full', 0), ('dropped_age', 0), ('dropped_invalid', 0);
    CREATE TABLE totals (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        next_seq INTEGER NOT NULL DEFAULT 1
    );
    INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
    CREATE TABLE claims (
        claim_id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    PRAGMA user_version = 3;";

/// A spool file in WAL mode made by `schema`, as an earlier version of the library wrote it.
fn earlier_file(dir: &SpoolDir, schema: &str) -> rusqlite::Connection {
    let raw = dir.raw();
    let mode: String = raw
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.execute_batch(schema).unwrap();
    raw
}

#[test]
fn a_file_from_before_the_ledger_reads_as_an_empty_ledger() {
    // (case, the schema an earlier version wrote)
    let cases = [
        ("version 1", VERSION_1_SCHEMA),
        ("version 2", VERSION_2_SCHEMA),
        ("version 3", VERSION_3_SCHEMA),
    ];
    for (case, schema) in cases {
        let dir = SpoolDir::new();
        {
            let raw = earlier_file(&dir, schema);
            raw.execute_batch(
                "UPDATE meta SET value = 5 WHERE key = 'dropped_full';
                 UPDATE meta SET value = 2 WHERE key = 'dropped_age';",
            )
            .unwrap();
        }
        let spool = dir.open(SpoolLimits::default());
        assert_eq!(spool.ledger().unwrap(), DeliveryLedger::default(), "{case}");
        let stats = spool.stats().unwrap();
        assert_eq!(
            (stats.dropped_full, stats.dropped_age),
            (5, 2),
            "{case}: the spool's own counters are not the ledger's"
        );
        let written = spool
            .update_ledger(&mut |ledger| ledger.delivered = 3)
            .unwrap();
        assert_eq!(spool.ledger().unwrap(), written, "{case}");
        assert_eq!(spool.stats().unwrap(), stats, "{case}");
    }
}

/// Opens a write transaction on its own connection and keeps it open until dropped, as another
/// process in the middle of a write would.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(dir: &SpoolDir) -> WriteLock {
        let connection = dir.raw();
        connection
            .execute_batch(
                "BEGIN IMMEDIATE;
                 UPDATE meta SET value = value + 1000 WHERE key = 'delivered';",
            )
            .unwrap();
        WriteLock(connection)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

#[test]
fn the_ledger_answers_while_another_connection_holds_the_write_lock() {
    let dir = SpoolDir::new();
    let before = dir.open(SpoolLimits::default());
    before.append(encoded_events(3)).unwrap();
    let written = before
        .update_ledger(&mut |ledger| *ledger = full_ledger())
        .unwrap();
    let lock = WriteLock::take(&dir);
    // Neither may wait for the lock: with no wait at all, one that needed it would fail.
    let opened_before = before.with_busy_timeout(Duration::ZERO);
    let started = Instant::now();
    // As `status` in a new process does: open, then read.
    let opened_during = SqliteSpool::open(dir.path(), SpoolLimits::default())
        .unwrap()
        .with_busy_timeout(Duration::ZERO);
    for (case, spool) in [
        ("opened before the lock", &opened_before),
        ("opened while it is held", &opened_during),
    ] {
        assert_eq!(spool.ledger().unwrap(), written, "{case}");
        assert_eq!(spool.stats().unwrap().pending, 3, "{case}");
    }
    assert!(
        started.elapsed() < BUSY_TIMEOUT / 2,
        "{:?}",
        started.elapsed()
    );
    drop(lock);
    assert_eq!(opened_during.ledger().unwrap(), written, "rolled back");
}

#[test]
fn a_write_that_outwaits_its_busy_timeout_fails_saying_the_spool_is_busy() {
    type Operation = fn(&SqliteSpool) -> Result<(), BufferError>;
    // (what the message says was done, the operation)
    let operations: [(&str, Operation); 5] = [
        ("append to", |spool| spool.append(encoded_events(1))),
        ("claim events from", |spool| spool.claim(10).map(drop)),
        ("acknowledge events in", |spool| {
            spool.acknowledge(telemetry_buffer::ClaimId(7))
        }),
        ("purge", |spool| spool.purge().map(drop)),
        ("update the ledger of", |spool| {
            spool
                .update_ledger(&mut |ledger| ledger.delivered += 1)
                .map(drop)
        }),
    ];
    for wait in [Duration::ZERO, Duration::from_millis(200)] {
        for (action, operation) in operations {
            let dir = SpoolDir::new();
            let spool = dir.open(SpoolLimits::default()).with_busy_timeout(wait);
            assert_eq!(spool.busy_timeout(), wait);
            spool.append(encoded_events(2)).unwrap();
            let lock = WriteLock::take(&dir);
            let started = Instant::now();
            let error = operation(&spool).unwrap_err();
            let waited = started.elapsed();
            assert!(
                waited >= wait && waited < BUSY_TIMEOUT,
                "{action}, {wait:?}: waited {waited:?}"
            );
            let BufferError::Storage(message) = &error else {
                panic!("{action}, {wait:?}: {error:?}")
            };
            let expected = format!(
                "cannot {action} the telemetry spool {}: the spool is busy: another process",
                dir.path().display()
            );
            assert!(message.starts_with(&expected), "{message}");
            assert!(message.contains(&format!("{wait:?}")), "{message}");
            drop(lock);
            // Nothing was half done, and the spool works once the lock is gone.
            assert_eq!(spool.stats().unwrap().pending, 2, "{action}");
            assert_eq!(spool.ledger().unwrap(), DeliveryLedger::default());
            operation(&spool)
                .or_else(|error| match error {
                    BufferError::UnknownClaim(_) => Ok(()),
                    error => Err(error),
                })
                .unwrap();
        }
    }
    assert_eq!(
        SqliteSpool::open(SpoolDir::new().path(), SpoolLimits::default())
            .unwrap()
            .busy_timeout(),
        BUSY_TIMEOUT
    );
}

// Wrong clocks.

#[test]
fn a_claim_that_expires_further_ahead_than_a_lease_counts_as_expired() {
    let right = CREATED + DAY;
    // (how far ahead the clock ran when the claim was made, whether it still holds its events
    // once the clock is right; the lease is 60 seconds)
    let cases = [(0, true), (1, false), (3_600, false), (10 * YEAR, false)];
    // Events do not age out while the clock runs ahead here: that is a bound doing its job.
    let ageless = SpoolLimits {
        max_age: Duration::from_secs(20 * YEAR),
        ..SpoolLimits::default()
    };
    for (ahead, holds) in cases {
        let dir = SpoolDir::new();
        let clock = TestClock::new();
        let spool = dir
            .open_at(ageless, &clock)
            .with_claim_lease(Duration::from_secs(60));
        let events = encoded_events(3);
        clock.set(right);
        spool.append(events.clone()).unwrap();
        clock.set(right + ahead);
        let early = spool.claim(2).unwrap().unwrap();
        clock.set(right);
        let next = spool.claim(10).unwrap().unwrap();
        if holds {
            assert_eq!(ids(&next.events), ids(&events[2..]), "{ahead}");
            spool.acknowledge(early.id).unwrap();
        } else {
            assert_eq!(ids(&next.events), ids(&events), "{ahead}");
            let late = spool.acknowledge(early.id);
            assert!(
                matches!(late, Err(BufferError::UnknownClaim(_))),
                "{ahead}: {late:?}"
            );
        }
        spool.acknowledge(next.id).unwrap();
        assert_eq!(spool.stats().unwrap().pending, 0, "{ahead}");
        assert_totals_match(&dir, &spool);
    }

    // Nor does such a claim keep its events from being dropped to make room.
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(
        SpoolLimits {
            max_events: 2,
            ..ageless
        },
        &clock,
    );
    spool.append(encoded_events(2)).unwrap();
    clock.set(CREATED + 10 * YEAR);
    spool.claim(2).unwrap().unwrap();
    clock.set(CREATED);
    let newer = encoded_events(2);
    spool.append(newer.clone()).unwrap();
    assert_eq!(spool.stats().unwrap().dropped_full, 2);
    assert_eq!(ids(&spool.claim(10).unwrap().unwrap().events), ids(&newer));
}

/// What became of events appended while the clock read something, once it reads right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Their time is implausible: they are sent, and age from the time they were met.
    Restamped,
    /// Their time is plausible and young enough: they are sent, and age from it.
    Believed,
    /// Their time is plausible and too old: they are dropped and counted.
    TooOld,
}

/// The `inserted_at` of every event in the file, by `seq`.
fn append_times(dir: &SpoolDir) -> Vec<u64> {
    let raw = dir.raw();
    let mut select = raw
        .prepare("SELECT inserted_at FROM events ORDER BY seq")
        .unwrap();
    select
        .query_map([], |row| row.get::<_, i64>(0))
        .unwrap()
        .map(|time| time.unwrap() as u64)
        .collect()
}

#[test]
fn events_stamped_at_an_implausible_time_are_kept_as_fresh() {
    let max_age = Duration::from_secs(DAY);
    let lease = 60;
    // The right time: a month after the file was created.
    let right = CREATED + 30 * DAY;
    // (case, the clock when the file was created, the clock when the events were appended,
    // what becomes of them once the clock is right)
    let cases = [
        ("the clock read 1970", CREATED, 1_000_000, Fate::Restamped),
        (
            "the clock read 2001",
            CREATED,
            1_000_000_000,
            Fate::Restamped,
        ),
        (
            "a day before the file was created",
            CREATED,
            CREATED - DAY,
            Fate::Restamped,
        ),
        (
            "the file was created while the clock read 1970 too",
            1_000_000,
            1_000_060,
            Fate::Restamped,
        ),
        (
            "ten years ahead",
            CREATED,
            right + 10 * YEAR,
            Fate::Restamped,
        ),
        (
            "more than a lease ahead",
            CREATED,
            right + lease + 1,
            Fate::Restamped,
        ),
        ("a lease ahead", CREATED, right + lease, Fate::Believed),
        ("an hour ago", CREATED, right - 3_600, Fate::Believed),
        ("two days ago", CREATED, right - 2 * DAY, Fate::TooOld),
        (
            "the file was created ten years ahead, the events an hour ago",
            right + 10 * YEAR,
            right - 3_600,
            Fate::Believed,
        ),
        (
            "the file and the events ten years ahead",
            right + 10 * YEAR,
            right + 10 * YEAR + 5,
            Fate::Restamped,
        ),
    ];
    for (case, created, stamped, fate) in cases {
        let dir = SpoolDir::new();
        let clock = TestClock::new();
        clock.set(created);
        let spool = dir
            .open_at(
                SpoolLimits {
                    max_age,
                    ..SpoolLimits::default()
                },
                &clock,
            )
            .with_claim_lease(Duration::from_secs(lease));
        clock.set(stamped);
        let events = encoded_events(3);
        spool.append(events.clone()).unwrap();
        clock.set(right);
        // Appending meets the oldest events first, then claiming meets every one it reads.
        let newer = encoded_events(1);
        spool.append(newer.clone()).unwrap();
        let claim = spool.claim(10).unwrap().unwrap();
        let (sent, times, dropped_age) = match fate {
            Fate::Restamped => (ids(&events), vec![right; 3], 0),
            Fate::Believed => (ids(&events), vec![stamped; 3], 0),
            Fate::TooOld => (Vec::new(), Vec::new(), 3),
        };
        let sent: Vec<EventId> = sent.into_iter().chain(ids(&newer)).collect();
        assert_eq!(ids(&claim.events), sent, "{case}");
        let times: Vec<u64> = times.into_iter().chain([right]).collect();
        assert_eq!(append_times(&dir), times, "{case}");
        assert_eq!(spool.stats().unwrap().dropped_age, dropped_age, "{case}");
        assert_totals_match(&dir, &spool);

        // Fresh is not forever: a day after each event's (new) time, it is too old.
        spool.release(claim.id).unwrap();
        clock.set(right + lease + DAY + 1);
        assert!(spool.claim(10).unwrap().is_none(), "{case}");
        let stats = spool.stats().unwrap();
        assert_eq!((stats.pending, stats.dropped_age), (0, 4), "{case}");
    }
}

#[test]
fn a_file_without_a_creation_time_believes_times_from_2025_02_20_on() {
    // 2025-02-20T00:00:00Z: see `EARLIEST_PLAUSIBLE` in the spool.
    const EARLIEST: i64 = 1_740_009_600;
    let clock = TestClock::new();
    let now = CREATED as i64;
    // (the time an earlier version of the library stamped an event with, whether it is sent;
    // the age bound is the default 30 days)
    let cases = [
        (1_000_000, true),
        (1_000_000_000, true),
        (EARLIEST - 1, true),
        (EARLIEST, false),
        (now - 31 * DAY as i64, false),
        (now - 60, true),
    ];
    let dir = SpoolDir::new();
    let events = encoded_events(cases.len());
    {
        // A file as the version before this one wrote it, which needs no migration.
        let raw = earlier_file(&dir, VERSION_3_SCHEMA);
        for (seq, (event, (stamped, _))) in events.iter().zip(cases).enumerate() {
            raw.execute(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    seq as i64 + 1,
                    event.id().to_string(),
                    event.json(),
                    event.json().len() as i64,
                    stamped
                ],
            )
            .unwrap();
        }
        raw.execute(
            "UPDATE totals SET events = ?1, bytes = (SELECT SUM(byte_len) FROM events), next_seq = ?2",
            [cases.len() as i64, cases.len() as i64 + 1],
        )
        .unwrap();
    }
    let spool = dir.open_at(SpoolLimits::default(), &clock);
    let claim = spool.claim(100).unwrap().unwrap();
    let sent: Vec<EventId> = events
        .iter()
        .zip(cases)
        .filter(|(_, (_, sent))| *sent)
        .map(|(event, _)| event.id())
        .collect();
    assert_eq!(ids(&claim.events), sent);
    assert_eq!(spool.stats().unwrap().dropped_age, 2);
    assert_totals_match(&dir, &spool);
}

// Claims released on an orderly exit.

/// What the spool that is dropped did with one of its claims first.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Held,
    Acknowledged,
    Released,
}

#[test]
fn dropping_a_spool_releases_the_claims_it_still_holds() {
    use Outcome::*;
    // (what the dropped spool did with its three claims of two events each)
    let cases = [
        [Held, Held, Held],
        [Acknowledged, Released, Held],
        [Held, Acknowledged, Held],
        [Acknowledged, Acknowledged, Acknowledged],
    ];
    for outcomes in cases {
        let dir = SpoolDir::new();
        let events = encoded_events(8);
        // Another spool on the file (another process) holds the last two events throughout.
        let other = dir.open(SpoolLimits::default());
        other.append(events.clone()).unwrap();
        let dropped = dir.open(SpoolLimits::default());
        let claims: Vec<_> = (0..3).map(|_| dropped.claim(2).unwrap().unwrap()).collect();
        let others = other.claim(10).unwrap().unwrap();
        assert_eq!(ids(&others.events), ids(&events[6..]));
        let mut claimable = Vec::new();
        for ((claim, outcome), batch) in claims.iter().zip(outcomes).zip(events.chunks(2)) {
            match outcome {
                Held => claimable.extend(ids(batch)),
                Acknowledged => dropped.acknowledge(claim.id).unwrap(),
                Released => {
                    dropped.release(claim.id).unwrap();
                    claimable.extend(ids(batch));
                }
            }
        }
        claimable.sort_by_key(|id| events.iter().position(|event| event.id() == *id));
        drop(dropped);

        let next = dir.open(SpoolLimits::default());
        let claimed = next
            .claim(100)
            .unwrap()
            .map(|claim| ids(&claim.events))
            .unwrap_or_default();
        assert_eq!(
            claimed, claimable,
            "{outcomes:?}: claimable at once, in order"
        );
        other.acknowledge(others.id).unwrap();
    }
}
