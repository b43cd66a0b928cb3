//! Delivery over HTTPS end to end: flowkit records through the facade, the facade's worker sends
//! to a real TLS server on 127.0.0.1 whose certificate is signed by a CA made in the test (and
//! trusted through `FLOWKIT_SDK_TELEMETRY_CA_FILE`), and the server's view is checked: every
//! event exactly once, in the wire format, in batches of the configured size; kept while the
//! endpoint is down, failing, busy or silent; split on 413; never sent past an untrusted
//! certificate; bounded under a flood.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use flowkit::{Flow, FlowKit, Params, Task};
use support::{Recorded, Script, TestPki, TestServer, endpoint};
use telemetry::{FlushError, PauseReason, Status, Telemetry, TelemetryConfig};
use telemetry_e2e::{
    ERROR_MESSAGE, FLOW_NAME, PARAM_VALUE, enabled_flowkit_config_with, hostile_workload,
    validate_with_python,
};

/// Long enough for any flush that is expected to succeed on a loaded machine.
const FLUSH: Duration = Duration::from_secs(10);

/// Only guards against a hang: the library's own deadlines are what the tests check.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// How often, and how many times, a test looks at `status` while the worker catches up.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
const POLLS: usize = 4_000;

/// flowkit's configuration with telemetry on, sending to `endpoint` and trusting `ca_pem` (written
/// to a file in `dir`), with state in `dir` and any further variables.
fn https_config(
    dir: &Path,
    endpoint: &str,
    ca_pem: &str,
    vars: &[(&str, &str)],
) -> TelemetryConfig {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();
    let mut pairs = vec![
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint),
        ("FLOWKIT_SDK_TELEMETRY_CA_FILE", ca_file.as_str()),
    ];
    pairs.extend(vars.iter().copied());
    // The export directory is unused: the endpoint above replaces the helper's file:// one.
    enabled_flowkit_config_with(&dir.join("home"), &dir.join("unused-export"), &pairs)
}

/// The ids of the events in the requests the server accepted (answered 2xx), in order.
fn accepted_ids(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|request| request.accepted())
        .flat_map(Recorded::event_ids)
        .collect()
}

/// The event types of the accepted events, counted.
fn accepted_types(server: &TestServer) -> BTreeMap<String, usize> {
    let mut types = BTreeMap::new();
    for request in server
        .requests()
        .iter()
        .filter(|request| request.accepted())
    {
        for event in request.events() {
            *types
                .entry(event["event_type"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    types
}

/// The server accepted `runs` run events and `summaries` usage summaries, each exactly once.
fn assert_exactly_once(server: &TestServer, runs: usize, summaries: usize) {
    let ids = accepted_ids(server);
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an event arrived twice: {ids:?}");
    let mut expected = BTreeMap::from([("run".to_owned(), runs)]);
    if summaries > 0 {
        expected.insert("sdk_usage".to_owned(), summaries);
    }
    assert_eq!(accepted_types(server), expected);
}

/// A port on 127.0.0.1 that nothing listens on: bound, then closed.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `work` on its own thread and fails the test if it has not returned within the hang
/// guard, so that a hang fails the test instead of stopping it for ever.
fn within<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(HANG_GUARD) {
        Ok(value) => {
            thread.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it returns"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not return within {HANG_GUARD:?}: it hangs")
        }
    }
}

/// Looks at `status` until `done` holds. The worker offers no signal for "stored what was
/// recorded", so this polls, a bounded number of times.
fn wait_for(telemetry: &Telemetry, what: &str, done: impl Fn(&Status) -> bool) -> Status {
    let mut status = telemetry.status();
    for _ in 0..POLLS {
        if done(&status) {
            return status;
        }
        std::thread::sleep(POLL_INTERVAL);
        status = telemetry.status();
    }
    panic!("the worker never got to {what}: {status:?}")
}

fn delivery_error(result: Result<telemetry::FlushReport, FlushError>) -> String {
    match result {
        Err(FlushError::Delivery(message)) => message,
        other => panic!("expected a delivery error, got {other:?}"),
    }
}

#[test]
fn every_run_arrives_once_in_batches_of_the_configured_size_and_in_the_wire_format() {
    let pki = TestPki::generate("trusted");
    let server = TestServer::start(&pki, Script::status(200));
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(
        dir.path(),
        &server.endpoint(),
        &pki.ca_pem,
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "7")],
    );
    let kit = FlowKit::start(&config);
    assert!(kit.telemetry().is_enabled());
    hostile_workload(&kit, 30);
    let report = kit.telemetry().flush(FLUSH).unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    assert_eq!(
        kit.telemetry().status().pending_events.unwrap_or(u64::MAX),
        0
    );
    assert_exactly_once(&server, 30, 0);
    drop(kit);
    assert_exactly_once(&server, 30, 1);

    let requests = server.requests();
    let mut lines = Vec::new();
    for request in &requests {
        assert_eq!(request.answered, Some(200), "{request:?}");
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/v1/events")
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let user_agent = request.header("user-agent").unwrap_or_default();
        assert!(user_agent.starts_with("flowkit/"), "{user_agent}");
        assert_eq!(
            request.header("content-length"),
            Some(request.wire_len.to_string().as_str())
        );
        let body = request.body.as_ref().unwrap();
        assert_eq!(
            request.gzipped(),
            body.len() > 1024,
            "bodies over 1 KiB, and only those, are gzip-compressed ({} bytes)",
            body.len()
        );
        let events = request.events();
        assert!(
            (1..=7).contains(&events.len()),
            "a batch of {}",
            events.len()
        );
        lines.extend(events.iter().map(ToString::to_string));
        for secret in [FLOW_NAME, PARAM_VALUE, ERROR_MESSAGE, "db.internal"] {
            assert!(!body.contains(secret), "{secret:?} reached the server");
        }
    }
    assert!(
        requests.iter().any(Recorded::gzipped),
        "no batch was large enough to be compressed, so compression went unchecked"
    );
    assert_eq!(lines.len(), 31, "every event was sent once, none again");
    assert_eq!(validate_with_python(&lines), Ok(31));
}

#[test]
fn events_recorded_while_the_endpoint_is_down_arrive_once_it_is_up() {
    let pki = TestPki::generate("trusted");
    let port = dead_port();
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(dir.path(), &endpoint(port), &pki.ca_pem, &[]);
    let kit = FlowKit::start(&config);
    hostile_workload(&kit, 6);
    let message = delivery_error(kit.telemetry().flush(Duration::from_secs(2)));
    assert!(message.contains("cannot connect"), "{message}");
    assert_eq!(
        kit.telemetry().status().pending_events.unwrap_or(u64::MAX),
        6
    );

    // The port was free a moment ago; another process may take it in between, so try a few
    // times before giving up.
    let mut attempts = 0;
    let server = loop {
        match TestServer::bind(&pki, Script::status(200), port) {
            Ok(server) => break server,
            Err(error) if attempts < 50 => {
                attempts += 1;
                eprintln!("port {port} is not free yet ({error}); trying again");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("cannot listen on port {port} again: {error}"),
        }
    };
    let report = kit.telemetry().flush(FLUSH).unwrap();
    assert_eq!((report.delivered, report.pending), (6, 0));
    drop(kit);
    assert_exactly_once(&server, 6, 1);
    assert!(server.requests().iter().all(Recorded::accepted));
}

#[test]
fn repeated_server_errors_lose_nothing_and_everything_arrives_once_after() {
    let pki = TestPki::generate("trusted");
    let server = TestServer::start(&pki, Script::status(500));
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(dir.path(), &server.endpoint(), &pki.ca_pem, &[]);
    let kit = FlowKit::start(&config);
    hostile_workload(&kit, 5);
    for attempt in 1..=3 {
        let message = delivery_error(kit.telemetry().flush(FLUSH));
        assert!(message.contains("500"), "attempt {attempt}: {message}");
        let status = kit.telemetry().status();
        assert_eq!(
            status.pending_events.unwrap_or(u64::MAX),
            5,
            "attempt {attempt}: {status:?}"
        );
        assert_eq!(status.failed_deliveries, attempt, "{status:?}");
        assert_eq!(
            server.requests().len(),
            attempt as usize,
            "one request per flush"
        );
    }
    let refused: HashSet<String> = server
        .requests()
        .iter()
        .flat_map(Recorded::event_ids)
        .collect();
    assert_eq!(refused.len(), 5, "each attempt sent the same five events");

    server.set(Script::status(200));
    let report = kit.telemetry().flush(FLUSH).unwrap();
    assert_eq!((report.delivered, report.pending), (5, 0));
    let delivered: HashSet<String> = accepted_ids(&server).into_iter().collect();
    assert_eq!(delivered, refused, "what failed is what was delivered");
    drop(kit);
    assert_exactly_once(&server, 5, 1);
}

#[test]
fn a_503_with_retry_after_keeps_the_events_and_holds_scheduled_deliveries_back() {
    let pki = TestPki::generate("trusted");
    let busy = Script::Answer {
        status: 503,
        retry_after: Some("3"),
    };
    let server = TestServer::start(&pki, busy);
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(
        dir.path(),
        &server.endpoint(),
        &pki.ca_pem,
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "4")],
    );
    let kit = FlowKit::start(&config);
    let telemetry = kit.telemetry().clone();

    // Fewer runs than a batch: only the flush sends.
    hostile_workload(&kit, 3);
    let message = delivery_error(telemetry.flush(FLUSH));
    assert!(message.contains("503"), "{message}");
    assert_eq!(telemetry.status().pending_events.unwrap_or(u64::MAX), 3);
    assert_eq!(server.requests().len(), 1);

    // A full batch now: the worker would deliver on its own, but the server asked it to wait
    // three seconds, and that binds every sender: the scheduled round and a flush, in this handle
    // and in a second one on the same state directory (as another process would be).
    hostile_workload(&kit, 4);
    wait_for(&telemetry, "store 7 events", |status| {
        status.pending_events.unwrap_or(u64::MAX) == 7
    });
    let other = FlowKit::start(&config);
    let mut resume = std::time::SystemTime::now();
    for handle in [&telemetry, other.telemetry()] {
        match handle.flush(FLUSH) {
            Err(FlushError::Paused {
                reason: PauseReason::ServerAskedToWait,
                until,
                pending,
            }) => {
                assert_eq!(pending, Some(7));
                resume = resume.max(until);
            }
            other => panic!("expected a pause, got {other:?}"),
        }
    }
    let status = telemetry.status();
    assert!(status.paused_until.is_some(), "{status:?}");
    assert_eq!(
        server.requests().len(),
        1,
        "a sender posted before Retry-After: {:#?}",
        server.requests()
    );
    drop(other);

    // The wait is a time the server set; nothing else can signal its end.
    std::thread::sleep(
        resume
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    );
    server.set(Script::status(200));
    let report = telemetry.flush(FLUSH).unwrap();
    // The seven runs, and the summary the second handle stored when it stopped.
    assert_eq!((report.delivered, report.pending), (8, 0));
    drop(telemetry);
    drop(kit);
    // The second handle sent its own summary.
    assert_exactly_once(&server, 7, 2);
}

#[test]
fn a_server_that_never_answers_or_cuts_the_answer_off_fails_the_flush_without_hanging() {
    let pki = TestPki::generate("trusted");
    // (how the server misbehaves, the error the flush must report, what its message names)
    let cases = [
        (Script::NeverAnswer, FlushError::Timeout, "deadline"),
        (
            Script::CloseMidResponse,
            FlushError::Delivery(String::new()),
            "closed the connection",
        ),
    ];
    for (script, expected, needle) in cases {
        let server = TestServer::start(&pki, script.clone());
        let dir = tempfile::tempdir().unwrap();
        let config = https_config(dir.path(), &server.endpoint(), &pki.ca_pem, &[])
            .shutdown_timeout(Duration::from_millis(500));
        let kit = FlowKit::start(&config);
        hostile_workload(&kit, 3);
        let telemetry = kit.telemetry().clone();
        let error = within("flush", move || telemetry.flush(Duration::from_millis(500)))
            .expect_err("the flush cannot succeed");
        assert_eq!(
            std::mem::discriminant(&error),
            std::mem::discriminant(&expected),
            "{script:?}: {error:?}"
        );
        assert!(error.to_string().contains(needle), "{script:?}: {error}");
        assert_eq!(
            kit.telemetry().status().pending_events.unwrap_or(u64::MAX),
            3,
            "{script:?}"
        );
        let requests = server.requests();
        assert!(
            !requests.is_empty(),
            "{script:?}: the request reached the server"
        );
        assert!(
            requests.iter().all(|request| request.answered.is_none()),
            "{script:?}: {requests:#?}"
        );
        within("dropping the kit", move || drop(kit));
        assert!(accepted_ids(&server).is_empty(), "{script:?}");
    }
}

#[test]
fn a_413_splits_batches_until_they_fit() {
    let pki = TestPki::generate("trusted");
    let server = TestServer::start(&pki, Script::TooLargeAbove(2));
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(
        dir.path(),
        &server.endpoint(),
        &pki.ca_pem,
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "8")],
    );
    let kit = FlowKit::start(&config);
    hostile_workload(&kit, 19);
    let report = kit.telemetry().flush(FLUSH).unwrap();
    assert_eq!(report.pending, 0, "{report:?}");
    let status = kit.telemetry().status();
    assert_eq!(
        (
            status.pending_events.unwrap_or(u64::MAX),
            status.rejected_events
        ),
        (0, 0),
        "{status:?}"
    );
    drop(kit);
    assert_exactly_once(&server, 19, 1);

    let requests = server.requests();
    assert!(
        requests.iter().any(|request| request.answered == Some(413)),
        "no batch was too large, so splitting went unchecked"
    );
    for request in requests.iter().filter(|request| request.accepted()) {
        let events = request.events().len();
        assert!((1..=2).contains(&events), "an accepted batch of {events}");
    }
    for request in &requests {
        let events = request.events().len();
        assert!(events <= 8, "a batch of {events}, more than the batch size");
    }
}

#[test]
fn an_untrusted_certificate_sends_nothing_and_says_why() {
    let trusted = TestPki::generate("trusted");
    let other = TestPki::generate("someone else's");
    let server = TestServer::start(&other, Script::status(200));
    let dir = tempfile::tempdir().unwrap();
    let config = https_config(dir.path(), &server.endpoint(), &trusted.ca_pem, &[]);
    let kit = FlowKit::start(&config);
    hostile_workload(&kit, 3);
    let message = delivery_error(kit.telemetry().flush(FLUSH));
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(
        kit.telemetry().status().pending_events.unwrap_or(u64::MAX),
        3
    );
    drop(kit);
    assert!(server.connections() > 0, "the client did reach the server");
    assert_eq!(server.handshakes(), 0, "no TLS session was established");
    assert!(server.requests().is_empty(), "{:#?}", server.requests());
}

#[test]
fn a_flood_against_a_dead_endpoint_stays_within_the_buffer_bound() {
    const RUNS: u64 = 50_000;
    const CAPACITY: u64 = 1_000;
    let pki = TestPki::generate("trusted");
    let dir = tempfile::tempdir().unwrap();
    // The capacity bounds the in-memory buffer; the SQLite spool has its own limits.
    let config = https_config(
        dir.path(),
        &endpoint(dead_port()),
        &pki.ca_pem,
        &[("FLOWKIT_SDK_TELEMETRY_BUFFER", "memory")],
    )
    .buffer_capacity(CAPACITY as usize);
    let kit = FlowKit::start(&config);
    let flow = Flow::new(FLOW_NAME).task(Task::new("noop", |_| Ok(serde_json::Value::Null)));
    for run in 1..=RUNS {
        kit.run(&flow, &Params::new());
        if run % 5_000 == 0 {
            let status = kit.telemetry().status();
            assert!(
                status.pending_events.unwrap_or(u64::MAX) <= CAPACITY,
                "after {run} runs: {status:?}"
            );
        }
    }
    // Every run ends up held or dropped (at the queue or the buffer) once the worker catches up.
    let status = wait_for(kit.telemetry(), "account for every run", |status| {
        status.pending_events.unwrap_or(u64::MAX) + status.dropped_events == RUNS
    });
    assert!(
        status.pending_events.unwrap_or(u64::MAX) <= CAPACITY,
        "{status:?}"
    );
    assert!(status.dropped_events > 0, "{status:?}");
    assert_eq!(status.buffer, "memory");
    drop(kit);
}
