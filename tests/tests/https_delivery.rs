//! Delivery over HTTPS end to end: flowkit records through the facade, the worker sends to a
//! real TLS server on 127.0.0.1 whose certificate is signed by a CA made in the test, and the
//! server's view is checked: every event exactly once, in the wire format, in batches of the
//! configured size, kept while the server is down or failing, never hanging the host.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flowkit::{ErrorKind, Flow, FlowKit, Params, Task, TaskError};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use telemetry::{EnvSnapshot, Interface, TelemetryConfig};
use telemetry_e2e::validate_with_python;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(20);

/// A CA (PEM) and a server configuration for 127.0.0.1 signed by it.
fn pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), Arc::new(server))
}

/// What the server answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// 413 to any body with more events than this, else 200.
    AtMost(usize),
    /// Never answers.
    Silent,
}

#[derive(Debug, Clone)]
struct Received {
    gzip: bool,
    user_agent: String,
    body: serde_json::Value,
}

struct Server {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Owns the server's tasks; dropping it stops them.
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(tls: Arc<rustls::ServerConfig>, answer: Answer) -> Server {
        Server::start_on("127.0.0.1:0".parse().unwrap(), tls, answer)
    }

    fn start_on(addr: SocketAddr, tls: Arc<rustls::ServerConfig>, answer: Answer) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(answer));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (state_answer, state_received) = (Arc::clone(&answer), Arc::clone(&received));
        runtime.spawn(async move {
            let acceptor = TlsAcceptor::from(tls);
            // Bounded: a test never needs more connections than this.
            for _ in 0..256 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, answer, received) = (acceptor.clone(), Arc::clone(&state_answer), Arc::clone(&state_received));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (answer, received) = (Arc::clone(&answer), Arc::clone(&received));
                        async move { Ok::<_, Infallible>(respond(request, &answer, &received).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Server {
            addr,
            answer,
            received,
            _runtime: runtime,
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}/v1/events", self.addr)
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Every event id the server accepted (answered 2xx), with how often.
    fn accepted_ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for request in self
            .received()
            .iter()
            .filter(|request| request.body["accepted"] == true)
        {
            for event in request.body["events"].as_array().unwrap() {
                *ids.entry(event["event_id"].as_str().unwrap().to_owned())
                    .or_insert(0) += 1;
            }
        }
        ids
    }
}

async fn respond(
    request: Request<Incoming>,
    answer: &Mutex<Answer>,
    received: &Mutex<Vec<Received>>,
) -> Response<Full<Bytes>> {
    let gzip = request
        .headers()
        .get("content-encoding")
        .is_some_and(|value| value == "gzip");
    let user_agent = request
        .headers()
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let raw = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let mut text = String::new();
    if gzip {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap();
    } else {
        text = String::from_utf8(raw.to_vec()).unwrap();
    }
    let mut body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let events = body["events"].as_array().map_or(0, Vec::len);
    let current = *answer.lock().unwrap();
    let status = match current {
        Answer::Status(status) => status,
        Answer::AtMost(limit) if events > limit => 413,
        Answer::AtMost(_) => 200,
        Answer::Silent => std::future::pending().await,
    };
    body["accepted"] = (200..300).contains(&status).into();
    received.lock().unwrap().push(Received {
        gzip,
        user_agent,
        body,
    });
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// flowkit's configuration, enabled, sending to `endpoint` and trusting `ca_pem`.
fn config(dir: &Path, endpoint: &str, ca_pem: &str, vars: &[(&str, &str)]) -> TelemetryConfig {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();
    let mut pairs = vec![
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint),
        ("FLOWKIT_SDK_TELEMETRY_CA_FILE", ca_file.as_str()),
    ];
    pairs.extend(vars.iter().copied());
    flowkit::telemetry_config(Some(dir.join("home")), Interface::Programmatic)
        .unwrap()
        .env(EnvSnapshot::from_pairs(pairs))
        .shutdown_timeout(Duration::from_secs(10))
}

fn workload(kit: &FlowKit, runs: usize) {
    let flow = Flow::new("customer-sync")
        .task(Task::new("load", |context| {
            match context.params.get("fail") {
                Some(_) => Err(TaskError::new(
                    ErrorKind::Connection,
                    "cannot reach db.internal.example.com",
                )),
                None => Ok(1.into()),
            }
        }))
        .task(Task::new("store", |_| Ok(2.into())).retries(1, Duration::ZERO));
    let mut failing = Params::new();
    failing.insert("fail".to_owned(), "yes".to_owned());
    let passing = Params::new();
    for index in 0..runs {
        kit.run(&flow, if index % 5 == 0 { &failing } else { &passing });
    }
}

fn assert_exactly_once(server: &Server, expected: usize) {
    let ids = server.accepted_ids();
    assert_eq!(ids.len(), expected, "distinct events accepted");
    assert!(ids.values().all(|count| *count == 1), "duplicates: {ids:?}");
}

#[test]
fn every_event_arrives_once_in_the_wire_format_and_in_batches() {
    let (ca, tls) = pki();
    let server = Server::start(tls, Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &server.endpoint(),
        &ca,
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "7")],
    );
    let kit = FlowKit::start(&config).unwrap();
    workload(&kit, 30);
    kit.telemetry().flush(WAIT).unwrap();
    drop(kit);

    assert_exactly_once(&server, 31);
    let received = server.received();
    let mut lines = Vec::new();
    for request in &received {
        assert_eq!(request.body["schema_version"], 1);
        let events = request.body["events"].as_array().unwrap();
        assert!(
            !events.is_empty() && events.len() <= 7,
            "batch of {}",
            events.len()
        );
        assert!(
            request.user_agent.starts_with("flowkit/"),
            "{}",
            request.user_agent
        );
        lines.extend(events.iter().map(ToString::to_string));
    }
    assert!(
        received.iter().any(|request| request.gzip),
        "batches over 1 KiB are gzip-compressed"
    );
    assert_eq!(validate_with_python(&lines), Ok(lines.len()));
    let all = lines.join("\n");
    assert!(!all.contains("customer-sync") && !all.contains("db.internal.example.com"));
}

#[test]
fn events_wait_while_the_endpoint_is_down_or_failing_and_arrive_once_after() {
    let (ca, tls) = pki();
    // Reserve a port, then close it: the endpoint is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &format!("https://{addr}/v1/events"), &ca, &[]);
    let kit = FlowKit::start(&config).unwrap();
    workload(&kit, 6);
    assert!(
        kit.telemetry().flush(Duration::from_secs(2)).is_err(),
        "the endpoint is down"
    );
    assert_eq!(kit.telemetry().status().pending_events, 6);

    // Up, but failing with 500s.
    let server = Server::start_on(addr, tls, Answer::Status(500));
    for _ in 0..3 {
        assert!(kit.telemetry().flush(WAIT).is_err());
        assert_eq!(
            kit.telemetry().status().pending_events,
            6,
            "nothing is lost while retrying"
        );
    }
    server.set(Answer::Status(503));
    assert!(kit.telemetry().flush(WAIT).is_err());
    server.set(Answer::Status(200));
    let report = kit.telemetry().flush(WAIT).unwrap();
    assert_eq!((report.delivered, report.pending), (6, 0));
    drop(kit);
    assert_exactly_once(&server, 7);
}

#[test]
fn too_large_batches_are_split_until_they_fit() {
    let (ca, tls) = pki();
    let server = Server::start(tls, Answer::AtMost(2));
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &server.endpoint(),
        &ca,
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "8")],
    );
    let kit = FlowKit::start(&config).unwrap();
    workload(&kit, 11);
    kit.telemetry().flush(WAIT).unwrap();
    drop(kit);
    assert_exactly_once(&server, 12);
    let accepted = server
        .received()
        .into_iter()
        .filter(|request| request.body["accepted"] == true);
    assert!(
        accepted
            .map(|request| request.body["events"].as_array().unwrap().len())
            .all(|len| len <= 2)
    );
}

#[test]
fn a_silent_server_never_holds_the_host_past_its_deadlines() {
    let (ca, tls) = pki();
    let server = Server::start(tls, Answer::Silent);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &server.endpoint(), &ca, &[])
        .shutdown_timeout(Duration::from_millis(300));
    let kit = FlowKit::start(&config).unwrap();
    workload(&kit, 3);
    let started = std::time::Instant::now();
    assert!(kit.telemetry().flush(Duration::from_millis(500)).is_err());
    drop(kit);
    // A hang guard only: the deadlines above are what is being tested.
    assert!(started.elapsed() < WAIT, "flush and shutdown returned");
    assert!(server.accepted_ids().is_empty());
}

#[test]
fn an_untrusted_certificate_sends_nothing() {
    let (_, tls) = pki();
    let (other_ca, _) = pki();
    let server = Server::start(tls, Answer::Status(200));
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &server.endpoint(), &other_ca, &[]);
    let kit = FlowKit::start(&config).unwrap();
    workload(&kit, 2);
    let error = kit.telemetry().flush(WAIT).unwrap_err().to_string();
    assert!(error.contains("certificate"), "{error}");
    drop(kit);
    assert!(server.received().is_empty(), "no request got through");
}

#[test]
fn a_flood_against_a_dead_endpoint_stays_within_the_buffer_bound() {
    let (ca, _) = pki();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!("https://127.0.0.1:{port}/"),
        &ca,
        &[("FLOWKIT_SDK_TELEMETRY_BUFFER", "memory")],
    )
    .buffer_capacity(1_000)
    .shutdown_timeout(Duration::from_millis(200));
    let telemetry = config.start();
    let catalog = telemetry.catalog().clone();
    for _ in 0..50_000 {
        telemetry.record_run(telemetry::RunRecord {
            features: telemetry::FeatureSet::new().with(catalog.feature("retries").unwrap()),
            duration: Duration::from_millis(5),
            outcome: telemetry::RunOutcome::Completed,
            exception: None,
        });
    }
    let _ = telemetry.flush(Duration::from_secs(2));
    let status = telemetry.status();
    assert!(status.pending_events <= 1_000, "{status:?}");
    assert!(status.dropped_events >= 49_000, "{status:?}");
}
