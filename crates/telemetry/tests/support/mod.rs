//! A test SDK (`testsdk`, prefix `TESTSDK`) in a temporary directory: its catalog, its
//! configuration reading only the variables a test gives, and what it exported.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telemetry::{
    EnvSnapshot, Event, FeatureSet, RunOutcome, RunRecord, Telemetry, TelemetryConfig,
};

pub(crate) const CATALOG: &str = r#"
    [features]
    retries = "Retries"
    caching = "Caching"

    [metrics]
    flows_defined = "Flows defined"

    [exception_types]
    value_error = "Value errors"

    [integrations]
    aws = "AWS"

    [commands]
    run = "The run command"
"#;

pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
    warnings: Arc<Mutex<Vec<String>>>,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            warnings: Arc::default(),
        }
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub(crate) fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    pub(crate) fn file_endpoint(&self) -> String {
        format!("file://{}", self.export().display())
    }

    /// A configuration reading only the given variables.
    pub(crate) fn config(&self, vars: &[(&str, &str)]) -> TelemetryConfig {
        let warnings = Arc::clone(&self.warnings);
        TelemetryConfig::new("testsdk", "1.2.3", CATALOG, "TESTSDK")
            .unwrap()
            .state_dir(self.home())
            .env(EnvSnapshot::from_pairs(vars.iter().copied()))
            .warnings(Arc::new(move |message: &str| {
                warnings.lock().unwrap().push(message.to_owned())
            }))
            .shutdown_timeout(Duration::from_secs(10))
    }

    /// [`Fixture::config`] whose built-in default endpoint is `default_endpoint`, exporting
    /// to [`Fixture::export`] through the endpoint variable.
    pub(crate) fn exporting(
        &self,
        default_endpoint: &str,
        vars: &[(&str, &str)],
    ) -> TelemetryConfig {
        let endpoint = self.file_endpoint();
        let mut pairs = vec![("TESTSDK_SDK_TELEMETRY_ENDPOINT", endpoint.as_str())];
        pairs.extend_from_slice(vars);
        self.config(&pairs)
            .default_endpoint(default_endpoint)
            .unwrap()
    }

    pub(crate) fn enabled_config(&self) -> TelemetryConfig {
        let endpoint = self.file_endpoint();
        self.config(&[
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            ("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ])
    }

    pub(crate) fn exported(&self) -> Vec<Event> {
        read_events(&self.export())
    }

    pub(crate) fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }

    /// The state file's text; empty when there is none.
    pub(crate) fn state_text(&self) -> String {
        std::fs::read_to_string(self.home().join("telemetry_state.toml")).unwrap_or_default()
    }
}

pub(crate) fn read_events(dir: &Path) -> Vec<Event> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            events
                .push(serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")));
        }
    }
    events
}

/// Records one run that used `retries`, failing with `value_error` when `outcome` is a failure.
pub(crate) fn run(telemetry: &Telemetry, outcome: RunOutcome) {
    let retries = telemetry.catalog().feature("retries").unwrap();
    telemetry.record_run(RunRecord {
        features: FeatureSet::new().with(retries),
        duration: Duration::from_millis(2_500),
        outcome,
        exception: (outcome == RunOutcome::Failed)
            .then(|| telemetry.catalog().exception_type("value_error").unwrap()),
    });
}
