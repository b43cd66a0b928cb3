//! The in-memory buffer's claim/acknowledge contract and its bounds.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use telemetry_buffer::{Buffer, BufferError, MemoryBuffer};
use telemetry_model::{EncodedEvent, EventId, fixtures::encoded_events};

fn ids(events: &[EncodedEvent]) -> Vec<EventId> {
    events.iter().map(EncodedEvent::id).collect()
}

#[test]
fn claim_acknowledge_release_keep_order() {
    let buffer = MemoryBuffer::new(10);
    let events = encoded_events(5);
    buffer.append(events.clone()).unwrap();
    assert_eq!(buffer.stats().unwrap().pending, 5);

    let first = buffer.claim(2).unwrap().unwrap();
    assert_eq!(ids(&first.events), ids(&events[..2]));
    let second = buffer.claim(2).unwrap().unwrap();
    assert_eq!(ids(&second.events), ids(&events[2..4]));
    assert_eq!(
        buffer.stats().unwrap().pending,
        5,
        "claimed events are still pending"
    );

    buffer.release(first.id).unwrap();
    buffer.acknowledge(second.id).unwrap();
    assert_eq!(buffer.stats().unwrap().pending, 3);

    let rest = buffer.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&events[..2])
        .into_iter()
        .chain(ids(&events[4..]))
        .collect();
    assert_eq!(
        ids(&rest.events),
        expected,
        "released events come back first, in order"
    );
    buffer.acknowledge(rest.id).unwrap();
    assert!(buffer.claim(10).unwrap().is_none());
    assert!(matches!(
        buffer.acknowledge(rest.id),
        Err(BufferError::UnknownClaim(_))
    ));
    assert!(matches!(
        buffer.release(rest.id),
        Err(BufferError::UnknownClaim(_))
    ));
}

#[test]
fn overflow_drops_the_oldest_and_counts_them() {
    // (capacity, claimed before the append, appended, expected pending, expected dropped)
    let cases = [
        (3, 0, 5, 3, 2),
        (3, 0, 3, 3, 0),
        (3, 2, 3, 3, 2),
        (3, 3, 4, 3, 4),
        (1, 0, 1_000, 1, 999),
    ];
    for (capacity, claimed, appended, pending, dropped) in cases {
        let buffer = MemoryBuffer::new(capacity);
        buffer.append(encoded_events(claimed)).unwrap();
        if claimed > 0 {
            buffer.claim(claimed).unwrap().unwrap();
        }
        let events = encoded_events(appended);
        buffer.append(events.clone()).unwrap();
        let stats = buffer.stats().unwrap();
        let case = (capacity, claimed, appended);
        assert_eq!(stats.pending, pending, "{case:?}");
        assert_eq!(stats.dropped_full, dropped, "{case:?}");
        // The newest events are the ones kept.
        if let Some(kept) = buffer.claim(usize::MAX).unwrap() {
            let newest = &events[events.len() - kept.events.len()..];
            assert_eq!(ids(&kept.events), ids(newest), "{case:?}");
        }
    }
}

#[test]
fn purge_forgets_everything_pending() {
    let buffer = MemoryBuffer::new(10);
    buffer.append(encoded_events(4)).unwrap();
    let claim = buffer.claim(2).unwrap().unwrap();
    assert_eq!(buffer.purge().unwrap(), 4);
    assert_eq!(buffer.stats().unwrap().pending, 0);
    assert!(buffer.claim(10).unwrap().is_none());
    assert!(buffer.release(claim.id).is_err(), "a purged claim is gone");
}
