//! What delivering a batch costs the worker, per transport: 100 events (the default batch size)
//! sent over HTTPS to a real TLS server on 127.0.0.1, and appended to an offline JSONL export.
//!
//! - `send_100/https_keep_alive`: one `HttpsTransport` sending batch after batch, so its pooled
//!   connection is reused as it is in a worker that delivers regularly: gzip (the batch is far
//!   above the 1 KiB threshold), TLS and HTTP/1.1 on loopback, and the server reading the body.
//! - `send_100/https_new_connection`: a new `HttpsTransport` for every batch, so every send pays
//!   for the TCP connection and the TLS handshake, as the first delivery of a process does;
//!   `send_100/https_build_only` is building the transport alone (root store, extra CA, TLS
//!   client), which is part of that.
//! - `send_100/file`: `FileTransport` appending the batch to a JSONL file in a temporary
//!   directory on disk (under a lock on the file, without a sync).
//!
//! `docs/performance.md` records the results. Run with
//! `cargo bench -p telemetry-transport --features https --bench transport`.

// A benchmark that cannot set itself up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use telemetry_model::Name;
use telemetry_testkit::fixtures::encoded_events;
use telemetry_testkit::pki::TestPki;
use telemetry_transport::{ExtraCa, FileTransport, HttpsConfig, HttpsTransport, Transport};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const BATCH: usize = 100;

/// An HTTPS server on 127.0.0.1, on its own thread and runtime, that reads every request's
/// body and answers 202. Returns its URL and a count of the requests it answered.
fn start_server(tls: Arc<rustls::ServerConfig>) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "https://127.0.0.1:{}/v1/events",
        listener.local_addr().unwrap().port()
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let acceptor = TlsAcceptor::from(tls);
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                // As servers in front of real collectors do: without it, Nagle's algorithm holds
                // the short answer back until the client's delayed acknowledgement of the TLS
                // session ticket, 40 ms later on Linux.
                tcp.set_nodelay(true).unwrap();
                let acceptor = acceptor.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let counter = Arc::clone(&counter);
                        async move {
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            assert!(!body.is_empty());
                            counter.fetch_add(1, Ordering::Relaxed);
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::ACCEPTED;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    // The client closing its connection ends this.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
    });
    (url, answered)
}

fn send_100(c: &mut Criterion) {
    let pki = TestPki::generate("transport benchmark");
    let (url, answered) = start_server(pki.server_config());
    let config = || {
        HttpsConfig::new(&url, "bench/0.1.0").with_extra_ca(ExtraCa::Pem(pki.ca_pem.clone().into()))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let events = encoded_events(BATCH);

    let mut group = c.benchmark_group("send_100");
    group.throughput(Throughput::Elements(BATCH as u64));

    let kept = HttpsTransport::new(config()).unwrap();
    let sent_before = answered.load(Ordering::Relaxed);
    let mut sends = 0;
    group.bench_function("https_keep_alive", |b| {
        b.iter(|| {
            runtime.block_on(kept.send(&events)).unwrap();
            sends += 1;
        });
    });
    assert_eq!(
        answered.load(Ordering::Relaxed) - sent_before,
        sends,
        "every batch reached the server"
    );

    group.bench_function("https_build_only", |b| {
        b.iter(|| HttpsTransport::new(config()).unwrap());
    });
    group.bench_function("https_new_connection", |b| {
        b.iter(|| {
            let transport = HttpsTransport::new(config()).unwrap();
            runtime.block_on(transport.send(&events)).unwrap();
        });
    });

    let dir = tempfile::tempdir().unwrap();
    let file = FileTransport::new(dir.path(), Name::new("bench").unwrap());
    group.bench_function("file", |b| {
        b.iter(|| runtime.block_on(file.send(&events)).unwrap());
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = telemetry_testkit::bench::short(Duration::from_secs(3));
    targets = send_100
}
criterion_main!(benches);
