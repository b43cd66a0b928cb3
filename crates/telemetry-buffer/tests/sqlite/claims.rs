//! Claims across processes: leases, their expiry, late acknowledgements, and release on drop.

use super::*;

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

/// What the spool that is dropped did with one of its claims first.
#[derive(Clone, Copy, Debug)]
pub(super) enum Outcome {
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
