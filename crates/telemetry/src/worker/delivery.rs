//! The delivering half of the worker: claims batches from the buffer, sends them, and writes
//! what happened to the buffer's ledger, where every process that shares the buffer sees it.
//!
//! A delivery *round* is one future that owns what it uses (the buffer, the transport), so the
//! worker can keep storing records while a round waits on the network, and can drop the round
//! at a deadline: a dropped round releases its claim, and its events stay buffered.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use telemetry_buffer::{Buffer, ClaimId, DeliveryLedger, later};
use telemetry_transport::{Backoff, CircuitBreaker, SendError, Transport};

use crate::worker::recheck::{ReadBackCheck, Verdict};

/// How many failed deliveries in a row, by any process, open the circuit.
const FAILURE_THRESHOLD: u32 = CircuitBreaker::DEFAULT_FAILURE_THRESHOLD;

/// How long an open circuit pauses scheduled deliveries and flushes.
const COOL_DOWN: Duration = CircuitBreaker::DEFAULT_COOL_DOWN;

/// The longest wait a destination can impose (longer `Retry-After` values are shortened by the
/// transport). A wait in the ledger further away than this was written while the clock was
/// wrong, and is ignored rather than obeyed for ever.
const MAX_WAIT: Duration = Duration::from_secs(60 * 60);

/// The result of a successful flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events delivered by this flush.
    pub delivered: u64,
    /// Events still waiting (for example because the destination failed).
    pub pending: u64,
}

/// Why deliveries are paused for every process sharing the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// The destination answered 429 or 503 with `Retry-After`.
    ServerAskedToWait,
    /// Deliveries failed several times in a row; they resume after a cool-down.
    RepeatedFailures,
}

/// Why a flush did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// The deadline passed first; undelivered events stay buffered.
    #[error("flush did not finish before its deadline; undelivered events stay buffered")]
    Timeout,
    /// The destination failed; undelivered events stay buffered.
    #[error("{0}")]
    Delivery(String),
    /// The buffer could not be read or written (a busy or damaged spool, a full disk).
    #[error("{0}")]
    Storage(String),
    /// Deliveries are paused until `until`, for every process of this user.
    #[error("{}", paused_message(*.reason, *.until, *.pending))]
    Paused {
        /// Why.
        reason: PauseReason,
        /// When deliveries may resume.
        until: SystemTime,
        /// Events waiting, when the buffer could count them.
        pending: Option<u64>,
    },
    /// The user withdrew consent (from this or another process): nothing more is sent.
    #[error("telemetry was turned off; nothing more is sent and unsent events were deleted")]
    ConsentWithdrawn,
    /// The worker thread is gone (it could not start, or it stopped).
    #[error("the telemetry worker is not running")]
    WorkerGone,
}

fn paused_message(reason: PauseReason, until: SystemTime, pending: Option<u64>) -> String {
    let why = match reason {
        PauseReason::ServerAskedToWait => "the server asked to wait",
        PauseReason::RepeatedFailures => "deliveries failed several times in a row and are paused",
    };
    let pending = match pending {
        Some(count) => format!("{count} events pending"),
        None => "pending events could not be counted".to_owned(),
    };
    format!("{why} until {} UTC; {pending}", TimeOfDay(until))
}

/// `HH:MM:SS` of a time, in UTC.
pub(crate) struct TimeOfDay(pub(crate) SystemTime);

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs())
            % 86_400;
        write!(
            f,
            "{:02}:{:02}:{:02}",
            seconds / 3_600,
            seconds / 60 % 60,
            seconds % 60
        )
    }
}

/// Why a round stopped before the buffer was empty. Undelivered events stay buffered.
#[derive(Clone, Debug)]
pub(crate) enum Stopped {
    /// The deadline passed.
    Deadline,
    /// The buffer failed, or did not answer before the deadline.
    Storage(String),
    /// The destination failed; retry later, not before `retry_after` when given.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The ledger says to wait.
    Paused {
        reason: PauseReason,
        until: SystemTime,
    },
    /// The user withdrew consent for this process's session.
    Withdrawn,
}

impl Stopped {
    pub(crate) fn into_flush_error(self, pending: Option<u64>) -> FlushError {
        match self {
            Stopped::Deadline => FlushError::Timeout,
            Stopped::Storage(message) => FlushError::Storage(message),
            Stopped::Failed { message, .. } => FlushError::Delivery(message),
            Stopped::Paused { reason, until } => FlushError::Paused {
                reason,
                until,
                pending,
            },
            Stopped::Withdrawn => FlushError::ConsentWithdrawn,
        }
    }
}

/// How much of the buffer a round sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Amount {
    /// Only full batches: the batch size was reached, the rest waits for the interval.
    FullBatches,
    /// Everything: the interval elapsed, or a flush or shutdown asked for it.
    Everything,
}

/// Runs a buffer operation and waits for it at most until `deadline`: on the runtime's
/// blocking pool, or at once for a buffer that never blocks. A durable buffer may wait for
/// another process's write lock; doing that on the blocking pool rather than on the worker's
/// own thread keeps every deadline of the worker, and the worker keeps storing and answering
/// while it waits.
pub(crate) async fn on_buffer<T: Send + Unpin + 'static>(
    buffer: &Arc<dyn Buffer>,
    deadline: Instant,
    operation: impl FnOnce(&dyn Buffer) -> T + Send + 'static,
) -> Result<T, Stopped> {
    let kind = buffer.kind();
    let task = spawn_on_buffer(buffer, Blocking::BufferOnly, operation);
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(TaskFailed)) => Err(Stopped::Storage(
            "the telemetry buffer failed unexpectedly".to_owned(),
        )),
        Err(_) => Err(Stopped::Storage(format!(
            "the telemetry buffer ({kind}) did not answer in time; another process may be holding it"
        ))),
    }
}

/// What an operation handed to [`spawn_on_buffer`] may wait for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocking {
    /// Only the buffer: it runs on the worker's own thread when the buffer never blocks.
    BufferOnly,
    /// Files besides the buffer (the consent state): always on the blocking pool.
    Files,
}

/// A buffer operation that panicked (or whose thread was lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskFailed;

/// A buffer operation started by [`spawn_on_buffer`]: finished already, or running on the
/// blocking pool. A finished one is ready at its first poll, whatever deadline it is awaited
/// with, so a write made at a deadline that has passed still counts.
pub(crate) enum BufferTask<T> {
    Done(Option<Result<T, TaskFailed>>),
    Running(tokio::task::JoinHandle<T>),
}

impl<T: Unpin> Future for BufferTask<T> {
    type Output = Result<T, TaskFailed>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            BufferTask::Done(result) => {
                std::task::Poll::Ready(result.take().unwrap_or(Err(TaskFailed)))
            }
            BufferTask::Running(task) => std::pin::Pin::new(task)
                .poll(context)
                .map(|joined| joined.map_err(|_| TaskFailed)),
        }
    }
}

/// Starts a buffer operation: on the runtime's blocking pool, or, when neither the buffer nor
/// the operation can block, at once on the worker's own thread, which costs a fraction of the
/// hand-off to another thread and back (for the memory buffer, that hand-off was most of what
/// storing and claiming a batch cost). A panic in the operation is caught either way and
/// comes back as [`TaskFailed`].
pub(crate) fn spawn_on_buffer<T: Send + 'static>(
    buffer: &Arc<dyn Buffer>,
    blocking: Blocking,
    operation: impl FnOnce(&dyn Buffer) -> T + Send + 'static,
) -> BufferTask<T> {
    let buffer = Arc::clone(buffer);
    if blocking == Blocking::BufferOnly && buffer.never_blocks() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| operation(&*buffer)));
        BufferTask::Done(Some(result.map_err(|_| TaskFailed)))
    } else {
        BufferTask::Running(tokio::task::spawn_blocking(move || operation(&*buffer)))
    }
}

/// When a paused ledger lets deliveries resume, if it is paused at `now`. Waits further away
/// than any destination or the breaker can impose are clock mistakes and are ignored.
pub(crate) fn paused_until(
    ledger: &DeliveryLedger,
    now: SystemTime,
) -> Option<(PauseReason, SystemTime)> {
    let plausible = |until: SystemTime, longest: Duration| until > now && until <= now + longest;
    let server = ledger
        .not_before
        .filter(|until| plausible(*until, MAX_WAIT))
        .map(|until| (PauseReason::ServerAskedToWait, until));
    let circuit = ledger
        .circuit_open_until
        .filter(|until| plausible(*until, CircuitBreaker::MAX_COOL_DOWN))
        .map(|until| (PauseReason::RepeatedFailures, until));
    match (server, circuit) {
        (Some(server), Some(circuit)) => Some(if circuit.1 > server.1 {
            circuit
        } else {
            server
        }),
        (server, circuit) => server.or(circuit),
    }
}

/// What a round's trip to the buffer found.
pub(crate) enum Claimed {
    /// The user withdrew consent: send nothing.
    Withdrawn,
    /// The ledger says to wait.
    Paused {
        reason: PauseReason,
        until: SystemTime,
    },
    /// Nothing (or, for full batches only, not enough) to send; how many events are pending.
    Nothing(usize),
    /// A batch to send.
    Batch(telemetry_buffer::Claim),
}

/// What the second look at a batch read back dropped.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReadBack {
    other_session: u64,
    invalid: u64,
    scrubbed: u64,
}

impl ReadBack {
    fn apply(&self, ledger: &mut DeliveryLedger) {
        ledger.purged = ledger.purged.saturating_add(self.other_session);
        ledger.dropped_invalid = ledger.dropped_invalid.saturating_add(self.invalid);
        ledger.dropped_scrubbed = ledger.dropped_scrubbed.saturating_add(self.scrubbed);
    }
}

/// What one batch's attempt does to the ledger.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Attempt {
    /// Sent and accepted; the second look dropped the rest of the claim.
    Delivered(u64, ReadBack),
    /// Nothing was sent: the second look dropped the whole claim.
    NothingToSend(ReadBack),
    /// The batch was too large for the destination and is sent again in smaller ones.
    Split,
    /// The destination refused the batch for good; the second look dropped the rest.
    Rejected(u64, ReadBack),
    Failed {
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    pub(crate) fn apply(&self, ledger: &mut DeliveryLedger, now: SystemTime) {
        match *self {
            Attempt::Delivered(count, read_back) => {
                read_back.apply(ledger);
                ledger.delivered = ledger.delivered.saturating_add(count);
                ledger.last_sent = later(ledger.last_sent, Some(now));
                ledger.consecutive_failures = 0;
                ledger.circuit_open_until = None;
            }
            Attempt::NothingToSend(read_back) => read_back.apply(ledger),
            Attempt::Split => {}
            Attempt::Rejected(count, read_back) => {
                read_back.apply(ledger);
                ledger.dropped_rejected = ledger.dropped_rejected.saturating_add(count);
            }
            Attempt::Failed { retry_after } => {
                ledger.failed_deliveries = ledger.failed_deliveries.saturating_add(1);
                ledger.consecutive_failures = ledger.consecutive_failures.saturating_add(1);
                if let Some(wait) = retry_after {
                    ledger.not_before = later(ledger.not_before, Some(now + wait.min(MAX_WAIT)));
                }
                if ledger.consecutive_failures >= FAILURE_THRESHOLD {
                    ledger.circuit_open_until = Some(now + COOL_DOWN);
                }
            }
        }
    }
}

/// Gives a claim back to the buffer unless it was settled: a round dropped at a deadline (or
/// by a panic) leaves its events pending, not held until the claim's lease runs out.
struct ClaimGuard {
    buffer: Arc<dyn Buffer>,
    claim: Option<ClaimId>,
}

impl ClaimGuard {
    fn settle(&mut self) -> Option<ClaimId> {
        self.claim.take()
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let buffer = Arc::clone(&self.buffer);
        let release = move || {
            let _ = buffer.release(claim);
        };
        // On the blocking pool, like every buffer operation that may wait: the round is
        // dropped at a deadline, and a release that waits for another process's lock must not
        // stretch it.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if !self.buffer.never_blocks() => drop(runtime.spawn_blocking(release)),
            // A panic here, perhaps while a round unwinds, must not become an abort.
            _ => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                release,
            ))),
        }
    }
}

/// Whether the user withdrew consent for this process's session; cheap when nothing changed.
pub(crate) type ConsentCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Something to do once, before the first request of the process leaves.
pub(crate) type FirstAttempt = Arc<std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// What a round needs; shared by every round of one worker.
pub(crate) struct Delivery {
    pub(crate) buffer: Arc<dyn Buffer>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) batch_size: usize,
    /// Checked before every round: a withdrawn consent sends nothing more.
    pub(crate) consent: Option<ConsentCheck>,
    /// Records, before the first request leaves, that events under the session may leave.
    pub(crate) first_attempt: FirstAttempt,
    /// The second look at every event read back.
    pub(crate) read_back: Arc<ReadBackCheck>,
    /// A claim that did not answer before its round's deadline, settled by the next round.
    pub(crate) orphan: std::sync::Mutex<Option<OrphanClaim>>,
}

/// A claim that had not answered when its round gave up on it (on the blocking pool).
pub(crate) type OrphanClaim = BufferTask<Result<Claimed, telemetry_buffer::BufferError>>;

impl Delivery {
    /// A round that sends batches until none are left (or, for [`Amount::FullBatches`], until
    /// less than a batch is left), the destination fails, or `deadline` passes. It owns what
    /// it uses, so the worker can poll it beside its other work or drop it.
    pub(crate) fn round(
        self: &Arc<Delivery>,
        deadline: Instant,
        amount: Amount,
    ) -> impl Future<Output = Result<FlushReport, Stopped>> + Send + 'static {
        let delivery = Arc::clone(self);
        async move { delivery.run_round(deadline, amount).await }
    }

    async fn run_round(&self, deadline: Instant, amount: Amount) -> Result<FlushReport, Stopped> {
        let mut report = FlushReport::default();
        let mut limit = self.batch_size;
        let batch_size = self.batch_size;
        // The ledger is read with the first claim, in one trip to the buffer.
        let mut check_pause = true;
        loop {
            if Instant::now() >= deadline {
                return Err(Stopped::Deadline);
            }
            self.settle_orphan(deadline).await?;
            let consent = self.consent.clone().filter(|_| check_pause);
            // The consent check reads the state file: the first trip of a round goes to the
            // blocking pool whatever the buffer.
            let blocking = if consent.is_some() {
                Blocking::Files
            } else {
                Blocking::BufferOnly
            };
            let mut task = spawn_on_buffer(&self.buffer, blocking, move |buffer| {
                if consent.is_some_and(|withdrawn| withdrawn()) {
                    return Ok(Claimed::Withdrawn);
                }
                if check_pause
                    && let Some((reason, until)) =
                        paused_until(&buffer.ledger()?, SystemTime::now())
                {
                    return Ok(Claimed::Paused { reason, until });
                }
                let stats = buffer.stats()?;
                if amount == Amount::FullBatches && stats.pending < batch_size {
                    return Ok(Claimed::Nothing(stats.pending));
                }
                Ok(match buffer.claim(limit)? {
                    Some(claim) => Claimed::Batch(claim),
                    None => Claimed::Nothing(stats.pending),
                })
            });
            let claimed = match tokio::time::timeout_at(
                tokio::time::Instant::from_std(deadline),
                &mut task,
            )
            .await
            {
                Ok(Ok(claimed)) => claimed,
                Ok(Err(_)) => {
                    return Err(Stopped::Storage(
                        "the telemetry buffer failed unexpectedly".to_owned(),
                    ));
                }
                Err(_) => {
                    // The claim may still succeed once the buffer answers: the next round
                    // settles it first, so its events are not held for a whole lease.
                    *self.orphan.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(task);
                    return Err(Stopped::Storage(format!(
                        "the telemetry buffer ({}) did not answer in time; another process may be holding it",
                        self.buffer.kind()
                    )));
                }
            }
            .map_err(|error: telemetry_buffer::BufferError| Stopped::Storage(error.to_string()))?;
            check_pause = false;
            let claim = match claimed {
                Claimed::Withdrawn => return Err(Stopped::Withdrawn),
                Claimed::Paused { reason, until } => return Err(Stopped::Paused { reason, until }),
                Claimed::Nothing(pending) => {
                    report.pending = pending as u64;
                    return Ok(report);
                }
                Claimed::Batch(claim) => claim,
            };
            let mut guard = ClaimGuard {
                buffer: Arc::clone(&self.buffer),
                claim: Some(claim.id),
            };
            let claimed = claim.events.len();
            let mut read_back = ReadBack::default();
            let mut events = Vec::with_capacity(claimed);
            for event in claim.events {
                match self.read_back.judge(&event) {
                    Verdict::Send => events.push(event),
                    Verdict::OtherSession => read_back.other_session += 1,
                    Verdict::Invalid => read_back.invalid += 1,
                    Verdict::Scrubbed => read_back.scrubbed += 1,
                }
            }
            if events.len() < claimed {
                tracing::warn!(
                    dropped = claimed - events.len(),
                    "events read back from the buffer failed the second look and were dropped"
                );
            }
            if events.is_empty() {
                let deadline = deadline.max(Instant::now() + SETTLE_GRACE);
                self.settle(
                    &mut guard,
                    deadline,
                    Settle::Acknowledge,
                    Attempt::NothingToSend(read_back),
                )
                .await?;
                continue;
            }
            let count = events.len() as u64;
            self.note_first_attempt().await;
            let sent = tokio::time::timeout_at(
                tokio::time::Instant::from_std(deadline),
                self.transport.send(&events),
            )
            .await;
            let (attempt, settle) = match sent {
                Ok(Ok(())) => (Attempt::Delivered(count, read_back), Settle::Acknowledge),
                Ok(Err(SendError::TooLarge)) if count > 1 => {
                    // A size that had to be split down stays split for the rest of this round:
                    // the destination's limit does not change between batches.
                    limit = (count as usize).div_ceil(2);
                    (Attempt::Split, Settle::Release)
                }
                Ok(Err(SendError::TooLarge)) => {
                    tracing::warn!("an event too large for the destination was dropped");
                    (Attempt::Rejected(count, read_back), Settle::Acknowledge)
                }
                Ok(Err(SendError::Rejected { message })) => {
                    tracing::warn!(%message, events = count, "the destination rejected a batch; it was dropped");
                    (Attempt::Rejected(count, read_back), Settle::Acknowledge)
                }
                Ok(Err(SendError::Retryable {
                    message,
                    retry_after,
                })) => {
                    tracing::debug!(%message, "delivery failed; events kept for a retry");
                    self.settle(
                        &mut guard,
                        deadline,
                        Settle::Release,
                        Attempt::Failed { retry_after },
                    )
                    .await?;
                    return Err(Stopped::Failed {
                        message,
                        retry_after,
                    });
                }
                Err(_elapsed) => {
                    // The request is abandoned here; its events stay buffered.
                    self.settle(
                        &mut guard,
                        Instant::now() + SETTLE_GRACE,
                        Settle::Release,
                        Attempt::Failed { retry_after: None },
                    )
                    .await?;
                    return Err(Stopped::Deadline);
                }
            };
            self.settle(
                &mut guard,
                deadline.max(Instant::now() + SETTLE_GRACE),
                settle,
                attempt,
            )
            .await?;
            if let Attempt::Delivered(count, _) = attempt {
                report.delivered += count;
            }
        }
    }

    /// Waits, within `deadline`, for a claim an earlier round gave up on, and gives its events
    /// back, so that they are not held for a lease that nobody will settle.
    async fn settle_orphan(&self, deadline: Instant) -> Result<(), Stopped> {
        let orphan = self
            .orphan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut task) = orphan else {
            return Ok(());
        };
        match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), &mut task).await {
            Ok(Ok(Ok(Claimed::Batch(claim)))) => {
                let id = claim.id;
                on_buffer(&self.buffer, deadline, move |buffer| buffer.release(id))
                    .await?
                    .map_err(|error| Stopped::Storage(error.to_string()))
            }
            Ok(_) => Ok(()),
            Err(_) => {
                *self
                    .orphan
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
                Err(Stopped::Storage(format!(
                    "the telemetry buffer ({}) did not answer in time; another process may be holding it",
                    self.buffer.kind()
                )))
            }
        }
    }

    /// Writes, before the first request, the one-time note that events may have left. It
    /// writes the state file, whose lock another process may hold for a while, so the request
    /// waits for it at most a moment; the note then completes beside the request.
    pub(crate) async fn note_first_attempt(&self) {
        let once = self
            .first_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(once) = once {
            let note = tokio::task::spawn_blocking(once);
            let _ = tokio::time::timeout(SETTLE_GRACE, note).await;
        }
    }

    /// Acknowledges or releases a claim and writes the attempt to the ledger, in one trip to
    /// the buffer.
    async fn settle(
        &self,
        guard: &mut ClaimGuard,
        deadline: Instant,
        settle: Settle,
        attempt: Attempt,
    ) -> Result<(), Stopped> {
        let Some(claim) = guard.settle() else {
            return Ok(());
        };
        on_buffer(&self.buffer, deadline, move |buffer| {
            let now = SystemTime::now();
            let mut change = |ledger: &mut DeliveryLedger| attempt.apply(ledger, now);
            match settle {
                // One step: a delivery is counted exactly when its events are gone. When the
                // acknowledgement fails (a full disk refused the delete), the events are still
                // pending, not delivered: they go out again later and count then. Delivery is
                // at least once.
                Settle::Acknowledge => buffer.acknowledge_and_record(claim, &mut change),
                Settle::Release => {
                    buffer.release(claim)?;
                    if matches!(attempt, Attempt::Split) {
                        // Not a failure of the destination: nothing to count.
                        Ok(DeliveryLedger::default())
                    } else {
                        buffer.update_ledger(&mut change)
                    }
                }
            }
        })
        .await?
        .map(|_| ())
        .map_err(|error| Stopped::Storage(error.to_string()))
    }
}

/// Time allowed to settle a claim after a deadline passed, so that an abandoned request's
/// events are released at once rather than held for the claim's lease.
const SETTLE_GRACE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy)]
enum Settle {
    Acknowledge,
    Release,
}

/// When this process's worker may start a scheduled round again: exponential backoff with
/// full jitter after a failure of its own. What binds every process (a `Retry-After`, an open
/// circuit) is in the ledger, and each round checks it.
pub(crate) struct Backoffs {
    backoff: Backoff,
    not_before: Option<Instant>,
}

impl Backoffs {
    pub(crate) fn new() -> Backoffs {
        Backoffs {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            not_before: None,
        }
    }

    /// Whether a scheduled round may start now.
    pub(crate) fn due(&self) -> bool {
        self.not_before.is_none_or(|at| Instant::now() >= at)
    }

    pub(crate) fn record(&mut self, result: &Result<FlushReport, Stopped>) {
        match result {
            Ok(_) => {
                self.backoff.reset();
                self.not_before = None;
            }
            // The ledger holds the wait; checking it again costs one read per tick.
            Err(Stopped::Paused { .. } | Stopped::Withdrawn) => {}
            Err(Stopped::Failed {
                retry_after: Some(wait),
                ..
            }) => self.not_before = Some(Instant::now() + *wait),
            Err(_) => self.not_before = Some(Instant::now() + self.backoff.next_delay()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_ledger_pauses_only_for_plausible_waits() {
        let now = at(1_000_000);
        let cases = [
            (None, None, None),
            (
                Some(at(1_000_030)),
                None,
                Some(PauseReason::ServerAskedToWait),
            ),
            (Some(at(999_000)), None, None),
            // Years ahead: written while the clock was wrong.
            (Some(at(90_000_000)), None, None),
            (
                None,
                Some(at(1_000_060)),
                Some(PauseReason::RepeatedFailures),
            ),
            (
                Some(at(1_000_030)),
                Some(at(1_000_060)),
                Some(PauseReason::RepeatedFailures),
            ),
            (
                Some(at(1_000_090)),
                Some(at(1_000_060)),
                Some(PauseReason::ServerAskedToWait),
            ),
        ];
        for (not_before, circuit_open_until, expected) in cases {
            let ledger = DeliveryLedger {
                not_before,
                circuit_open_until,
                ..DeliveryLedger::default()
            };
            assert_eq!(
                paused_until(&ledger, now).map(|(reason, _)| reason),
                expected,
                "{ledger:?}"
            );
        }
    }

    #[test]
    fn failures_in_a_row_open_the_circuit_and_a_success_closes_it() {
        let now = at(1_000);
        let mut ledger = DeliveryLedger::default();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            Attempt::Failed { retry_after: None }.apply(&mut ledger, now);
        }
        assert_eq!(ledger.circuit_open_until, None);
        Attempt::Failed {
            retry_after: Some(Duration::from_secs(3)),
        }
        .apply(&mut ledger, now);
        assert_eq!(ledger.circuit_open_until, Some(now + COOL_DOWN));
        assert_eq!(ledger.not_before, Some(now + Duration::from_secs(3)));
        assert_eq!(ledger.failed_deliveries, u64::from(FAILURE_THRESHOLD));
        Attempt::Delivered(7, ReadBack::default()).apply(&mut ledger, now);
        assert_eq!(ledger.circuit_open_until, None);
        assert_eq!(ledger.consecutive_failures, 0);
        assert_eq!((ledger.delivered, ledger.last_sent), (7, Some(now)));
    }

    #[test]
    fn the_pause_message_names_the_time_and_the_backlog() {
        let until = at(3 * 3_600 + 4 * 60 + 5);
        assert_eq!(
            paused_message(PauseReason::ServerAskedToWait, until, Some(12)),
            "the server asked to wait until 03:04:05 UTC; 12 events pending"
        );
    }
}
