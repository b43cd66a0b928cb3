//! The handle SDKs record through.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use telemetry_buffer::Buffer;
use telemetry_model::{
    BlockType, Catalog, CommandName, ConfigErrorKind, ExceptionType, Feature, Integration, Metric,
    Section,
};
use tokio::sync::mpsc;

use crate::config::{Resolution, TelemetryConfig};
use crate::consent_watch::ConsentWatch;
use crate::queue::{RecordSenders, Sent, record_queue};
use crate::record::{Record, RunRecord, allowlist_slot};
use crate::status::Status;
use crate::usage::UsageAccumulator;
use crate::worker::{
    BufferSource, ConsentCheck, Control, EventBuilder, FlushError, FlushReport, MessageSink,
    ReadBackCheck, Reply, WorkerSettings, WorkerStats,
};

/// How much longer than its deadline a caller waits for the worker's answer: the worker keeps
/// its deadlines itself, and this only covers the reply's trip between threads.
const REPLY_MARGIN: Duration = Duration::from_millis(100);

/// A cheap, cloneable handle for recording usage. Every method returns at once and never fails:
/// when telemetry is off, recording is one atomic load.
///
/// The worker thread stops when [`shutdown`](Telemetry::shutdown) is called or the last clone
/// is dropped, after storing what was recorded and delivering what it can within the
/// configured shutdown timeout.
///
/// # What the `sdk_usage` summary reports
///
/// One summary per process (per [`init`](crate::init)ed instance), sent when it stops: the
/// features of every [`record_run`](Telemetry::record_run) and every
/// [`feature_used`](Telemetry::feature_used); the block types, commands and configuration
/// errors noted; each metric's total from [`count`](Telemetry::count), bucketed; each
/// exception type from runs and from [`exception`](Telemetry::exception), with how often,
/// bucketed; the integrations installed and those that failed to import; the highest
/// concurrency observed; and how long the process ran, bucketed. A management command
/// (`status`, `flush`, ...) sends none.
///
/// # In async code
///
/// Recording never blocks. [`flush`](Telemetry::flush) and [`shutdown`](Telemetry::shutdown)
/// block the calling thread for at most their timeout; from a task, use
/// [`flush_async`](Telemetry::flush_async) and [`shutdown_async`](Telemetry::shutdown_async),
/// which wait without holding the runtime's thread. Dropping the last clone shuts down too,
/// blocking for at most the configured shutdown timeout (2 s by default): in a task, call
/// `shutdown_async` first, and the drop then returns at once.
///
/// # Panics
///
/// None of its methods panic, and a panic elsewhere leaves it usable: it is `UnwindSafe` and
/// `RefUnwindSafe`, so a host can hold it across `catch_unwind` to report a crashed run.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

// Every piece of state a handle shares is an atomic, a mutex, a channel or set once; none is
// left half-updated by a panic elsewhere (recording itself never panics), so observing it after
// an unwind is sound. The buffer trait object is the one field the compiler cannot see through.
impl std::panic::UnwindSafe for Telemetry {}
impl std::panic::RefUnwindSafe for Telemetry {}

pub(crate) struct Inner {
    /// Checked by every recording call; kept inline, as one load is all that recording costs
    /// when telemetry is off.
    enabled: AtomicBool,
    /// Set by the worker when consent is withdrawn in another process; looked at on the paths
    /// that do more than a load anyway (a queued record, `is_enabled`, `status`).
    withdrawn: Arc<AtomicBool>,
    catalog: Arc<Catalog>,
    usage: Arc<UsageAccumulator>,
    records: Option<RecordSenders>,
    /// Signals the worker; see `send`.
    wake: Arc<tokio::sync::Notify>,
    /// Taken by the first shutdown.
    control: Mutex<Option<mpsc::UnboundedSender<Control>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    dropped_queue_full: Arc<AtomicU64>,
    /// How many of `dropped_queue_full` the worker has added to the ledger.
    queue_full_recorded: Arc<AtomicU64>,
    stats: Arc<WorkerStats>,
    /// The buffer, once the worker has opened it.
    buffer: Arc<OnceLock<Arc<dyn Buffer>>>,
    opted_out: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    config: TelemetryConfig,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("sdk", self.inner.config.sdk_name())
            .field("enabled", &self.is_enabled())
            .finish_non_exhaustive()
    }
}

/// Whether a process sends an `sdk_usage` summary when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Summary {
    /// A use of the SDK: it reports what it used.
    Send,
    /// A management command such as `flush`: not a use of the SDK.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    Skip,
}

impl TelemetryConfig {
    /// Decides whether telemetry is on and, if it is, starts the worker thread.
    ///
    /// Never fails and never waits on another process: an invalid setting, a damaged state
    /// file or a worker that cannot start all mean telemetry stays off, with one warning
    /// through the configured sink; the buffer is opened on the worker's thread.
    pub fn start(&self) -> Telemetry {
        self.start_reporting(Summary::Send)
    }

    /// Starts telemetry for a management command, which sends no `sdk_usage` summary.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn start_for_management(&self) -> Telemetry {
        self.start_reporting(Summary::Skip)
    }

    fn start_reporting(&self, summary: Summary) -> Telemetry {
        let resolution = self.resolve();
        for problem in resolution.problems() {
            self.warn(&problem);
        }
        if !resolution.decision.enabled {
            self.forget_session_when_kept_off(&resolution);
            return Telemetry::off(self.clone());
        }
        match self.start_worker(&resolution, summary) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                self.warn(&format!(
                    "cannot start the telemetry worker ({error}); telemetry is off"
                ));
                Telemetry::off(self.clone())
            }
        }
    }

    fn start_worker(
        &self,
        resolution: &Resolution,
        summary: Summary,
    ) -> std::io::Result<Telemetry> {
        let transport = self
            .transport_for(resolution)
            .map_err(std::io::Error::other)?;
        let buffer = self.buffer_source(resolution);
        let usage = Arc::new(UsageAccumulator::new(
            &self.catalog,
            Arc::clone(&self.warnings),
        ));
        for &integration in &self.installed_integrations {
            if usage.accepts(integration) {
                usage.integrations_installed.insert(allowlist_slot(
                    integration.index(),
                    self.catalog.len(Section::Integrations),
                ));
            }
        }
        let stats = Arc::new(WorkerStats::default());
        let debug: Option<MessageSink> = resolution
            .debug()
            .then(|| Arc::clone(&self.warnings) as MessageSink);
        let template = self.event_template(resolution.ci, self.session_id(resolution));
        // Built once: the read-back check judges with the same scrubber as the builder.
        let scrubber = self.scrubber(resolution);
        let read_back = ReadBackCheck::new(template.clone(), &self.catalog, scrubber.clone());
        let events = EventBuilder::new(
            Arc::clone(&self.catalog),
            Arc::clone(&usage),
            template,
            scrubber,
            Arc::clone(&stats),
            debug,
        );
        let opted_out = Arc::new(AtomicBool::new(false));
        let withdrawn = Arc::new(AtomicBool::new(false));
        let session = events.template.session_id;
        // The state as the file holds it now: as resolved, when the file held this process's
        // id then (a used home: nothing was written since); read again when the id was just
        // made and written, or could not be (then the process runs under an id of its own).
        let held_state = match &resolution.state {
            Ok(state) if state.session_id == Some(session) => Some(state.clone()),
            _ => self.state_store().and_then(|store| store.load().ok()),
        };
        let consent = self.state_store().map(|store| {
            let held = held_state.as_ref().and_then(|state| state.session_id);
            let watch = ConsentWatch::new(store, held, self.consent_version);
            Arc::new(move || watch.withdrawn()) as ConsentCheck
        });
        // Marking the session used is written once per session id (the mark is cleared only
        // with the id): a state that has it for this id needs no write, nor the lock and the
        // hand-off to another thread before the first delivery.
        let noted = held_state
            .as_ref()
            .is_some_and(|state| state.session_id == Some(session) && state.session_used);
        let first_attempt = self.state_store().filter(|_| !noted).map(|store| {
            Box::new(move || {
                // Opting out asks the destination to delete events only if some may have left.
                let marked = store.update(|state| {
                    if state.session_id == Some(session) {
                        state.session_used = true;
                    }
                });
                if let Err(error) = marked {
                    tracing::debug!(%error, "could not record that events may have left");
                }
            }) as Box<dyn FnOnce() + Send>
        });
        let dropped_queue_full = Arc::new(AtomicU64::new(0));
        let queue_full_recorded = Arc::new(AtomicU64::new(0));
        let opened_buffer = Arc::new(OnceLock::new());
        let (record_sender, record_receiver) = record_queue(self.queue_capacity);
        let wake = Arc::new(tokio::sync::Notify::new());
        let (control_sender, control_receiver) = mpsc::unbounded_channel();
        let handle = crate::worker::spawn(WorkerSettings {
            thread_name: format!("{}-telemetry", self.sdk_name),
            records: record_receiver,
            wake: Arc::clone(&wake),
            control: control_receiver,
            buffer,
            opened_buffer: Arc::clone(&opened_buffer),
            transport,
            events,
            read_back,
            batch_size: resolution.batch_size(),
            batch_interval: resolution.batch_interval(),
            summary: summary == Summary::Send,
            opted_out: Arc::clone(&opted_out),
            withdrawn: Arc::clone(&withdrawn),
            consent,
            first_attempt,
            dropped_queue_full: Arc::clone(&dropped_queue_full),
            queue_full_recorded: Arc::clone(&queue_full_recorded),
        })?;
        Ok(Telemetry {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(true),
                withdrawn,
                catalog: Arc::clone(&self.catalog),
                usage,
                records: Some(record_sender),
                wake,
                control: Mutex::new(Some(control_sender)),
                worker: Mutex::new(Some(handle)),
                dropped_queue_full,
                queue_full_recorded,
                stats,
                buffer: opened_buffer,
                opted_out,
                shutdown_timeout: self.shutdown_timeout,
                config: self.clone(),
            }),
        })
    }

    /// The SDK's own buffer, or the one the settings call for, opened by the worker.
    fn buffer_source(&self, resolution: &Resolution) -> BufferSource {
        if let Some(buffer) = &self.buffer {
            return BufferSource::Ready(Arc::clone(buffer));
        }
        let kind = self.buffer_kind(resolution);
        let config = self.clone();
        BufferSource::Open(Box::new(move || config.open_buffer_of_kind(kind)))
    }
}

impl Telemetry {
    /// A handle that records nothing and starts nothing: for tests, and for callers that
    /// want no telemetry at all. Every method works and does nothing; `status` says off.
    pub fn disabled() -> Telemetry {
        Telemetry::off(TelemetryConfig::disabled())
    }

    /// A handle that records nothing, for the given configuration.
    pub(crate) fn off(config: TelemetryConfig) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(false),
                withdrawn: Arc::new(AtomicBool::new(false)),
                catalog: Arc::clone(&config.catalog),
                usage: Arc::new(UsageAccumulator::empty()),
                records: None,
                wake: Arc::new(tokio::sync::Notify::new()),
                control: Mutex::new(None),
                worker: Mutex::new(None),
                dropped_queue_full: Arc::new(AtomicU64::new(0)),
                queue_full_recorded: Arc::new(AtomicU64::new(0)),
                stats: Arc::new(WorkerStats::default()),
                buffer: Arc::new(OnceLock::new()),
                opted_out: Arc::new(AtomicBool::new(false)),
                shutdown_timeout: Duration::ZERO,
                config,
            }),
        }
    }

    /// Whether two handles are clones of one instance (one worker).
    pub fn same_instance(&self, other: &Telemetry) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Shuts down within the configured shutdown timeout, as dropping the last clone does.
    pub(crate) fn shutdown_in_time(&self) {
        self.inner.shutdown(self.inner.shutdown_timeout);
    }

    /// Whether events are being collected.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.on() && !self.inner.withdrawn.load(Ordering::Relaxed)
    }

    /// The recording calls' check: one load.
    #[inline]
    fn on(&self) -> bool {
        self.inner.enabled.load(Ordering::Relaxed)
    }

    /// The catalog that handles must come from.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The configuration this handle was started from.
    pub fn config(&self) -> &TelemetryConfig {
        &self.inner.config
    }

    /// Records one finished run; it becomes a `run` event. Its features and its exception
    /// type also count in the process's `sdk_usage` summary (see [`Telemetry`]).
    #[inline]
    pub fn record_run(&self, run: RunRecord) {
        if !self.on() || !self.inner.usage.accepts(run) {
            return;
        }
        self.send(Record::Run(run));
    }

    /// Notes that the program used a feature (reported in the `sdk_usage` summary).
    #[inline]
    pub fn feature_used(&self, feature: Feature) {
        if self.on() && self.inner.usage.accepts(feature) {
            self.inner.usage.features.insert(feature.index());
        }
    }

    /// Notes that the program used a block type.
    #[inline]
    pub fn block_type_used(&self, block_type: BlockType) {
        if self.on() && self.inner.usage.accepts(block_type) {
            self.inner.usage.block_types.insert(block_type.index());
        }
    }

    /// Notes that a CLI command was run.
    #[inline]
    pub fn command_used(&self, command: CommandName) {
        if self.on() && self.inner.usage.accepts(command) {
            self.inner.usage.commands.insert(command.index());
        }
    }

    /// Adds `amount` to a metric (reported as a bucket of the total).
    #[inline]
    pub fn count(&self, metric: Metric, amount: u64) {
        if self.on() && self.inner.usage.accepts(metric) {
            self.inner.usage.metrics.add(metric.index(), amount);
        }
    }

    /// Notes how many units of work are running at once (the peak is reported, bucketed).
    #[inline]
    pub fn observe_concurrency(&self, running: u64) {
        if self.on() {
            self.inner
                .usage
                .concurrency_peak
                .fetch_max(running, Ordering::Relaxed);
        }
    }

    /// Notes a configuration error of a declared kind.
    #[inline]
    pub fn config_error(&self, kind: ConfigErrorKind) {
        if self.on() && self.inner.usage.accepts(kind) {
            self.inner.usage.config_errors.insert(kind.index());
        }
    }

    /// Notes an error of an allowlisted type outside a run (`other` when not declared).
    #[inline]
    pub fn exception(&self, exception: ExceptionType) {
        if self.on() && self.inner.usage.accepts(exception) {
            let declared = self.inner.catalog.len(Section::ExceptionTypes);
            self.inner
                .usage
                .exception_types
                .add(allowlist_slot(exception.index(), declared), 1);
        }
    }

    /// Notes that an integration is installed.
    #[inline]
    pub fn integration_installed(&self, integration: Integration) {
        if self.on() && self.inner.usage.accepts(integration) {
            let declared = self.inner.catalog.len(Section::Integrations);
            self.inner
                .usage
                .integrations_installed
                .insert(allowlist_slot(integration.index(), declared));
        }
    }

    /// Notes that an installed integration failed to import or load.
    #[inline]
    pub fn integration_import_failed(&self, integration: Integration) {
        if self.on() && self.inner.usage.accepts(integration) {
            let declared = self.inner.catalog.len(Section::Integrations);
            self.inner
                .usage
                .integration_import_failures
                .insert(allowlist_slot(integration.index(), declared));
        }
    }

    /// Stops collecting for good: records the user's opt-out (audit source `api`), forgets the
    /// session id and deletes events not yet sent. Fails when a policy file decides.
    pub fn disable(&self) -> Result<Status, crate::ManageError> {
        let status = self
            .inner
            .config
            .disable_from(telemetry_policy::AuditSource::Api)?;
        self.inner.enabled.store(false, Ordering::Relaxed);
        self.inner.opted_out.store(true, Ordering::Relaxed);
        if let Some(buffer) = self.inner.buffer.get() {
            let _ = buffer.purge();
        }
        Ok(status)
    }

    /// How many recording calls this handle refused because a catalog handle in them came from
    /// another catalog (the first one is also reported through the warning sink).
    pub fn refused_records(&self) -> u64 {
        self.inner.usage.refused()
    }

    /// How many records this process dropped because the queue to the worker was full.
    pub fn dropped_records(&self) -> u64 {
        self.inner.dropped_queue_full.load(Ordering::Relaxed)
    }

    fn send(&self, record: Record) {
        let Some(sender) = &self.inner.records else {
            return;
        };
        if self.inner.withdrawn.load(Ordering::Relaxed) {
            // Consent was withdrawn elsewhere: stop for good, as `disable` does here.
            self.inner.enabled.store(false, Ordering::Relaxed);
            return;
        }
        match sender.send(record) {
            // The worker collects on a short tick; only a filling queue is worth waking it for.
            Sent::Queued { wake: true } => self.inner.wake.notify_one(),
            Sent::Queued { wake: false } => {}
            Sent::Dropped => {
                self.inner
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Stores everything recorded so far and delivers it, returning within `timeout` (plus
    /// a few milliseconds) whatever the destination or the buffer does.
    ///
    /// Blocks the calling thread (it is safe to call from async code, but it occupies the
    /// thread until it returns). When telemetry is off it returns at once. When the
    /// destination asked every process to wait, or repeated failures paused deliveries, it
    /// sends nothing and says until when ([`FlushError::Paused`]).
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        let control = match self.control() {
            Ok(control) => control,
            Err(answer) => return answer,
        };
        let deadline = Instant::now() + timeout;
        let (reply, answer) = std_mpsc::channel();
        control
            .send(Control::Flush {
                deadline,
                reply: Reply::Blocking(reply),
            })
            .map_err(|_| FlushError::WorkerGone)?;
        match answer.recv_timeout(timeout + REPLY_MARGIN) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::WorkerGone),
        }
    }

    /// The worker's control channel, or what a flush answers without one: nothing to do when
    /// telemetry is off, `WorkerGone` when the worker has stopped.
    fn control(&self) -> Result<mpsc::UnboundedSender<Control>, Result<FlushReport, FlushError>> {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        control.ok_or(if self.inner.records.is_some() {
            Err(FlushError::WorkerGone)
        } else {
            Ok(FlushReport::default())
        })
    }

    /// [`flush`](Telemetry::flush) for async code: the same work and deadline, awaited without
    /// blocking the runtime's thread. Works on any async runtime: the worker keeps the
    /// deadline on its own thread and answers by then (an abandoned request stays buffered).
    pub async fn flush_async(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        let control = match self.control() {
            Ok(control) => control,
            Err(answer) => return answer,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        control
            .send(Control::Flush {
                deadline: Instant::now() + timeout,
                reply: Reply::Awaited(reply),
            })
            .map_err(|_| FlushError::WorkerGone)?;
        answer.await.unwrap_or(Err(FlushError::WorkerGone))
    }

    /// Stops recording in this handle and every clone, stores what was recorded, and delivers
    /// what it can, returning within `timeout` (plus a few milliseconds). Later calls, and
    /// dropping the last clone afterwards, do nothing more.
    ///
    /// What is not delivered by then stays in a durable buffer for the next process.
    pub fn shutdown(&self, timeout: Duration) {
        self.inner.shutdown(timeout);
    }

    /// [`shutdown`](Telemetry::shutdown) for async code: awaited without blocking the
    /// runtime's thread; dropping the handles afterwards returns at once.
    pub async fn shutdown_async(&self, timeout: Duration) {
        self.inner.enabled.store(false, Ordering::Relaxed);
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(control) = control else {
            return;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = control
            .send(Control::Shutdown {
                deadline: Instant::now() + timeout,
                reply: Reply::Awaited(reply),
            })
            .is_ok();
        drop(control);
        if asked {
            let _ = answer.await;
        }
        // The worker has answered and is returning; it is not joined here, which would block.
        // Its thread ends on its own within moments.
        let _ = self
            .inner
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The current status: the decision and its reason, where events go, what is pending,
    /// delivered and dropped (by every process sharing the buffer).
    pub fn status(&self) -> Status {
        // The running buffer: no second connection to the spool.
        let mut status = match self.inner.buffer.get() {
            Some(buffer) => self.inner.config.status_with(Ok(Some(&**buffer))),
            None => self.inner.config.status(),
        };
        // Drops the worker has not written to the ledger yet. Read after the ledger: a write
        // in between can only make this briefly low, never count a drop twice.
        let unrecorded = self
            .dropped_records()
            .saturating_sub(self.inner.queue_full_recorded.load(Ordering::Acquire));
        if let Some(queue_full) = status.dropped_by_reason.get_mut("queue_full") {
            *queue_full += unrecorded;
        }
        status.dropped_events += unrecorded;
        status.refused_records += self.inner.usage.unrecorded_refusals();
        status.scrubbed_events = self.inner.stats.scrubbed();
        status
    }
}

impl Inner {
    fn shutdown(&self, timeout: Duration) {
        self.enabled.store(false, Ordering::Relaxed);
        let control = self
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(control) = control else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let (reply, answer) = std_mpsc::channel();
        let asked = control
            .send(Control::Shutdown {
                deadline,
                reply: Reply::Blocking(reply),
            })
            .is_ok();
        drop(control);
        let finished = asked && answer.recv_timeout(timeout + REPLY_MARGIN).is_ok();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (true, Some(worker)) = (finished, worker) {
            // The worker has replied and is returning; joining takes microseconds.
            let _ = worker.join();
        }
        // Otherwise the worker thread is left to finish at its own deadline: the host's
        // shutdown never waits longer than the timeout.
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown(self.shutdown_timeout);
    }
}
