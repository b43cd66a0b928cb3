//! What recording costs the thread that records, with telemetry off and on, next to the
//! OpenTelemetry Rust SDK's log emit through its batch log processor in the same run.
//!
//! Groups (medians are read by `cargo xtask bench`; `docs/performance.md` has the results):
//! - `record_disabled`: `record_run` and `feature_used` on a handle that is off.
//! - `start_disabled`: `TelemetryConfig::start` when telemetry is off.
//! - `record_enabled`: back-to-back `record_run` into the in-memory path with the worker
//!   running (`telemetry_steady`), and the same for OpenTelemetry (`otel_steady`). When the
//!   worker cannot keep up the queue fills and further records are dropped, which is cheaper
//!   than an accepted record; how many were dropped is printed and written to the notes.
//! - `record_enabled_accepted`: every record is accepted, because the worker is stalled
//!   in its transport and consumes nothing: the cost of the enqueue alone, from one thread
//!   and from two at once.
//! - `record_enabled_idle_worker`: one record at a time with a pause between records, so
//!   each record finds the worker idle (the usual case for an SDK that records once per run).
//! - `record_enabled_two_threads`: two threads recording at once; the time is per record on
//!   each thread.
//! - `wake_breakdown`: why a record that finds the worker idle costs microseconds: the same
//!   paced send on bare channels whose receiving thread sleeps, with no telemetry code at all.
//! - `enqueue_breakdown`: a bare tokio bounded channel that nobody receives from, filled from
//!   one thread and from two, to tell the channel's own contention from the facade's.
//!
//! Run with `cargo bench -p telemetry --bench record`.

// A benchmark that cannot set itself up should stop loudly, and it reports what criterion
// cannot (how many records were dropped) on standard error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLogger, SdkLoggerProvider,
};
use telemetry::{Catalog, MemoryBuffer, NullTransport, RunRecord, Telemetry};

use common::GateTransport;

/// The queue between recording threads and the worker, for both libraries.
const QUEUE: usize = 65_536;

/// Records measured per sample where each record needs set-up the timer must not see.
const PACED_PER_SAMPLE: u64 = 2_000;

/// Records measured per sample into the stalled queue (they all stay queued until the end).
const ACCEPTED_PER_SAMPLE: u64 = 10_000;

/// The pause before each record of the idle-worker group: long enough for the worker to
/// turn the previous record into an event and go back to sleep.
const PAUSE: Duration = Duration::from_micros(30);

fn catalog() -> Catalog {
    Catalog::from_toml(common::CATALOG).unwrap()
}

fn run() -> RunRecord {
    common::sample_run(&catalog())
}

/// Where benchmarks leave what criterion does not record; `cargo xtask bench` prints it.
fn note(line: &str) {
    eprintln!("note: {line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-notes");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("record.txt");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(line);
    text.push('\n');
    let _ = std::fs::write(path, text);
}

/// An OpenTelemetry exporter that counts the records it is handed and discards them.
#[derive(Debug, Default)]
struct DiscardingExporter {
    exported: Arc<AtomicU64>,
}

impl LogExporter for DiscardingExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        self.exported
            .fetch_add(batch.iter().count() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// An OpenTelemetry logger provider with a batch log processor and a discarding exporter,
/// with the same queue size as the telemetry queue.
fn otel() -> (SdkLoggerProvider, SdkLogger, Arc<AtomicU64>) {
    let exported = Arc::new(AtomicU64::new(0));
    let exporter = DiscardingExporter {
        exported: Arc::clone(&exported),
    };
    let processor = BatchLogProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .build(),
        )
        .build();
    let provider = SdkLoggerProvider::builder()
        .with_log_processor(processor)
        .build();
    let logger = provider.logger("flowkit");
    (provider, logger, exported)
}

/// The same information as a run record: outcome, duration bucket and features.
#[inline]
fn otel_emit(logger: &SdkLogger) {
    let mut record = logger.create_log_record();
    record.set_event_name("run");
    record.set_severity_number(Severity::Info);
    record.add_attribute("outcome", black_box("completed"));
    record.add_attribute("duration", black_box("1_to_10_seconds"));
    record.add_attribute(
        "features",
        black_box("sequential_task_runner,retries,caching"),
    );
    logger.emit(record);
}

fn record_disabled(c: &mut Criterion) {
    let telemetry = common::disabled();
    let run = run();
    let retries = catalog().feature("retries").unwrap();
    let mut group = c.benchmark_group("record_disabled");
    group.bench_function("record_run", |b| {
        b.iter(|| telemetry.record_run(black_box(run)));
    });
    group.bench_function("feature_used", |b| {
        b.iter(|| telemetry.feature_used(black_box(retries)));
    });
    group.finish();
}

fn start_disabled(c: &mut Criterion) {
    let mut group = c.benchmark_group("start_disabled");
    // The brief's case: an empty environment, no state directory.
    let config = common::config(&[]);
    group.bench_function("empty_env", |b| {
        b.iter(|| {
            let telemetry = config.start();
            assert!(!telemetry.is_enabled());
            telemetry
        });
    });
    // What an SDK does at start-up: the process environment, a state directory without a
    // decision in it (so the state file is looked for), and the default policy path.
    let home = tempfile::tempdir().unwrap();
    let config = telemetry::TelemetryConfig::new("flowkit", "0.1.0", common::CATALOG, "FLOWKIT")
        .unwrap()
        .state_dir(home.path());
    group.bench_function("process_env_state_dir", |b| {
        b.iter(|| {
            let telemetry = config.start();
            assert!(!telemetry.is_enabled(), "unset FLOWKIT_SDK_TELEMETRY_*");
            telemetry
        });
    });
    group.finish();
}

fn record_enabled(c: &mut Criterion) {
    let run = run();
    let mut group = c.benchmark_group("record_enabled");

    let transport = Arc::new(NullTransport::new());
    let telemetry = common::enabled(
        Arc::clone(&transport) as _,
        Arc::new(MemoryBuffer::new(QUEUE)),
        QUEUE,
    );
    let mut recorded = 0u64;
    group.bench_function("telemetry_steady", |b| {
        b.iter(|| {
            recorded += 1;
            telemetry.record_run(black_box(run));
        });
    });
    report_telemetry(
        "record_enabled/telemetry_steady",
        &telemetry,
        &transport,
        recorded,
    );

    let (provider, logger, exported) = otel();
    let mut emitted = 0u64;
    group.bench_function("otel_steady", |b| {
        b.iter(|| {
            emitted += 1;
            otel_emit(&logger);
        });
    });
    report_otel("record_enabled/otel_steady", &provider, &exported, emitted);
    group.finish();
}

fn report_telemetry(name: &str, telemetry: &Telemetry, transport: &NullTransport, recorded: u64) {
    // A filter that skipped the benchmark leaves nothing to report.
    if recorded == 0 {
        return;
    }
    let dropped = telemetry.dropped_records();
    let report = telemetry.flush(Duration::from_secs(60));
    let delivered = transport.accepted();
    note(&format!(
        "{name}: recorded {recorded}, dropped at the full queue {dropped} ({:.1}%), delivered {delivered} (flush: {report:?})",
        percent(dropped, recorded)
    ));
}

fn report_otel(name: &str, provider: &SdkLoggerProvider, exported: &AtomicU64, emitted: u64) {
    if emitted == 0 {
        return;
    }
    let flushed = provider.force_flush();
    let exported = exported.load(Ordering::Relaxed);
    let dropped = emitted.saturating_sub(exported);
    note(&format!(
        "{name}: emitted {emitted}, dropped {dropped} ({:.1}%), exported {exported} (flush: {flushed:?})",
        percent(dropped, emitted)
    ));
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn record_enabled_accepted(c: &mut Criterion) {
    let run = run();
    let gate = Arc::new(GateTransport::default());
    let transport: Arc<dyn telemetry::Transport> = gate.clone();
    // A batch of one makes the first record send at once, and the send stalls the worker.
    let telemetry = common::config(&[
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "1"),
    ])
    .transport(transport)
    .buffer(Arc::new(MemoryBuffer::new(16)))
    .queue_capacity(1 << 24)
    .start();
    telemetry.record_run(run);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gate.worker_is_stalled() {
        assert!(
            Instant::now() < deadline,
            "the worker never reached the gate"
        );
        std::thread::yield_now();
    }
    let mut group = c.benchmark_group("record_enabled_accepted");
    // Each sample times a fixed number of records (all of them stay queued), so memory and
    // the work left for the worker stay small; the time is scaled to criterion's count.
    group.sampling_mode(SamplingMode::Flat);
    let mut recorded = 0u64;
    group.bench_function("telemetry", |b| {
        b.iter_custom(|iters| {
            let count = iters.min(ACCEPTED_PER_SAMPLE);
            recorded += count;
            let start = Instant::now();
            for _ in 0..count {
                telemetry.record_run(black_box(run));
            }
            scale(start.elapsed(), iters, count)
        });
    });
    // Two threads enqueueing at once; the time is per record on each thread.
    group.bench_function("telemetry_two_threads", |b| {
        b.iter_custom(|iters| {
            let count = iters.min(ACCEPTED_PER_SAMPLE / 2);
            recorded += 2 * count;
            scale(
                two_threads(count, || telemetry.record_run(black_box(run))),
                iters,
                count,
            )
        });
    });
    group.finish();
    let dropped = telemetry.dropped_records();
    gate.open();
    // The worker now turns the queued records into events for a buffer of 16, which keeps
    // only the newest: the clean-up is bounded in memory, not in time.
    let report = telemetry.flush(Duration::from_secs(300));
    if recorded == 0 {
        return;
    }
    note(&format!(
        "record_enabled_accepted: recorded {recorded} with the worker stalled, dropped at the queue {dropped} (clean-up flush: {report:?})"
    ));
}

/// `elapsed` for `count` records, as the time criterion expects for `iters`.
fn scale(elapsed: Duration, iters: u64, count: u64) -> Duration {
    Duration::from_secs_f64(elapsed.as_secs_f64() * iters as f64 / count.max(1) as f64)
}

fn pause() {
    let until = Instant::now() + PAUSE;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// Times `action` one call at a time with a pause before each, for at most
/// [`PACED_PER_SAMPLE`] calls, scaled to criterion's count.
fn paced(iters: u64, mut action: impl FnMut()) -> Duration {
    let count = iters.min(PACED_PER_SAMPLE);
    let mut total = Duration::ZERO;
    for _ in 0..count {
        pause();
        let start = Instant::now();
        action();
        total += start.elapsed();
    }
    scale(total, iters, count)
}

fn record_enabled_idle_worker(c: &mut Criterion) {
    let run = run();
    let mut group = c.benchmark_group("record_enabled_idle_worker");
    group.sampling_mode(SamplingMode::Flat);
    // The two clock reads around each call, measured the same way with nothing between.
    group.bench_function("timer_only", |b| {
        b.iter_custom(|iters| paced(iters, || {}));
    });
    let transport = Arc::new(NullTransport::new());
    let telemetry = common::enabled(
        Arc::clone(&transport) as _,
        Arc::new(MemoryBuffer::new(QUEUE)),
        QUEUE,
    );
    let recorded = AtomicU64::new(0);
    group.bench_function("telemetry", |b| {
        b.iter_custom(|iters| {
            paced(iters, || {
                recorded.fetch_add(1, Ordering::Relaxed);
                telemetry.record_run(black_box(run));
            })
        });
    });
    report_telemetry(
        "record_enabled_idle_worker/telemetry",
        &telemetry,
        &transport,
        recorded.load(Ordering::Relaxed),
    );
    let (provider, logger, exported) = otel();
    let emitted = AtomicU64::new(0);
    group.bench_function("otel", |b| {
        b.iter_custom(|iters| {
            paced(iters, || {
                emitted.fetch_add(1, Ordering::Relaxed);
                otel_emit(&logger);
            })
        });
    });
    report_otel(
        "record_enabled_idle_worker/otel",
        &provider,
        &exported,
        emitted.load(Ordering::Relaxed),
    );
    group.finish();
}

/// Runs `record` `iters` times on each of two threads that start together; the result is
/// the slower thread's time, so criterion reports the time per record on each thread.
fn two_threads(iters: u64, record: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        record();
                    }
                    start.elapsed()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .max()
            .unwrap_or_default()
    })
}

fn record_enabled_two_threads(c: &mut Criterion) {
    let run = run();
    let mut group = c.benchmark_group("record_enabled_two_threads");
    let transport = Arc::new(NullTransport::new());
    let telemetry = common::enabled(
        Arc::clone(&transport) as _,
        Arc::new(MemoryBuffer::new(QUEUE)),
        QUEUE,
    );
    let mut recorded = 0u64;
    group.bench_function("telemetry", |b| {
        b.iter_custom(|iters| {
            recorded += 2 * iters;
            two_threads(iters, || telemetry.record_run(black_box(run)))
        });
    });
    report_telemetry(
        "record_enabled_two_threads/telemetry",
        &telemetry,
        &transport,
        recorded,
    );
    let (provider, logger, exported) = otel();
    let mut emitted = 0u64;
    group.bench_function("otel", |b| {
        b.iter_custom(|iters| {
            emitted += 2 * iters;
            two_threads(iters, || otel_emit(&logger))
        });
    });
    report_otel(
        "record_enabled_two_threads/otel",
        &provider,
        &exported,
        emitted,
    );
    group.finish();
}

/// A receiving thread that sleeps until something arrives, as the telemetry worker does.
fn sleeping_receiver_tokio(
    enable_io: bool,
) -> (
    tokio::sync::mpsc::Sender<RunRecord>,
    std::thread::JoinHandle<u64>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<RunRecord>(QUEUE);
    let thread = std::thread::spawn(move || {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        if enable_io {
            builder.enable_all();
        } else {
            builder.enable_time();
        }
        let runtime = builder.build().unwrap();
        runtime.block_on(async move {
            let mut received = 0u64;
            while let Some(record) = receiver.recv().await {
                black_box(record);
                received += 1;
            }
            received
        })
    });
    (sender, thread)
}

fn wake_breakdown(c: &mut Criterion) {
    let run = run();
    let mut group = c.benchmark_group("wake_breakdown");
    group.sampling_mode(SamplingMode::Flat);
    for (name, enable_io) in [
        ("tokio_current_thread_io_driver", true),
        ("tokio_current_thread_no_io", false),
    ] {
        let (sender, thread) = sleeping_receiver_tokio(enable_io);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                paced(iters, || {
                    let _ = sender.try_send(black_box(run));
                })
            });
        });
        drop(sender);
        black_box(thread.join().unwrap());
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel::<RunRecord>(QUEUE);
    let thread = std::thread::spawn(move || receiver.iter().map(black_box).count());
    group.bench_function("std_sync_channel", |b| {
        b.iter_custom(|iters| {
            paced(iters, || {
                let _ = sender.try_send(black_box(run));
            })
        });
    });
    drop(sender);
    black_box(thread.join().unwrap());
    group.finish();
}

fn enqueue_breakdown(c: &mut Criterion) {
    let run = run();
    let mut group = c.benchmark_group("enqueue_breakdown");
    group.sampling_mode(SamplingMode::Flat);
    let (sender, receiver) = tokio::sync::mpsc::channel::<RunRecord>(1 << 24);
    group.bench_function("tokio_bounded_one_thread", |b| {
        b.iter_custom(|iters| {
            let count = iters.min(ACCEPTED_PER_SAMPLE);
            let start = Instant::now();
            for _ in 0..count {
                let _ = sender.try_send(black_box(run));
            }
            scale(start.elapsed(), iters, count)
        });
    });
    group.bench_function("tokio_bounded_two_threads", |b| {
        b.iter_custom(|iters| {
            let count = iters.min(ACCEPTED_PER_SAMPLE / 2);
            scale(
                two_threads(count, || {
                    let _ = sender.try_send(black_box(run));
                }),
                iters,
                count,
            )
        });
    });
    group.finish();
    drop(receiver);
}

/// Starts the notes of this run afresh.
fn clear_notes() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-notes")
        .join("record.txt");
    let _ = std::fs::remove_file(path);
}

fn notes_start(_: &mut Criterion) {
    clear_notes();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(2));
    targets = notes_start, record_disabled, start_disabled, record_enabled,
        record_enabled_accepted, record_enabled_idle_worker, record_enabled_two_threads,
        wake_breakdown, enqueue_breakdown
}
criterion_main!(benches);
