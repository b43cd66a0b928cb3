//! The collector's ingest rate: events per second stored over HTTPS, next to plain rusqlite
//! inserting the same events in the same run, and the latency of one batch under that load.
//!
//! Eight clients, each with its own keep-alive connection (hyper's HTTP/1.1 client over rustls,
//! trusting a CA made for the run), send gzip batches of 100 flowkit-like events one after
//! another, each as soon as the answer to the one before has arrived, to a real [`Server`] on
//! 127.0.0.1 with flowkit's catalog and a [`SqliteStore`] in a temporary directory. A batch's
//! latency runs from sending its request to having read the whole answer. The bodies are
//! serialized and compressed before the clock starts, so what is timed is the collector's work
//! (TLS, HTTP, inflating, parsing, checking, the group commit) and the clients' TLS and HTTP,
//! which share the machine's cores with it, as a load generator on the same host does.
//!
//! The baseline is plain rusqlite writing the same events from one thread, one transaction per
//! batch of 100, into one table keyed by event id, with the store's PRAGMAs (WAL,
//! `synchronous = FULL`): what the same rows cost with no network, no checks, no indexes for the
//! reports and no table of names. Between the two, the store alone: [`SqliteStore`]'s
//! [`Store::write`] called with one batch at a time, no HTTPS and no grouping.
//!
//! After each round's SQLite runs, the same events go to PostgreSQL (see `ingest/postgres.rs`):
//! through one collector and through two sharing a database, against a binary `COPY` of the
//! same rows, on a durable server the benchmark starts itself; without PostgreSQL server binaries
//! that part is skipped with a printed line.
//!
//! Not a criterion benchmark: a rate under concurrency is one long measurement rather than many
//! short iterations. It alternates the three for a few rounds, each with new events and new
//! files, prints a table, and writes its numbers to `target/tmp/bench-notes/collector_ingest.txt`,
//! where `cargo xtask bench` reads them. Run it alone with
//! `cargo bench -p telemetry-collector --bench ingest`.

// A benchmark that cannot set itself up should stop loudly, and it reports on standard output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs,
    unreachable_pub
)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rusqlite::{Connection, params};
use rustls_pki_types::ServerName;
use serde::Serialize;
use telemetry_collector::auth::Token;
use telemetry_collector::ingest::IngestConfig;
use telemetry_collector::server::{Server, ServerConfig};
use telemetry_collector::store::{PostgresStore, SqliteStore, Store, WriteJob};
use telemetry_collector::validate::{Catalogs, Limits};
use telemetry_model::wire::{SCHEMA_VERSION, WireBatch};
use telemetry_model::{
    Arch, Catalog, CountBucket, DeploymentStage, DurationBucket, Event, EventType, HourTimestamp,
    Interface, Name, OsFamily, RunOutcome, Section, SessionId, Version,
};
use telemetry_testkit::fixtures;
use telemetry_testkit::pki::TestPki;
use tokio::net::TcpStream;
use tokio::sync::{Barrier, oneshot};
use tokio_rustls::TlsConnector;

#[path = "ingest/postgres.rs"]
mod postgres;

/// Clients sending at once, each on its own connection.
const CLIENTS: usize = 8;
/// Events in one request, the SDK's default batch size.
const BATCH: usize = 100;
/// Timed batches each client sends in a round.
const BATCHES_PER_CLIENT: usize = 50;
/// Batches each client sends before the clock starts: the connection's first requests, the
/// store's first pages and the statement cache are not what is measured.
const WARM_UP_BATCHES: usize = 2;
/// Rounds of baseline, store alone and collector, in alternating order.
const ROUNDS: usize = 3;
/// Installations the events come from; each sends many events, as a real one does.
const SESSIONS: usize = 400;
/// The note's name in `target/tmp/bench-notes/`.
const NOTE: &str = "collector_ingest";

fn main() {
    // Cargo passes `--bench`; a filter that names another benchmark skips this one.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "ingest".contains(f.as_str())) {
        return;
    }
    let groups = GroupCounter::install();
    let catalog_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowkit/catalog.toml");
    let catalog = Catalog::from_toml(&std::fs::read_to_string(&catalog_path).unwrap()).unwrap();
    let mut catalogs = Catalogs::default();
    catalogs
        .load(&format!("flowkit={}", catalog_path.display()))
        .unwrap();
    let catalogs = Arc::new(catalogs);
    let pki = Pki::generate();
    let mut postgres = postgres::PostgresBench::start();

    let mut baseline = Vec::new();
    let mut store_alone = Vec::new();
    let mut collector = Vec::new();
    let mut latencies = Vec::new();
    let mut body_bytes = 0;
    let mut json_bytes = 0;
    let mut names = 0;
    for round in 0..ROUNDS {
        let workload = Workload::generate(round as u64, &catalog);
        body_bytes += workload.bodies.iter().map(Bytes::len).sum::<usize>();
        json_bytes += workload.json_bytes;
        names += workload.events().map(name_count).sum::<usize>();
        let scratch = tempfile::tempdir().unwrap();
        let mut run_collector = || {
            let groups_before = groups.snapshot();
            let run = collector_run(
                &workload,
                &pki,
                &catalogs,
                &scratch.path().join("collector"),
            );
            latencies.extend_from_slice(&run.latencies);
            collector.push((run.elapsed, groups.snapshot().since(groups_before)));
        };
        // Alternating the order spreads the machine's drift over all three.
        if round % 2 == 1 {
            run_collector();
        }
        baseline.push(baseline_run(&workload, &scratch.path().join("baseline")));
        store_alone.push(store_run(&workload, &scratch.path().join("store")));
        if round % 2 == 0 {
            run_collector();
        }
        if let Some(postgres) = &mut postgres {
            postgres.round(round, &workload, &pki, &catalogs, &groups);
        }
    }

    let timed_events = (CLIENTS * BATCHES_PER_CLIENT * BATCH) as f64;
    let rate = |elapsed: Duration| timed_events / elapsed.as_secs_f64();
    let baseline_rates: Vec<f64> = baseline.iter().copied().map(rate).collect();
    let store_rates: Vec<f64> = store_alone.iter().copied().map(rate).collect();
    let collector_rates: Vec<f64> = collector
        .iter()
        .map(|(elapsed, _)| rate(*elapsed))
        .collect();
    let (baseline_rate, store_rate, collector_rate) = (
        median(&baseline_rates),
        median(&store_rates),
        median(&collector_rates),
    );
    latencies.sort_unstable();
    let groups_total = collector
        .iter()
        .fold(GroupCounts::default(), |sum, (_, groups)| sum.plus(*groups));
    let batches = (ROUNDS * CLIENTS * (WARM_UP_BATCHES + BATCHES_PER_CLIENT)) as f64;

    let mut lines = vec![
        format!("clients={CLIENTS}"),
        format!("batch_events={BATCH}"),
        format!("timed_events_per_round={timed_events}"),
        format!("rounds={ROUNDS}"),
        format!("gzip_body_bytes_mean={:.0}", body_bytes as f64 / batches),
        format!("json_body_bytes_mean={:.0}", json_bytes as f64 / batches),
        format!(
            "names_per_event_mean={:.2}",
            names as f64 / batches / BATCH as f64
        ),
        format!("collector_events_per_second={collector_rate:.0}"),
        format!("baseline_events_per_second={baseline_rate:.0}"),
        format!("store_alone_events_per_second={store_rate:.0}"),
        format!("ratio={:.3}", collector_rate / baseline_rate),
        format!("latency_p50_ms={:.3}", millis(percentile(&latencies, 50))),
        format!("latency_p99_ms={:.3}", millis(percentile(&latencies, 99))),
        format!(
            "latency_max_ms={:.3}",
            millis(latencies.last().copied().unwrap_or_default())
        ),
        format!(
            "requests_per_group_commit_mean={:.2}",
            groups_total.requests as f64 / groups_total.commits.max(1) as f64
        ),
    ];
    for round in 0..ROUNDS {
        lines.push(format!(
            "round{}_events_per_second_collector={:.0}",
            round + 1,
            collector_rates[round]
        ));
        lines.push(format!(
            "round{}_events_per_second_baseline={:.0}",
            round + 1,
            baseline_rates[round]
        ));
        lines.push(format!(
            "round{}_events_per_second_store_alone={:.0}",
            round + 1,
            store_rates[round]
        ));
    }

    println!(
        "\ncollector ingest: {CLIENTS} clients, gzip batches of {BATCH}, {} timed events a round, median of {ROUNDS} rounds\n",
        timed_events
    );
    println!("| what | events/s | of the baseline |");
    println!("|---|---|---|");
    for (what, rate) in [
        (
            "rusqlite, one transaction per batch (baseline)",
            baseline_rate,
        ),
        ("SqliteStore::write, one batch at a time", store_rate),
        ("collector over HTTPS, 8 clients", collector_rate),
    ] {
        println!("| {what} | {rate:.0} | {:.2}x |", rate / baseline_rate);
    }
    println!(
        "\nlatency of a batch under that load: p50 {:.1} ms, p99 {:.1} ms; {:.2} requests per group commit",
        millis(percentile(&latencies, 50)),
        millis(percentile(&latencies, 99)),
        groups_total.requests as f64 / groups_total.commits.max(1) as f64
    );
    match &postgres {
        Some(postgres) => postgres.report(collector_rate, &mut lines),
        None => lines.push("postgres_skipped=1".to_owned()),
    }
    for line in &lines {
        println!("  {line}");
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-notes");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{NOTE}.txt")), lines.join("\n") + "\n");
}

/// One round's events, in batches, with their request bodies.
struct Workload {
    /// Batch `i` goes to client `i % CLIENTS`; the first `CLIENTS * WARM_UP_BATCHES` are the
    /// warm-up.
    batches: Vec<Vec<Event>>,
    /// Each batch as a gzip request body.
    bodies: Vec<Bytes>,
    json_bytes: usize,
}

impl Workload {
    fn generate(seed: u64, catalog: &Catalog) -> Workload {
        let mut dice = Dice(0x5eed_0000 + seed);
        let sessions: Vec<Installation> = (0..SESSIONS)
            .map(|_| Installation::random(&mut dice))
            .collect();
        let now = HourTimestamp::now();
        let batch_count = CLIENTS * (WARM_UP_BATCHES + BATCHES_PER_CLIENT);
        let batches: Vec<Vec<Event>> = (0..batch_count)
            .map(|_| {
                (0..BATCH)
                    .map(|_| flowkit_event(&mut dice, catalog, &sessions, now))
                    .collect()
            })
            .collect();
        let mut json_bytes = 0;
        let bodies = batches
            .iter()
            .map(|events| {
                let json = serde_json::to_vec(&WireBatch {
                    schema_version: SCHEMA_VERSION,
                    events: events.clone(),
                })
                .unwrap();
                json_bytes += json.len();
                // The SDK's transport compresses at flate2's default level too.
                let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
                gzip.write_all(&json).unwrap();
                Bytes::from(gzip.finish().unwrap())
            })
            .collect();
        Workload {
            batches,
            bodies,
            json_bytes,
        }
    }

    fn warm_up_len(&self) -> usize {
        CLIENTS * WARM_UP_BATCHES
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.batches.iter().flatten()
    }
}

/// A small deterministic generator (SplitMix64), so that every run sends the same mix.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `count` different names of a catalog section.
    fn names(&mut self, catalog: &Catalog, section: Section, count: usize) -> Vec<Name> {
        let entries = catalog.entries(section);
        let mut names: Vec<Name> = Vec::with_capacity(count);
        while names.len() < count.min(entries.len()) {
            let name = &self.pick(entries).name;
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }
}

/// What stays the same across one installation's events.
struct Installation {
    session_id: SessionId,
    sdk_version: Version,
    os: OsFamily,
    arch: Arch,
    interface: Interface,
    ci: bool,
    deployment: DeploymentStage,
}

impl Installation {
    fn random(dice: &mut Dice) -> Installation {
        Installation {
            session_id: SessionId::random(),
            sdk_version: Version::new(dice.pick::<&str>(&["0.1.0", "0.2.0", "0.2.1", "0.3.0"]))
                .unwrap(),
            os: *dice.pick(&[
                OsFamily::Linux,
                OsFamily::Linux,
                OsFamily::Linux,
                OsFamily::Macos,
                OsFamily::Windows,
            ]),
            arch: *dice.pick(&[Arch::X86_64, Arch::X86_64, Arch::Aarch64]),
            interface: *dice.pick(&[Interface::Cli, Interface::Programmatic]),
            ci: dice.percent(30),
            deployment: *dice.pick(&[
                DeploymentStage::Development,
                DeploymentStage::Production,
                DeploymentStage::Unknown,
            ]),
        }
    }
}

/// An event as flowkit sends them: mostly flow runs with a few features and task counts, one
/// in eight failed with an exception type, and now and then a process's usage summary with
/// more metrics. Every event has a new id and an hour within the last day.
fn flowkit_event(
    dice: &mut Dice,
    catalog: &Catalog,
    installations: &[Installation],
    now: HourTimestamp,
) -> Event {
    let installation = dice.pick(installations);
    let mut event = fixtures::run_event();
    event.session_id = installation.session_id;
    event.timestamp =
        HourTimestamp::from_unix_seconds(now.unix_seconds() - 3_600 * dice.below(24) as u64);
    event.sdk_version = installation.sdk_version.clone();
    event.os = installation.os;
    event.arch = installation.arch;
    event.interface = installation.interface;
    event.ci = installation.ci;
    event.deployment = installation.deployment;
    let count = |dice: &mut Dice| *dice.pick(&CountBucket::ALL[1..6]);
    event.duration = *dice.pick(&DurationBucket::ALL[..5]);
    if dice.percent(85) {
        event.event_type = EventType::Run;
        let features = 1 + dice.below(4);
        event.features = dice
            .names(catalog, Section::Features, features)
            .into_iter()
            .collect();
        let metrics = 1 + dice.below(2);
        event.metrics = dice
            .names(catalog, Section::Metrics, metrics)
            .into_iter()
            .map(|name| (name, count(dice)))
            .collect();
        let failed = dice.percent(12);
        event.outcome = Some(if failed {
            *dice.pick(&[RunOutcome::Failed, RunOutcome::Failed, RunOutcome::Crashed])
        } else if dice.percent(2) {
            RunOutcome::Cancelled
        } else {
            RunOutcome::Completed
        });
        if failed {
            event.errors.exception_types = dice
                .names(catalog, Section::ExceptionTypes, 1)
                .into_iter()
                .map(|name| (name, count(dice)))
                .collect();
        }
    } else {
        event.event_type = EventType::SdkUsage;
        event.outcome = None;
        event.concurrency_peak = Some(count(dice));
        let features = 2 + dice.below(4);
        event.features = dice
            .names(catalog, Section::Features, features)
            .into_iter()
            .collect();
        let metrics = 3 + dice.below(4);
        event.metrics = dice
            .names(catalog, Section::Metrics, metrics)
            .into_iter()
            .map(|name| (name, count(dice)))
            .collect();
        event.commands = dice
            .names(catalog, Section::Commands, 1)
            .into_iter()
            .collect();
        if dice.percent(40) {
            let integrations = 1 + dice.below(2);
            event.integrations = dice
                .names(catalog, Section::Integrations, integrations)
                .into_iter()
                .collect();
        }
    }
    event
}

/// The rows of the store's table of names an event adds.
fn name_count(event: &Event) -> usize {
    event.features.len()
        + event.integrations.len()
        + event.block_types.len()
        + event.commands.len()
        + event.metrics.len()
        + event.errors.config_errors.len()
        + event.errors.integration_import_failures.len()
        + event.errors.exception_types.len()
}

/// A CA made for this run, a server configuration with a certificate for 127.0.0.1 that it
/// signed, and a client configuration that trusts it.
struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl Pki {
    fn generate() -> Pki {
        let pki = TestPki::generate("collector benchmark");
        let server =
            telemetry_collector::tls::from_parts(vec![pki.cert_der.clone()], pki.key_der())
                .unwrap();
        Pki {
            server,
            client: pki.client_config(),
        }
    }
}

/// What the collector side of a round measured.
struct CollectorRun {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Where a collector of the benchmark keeps its events.
enum StoreAt {
    /// A [`SqliteStore`] in this directory.
    Sqlite(PathBuf),
    /// A [`PostgresStore`] on the database at this URL.
    Postgres(String),
}

/// A collector serving on its own thread and runtime (as its binary runs, one worker thread per
/// core), until [`RunningCollector::stop`].
struct RunningCollector {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl RunningCollector {
    /// Starts a collector and returns once it accepts connections, its store open and the
    /// catalogs registered.
    fn start(pki: &Pki, catalogs: &Arc<Catalogs>, store_at: StoreAt) -> RunningCollector {
        let config = ServerConfig {
            tls: Arc::clone(&pki.server),
            catalogs: Arc::clone(catalogs),
            token: Token::new("benchmark-token-that-nobody-uses").unwrap(),
            retention: Duration::from_secs(90 * 86_400),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            max_connections: 64,
        };
        let (address_sender, address) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let server_catalogs = Arc::clone(catalogs);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
                    .await
                    .unwrap();
                let store: Arc<dyn Store> = match store_at {
                    StoreAt::Sqlite(dir) => Arc::new(SqliteStore::open(&dir).unwrap()),
                    StoreAt::Postgres(url) => Arc::new(PostgresStore::connect(&url).await.unwrap()),
                };
                store.register_catalogs(&server_catalogs).await.unwrap();
                address_sender.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(store, async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        RunningCollector {
            address: address.recv().unwrap(),
            stop,
            thread,
        }
    }

    fn stop(self) {
        self.stop.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

/// Starts a collector with a [`SqliteStore`] in `data_dir`, sends the round's batches from eight
/// clients on this thread, and stops it.
fn collector_run(
    workload: &Workload,
    pki: &Pki,
    catalogs: &Arc<Catalogs>,
    data_dir: &Path,
) -> CollectorRun {
    let collector = RunningCollector::start(pki, catalogs, StoreAt::Sqlite(data_dir.to_path_buf()));
    let run = send_round(workload, pki, &[collector.address]);
    collector.stop();

    // Every event of the round is stored, once.
    let connection = Connection::open(data_dir.join(SqliteStore::FILE_NAME)).unwrap();
    let stored: i64 = connection
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored as usize, workload.events().count());
    run
}

/// Sends the round's batches from eight clients on a runtime of this thread, client `i` to
/// collector `i % collectors.len()`, and times the batches after the warm-up.
fn send_round(workload: &Workload, pki: &Pki, collectors: &[SocketAddr]) -> CollectorRun {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let start = Arc::new(Barrier::new(CLIENTS + 1));
        let connector = TlsConnector::from(Arc::clone(&pki.client));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let bodies = |range: std::ops::Range<usize>| -> Vec<Bytes> {
                    workload.bodies[range]
                        .iter()
                        .skip(client)
                        .step_by(CLIENTS)
                        .cloned()
                        .collect()
                };
                let warm_up = bodies(0..workload.warm_up_len());
                let timed = bodies(workload.warm_up_len()..workload.bodies.len());
                tokio::spawn(send_batches(
                    collectors[client % collectors.len()],
                    connector.clone(),
                    warm_up,
                    timed,
                    Arc::clone(&start),
                ))
            })
            .collect();
        start.wait().await;
        let started = Instant::now();
        let mut latencies = Vec::with_capacity(CLIENTS * BATCHES_PER_CLIENT);
        for client in clients {
            latencies.extend(client.await.unwrap());
        }
        CollectorRun {
            elapsed: started.elapsed(),
            latencies,
        }
    })
}

/// One client: its own TCP connection, TLS session and HTTP/1.1 connection, kept for every
/// batch. Returns the latency of each timed batch.
async fn send_batches(
    address: SocketAddr,
    connector: TlsConnector,
    warm_up: Vec<Bytes>,
    timed: Vec<Bytes>,
    start: Arc<Barrier>,
) -> Vec<Duration> {
    let tcp = TcpStream::connect(address).await.unwrap();
    // As the SDK's transport does.
    tcp.set_nodelay(true).unwrap();
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    // Drives the connection until the sender is dropped.
    tokio::spawn(connection);
    for body in warm_up {
        post(&mut sender, body).await;
    }
    start.wait().await;
    let mut latencies = Vec::with_capacity(timed.len());
    for body in timed {
        let sent = Instant::now();
        post(&mut sender, body).await;
        latencies.push(sent.elapsed());
    }
    latencies
}

/// Sends one batch and checks that every event was accepted.
async fn post(sender: &mut SendRequest<Full<Bytes>>, body: Bytes) {
    sender.ready().await.unwrap();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/events")
        .header(HOST, "127.0.0.1")
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(Full::new(body))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"accepted": BATCH, "duplicates": 0, "rejected": 0})
    );
}

/// Plain rusqlite: the same events, one transaction per batch, into one table keyed by event
/// id with the store's PRAGMAs. Returns the time of the timed batches.
fn baseline_run(workload: &Workload, dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let mut connection = Connection::open(dir.join("baseline.sqlite3")).unwrap();
    connection.busy_timeout(Duration::from_secs(5)).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    connection
        .execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE events (
                 event_id TEXT PRIMARY KEY,
                 session_id TEXT NOT NULL,
                 sdk TEXT NOT NULL,
                 sdk_version TEXT NOT NULL,
                 library_version TEXT NOT NULL,
                 runtime TEXT NOT NULL,
                 runtime_version TEXT NOT NULL,
                 os TEXT NOT NULL,
                 arch TEXT NOT NULL,
                 interface TEXT NOT NULL,
                 ci INTEGER NOT NULL,
                 deployment TEXT NOT NULL,
                 hour INTEGER NOT NULL,
                 event_type TEXT NOT NULL,
                 duration TEXT NOT NULL,
                 concurrency_peak TEXT,
                 outcome TEXT,
                 names TEXT NOT NULL
             ) STRICT;",
        )
        .unwrap();
    let (warm_up, timed) = workload.batches.split_at(workload.warm_up_len());
    for batch in warm_up {
        baseline_insert(&mut connection, batch);
    }
    let started = Instant::now();
    for batch in timed {
        baseline_insert(&mut connection, batch);
    }
    let elapsed = started.elapsed();
    let stored: i64 = connection
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(stored as usize, workload.events().count());
    elapsed
}

fn baseline_insert(connection: &mut Connection, batch: &[Event]) {
    let transaction = connection.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare_cached(
                "INSERT INTO events (event_id, session_id, sdk, sdk_version, library_version,
                    runtime, runtime_version, os, arch, interface, ci, deployment, hour,
                    event_type, duration, concurrency_peak, outcome, names)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18)",
            )
            .unwrap();
        for event in batch {
            // The names the store keeps in a table of their own, here as one JSON text.
            let names = serde_json::to_string(&(
                &event.features,
                &event.integrations,
                &event.block_types,
                &event.commands,
                &event.metrics,
                &event.errors,
            ))
            .unwrap();
            insert
                .execute(params![
                    event.event_id.to_string(),
                    event.session_id.to_string(),
                    event.sdk_name.as_str(),
                    event.sdk_version.as_str(),
                    event.library_version.as_str(),
                    event.runtime.as_str(),
                    event.runtime_version.as_str(),
                    wire_name(&event.os),
                    wire_name(&event.arch),
                    wire_name(&event.interface),
                    event.ci,
                    wire_name(&event.deployment),
                    event.timestamp.unix_seconds() as i64,
                    wire_name(&event.event_type),
                    wire_name(&event.duration),
                    event.concurrency_peak.as_ref().map(wire_name),
                    event.outcome.as_ref().map(wire_name),
                    names,
                ])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// An enum's name on the wire, the way the store turns it into a column.
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value).unwrap() {
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    }
}

/// The store alone: one [`WriteJob`] of one batch per write, one after another, on the
/// runtime's blocking thread as the collector calls it. Returns the time of the timed batches.
fn store_run(workload: &Workload, dir: &Path) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let jobs = |batches: &[Vec<Event>]| -> Vec<WriteJob> {
        batches
            .iter()
            .map(|events| WriteJob {
                events: events.clone(),
                ..WriteJob::default()
            })
            .collect()
    };
    let (warm_up, timed) = workload.batches.split_at(workload.warm_up_len());
    let (warm_up, timed) = (jobs(warm_up), jobs(timed));
    let store = SqliteStore::open(dir).unwrap();
    runtime.block_on(async {
        for job in warm_up {
            store.write(vec![job]).await.unwrap();
        }
        let started = Instant::now();
        for job in timed {
            let outcome = store.write(vec![job]).await.unwrap();
            assert_eq!(outcome[0].accepted, BATCH as u64);
        }
        started.elapsed()
    })
}

/// Counts the writer's group commits and the requests in them, from the `group committed`
/// debug events the collector's ingest module emits.
#[derive(Clone, Default)]
struct GroupCounter {
    commits: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[derive(Clone, Copy, Default)]
struct GroupCounts {
    commits: u64,
    requests: u64,
}

impl GroupCounts {
    fn since(self, earlier: GroupCounts) -> GroupCounts {
        GroupCounts {
            commits: self.commits - earlier.commits,
            requests: self.requests - earlier.requests,
        }
    }

    fn plus(self, other: GroupCounts) -> GroupCounts {
        GroupCounts {
            commits: self.commits + other.commits,
            requests: self.requests + other.requests,
        }
    }
}

impl GroupCounter {
    fn install() -> GroupCounter {
        let counter = GroupCounter::default();
        tracing::subscriber::set_global_default(counter.clone()).unwrap();
        counter
    }

    fn snapshot(&self) -> GroupCounts {
        GroupCounts {
            commits: self.commits.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }
}

/// The `requests` field of an event.
struct RequestsField(Option<u64>);

impl tracing::field::Visit for RequestsField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "requests" {
            self.0 = Some(value);
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.record_u64(field, value as u64);
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl tracing::Subscriber for GroupCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && metadata.target() == "telemetry_collector::ingest"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut requests = RequestsField(None);
        event.record(&mut requests);
        if let Some(requests) = requests.0 {
            self.commits.fetch_add(1, Ordering::Relaxed);
            self.requests.fetch_add(requests, Ordering::Relaxed);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
