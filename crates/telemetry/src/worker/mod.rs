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
//! run on the runtime's blocking pool ([`delivery::on_buffer`]), so a spool that waits on
//! another process's lock cannot stretch a deadline either.
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

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use telemetry_buffer::{Buffer, BufferError, BufferStats, DeliveryLedger};
use telemetry_policy::ScrubReason;
use telemetry_transport::Transport;
use tokio::sync::{Notify, mpsc};

use delivery::{Amount, Backoffs, Delivery, Stopped, on_buffer};
pub use delivery::{FlushError, FlushReport, PauseReason};
pub(crate) use delivery::{TimeOfDay, paused_until};
pub(crate) use events::{EventBuilder, MessageSink};

use crate::queue::{Drained, RecordReceivers};

/// Messages from handles to the worker that need an answer.
pub(crate) enum Control {
    Flush {
        deadline: Instant,
        reply: std_mpsc::Sender<Result<FlushReport, FlushError>>,
    },
    Shutdown {
        deadline: Instant,
        reply: std_mpsc::Sender<()>,
    },
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
    pub(crate) batch_size: usize,
    pub(crate) batch_interval: Duration,
    /// Whether to store an `sdk_usage` summary at shutdown.
    pub(crate) summary: bool,
    /// Set when the user opted out through the running handle: nothing more is stored.
    pub(crate) opted_out: Arc<AtomicBool>,
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

/// How often the worker collects queued records when no handle has signalled.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long a scheduled store waits for the buffer before it leaves the write to finish in the
/// background, so that a buffer another process keeps busy never keeps the worker from
/// answering a flush or a shutdown.
const STORE_WAIT: Duration = Duration::from_millis(250);

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
    dropped_queue_full: Arc<AtomicU64>,
    /// Queue-full drops already added to the ledger.
    queue_full_recorded: Arc<AtomicU64>,
    /// Queue-full drops taken into `unrecorded` so far.
    queue_full_taken: u64,
    /// Counts not yet written to the ledger (the buffer could not take them yet).
    unrecorded: DeliveryLedger,
    /// Writes that had not finished at their deadline, oldest first.
    unsettled: Vec<Unsettled>,
    /// The round in flight, if any.
    round: Option<Round>,
    backoffs: Backoffs,
    /// Events pending in the buffer after the last append, by any process.
    pending: usize,
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
            }),
            buffer,
            events: settings.events,
            batch_interval: settings.batch_interval.max(MIN_BATCH_INTERVAL),
            summary: settings.summary,
            opted_out: settings.opted_out,
            dropped_queue_full: settings.dropped_queue_full,
            queue_full_recorded: settings.queue_full_recorded,
            queue_full_taken: 0,
            unrecorded: DeliveryLedger::default(),
            unsettled: Vec::new(),
            round: None,
            backoffs: Backoffs::new(),
            pending: 0,
        }
    }

    async fn run(mut self) {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.batch_interval,
            self.batch_interval,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain = tokio::time::interval(DRAIN_INTERVAL.min(self.batch_interval));
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Flush { deadline, reply }) => {
                        let result = self.flush(deadline).await;
                        let _ = reply.send(result);
                    }
                    Some(Control::Shutdown { deadline, reply }) => {
                        self.finish(deadline).await;
                        let _ = reply.send(());
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

    /// Stores what is queued and starts a round of full batches when one is due.
    async fn collect(&mut self) {
        let deadline = Instant::now() + STORE_WAIT;
        self.store_queued(deadline).await;
        if self.pending >= self.delivery.batch_size {
            self.start_round(Amount::FullBatches);
        }
    }

    /// Starts a scheduled round unless one is in flight or this process is backing off.
    fn start_round(&mut self, amount: Amount) {
        if self.round.is_some() || !self.backoffs.due() {
            return;
        }
        let deadline = Instant::now() + ROUND_LIMIT;
        self.round = Some(Box::pin(self.delivery.round(deadline, amount)));
    }

    /// Whether collecting is still allowed: after `Telemetry::disable` nothing more is stored.
    fn usage_allowed(&self) -> bool {
        !self.opted_out.load(Ordering::Relaxed)
    }

    /// Moves the queued records into the buffer, a bounded chunk at a time so that a full
    /// queue never becomes one large allocation. Takes at most what was queued when it began
    /// (and a chunk), so threads that keep recording cannot hold the worker here for good.
    async fn store_queued(&mut self, deadline: Instant) -> Drained {
        self.settle_unsettled(deadline).await;
        if self.waiting_for_buffer() {
            // The buffer is busy with an earlier write: the records wait in the queue.
            return Drained::Empty;
        }
        let mut budget = self.records.len() + MAX_DRAIN;
        loop {
            let mut records = Vec::with_capacity(MAX_DRAIN.min(self.records.len()));
            let drained = self.records.drain(&mut records, MAX_DRAIN.min(budget));
            budget = budget.saturating_sub(records.len());
            if !records.is_empty() && self.usage_allowed() {
                let events = self.events.events(records);
                self.append(events, deadline).await;
            }
            match drained {
                Drained::More if budget > 0 => {}
                drained => {
                    self.record_counts(deadline).await;
                    return drained;
                }
            }
        }
    }

    /// Appends events to the buffer; what cannot be stored is counted as dropped for storage.
    /// An append still waiting for the buffer at `deadline` goes on in the background and is
    /// settled later: it may yet succeed, so it is neither counted as dropped nor repeated.
    async fn append(&mut self, events: Vec<telemetry_model::EncodedEvent>, deadline: Instant) {
        if events.is_empty() {
            return;
        }
        let count = events.len() as u64;
        let task = spawn_on_buffer(&self.buffer, move |buffer| {
            buffer.append(events)?;
            buffer.stats().map(WriteResult::Stats)
        });
        self.settle(Unsettled::Append { count, task }, deadline)
            .await;
    }

    /// Adds the counts only this process has seen to the ledger; kept for a later try when the
    /// buffer cannot take them.
    async fn record_counts(&mut self, deadline: Instant) {
        let queue_full = self.dropped_queue_full.load(Ordering::Relaxed);
        self.unrecorded.dropped_queue_full += queue_full - self.queue_full_taken;
        self.queue_full_taken = queue_full;
        self.unrecorded.dropped_scrubbed += self
            .events
            .stats
            .refused_unrecorded
            .swap(0, Ordering::Relaxed);
        if self.unrecorded.is_empty() || self.waiting_for_buffer() {
            return;
        }
        let counts = std::mem::take(&mut self.unrecorded);
        let written = counts.clone();
        let task = spawn_on_buffer(&self.buffer, move |buffer| {
            buffer
                .update_ledger(&mut |ledger| ledger.add_counts(&written))
                .map(|_| WriteResult::Ledger)
        });
        let queue_full_taken = self.queue_full_taken;
        self.settle(
            Unsettled::Counts {
                counts,
                queue_full_taken,
                task,
            },
            deadline,
        )
        .await;
    }

    /// Whether a write of the storing half is still waiting for the buffer (another process
    /// holds a durable buffer's lock): storing more would only pile up behind it.
    fn waiting_for_buffer(&self) -> bool {
        !self.unsettled.is_empty()
    }

    /// Waits for a write until `deadline` and applies its outcome, or keeps it for later.
    async fn settle(&mut self, mut write: Unsettled, deadline: Instant) {
        let finished = {
            let task = write.task();
            tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), task).await
        };
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
    fn apply(&mut self, write: Unsettled, result: Result<WriteOutcome, tokio::task::JoinError>) {
        let result = result.unwrap_or_else(|_| {
            Err(BufferError::Storage(
                "the telemetry buffer failed unexpectedly".to_owned(),
            ))
        });
        match write {
            Unsettled::Append { count, .. } => match result {
                Ok(WriteResult::Stats(stats)) => self.pending = stats.pending,
                Ok(WriteResult::Ledger) => {}
                Err(error) => {
                    tracing::warn!(%error, "events could not be buffered and were dropped");
                    self.unrecorded.dropped_storage += count;
                }
            },
            Unsettled::Counts {
                counts,
                queue_full_taken,
                ..
            } => {
                if result.is_ok() {
                    self.queue_full_recorded
                        .store(queue_full_taken, Ordering::Release);
                } else {
                    self.unrecorded.add_counts(&counts);
                }
            }
        }
    }

    /// Stores what is queued, lets a round in flight finish, then delivers everything, all
    /// within `deadline`.
    async fn flush(&mut self, deadline: Instant) -> Result<FlushReport, FlushError> {
        self.store_queued_all(deadline).await;
        // A round in flight finishes first (or is dropped at the deadline); what it sent is
        // its own, and the flush reports what it sends itself.
        let result = match self.finish_round(deadline).await {
            Some(Err(stopped @ (Stopped::Deadline | Stopped::Storage(_)))) => Err(stopped),
            _ => self.deliver_within(deadline).await,
        };
        self.backoffs.record(&result);
        match result {
            Ok(report) => Ok(report),
            Err(stopped) => Err(stopped.into_flush_error(self.count_pending().await)),
        }
    }

    /// Everything queued, not only what was queued when storing began.
    async fn store_queued_all(&mut self, deadline: Instant) {
        while self.store_queued(deadline).await == Drained::More && Instant::now() < deadline {}
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
    async fn finish(&mut self, deadline: Instant) {
        self.store_queued_all(deadline).await;
        if self.summary
            && self.usage_allowed()
            && let Some(summary) = self.events.summary()
        {
            self.append(vec![summary], deadline).await;
        }
        self.record_counts(deadline).await;
        self.settle_unsettled(deadline).await;
        if !self.usage_allowed() {
            return;
        }
        let earlier = self.finish_round(deadline).await;
        if matches!(earlier, Some(Err(Stopped::Deadline))) {
            return;
        }
        if let Err(stopped) = self.deliver_within(deadline).await {
            tracing::debug!(?stopped, "events left undelivered at shutdown");
        }
    }
}

/// What a write of the storing half gives back.
enum WriteResult {
    /// The buffer's counts after an append.
    Stats(BufferStats),
    /// The ledger was updated.
    Ledger,
}

type WriteOutcome = Result<WriteResult, BufferError>;

type WriteTask = tokio::task::JoinHandle<WriteOutcome>;

/// A write of the storing half that had not finished at its deadline. It goes on in the
/// background; its outcome is applied when it finishes, so that an append that succeeds late
/// is not counted as dropped, and counts that were written late are not written twice.
enum Unsettled {
    Append {
        count: u64,
        task: WriteTask,
    },
    Counts {
        counts: DeliveryLedger,
        queue_full_taken: u64,
        task: WriteTask,
    },
}

impl Unsettled {
    fn task(&mut self) -> &mut WriteTask {
        match self {
            Unsettled::Append { task, .. } | Unsettled::Counts { task, .. } => task,
        }
    }
}

/// Starts a buffer operation on the runtime's blocking pool (see [`delivery::on_buffer`]).
fn spawn_on_buffer(
    buffer: &Arc<dyn Buffer>,
    operation: impl FnOnce(&dyn Buffer) -> WriteOutcome + Send + 'static,
) -> WriteTask {
    let buffer = Arc::clone(buffer);
    tokio::task::spawn_blocking(move || operation(&*buffer))
}

/// The round in flight's result; never ready when there is none.
async fn poll_round(round: &mut Option<Round>) -> Result<FlushReport, Stopped> {
    match round {
        Some(round) => round.await,
        None => std::future::pending().await,
    }
}
