//! Throughput of the SQLite spool next to plain rusqlite doing the same work with the same
//! PRAGMAs, measured in the same run: appending batches of 100 events, and claiming plus
//! acknowledging them. `docs/performance.md` records the results and how to read them.
//!
//! Run with `cargo bench -p telemetry-buffer --features sqlite --bench spool`.

// A benchmark that cannot set up its files should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, TransactionBehavior, params};
use telemetry_buffer::{Buffer, SPOOL_FILE_NAME, SpoolLimits, SqliteSpool};
use telemetry_model::{EncodedEvent, EventId};
use telemetry_testkit::fixtures::encoded_events;

const BATCH: usize = 100;

/// Limits the benchmark never reaches, so nothing is dropped while it measures.
fn roomy() -> SpoolLimits {
    SpoolLimits {
        max_events: usize::MAX,
        max_bytes: u64::MAX,
        ..SpoolLimits::default()
    }
}

fn batches(count: u64) -> Vec<Vec<EncodedEvent>> {
    (0..count).map(|_| encoded_events(BATCH)).collect()
}

/// The baseline: one table keyed by event id, the spool's PRAGMAs, nothing else.
fn baseline(path: &Path) -> Connection {
    let connection = Connection::open(path).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    connection
        .execute_batch(
            "PRAGMA synchronous = NORMAL;
             CREATE TABLE events (event_id TEXT PRIMARY KEY, json TEXT NOT NULL);",
        )
        .unwrap();
    connection
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
fn baseline_take(connection: &mut Connection) -> Vec<(String, String)> {
    let tx = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let rows: Vec<(i64, String, String)> = {
        let mut select = tx
            .prepare("SELECT rowid, event_id, json FROM events ORDER BY rowid LIMIT ?1")
            .unwrap();
        select
            .query_map([BATCH as i64], |row| {
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
    rows.into_iter().map(|(_, id, json)| (id, json)).collect()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_100");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Every sample starts from a new file and does the same number of batches, so samples
    // measure the same work (a growing file would make later, longer samples slower).
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("spool", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let spool = SqliteSpool::open(dir.path().join(SPOOL_FILE_NAME), roomy()).unwrap();
            let batches = batches(iters);
            let start = Instant::now();
            for batch in batches {
                spool.append(batch).unwrap();
            }
            start.elapsed()
        });
    });
    group.bench_function("rusqlite_baseline", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut connection = baseline(&dir.path().join("baseline.sqlite3"));
            let batches = batches(iters);
            let start = Instant::now();
            for batch in &batches {
                baseline_insert(&mut connection, batch);
            }
            start.elapsed()
        });
    });
    group.finish();
}

fn claim_acknowledge(c: &mut Criterion) {
    let mut group = c.benchmark_group("claim_ack_100");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Every sample starts from a new file and does the same number of batches, so samples
    // measure the same work (a growing file would make later, longer samples slower).
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("spool", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let spool = SqliteSpool::open(dir.path().join(SPOOL_FILE_NAME), roomy()).unwrap();
            for batch in batches(iters) {
                spool.append(batch).unwrap();
            }
            let start = Instant::now();
            for _ in 0..iters {
                let claim = spool.claim(BATCH).unwrap().unwrap();
                assert_eq!(claim.events.len(), BATCH);
                spool.acknowledge(claim.id).unwrap();
            }
            start.elapsed()
        });
    });
    group.bench_function("rusqlite_baseline", |b| {
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().unwrap();
            let mut connection = baseline(&dir.path().join("baseline.sqlite3"));
            for batch in batches(iters) {
                baseline_insert(&mut connection, &batch);
            }
            let start = Instant::now();
            for _ in 0..iters {
                assert_eq!(baseline_take(&mut connection).len(), BATCH);
            }
            start.elapsed()
        });
    });
    group.finish();
}

/// What the spool adds to every claim and the baseline does not: checking each event read
/// back with `EncodedEvent::from_stored`.
fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_100");
    group.throughput(Throughput::Elements(BATCH as u64));
    let stored: Vec<(EventId, String)> = encoded_events(BATCH)
        .iter()
        .map(|event| (event.id(), event.json().to_owned()))
        .collect();
    group.bench_function("from_stored", |b| {
        b.iter(|| {
            for (id, json) in &stored {
                EncodedEvent::from_stored(*id, json).unwrap();
            }
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(3));
    targets = append, claim_acknowledge, validate
}
criterion_main!(benches);
