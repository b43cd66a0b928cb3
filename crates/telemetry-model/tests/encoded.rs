//! `EncodedEvent::with_id` and `EncodedEvent::copies`: a copy of a serialized event under
//! another id is exactly what serializing the event with that id gives, whatever the event
//! holds.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use telemetry_model::{
    CountBucket, DurationBucket, EncodedEvent, Event, EventId, HourTimestamp, Name, RunOutcome,
};
use telemetry_testkit::fixtures::run_event;

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

proptest! {
    /// Copies made together are each what `with_id` makes alone, in the order asked, whatever
    /// mix of events and layouts they come from.
    #[test]
    fn copies_made_together_are_each_the_event_serialized_with_its_id(
        originals in prop::collection::vec(events(), 1..4),
        picks in prop::collection::vec((0usize..4, any::<bool>()), 0..12),
    ) {
        let encoded: Vec<EncodedEvent> = originals
            .iter()
            .map(|event| EncodedEvent::encode(event).unwrap())
            .collect();
        // Some from storage in another layout, which is decoded and encoded again.
        let pretty: Vec<EncodedEvent> = originals
            .iter()
            .map(|event| {
                let text = serde_json::to_string_pretty(event).unwrap();
                EncodedEvent::from_stored(event.event_id, &text).unwrap()
            })
            .collect();
        let requests: Vec<(&EncodedEvent, EventId)> = picks
            .iter()
            .map(|&(index, stored)| {
                let index = index % originals.len();
                let source = if stored { &pretty[index] } else { &encoded[index] };
                (source, EventId::random())
            })
            .collect();
        let copies = EncodedEvent::copies(&requests);
        prop_assert_eq!(copies.len(), requests.len());
        for ((source, id), copy) in requests.iter().zip(&copies) {
            let copy = copy.as_ref().unwrap();
            let alone = source.with_id(*id).unwrap();
            prop_assert_eq!(copy.id(), *id);
            prop_assert_eq!(copy.json(), alone.json());
            prop_assert_eq!(copy, &alone);
            let mut expected = source.decode().unwrap();
            expected.event_id = *id;
            prop_assert_eq!(copy.decode().unwrap(), expected);
        }
    }
}

#[test]
fn copies_in_the_encoded_layout_share_blocks_of_at_most_64_kib() {
    let event = EncodedEvent::encode(&run_event()).unwrap();
    let ids: Vec<EventId> = (0..250).map(|_| EventId::random()).collect();
    let requests: Vec<(&EncodedEvent, EventId)> = ids.iter().map(|&id| (&event, id)).collect();
    let copies: Vec<EncodedEvent> = EncodedEvent::copies(&requests)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Each copy's text starts where the one before it ends, in blocks of at most 64 KiB:
    // a handful of blocks, not fifty allocations.
    let mut blocks = 1;
    let mut block_bytes = copies[0].json().len();
    for pair in copies.windows(2) {
        let end = pair[0].json().as_ptr() as usize + pair[0].json().len();
        if pair[1].json().as_ptr() as usize == end {
            block_bytes += pair[1].json().len();
        } else {
            blocks += 1;
            block_bytes = pair[1].json().len();
        }
        assert!(
            block_bytes <= 64 * 1024,
            "a block grew to {block_bytes} bytes"
        );
    }
    let per_block = (64 * 1024) / event.json().len();
    assert_eq!(blocks, 250_usize.div_ceil(per_block), "{blocks} blocks");
    // Dropping all but one leaves that one intact.
    let last = copies.last().unwrap().clone();
    drop(copies);
    assert_eq!(last.id(), ids[249]);
    assert_eq!(last.decode().unwrap().event_id, ids[249]);
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

/// Replacement values for one field: valid and invalid for each kind of field.
const REPLACEMENTS: &[&str] = &[
    r#""Not A Name""#,
    r#""""#,
    "42",
    "null",
    "true",
    "[]",
    "{}",
    r#""a@b.c""#,
    r#""other""#,
    r#""1.2.3""#,
    r#""2026-11-28T14:00:00Z""#,
    r#""2026-11-28T14:30:00Z""#,
    r#""6F1C1B0E-3C1A-4D4E-9B8A-2B7C8E9D0A1F""#,
    r#""6f1c1b0e-3c1a-4d4e-9b8a-2b7c8e9d0a1f""#,
    r#"["x"]"#,
    r#"["Bad"]"#,
    r#"["x","x"]"#,
    r#"{"x":"1"}"#,
    r#"{"x":"bogus"}"#,
    r#"{"Bad":"1"}"#,
    r#""<1s""#,
    r#""completed""#,
    r#""linux""#,
    r#"{"integration_import_failures":[],"config_errors":[],"exception_types":{}}"#,
    r#"{"integration_import_failures":[],"config_errors":[]}"#,
];

/// One way to damage a stored event.
#[derive(Clone, Debug)]
enum Damage {
    Remove(usize),
    RemoveFromErrors(usize),
    Unknown,
    UnknownInErrors,
    Replace(usize, usize),
    ReplaceInErrors(usize, usize),
    Repeat(usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..32).prop_map(Damage::Remove),
        (0usize..3).prop_map(Damage::RemoveFromErrors),
        Just(Damage::Unknown),
        Just(Damage::UnknownInErrors),
        (0usize..32, 0..REPLACEMENTS.len()).prop_map(|(f, r)| Damage::Replace(f, r)),
        (0usize..3, 0..REPLACEMENTS.len()).prop_map(|(f, r)| Damage::ReplaceInErrors(f, r)),
        (0usize..32).prop_map(Damage::Repeat),
        (1usize..600).prop_map(Damage::Truncate),
    ]
}

fn apply(json: &str, damage: &Damage) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    let object = value.as_object_mut().unwrap();
    let keys: Vec<String> = object.keys().cloned().collect();
    let error_keys: Vec<String> = object["errors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let replacement = |index: usize| serde_json::from_str(REPLACEMENTS[index]).unwrap();
    match damage {
        Damage::Remove(field) => {
            object.remove(&keys[field % keys.len()]);
        }
        Damage::RemoveFromErrors(field) => {
            let errors = object.get_mut("errors").unwrap().as_object_mut().unwrap();
            errors.remove(&error_keys[field % error_keys.len()]);
        }
        Damage::Unknown => {
            object.insert("user".to_owned(), "jdoe".into());
        }
        Damage::UnknownInErrors => {
            let errors = object.get_mut("errors").unwrap().as_object_mut().unwrap();
            errors.insert("message".to_owned(), "oops".into());
        }
        Damage::Replace(field, with) => {
            object.insert(keys[field % keys.len()].clone(), replacement(*with));
        }
        Damage::ReplaceInErrors(field, with) => {
            let errors = object.get_mut("errors").unwrap().as_object_mut().unwrap();
            errors.insert(
                error_keys[field % error_keys.len()].clone(),
                replacement(*with),
            );
        }
        Damage::Repeat(field) => {
            // A field written twice: only text can say that.
            let key = &keys[field % keys.len()];
            let text = serde_json::to_string(&value).unwrap();
            let repeated = format!("\"{key}\":{},", value[key]);
            return text.replacen('{', &format!("{{{repeated}"), 1);
        }
        Damage::Truncate(at) => {
            let cut = (*at).min(json.len() - 1);
            return json[..cut].to_owned();
        }
    }
    serde_json::to_string(&value).unwrap()
}

proptest! {
    /// Reading a stored event back accepts exactly what deserializes as an `Event` with the
    /// expected id: intact events and every kind of damage alike.
    #[test]
    fn stored_events_are_checked_exactly_like_events(event in events(), damage in damage()) {
        let id = event.event_id;
        let json = EncodedEvent::encode(&event).unwrap().json().to_owned();
        prop_assert!(EncodedEvent::from_stored(id, &json).is_ok());
        prop_assert!(EncodedEvent::from_stored(EventId::random(), &json).is_err());

        let damaged = apply(&json, &damage);
        let as_event = serde_json::from_str::<Event>(&damaged);
        let expected = as_event.as_ref().is_ok_and(|event| event.event_id == id);
        let stored = EncodedEvent::from_stored(id, &damaged);
        prop_assert_eq!(stored.is_ok(), expected, "{:?}: {}", damage, damaged);
        if let Ok(stored) = stored {
            prop_assert_eq!(stored.json(), damaged.as_str());
        }
    }
}

/// Every field removed, repeated and replaced by every replacement, on one event.
#[test]
fn every_single_damage_is_judged_like_deserializing_an_event() {
    let mut event = run_event();
    event
        .errors
        .exception_types
        .insert(Name::new("value_error").unwrap(), CountBucket::One);
    let id = event.event_id;
    let json = EncodedEvent::encode(&event).unwrap().json().to_owned();
    let fields = serde_json::from_str::<serde_json::Value>(&json)
        .unwrap()
        .as_object()
        .unwrap()
        .len();
    let mut damages = vec![Damage::Unknown, Damage::UnknownInErrors];
    for field in 0..fields {
        damages.push(Damage::Remove(field));
        damages.push(Damage::Repeat(field));
        damages.extend((0..REPLACEMENTS.len()).map(|with| Damage::Replace(field, with)));
    }
    for field in 0..3 {
        damages.push(Damage::RemoveFromErrors(field));
        damages.extend((0..REPLACEMENTS.len()).map(|with| Damage::ReplaceInErrors(field, with)));
    }
    damages.extend((1..json.len()).step_by(7).map(Damage::Truncate));
    let mut accepted = 0;
    for damage in &damages {
        let damaged = apply(&json, damage);
        let expected =
            serde_json::from_str::<Event>(&damaged).is_ok_and(|event| event.event_id == id);
        let stored = EncodedEvent::from_stored(id, &damaged).is_ok();
        assert_eq!(stored, expected, "{damage:?}: {damaged}");
        accepted += usize::from(stored);
    }
    // Some damage leaves a valid event (a valid name in place of another, say); most does not.
    assert!(
        accepted > 0 && accepted < damages.len() / 2,
        "{accepted} of {}",
        damages.len()
    );
}
