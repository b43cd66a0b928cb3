//! Memory stays bounded: ten million runs recorded while the destination is down, with an
//! in-memory buffer of 10,000 events. Not a criterion benchmark: it reads its own resident
//! memory (`VmRSS`, and the peak `VmHWM`) from `/proc/self/status` before and after, and
//! prints them next to the configured bound.
//!
//! Run with `cargo bench -p telemetry --bench memory_bound`. It also writes its numbers to
//! `target/tmp/bench-notes/memory_bound.txt`, where `cargo xtask bench` reads them.

// A benchmark that cannot set itself up should stop loudly, and it reports on standard output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry::EncodedEvent;
use telemetry_testkit::fixtures;

const RUNS: u64 = 10_000_000;
const PACED_RUNS: u64 = 1_000_000;
const BUFFER_CAPACITY: usize = 10_000;

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    // Cargo passes `--bench`; a filter that names another benchmark skips this one.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "memory_bound".contains(f.as_str())) {
        return;
    }
    let event_bytes = fixtures::encoded_events(1)
        .first()
        .map_or(0, |event: &EncodedEvent| event.json().len());
    let rss_before = status_kib("VmRSS");
    let anon_before = status_kib("RssAnon");

    let telemetry = common::config(common::ENABLED)
        .transport(Arc::new(common::DeadTransport))
        .buffer_capacity(BUFFER_CAPACITY)
        .shutdown_timeout(Duration::from_millis(100))
        .start();
    assert!(telemetry.is_enabled());
    let run = common::sample_run(telemetry.catalog());
    // The fixed cost of telemetry being on: the worker thread, its runtime, one event.
    telemetry.record_run(run);
    let _ = telemetry.flush(Duration::from_secs(10));
    let rss_idle = status_kib("VmRSS");
    let anon_idle = status_kib("RssAnon");

    // The flood: as fast as one thread can record. The worker takes in what it can; the
    // queue is full for nearly all of it, so most records are dropped at the queue.
    let start = Instant::now();
    for _ in 0..RUNS {
        telemetry.record_run(black_box(run));
    }
    let flood = start.elapsed();
    let _ = telemetry.flush(Duration::from_secs(30));
    let dropped_at_queue = telemetry.dropped_records();
    let rss_after_flood = status_kib("VmRSS");
    let anon_after_flood = status_kib("RssAnon");

    // Then a million more at the worker's pace (as many as the smallest shard of the queue
    // holds, then a flush, which waits for the worker): every one becomes an event in the full
    // buffer, which drops its oldest, a hundred times over.
    let start = Instant::now();
    let chunk = (telemetry::DEFAULT_QUEUE_CAPACITY / telemetry::internals::MAX_QUEUE_SHARDS) as u64;
    for _ in 0..PACED_RUNS.div_ceil(chunk) {
        for _ in 0..chunk {
            telemetry.record_run(black_box(run));
        }
        let _ = telemetry.flush(Duration::from_secs(30));
    }
    let paced = start.elapsed();
    let status = telemetry.status();
    let rss_after = status_kib("VmRSS");
    let hwm_after = status_kib("VmHWM");
    let anon_after = status_kib("RssAnon");
    drop(telemetry);

    // What the configuration allows: the buffer's events (the JSON in its own allocation,
    // with the shared pointer's two counters and the allocator's header, rounded up to its
    // 16 bytes, and the event's own slot in the buffer's ring) and the queue's records.
    let per_event_heap = (event_bytes + 16 + 8).div_ceil(16) * 16;
    let buffer_bound_kib = ((BUFFER_CAPACITY * per_event_heap
        + BUFFER_CAPACITY * std::mem::size_of::<EncodedEvent>())
    .div_ceil(1024)) as u64;
    let queue_bound_kib = (telemetry::DEFAULT_QUEUE_CAPACITY
        * std::mem::size_of::<telemetry::RunRecord>())
    .div_ceil(1024) as u64;
    // The worker turns queued records into events a chunk at a time and appends each chunk
    // before the next, so a chunk's worth of events can exist beside a full buffer.
    let in_flight_bound_kib =
        (telemetry::internals::DRAIN_CHUNK * per_event_heap).div_ceil(1024) as u64;
    let lines = [
        format!("flood_runs={RUNS}"),
        format!("flood_seconds={:.3}", flood.as_secs_f64()),
        format!("flood_dropped_at_queue={dropped_at_queue}"),
        format!("paced_runs={}", PACED_RUNS.div_ceil(chunk) * chunk),
        format!("paced_seconds={:.3}", paced.as_secs_f64()),
        format!("buffer_capacity_events={BUFFER_CAPACITY}"),
        format!("event_json_bytes={event_bytes}"),
        format!("buffer_bound_kib={buffer_bound_kib}"),
        format!("queue_bound_kib={queue_bound_kib}"),
        format!("drain_chunk_bound_kib={in_flight_bound_kib}"),
        format!("pending_events={:?}", status.pending_events),
        format!("dropped_events={}", status.dropped_events),
        format!("failed_deliveries={}", status.failed_deliveries),
        format!("vm_rss_before_start_kib={rss_before}"),
        format!("vm_rss_enabled_idle_kib={rss_idle}"),
        format!("vm_rss_after_flood_kib={rss_after_flood}"),
        format!("vm_rss_after_kib={rss_after}"),
        format!("vm_hwm_kib={hwm_after}"),
        format!("rss_anon_before_start_kib={anon_before}"),
        format!("rss_anon_enabled_idle_kib={anon_idle}"),
        format!("rss_anon_after_flood_kib={anon_after_flood}"),
        format!("rss_anon_after_kib={anon_after}"),
        format!(
            "peak_growth_over_idle_kib={}",
            hwm_after.saturating_sub(rss_idle)
        ),
        format!(
            "peak_growth_over_start_kib={}",
            hwm_after.saturating_sub(rss_before)
        ),
    ];
    println!("memory_bound:");
    for line in &lines {
        println!("  {line}");
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-notes");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("memory_bound.txt"), lines.join("\n") + "\n");
}
