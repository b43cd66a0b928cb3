//! The collector over real TLS on 127.0.0.1: answers for every kind of body, the report behind
//! its token, back-pressure when the store cannot keep up, and a shutdown that finishes what it
//! accepted.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use support::{
    Pki, Running, TOKEN, batch, contains, gzip, run_event, send, server_config, store_bytes,
};
use telemetry_collector::ingest::IngestConfig;
use telemetry_collector::report::{Report, ReportQuery};
use telemetry_collector::store::{Expired, SqliteStore, Store, StoreError, WriteJob, WriteOutcome};
use telemetry_collector::validate::Catalogs;
use telemetry_model::{HourTimestamp, SessionId};

const EVENTS: &str = "/v1/events";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[test]
fn a_batch_is_stored_once_and_answered_with_counts() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let running = Running::start(Arc::new(store), server_config(&pki));
    let session = SessionId::random();
    let events: Vec<_> = (0..100).map(|_| run_event(session, &["retries"])).collect();
    let body = batch(&events);

    let reply = send(running.addr, &pki.client, "POST", EVENTS, &[], body.clone());
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"accepted": 100, "duplicates": 0, "rejected": 0})
    );
    // The client's answer was lost and it sends the batch again, compressed this time.
    let reply = send(
        running.addr,
        &pki.client,
        "POST",
        EVENTS,
        &[("content-encoding", "gzip")],
        gzip(&body),
    );
    assert_eq!(
        reply.json(),
        serde_json::json!({"accepted": 0, "duplicates": 100, "rejected": 0})
    );
    let report = send(
        running.addr,
        &pki.client,
        "GET",
        "/v1/report?sdk=flowkit&days=1",
        &[("authorization", &bearer())],
        Vec::new(),
    );
    assert_eq!(report.status, 200, "{}", report.text());
    let report: Report = serde_json::from_slice(&report.body).unwrap();
    assert_eq!(report.totals.events, 100);
    assert_eq!(report.totals.features["retries"].sessions, 1);
    running.stop();
}

#[test]
fn bodies_that_are_not_batches_get_the_status_that_says_why() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        Arc::new(SqliteStore::open(dir.path()).unwrap()),
        server_config(&pki),
    );
    let post = |headers: &[(&str, &str)], body: Vec<u8>| {
        send(running.addr, &pki.client, "POST", EVENTS, headers, body)
    };
    let not_json = post(&[], b"hello".to_vec());
    assert_eq!(not_json.status, 400);
    assert!(
        not_json.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a telemetry batch")
    );
    assert_eq!(
        post(&[], br#"{"schema_version":9,"events":[]}"#.to_vec()).status,
        400
    );
    let brotli = post(&[("content-encoding", "br")], batch(&[]));
    assert_eq!(brotli.status, 415);
    assert!(
        brotli.text().contains("identity or gzip"),
        "{}",
        brotli.text()
    );
    // 5 MiB, over the 4 MiB limit: refused from the head, before a byte of the body is read.
    let head = format!(
        "POST {EVENTS} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n\r\n",
        5 << 20
    );
    let status = support::send_head_only(running.addr, &pki.client, &head);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    let bomb = gzip(&vec![b' '; 64 << 20]);
    let inflated = post(&[("content-encoding", "gzip")], bomb);
    assert_eq!(inflated.status, 413);
    assert!(
        inflated.text().contains("once decompressed"),
        "{}",
        inflated.text()
    );
    // Refused events are counted in the answer, and nothing of them is stored.
    let mut undeclared = run_event(SessionId::random(), &["retries"]);
    undeclared
        .features
        .insert(support::name("customer_sync_acme"));
    let mut future = run_event(SessionId::random(), &[]);
    future.timestamp =
        HourTimestamp::from_unix_seconds(HourTimestamp::now().unix_seconds() + 7_200);
    let good = run_event(SessionId::random(), &[]);
    let reply = post(&[], batch(&[undeclared.clone(), future, good]));
    assert_eq!(
        reply.json(),
        serde_json::json!({"accepted": 1, "duplicates": 0, "rejected": 2})
    );
    let other_method = send(running.addr, &pki.client, "GET", EVENTS, &[], Vec::new());
    assert_eq!(other_method.status, 405);
    assert_eq!(other_method.headers["allow"], "POST");
    assert_eq!(
        send(running.addr, &pki.client, "GET", "/nope", &[], Vec::new()).status,
        404
    );
    let health = send(
        running.addr,
        &pki.client,
        "GET",
        "/healthz",
        &[],
        Vec::new(),
    );
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    running.stop();
    let bytes = store_bytes(dir.path());
    assert!(!contains(&bytes, "customer_sync_acme"));
    assert!(!contains(&bytes, &undeclared.session_id.to_string()));
}

#[test]
fn reports_need_the_token() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        Arc::new(SqliteStore::open(dir.path()).unwrap()),
        server_config(&pki),
    );
    let get = |path: &str, authorization: Option<&str>| {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| vec![("authorization", value)])
            .unwrap_or_default();
        send(running.addr, &pki.client, "GET", path, &headers, Vec::new())
    };
    for path in ["/v1/report?sdk=flowkit", "/"] {
        let refused = get(path, None);
        assert_eq!(refused.status, 401, "{path}");
        assert!(refused.headers["www-authenticate"].starts_with("Basic"));
        assert_eq!(
            get(path, Some("Bearer wrong-token-0123456789abcdef0123")).status,
            401
        );
        let prefix = &TOKEN[..TOKEN.len() - 1];
        assert_eq!(get(path, Some(&format!("Bearer {prefix}"))).status, 401);
        assert_eq!(get(path, Some(&bearer())).status, 200, "{path}");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("maintainer:{TOKEN}"));
        assert_eq!(
            get(path, Some(&format!("Basic {basic}"))).status,
            200,
            "{path}"
        );
    }
    let page = get("/", Some(&bearer()));
    assert!(page.headers["content-type"].starts_with("text/html"));
    // With one SDK known the report needs no name; a bad parameter is named.
    assert_eq!(get("/v1/report", Some(&bearer())).json()["sdk"], "flowkit");
    let bad = get("/v1/report?days=0", Some(&bearer()));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("days must be"), "{}", bad.text());
    running.stop();
}

/// A store whose writes wait until the test opens the gate, or fail while `failing` is set.
struct GatedStore {
    inner: SqliteStore,
    gate: tokio::sync::Semaphore,
    failing: AtomicBool,
    waiting: std::sync::atomic::AtomicUsize,
}

impl GatedStore {
    fn new(inner: SqliteStore) -> Arc<GatedStore> {
        Arc::new(GatedStore {
            inner,
            gate: tokio::sync::Semaphore::new(0),
            failing: AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn open(&self) {
        self.gate.add_permits(1_000);
    }
}

#[async_trait::async_trait]
impl Store for GatedStore {
    async fn register_catalogs(&self, catalogs: &Catalogs) -> Result<(), StoreError> {
        self.inner.register_catalogs(catalogs).await
    }
    async fn write(&self, jobs: Vec<WriteJob>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.unwrap();
        if self.failing.load(Ordering::SeqCst) {
            // What a full disk or a locked database looks like to the writer.
            return Err(StoreError::new(
                "storing events",
                "database or disk is full",
            ));
        }
        self.inner.write(jobs).await
    }
    async fn expire(&self, oldest: HourTimestamp) -> Result<Expired, StoreError> {
        self.inner.expire(oldest).await
    }
    async fn report(&self, query: &ReportQuery) -> Result<Report, StoreError> {
        self.inner.report(query).await
    }
    async fn sdks(&self) -> Result<Vec<String>, StoreError> {
        self.inner.sdks().await
    }
}

fn spawn_post(
    addr: std::net::SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> std::thread::JoinHandle<support::Reply> {
    let client = Arc::clone(client);
    std::thread::spawn(move || send(addr, &client, "POST", EVENTS, &[], body))
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_write_queue_answers_503_with_retry_after_and_loses_nothing_accepted() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = GatedStore::new(SqliteStore::open(dir.path()).unwrap());
    let mut config = server_config(&pki);
    config.ingest = IngestConfig {
        queue: 1,
        group_events: 1,
        retry_after: Duration::from_secs(7),
    };
    let running = Running::start(Arc::clone(&store) as Arc<dyn Store>, config);
    // The writer holds the first batch (waiting at the gate); the second waits in the queue.
    let first = spawn_post(
        running.addr,
        &pki.client,
        batch(&[run_event(SessionId::random(), &[])]),
    );
    wait_until("the writer to hold the first batch", || {
        store.waiting.load(Ordering::SeqCst) == 1
    });
    // Two more: whichever arrives first waits in the queue, the other finds it full.
    let second = spawn_post(
        running.addr,
        &pki.client,
        batch(&[run_event(SessionId::random(), &[])]),
    );
    let third = spawn_post(
        running.addr,
        &pki.client,
        batch(&[run_event(SessionId::random(), &[])]),
    );
    wait_until("one of them to be answered", || {
        second.is_finished() || third.is_finished()
    });
    let (refused, queued) = if second.is_finished() {
        (second, third)
    } else {
        (third, second)
    };
    let refused = refused.join().unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.headers["retry-after"], "7");
    assert!(!queued.is_finished(), "the queued one waits for its commit");
    store.open();
    assert_eq!(first.join().unwrap().json()["accepted"], 1);
    assert_eq!(queued.join().unwrap().json()["accepted"], 1);

    // A store that fails: 503, and the client keeps its events.
    store.failing.store(true, Ordering::SeqCst);
    let failed = send(
        running.addr,
        &pki.client,
        "POST",
        EVENTS,
        &[],
        batch(&[run_event(SessionId::random(), &[])]),
    );
    assert_eq!(failed.status, 503);
    assert_eq!(failed.headers["retry-after"], "7");
    running.stop();
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.report(&ReportQuery {
            sdk: "flowkit".to_owned(),
            until: telemetry_model::UtcDate::today(),
            days: 1,
        }))
        .unwrap();
    assert_eq!(report.totals.events, 2);
}

#[test]
fn shutdown_finishes_the_requests_it_accepted() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = GatedStore::new(SqliteStore::open(dir.path()).unwrap());
    let mut running = Running::start(Arc::clone(&store) as Arc<dyn Store>, server_config(&pki));
    let events: Vec<_> = (0..50)
        .map(|_| run_event(SessionId::random(), &[]))
        .collect();
    let pending = spawn_post(running.addr, &pki.client, batch(&events));
    wait_until("the writer to hold the batch", || {
        store.waiting.load(Ordering::SeqCst) == 1
    });
    running.begin_stop();
    // New connections are no longer accepted once shutdown began (the listener closes while
    // the request in progress still waits for its commit).
    wait_until("the listener to close", || {
        std::net::TcpStream::connect(running.addr).is_err()
    });
    assert_eq!(store.waiting.load(Ordering::SeqCst), 1);
    store.open();
    let reply = pending.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["accepted"], 50);
    running.stop();
    let reopened = SqliteStore::open(dir.path()).unwrap();
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(reopened.report(&ReportQuery {
            sdk: "flowkit".to_owned(),
            until: telemetry_model::UtcDate::today(),
            days: 1,
        }))
        .unwrap();
    assert_eq!(report.totals.events, 50);
}
