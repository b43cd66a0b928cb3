//! The PostgreSQL half of the ingest benchmark: the same clients and batches through one and
//! through two collectors sharing one database, against a plain binary `COPY` of the same rows
//! into the same server, in the same run as the SQLite figures.
//!
//! Each run gets a new database on the benchmark's own server ([`PrivatePostgres`] with
//! [`Durability::Production`]). The two collectors are two [`Server`](telemetry_collector::server::Server)s in
//! this process, each on its own thread and runtime with its own [`PostgresStore`] and pool,
//! the eight clients alternating between them.
//!
//! The baseline is one `COPY … FROM STDIN (FORMAT binary)` per batch of 100, each its own
//! transaction (so one synced commit per batch, as the SQLite baseline has), into one table with
//! the store's event columns keyed by `(event_id, day)` and the names as one JSON text column:
//! from one connection, batch after batch, as the SQLite baseline writes; and, for comparison,
//! from eight connections at once, one per client's share of the batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use telemetry_collector::validate::Catalogs;
use telemetry_model::Event;
use tokio::sync::Barrier;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use super::{
    BATCH, BATCHES_PER_CLIENT, CLIENTS, CollectorRun, GroupCounter, GroupCounts, Pki,
    RunningCollector, StoreAt, Workload, median, millis, percentile, send_round, wire_name,
};
use telemetry_testkit::postgres::{Durability, PrivatePostgres, binaries};

/// Connections the second `COPY` baseline writes from at once, one per client.
const COPY_CONNECTIONS: usize = CLIENTS;

const COPY_TABLE: &str = "CREATE TABLE copy_events (
    event_id uuid NOT NULL,
    day integer NOT NULL,
    session_id uuid NOT NULL,
    sdk text NOT NULL,
    sdk_version text NOT NULL,
    library_version text NOT NULL,
    runtime text NOT NULL,
    runtime_version text NOT NULL,
    os text NOT NULL,
    arch text NOT NULL,
    interface text NOT NULL,
    ci boolean NOT NULL,
    deployment text NOT NULL,
    hour bigint NOT NULL,
    event_type text NOT NULL,
    duration text NOT NULL,
    concurrency_peak text,
    outcome text,
    names text NOT NULL,
    PRIMARY KEY (event_id, day)
)";

const COPY_STATEMENT: &str = "COPY copy_events (event_id, day, session_id, sdk, sdk_version,
    library_version, runtime, runtime_version, os, arch, interface, ci, deployment, hour,
    event_type, duration, concurrency_peak, outcome, names) FROM STDIN (FORMAT binary)";

const COPY_TYPES: [Type; 19] = [
    Type::UUID,
    Type::INT4,
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// What one collector run on PostgreSQL measured.
pub struct PostgresCollectorRun {
    pub run: CollectorRun,
    pub groups: GroupCounts,
    /// CPU seconds of the server (postmaster and every backend) and of this process (collectors
    /// and clients), and the wall time, over the whole round including the warm-up.
    pub server_cpu: f64,
    pub process_cpu: f64,
    pub wall: Duration,
}

/// The benchmark's server and the runs made on it.
pub struct PostgresBench {
    server: PrivatePostgres,
    databases: usize,
    pub one_collector: Vec<PostgresCollectorRun>,
    pub two_collectors: Vec<PostgresCollectorRun>,
    pub copy_one_connection: Vec<Duration>,
    pub copy_eight_connections: Vec<Duration>,
    /// The 1-minute load average at the start and end of every run.
    pub load_averages: Vec<f64>,
}

impl PostgresBench {
    /// Starts the server and checks it is durable, or says why the PostgreSQL part is skipped.
    pub fn start() -> Option<PostgresBench> {
        let Some(bin) = binaries() else {
            println!(
                "PostgreSQL ingest skipped: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
            );
            return None;
        };
        let server = PrivatePostgres::start(bin, Durability::Production);
        let bench = PostgresBench {
            server,
            databases: 0,
            one_collector: Vec::new(),
            two_collectors: Vec::new(),
            copy_one_connection: Vec::new(),
            copy_eight_connections: Vec::new(),
            load_averages: Vec::new(),
        };
        block_on(async {
            let client = connect(&bench.server.url("postgres")).await;
            for setting in ["fsync", "synchronous_commit", "full_page_writes"] {
                let value: String = client
                    .query_one(&format!("SHOW {setting}"), &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(
                    value, "on",
                    "the benchmark's server must run with {setting} on"
                );
            }
        });
        Some(bench)
    }

    /// The four runs of a round, in an order that alternates with the round.
    pub fn round(
        &mut self,
        round: usize,
        workload: &Workload,
        pki: &Pki,
        catalogs: &Arc<Catalogs>,
        groups: &GroupCounter,
    ) {
        let mut steps: [u8; 4] = [0, 1, 2, 3];
        if round % 2 == 1 {
            steps.reverse();
        }
        for step in steps {
            self.load_averages.push(load_average());
            match step {
                0 => {
                    let run = self.collector_run(workload, pki, catalogs, groups, 1);
                    self.one_collector.push(run);
                }
                1 => {
                    let run = self.collector_run(workload, pki, catalogs, groups, 2);
                    self.two_collectors.push(run);
                }
                2 => {
                    let elapsed = self.copy_run(workload, 1);
                    self.copy_one_connection.push(elapsed);
                }
                _ => {
                    let elapsed = self.copy_run(workload, COPY_CONNECTIONS);
                    self.copy_eight_connections.push(elapsed);
                }
            }
            self.load_averages.push(load_average());
        }
    }

    /// A new empty database; returns its URL.
    fn create_database(&mut self) -> String {
        self.databases += 1;
        let name = format!("ingest_{}", self.databases);
        block_on(async {
            connect(&self.server.url("postgres"))
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
        });
        self.server.url(&name)
    }

    fn collector_run(
        &mut self,
        workload: &Workload,
        pki: &Pki,
        catalogs: &Arc<Catalogs>,
        groups: &GroupCounter,
        collectors: usize,
    ) -> PostgresCollectorRun {
        let url = self.create_database();
        // One after another: each migrates (the second finds it done) and registers the catalogs.
        let running: Vec<RunningCollector> = (0..collectors)
            .map(|_| RunningCollector::start(pki, catalogs, StoreAt::Postgres(url.clone())))
            .collect();
        let addresses: Vec<_> = running.iter().map(|collector| collector.address).collect();
        let postmaster = self.server.pid();
        let (server_before, process_before) = (server_cpu_seconds(postmaster), own_cpu_seconds());
        let groups_before = groups.snapshot();
        let started = Instant::now();
        let run = send_round(workload, pki, &addresses);
        let wall = started.elapsed();
        let (server_after, process_after) = (server_cpu_seconds(postmaster), own_cpu_seconds());
        let groups = groups.snapshot().since(groups_before);
        for collector in running {
            collector.stop();
        }
        // Every event of the round is stored, once.
        assert_eq!(count(&url, "events"), workload.events().count());
        PostgresCollectorRun {
            run,
            groups,
            server_cpu: server_after - server_before,
            process_cpu: process_after - process_before,
            wall,
        }
    }

    /// The `COPY` baseline from `connections` connections at once, batch `i` on connection
    /// `i % connections`. Returns the time of the timed batches.
    fn copy_run(&mut self, workload: &Workload, connections: usize) -> Duration {
        let url = self.create_database();
        let elapsed = block_on(async {
            connect(&url).await.batch_execute(COPY_TABLE).await.unwrap();
            let start = Arc::new(Barrier::new(connections + 1));
            let (warm_up, timed) = workload.batches.split_at(workload.warm_up_len());
            let writers: Vec<_> = (0..connections)
                .map(|connection| {
                    let share = |batches: &[Vec<Event>]| -> Vec<Vec<Event>> {
                        batches
                            .iter()
                            .skip(connection)
                            .step_by(connections)
                            .cloned()
                            .collect()
                    };
                    let (warm_up, timed) = (share(warm_up), share(timed));
                    let url = url.clone();
                    let start = Arc::clone(&start);
                    tokio::spawn(async move {
                        let client = connect(&url).await;
                        for batch in &warm_up {
                            copy_batch(&client, batch).await;
                        }
                        start.wait().await;
                        for batch in &timed {
                            copy_batch(&client, batch).await;
                        }
                    })
                })
                .collect();
            start.wait().await;
            let started = Instant::now();
            for writer in writers {
                writer.await.unwrap();
            }
            started.elapsed()
        });
        assert_eq!(count(&url, "copy_events"), workload.events().count());
        elapsed
    }
}

/// One batch as one `COPY`, in a transaction of its own.
async fn copy_batch(client: &Client, batch: &[Event]) {
    let sink = client.copy_in::<_, Bytes>(COPY_STATEMENT).await.unwrap();
    let writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    let mut writer = writer;
    for event in batch {
        // Converting an event to its columns is timed, as it is in the store.
        let event_id: Uuid = event.event_id.to_string().parse().unwrap();
        let session_id: Uuid = event.session_id.to_string().parse().unwrap();
        let hour = event.timestamp.unix_seconds() as i64;
        let day = (hour / 86_400) as i32;
        let names = serde_json::to_string(&(
            &event.features,
            &event.integrations,
            &event.block_types,
            &event.commands,
            &event.metrics,
            &event.errors,
        ))
        .unwrap();
        let (os, arch, interface, deployment) = (
            wire_name(&event.os),
            wire_name(&event.arch),
            wire_name(&event.interface),
            wire_name(&event.deployment),
        );
        let (event_type, duration) = (wire_name(&event.event_type), wire_name(&event.duration));
        let peak = event.concurrency_peak.as_ref().map(wire_name);
        let outcome = event.outcome.as_ref().map(wire_name);
        writer
            .as_mut()
            .write(&[
                &event_id,
                &day,
                &session_id,
                &event.sdk_name.as_str(),
                &event.sdk_version.as_str(),
                &event.library_version.as_str(),
                &event.runtime.as_str(),
                &event.runtime_version.as_str(),
                &os,
                &arch,
                &interface,
                &event.ci,
                &deployment,
                &hour,
                &event_type,
                &duration,
                &peak,
                &outcome,
                &names,
            ])
            .await
            .unwrap();
    }
    let rows = writer.finish().await.unwrap();
    assert_eq!(rows, BATCH as u64);
}

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A connection on the current runtime, driven by a task of its own.
async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn count(url: &str, table: &str) -> usize {
    block_on(async {
        let rows: i64 = connect(url)
            .await
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        rows as usize
    })
}

/// The 1-minute load average.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `/proc/<pid>/stat`'s parent id, CPU ticks of the process, and CPU ticks of its reaped
/// children. Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
fn process_ticks(pid: &str) -> Option<(u32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some((
        fields.get(1)?.parse().ok()?,
        number(11)? + number(12)?,
        number(13)? + number(14)?,
    ))
}

const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by the server: the postmaster, its live children (backends,
/// WAL writer, checkpointer, ...) and its children that have exited.
fn server_cpu_seconds(postmaster: u32) -> f64 {
    let mut ticks = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        let Some((parent, own, reaped)) = process_ticks(pid) else {
            continue;
        };
        if pid == postmaster.to_string() {
            ticks += own + reaped;
        } else if parent == postmaster {
            ticks += own;
        }
    }
    ticks as f64 / TICKS_PER_SECOND
}

/// CPU seconds used so far by this process, all threads.
fn own_cpu_seconds() -> f64 {
    process_ticks("self").map_or(f64::NAN, |(_, own, _)| own as f64 / TICKS_PER_SECOND)
}

impl PostgresBench {
    /// Prints the PostgreSQL table, next to the SQLite store's rate of the same run, and adds
    /// the figures to the note's lines.
    pub fn report(&self, sqlite_collector_rate: f64, lines: &mut Vec<String>) {
        let timed_events = (CLIENTS * BATCHES_PER_CLIENT * BATCH) as f64;
        let rate = |elapsed: Duration| timed_events / elapsed.as_secs_f64();
        let collector_rates = |runs: &[PostgresCollectorRun]| -> Vec<f64> {
            runs.iter().map(|run| rate(run.run.elapsed)).collect()
        };
        let one_rates = collector_rates(&self.one_collector);
        let two_rates = collector_rates(&self.two_collectors);
        let copy_rates: Vec<f64> = self.copy_one_connection.iter().copied().map(rate).collect();
        let copy_eight_rates: Vec<f64> = self
            .copy_eight_connections
            .iter()
            .copied()
            .map(rate)
            .collect();
        let (one, two, copy, copy_eight) = (
            median(&one_rates),
            median(&two_rates),
            median(&copy_rates),
            median(&copy_eight_rates),
        );
        let latencies = |runs: &[PostgresCollectorRun]| -> Vec<Duration> {
            let mut all: Vec<Duration> = runs
                .iter()
                .flat_map(|run| run.run.latencies.iter().copied())
                .collect();
            all.sort_unstable();
            all
        };
        let (one_latencies, two_latencies) = (
            latencies(&self.one_collector),
            latencies(&self.two_collectors),
        );
        let requests_per_group = |runs: &[PostgresCollectorRun]| {
            let (requests, commits) = runs.iter().fold((0, 0), |(requests, commits), run| {
                (requests + run.groups.requests, commits + run.groups.commits)
            });
            requests as f64 / commits.max(1) as f64
        };
        // CPU seconds per second of the round, summed over the rounds.
        let cpu_share = |runs: &[PostgresCollectorRun], of: fn(&PostgresCollectorRun) -> f64| {
            let wall: f64 = runs.iter().map(|run| run.wall.as_secs_f64()).sum();
            runs.iter().map(of).sum::<f64>() / wall
        };
        let load_min = self
            .load_averages
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let load_max = self.load_averages.iter().copied().fold(0.0, f64::max);

        println!(
            "\ncollector ingest on PostgreSQL (fsync on, synchronous_commit on): the same workload, median of {} rounds\n",
            one_rates.len()
        );
        println!("| what | events/s | of COPY, one connection |");
        println!("|---|---|---|");
        for (what, events_per_second) in [
            (
                "COPY (binary), one per batch, one connection (baseline)",
                copy,
            ),
            (
                "COPY (binary), one per batch, 8 connections at once",
                copy_eight,
            ),
            ("1 collector on PostgreSQL, 8 clients", one),
            ("2 collectors on one PostgreSQL, 4 clients each", two),
            (
                "1 collector on SQLite (above), 8 clients",
                sqlite_collector_rate,
            ),
        ] {
            println!(
                "| {what} | {events_per_second:.0} | {:.2}x |",
                events_per_second / copy
            );
        }
        for (what, sorted, runs) in [
            ("1 collector", &one_latencies, &self.one_collector),
            ("2 collectors", &two_latencies, &self.two_collectors),
        ] {
            println!(
                "\n{what}: batch latency p50 {:.1} ms, p99 {:.1} ms; {:.2} requests per group commit; CPU: server {:.2}, benchmark process {:.2} (cores busy)",
                millis(percentile(sorted, 50)),
                millis(percentile(sorted, 99)),
                requests_per_group(runs),
                cpu_share(runs, |run| run.server_cpu),
                cpu_share(runs, |run| run.process_cpu),
            );
        }
        println!("load average (1 min) during the PostgreSQL runs: {load_min:.2} to {load_max:.2}");

        lines.extend([
            format!("postgres_one_collector_events_per_second={one:.0}"),
            format!("postgres_two_collectors_events_per_second={two:.0}"),
            format!("postgres_copy_events_per_second={copy:.0}"),
            format!("postgres_copy_8_connections_events_per_second={copy_eight:.0}"),
            format!("postgres_ratio_one_collector={:.3}", one / copy),
            format!("postgres_ratio_two_collectors={:.3}", two / copy),
            format!(
                "postgres_one_collector_latency_p50_ms={:.3}",
                millis(percentile(&one_latencies, 50))
            ),
            format!(
                "postgres_one_collector_latency_p99_ms={:.3}",
                millis(percentile(&one_latencies, 99))
            ),
            format!(
                "postgres_two_collectors_latency_p50_ms={:.3}",
                millis(percentile(&two_latencies, 50))
            ),
            format!(
                "postgres_two_collectors_latency_p99_ms={:.3}",
                millis(percentile(&two_latencies, 99))
            ),
            format!(
                "postgres_one_collector_requests_per_group_commit={:.2}",
                requests_per_group(&self.one_collector)
            ),
            format!(
                "postgres_two_collectors_requests_per_group_commit={:.2}",
                requests_per_group(&self.two_collectors)
            ),
            format!(
                "postgres_one_collector_server_cpu_cores={:.2}",
                cpu_share(&self.one_collector, |run| run.server_cpu)
            ),
            format!(
                "postgres_one_collector_process_cpu_cores={:.2}",
                cpu_share(&self.one_collector, |run| run.process_cpu)
            ),
            format!(
                "postgres_two_collectors_server_cpu_cores={:.2}",
                cpu_share(&self.two_collectors, |run| run.server_cpu)
            ),
            format!(
                "postgres_two_collectors_process_cpu_cores={:.2}",
                cpu_share(&self.two_collectors, |run| run.process_cpu)
            ),
            format!("postgres_load_average_min={load_min:.2}"),
            format!("postgres_load_average_max={load_max:.2}"),
        ]);
        for round in 0..one_rates.len() {
            lines.extend([
                format!(
                    "round{}_postgres_one_collector_events_per_second={:.0}",
                    round + 1,
                    one_rates[round]
                ),
                format!(
                    "round{}_postgres_two_collectors_events_per_second={:.0}",
                    round + 1,
                    two_rates[round]
                ),
                format!(
                    "round{}_postgres_copy_events_per_second={:.0}",
                    round + 1,
                    copy_rates[round]
                ),
                format!(
                    "round{}_postgres_copy_8_connections_events_per_second={:.0}",
                    round + 1,
                    copy_eight_rates[round]
                ),
            ]);
        }
    }
}
