//! Sample events.

use std::collections::{BTreeMap, BTreeSet};

use telemetry_model::{
    Arch, DeploymentStage, DurationBucket, EncodedEvent, ErrorSummary, Event, EventId, EventType,
    HourTimestamp, Interface, Name, OsFamily, RunOutcome, SessionId, Version,
};

/// A valid `run` event with fresh ids.
pub fn run_event() -> Event {
    let name = |text: &str| Name::new(text).unwrap();
    let version = |text: &str| Version::new(text).unwrap();
    Event {
        event_id: EventId::random(),
        session_id: SessionId::random(),
        timestamp: HourTimestamp::from_unix_seconds(1_764_338_400),
        event_type: EventType::Run,
        sdk_name: name("flowkit"),
        sdk_version: version("0.1.0"),
        library_version: version("0.1.0"),
        runtime: name("rust"),
        runtime_version: version("1.95"),
        os: OsFamily::Linux,
        arch: Arch::X86_64,
        interface: Interface::Cli,
        ci: false,
        deployment: DeploymentStage::Development,
        integrations: BTreeSet::new(),
        features: [name("retries")].into_iter().collect(),
        block_types: BTreeSet::new(),
        commands: BTreeSet::new(),
        metrics: BTreeMap::new(),
        errors: ErrorSummary::default(),
        duration: DurationBucket::OneToTenSeconds,
        concurrency_peak: None,
        outcome: Some(RunOutcome::Completed),
    }
}

/// `count` encoded sample events.
pub fn encoded_events(count: usize) -> Vec<EncodedEvent> {
    (0..count)
        .filter_map(|_| EncodedEvent::encode(&run_event()).ok())
        .collect()
}
