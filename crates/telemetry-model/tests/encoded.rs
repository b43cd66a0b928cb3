//! `EncodedEvent::with_id`: a copy of a serialized event under another id is exactly what
//! serializing the event with that id gives, whatever the event holds.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use telemetry_model::fixtures::run_event;
use telemetry_model::{
    CountBucket, DurationBucket, EncodedEvent, Event, EventId, HourTimestamp, Name, RunOutcome,
};

fn names(prefix: &str, count: usize) -> impl Iterator<Item = Name> {
    (0..count).map(move |index| Name::new(&format!("{prefix}_{index}")).unwrap())
}

prop_compose! {
    fn events()(
        features in 0usize..6,
        metrics in 0usize..4,
        exceptions in 0usize..3,
        hours in 0u64..2_000_000,
        outcome in prop::sample::select(vec![
            None,
            Some(RunOutcome::Completed),
            Some(RunOutcome::Failed),
            Some(RunOutcome::Cancelled),
        ]),
        duration in prop::sample::select(vec![
            DurationBucket::OneToTenSeconds,
            DurationBucket::UnderOneSecond,
        ]),
        ci in any::<bool>(),
    ) -> Event {
        let mut event = run_event();
        event.features = names("feature", features).collect();
        event.metrics = names("metric", metrics).map(|name| (name, CountBucket::One)).collect();
        event.errors.exception_types =
            names("error", exceptions).map(|name| (name, CountBucket::One)).collect();
        event.timestamp = HourTimestamp::from_unix_seconds(hours * 3_600);
        event.outcome = outcome;
        event.duration = duration;
        event.ci = ci;
        event
    }
}

proptest! {
    #[test]
    fn a_copy_under_a_new_id_is_the_event_serialized_with_it(event in events()) {
        let original = EncodedEvent::encode(&event).unwrap();
        let id = EventId::random();
        let copy = original.with_id(id).unwrap();

        let mut expected = event.clone();
        expected.event_id = id;
        let reference = EncodedEvent::encode(&expected).unwrap();
        prop_assert_eq!(copy.id(), id);
        prop_assert_eq!(copy.json(), reference.json());
        prop_assert_eq!(copy.decode().unwrap(), expected);
        // The original is untouched.
        prop_assert_eq!(original.decode().unwrap(), event);
    }
}

#[test]
fn stored_json_in_another_layout_is_re_encoded() {
    let event = run_event();
    let pretty = serde_json::to_string_pretty(&event).unwrap();
    let stored = EncodedEvent::from_stored(event.event_id, &pretty).unwrap();
    let id = EventId::random();
    let copy = stored.with_id(id).unwrap();

    let mut expected = event;
    expected.event_id = id;
    assert_eq!(copy.id(), id);
    assert_eq!(copy.json(), EncodedEvent::encode(&expected).unwrap().json());
}

#[test]
fn ids_encode_without_allocating_to_their_display_text() {
    let id = EventId::random();
    let mut buffer = [0u8; EventId::TEXT_LEN];
    let text = id.to_string();
    assert_eq!(id.encode(&mut buffer), text);
    assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
}
