//! The scrubber's cost per event: `Scrubber::check_json` on a serialized `run` event, on the
//! same event from an SDK and a runtime at pre-release versions (`1.0.0-rc.1`, `3.13.0rc1`,
//! which take the strict-version short cut), and on an `sdk_usage` summary, with the allowlist
//! the facade gives it (flowkit's catalog names and every field name and enumerated value of
//! the event schema) and this machine's identity.
//!
//! Run with `cargo bench -p telemetry-policy --bench scrub`.

// A benchmark that cannot set itself up should stop loudly; it notes event sizes on stderr.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telemetry_model::{
    Catalog, CountBucket, DurationBucket, EncodedEvent, EventType, Name, RunOutcome, Section,
    Version,
};
use telemetry_policy::{EnvSnapshot, MachineIdentity, Scrubber};
use telemetry_testkit::fixtures;

const FLOWKIT_CATALOG: &str = include_str!("../../flowkit/catalog.toml");

/// The scrubber the facade builds for flowkit on this machine.
fn scrubber(catalog: &Catalog) -> Scrubber {
    let mut allowed: Vec<String> = Section::ALL
        .iter()
        .flat_map(|section| catalog.entries(*section))
        .map(|entry| entry.name.to_string())
        .collect();
    // The schema's own words (`other` among them) every scrubber exempts by itself.
    allowed.extend(["flowkit", "rust", "python"].map(str::to_owned));
    let scrubber = Scrubber::new(
        MachineIdentity::detect(&EnvSnapshot::from_process()),
        allowed.clone(),
    );
    // The start-up check the facade makes of every declared name: on a machine whose names
    // are in flowkit's catalog, the benchmark would measure events that are not sent.
    for name in &allowed {
        assert_eq!(scrubber.refuses_name(name), None, "{name}");
    }
    scrubber
}

fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// A run event as flowkit sends it: three features, an outcome, a duration bucket.
fn run_event() -> EncodedEvent {
    let mut event = fixtures::run_event();
    event.features = ["sequential_task_runner", "retries", "caching"]
        .map(name)
        .into_iter()
        .collect();
    event.outcome = Some(RunOutcome::Completed);
    EncodedEvent::encode(&event).unwrap()
}

/// The same run from an SDK release candidate on a Python release candidate.
fn pre_release_run_event() -> EncodedEvent {
    let mut event = run_event().decode().unwrap();
    event.sdk_version = Version::new("1.0.0-rc.1").unwrap();
    event.runtime = name("python");
    event.runtime_version = Version::new("3.13.0rc1").unwrap();
    EncodedEvent::encode(&event).unwrap()
}

/// A busy process's summary: most sections filled.
fn summary_event() -> EncodedEvent {
    let mut event = fixtures::run_event();
    event.event_type = EventType::SdkUsage;
    event.outcome = None;
    event.duration = DurationBucket::OneToFiveMinutes;
    event.features = [
        "async_tasks",
        "caching",
        "concurrent_task_runner",
        "parameters",
        "retries",
        "sequential_task_runner",
        "task_timeouts",
    ]
    .map(name)
    .into_iter()
    .collect();
    event.block_types = ["secret"].map(name).into_iter().collect();
    event.commands = ["simulate"].map(name).into_iter().collect();
    event.metrics = [
        ("flow_runs", CountBucket::HundredToThousand),
        ("flows_defined", CountBucket::TwoToFive),
        ("task_runs", CountBucket::OverThousand),
        ("tasks_defined", CountBucket::SixToTen),
        ("task_retries", CountBucket::ElevenToFifty),
        ("cache_hits", CountBucket::FiftyOneToHundred),
    ]
    .map(|(metric, bucket)| (name(metric), bucket))
    .into_iter()
    .collect();
    event.errors.config_errors = ["invalid_parameter"].map(name).into_iter().collect();
    event.errors.exception_types = [
        ("timeout_error", CountBucket::TwoToFive),
        ("value_error", CountBucket::One),
    ]
    .map(|(exception, bucket)| (name(exception), bucket))
    .into_iter()
    .collect();
    event.concurrency_peak = Some(CountBucket::TwoToFive);
    EncodedEvent::encode(&event).unwrap()
}

fn check_json(c: &mut Criterion) {
    let catalog = Catalog::from_toml(FLOWKIT_CATALOG).unwrap();
    let scrubber = scrubber(&catalog);
    let mut group = c.benchmark_group("scrub_check_json");
    group.throughput(Throughput::Elements(1));
    for (label, event) in [
        ("run_event", run_event()),
        ("pre_release_run_event", pre_release_run_event()),
        ("summary_event", summary_event()),
    ] {
        // A benchmark of a check that rejects its input would measure the wrong path.
        assert_eq!(
            scrubber.check_json(event.json()),
            Ok(()),
            "{}",
            event.json()
        );
        eprintln!(
            "note: scrub_check_json/{label}: {} bytes",
            event.json().len()
        );
        group.bench_function(label, |b| {
            b.iter(|| scrubber.check_json(black_box(event.json())));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(2));
    targets = check_json
}
criterion_main!(benches);
