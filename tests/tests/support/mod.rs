//! A real HTTPS collector for end-to-end tests: a rustls server on 127.0.0.1 with a certificate
//! signed by a CA made in the test by rcgen, that records every request and answers from a
//! script the test can change while it runs.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

/// How long the server holds a request it never answers, and how long it waits for a request
/// to arrive: longer than any test needs, so it only stops a task the test forgot.
const SERVER_HANG_GUARD: Duration = Duration::from_secs(30);

/// The server accepts at most this many connections, so that a client in a retry loop cannot
/// keep it busy for ever.
const MAX_CONNECTIONS: usize = 1_024;

/// The largest request the hand-written (cut-off) path reads.
const MAX_RAW_REQUEST: usize = 4 * 1024 * 1024;

pub(crate) use telemetry_testkit::pki::TestPki;

/// How the server answers. The test can change it between requests with [`TestServer::set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    /// Answers with this status, and a `Retry-After` header when given.
    Answer {
        status: u16,
        retry_after: Option<&'static str>,
    },
    /// Answers 413 to a body with more events than this, and 200 to the others.
    TooLargeAbove(usize),
    /// Reads the request and never answers.
    NeverAnswer,
    /// Reads the request, writes the start of a response head, then closes the connection.
    /// Decided when a connection is accepted: it applies to new connections only.
    CloseMidResponse,
    /// Accepts the TCP connection and never starts the TLS handshake.
    /// Decided when a connection is accepted: it applies to new connections only.
    NeverHandshake,
    /// Reads the request, then sends a response head one byte a second.
    /// Decided when a connection is accepted: it applies to new connections only.
    TrickleHead,
}

impl Script {
    pub(crate) fn status(status: u16) -> Script {
        Script::Answer {
            status,
            retry_after: None,
        }
    }
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    /// The body's length as it came over the wire, before any decoding.
    pub(crate) wire_len: usize,
    /// The body, gunzipped when `content-encoding: gzip`, as text; an error when it did not
    /// decode (kept rather than panicking inside the server, so the test reports it).
    pub(crate) body: Result<String, String>,
    /// The status the server answered; `None` when it never answered or cut the answer off.
    pub(crate) answered: Option<u16>,
}

impl Recorded {
    fn new(method: String, path: String, headers: HeaderMap, wire: &[u8]) -> Recorded {
        let gzipped = headers
            .get("content-encoding")
            .is_some_and(|value| value == "gzip");
        let body = if gzipped {
            let mut text = String::new();
            flate2::read::GzDecoder::new(wire)
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|error| format!("the gzip body does not decode: {error}"))
        } else {
            String::from_utf8(wire.to_vec())
                .map_err(|error| format!("the body is not UTF-8: {error}"))
        };
        Recorded {
            method,
            path,
            headers,
            wire_len: wire.len(),
            body,
            answered: None,
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap_or("<not visible ASCII>"))
    }

    pub(crate) fn gzipped(&self) -> bool {
        self.header("content-encoding") == Some("gzip")
    }

    pub(crate) fn accepted(&self) -> bool {
        self.answered
            .is_some_and(|status| (200..300).contains(&status))
    }

    /// The body as JSON; panics (failing the test) when it is not.
    pub(crate) fn json(&self) -> serde_json::Value {
        let text = self.body.as_ref().unwrap();
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{error}: {text}"))
    }

    /// The events of the batch; panics unless the body is exactly
    /// `{"schema_version":1,"events":[…]}`.
    pub(crate) fn events(&self) -> Vec<serde_json::Value> {
        let batch = self.json();
        let object = batch.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["events", "schema_version"], "{batch}");
        assert_eq!(batch["schema_version"], 1, "{batch}");
        batch["events"].as_array().unwrap().clone()
    }

    /// The `event_id` of every event in the batch, in order.
    pub(crate) fn event_ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|event| event["event_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// How many events the body holds, without the strict checks of [`Recorded::events`]
    /// (the server uses it to decide an answer and must not panic).
    fn event_count(&self) -> usize {
        self.body
            .as_ref()
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .and_then(|batch| batch["events"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct Shared {
    script: Mutex<Option<Script>>,
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a server task must not hide what was recorded before it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn script(&self) -> Script {
        lock(&self.script)
            .clone()
            .unwrap_or_else(|| Script::status(500))
    }
}

/// A TLS server on 127.0.0.1 that answers from a [`Script`] and records every request. It runs
/// on its own tokio runtime, which the test owns through it: dropping the server stops it.
pub(crate) struct TestServer {
    pub(crate) port: u16,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
}

impl TestServer {
    /// A server on a free port.
    pub(crate) fn start(pki: &TestPki, script: Script) -> TestServer {
        TestServer::bind(pki, script, 0).unwrap()
    }

    /// A server on `port`, which must be free.
    pub(crate) fn bind(pki: &TestPki, script: Script, port: u16) -> std::io::Result<TestServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(("127.0.0.1", port)))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            script: Mutex::new(Some(script)),
            ..Shared::default()
        });
        let acceptor = TlsAcceptor::from(pki.server_config());
        runtime.spawn({
            let shared = Arc::clone(&shared);
            async move {
                for _ in 0..MAX_CONNECTIONS {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_connection(tcp, acceptor.clone(), Arc::clone(&shared)));
                }
            }
        });
        Ok(TestServer {
            port,
            shared,
            runtime: Some(runtime),
        })
    }

    /// The endpoint to configure: `https://127.0.0.1:<port>/v1/events`.
    pub(crate) fn endpoint(&self) -> String {
        endpoint(self.port)
    }

    /// Changes how the server answers from the next request on.
    pub(crate) fn set(&self, script: Script) {
        *lock(&self.shared.script) = Some(script);
    }

    /// Every request so far, in the order they arrived.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// TCP connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub(crate) fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Cancels every task, including requests held open by `NeverAnswer`, without waiting.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The endpoint for a server on `port` of 127.0.0.1.
pub(crate) fn endpoint(port: u16) -> String {
    format!("https://127.0.0.1:{port}/v1/events")
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    if shared.script() == Script::NeverHandshake {
        // Hold the connection open, reading nothing, until the guard (or the test) ends it.
        tokio::time::sleep(SERVER_HANG_GUARD).await;
        drop(tcp);
        return;
    }
    // A client that does not trust the certificate aborts the handshake: nothing to serve.
    let Ok(Ok(mut tls)) = tokio::time::timeout(SERVER_HANG_GUARD, acceptor.accept(tcp)).await
    else {
        return;
    };
    shared.handshakes.fetch_add(1, Ordering::SeqCst);
    if shared.script() == Script::TrickleHead {
        if let Some(recorded) = read_raw_request(&mut tls).await {
            lock(&shared.requests).push(recorded);
        }
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" {
            if tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        return;
    }
    if shared.script() == Script::CloseMidResponse {
        if let Some(recorded) = read_raw_request(&mut tls).await {
            lock(&shared.requests).push(recorded);
        }
        // An incomplete head, then the connection closes without a TLS close_notify.
        let _ = tls
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConte")
            .await;
        let _ = tls.flush().await;
        return;
    }
    let service = service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(answer(request, &shared).await) }
    });
    // The client closing or resetting the connection ends this; both are fine here.
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

async fn answer(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let wire = body
        .collect()
        .await
        .map(|body| body.to_bytes().to_vec())
        .unwrap_or_default();
    let mut recorded = Recorded::new(
        parts.method.to_string(),
        parts.uri.path().to_owned(),
        parts.headers,
        &wire,
    );
    let (status, retry_after) = match shared.script() {
        Script::Answer {
            status,
            retry_after,
        } => (status, retry_after),
        Script::TooLargeAbove(limit) if recorded.event_count() > limit => (413, None),
        Script::TooLargeAbove(_) => (200, None),
        // A connection that was open before the script changed to one decided per connection
        // cannot follow it through hyper: it is held unanswered like `NeverAnswer`.
        Script::NeverAnswer
        | Script::CloseMidResponse
        | Script::NeverHandshake
        | Script::TrickleHead => {
            lock(&shared.requests).push(recorded);
            tokio::time::sleep(SERVER_HANG_GUARD).await;
            return Response::new(Full::new(Bytes::new()));
        }
    };
    recorded.answered = Some(status);
    lock(&shared.requests).push(recorded);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static(value));
    }
    response
}

/// Reads one whole request by hand (its head, and a body as long as its `content-length`),
/// for the answers hyper cannot give, such as a response cut off in the middle of its head.
async fn read_raw_request(stream: &mut (impl AsyncRead + Unpin)) -> Option<Recorded> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some((head_end, body_len)) = request_shape(&seen)
            && seen.len() >= head_end + 4 + body_len
        {
            return Some(parse_raw_request(&seen, head_end, body_len));
        }
        if seen.len() > MAX_RAW_REQUEST {
            return None;
        }
        match tokio::time::timeout(SERVER_HANG_GUARD, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&buffer[..read]),
            _ => return None,
        }
    }
}

/// Where the head ends and how long the body is, once the head has arrived.
fn request_shape(seen: &[u8]) -> Option<(usize, usize)> {
    let head_end = seen.windows(4).position(|window| window == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    Some((head_end, body_len))
}

fn parse_raw_request(seen: &[u8], head_end: usize, body_len: usize) -> Recorded {
    let head = String::from_utf8_lossy(&seen[..head_end]);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let body = &seen[head_end + 4..head_end + 4 + body_len];
    Recorded::new(method, path, headers, body)
}
