//! An SDK used from async code: recording never blocks, and `flush_async` and
//! `shutdown_async` wait without holding the runtime's thread. Run it with
//! `cargo run -p telemetry --example async_host`.

use std::time::Duration;

use telemetry::{FeatureSet, RunOutcome, RunRecord, TelemetryConfig};

/// The SDK's catalog; a real SDK writes `telemetry::catalog!("catalog.toml");`.
mod catalog {
    telemetry::catalog!(inline: "[features]\ncaching = \"Cached results\"\n");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = TelemetryConfig::new("acme_async", "1.0.0", catalog::CATALOG_TOML, "ACME_ASYNC")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let telemetry = telemetry::init(&config);
        telemetry.record_run(RunRecord {
            features: FeatureSet::new().with(catalog::features::CACHING),
            duration: Duration::from_millis(120),
            outcome: RunOutcome::Completed,
            exception: None,
        });
        // Before a request ends, say: delivers what is pending, within the timeout.
        let _ = telemetry.flush_async(Duration::from_secs(1)).await;
        // Before the runtime stops: after this, dropping the guard returns at once.
        telemetry.shutdown_async(Duration::from_secs(2)).await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
