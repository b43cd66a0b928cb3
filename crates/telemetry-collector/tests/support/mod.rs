//! What the collector's tests share: a private CA, a collector running on its own runtime on
//! 127.0.0.1, an HTTPS client that trusts the CA, and events of the current hour.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod postgres;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::ServerName;
use telemetry_collector::auth::Token;
use telemetry_collector::ingest::IngestConfig;
use telemetry_collector::server::{Server, ServerConfig};
use telemetry_collector::store::Store;
use telemetry_collector::validate::{Catalogs, Limits};
use telemetry_model::{Event, HourTimestamp, Name, SessionId};
use telemetry_testkit::pki::TestPki;

/// The report token every test collector uses.
pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";

/// flowkit's catalog, the one the example SDK compiles in.
pub fn flowkit_catalog() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowkit/catalog.toml")
}

pub fn catalogs() -> Catalogs {
    let mut catalogs = Catalogs::default();
    catalogs
        .load(&format!("flowkit={}", flowkit_catalog().display()))
        .unwrap();
    catalogs
}

/// A test PKI with the server configuration the collector builds itself from a certificate and
/// a key (`tls::from_parts`, which also announces HTTP/1.1 by ALPN), and a client that trusts
/// only its CA.
pub struct Pki {
    /// The server's certificate and key, PEM, for `--tls-cert` and `--tls-key`.
    pub cert_pem: String,
    pub key_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl Pki {
    pub fn generate() -> Pki {
        let pki = TestPki::generate("collector");
        let server =
            telemetry_collector::tls::from_parts(vec![pki.cert_der.clone()], pki.key_der())
                .unwrap();
        Pki {
            cert_pem: pki.cert_pem.clone(),
            key_pem: pki.key_pem.clone(),
            server,
            client: pki.client_config(),
        }
    }
}

/// A server configuration for tests: flowkit's catalog, 90 days, the test token.
pub fn server_config(pki: &Pki) -> ServerConfig {
    ServerConfig {
        tls: Arc::clone(&pki.server),
        catalogs: Arc::new(catalogs()),
        token: Token::new(TOKEN).unwrap(),
        retention: Duration::from_secs(90 * 86_400),
        limits: Limits::default(),
        ingest: IngestConfig::default(),
        max_connections: 64,
    }
}

/// A collector serving on 127.0.0.1 from its own runtime thread.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(store: Arc<dyn Store>, config: ServerConfig) -> Running {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind("127.0.0.1:0".parse().unwrap(), config)
                    .await
                    .unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(store, async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Running {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Asks the server to stop without waiting for it.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits until it has finished what it accepted.
    pub fn stop(mut self) {
        self.begin_stop();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

/// An answer from the collector.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request over a new TLS connection and reads the whole answer.
pub async fn send_async(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    try_send_async(addr, client, method, path, headers, body)
        .await
        .unwrap_or_else(|error| panic!("{method} {path}: {error}"))
}

/// [`send_async`], with a connection or protocol failure as an error instead of a panic.
pub async fn try_send_async(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    let fail = |error: &dyn std::fmt::Display| error.to_string();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|error| fail(&error))?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|error| fail(&error))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|error| fail(&error))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| fail(&error))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| fail(&error))?
        .to_bytes()
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// [`try_send_async`] from synchronous test code.
pub fn try_send(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(try_send_async(
        addr,
        Arc::clone(client),
        method,
        path,
        headers,
        body,
    ))
}

/// [`send_async`] from synchronous test code.
pub fn send(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(send_async(
        addr,
        Arc::clone(client),
        method,
        path,
        headers,
        body,
    ))
}

pub fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

/// A flowkit `run` event of the current hour in `session`, using `features`.
pub fn run_event(session: SessionId, features: &[&str]) -> Event {
    let mut event = telemetry_testkit::fixtures::run_event();
    event.session_id = session;
    event.timestamp = HourTimestamp::now();
    event.features = features.iter().map(|feature| name(feature)).collect();
    event
}

/// The wire batch of `events`.
pub fn batch(events: &[Event]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "schema_version": 1, "events": events })).unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Every byte of a SQLite store on disk: the database, its WAL and its shared-memory file.
pub fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("events.sqlite3"))
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Sends only a request head over TLS and returns the first line of the answer: what a client
/// sees when the server refuses before reading the body.
pub fn send_head_only(addr: SocketAddr, client: &Arc<rustls::ClientConfig>, head: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let client = Arc::clone(client);
    let head = head.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut line = String::new();
            tokio::io::BufReader::new(tls)
                .read_line(&mut line)
                .await
                .unwrap();
            line.trim_end().to_owned()
        })
}
