//! Sustained end-to-end throughput: record N runs, then flush, so that every one of them is
//! turned into an event, scrubbed, buffered and handed to a transport that discards it.
//!
//! - `throughput_memory`: the in-memory buffer, with the worker's own stages measured apart
//!   (`stages/*`) to show where the time goes.
//! - `throughput_sqlite`: the SQLite spool in a temporary directory, next to plain rusqlite
//!   inserting the same event ids and JSON in transactions of 100, measured in the same run:
//!   into a table keyed by event id (the baseline of `crates/telemetry-buffer/benches/spool.rs`),
//!   into a table with no index at all (the cheapest way to write those bytes), and keyed
//!   again but also taking the rows out (select and delete 100 at a time), as delivery from the
//!   spool must.
//!
//! Run with `cargo bench -p telemetry --bench throughput`.

// A benchmark that cannot set itself up should stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, TransactionBehavior, params};
use telemetry::internals::buffer::{SPOOL_FILE_NAME, SpoolLimits, SqliteSpool};
use telemetry::internals::policy::{MachineIdentity, Scrubber};
use telemetry::{Catalog, EncodedEvent, MemoryBuffer, NullTransport, RunRecord, Telemetry};
use telemetry_testkit::fixtures;

/// Runs recorded per iteration through the in-memory path.
const MEMORY_RUNS: u64 = 200_000;

/// Runs recorded per iteration through the spool (SQLite is two orders of magnitude slower
/// per event than memory, so fewer keep the run short).
const SQLITE_RUNS: u64 = 20_000;

/// Events per transaction of the rusqlite baseline, as in the spool's own benchmark.
const BASELINE_BATCH: usize = 100;

/// Records `runs` runs and waits until the worker has delivered all of them.
fn record_and_flush(telemetry: &Telemetry, transport: &NullTransport, runs: u64) -> Duration {
    let run = common::sample_run(telemetry.catalog());
    record_and_flush_each(telemetry, transport, &[run], runs)
}

/// Records `runs` runs taken from `kinds` in turn and waits until the worker has delivered
/// all of them.
fn record_and_flush_each(
    telemetry: &Telemetry,
    transport: &NullTransport,
    kinds: &[RunRecord],
    runs: u64,
) -> Duration {
    let before = transport.accepted();
    let start = Instant::now();
    for run in kinds.iter().cycle().take(runs as usize) {
        telemetry.record_run(black_box(*run));
    }
    let report = telemetry.flush(Duration::from_secs(600)).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(telemetry.dropped_records(), 0, "the queue overflowed");
    assert_eq!(
        transport.accepted() - before,
        runs,
        "not every run was delivered: {report:?}"
    );
    elapsed
}

fn throughput_memory(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput_memory");
    group.throughput(Throughput::Elements(MEMORY_RUNS));
    group.sampling_mode(SamplingMode::Flat);
    // Ten iterations of a fraction of a second each: criterion's fewest samples.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let transport = Arc::new(NullTransport::new());
    // The queue and the buffer hold a whole iteration, so nothing is dropped: every run
    // recorded is an event delivered. (The one recording thread fills only its shard of the
    // queue, so the queue is as many iterations as it has shards at most.)
    let telemetry = common::enabled(
        Arc::clone(&transport) as _,
        Arc::new(MemoryBuffer::new(MEMORY_RUNS as usize)),
        MEMORY_RUNS as usize * telemetry::internals::MAX_QUEUE_SHARDS,
    );
    group.bench_function("record_to_null_transport", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| record_and_flush(&telemetry, &transport, MEMORY_RUNS))
                .sum()
        });
    });
    // The worst case: no run is like the one before, so each is serialized and scrubbed.
    let varied = common::varied_runs(telemetry.catalog());
    assert!(varied.len() >= 1_024, "{} kinds of run", varied.len());
    group.bench_function("varied_runs_to_null_transport", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| record_and_flush_each(&telemetry, &transport, &varied, MEMORY_RUNS))
                .sum()
        });
    });
    group.finish();
    drop(telemetry);

    // The worker's stages, one event at a time, on the same sample event.
    let mut group = c.benchmark_group("throughput_memory_stages");
    group.throughput(Throughput::Elements(1));
    let event = fixtures::run_event();
    let encoded = EncodedEvent::encode(&event).unwrap();
    let scrubber = scrubber();
    assert_eq!(scrubber.check_json(encoded.json()), Ok(()));
    group.bench_function("event_ids", |b| {
        b.iter(telemetry::internals::model::EventId::random);
    });
    group.bench_function("hour_timestamp", |b| {
        b.iter(telemetry::HourTimestamp::now);
    });
    group.bench_function("encode", |b| {
        b.iter(|| EncodedEvent::encode(black_box(&event)).unwrap());
    });
    group.bench_function("scrub", |b| {
        b.iter(|| scrubber.check_json(black_box(encoded.json())));
    });
    group.finish();
}

/// A scrubber like the worker's: the catalog's names and the schema's field names allowed.
fn scrubber() -> Scrubber {
    let catalog = Catalog::from_toml(common::CATALOG).unwrap();
    let mut allowed: Vec<String> = telemetry::Section::ALL
        .iter()
        .flat_map(|section| catalog.entries(*section))
        .map(|entry| entry.name.to_string())
        .collect();
    // The schema's own words (`other` among them) every scrubber exempts by itself.
    allowed.extend(["flowkit", "rust"].map(str::to_owned));
    let identity = MachineIdentity::detect(&telemetry::EnvSnapshot::from_process());
    Scrubber::new(identity, allowed)
}

/// The baseline: one table, keyed by event id or not indexed at all, the spool's PRAGMAs,
/// nothing else.
fn baseline(path: &Path, keyed: bool) -> Connection {
    let connection = Connection::open(path).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let table = if keyed {
        "CREATE TABLE events (event_id TEXT PRIMARY KEY, json TEXT NOT NULL)"
    } else {
        "CREATE TABLE events (event_id TEXT NOT NULL, json TEXT NOT NULL)"
    };
    connection
        .execute_batch(&format!("PRAGMA synchronous = NORMAL; {table};"))
        .unwrap();
    connection
}

/// Inserts `runs` events in transactions of [`BASELINE_BATCH`]; returns the time it took.
fn baseline_inserts(keyed: bool, runs: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut connection = baseline(&dir.path().join("baseline.sqlite3"), keyed);
    let events = fixtures::encoded_events(runs);
    let start = Instant::now();
    for batch in events.chunks(BASELINE_BATCH) {
        baseline_insert(&mut connection, batch);
    }
    start.elapsed()
}

fn baseline_insert(connection: &mut Connection, batch: &[EncodedEvent]) {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO events (event_id, json) VALUES (?1, ?2)")
            .unwrap();
        for event in batch {
            insert
                .execute(params![event.id().to_string(), event.json()])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Reads the 100 oldest rows and deletes them, in one transaction.
fn baseline_take(connection: &mut Connection) -> usize {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let rows: Vec<(i64, String, String)> = {
        let mut select = tx
            .prepare("SELECT rowid, event_id, json FROM events ORDER BY rowid LIMIT ?1")
            .unwrap();
        select
            .query_map([BASELINE_BATCH as i64], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let last = rows.last().map_or(0, |row| row.0);
    tx.execute("DELETE FROM events WHERE rowid <= ?1", [last])
        .unwrap();
    tx.commit().unwrap();
    black_box(rows).len()
}

fn throughput_sqlite(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput_sqlite");
    group.throughput(Throughput::Elements(SQLITE_RUNS));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("record_to_spool_to_null_transport", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // A new spool file for every iteration, as the baseline gets a new table.
                let dir = tempfile::tempdir().unwrap();
                let spool =
                    SqliteSpool::open(dir.path().join(SPOOL_FILE_NAME), SpoolLimits::default())
                        .unwrap();
                let transport = Arc::new(NullTransport::new());
                let telemetry = common::enabled(
                    Arc::clone(&transport) as _,
                    Arc::new(spool),
                    SQLITE_RUNS as usize * telemetry::internals::MAX_QUEUE_SHARDS,
                );
                total += record_and_flush(&telemetry, &transport, SQLITE_RUNS);
            }
            total
        });
    });
    group.bench_function("rusqlite_baseline_insert", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| baseline_inserts(true, SQLITE_RUNS as usize))
                .sum()
        });
    });
    group.bench_function("rusqlite_baseline_insert_unindexed", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| baseline_inserts(false, SQLITE_RUNS as usize))
                .sum()
        });
    });
    group.bench_function("rusqlite_baseline_insert_take", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let mut connection = baseline(&dir.path().join("baseline.sqlite3"), true);
                let events = fixtures::encoded_events(SQLITE_RUNS as usize);
                let start = Instant::now();
                for batch in events.chunks(BASELINE_BATCH) {
                    baseline_insert(&mut connection, batch);
                }
                let mut taken = 0;
                while taken < events.len() {
                    taken += baseline_take(&mut connection);
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(3));
    targets = throughput_memory, throughput_sqlite
}
criterion_main!(benches);
