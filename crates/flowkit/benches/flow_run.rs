//! The plan's bar, "under 1 ms overhead per flow run": flowkit running a small three-task flow
//! with telemetry off and on, and the wall time of the real `flowkit` command.
//!
//! - `flow_run`: `FlowKit::run` back to back (`off`, `on`), and one run at a time with a
//!   pause before each (`off_paced`, `on_paced`), so that each run's record finds the
//!   telemetry worker asleep, as it does in a program whose flows take more than microseconds.
//!   The overhead per run is `on` minus `off`.
//! - `flowkit_command`: `flowkit telemetry status` in a fresh home, and `flowkit --version`
//!   for the cost of starting the process at all, each as a child process.
//!
//! Run with `cargo bench -p flowkit --bench flow_run`.

// A benchmark that cannot set itself up should stop loudly; it reports drops on stderr.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use flowkit::{Flow, FlowKit, Params, Task};
use telemetry::{EnvSnapshot, Interface, NullTransport, RunOutcome, TelemetryConfig};

/// Runs measured per sample in the paced variants.
const PACED_PER_SAMPLE: u64 = 2_000;

/// The pause before each paced run: long enough for the worker to handle the last record.
const PAUSE: Duration = Duration::from_micros(30);

fn config(env: &[(&str, &str)]) -> TelemetryConfig {
    flowkit::telemetry_config(None, Interface::Programmatic)
        .unwrap()
        .env(EnvSnapshot::from_pairs(env.iter().copied()))
        .policy_path("/nonexistent/flowkit-bench/telemetry-policy.toml")
}

/// Telemetry off: an empty environment and no state directory.
fn kit_off() -> FlowKit {
    let kit = FlowKit::start(&config(&[]));
    assert!(!kit.telemetry().is_enabled());
    kit
}

/// Telemetry on, in memory, delivered to a transport that discards.
fn kit_on() -> (FlowKit, Arc<NullTransport>) {
    let transport = Arc::new(NullTransport::new());
    let kit = FlowKit::start(
        &config(&[
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
            ("FLOWKIT_SDK_TELEMETRY_BUFFER", "memory"),
        ])
        .transport(Arc::clone(&transport) as _),
    );
    assert!(kit.telemetry().is_enabled());
    (kit, transport)
}

/// Three small tasks, one with retries, as a user would write them.
fn flow() -> Flow {
    Flow::new("nightly-etl")
        .task(Task::new("extract", |_| Ok("rows".into())))
        .task(
            Task::new("transform", |context| Ok(context.attempt.into())).retries(2, Duration::ZERO),
        )
        .task(Task::new("load", |_| Ok(true.into())))
}

/// Where benchmarks leave what criterion does not record; `cargo xtask bench` prints it.
fn note(line: &str) {
    eprintln!("note: {line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-notes");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("flow_run.txt");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    let _ = std::fs::write(path, text);
}

fn pause() {
    let until = Instant::now() + PAUSE;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Times one run at a time with a pause before each, for at most [`PACED_PER_SAMPLE`] runs,
/// scaled to criterion's count.
fn paced(iters: u64, mut action: impl FnMut()) -> Duration {
    let count = iters.min(PACED_PER_SAMPLE);
    let mut total = Duration::ZERO;
    for _ in 0..count {
        pause();
        let start = Instant::now();
        action();
        total += start.elapsed();
    }
    Duration::from_secs_f64(total.as_secs_f64() * iters as f64 / count as f64)
}

fn flow_run(c: &mut Criterion) {
    let flow = flow();
    let params = Params::new();
    let _ = std::fs::remove_file(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("bench-notes")
            .join("flow_run.txt"),
    );
    let mut group = c.benchmark_group("flow_run");
    let off = kit_off();
    let (on, transport) = kit_on();
    assert_eq!(off.run(&flow, &params).outcome, RunOutcome::Completed);
    group.bench_function("off", |b| b.iter(|| off.run(black_box(&flow), &params)));
    let mut runs = 0u64;
    group.bench_function("on", |b| {
        b.iter(|| {
            runs += 1;
            on.run(black_box(&flow), &params)
        });
    });
    let dropped = on.telemetry().dropped_records();
    let _ = on.telemetry().flush(Duration::from_secs(60));
    // A filter that skipped the benchmark leaves nothing to report.
    if runs > 0 {
        note(&format!(
            "flow_run/on: {runs} runs, {dropped} records dropped at the full queue, {} events delivered",
            transport.accepted()
        ));
    }
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("off_paced", |b| {
        b.iter_custom(|iters| {
            paced(iters, || {
                black_box(off.run(&flow, &params));
            })
        });
    });
    let before = on.telemetry().dropped_records();
    let mut paced_runs = 0u64;
    group.bench_function("on_paced", |b| {
        b.iter_custom(|iters| {
            paced(iters, || {
                paced_runs += 1;
                black_box(on.run(&flow, &params));
            })
        });
    });
    if paced_runs > 0 {
        note(&format!(
            "flow_run/on_paced: {paced_runs} runs, {} records dropped",
            on.telemetry().dropped_records() - before
        ));
    }
    group.finish();
}

fn flowkit_command(c: &mut Criterion) {
    let mut group = c.benchmark_group("flowkit_command");
    group.sample_size(20);
    let home = tempfile::tempdir().unwrap();
    let flowkit = |args: &[&str]| {
        let status = Command::new(env!("CARGO_BIN_EXE_flowkit"))
            .args(args)
            .env("FLOWKIT_HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "flowkit {args:?} failed: {status}");
    };
    group.bench_function("version", |b| b.iter(|| flowkit(&["--version"])));
    group.bench_function("telemetry_status", |b| {
        b.iter(|| flowkit(&["telemetry", "status"]));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(2));
    targets = flow_run, flowkit_command
}
criterion_main!(benches);
