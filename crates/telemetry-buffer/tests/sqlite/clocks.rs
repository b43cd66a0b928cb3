//! Wrong clocks: append times that cannot be right, and claims from a clock that ran ahead.

use super::*;
use crate::migrations::{VERSION_3_SCHEMA, earlier_file};

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
pub(super) enum Fate {
    /// Their time is implausible: they are sent, and age from the time they were met.
    Restamped,
    /// Their time is plausible and young enough: they are sent, and age from it.
    Believed,
    /// Their time is plausible and too old: they are dropped and counted.
    TooOld,
}

/// The `inserted_at` of every event in the file, by `seq`.
pub(super) fn append_times(dir: &SpoolDir) -> Vec<u64> {
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
