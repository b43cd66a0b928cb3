//! Two ways out, one ledger: full batches of fresh events go from memory straight to the
//! destination, events read back from the spool (left by another process) go after the second
//! look, and both are counted where `status` in a new process reads them.
//!
//! Real parts: flowkit's configuration, the SQLite spool in a temporary home, the file export.
//! The buffer and the transport are wrapped only to watch them: the wrapper counts what is
//! appended to the spool (so the test can tell direct delivery from a trip through the spool)
//! and signals what was exported (so the test waits on the worker instead of sleeping).

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flowkit::{Flow, FlowKit, Params, Task};
use telemetry::internals::buffer::{
    BufferError, BufferStats, Claim, ClaimId, DeliveryLedger, SPOOL_FILE_NAME, SpoolLimits,
    SqliteSpool,
};
use telemetry::internals::model::{EventId, SessionId};
use telemetry::internals::transport::SendError;
use telemetry::{Buffer, EncodedEvent, FileTransport, Name, TelemetryConfig, Transport};
use telemetry_e2e::{enabled_flowkit_config_with, exported_lines};

const BATCH_SIZE: &str = "10";

/// The spool, with a count of the events appended to it.
#[derive(Debug)]
struct CountingBuffer {
    inner: Arc<dyn Buffer>,
    appended: AtomicU64,
}

impl Buffer for CountingBuffer {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn append(&self, events: Vec<EncodedEvent>) -> Result<(), BufferError> {
        self.appended
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        self.inner.append(events)
    }
    fn append_and_record(
        &self,
        events: Vec<EncodedEvent>,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<BufferStats, BufferError> {
        self.appended
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        self.inner.append_and_record(events, change)
    }
    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError> {
        self.inner.claim(max_events)
    }
    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError> {
        self.inner.acknowledge(claim)
    }
    fn acknowledge_and_record(
        &self,
        claim: ClaimId,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        self.inner.acknowledge_and_record(claim, change)
    }
    fn release(&self, claim: ClaimId) -> Result<(), BufferError> {
        self.inner.release(claim)
    }
    fn stats(&self) -> Result<BufferStats, BufferError> {
        self.inner.stats()
    }
    fn purge(&self) -> Result<usize, BufferError> {
        self.inner.purge()
    }
    fn ledger(&self) -> Result<DeliveryLedger, BufferError> {
        self.inner.ledger()
    }
    fn may_be_paused(&self) -> bool {
        self.inner.may_be_paused()
    }
    fn update_ledger(
        &self,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        self.inner.update_ledger(change)
    }
    fn add_counts_when_full(&self, counts: &DeliveryLedger) -> Result<(), BufferError> {
        self.inner.add_counts_when_full(counts)
    }
}

/// The file export, with a signal for every batch it wrote; or a destination that always fails.
#[derive(Debug)]
struct WatchedTransport {
    inner: Option<FileTransport>,
    /// Whether it takes several batches in one send, as the file export does.
    merged: bool,
    exported: Mutex<u64>,
    changed: Condvar,
    /// Every send begun, delivered or not.
    requests: AtomicU64,
    /// Holds the first send until the test releases it.
    gate: Mutex<Gate>,
    gate_changed: Condvar,
}

/// Where a held first send stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// No send is held.
    Open,
    /// The first send will wait until released.
    Closed,
    /// The first send has begun and waits.
    Holding,
}

impl WatchedTransport {
    fn exporting_to(export: &Path, merged: bool) -> WatchedTransport {
        WatchedTransport {
            inner: Some(FileTransport::new(export, Name::new("flowkit").unwrap())),
            merged,
            exported: Mutex::new(0),
            changed: Condvar::new(),
            requests: AtomicU64::new(0),
            gate: Mutex::new(Gate::Open),
            gate_changed: Condvar::new(),
        }
    }

    fn failing() -> WatchedTransport {
        WatchedTransport {
            inner: None,
            merged: false,
            exported: Mutex::new(0),
            changed: Condvar::new(),
            requests: AtomicU64::new(0),
            gate: Mutex::new(Gate::Open),
            gate_changed: Condvar::new(),
        }
    }

    /// Waits until the held first send has begun, for at most `timeout`.
    fn wait_until_holding(&self, timeout: Duration) {
        let gate = self.gate.lock().unwrap();
        let (gate, _) = self
            .gate_changed
            .wait_timeout_while(gate, timeout, |gate| *gate != Gate::Holding)
            .unwrap();
        assert_eq!(*gate, Gate::Holding, "no send began");
    }

    /// Lets the held send go on.
    fn release(&self) {
        *self.gate.lock().unwrap() = Gate::Open;
        self.gate_changed.notify_all();
    }

    /// Waits until at least `events` were exported, for at most `timeout`.
    fn wait_for(&self, events: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut exported = self.exported.lock().unwrap();
        while *exported < events {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            exported = self.changed.wait_timeout(exported, left).unwrap().0;
        }
        *exported
    }
}

#[async_trait::async_trait]
impl Transport for WatchedTransport {
    fn kind(&self) -> &'static str {
        "file"
    }
    fn takes_merged_batches(&self) -> bool {
        self.merged
    }
    fn destination(&self) -> String {
        self.inner
            .as_ref()
            .map_or_else(|| "nowhere".to_owned(), FileTransport::destination)
    }
    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let Some(inner) = &self.inner else {
            return Err(SendError::Retryable {
                message: "the destination is down".to_owned(),
                retry_after: None,
            });
        };
        {
            let mut gate = self.gate.lock().unwrap();
            if *gate == Gate::Closed {
                *gate = Gate::Holding;
                self.gate_changed.notify_all();
                // Blocks the worker's thread, as a slow disk would; the test releases it.
                let _open = self
                    .gate_changed
                    .wait_timeout_while(gate, Duration::from_secs(20), |gate| {
                        *gate == Gate::Holding
                    })
                    .unwrap();
            }
        }
        inner.send(events).await?;
        *self.exported.lock().unwrap() += events.len() as u64;
        self.changed.notify_all();
        Ok(())
    }
}

fn config(dir: &Path) -> TelemetryConfig {
    enabled_flowkit_config_with(
        &dir.join("home"),
        &dir.join("export"),
        &[("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", BATCH_SIZE)],
    )
}

fn workload(kit: &FlowKit, runs: usize) {
    let flow = Flow::new("nightly-report").task(Task::new("load", |_| Ok(1.into())));
    for _ in 0..runs {
        kit.run(&flow, &Params::new());
    }
}

fn open_spool(dir: &Path) -> Arc<dyn Buffer> {
    Arc::new(
        SqliteSpool::open(
            dir.join("home").join(SPOOL_FILE_NAME),
            SpoolLimits::default(),
        )
        .unwrap(),
    )
}

/// flowkit started on the spool in `dir`, counting what is appended to it, and exporting to
/// `dir/export` through a transport that counts what it delivers (and takes merged batches
/// when `merged`).
fn watched_flowkit(
    dir: &Path,
    merged: bool,
) -> (Arc<CountingBuffer>, Arc<WatchedTransport>, FlowKit) {
    let export = WatchedTransport::exporting_to(&dir.join("export"), merged);
    watched_flowkit_to(dir, export)
}

/// flowkit started on the spool in `dir`, counting what is appended to it, delivering to
/// `export`.
fn watched_flowkit_to(
    dir: &Path,
    export: WatchedTransport,
) -> (Arc<CountingBuffer>, Arc<WatchedTransport>, FlowKit) {
    let watched_spool = Arc::new(CountingBuffer {
        inner: open_spool(dir),
        appended: AtomicU64::new(0),
    });
    let export = Arc::new(export);
    let config_now = config(dir)
        .buffer(Arc::clone(&watched_spool) as Arc<dyn Buffer>)
        .transport(Arc::clone(&export) as Arc<dyn Transport>);
    let kit = FlowKit::start(&config_now);
    (watched_spool, export, kit)
}

#[test]
fn fresh_events_delivered_from_memory_and_spooled_ones_from_another_process_are_all_counted() {
    // A destination that takes one batch per request, and one that takes several at once.
    for merged in [false, true] {
        fresh_and_spooled_events_are_all_counted(merged);
    }
}

fn fresh_and_spooled_events_are_all_counted(merged: bool) {
    let dir = tempfile::tempdir().unwrap();

    // Another process, earlier: its destination was down, so its runs and summary wait in the
    // spool.
    let earlier_runs = 25;
    let down = Arc::new(WatchedTransport::failing());
    let kit = FlowKit::start(&config(dir.path()).transport(down));
    workload(&kit, earlier_runs);
    drop(kit);
    let earlier = config(dir.path()).status();
    let left_by_earlier = earlier_runs as u64 + 1;
    assert_eq!(
        earlier.pending_events,
        Some(left_by_earlier),
        "{earlier:#?}"
    );
    assert_eq!(earlier.delivered_events, 0, "{earlier:#?}");

    // And two rows that the second look must stop: one with a name the catalog does not
    // declare, one under a session id that is not this one.
    let spool = open_spool(dir.path());
    let stored = spool.claim(1).unwrap().unwrap();
    spool.release(stored.id).unwrap();
    let template = stored.events[0].decode().unwrap();
    let mut undeclared = template.clone();
    undeclared.event_id = EventId::random();
    undeclared
        .features
        .insert(Name::new("undeclared_feature").unwrap());
    let mut other_session = template;
    other_session.event_id = EventId::random();
    other_session.session_id = SessionId::random();
    let refused: HashSet<String> = [&undeclared, &other_session]
        .iter()
        .map(|event| event.event_id.to_string())
        .collect();
    spool
        .append(vec![
            EncodedEvent::encode(&undeclared).unwrap(),
            EncodedEvent::encode(&other_session).unwrap(),
        ])
        .unwrap();
    drop(spool);

    // This process: its destination works, and it runs long enough for the worker to collect
    // full batches while it runs.
    let runs = 60;
    let (watched_spool, export, kit) = watched_flowkit(dir.path(), merged);
    workload(&kit, runs);
    // Everything but the summary and the runs the worker keeps back from a full batch.
    let expected_while_running = left_by_earlier + runs as u64 - 10;
    let exported = export.wait_for(expected_while_running, Duration::from_secs(20));
    assert!(
        exported >= expected_while_running,
        "the worker delivered {exported} events while the process ran"
    );
    drop(kit);

    let total = left_by_earlier + runs as u64 + 1;
    let lines = exported_lines(&dir.path().join("export"));
    let ids: HashSet<String> = lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        lines.len() as u64,
        total,
        "each event once (merged: {merged})"
    );
    assert_eq!(
        ids.len() as u64,
        total,
        "each event once (merged: {merged})"
    );
    assert!(
        ids.is_disjoint(&refused),
        "the second look let a row through"
    );

    // At least one full batch went straight from memory to the export, never through the spool.
    let appended = watched_spool.appended.load(Ordering::SeqCst);
    assert!(
        appended + 10 <= runs as u64 + 1,
        "{appended} of this process's {} events were appended to the spool (merged: {merged})",
        runs + 1
    );

    // A new process counts every one of them: delivered directly or from the spool, or
    // refused by the second look with its reason.
    let status = config(dir.path()).status();
    assert_eq!(
        status.delivered_events, total,
        "merged: {merged}: {status:#?}"
    );
    assert_eq!(status.pending_events, Some(0), "{status:#?}");
    assert_eq!(status.dropped_by_reason["invalid"], 1, "{status:#?}");
    assert!(status.last_sent.is_some(), "{status:#?}");
    // The other session's row is deleted, as an opt-out deletes events, and counted so in the
    // ledger (`status` shows purges only when `disable` makes them).
    assert_eq!(open_spool(dir.path()).ledger().unwrap().purged, 1);
}

#[test]
fn a_destination_that_takes_merged_batches_gets_the_partial_batch_of_a_drain_too() {
    // 25 runs reach the worker's first drain together: two full batches of 10 and 5 left over.
    for merged in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        let (watched_spool, export, kit) = watched_flowkit(dir.path(), merged);
        workload(&kit, 25);
        // A destination that merges batches gets the 5 in the same send as the 20, since it
        // costs no extra write; one that takes a batch per request gets them when a batch is
        // full or the interval is up, from the spool.
        let (direct, stored) = if merged { (25, 0) } else { (20, 5) };
        let exported = export.wait_for(direct, Duration::from_secs(20));
        assert_eq!(exported, direct, "merged: {merged}");
        drop(kit);
        // Shutdown sends the summary directly, and what was stored from the spool.
        assert_eq!(
            watched_spool.appended.load(Ordering::SeqCst),
            stored,
            "merged: {merged}"
        );
        assert_eq!(
            exported_lines(&dir.path().join("export")).len(),
            26,
            "merged: {merged}"
        );
        let status = config(dir.path()).status();
        assert_eq!(status.delivered_events, 26, "merged: {merged}: {status:#?}");
        assert_eq!(status.pending_events, Some(0), "{status:#?}");
    }
}

#[test]
fn records_queued_during_a_direct_send_wait_for_the_next_drain_instead_of_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let (watched_spool, export, kit) = watched_flowkit(dir.path(), true);
    *export.gate.lock().unwrap() = Gate::Closed;
    // A full batch reaches the first drain, which sends it directly; the send is held.
    workload(&kit, 10);
    export.wait_until_holding(Duration::from_secs(20));
    // Runs recorded while the request is out: the drain took the queue before they came.
    workload(&kit, 13);
    export.release();
    assert_eq!(export.wait_for(10, Duration::from_secs(20)), 10);
    // They wait in the queue for the next drain, which finds a full batch and sends them too.
    assert_eq!(export.wait_for(23, Duration::from_secs(20)), 23);
    assert_eq!(
        watched_spool.appended.load(Ordering::SeqCst),
        0,
        "records queued during the send were stored on their own"
    );
    drop(kit);
    assert_eq!(watched_spool.appended.load(Ordering::SeqCst), 0);
    assert_eq!(exported_lines(&dir.path().join("export")).len(), 24);
    let status = config(dir.path()).status();
    assert_eq!(status.delivered_events, 24, "{status:#?}");
    assert_eq!(status.pending_events, Some(0), "{status:#?}");
}

#[test]
fn a_flush_sends_what_is_queued_directly_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let (watched_spool, export, kit) = watched_flowkit(dir.path(), false);
    // A batch and a half, flushed before the worker's first drain would collect them.
    workload(&kit, 15);
    let report = kit.telemetry().flush(Duration::from_secs(20)).unwrap();
    assert_eq!((report.delivered, report.pending), (15, 0), "{report:?}");
    assert_eq!(export.wait_for(15, Duration::ZERO), 15);
    assert_eq!(
        watched_spool.appended.load(Ordering::SeqCst),
        0,
        "the flush stored what it could send at once"
    );
    drop(kit);
    let status = config(dir.path()).status();
    assert_eq!(status.delivered_events, 16, "{status:#?}");
    assert_eq!(status.pending_events, Some(0), "{status:#?}");
}

#[test]
fn a_flush_whose_direct_request_fails_stores_the_events_and_does_not_try_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("home")).unwrap();
    let (watched_spool, down, kit) = watched_flowkit_to(dir.path(), WatchedTransport::failing());
    workload(&kit, 15);
    let error = kit.telemetry().flush(Duration::from_secs(20)).unwrap_err();
    assert!(
        error.to_string().contains("the destination is down"),
        "{error}"
    );
    assert_eq!(
        down.requests.load(Ordering::SeqCst),
        1,
        "one request per flush"
    );
    assert_eq!(watched_spool.appended.load(Ordering::SeqCst), 15);
    let status = config(dir.path()).status();
    assert_eq!(status.pending_events, Some(15), "{status:#?}");
    assert_eq!(status.delivered_events, 0, "{status:#?}");
    assert_eq!(status.failed_deliveries, 1, "{status:#?}");
    drop(kit);
}
