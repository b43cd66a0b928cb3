//! A handle records only with the catalog it was made from: a handle of another catalog is
//! refused and counted, never exported under the name at the same position.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use telemetry::internals::buffer::{BufferError, BufferStats, Claim, ClaimId, DeliveryLedger};
use telemetry::{
    Buffer, Catalog, EncodedEvent, EventType, ExceptionType, FeatureSet, MemoryBuffer, RunOutcome,
    RunRecord,
};

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

/// A memory buffer whose storage refuses every write, as a full disk does.
#[derive(Debug)]
struct RefusingBuffer(MemoryBuffer);

impl Buffer for RefusingBuffer {
    fn kind(&self) -> &'static str {
        "refusing"
    }
    fn append(&self, _events: Vec<EncodedEvent>) -> Result<(), BufferError> {
        Err(BufferError::Storage("no space left on device".to_owned()))
    }
    fn append_and_record(
        &self,
        _events: Vec<EncodedEvent>,
        _change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<BufferStats, BufferError> {
        Err(BufferError::Storage("no space left on device".to_owned()))
    }
    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError> {
        self.0.claim(max_events)
    }
    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError> {
        self.0.acknowledge(claim)
    }
    fn release(&self, claim: ClaimId) -> Result<(), BufferError> {
        self.0.release(claim)
    }
    fn stats(&self) -> Result<BufferStats, BufferError> {
        self.0.stats()
    }
    fn purge(&self) -> Result<usize, BufferError> {
        self.0.purge()
    }
    fn ledger(&self) -> Result<DeliveryLedger, BufferError> {
        self.0.ledger()
    }
    fn update_ledger(
        &self,
        _change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        Err(BufferError::Storage("no space left on device".to_owned()))
    }
}

/// Refusals the worker took into a write that then failed are still shown by the running
/// process's `status`: kept until a write that carries them succeeds.
#[test]
fn refusals_a_failed_write_carried_are_still_shown() {
    let fixture = Fixture::new();
    let buffer = Arc::new(RefusingBuffer(MemoryBuffer::new(1_000)));
    let telemetry = fixture
        .enabled_config()
        .buffer(Arc::clone(&buffer) as Arc<dyn Buffer>)
        .start();
    let foreign = Catalog::from_toml(FOREIGN).unwrap();
    for _ in 0..3 {
        telemetry.feature_used(foreign.feature("dry_run").unwrap());
    }
    // The flush hands the counts to a write, which the storage refuses.
    let _ = telemetry.flush(Duration::from_secs(5));
    assert_eq!(telemetry.status().refused_records, 3);
    telemetry.shutdown(Duration::from_secs(1));
}
