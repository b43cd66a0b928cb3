//! Several collectors on one PostgreSQL database, under load and failure, as the binary runs:
//! every batch is sent to two collectors (a client whose answer was lost retries elsewhere),
//! one collector is SIGKILLed midway, the database is restarted once during the load. Every
//! event is stored exactly once, the survivor keeps serving, and a third collector started
//! afterwards reports the same totals. Counted, not timed.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::postgres::start as start_postgres;
use support::{Pki, TOKEN, batch, run_event, send, try_send};
use telemetry_model::SessionId;

const BATCHES: usize = 60;
const PER_BATCH: usize = 50;

/// A collector binary on a free port of 127.0.0.1, storing in `database`.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Collector {
    fn start(dir: &Path, database: &str) -> Collector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .arg("--catalog")
            .arg(format!("flowkit={}", support::flowkit_catalog().display()))
            .env("TELEMETRY_COLLECTOR_DATABASE", database)
            .env("TELEMETRY_COLLECTOR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on https://")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .parse()
            .unwrap();
        Collector { child, addr }
    }

    fn kill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        self.child.wait().unwrap();
    }

    fn total_events(&self, client: &Arc<rustls::ClientConfig>) -> u64 {
        let reply = send(
            self.addr,
            client,
            "GET",
            "/v1/report?sdk=flowkit&days=1",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            Vec::new(),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["totals"]["events"].as_u64().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What happened to one send.
#[derive(Debug, Default)]
struct Tally {
    stored: u64,
    duplicates: u64,
    busy: u64,
    failed: u64,
}

/// Sends `body` to `addr` until it is answered 200 or `attempts` run out; a 503 or a broken
/// connection is retried after a short pause, as the client library does.
fn deliver(
    addr: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
    body: &[u8],
    attempts: usize,
    tally: &mut Tally,
) -> bool {
    for _ in 0..attempts {
        match try_send(addr, client, "POST", "/v1/events", &[], body.to_vec()) {
            Ok(reply) if reply.status == 200 => {
                let answer = reply.json();
                tally.stored += answer["accepted"].as_u64().unwrap();
                tally.duplicates += answer["duplicates"].as_u64().unwrap();
                assert_eq!(answer["rejected"], 0, "{answer}");
                return true;
            }
            Ok(reply) => {
                assert_eq!(reply.status, 503, "{}", reply.text());
                assert!(reply.headers.contains_key("retry-after"));
                tally.busy += 1;
            }
            Err(_) => tally.failed += 1,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn collectors_sharing_postgres_store_each_event_once_through_a_kill_and_a_database_restart() {
    let Some(server) = start_postgres() else {
        return;
    };
    let database = server.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate();
    std::fs::write(dir.path().join("cert.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &pki.key_pem).unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();

    // Two collectors start at once: the schema is migrated once.
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| Collector::start(dir.path(), &database));
        let b = scope.spawn(|| Collector::start(dir.path(), &database));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut first = first;
    let mut tally_first = Tally::default();
    let mut tally_second = Tally::default();
    let mut every_event = std::collections::BTreeSet::new();
    std::thread::scope(|restarts| {
        for index in 0..BATCHES {
            let session = SessionId::random();
            let events: Vec<_> = (0..PER_BATCH)
                .map(|_| run_event(session, &["retries"]))
                .collect();
            every_event.extend(events.iter().map(|event| event.event_id.to_string()));
            let body = batch(&events);
            if index == BATCHES / 3 {
                first.kill();
            }
            if index == 2 * BATCHES / 3 {
                // The database goes away for a while during the load, and comes back.
                restarts.spawn(|| server.restart(Duration::from_millis(1_500)));
            }
            // Both collectors get the batch, at the same time.
            let (to_first, to_second) = std::thread::scope(|scope| {
                let a = scope.spawn(|| {
                    let mut tally = Tally::default();
                    let attempts = if index < BATCHES / 3 { 50 } else { 1 };
                    deliver(first.addr, &pki.client, &body, attempts, &mut tally);
                    tally
                });
                let b = scope.spawn(|| {
                    let mut tally = Tally::default();
                    // The survivor must take every batch, database restart or not.
                    assert!(
                        deliver(second.addr, &pki.client, &body, 150, &mut tally),
                        "batch {index} never stored: {tally:?}"
                    );
                    tally
                });
                (a.join().unwrap(), b.join().unwrap())
            });
            for (total, part) in [(&mut tally_first, to_first), (&mut tally_second, to_second)] {
                total.stored += part.stored;
                total.duplicates += part.duplicates;
                total.busy += part.busy;
                total.failed += part.failed;
            }
        }
    });
    let sent = (BATCHES * PER_BATCH) as u64;
    assert_eq!(every_event.len() as u64, sent);
    assert_eq!(
        tally_first.stored + tally_second.stored,
        sent,
        "each event stored once across both collectors: {tally_first:?} {tally_second:?}"
    );
    assert!(
        tally_first.failed > 0,
        "the killed collector was never missed: {tally_first:?}"
    );
    assert!(
        tally_second.busy + tally_second.failed > 0,
        "the database restart was never felt: {tally_second:?}"
    );

    // The survivor and a collector started afterwards agree on the totals.
    assert_eq!(second.total_events(&pki.client), sent);
    let third = Collector::start(dir.path(), &database);
    assert_eq!(third.total_events(&pki.client), sent);
    let migrations = Command::new(
        telemetry_testkit::postgres::binaries()
            .unwrap()
            .join("psql"),
    )
    .args([
        "-X",
        "-tA",
        "-d",
        &database,
        "-c",
        "SELECT COUNT(*) FROM schema_migrations",
    ])
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&migrations.stdout).trim(), "1");
}
