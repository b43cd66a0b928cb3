//! Many real `flowkit` processes sharing one `FLOWKIT_HOME` (so one SQLite spool and one state
//! file), with `telemetry flush` processes delivering beside them, and not one event lost.
//!
//! What this proves, with exact counts rather than timings (DESIGN.md, "The promise" item 8):
//!
//! - Every event the processes recorded is accounted for, across processes: after they all
//!   exit, `status --json` in a new process shows `delivered_events + pending_events +
//!   dropped_events` equal to what was recorded (each process records one `run` event per flow
//!   run and one `sdk_usage` summary at exit), and `dropped_events` is the sum of
//!   `dropped_by_reason`. Drops are allowed (a recording burst may outrun a worker and fill its
//!   queue, and a spool that falls behind drops its oldest events) but only when counted.
//! - The ledger and the export agree: the export files hold exactly `delivered_events` lines,
//!   each a JSON object, so no delivery was counted that did not happen, or happened uncounted.
//! - Claims keep concurrent senders apart: delivery is at-least-once, and a duplicate is
//!   excusable only when a sender stops between writing a batch and acknowledging it. No process
//!   is killed here, but a process whose shutdown deadline passes while its acknowledgement
//!   waits for the spool's lock exits with that batch claimed, so at most one batch per process
//!   may arrive twice, and the export holds exactly the delivered events plus those.
//! - The processes share one anonymous session id, the one `status` shows.
//!
//! The numbers are printed (`cargo test -- --nocapture`) so that a run can be reported.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;

use support::Sandbox;

/// Simulating processes started at once.
const PROCESSES: u64 = 16;
/// Flow runs in each process.
const RUNS: u64 = 20_000;
/// Events each process records: a `run` event per flow run and one `sdk_usage` summary.
const EVENTS_PER_PROCESS: u64 = RUNS + 1;
/// Small batches and a short interval, so that deliveries happen while the processes run.
const BATCH_SIZE: &str = "500";
const BATCH_INTERVAL_SECONDS: &str = "0.2";
/// What each concurrent `telemetry flush` may take.
const FLUSH_TIMEOUT_SECONDS: &str = "5";
/// At most this many concurrent flushes, however long the simulations take.
const MAX_CONCURRENT_FLUSHES: usize = 500;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// How the flushes that ran beside the simulations ended.
#[derive(Debug, Default)]
struct FlushOutcomes {
    /// Flush processes run.
    runs: usize,
    /// Events they reported sending (`Sent N pending events`).
    sent: u64,
    /// Flushes that reported a pause instead of sending.
    paused: usize,
    /// Flushes that exited with a failure (a deadline or a busy spool), by first line of stderr.
    failed: BTreeMap<String, usize>,
}

impl FlushOutcomes {
    fn add(&mut self, output: &Output) {
        self.runs += 1;
        let stdout = text(&output.stdout);
        if !output.status.success() {
            let first = text(&output.stderr).lines().next().unwrap_or("").to_owned();
            *self.failed.entry(first).or_default() += 1;
        } else if let Some(sent) = sent_count(&stdout) {
            self.sent += sent;
        } else if stdout.starts_with("Nothing sent") {
            self.paused += 1;
        } else {
            panic!("unexpected flush output: {}", describe(output));
        }
    }
}

/// `N` from `Sent N pending events; M still pending.`
fn sent_count(stdout: &str) -> Option<u64> {
    stdout
        .strip_prefix("Sent ")?
        .split_once(' ')?
        .0
        .parse()
        .ok()
}

/// Waits for every child (reading its output) on another thread, and says when all are done.
fn wait_on_another_thread(
    children: Vec<Child>,
) -> (std::thread::JoinHandle<Vec<Output>>, mpsc::Receiver<()>) {
    let (done, all_exited) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let outputs = children
            .into_iter()
            .map(|child| child.wait_with_output().unwrap())
            .collect();
        let _ = done.send(());
        outputs
    });
    (waiter, all_exited)
}

#[test]
fn every_event_of_sixteen_processes_sharing_one_spool_is_delivered_pending_or_counted() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
        ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", BATCH_SIZE),
        (
            "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
            BATCH_INTERVAL_SECONDS,
        ),
    ];
    let runs = RUNS.to_string();
    let children: Vec<Child> = (0..PROCESSES)
        .map(|_| {
            sandbox
                .command(&["simulate", "--runs", &runs, "--task-millis", "0"], &vars)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (waiter, all_exited) = wait_on_another_thread(children);

    // Flushes from other processes compete with the simulations' own workers for the spool
    // until every simulation has exited; the first starts while they are all running.
    let mut flushes = FlushOutcomes::default();
    loop {
        flushes.add(&sandbox.output(
            &["telemetry", "flush", "--timeout", FLUSH_TIMEOUT_SECONDS],
            &vars,
        ));
        if all_exited.try_recv().is_ok() || flushes.runs >= MAX_CONCURRENT_FLUSHES {
            break;
        }
    }
    let outputs = waiter.join().unwrap();
    for output in &outputs {
        assert!(output.status.success(), "{}", describe(output));
        assert!(
            text(&output.stdout).contains(&format!("Ran {RUNS} flow runs")),
            "{}",
            describe(output)
        );
        assert!(output.stderr.is_empty(), "{}", describe(output));
    }

    // One spool throughout: none was found damaged and moved aside under the load.
    let moved_aside: Vec<_> = std::fs::read_dir(sandbox.home())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".corrupt-"))
        .collect();
    assert!(moved_aside.is_empty(), "{moved_aside:?}");

    // Pending may stay above zero after this: a claim held by a process that stopped at its
    // shutdown deadline keeps its events until the claim's lease runs out.
    let last_flush = sandbox.output(&["telemetry", "flush"], &vars);
    assert!(last_flush.status.success(), "{}", describe(&last_flush));
    let status = sandbox.output(&["telemetry", "status", "--json"], &vars);
    assert!(status.status.success(), "{}", describe(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let count = |field: &str| {
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} is not a count: {status}"))
    };
    let (delivered, pending, dropped) = (
        count("delivered_events"),
        count("pending_events"),
        count("dropped_events"),
    );
    let dropped_by_reason: BTreeMap<String, u64> =
        serde_json::from_value(status["dropped_by_reason"].clone()).unwrap();

    let lines = sandbox.exported_lines();
    let mut times_seen: HashMap<String, u64> = HashMap::new();
    let mut event_types: BTreeMap<String, u64> = BTreeMap::new();
    let mut sessions: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        let object = event
            .as_object()
            .unwrap_or_else(|| panic!("not a JSON object: {line}"));
        let field = |name: &str| {
            object
                .get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_else(|| panic!("no {name}: {line}"))
                .to_owned()
        };
        *times_seen.entry(field("event_id")).or_default() += 1;
        *event_types.entry(field("event_type")).or_default() += 1;
        *sessions.entry(field("session_id")).or_default() += 1;
    }
    let duplicates: u64 = times_seen.values().map(|times| times - 1).sum();

    let recorded = PROCESSES * EVENTS_PER_PROCESS;
    let accounted = delivered + pending + dropped;
    let difference = i128::from(accounted) - i128::from(recorded);
    eprintln!(
        "{PROCESSES} processes x {EVENTS_PER_PROCESS} events = {recorded} recorded; \
         accounted {accounted} ({difference:+}): \
         delivered {delivered}, pending {pending}, dropped {dropped} {dropped_by_reason:?}; \
         export lines {}, by type {event_types:?}, duplicate event ids {duplicates}; \
         concurrent flushes {flushes:?}; last flush: {}",
        lines.len(),
        text(&last_flush.stdout).trim()
    );

    assert_eq!(
        dropped,
        dropped_by_reason.values().sum::<u64>(),
        "dropped_events is the sum of dropped_by_reason: {status}"
    );
    // A process whose shutdown deadline passes while its last batch is written but not yet
    // acknowledged (the spool's lock is busy with fifteen others) exits with that batch still
    // claimed; it is delivered again later. At most one batch per process is in flight.
    let batch: u64 = BATCH_SIZE.parse().unwrap();
    assert!(
        duplicates <= PROCESSES * batch,
        "more duplicates than batches in flight at exit: {duplicates}"
    );
    assert_eq!(
        lines.len() as u64,
        delivered + duplicates,
        "the export holds the delivered events, and only in-flight batches twice"
    );
    assert!(
        flushes.sent <= delivered,
        "flushes cannot have sent more than was delivered: {flushes:?}"
    );
    let session = status["session_id"].as_str().unwrap();
    assert_eq!(
        sessions.keys().collect::<Vec<_>>(),
        [session],
        "one state file, one session id"
    );
    // Last, so that a failure here comes after every other check has passed.
    assert_eq!(
        accounted, recorded,
        "every recorded event is delivered, pending or counted as dropped: {status}"
    );
}
