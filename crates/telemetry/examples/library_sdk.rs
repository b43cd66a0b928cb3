//! A library SDK whose host owns `main`: each client the host creates joins the process's one
//! telemetry instance, and the instance stops (sending one `sdk_usage` summary) when the last
//! client is dropped. Run it with `cargo run -p telemetry --example library_sdk`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use telemetry::{FeatureSet, RunOutcome, RunRecord, TelemetryConfig, TelemetryGuard};

/// The library's part: a client type that keeps a telemetry guard.
mod jobs {
    use super::*;

    /// The library's catalog; a real SDK writes `telemetry::catalog!("catalog.toml");`.
    mod catalog {
        telemetry::catalog!(inline: "[features]\nretries = \"Jobs configured with retries\"\n");
    }

    /// The library's configuration, built once per process.
    fn config() -> &'static TelemetryConfig {
        static CONFIG: OnceLock<TelemetryConfig> = OnceLock::new();
        CONFIG.get_or_init(|| {
            TelemetryConfig::new(
                "acme_jobs",
                env!("CARGO_PKG_VERSION"),
                catalog::CATALOG_TOML,
                "ACME_JOBS",
            )
            .unwrap_or_else(|error| unreachable!("the library's own configuration: {error}"))
            .command_name("acme-jobs")
        })
    }

    /// What the host creates; any number of them share one telemetry instance.
    pub(crate) struct Client {
        telemetry: TelemetryGuard,
    }

    impl Client {
        pub(crate) fn new() -> Client {
            Client {
                telemetry: telemetry::init(config()),
            }
        }

        pub(crate) fn run_job(&self, retries: bool) {
            let started = Instant::now();
            // ... the job itself ...
            let mut features = FeatureSet::new();
            if retries {
                features.insert(catalog::features::RETRIES);
            }
            self.telemetry.record_run(RunRecord {
                features,
                duration: started.elapsed(),
                outcome: RunOutcome::Completed,
                exception: None,
            });
        }
    }
}

/// The host's part: it knows nothing about telemetry.
fn main() {
    let first = jobs::Client::new();
    let second = jobs::Client::new();
    first.run_job(true);
    second.run_job(false);
    drop(first);
    // The second client still holds the instance; dropping it stops telemetry, within the
    // shutdown timeout.
    let stopping = Instant::now();
    drop(second);
    assert!(stopping.elapsed() < Duration::from_secs(3));
}
