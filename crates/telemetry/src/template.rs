//! The description of this process that every event shares: the session, the SDK, the runtime
//! and the platform. A leaf: the worker, the preview and the erasure request all build events
//! from it, and it depends on none of them.

use std::collections::{BTreeMap, BTreeSet};

use telemetry_model::{
    Arch, DeploymentStage, DurationBucket, ErrorSummary, Event, EventId, EventType, HourTimestamp,
    Interface, Name, OsFamily, SessionId, Version,
};

/// The fields every event of this process shares.
#[derive(Clone, Debug)]
pub(crate) struct EventTemplate {
    pub(crate) session_id: SessionId,
    pub(crate) sdk_name: Name,
    pub(crate) sdk_version: Version,
    pub(crate) library_version: Version,
    pub(crate) runtime: Name,
    pub(crate) runtime_version: Version,
    pub(crate) os: OsFamily,
    pub(crate) arch: Arch,
    pub(crate) interface: Interface,
    pub(crate) ci: bool,
    pub(crate) deployment: DeploymentStage,
}

impl EventTemplate {
    /// An event of this process in the current hour.
    pub(crate) fn event(&self, event_type: EventType, duration: DurationBucket) -> Event {
        self.event_at(HourTimestamp::now(), event_type, duration)
    }

    /// An event of this process in the given hour, with a new id and nothing used yet.
    pub(crate) fn event_at(
        &self,
        timestamp: HourTimestamp,
        event_type: EventType,
        duration: DurationBucket,
    ) -> Event {
        Event {
            event_id: EventId::random(),
            session_id: self.session_id,
            timestamp,
            event_type,
            sdk_name: self.sdk_name.clone(),
            sdk_version: self.sdk_version.clone(),
            library_version: self.library_version.clone(),
            runtime: self.runtime.clone(),
            runtime_version: self.runtime_version.clone(),
            os: self.os,
            arch: self.arch,
            interface: self.interface,
            ci: self.ci,
            deployment: self.deployment,
            integrations: BTreeSet::new(),
            features: BTreeSet::new(),
            block_types: BTreeSet::new(),
            commands: BTreeSet::new(),
            metrics: BTreeMap::new(),
            errors: ErrorSummary::default(),
            duration,
            concurrency_peak: None,
            outcome: None,
        }
    }
}
