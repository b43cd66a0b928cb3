//! What the facade's benchmarks share: flowkit's catalog, configurations that are on or off
//! without reading the machine's environment or policy file, a sample run, and transports
//! that discard, refuse or stall.

// Not every benchmark uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use telemetry::internals::model::EncodedEvent;
use telemetry::internals::transport::SendError;
use telemetry::{
    Buffer, Catalog, EnvSnapshot, FeatureSet, RunOutcome, RunRecord, Telemetry, TelemetryConfig,
    Transport,
};

/// The example SDK's catalog, so that events look like flowkit's.
pub const CATALOG: &str = include_str!("../../../flowkit/catalog.toml");

/// A policy file path that does not exist, so the machine's own policy cannot decide.
const NO_POLICY: &str = "/nonexistent/flowkit-bench/telemetry-policy.toml";

/// flowkit's identity and catalog, reading settings only from `env`.
pub fn config(env: &[(&str, &str)]) -> TelemetryConfig {
    TelemetryConfig::new("flowkit", "0.1.0", CATALOG, "FLOWKIT")
        .unwrap()
        .env(EnvSnapshot::from_pairs(env.iter().copied()))
        .policy_path(NO_POLICY)
}

/// The settings that turn telemetry on with the in-memory buffer.
pub const ENABLED: &[(&str, &str)] = &[
    ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
    ("FLOWKIT_SDK_TELEMETRY_BUFFER", "memory"),
];

/// Telemetry that is off: an empty environment and no state directory.
pub fn disabled() -> Telemetry {
    let telemetry = config(&[]).start();
    assert!(!telemetry.is_enabled());
    telemetry
}

/// Telemetry that is on, delivering to `transport` through `buffer`.
pub fn enabled(
    transport: Arc<dyn Transport>,
    buffer: Arc<dyn Buffer>,
    queue_capacity: usize,
) -> Telemetry {
    let telemetry = config(ENABLED)
        .transport(transport)
        .buffer(buffer)
        .queue_capacity(queue_capacity)
        .start();
    assert!(telemetry.is_enabled());
    telemetry
}

/// A run as flowkit records it: three features, a second and a half, completed.
pub fn sample_run(catalog: &Catalog) -> RunRecord {
    RunRecord {
        features: FeatureSet::new()
            .with(catalog.feature("sequential_task_runner").unwrap())
            .with(catalog.feature("retries").unwrap())
            .with(catalog.feature("caching").unwrap()),
        duration: Duration::from_millis(1_500),
        outcome: RunOutcome::Completed,
        exception: None,
    }
}

/// `count` runs that all differ from one another: every combination of the catalog's first
/// eight features with each of the four outcomes (so up to 1,024), for a worker that can reuse
/// nothing from one run to the next when they are recorded in turn.
pub fn varied_runs(catalog: &Catalog) -> Vec<RunRecord> {
    let features: Vec<_> = catalog
        .entries(telemetry::Section::Features)
        .iter()
        .take(8)
        .map(|entry| catalog.feature(entry.name.as_str()).unwrap())
        .collect();
    let outcomes = [
        RunOutcome::Completed,
        RunOutcome::Failed,
        RunOutcome::Cancelled,
        RunOutcome::Crashed,
    ];
    let mut runs = Vec::new();
    for subset in 0u32..(1 << features.len()) {
        for outcome in outcomes {
            let mut set = FeatureSet::new();
            for (bit, feature) in features.iter().enumerate() {
                if subset & (1 << bit) != 0 {
                    set.insert(*feature);
                }
            }
            runs.push(RunRecord {
                features: set,
                duration: Duration::from_millis(1_500),
                outcome,
                exception: None,
            });
        }
    }
    runs
}

/// A destination that is down: every batch fails and is kept for a retry.
#[derive(Debug, Default)]
pub struct DeadTransport;

#[async_trait::async_trait]
impl Transport for DeadTransport {
    fn kind(&self) -> &'static str {
        "dead"
    }

    fn destination(&self) -> String {
        "a destination that is down".to_owned()
    }

    async fn send(&self, _events: &[EncodedEvent]) -> Result<(), SendError> {
        Err(SendError::Retryable {
            message: "the destination is down".to_owned(),
            retry_after: None,
        })
    }
}

/// A transport whose `send` blocks the worker's thread until it is opened, so that records
/// pile up in the queue and nothing consumes them: recording then measures the enqueue alone.
#[derive(Debug, Default)]
pub struct GateTransport {
    open: Mutex<bool>,
    opened: Condvar,
    entered: AtomicBool,
}

impl GateTransport {
    /// Whether the worker is blocked in `send`.
    pub fn worker_is_stalled(&self) -> bool {
        self.entered.load(Ordering::Acquire)
    }

    /// Lets every `send`, now and later, return at once.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

#[async_trait::async_trait]
impl Transport for GateTransport {
    fn kind(&self) -> &'static str {
        "gate"
    }

    fn destination(&self) -> String {
        "a gate the benchmark opens".to_owned()
    }

    async fn send(&self, _events: &[EncodedEvent]) -> Result<(), SendError> {
        self.entered.store(true, Ordering::Release);
        // Blocking the worker's own thread is the point: its runtime stops polling the queue.
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        Ok(())
    }
}
