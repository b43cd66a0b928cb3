//! flowkit and the collector together, as an SDK author and a maintainer run them: real flowkit
//! traffic over TLS with a private CA into a real collector on 127.0.0.1 and its SQLite store.
//! Every run arrives once however often it is sent, an opt-out erases the session at the
//! collector, and the report's numbers are the workload's.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowkit::FlowKit;
use support::TestPki;
use telemetry::{EnvSnapshot, Interface, TelemetryConfig};
use telemetry_collector::auth::Token;
use telemetry_collector::ingest::IngestConfig;
use telemetry_collector::report::{Report, ReportQuery};
use telemetry_collector::server::{Server, ServerConfig};
use telemetry_collector::store::{SqliteStore, Store};
use telemetry_collector::validate::{Catalogs, Limits};
use telemetry_e2e::{ERROR_MESSAGE, FLOW_NAME, PARAM_VALUE, hostile_workload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const FLUSH: Duration = Duration::from_secs(10);
const TOKEN: &str = "e2e-report-token-0123456789abcdef01234";

/// A collector on its own runtime thread, with its store in a temporary directory.
struct Collector {
    addr: SocketAddr,
    store: SqliteStore,
    data: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Collector {
    fn start(pki: &TestPki) -> Collector {
        let data = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(data.path()).unwrap();
        let mut catalogs = Catalogs::default();
        let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/flowkit/catalog.toml");
        catalogs
            .load(&format!("flowkit={}", catalog.display()))
            .unwrap();
        let config = ServerConfig {
            tls: pki.server_config(),
            catalogs: Arc::new(catalogs),
            token: Token::new(TOKEN).unwrap(),
            retention: Duration::from_secs(90 * 86_400),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            max_connections: 64,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(Server::bind("127.0.0.1:0".parse().unwrap(), config))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        runtime.spawn(server.run(shared, async {
            let _ = stopped.await;
        }));
        Collector {
            addr,
            store,
            data,
            runtime,
            stop: Some(stop),
        }
    }

    fn report(&self) -> Report {
        self.runtime
            .block_on(self.store.report(&ReportQuery::ending_today("flowkit", 2)))
            .unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.data.path();
    }
}

/// A TCP relay in front of the collector that lets every request through but throws away the
/// answer of the first `lose` connections: the collector stored the batch, the client never
/// heard, and sends it again.
struct LossyRelay {
    addr: SocketAddr,
    lost: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl LossyRelay {
    fn start(upstream: SocketAddr, lose: usize) -> LossyRelay {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let lost = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lost);
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let drop_answer = counter.fetch_add(1, Ordering::SeqCst) < lose;
                tokio::spawn(relay(client, upstream, drop_answer));
            }
        });
        LossyRelay {
            addr,
            lost,
            _runtime: runtime,
        }
    }

    fn connections(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, drop_answer: bool) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upload = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    if drop_answer {
        // Pass the TLS handshake through, then swallow the rest: the answer never arrives.
        let mut buffer = vec![0_u8; 64 * 1024];
        // The server's handshake flight comes in the first reads; the HTTP answer comes only
        // after the client's request. Forward two reads, then stop.
        for _ in 0..2 {
            match server_read.read(&mut buffer).await {
                Ok(read) if read > 0 => {
                    if client_write.write_all(&buffer[..read]).await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        upload.abort();
        let _ = client_write.shutdown().await;
    } else {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        upload.abort();
    }
}

fn config(dir: &Path, endpoint: &str, pki: &TestPki, enabled_by_env: bool) -> TelemetryConfig {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();
    let mut pairs = vec![
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.to_owned()),
        ("FLOWKIT_SDK_TELEMETRY_CA_FILE", ca_file),
        ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "10".to_owned()),
    ];
    if enabled_by_env {
        pairs.push(("FLOWKIT_SDK_TELEMETRY_ENABLED", "1".to_owned()));
    }
    flowkit::telemetry_config(Some(dir.join("home")), Interface::Programmatic)
        .unwrap()
        .env(EnvSnapshot::from_pairs(pairs))
}

fn flush_until_delivered(kit: &FlowKit) {
    for _ in 0..50 {
        if let Ok(report) = kit.telemetry().flush(FLUSH)
            && report.pending == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("events still pending: {:?}", kit.telemetry().status());
}

#[test]
fn every_run_is_stored_once_however_often_it_is_sent_and_the_report_says_what_ran() {
    let pki = TestPki::generate("collector");
    let collector = Collector::start(&pki);
    // The first three answers are lost on the way back: the client sends those batches again.
    let relay = LossyRelay::start(collector.addr, 3);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://{}/v1/events", relay.addr);
    let config = config(dir.path(), &endpoint, &pki, true);
    let kit = FlowKit::start(&config);
    assert!(kit.telemetry().is_enabled());
    let runs = 30;
    hostile_workload(&kit, runs);
    flush_until_delivered(&kit);
    let status = kit.telemetry().status();
    drop(kit);
    assert!(relay.connections() > 3, "no batch was sent again");
    assert!(
        status.failed_deliveries >= 1,
        "no answer was lost on the way back, so no batch was sent twice: {status:?}"
    );

    let report = collector.report();
    let totals = &report.totals;
    assert_eq!(totals.runs, runs as u64, "every run once: {totals:?}");
    assert_eq!(totals.events, runs as u64 + 1, "and one summary");
    assert_eq!(totals.sessions, 1);
    assert_eq!(totals.outcomes["failed"], 10);
    assert_eq!(totals.outcomes["completed"], 20);
    // Ten failed runs, and the summary that counts them.
    assert_eq!(totals.exception_types["connection_error"], 11);
    for feature in ["retries", "caching", "concurrent_task_runner", "parameters"] {
        assert_eq!(totals.features[feature].sessions, 1, "{feature}");
        assert_eq!(totals.features[feature].share, 1.0, "{feature}");
    }
    assert_eq!(totals.features["schedules"].sessions, 0);
    assert_eq!(totals.sdk_versions[env!("CARGO_PKG_VERSION")], 1);
    assert_eq!(
        report.refused.values().sum::<u64>(),
        0,
        "{:?}",
        report.refused
    );
    // Nothing personal reached the collector's files.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(collector.data.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for secret in [FLOW_NAME, PARAM_VALUE, ERROR_MESSAGE, "db.internal"] {
        assert!(
            !bytes
                .windows(secret.len())
                .any(|window| window == secret.as_bytes()),
            "{secret:?} is in the collector's store"
        );
    }
}

#[test]
fn opting_out_erases_the_session_at_the_collector() {
    let pki = TestPki::generate("collector");
    let collector = Collector::start(&pki);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://{}/v1/events", collector.addr);
    let config = config(dir.path(), &endpoint, &pki, false);
    config.enable().unwrap();
    let kit = FlowKit::start(&config);
    assert!(kit.telemetry().is_enabled());
    hostile_workload(&kit, 12);
    flush_until_delivered(&kit);
    drop(kit);
    assert_eq!(collector.report().totals.events, 13);

    let status = config.disable().unwrap();
    let sent = status.deletion_request.clone().unwrap_or_default();
    assert!(sent.starts_with("sent to"), "{status:?}");
    let report = collector.report();
    assert_eq!(report.totals.events, 0, "the session's events are erased");
    assert_eq!(report.totals.sessions, 0);
    assert_eq!(report.erased_sessions, 1);
}
