//! Checks that a stored text is an event without building the [`Event`].
//!
//! Buffers check every event they read back from storage that may be damaged
//! ([`EncodedEvent::from_stored`](crate::EncodedEvent::from_stored)). Deserializing an
//! [`Event`] would allocate every name, set and map only to throw them away; [`StoredEvent`]
//! reads the same fields with the same rules (every field required but the two optional ones,
//! no unknown or repeated field, names, versions, ids, hours, buckets and enums each checked as
//! the event's own types check them) while borrowing from the text.
//!
//! Architecture Invariant: a text passes here exactly when it deserializes as an [`Event`].
//! The tests in `tests/encoded.rs` hold the two to that on valid events and on damaged ones.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::bucket::{CountBucket, DurationBucket};
use crate::event::{
    Arch, DeploymentStage, Event, EventId, EventType, Interface, OsFamily, RunOutcome, SessionId,
};
use crate::name::{Name, Version};
use crate::time::HourTimestamp;

/// The fields of an [`Event`], checked and dropped; only the event id is kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // The fields exist to be checked, not read.
pub(crate) struct StoredEvent {
    pub(crate) event_id: StoredId<EventId>,
    session_id: StoredId<SessionId>,
    timestamp: StoredHour,
    event_type: EventType,
    sdk_name: StoredName,
    sdk_version: StoredVersion,
    library_version: StoredVersion,
    runtime: StoredName,
    runtime_version: StoredVersion,
    os: OsFamily,
    arch: Arch,
    interface: Interface,
    ci: bool,
    deployment: DeploymentStage,
    integrations: StoredNames,
    features: StoredNames,
    block_types: StoredNames,
    commands: StoredNames,
    metrics: StoredCounts,
    errors: StoredErrors,
    duration: DurationBucket,
    #[serde(default)]
    concurrency_peak: Option<CountBucket>,
    #[serde(default)]
    outcome: Option<RunOutcome>,
}

/// The fields of an [`ErrorSummary`](crate::ErrorSummary), checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct StoredErrors {
    integration_import_failures: StoredNames,
    config_errors: StoredNames,
    exception_types: StoredCounts,
}

/// A string checked by `check`, borrowed while it is looked at and never kept.
struct TextVisitor<T> {
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.check)(text).map_err(E::custom)
    }
}

fn text<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    expecting: &'static str,
    check: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(TextVisitor { expecting, check })
}

/// A [`Name`], checked.
struct StoredName;

impl<'de> Deserialize<'de> for StoredName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredName, D::Error> {
        text(deserializer, "a name", |text| {
            if Name::is_valid(text) {
                Ok(StoredName)
            } else {
                // The same message as deserializing a `Name`.
                Err(Name::new(text)
                    .err()
                    .map_or_else(String::new, |e| e.to_string()))
            }
        })
    }
}

/// A [`Version`], checked.
struct StoredVersion;

impl<'de> Deserialize<'de> for StoredVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredVersion, D::Error> {
        text(deserializer, "a version", |text| {
            if Version::is_valid(text) {
                Ok(StoredVersion)
            } else {
                // The same message as deserializing a `Version`.
                Err(Version::new(text)
                    .err()
                    .map_or_else(String::new, |e| e.to_string()))
            }
        })
    }
}

/// An [`EventId`] or [`SessionId`], parsed without allocating.
pub(crate) struct StoredId<T>(pub(crate) T);

impl<'de, T> Deserialize<'de> for StoredId<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredId<T>, D::Error> {
        text(deserializer, "a lowercase hyphenated UUID", |text| {
            text.parse::<T>()
                .map(StoredId)
                .map_err(|error| error.to_string())
        })
    }
}

/// An [`HourTimestamp`], checked.
struct StoredHour;

impl<'de> Deserialize<'de> for StoredHour {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredHour, D::Error> {
        text(deserializer, "an hour timestamp", |text| {
            text.parse::<HourTimestamp>()
                .map(|_| StoredHour)
                .map_err(|error| error.to_string())
        })
    }
}

/// A set of names (a JSON array, as a `BTreeSet<Name>` reads it), checked.
struct StoredNames;

impl<'de> Deserialize<'de> for StoredNames {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredNames, D::Error> {
        struct Names;

        impl<'de> Visitor<'de> for Names {
            type Value = StoredNames;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a sequence")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StoredNames, A::Error> {
                while seq.next_element::<StoredName>()?.is_some() {}
                Ok(StoredNames)
            }
        }

        deserializer.deserialize_seq(Names)
    }
}

/// A map of names to count buckets (as a `BTreeMap<Name, CountBucket>` reads it), checked.
struct StoredCounts;

impl<'de> Deserialize<'de> for StoredCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StoredCounts, D::Error> {
        struct Counts(PhantomData<CountBucket>);

        impl<'de> Visitor<'de> for Counts {
            type Value = StoredCounts;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoredCounts, A::Error> {
                while map.next_entry::<StoredName, CountBucket>()?.is_some() {}
                Ok(StoredCounts)
            }
        }

        deserializer.deserialize_map(Counts(PhantomData))
    }
}

/// Keeps the mirror honest at compile time: a field added to [`Event`] and not here fails to
/// build this destructuring.
#[allow(dead_code)]
fn mirrors(event: Event) {
    let Event {
        event_id: _,
        session_id: _,
        timestamp: _,
        event_type: _,
        sdk_name: _,
        sdk_version: _,
        library_version: _,
        runtime: _,
        runtime_version: _,
        os: _,
        arch: _,
        interface: _,
        ci: _,
        deployment: _,
        integrations: _,
        features: _,
        block_types: _,
        commands: _,
        metrics: _,
        errors: _,
        duration: _,
        concurrency_peak: _,
        outcome: _,
    } = event;
    let crate::ErrorSummary {
        integration_import_failures: _,
        config_errors: _,
        exception_types: _,
    } = crate::ErrorSummary::default();
}
