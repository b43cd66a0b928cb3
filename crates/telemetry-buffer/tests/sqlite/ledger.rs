//! The delivery ledger, and a file whose write lock another connection holds.

use super::*;

/// A ledger with every field set to a value of its own, its times finer than a millisecond.
pub(super) fn full_ledger() -> DeliveryLedger {
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
        refused_records: 19,
        not_before: at(CREATED + 3_600, 999_999_999),
        consecutive_failures: u32::MAX,
        circuit_open_until: at(CREATED + 7_200, 1),
    }
}

/// `ledger` with its times cut to the millisecond, as the spool keeps them.
pub(super) fn to_the_millisecond(mut ledger: DeliveryLedger) -> DeliveryLedger {
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

/// Opens a write transaction on its own connection and keeps it open until dropped, as another
/// process in the middle of a write would.
pub(super) struct WriteLock(rusqlite::Connection);

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
