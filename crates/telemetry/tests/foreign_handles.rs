//! A handle records only with the catalog it was made from: a handle of another catalog is
//! refused and counted, never exported under the name at the same position.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use telemetry::{Catalog, EventType, ExceptionType, FeatureSet, RunOutcome, RunRecord};

use support::{CATALOG, Fixture};

/// Another SDK's catalog, whose first feature sits where `testsdk`'s `caching` does.
const FOREIGN: &str = r#"
    [features]
    dry_run = "Runs that only print what they would do"

    [metrics]
    flows_defined = "Flows defined"

    [exception_types]
    key_error = "Key errors"
"#;

fn names(set: &std::collections::BTreeSet<telemetry::Name>) -> Vec<&str> {
    set.iter().map(telemetry::Name::as_str).collect()
}

#[test]
fn handles_of_another_catalog_are_refused_counted_and_reported_once() {
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    let foreign = Catalog::from_toml(FOREIGN).unwrap();
    let dry_run = foreign.feature("dry_run").unwrap();
    let caching = telemetry.catalog().feature("caching").unwrap();
    assert_eq!(dry_run.index(), caching.index(), "the same position");

    telemetry.feature_used(dry_run);
    telemetry.count(foreign.metric("flows_defined").unwrap(), 3);
    telemetry.exception(foreign.exception_type("key_error").unwrap());
    telemetry.record_run(RunRecord {
        features: FeatureSet::new().with(dry_run),
        duration: Duration::from_secs(1),
        outcome: RunOutcome::Completed,
        exception: None,
    });
    // A run that mixes the two catalogs belongs to neither.
    telemetry.record_run(RunRecord {
        features: FeatureSet::new().with(caching).with(dry_run),
        duration: Duration::from_secs(1),
        outcome: RunOutcome::Completed,
        exception: None,
    });
    assert_eq!(telemetry.refused_records(), 5);
    // `other` belongs to every catalog, and our own handles still record.
    telemetry.exception(ExceptionType::OTHER);
    telemetry.feature_used(caching);
    assert_eq!(telemetry.refused_records(), 5);
    assert_eq!(telemetry.status().refused_records, 5);
    drop(telemetry);

    // The spool's ledger keeps the count for `status` in any later process.
    let status = fixture.enabled_config().status();
    assert_eq!(status.refused_records, 5, "{status:#?}");
    assert_eq!(
        status.dropped_events, 0,
        "refusals are not drops: {status:#?}"
    );
    assert!(
        status
            .to_string()
            .contains("Refused records: 5 (the SDK used catalog handles of another catalog"),
        "{status}"
    );

    let events = fixture.exported();
    assert_eq!(events.len(), 1, "the summary only: {events:#?}");
    let summary = &events[0];
    assert_eq!(summary.event_type, EventType::SdkUsage);
    assert_eq!(names(&summary.features), ["caching"]);
    assert!(summary.metrics.is_empty(), "{:?}", summary.metrics);
    let exceptions: Vec<&str> = summary
        .errors
        .exception_types
        .keys()
        .map(telemetry::Name::as_str)
        .collect();
    assert_eq!(exceptions, ["other"]);
    let warnings = fixture.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("another catalog"), "{warnings:?}");
}

#[test]
fn a_catalog_with_the_same_names_shares_the_identity() {
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    // Parsed again, with other descriptions: every handle names the same thing.
    let again = Catalog::from_toml(&CATALOG.replace("\"Caching\"", "\"Results reused\"")).unwrap();
    assert_eq!(again.id(), telemetry.catalog().id());
    telemetry.feature_used(again.feature("caching").unwrap());
    assert_eq!(telemetry.refused_records(), 0);
    drop(telemetry);
    let events = fixture.exported();
    assert_eq!(names(&events[0].features), ["caching"]);
}
