//! The HTTPS transport against a real TLS server on 127.0.0.1, with certificates made by rcgen
//! inside the test: what goes over the wire, how every answer maps to a `SendError`, and how
//! broken, silent, untrusted and absent servers are handled.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use telemetry_model::EncodedEvent;
use telemetry_model::wire::encode_batch;
use telemetry_testkit::fixtures::encoded_events;
use telemetry_testkit::pki::TestPki;
use telemetry_transport::{
    ExtraCa, HttpsConfig, HttpsConfigError, HttpsTransport, SendError, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

const USER_AGENT: &str = "flowkit/0.1.0 sdk-telemetry/0.1.0";

/// Only guards against a hang; the transport's own timeouts are what the tests check.
const HANG_GUARD: Duration = Duration::from_secs(10);

/// A server opens at most this many connections before it stops accepting.
const MAX_CONNECTIONS: usize = 16;

/// The PKI the transports under test trust through the extra-CA option.
fn trusted() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate("trusted"))
}

/// A PKI nobody trusts.
fn untrusted() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate("untrusted"))
}

fn extra_ca(pki: &TestPki) -> ExtraCa {
    ExtraCa::Pem(pki.ca_pem.clone().into_bytes())
}

/// What the server does with each connection.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Answers every request with this status, these headers and a body of this many bytes.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body_len: usize,
    },
    /// Accepts the TCP connection and never starts TLS.
    SilentTcp,
    /// Completes the TLS handshake, reads the request and never answers.
    SilentAfterHandshake,
    /// Reads the request, writes the start of a response, then closes the connection without
    /// a TLS `close_notify`.
    PartialThenClose,
    /// Reads the request, writes the start of a response, then resets the TCP connection.
    PartialThenReset,
    /// Reads the request, writes a whole response head with this status and these headers that
    /// announces a large body, then does `body` instead of sending it.
    HeadThen {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: BodyAfterHead,
    },
}

/// What a server does with the body it announced in a response head.
#[derive(Clone, Copy, Debug)]
enum BodyAfterHead {
    /// Sends one byte per second, until the client goes away or the hang guard passes.
    Trickle,
    /// Sends nothing, until the client goes away or the hang guard passes.
    Withhold,
    /// Sends a few bytes, then closes the connection without a TLS `close_notify`.
    CutOff,
}

/// The body length a `HeadThen` head announces: far more than the client reads.
const ANNOUNCED_BODY_LEN: usize = 1024 * 1024;

fn answer(status: u16) -> Behaviour {
    Behaviour::Answer {
        status,
        headers: Vec::new(),
        body_len: 0,
    }
}

fn answer_with(status: u16, header: &'static str, value: impl Into<String>) -> Behaviour {
    Behaviour::Answer {
        status,
        headers: vec![(header, value.into())],
        body_len: 0,
    }
}

/// One request as the server received it; empty for behaviours that only count requests.
#[derive(Debug, Default)]
struct Recorded {
    method: String,
    path: String,
    headers: HeaderMap,
    /// The body as received, before any decoding.
    wire_len: usize,
    /// The body, gunzipped when `content-encoding: gzip`.
    body: Vec<u8>,
}

/// A TLS server on 127.0.0.1 that behaves as told and records every request.
struct TestServer {
    url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handshakes: Arc<AtomicUsize>,
    accept_task: JoinHandle<()>,
}

impl TestServer {
    async fn start(pki: &TestPki, behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = TlsAcceptor::from(pki.server_config());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn({
            let requests = Arc::clone(&requests);
            let handshakes = Arc::clone(&handshakes);
            async move {
                for _ in 0..MAX_CONNECTIONS {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve_connection(
                        tcp,
                        acceptor.clone(),
                        behaviour.clone(),
                        Arc::clone(&requests),
                        Arc::clone(&handshakes),
                    ));
                }
            }
        });
        TestServer {
            url: format!("https://127.0.0.1:{port}/v1/events"),
            requests,
            handshakes,
            accept_task,
        }
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// A transport for this server that trusts the test CA.
    fn config(&self) -> HttpsConfig {
        HttpsConfig::new(&self.url, USER_AGENT).with_extra_ca(extra_ca(trusted()))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    behaviour: Behaviour,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handshakes: Arc<AtomicUsize>,
) {
    if let Behaviour::SilentTcp = behaviour {
        drain_until_closed(tcp).await;
        return;
    }
    // An untrusting client aborts the handshake; that connection simply ends here.
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    handshakes.fetch_add(1, Ordering::SeqCst);
    match behaviour {
        Behaviour::SilentTcp => unreachable!("handled above"),
        Behaviour::SilentAfterHandshake => drain_until_closed(tls).await,
        Behaviour::PartialThenClose | Behaviour::PartialThenReset => {
            read_request(&mut tls).await;
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConte")
                .await
                .unwrap();
            tls.flush().await.unwrap();
            if let Behaviour::PartialThenReset = behaviour {
                tls.get_ref().0.set_zero_linger().unwrap();
            }
            drop(tls);
        }
        Behaviour::HeadThen {
            status,
            headers,
            body,
        } => {
            read_request(&mut tls).await;
            requests.lock().unwrap().push(Recorded::default());
            let mut head =
                format!("HTTP/1.1 {status} Whatever\r\ncontent-length: {ANNOUNCED_BODY_LEN}\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            tls.write_all(head.as_bytes()).await.unwrap();
            tls.flush().await.unwrap();
            match body {
                BodyAfterHead::Trickle => {
                    // Pacing the body is the behaviour under test, not a wait for something.
                    let mut ticks = tokio::time::interval(Duration::from_secs(1));
                    for _ in 0..HANG_GUARD.as_secs() {
                        ticks.tick().await;
                        let sent = async {
                            tls.write_all(b"x").await?;
                            tls.flush().await
                        };
                        if sent.await.is_err() {
                            break;
                        }
                    }
                }
                BodyAfterHead::Withhold => drain_until_closed(tls).await,
                BodyAfterHead::CutOff => {
                    tls.write_all(b"xxxx").await.unwrap();
                    tls.flush().await.unwrap();
                    drop(tls);
                }
            }
        }
        Behaviour::Answer {
            status,
            headers,
            body_len,
        } => {
            let service = service_fn(move |request: Request<Incoming>| {
                let requests = Arc::clone(&requests);
                let headers = headers.clone();
                async move {
                    let recorded = record(request).await;
                    requests.lock().unwrap().push(recorded);
                    let mut response = Response::new(Full::new(Bytes::from(vec![b'x'; body_len])));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            // The client closing or resetting the connection ends this; both are fine here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    }
}

async fn record(request: Request<Incoming>) -> Recorded {
    let (parts, body) = request.into_parts();
    let wire = body.collect().await.unwrap().to_bytes().to_vec();
    let body = if parts
        .headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip")
    {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(wire.as_slice())
            .read_to_end(&mut decoded)
            .unwrap();
        decoded
    } else {
        wire.clone()
    };
    Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        wire_len: wire.len(),
        body,
    }
}

/// Reads and discards until the peer closes, or the hang guard passes.
async fn drain_until_closed(mut stream: impl tokio::io::AsyncRead + Unpin) {
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(HANG_GUARD, async {
        while let Ok(read) = stream.read(&mut buffer).await {
            if read == 0 {
                break;
            }
        }
    })
    .await;
}

/// Reads one whole request (its head, and a body as long as its `content-length`), so that
/// closing the connection afterwards leaves no unread data that would turn a close into a reset;
/// at most 64 KiB, and never past the hang guard.
async fn read_request(stream: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while seen.len() < 64 * 1024 && !whole_request(&seen) {
        match tokio::time::timeout(HANG_GUARD, stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => seen.extend_from_slice(&buffer[..read]),
            _ => return,
        }
    }
}

fn whole_request(seen: &[u8]) -> bool {
    let Some(head_end) = seen.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let body_len: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    seen.len() >= head_end + 4 + body_len
}

async fn send(transport: &HttpsTransport, events: &[EncodedEvent]) -> Result<(), SendError> {
    tokio::time::timeout(HANG_GUARD, transport.send(events))
        .await
        .expect("send outlived the hang guard")
}

fn event_ids(body: &[u8]) -> Vec<String> {
    let batch: serde_json::Value = serde_json::from_slice(body).unwrap();
    let object = batch.as_object().unwrap();
    assert_eq!(object.len(), 2, "only schema_version and events: {batch}");
    assert_eq!(batch["schema_version"], 1);
    batch["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids(events: &[EncodedEvent]) -> Vec<String> {
    events.iter().map(|event| event.id().to_string()).collect()
}

#[tokio::test]
async fn delivers_batches_in_the_wire_format() {
    let server = TestServer::start(trusted(), answer(200)).await;
    let transport = HttpsTransport::new(server.config()).unwrap();
    // (events in the batch, compressed?) — one event stays under the 1 KiB threshold, a hundred
    // go over it; both go over the same pooled connection or a new one, as the client likes.
    let cases = [(1, false), (100, true), (3, true)];
    for (index, (count, gzipped)) in cases.into_iter().enumerate() {
        let events = encoded_events(count);
        let plain_len = encode_batch(&events).len();
        assert_eq!(
            plain_len > HttpsConfig::DEFAULT_GZIP_THRESHOLD,
            gzipped,
            "the case must sit on the intended side of the threshold ({plain_len} bytes)"
        );
        send(&transport, &events).await.unwrap();

        let requests = server.requests.lock().unwrap();
        assert_eq!(requests.len(), index + 1);
        let request = &requests[index];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/events");
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["user-agent"], USER_AGENT);
        assert_eq!(
            request.headers["content-length"],
            request.wire_len.to_string()
        );
        assert_eq!(
            request
                .headers
                .get("content-encoding")
                .map(|value| value.to_str().unwrap()),
            gzipped.then_some("gzip"),
            "{count} events"
        );
        if gzipped {
            assert!(request.wire_len < plain_len, "gzip should shrink the batch");
        }
        assert_eq!(request.body.len(), plain_len);
        assert_eq!(event_ids(&request.body), ids(&events), "{count} events");
    }
    assert_eq!(transport.kind(), "https");
    assert_eq!(transport.destination(), server.url);
}

/// What a send must come back with.
#[derive(Debug)]
enum Expected {
    Delivered,
    /// Retryable, with `retry_after` absent or within these bounds in seconds.
    Retry(Option<(u64, u64)>),
    TooLarge,
    Rejected,
}

#[tokio::test]
async fn every_status_maps_to_the_documented_outcome() {
    let in_30_seconds = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let max = HttpsTransport::MAX_RETRY_AFTER.as_secs();
    let cases: Vec<(&str, Behaviour, Expected)> = vec![
        ("200", answer(200), Expected::Delivered),
        ("204", answer(204), Expected::Delivered),
        (
            "200 with a body larger than what is read",
            Behaviour::Answer {
                status: 200,
                headers: Vec::new(),
                body_len: 1024 * 1024,
            },
            Expected::Delivered,
        ),
        ("500", answer(500), Expected::Retry(None)),
        ("502", answer(502), Expected::Retry(None)),
        (
            "500 ignores Retry-After",
            answer_with(500, "retry-after", "7"),
            Expected::Retry(None),
        ),
        (
            "503 with delta-seconds",
            answer_with(503, "retry-after", "7"),
            Expected::Retry(Some((7, 7))),
        ),
        (
            "503 without Retry-After",
            answer(503),
            Expected::Retry(None),
        ),
        (
            "429 with an HTTP-date 30 s ahead",
            answer_with(429, "retry-after", in_30_seconds),
            Expected::Retry(Some((27, 30))),
        ),
        (
            "429 with a huge delay is capped",
            answer_with(429, "retry-after", "999999"),
            Expected::Retry(Some((max, max))),
        ),
        (
            "429 with an unparseable Retry-After",
            answer_with(429, "retry-after", "soon"),
            Expected::Retry(None),
        ),
        ("408", answer(408), Expected::Retry(None)),
        ("413", answer(413), Expected::TooLarge),
        ("400", answer(400), Expected::Rejected),
        ("404", answer(404), Expected::Rejected),
        ("401", answer(401), Expected::Rejected),
        (
            "301 is not followed",
            answer_with(301, "location", "http://127.0.0.1:1/"),
            Expected::Rejected,
        ),
    ];
    for (name, behaviour, expected) in cases {
        let server = TestServer::start(trusted(), behaviour).await;
        let transport = HttpsTransport::new(server.config()).unwrap();
        let events = encoded_events(2);
        let outcome = send(&transport, &events).await;
        assert_eq!(server.request_count(), 1, "{name}: one request, no retries");
        check_outcome(name, &outcome, &expected, &server.url, &events);
    }
}

/// Checks a send's outcome against what the case expects; `name` starts with the status.
fn check_outcome(
    name: &str,
    outcome: &Result<(), SendError>,
    expected: &Expected,
    url: &str,
    events: &[EncodedEvent],
) {
    match (outcome, expected) {
        (Ok(()), Expected::Delivered) | (Err(SendError::TooLarge), Expected::TooLarge) => {}
        (
            Err(SendError::Retryable {
                message,
                retry_after,
            }),
            Expected::Retry(bounds),
        ) => {
            let status = &name[..3];
            assert!(message.contains(status), "{name}: {message}");
            match (retry_after, bounds) {
                (None, None) => {}
                (Some(after), Some((low, high))) => assert!(
                    (*low..=*high).contains(&after.as_secs()),
                    "{name}: {after:?} not in {low}..={high} s"
                ),
                _ => panic!("{name}: retry_after {retry_after:?}, expected {bounds:?}"),
            }
        }
        (Err(SendError::Rejected { message }), Expected::Rejected) => {
            assert!(message.contains(&name[..3]), "{name}: {message}");
            assert!(message.contains(url), "{name}: {message}");
        }
        _ => panic!("{name}: got {outcome:?}, expected {expected:?}"),
    }
    if let Err(error) = outcome {
        for event in events {
            let id = event.id().to_string();
            assert!(!error.to_string().contains(&id), "{name}: {error}");
        }
    }
}

/// How long the callers in the test below give a send, as the worker races every send against
/// its own deadline: far shorter than their request timeout, well over the 1 s body timeout.
const CALLER_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn the_response_head_decides_whatever_the_body_does_next() {
    let head_then = |status: u16, headers: Vec<(&'static str, String)>, body| Behaviour::HeadThen {
        status,
        headers,
        body,
    };
    let busy = || vec![("retry-after", "7".to_owned())];
    let cases: Vec<(&str, Behaviour, Expected)> = vec![
        (
            "200, then the body trickles",
            head_then(200, Vec::new(), BodyAfterHead::Trickle),
            Expected::Delivered,
        ),
        (
            "200, then the body never comes",
            head_then(200, Vec::new(), BodyAfterHead::Withhold),
            Expected::Delivered,
        ),
        (
            "200, then the body is cut off",
            head_then(200, Vec::new(), BodyAfterHead::CutOff),
            Expected::Delivered,
        ),
        (
            "204, then a body that should not be there trickles",
            head_then(204, Vec::new(), BodyAfterHead::Trickle),
            Expected::Delivered,
        ),
        (
            "503 with Retry-After, then the body trickles",
            head_then(503, busy(), BodyAfterHead::Trickle),
            Expected::Retry(Some((7, 7))),
        ),
        (
            "500, then the body never comes",
            head_then(500, Vec::new(), BodyAfterHead::Withhold),
            Expected::Retry(None),
        ),
        (
            "413, then the body trickles",
            head_then(413, Vec::new(), BodyAfterHead::Trickle),
            Expected::TooLarge,
        ),
        (
            "400, then the body never comes",
            head_then(400, Vec::new(), BodyAfterHead::Withhold),
            Expected::Rejected,
        ),
    ];
    for (name, behaviour, expected) in cases {
        let server = TestServer::start(trusted(), behaviour).await;
        // A request timeout far past the caller's deadline: only the body's own bound can end
        // these sends in time.
        let transport = HttpsTransport::new(
            server
                .config()
                .with_request_timeout(Duration::from_secs(600)),
        )
        .unwrap();
        let events = encoded_events(50);
        let outcome = tokio::time::timeout(CALLER_DEADLINE, transport.send(&events))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: the send was still reading the body at the caller's deadline of \
                     {CALLER_DEADLINE:?}, so its answered events would count as undelivered"
                )
            });
        assert_eq!(server.request_count(), 1, "{name}: one request, no retries");
        check_outcome(name, &outcome, &expected, &server.url, &events);
    }
}

#[tokio::test]
async fn broken_and_silent_servers_are_retryable_within_the_request_timeout() {
    // (behaviour, what the message must say)
    let cases = [
        (Behaviour::SilentTcp, "within the request timeout"),
        (
            Behaviour::SilentAfterHandshake,
            "within the request timeout",
        ),
        (Behaviour::PartialThenClose, "closed the connection"),
        (Behaviour::PartialThenReset, "the connection was reset"),
    ];
    for (behaviour, needle) in cases {
        let server = TestServer::start(trusted(), behaviour.clone()).await;
        let transport = HttpsTransport::new(
            server
                .config()
                .with_request_timeout(Duration::from_millis(300)),
        )
        .unwrap();
        match send(&transport, &encoded_events(2)).await {
            Err(SendError::Retryable {
                message,
                retry_after: None,
            }) => {
                assert!(message.contains(needle), "{behaviour:?}: {message}");
                assert!(message.contains(&server.url), "{behaviour:?}: {message}");
            }
            other => panic!("{behaviour:?}: expected a retryable error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn untrusted_certificates_are_retryable_and_nothing_is_sent() {
    let server = TestServer::start(untrusted(), answer(200)).await;
    // (what the client trusts besides the web roots)
    let cases = [None, Some(extra_ca(trusted()))];
    for extra_ca in cases {
        let mut config = HttpsConfig::new(&server.url, USER_AGENT);
        config.extra_ca = extra_ca.clone();
        let transport = HttpsTransport::new(config).unwrap();
        match send(&transport, &encoded_events(1)).await {
            Err(SendError::Retryable {
                message,
                retry_after: None,
            }) => {
                for needle in ["certificate is not trusted", "extra CA"] {
                    assert!(message.contains(needle), "{extra_ca:?}: {message}");
                }
            }
            other => panic!("{extra_ca:?}: expected a retryable error, got {other:?}"),
        }
    }
    assert_eq!(server.handshakes(), 0);
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn an_endpoint_that_is_down_is_retryable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = HttpsConfig::new(format!("https://127.0.0.1:{port}/v1/events"), USER_AGENT)
        .with_extra_ca(extra_ca(trusted()));
    let transport = HttpsTransport::new(config).unwrap();
    match send(&transport, &encoded_events(1)).await {
        Err(SendError::Retryable {
            message,
            retry_after: None,
        }) => assert!(
            message.contains("cannot connect: the connection was refused"),
            "{message}"
        ),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

#[tokio::test]
async fn batches_over_the_size_limit_are_too_large_and_nothing_is_sent() {
    let server = TestServer::start(trusted(), answer(200)).await;
    let twenty = encoded_events(20);
    let one = encoded_events(1);
    let twenty_len = encode_batch(&twenty).len();
    // (limit, batch, delivered?)
    let cases = [
        (twenty_len - 1, &twenty, false),
        (twenty_len / 2, &twenty, false),
        (10, &one, false),
        (twenty_len, &twenty, true),
    ];
    let mut delivered = 0;
    for (limit, events, fits) in cases {
        let transport = HttpsTransport::new(server.config().with_max_body_size(limit)).unwrap();
        let outcome = send(&transport, events).await;
        if fits {
            outcome.unwrap();
            delivered += 1;
        } else {
            assert_eq!(outcome, Err(SendError::TooLarge), "limit {limit}");
        }
        assert_eq!(server.request_count(), delivered, "limit {limit}");
    }
}

#[tokio::test]
async fn an_empty_batch_sends_nothing() {
    let server = TestServer::start(trusted(), answer(500)).await;
    let transport = HttpsTransport::new(server.config()).unwrap();
    send(&transport, &[]).await.unwrap();
    assert_eq!(server.handshakes(), 0);
}

#[test]
fn invalid_settings_are_refused_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let damaged = dir.path().join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let endpoint = "https://telemetry.example.com/v1/events";
    let with_ca = |ca: ExtraCa| HttpsConfig::new(endpoint, USER_AGENT).with_extra_ca(ca);
    let cases: Vec<(&str, HttpsConfig, Vec<String>)> = vec![
        (
            "plain http",
            HttpsConfig::new("http://telemetry.example.com/v1/events", USER_AGENT),
            vec!["plain HTTP".into(), "not allowed".into(), "https://".into()],
        ),
        (
            "another scheme",
            HttpsConfig::new("ftp://telemetry.example.com", USER_AGENT),
            vec!["not an https:// URL".into()],
        ),
        (
            "no host",
            HttpsConfig::new("https:///v1/events", USER_AGENT),
            vec!["not a valid URL".into()],
        ),
        (
            "missing CA file",
            with_ca(ExtraCa::File(missing.clone())),
            vec![
                "cannot read the CA file".into(),
                missing.display().to_string(),
            ],
        ),
        (
            "a CA file that is not PEM",
            with_ca(ExtraCa::File(not_pem.clone())),
            vec![
                not_pem.display().to_string(),
                "not a PEM certificate".into(),
                "BEGIN CERTIFICATE".into(),
            ],
        ),
        (
            "a damaged PEM block",
            with_ca(ExtraCa::File(damaged.clone())),
            vec![
                damaged.display().to_string(),
                "not a PEM certificate".into(),
            ],
        ),
        (
            "PEM bytes without a certificate",
            with_ca(ExtraCa::Pem(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            )),
            vec!["extra CA".into(), "no certificate found".into()],
        ),
        (
            "a certificate that is not one",
            with_ca(ExtraCa::Pem(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
            )),
            vec!["cannot be used as a trust anchor".into()],
        ),
        (
            "a user agent with a line break",
            HttpsConfig::new(endpoint, "flowkit/0.1.0\r\nx-injected: 1"),
            vec!["user agent".into(), "visible ASCII".into()],
        ),
        (
            "a zero request timeout",
            HttpsConfig::new(endpoint, USER_AGENT).with_request_timeout(Duration::ZERO),
            vec!["request timeout".into(), "more than zero".into()],
        ),
        (
            "a connect timeout of a day",
            HttpsConfig::new(endpoint, USER_AGENT)
                .with_connect_timeout(Duration::from_secs(86_400)),
            vec!["connect timeout".into(), "at most 1h".into()],
        ),
    ];
    for (name, config, needles) in cases {
        let error: HttpsConfigError = HttpsTransport::new(config).unwrap_err();
        let message = error.to_string();
        for needle in needles {
            assert!(
                message.contains(&needle),
                "{name}: {message:?} lacks {needle:?}"
            );
        }
        assert_eq!(
            message,
            message.trim_end_matches('.'),
            "{name}: no trailing period"
        );
        assert!(message.starts_with(char::is_lowercase), "{name}: {message}");
    }
}

#[test]
fn a_valid_ca_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &trusted().ca_pem).unwrap();
    let config = HttpsConfig::new("https://127.0.0.1:1/v1/events", USER_AGENT)
        .with_extra_ca(ExtraCa::File(path));
    let transport = HttpsTransport::new(config).unwrap();
    assert_eq!(transport.destination(), "https://127.0.0.1:1/v1/events");
}

#[test]
fn messages_and_the_destination_never_show_a_query_or_a_fragment() {
    // A query can carry a token; what the transport shows (in `destination` and in every
    // error message, which reach logs and the `flush` command) keeps the path only.
    let endpoint = "https://127.0.0.1:1/v1/events?token=S3cret#frag";
    let transport = HttpsTransport::new(
        HttpsConfig::new(endpoint, USER_AGENT).with_connect_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    assert_eq!(transport.destination(), "https://127.0.0.1:1/v1/events");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(transport.send(&encoded_events(1)))
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("https://127.0.0.1:1/v1/events"),
        "{message}"
    );
    assert!(
        !message.contains("S3cret") && !message.contains("frag"),
        "{message}"
    );
}
