//! Storage: what is appended stays, in order, across a reopen.

use super::*;

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
