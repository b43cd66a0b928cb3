//! The background worker: two halves on one thread with its own single-threaded tokio runtime.
//!
//! The *storing* half collects queued records, turns them into checked events
//! ([`events`]) and appends them to the buffer. The *delivering* half ([`delivery`]) claims
//! batches and sends them. They are independent: a delivery round is a future the worker polls
//! beside its storing, so records keep reaching the buffer while a request is in flight, and a
//! hanging destination costs at most the round, never the records.
//!
//! Deadlines: a flush or a shutdown carries one deadline, and everything it does (storing,
//! waiting for a round in flight, delivering) fits inside it; a round still running at the
//! deadline is dropped, which abandons its request and releases its claim. Buffer operations
//! that may block run on the runtime's blocking pool ([`delivery::on_buffer`]), so a spool that
//! waits on another process's lock cannot stretch a deadline either; a buffer that never
//! blocks (memory) is called on this thread.
//!
//! Shutdown stores everything first (the queue, then the `sdk_usage` summary), then delivers
//! with what is left of its deadline. The worker ends only on a shutdown message, or when every
//! handle is gone, and in both cases it stores what was queued: a closed queue alone never ends
//! it, so a shutdown message that arrives just after the queue closes is never missed.
//!
//! It runs on its own thread so that hosts without tokio and hosts with their own runtime both
//! work, and nothing it does (serializing, disk, network) ever happens on a thread that records.

mod delivery;
mod events;
mod fresh;
mod recheck;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use telemetry_buffer::{Buffer, BufferError, BufferStats, DeliveryLedger};
use telemetry_policy::ScrubReason;
use telemetry_transport::Transport;
use tokio::sync::{Notify, mpsc};

pub(crate) use delivery::ConsentCheck;
use delivery::{
    Amount, Attempt, Backoffs, Blocking, BufferTask, Delivery, Stopped, TaskFailed, on_buffer,
    spawn_on_buffer,
};
pub use delivery::{FlushError, FlushReport, PauseReason};
pub(crate) use delivery::{TimeOfDay, paused_until};
pub(crate) use events::{EventBuilder, MessageSink};
use fresh::Fresh;
pub(crate) use recheck::ReadBackCheck;

use crate::queue::{Drained, RecordReceivers};

/// Messages from handles to the worker that need an answer.
pub(crate) enum Control {
    Flush {
        deadline: Instant,
        reply: Reply<Result<FlushReport, FlushError>>,
    },
    Shutdown {
        deadline: Instant,
        reply: Reply<()>,
    },
}

/// Where the worker sends an answer: to a thread that blocks on it, or to a task that awaits
/// it (and must not block its runtime's thread).
pub(crate) enum Reply<T> {
    /// A thread blocks on it with a timeout.
    Blocking(std_mpsc::Sender<T>),
    Awaited(tokio::sync::oneshot::Sender<T>),
}

impl<T> Reply<T> {
    /// Sends the answer; a caller that stopped waiting is not an error.
    pub(crate) fn send(self, value: T) {
        match self {
            Reply::Blocking(sender) => {
                let _ = sender.send(value);
            }
            Reply::Awaited(sender) => {
                let _ = sender.send(value);
            }
        }
    }
}

/// What the worker knows that only this process can: events its checks refused, by reason.
/// Everything that every process should see is in the buffer's ledger.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Events the scrubber dropped, by [`ScrubReason::ALL`] position.
    scrubbed: [AtomicU64; ScrubReason::ALL.len()],
    /// Events that could not be serialized.
    unencodable: AtomicU64,
    /// Refused events not yet added to the ledger.
    refused_unrecorded: AtomicU64,
}

impl WorkerStats {
    fn count_scrubbed(&self, reason: ScrubReason) {
        if let Some(position) = ScrubReason::ALL
            .iter()
            .position(|candidate| *candidate == reason)
        {
            self.scrubbed[position].fetch_add(1, Ordering::Relaxed);
        }
        self.refused_unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    fn count_unencodable(&self) {
        self.unencodable.fetch_add(1, Ordering::Relaxed);
        self.refused_unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Events the scrubber dropped in this process, by reason (only reasons that occurred).
    pub(crate) fn scrubbed(&self) -> BTreeMap<String, u64> {
        ScrubReason::ALL
            .iter()
            .zip(&self.scrubbed)
            .map(|(reason, count)| (reason.as_str().to_owned(), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// Where the worker gets its buffer: one at hand, or one to open on the worker's own thread
/// (opening a spool may wait on another process, which the host must never do).
pub(crate) enum BufferSource {
    Ready(Arc<dyn Buffer>),
    Open(Box<dyn FnOnce() -> Arc<dyn Buffer> + Send>),
}

/// Everything a worker needs, in one value.
pub(crate) struct WorkerSettings {
    pub(crate) thread_name: String,
    pub(crate) records: RecordReceivers,
    /// Signalled by handles when the queue is half full.
    pub(crate) wake: Arc<Notify>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) buffer: BufferSource,
    /// Filled with the buffer once it is open, for the handles' `status` and `disable`.
    pub(crate) opened_buffer: Arc<OnceLock<Arc<dyn Buffer>>>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) events: EventBuilder,
    /// The second look at every event read back before it is sent.
    pub(crate) read_back: ReadBackCheck,
    pub(crate) batch_size: usize,
    pub(crate) batch_interval: Duration,
    /// Whether to store an `sdk_usage` summary at shutdown.
    pub(crate) summary: bool,
    /// Set when the user opted out through the running handle: nothing more is stored.
    pub(crate) opted_out: Arc<AtomicBool>,
    /// Set when consent is withdrawn elsewhere, so that the handles stop recording.
    pub(crate) withdrawn: Arc<AtomicBool>,
    /// Whether the user withdrew consent from another process (`disable`, `reset`).
    pub(crate) consent: Option<ConsentCheck>,
    /// Run once, before the first request leaves: records that events may have left.
    pub(crate) first_attempt: Option<Box<dyn FnOnce() + Send>>,
    /// Records the recording threads dropped because the queue was full.
    pub(crate) dropped_queue_full: Arc<AtomicU64>,
    /// How many of those the worker has added to the ledger, so a running handle's status can
    /// add the rest.
    pub(crate) queue_full_recorded: Arc<AtomicU64>,
}

/// The shortest batch interval the worker runs with; settings refuse shorter ones, and this
/// keeps an SDK's own configuration from spinning the worker.
const MIN_BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// The most events moved from the queue into the buffer in one go. Each chunk exists beside a
/// full buffer for a moment, so it is part of what memory telemetry can take; 256 events of a
/// few hundred bytes each keep that to about 150 KB, and a spool still writes them in one
/// transaction.
pub(crate) const MAX_DRAIN: usize = 256;

/// How many events a flush or a shutdown writes at once to a buffer that may block: fewer,
/// larger writes than the steady state's, because then every process of the user may be
/// writing to one spool and each write waits for its lock; 2,048 events of a few hundred bytes
/// are under a megabyte. A buffer that never blocks (memory) has no lock or transaction to
/// share, and keeps [`MAX_DRAIN`], so its bound holds at a flush too: see
/// [`Worker::final_chunk`].
pub(crate) const FINAL_CHUNK: usize = 2_048;

/// How often the worker collects queued records when no handle has signalled.
const DRAIN_INTERVAL: Duration = Duration::from_millis(1_000);

/// How long a scheduled store waits for the buffer before it leaves the write to finish in the
/// background, so that a buffer another process keeps busy never keeps the worker from
/// answering a flush or a shutdown.
const STORE_WAIT: Duration = Duration::from_millis(250);

/// How long the ledger may lag behind this process's successful direct deliveries. A drain
/// that delivered everything it took and has nothing else to write (no event to store, no count,
/// no failure, no server's wait) leaves the delivered count and `last_sent` for the next write,
/// at the latest this long after the first delivery it holds back, and at a flush or shutdown:
/// a transaction on the spool per drain only to say "delivered" was about a fifth of what a
/// short process's worker spent while it ran. `status` in another process sees those counts up
/// to this much later; failures and a server's wait are never held back.
const LEDGER_LAG: Duration = Duration::from_secs(5);

/// The longest a scheduled round may run; a flush or shutdown brings its own deadline.
const ROUND_LIMIT: Duration = Duration::from_secs(60);

/// How long the worker spends delivering when every handle vanished without a shutdown.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(1);

/// Starts the worker on its own thread.
pub(crate) fn spawn(settings: WorkerSettings) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(settings.thread_name.clone())
        .spawn(move || run_on_own_runtime(settings))
}

fn run_on_own_runtime(settings: WorkerSettings) {
    // The I/O driver is needed by network transports; time by batching and deadlines.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(Worker::new(settings).run()),
        Err(error) => tracing::warn!(%error, "telemetry worker runtime failed to start"),
    }
}

type Round = Pin<Box<dyn Future<Output = Result<FlushReport, Stopped>> + Send>>;

struct Worker {
    records: RecordReceivers,
    wake: Arc<Notify>,
    control: mpsc::UnboundedReceiver<Control>,
    buffer: Arc<dyn Buffer>,
    delivery: Arc<Delivery>,
    events: EventBuilder,
    batch_interval: Duration,
    summary: bool,
    opted_out: Arc<AtomicBool>,
    withdrawn: Arc<AtomicBool>,
    consent: Option<ConsentCheck>,
    dropped_queue_full: Arc<AtomicU64>,
    /// Queue-full drops already added to the ledger.
    queue_full_recorded: Arc<AtomicU64>,
    /// Queue-full drops taken into `unrecorded` so far.
    queue_full_taken: u64,
    /// Foreign-handle refusals taken into `unrecorded` so far.
    refused_taken: u64,
    /// Counts not yet written to the ledger (the buffer could not take them yet).
    unrecorded: DeliveryLedger,
    /// Writes that had not finished at their deadline, oldest first.
    unsettled: Vec<Unsettled>,
    /// The round in flight, if any.
    round: Option<Round>,
    backoffs: Backoffs,
    /// Events pending in the buffer after the last append, by any process.
    pending: usize,
    /// Whether `pending` is the answer of a write made during the shutdown, which lets the
    /// shutdown skip a delivery round that could only find nothing.
    pending_at_finish: bool,
    /// Whether full batches of fresh records are sent from memory ([`fresh`]); off for good
    /// once a request outlasted the time storing may wait.
    direct_delivery: bool,
    /// What direct deliveries did and the ledger does not know yet; written with the next
    /// counts.
    attempts: Vec<Attempt>,
    /// When deliveries held back in `attempts` must be written at the latest ([`LEDGER_LAG`]).
    ledger_due: Option<Instant>,
}

impl Worker {
    fn new(settings: WorkerSettings) -> Worker {
        let buffer = match settings.buffer {
            BufferSource::Ready(buffer) => buffer,
            BufferSource::Open(open) => open(),
        };
        let _ = settings.opened_buffer.set(Arc::clone(&buffer));
        Worker {
            records: settings.records,
            wake: settings.wake,
            control: settings.control,
            delivery: Arc::new(Delivery {
                buffer: Arc::clone(&buffer),
                transport: settings.transport,
                batch_size: settings.batch_size.max(1),
                consent: settings.consent.clone(),
                first_attempt: Arc::new(std::sync::Mutex::new(settings.first_attempt)),
                read_back: Arc::new(settings.read_back),
                orphan: std::sync::Mutex::new(None),
            }),
            buffer,
            events: settings.events,
            batch_interval: settings.batch_interval.max(MIN_BATCH_INTERVAL),
            summary: settings.summary,
            opted_out: settings.opted_out,
            withdrawn: settings.withdrawn,
            consent: settings.consent,
            dropped_queue_full: settings.dropped_queue_full,
            queue_full_recorded: settings.queue_full_recorded,
            queue_full_taken: 0,
            refused_taken: 0,
            unrecorded: DeliveryLedger::default(),
            unsettled: Vec::new(),
            round: None,
            backoffs: Backoffs::new(),
            pending: 0,
            pending_at_finish: false,
            direct_delivery: true,
            attempts: Vec::new(),
            ledger_due: None,
        }
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.batch_interval,
            self.batch_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first drain comes one period after the start, not at once: at once the queue holds
        // a few records at most, and storing them would cost a transaction that the next drain
        // shares with hundreds.
        let drain_period = DRAIN_INTERVAL.min(self.batch_interval);
        let mut drain =
            tokio::time::interval_at(tokio::time::Instant::now() + drain_period, drain_period);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Flush { deadline, reply }) => {
                        let result = self.flush(deadline).await;
                        reply.send(result);
                    }
                    Some(Control::Shutdown { deadline, reply }) => {
                        self.finish(deadline).await;
                        reply.send(());
                        return;
                    }
                    None => {
                        // Every handle is gone without a shutdown message.
                        self.finish(Instant::now() + ORPHAN_DEADLINE).await;
                        return;
                    }
                },
                result = poll_round(&mut self.round) => {
                    self.round = None;
                    if matches!(result, Err(Stopped::Withdrawn)) {
                        self.withdraw().await;
                    }
                    self.backoffs.record(&result);
                }
                // Records are collected when a handle signals a half-full queue, or at the latest
                // on the drain tick. Waiting on the queue itself would wake this thread for every
                // record, and a thread wake-up costs the recording thread microseconds.
                _ = self.wake.notified() => self.collect().await,
                _ = drain.tick() => self.collect().await,
                _ = tick.tick() => {
                    if self.pending > 0 {
                        self.start_round(Amount::Everything);
                    }
                }
            }
        }
    }

    /// Stops for good after the user withdrew consent elsewhere: no more recording, storing or
    /// sending; the round in flight is dropped (its claim released), queued records are
    /// discarded and counted as purged, and the buffer's pending events are deleted.
    async fn withdraw(&mut self) {
        self.withdrawn.store(true, Ordering::Relaxed);
        if self.opted_out.swap(true, Ordering::Relaxed) {
            return;
        }
        self.round = None;
        let mut discarded = Vec::new();
        let mut purged = 0;
        while self.records.drain(&mut discarded, MAX_DRAIN) == Drained::More {
            purged += discarded.len() as u64;
            discarded.clear();
        }
        purged += discarded.len() as u64;
        self.unrecorded.purged += purged;
        let counts = self.take_counts();
        let deadline = Instant::now() + STORE_WAIT * 4;
        self.write(Vec::new(), counts, deadline).await;
        let purge = on_buffer(&self.buffer, deadline, |buffer| buffer.purge()).await;
        if !matches!(purge, Ok(Ok(_))) {
            tracing::warn!("the events of a withdrawn session could not all be deleted yet");
        }
    }

    /// Whether the user withdrew consent from another process since the last look.
    fn consent_withdrawn(&self) -> bool {
        self.consent.as_ref().is_some_and(|withdrawn| withdrawn())
    }

    /// Sends full batches of what is queued directly (within the time storing may wait), stores
    /// the rest, and starts a round of full batches from the buffer when one is due.
    async fn collect(&mut self) {
        if self.consent_withdrawn() {
            self.withdraw().await;
        }
        let deadline = Instant::now() + STORE_WAIT;
        let fresh = self.deliver_fresh(deadline).await;
        // Storing what is left gets its own wait: direct delivery may have used up this one.
        let deadline = deadline.max(Instant::now() + STORE_WAIT / 5);
        if fresh.took_queue {
            // What was queued is taken; records queued since wait for the next drain, which
            // comes within the drain interval, as for any record. The counts and what the
            // requests did are written now.
            self.settle_unsettled(deadline).await;
            self.gather_counts();
            let nothing_else = fresh.unsent.is_empty() && self.unrecorded.is_empty();
            let ledger_waits = nothing_else && self.deliveries_may_wait(Instant::now());
            if !ledger_waits && (!self.waiting_for_buffer() || !fresh.unsent.is_empty()) {
                self.write_with_counts(fresh.unsent, deadline).await;
            }
        } else {
            self.store_queued_after(fresh.unsent, deadline, MAX_DRAIN, false)
                .await;
        }
        if self.pending >= self.delivery.batch_size {
            self.start_round(Amount::FullBatches);
        }
    }

    /// Whether the ledger can wait for what direct deliveries did: only successful deliveries
    /// are held back, for at most [`LEDGER_LAG`] after the first of them.
    fn deliveries_may_wait(&mut self, now: Instant) -> bool {
        let only_delivered = !self.attempts.is_empty()
            && self
                .attempts
                .iter()
                .all(|attempt| matches!(attempt, Attempt::Delivered(..)));
        if !only_delivered {
            return false;
        }
        let due = *self.ledger_due.get_or_insert(now + LEDGER_LAG);
        now < due
    }

    /// Starts a scheduled round unless one is in flight or this process is backing off.
    fn start_round(&mut self, amount: Amount) {
        if self.round.is_some() || !self.backoffs.due() {
            return;
        }
        let deadline = Instant::now() + ROUND_LIMIT;
        self.round = Some(Box::pin(self.delivery.round(deadline, amount)));
    }

    /// How many events a flush or a shutdown builds and writes at once ([`FINAL_CHUNK`] or,
    /// for a buffer that never blocks, [`MAX_DRAIN`]). The events of one write exist beside a
    /// buffer that may be full; a memory buffer's bound is what telemetry may take, so those
    /// stay as few as in the steady state (a flush of 2,048 events took the memory benchmark's
    /// peak past its bound).
    pub(super) fn final_chunk(&self) -> usize {
        if self.buffer.never_blocks() {
            MAX_DRAIN
        } else {
            FINAL_CHUNK
        }
    }

    /// Whether collecting is still allowed: after `Telemetry::disable` nothing more is stored.
    fn usage_allowed(&self) -> bool {
        !self.opted_out.load(Ordering::Relaxed)
    }

    /// Moves the queued records into the buffer, `chunk` at a time so that a full queue never
    /// becomes one large allocation, and writes the counts only this process has seen with the
    /// last chunk (one transaction for both on a durable buffer). Takes at most what was queued
    /// when it began (and a chunk), so threads that keep recording cannot hold the worker here
    /// for good. With `summary`, the `sdk_usage` summary goes with the last chunk too.
    async fn store_queued(&mut self, deadline: Instant, chunk: usize, summary: bool) -> Drained {
        self.store_queued_after(Vec::new(), deadline, chunk, summary)
            .await
    }

    /// [`store_queued`](Worker::store_queued), with `unsent` (events built already, which
    /// direct delivery did not deliver) stored ahead of the queued records.
    async fn store_queued_after(
        &mut self,
        mut unsent: Vec<telemetry_model::EncodedEvent>,
        deadline: Instant,
        chunk: usize,
        summary: bool,
    ) -> Drained {
        self.settle_unsettled(deadline).await;
        if self.waiting_for_buffer() && unsent.is_empty() {
            // The buffer is busy with an earlier write: the records wait in the queue.
            return Drained::Empty;
        }
        let mut budget = self.records.len() + chunk;
        loop {
            let mut records = Vec::with_capacity(chunk.min(self.records.len()));
            let drained = self.records.drain(&mut records, chunk.min(budget));
            budget = budget.saturating_sub(records.len());
            let last = !(drained == Drained::More && budget > 0);
            let mut events = std::mem::take(&mut unsent);
            if !self.usage_allowed() {
                // Recorded before the opt-out reached the worker: deleted, and counted so.
                self.unrecorded.purged += (events.len() + records.len()) as u64;
                events.clear();
            } else {
                events.extend(self.events.events(records));
                if last && summary && self.summary {
                    // Once: a later pass (if this one ran out of budget) adds no second one.
                    self.summary = false;
                    events.extend(self.events.summary());
                }
            }
            if last {
                self.write_with_counts(events, deadline).await;
                return drained;
            }
            self.write(events, DeliveryLedger::default(), deadline)
                .await;
            if self.waiting_for_buffer() {
                return Drained::More;
            }
        }
    }

    /// Writes `events` with the counts only this process has seen; should the events not fit
    /// (a full disk), the counts alone, which say so, may still fit.
    async fn write_with_counts(
        &mut self,
        events: Vec<telemetry_model::EncodedEvent>,
        deadline: Instant,
    ) {
        let counts = self.take_counts();
        let with_events = !events.is_empty();
        self.write(events, counts, deadline).await;
        if with_events && !self.unrecorded.is_empty() && !self.waiting_for_buffer() {
            let counts = std::mem::take(&mut self.unrecorded);
            self.write(Vec::new(), counts, deadline).await;
        }
    }

    /// The counts only this process has seen and not yet handed to a write.
    fn take_counts(&mut self) -> DeliveryLedger {
        self.gather_counts();
        std::mem::take(&mut self.unrecorded)
    }

    /// Moves the counts other threads keep (queue-full drops, scrubbed events, refused
    /// records) into `unrecorded`.
    fn gather_counts(&mut self) {
        let queue_full = self.dropped_queue_full.load(Ordering::Relaxed);
        self.unrecorded.dropped_queue_full += queue_full - self.queue_full_taken;
        self.queue_full_taken = queue_full;
        self.unrecorded.dropped_scrubbed += self
            .events
            .stats
            .refused_unrecorded
            .swap(0, Ordering::Relaxed);
        let refused = self.events.usage.refused();
        self.unrecorded.refused_records += refused - self.refused_taken;
        self.refused_taken = refused;
    }

    /// Appends events and adds counts, and what direct deliveries did, to the ledger in one
    /// write. What cannot be stored is counted: the events as dropped for storage, the counts
    /// kept for the next write. A write still waiting for the buffer at `deadline` goes on in
    /// the background and is settled later: it may yet succeed, so it is neither counted as
    /// failed nor repeated.
    async fn write(
        &mut self,
        events: Vec<telemetry_model::EncodedEvent>,
        counts: DeliveryLedger,
        deadline: Instant,
    ) {
        let attempts = std::mem::take(&mut self.attempts);
        self.ledger_due = None;
        if events.is_empty() && counts.is_empty() && attempts.is_empty() {
            return;
        }
        let now = SystemTime::now();
        // Should the write fail, the attempts' counters are kept like any count; what they did
        // to the circuit is not, as the next delivery sets it again.
        let mut kept = counts.clone();
        for attempt in &attempts {
            attempt.apply(&mut kept, now);
        }
        let write = Unsettled {
            events: events.len() as u64,
            queue_full_taken: self.queue_full_taken,
            refused_taken: self.refused_taken,
            counts: kept,
            task: spawn_on_buffer(&self.buffer, Blocking::BufferOnly, move |buffer| {
                buffer.append_and_record(events, &mut |ledger| {
                    ledger.add_counts(&counts);
                    for attempt in &attempts {
                        attempt.apply(ledger, now);
                    }
                })
            }),
        };
        self.settle(write, deadline).await;
    }

    /// Whether a write of the storing half is still waiting for the buffer (another process
    /// holds a durable buffer's lock): storing more would only pile up behind it.
    fn waiting_for_buffer(&self) -> bool {
        !self.unsettled.is_empty()
    }

    /// Waits for a write until `deadline` and applies its outcome, or keeps it for later.
    async fn settle(&mut self, mut write: Unsettled, deadline: Instant) {
        let finished =
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), &mut write.task)
                .await;
        match finished {
            Ok(result) => self.apply(write, result),
            Err(_) => self.unsettled.push(write),
        }
    }

    /// Settles the writes that have finished by `deadline`, in order.
    async fn settle_unsettled(&mut self, deadline: Instant) {
        for write in std::mem::take(&mut self.unsettled) {
            if self.unsettled.is_empty() {
                self.settle(write, deadline).await;
            } else {
                // An earlier write is still waiting: the buffer is busy, this one waits too.
                self.unsettled.push(write);
            }
        }
    }

    /// Applies the outcome of a finished write.
    fn apply(
        &mut self,
        write: Unsettled,
        result: Result<Result<BufferStats, BufferError>, TaskFailed>,
    ) {
        let result = result.unwrap_or_else(|_| {
            Err(BufferError::Storage(
                "the telemetry buffer failed unexpectedly".to_owned(),
            ))
        });
        match result {
            Ok(stats) => {
                self.pending = stats.pending;
                self.pending_at_finish = true;
                self.queue_full_recorded
                    .fetch_max(write.queue_full_taken, Ordering::AcqRel);
                self.events
                    .usage
                    .mark_refusals_recorded(write.refused_taken);
            }
            Err(error) => {
                if write.events > 0 {
                    tracing::warn!(%error, "events could not be buffered and were dropped");
                }
                self.unrecorded.dropped_storage += write.events;
                self.unrecorded.add_counts(&write.counts);
            }
        }
    }

    /// Sends what is queued directly and stores what did not go, lets a round in flight
    /// finish, then delivers everything the buffer holds, all within `deadline`.
    async fn flush(&mut self, deadline: Instant) -> Result<FlushReport, FlushError> {
        if self.consent_withdrawn() {
            self.withdraw().await;
        }
        if !self.usage_allowed() {
            return Err(FlushError::ConsentWithdrawn);
        }
        // What is queued goes straight out, within the wait any store may take, as a drain's
        // full batches do; what did not go is stored, and delivered with what the buffer holds.
        // A flush shorter than that wait stores first, as before: a request it abandoned would
        // be sent again from the buffer, and would turn direct delivery off for good.
        let now = Instant::now();
        let fresh = if deadline.saturating_duration_since(now) >= STORE_WAIT {
            self.deliver_fresh_all(now + STORE_WAIT).await
        } else {
            Fresh::default()
        };
        let failed_directly = fresh.failure.is_some();
        self.store_queued_all(fresh.unsent, deadline, false).await;
        // A round in flight finishes first (or is dropped at the deadline); what it sent is
        // its own, and the flush reports what it sends itself.
        let result = match (self.finish_round(deadline).await, fresh.failure) {
            (Some(Err(stopped @ (Stopped::Deadline | Stopped::Storage(_)))), _) => Err(stopped),
            // The destination just failed this flush's request; the events are stored for a
            // later try, with the backoff (and any wait it asked for) that the failure set.
            (_, Some(failure)) => Err(failure),
            _ => self.deliver_within(deadline).await,
        }
        .map(|report| FlushReport {
            delivered: report.delivered + fresh.delivered,
            ..report
        });
        if !failed_directly {
            // A failed direct request set the backoff already.
            self.backoffs.record(&result);
        }
        match result {
            Ok(report) => Ok(report),
            Err(stopped) => Err(stopped.into_flush_error(self.count_pending().await)),
        }
    }

    /// Everything queued, not only what was queued when storing began, after `unsent`.
    async fn store_queued_all(
        &mut self,
        unsent: Vec<telemetry_model::EncodedEvent>,
        deadline: Instant,
        summary: bool,
    ) {
        let mut drained = self
            .store_queued_after(unsent, deadline, self.final_chunk(), summary)
            .await;
        while drained == Drained::More && Instant::now() < deadline {
            drained = self
                .store_queued(deadline, self.final_chunk(), summary)
                .await;
        }
    }

    /// Waits for the round in flight until `deadline`, then drops it (which abandons its
    /// request and releases its claim). Returns its result if it finished.
    async fn finish_round(&mut self, deadline: Instant) -> Option<Result<FlushReport, Stopped>> {
        let round = self.round.take()?;
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), round).await {
            Ok(result) => Some(result),
            Err(_) => Some(Err(Stopped::Deadline)),
        }
    }

    /// Delivers everything until `deadline`, dropping the round if it runs over.
    async fn deliver_within(&self, deadline: Instant) -> Result<FlushReport, Stopped> {
        let round = self.delivery.round(deadline, Amount::Everything);
        // The round checks the deadline between batches and bounds each request by it; this
        // bounds the buffer operations and anything else as well.
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), round).await {
            Ok(result) => result,
            Err(_) => Err(Stopped::Deadline),
        }
    }

    async fn count_pending(&self) -> Option<u64> {
        let deadline = Instant::now() + Duration::from_millis(200);
        match on_buffer(&self.buffer, deadline, |buffer| buffer.stats()).await {
            Ok(Ok(stats)) => Some(stats.pending as u64),
            _ => None,
        }
    }

    /// Shutdown: stores everything first, then delivers with what is left of `deadline`.
    ///
    /// Storing gets three quarters of the time; the rest is kept for one last, small write of
    /// the counts. Records still queued when storing's time is up (a machine so busy that the
    /// worker cannot keep up) are counted as dropped for storage rather than lost uncounted, and
    /// so is the summary if it was not written.
    async fn finish(&mut self, deadline: Instant) {
        if self.consent_withdrawn() {
            self.withdraw().await;
        }
        // Only what the writes of this shutdown answer counts for skipping the last round.
        self.pending_at_finish = false;
        let now = Instant::now();
        let storing = now + deadline.saturating_duration_since(now) * 3 / 4;
        // What is queued and the summary go straight out, within the wait any store may take
        // and at most half the time for storing; what did not go is stored, and delivered with
        // what the buffer holds.
        let direct_by = (now + storing.saturating_duration_since(now) / 2).min(now + STORE_WAIT);
        let unsent = self.deliver_fresh_and_summary(direct_by).await;
        self.store_queued_all(unsent, storing, true).await;
        let mut left = Vec::new();
        while self.records.drain(&mut left, MAX_DRAIN) == Drained::More {
            self.unrecorded.dropped_storage += left.len() as u64;
            left.clear();
        }
        self.unrecorded.dropped_storage += left.len() as u64;
        if self.summary && self.usage_allowed() {
            self.summary = false;
            self.unrecorded.dropped_storage += 1;
        }
        let counts = self.take_counts();
        self.write(Vec::new(), counts, deadline).await;
        self.settle_unsettled(deadline).await;
        if !self.unrecorded.is_empty() && !self.waiting_for_buffer() {
            // The buffer's storage refused even the counts (a full disk): the last resort is a
            // record that takes writes without growing, so the drops stay counted.
            let counts = std::mem::take(&mut self.unrecorded);
            let kept = counts.clone();
            let written = on_buffer(&self.buffer, deadline, move |buffer| {
                buffer.add_counts_when_full(&counts)
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::warn!("counts of dropped events could not be stored and are lost");
                self.unrecorded = kept;
            }
        }
        if !self.usage_allowed() {
            return;
        }
        let earlier = self.finish_round(deadline).await;
        if matches!(earlier, Some(Err(Stopped::Deadline))) {
            return;
        }
        if earlier.is_none() && self.pending_at_finish && self.pending == 0 {
            // The last write of this shutdown found the buffer empty, other processes' events
            // included, and no round was in flight: a round would only read the state file, the ledger and the
            // totals to find nothing. Events another process stores after that write are that
            // process's to deliver.
            return;
        }
        if let Err(stopped) = self.deliver_within(deadline).await {
            tracing::debug!(?stopped, "events left undelivered at shutdown");
        }
    }
}

/// A write of the storing half: events and counts, appended together. Kept while it waits for
/// a busy buffer past its deadline; it goes on in the background, and its outcome is applied
/// when it finishes, so that events stored late are not counted as dropped and counts written
/// late are not written twice.
struct Unsettled {
    /// How many events it appends.
    events: u64,
    /// The counts it adds to the ledger.
    counts: DeliveryLedger,
    /// Queue-full drops taken into the counts when it was made.
    queue_full_taken: u64,
    /// Foreign-handle refusals taken into the counts when it was made.
    refused_taken: u64,
    task: BufferTask<Result<BufferStats, BufferError>>,
}

/// The round in flight's result; never ready when there is none.
async fn poll_round(round: &mut Option<Round>) -> Result<FlushReport, Stopped> {
    match round {
        Some(round) => round.await,
        None => std::future::pending().await,
    }
}
