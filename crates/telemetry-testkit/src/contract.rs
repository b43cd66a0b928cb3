//! The contract every `telemetry_buffer::Buffer` keeps, as one suite that each buffer's tests
//! run with one call of [`buffer_contract!`](crate::buffer_contract).

/// Expands to a module `buffer_contract` of `#[test]`s: the claim/acknowledge/release contract
/// of `telemetry_buffer::Buffer`, its count bound and `purge`, checked against one buffer.
///
/// - `open` names a function (in the calling module) from a capacity in events (`0` asks for the smallest a buffer allows,
///   which is one event) to the buffer under test, or to anything that dereferences to it (a
///   value that also holds the buffer's temporary directory, say).
/// - `check` names a function that gets that value after every step that changes the buffer, to
///   check what only this buffer can see (a spool's totals against its rows, say).
///
/// The expansion names `telemetry_buffer` itself, so it must be called from a crate that
/// depends on `telemetry-buffer`: the buffer's own tests.
///
/// ```text
/// fn open(capacity: usize) -> Box<MemoryBuffer> {
///     Box::new(MemoryBuffer::new(capacity))
/// }
///
/// fn check(_: &Box<MemoryBuffer>) {}
///
/// telemetry_testkit::buffer_contract!(open: open, check: check);
/// ```
#[macro_export]
macro_rules! buffer_contract {
    (open: $open:ident, check: $check:ident $(,)?) => {
        mod buffer_contract {
            use ::telemetry_buffer::{Buffer as _, BufferError};
            use $crate::fixtures::encoded_events;
            use $crate::telemetry_model::{EncodedEvent, EventId};

            fn ids(events: &[EncodedEvent]) -> Vec<EventId> {
                events.iter().map(EncodedEvent::id).collect()
            }

            fn expected_events(events: &[EncodedEvent], wanted: &[EventId]) -> Vec<EncodedEvent> {
                wanted
                    .iter()
                    .map(|id| {
                        events
                            .iter()
                            .find(|event| event.id() == *id)
                            .unwrap()
                            .clone()
                    })
                    .collect()
            }

            #[test]
            fn claim_acknowledge_release_keep_order() {
                let subject = super::$open(10);
                let buffer = &*subject;
                let events = encoded_events(5);
                buffer.append(events.clone()).unwrap();
                assert_eq!(buffer.stats().unwrap().pending, 5);

                let first = buffer.claim(2).unwrap().unwrap();
                assert_eq!(ids(&first.events), ids(&events[..2]));
                let second = buffer.claim(2).unwrap().unwrap();
                assert_eq!(ids(&second.events), ids(&events[2..4]));
                assert_ne!(first.id, second.id);
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
                assert_eq!(
                    rest.events,
                    expected_events(&events, &expected),
                    "the bytes come back unchanged"
                );
                super::$check(&subject);
                buffer.acknowledge(rest.id).unwrap();
                assert!(buffer.claim(10).unwrap().is_none());
                assert!(buffer.claim(0).unwrap().is_none());
                super::$check(&subject);
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
                // (capacity, claimed before the append, appended, expected pending,
                // expected dropped)
                let cases = [
                    (3, 0, 5, 3, 2),
                    (3, 0, 3, 3, 0),
                    (3, 2, 3, 3, 2),
                    (3, 3, 4, 3, 4),
                    (1, 0, 1_000, 1, 999),
                    (0, 0, 2, 1, 1),
                ];
                for (capacity, claimed, appended, pending, dropped) in cases {
                    let subject = super::$open(capacity);
                    let buffer = &*subject;
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
                    assert_eq!(stats.dropped_total(), dropped, "{case:?}");
                    super::$check(&subject);
                    // The newest events are the ones kept.
                    if let Some(kept) = buffer.claim(usize::MAX).unwrap() {
                        let newest = &events[events.len() - kept.events.len()..];
                        assert_eq!(ids(&kept.events), ids(newest), "{case:?}");
                    }
                }
            }

            #[test]
            fn purge_forgets_everything_pending() {
                let subject = super::$open(10);
                let buffer = &*subject;
                buffer.append(encoded_events(4)).unwrap();
                let claim = buffer.claim(2).unwrap().unwrap();
                assert_eq!(buffer.purge().unwrap(), 4);
                assert_eq!(buffer.stats().unwrap().pending, 0);
                assert!(buffer.claim(10).unwrap().is_none());
                assert!(buffer.release(claim.id).is_err(), "a purged claim is gone");
                super::$check(&subject);
            }
        }
    };
}
