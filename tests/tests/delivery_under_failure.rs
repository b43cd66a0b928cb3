//! What delivery promises when the destination misbehaves: every accepted event is accounted
//! for (delivered, pending or counted as dropped), every deadline holds, and what one process
//! learns binds and shows in the next.
//!
//! A real rustls server on 127.0.0.1 plays the destination; flowkit runs real workloads into
//! a real SQLite spool; a second configuration on the same state directory stands for the next
//! process.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use flowkit::{Flow, FlowKit, Params, Task};
use support::{Script, TestPki, TestServer};
use telemetry::{FlushError, TelemetryConfig};
use telemetry_e2e::{enabled_flowkit_config_with, exported_lines};

/// flowkit's configuration with telemetry on, sending to `server`, with state in `dir/home`.
fn https_config(
    dir: &Path,
    server: &TestServer,
    pki: &TestPki,
    vars: &[(&str, &str)],
) -> TelemetryConfig {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();
    let endpoint = server.endpoint();
    let mut pairs = vec![
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
        ("FLOWKIT_SDK_TELEMETRY_CA_FILE", ca_file.as_str()),
    ];
    pairs.extend(vars.iter().copied());
    enabled_flowkit_config_with(&dir.join("home"), &dir.join("unused-export"), &pairs)
}

fn quick_flow() -> Flow {
    Flow::new("customer-sync-acme").task(Task::new("load", |_| Ok(1.into())))
}

fn workload(kit: &FlowKit, runs: usize) {
    let flow = quick_flow();
    for _ in 0..runs {
        kit.run(&flow, &Params::new());
    }
}

#[test]
fn a_destination_that_hangs_costs_no_event() {
    let pki = TestPki::generate("hanging");
    // Answers nothing; never finishes the TLS handshake; sends its answer a byte a second.
    for script in [
        Script::NeverAnswer,
        Script::NeverHandshake,
        Script::TrickleHead,
    ] {
        let server = TestServer::start(&pki, script.clone());
        let dir = tempfile::tempdir().unwrap();
        // Small batches, so that a request is in flight (and hangs) almost from the first run.
        // The default shutdown timeout: what is checked is that a hanging request never holds
        // up storing. With a shorter one, a debug build on a loaded machine may not scrub and
        // store 3,000 events in the three quarters of it that storing gets, and the rest is
        // (rightly) counted as dropped for storage instead.
        let config = https_config(
            dir.path(),
            &server,
            &pki,
            &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "10")],
        );
        let kit = FlowKit::start(&config);
        workload(&kit, 3_000);
        drop(kit);
        assert!(
            server.connections() > 0,
            "{script:?}: a request was in flight"
        );

        // The next process finds every run and the summary in the spool, nothing dropped.
        let status = config.status();
        assert_eq!(
            status.pending_events,
            Some(3_001),
            "{script:?}: {status:#?}"
        );
        assert_eq!(status.dropped_events, 0, "{script:?}: {status:#?}");
        assert_eq!(status.delivered_events, 0, "{script:?}: {status:#?}");
    }
}

#[test]
fn a_flush_keeps_its_deadline_whatever_the_destination_does() {
    let pki = TestPki::generate("slow");
    for script in [
        Script::NeverAnswer,
        Script::CloseMidResponse,
        Script::NeverHandshake,
        Script::TrickleHead,
    ] {
        let server = TestServer::start(&pki, script.clone());
        let dir = tempfile::tempdir().unwrap();
        let config = https_config(dir.path(), &server, &pki, &[]);
        let kit = FlowKit::start(&config);
        workload(&kit, 5);
        let timeout = Duration::from_secs(1);
        let started = Instant::now();
        let result = kit.telemetry().flush(timeout);
        kit.telemetry().shutdown(Duration::from_millis(300));
        let took = started.elapsed();
        assert!(result.is_err(), "{script:?}: {result:?}");
        // A contract, not a benchmark: the bound is the deadline and a generous margin for a
        // loaded machine, far below the second wait the old shutdown added.
        assert!(
            took < timeout + Duration::from_millis(900),
            "{script:?}: flush and shutdown took {took:?} for a {timeout:?} deadline"
        );
        drop(kit);
        assert_eq!(config.status().pending_events, Some(6), "{script:?}");
    }
}

#[test]
fn status_in_a_new_process_shows_what_earlier_ones_delivered_and_dropped() {
    let pki = TestPki::generate("counting");
    let server = TestServer::start(&pki, Script::status(200));
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(dir.path(), &server, &pki, &[]).queue_capacity(1);
    let kit = FlowKit::start(&config);
    // A queue of one record: a burst drops most runs, and each drop is counted.
    workload(&kit, 2_000);
    let dropped = kit.telemetry().dropped_records();
    assert!(dropped > 0, "the burst overflowed the queue");
    kit.telemetry().flush(Duration::from_secs(10)).unwrap();
    drop(kit);

    let status = config.status();
    let delivered = status.delivered_events;
    assert!(status.last_sent.is_some(), "{status:#?}");
    assert_eq!(
        status.dropped_by_reason["queue_full"], dropped,
        "{status:#?}"
    );
    assert_eq!(status.pending_events, Some(0), "{status:#?}");
    // Conservation: every run and the summary is delivered or dropped, nothing else.
    assert_eq!(delivered + status.dropped_events, 2_001, "{status:#?}");
    let accepted: u64 = server
        .requests()
        .iter()
        .filter(|request| request.accepted())
        .map(|request| request.events().len() as u64)
        .sum();
    assert_eq!(accepted, delivered);
}

#[test]
fn the_summary_is_never_lost_at_exit() {
    // The worker once returned on seeing the closed queue before it read the shutdown message
    // already waiting, losing the summary in a few runs out of forty.
    for attempt in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let export = dir.path().join("export");
        let config = enabled_flowkit_config_with(&dir.path().join("home"), &export, &[]);
        let kit = FlowKit::start(&config);
        workload(&kit, 1_000);
        drop(kit);
        let lines = exported_lines(&export);
        let summaries = lines
            .iter()
            .filter(|line| line.contains(r#""event_type":"sdk_usage""#))
            .count();
        assert_eq!(summaries, 1, "attempt {attempt}");
        assert_eq!(lines.len(), 1_001, "attempt {attempt}");
    }
}

#[test]
fn a_flush_reports_a_wait_the_server_asked_for_instead_of_posting() {
    let pki = TestPki::generate("busy");
    let server = TestServer::start(
        &pki,
        Script::Answer {
            status: 503,
            retry_after: Some("30"),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(dir.path(), &server, &pki, &[]);
    let kit = FlowKit::start(&config);
    workload(&kit, 3);
    assert!(matches!(
        kit.telemetry().flush(Duration::from_secs(10)),
        Err(FlushError::Delivery(_))
    ));
    drop(kit);
    assert_eq!(server.requests().len(), 1);

    // The next process: its flush posts nothing and says until when.
    let kit = FlowKit::start(&config);
    let error = kit.telemetry().flush(Duration::from_secs(10)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("the server asked to wait until ")
            && message.ends_with(" UTC; 4 events pending"),
        "{message}"
    );
    drop(kit);
    assert_eq!(server.requests().len(), 1, "{:#?}", server.requests());
    let status = config.status();
    assert!(status.paused_until.is_some(), "{status:#?}");
    assert_eq!(status.failed_deliveries, 1, "{status:#?}");
}
