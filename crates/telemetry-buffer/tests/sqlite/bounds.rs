//! Bounds: the byte and age limits, and claimed events kept while their lease runs.

use super::*;

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
