//! The handle SDKs record through.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use telemetry_buffer::Buffer;
use telemetry_model::{
    BlockType, Catalog, Command, ConfigError, ExceptionType, Feature, FeatureSet, Integration,
    Metric, RunOutcome,
};
use telemetry_policy::Endpoint;
use telemetry_transport::{FileTransport, Transport};
use tokio::sync::mpsc;

use crate::config::{Resolution, TelemetryConfig};
use crate::queue::{RecordSenders, Sent, record_queue};
use crate::status::Status;
use crate::usage::UsageAccumulator;
use crate::worker::{Control, EventTemplate, RunShapes, Worker, WorkerStats};

/// One finished unit of work (a flow run, a job, a request), as the SDK reports it.
///
/// Copy and allocation-free, so recording it costs the caller almost nothing; the worker
/// turns it into a `run` event with a bucketed duration and catalog names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The features the run used.
    pub features: FeatureSet,
    /// How long it took (sent only as a bucket).
    pub duration: Duration,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The type of the error that ended it, from the catalog's allowlist.
    pub exception: Option<ExceptionType>,
}

/// What the recording threads send to the worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Record {
    Run(RunRecord),
}

/// The result of a successful [`Telemetry::flush`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Events delivered by this flush.
    pub delivered: u64,
    /// Events still waiting (for example because the destination failed).
    pub pending: u64,
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
    /// The worker thread is gone (it could not start, or it stopped).
    #[error("the telemetry worker is not running")]
    WorkerGone,
}

/// A cheap, cloneable handle for recording usage. Every method returns at once and never fails:
/// when telemetry is off, recording is one atomic load.
///
/// The worker thread stops when the last clone is dropped, after delivering what it can within
/// the configured shutdown timeout.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    enabled: AtomicBool,
    catalog: Arc<Catalog>,
    usage: Arc<UsageAccumulator>,
    records: Option<RecordSenders>,
    /// Signals the worker; see `send`.
    wake: Arc<tokio::sync::Notify>,
    control: Option<mpsc::UnboundedSender<Control>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    dropped_queue_full: AtomicU64,
    stats: Arc<WorkerStats>,
    buffer: Option<Arc<dyn Buffer>>,
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

impl TelemetryConfig {
    /// Decides whether telemetry is on and, if it is, starts the worker thread.
    ///
    /// Never fails: an invalid setting, a damaged state file or a worker that cannot start all
    /// mean telemetry stays off, with one warning through the configured sink.
    pub fn start(&self) -> Telemetry {
        self.start_with(true)
    }

    /// Starts telemetry; `summary` says whether this process sends an `sdk_usage` summary when
    /// it stops (management commands such as `flush` do not: they are not uses of the SDK).
    pub(crate) fn start_with(&self, summary: bool) -> Telemetry {
        let resolution = self.resolve();
        for problem in resolution.problems() {
            self.warn(&problem);
        }
        if !resolution.decision.enabled {
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

    /// The transport the configuration and the endpoint call for.
    pub(crate) fn transport_for(
        &self,
        resolution: &Resolution,
    ) -> Result<Arc<dyn Transport>, String> {
        if let Some(transport) = &self.transport {
            return Ok(Arc::clone(transport));
        }
        match &resolution.endpoint {
            Some(Endpoint::File(dir)) => {
                Ok(Arc::new(FileTransport::new(dir, self.sdk_name.clone())))
            }
            #[cfg(feature = "https")]
            Some(Endpoint::Https(url)) => {
                use telemetry_transport::{ExtraCa, HttpsConfig, HttpsTransport};
                let mut https = HttpsConfig::new(url.clone(), self.user_agent());
                if let Some(ca_file) = resolution.ca_file() {
                    https = https.with_extra_ca(ExtraCa::File(ca_file.to_path_buf()));
                }
                HttpsTransport::new(https)
                    .map(|transport| Arc::new(transport) as Arc<dyn Transport>)
                    .map_err(|error| error.to_string())
            }
            // `resolve` turns telemetry off when there is nowhere to deliver.
            _ => Err("there is no transport for the endpoint".to_owned()),
        }
    }

    fn start_worker(&self, resolution: &Resolution, summary: bool) -> std::io::Result<Telemetry> {
        let transport = self
            .transport_for(resolution)
            .map_err(std::io::Error::other)?;
        let buffer = self.open_buffer(resolution);
        let template = EventTemplate::new(self, resolution.ci, self.session_id(resolution));
        let usage = Arc::new(UsageAccumulator::new(&self.catalog));
        for integration in &self.installed_integrations {
            usage.integrations_installed.insert(allowlist_slot(
                integration.index(),
                self.catalog.len(telemetry_model::Section::Integrations),
            ));
        }
        let stats = Arc::new(WorkerStats::default());
        let opted_out = Arc::new(AtomicBool::new(false));
        let (record_sender, record_receiver) = record_queue(self.queue_capacity);
        let wake = Arc::new(tokio::sync::Notify::new());
        let (control_sender, control_receiver) = mpsc::unbounded_channel();
        let worker = Worker {
            records: record_receiver,
            wake: Arc::clone(&wake),
            control: control_receiver,
            buffer: Arc::clone(&buffer),
            transport,
            catalog: Arc::clone(&self.catalog),
            usage: Arc::clone(&usage),
            stats: Arc::clone(&stats),
            template,
            batch_size: resolution.batch_size(),
            batch_interval: resolution.batch_interval(),
            debug: resolution.debug(),
            sdk_name: self.sdk_name.clone(),
            warnings: Arc::clone(&self.warnings),
            started: Instant::now(),
            run_features: FeatureSet::new(),
            run_exceptions: Vec::new(),
            summary,
            opted_out: Arc::clone(&opted_out),
            scrubber: self.scrubber(resolution),
            run_shapes: RunShapes::default(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("{}-telemetry", self.sdk_name))
            .spawn(move || worker.run_on_own_runtime())?;
        Ok(Telemetry {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(true),
                catalog: Arc::clone(&self.catalog),
                usage,
                records: Some(record_sender),
                wake,
                control: Some(control_sender),
                worker: Mutex::new(Some(handle)),
                dropped_queue_full: AtomicU64::new(0),
                stats,
                buffer: Some(buffer),
                opted_out,
                shutdown_timeout: self.shutdown_timeout,
                config: self.clone(),
            }),
        })
    }
}

/// The accumulator slot of an allowlisted handle: its index, or the extra last slot for `other`.
pub(crate) fn allowlist_slot(index: Option<usize>, declared: usize) -> usize {
    index.filter(|&index| index < declared).unwrap_or(declared)
}

impl Telemetry {
    /// A handle that records nothing, for the given configuration.
    fn off(config: TelemetryConfig) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                enabled: AtomicBool::new(false),
                catalog: Arc::clone(&config.catalog),
                usage: Arc::new(UsageAccumulator::empty()),
                records: None,
                wake: Arc::new(tokio::sync::Notify::new()),
                control: None,
                worker: Mutex::new(None),
                dropped_queue_full: AtomicU64::new(0),
                stats: Arc::new(WorkerStats::default()),
                buffer: None,
                opted_out: Arc::new(AtomicBool::new(false)),
                shutdown_timeout: Duration::ZERO,
                config,
            }),
        }
    }

    /// Whether events are being collected.
    #[inline]
    pub fn is_enabled(&self) -> bool {
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

    /// Records one finished run; it becomes a `run` event.
    #[inline]
    pub fn record_run(&self, run: RunRecord) {
        if !self.is_enabled() {
            return;
        }
        self.send(Record::Run(run));
    }

    /// Notes that the program used a feature (reported in the `sdk_usage` summary).
    #[inline]
    pub fn feature_used(&self, feature: Feature) {
        if self.is_enabled() {
            self.inner.usage.features.insert(feature.index());
        }
    }

    /// Notes that the program used a block type.
    #[inline]
    pub fn block_type_used(&self, block_type: BlockType) {
        if self.is_enabled() {
            self.inner.usage.block_types.insert(block_type.index());
        }
    }

    /// Notes that a CLI command was run.
    #[inline]
    pub fn command_used(&self, command: Command) {
        if self.is_enabled() {
            self.inner.usage.commands.insert(command.index());
        }
    }

    /// Adds `amount` to a metric (reported as a bucket of the total).
    #[inline]
    pub fn count(&self, metric: Metric, amount: u64) {
        if self.is_enabled() {
            self.inner.usage.metrics.add(metric.index(), amount);
        }
    }

    /// Notes how many units of work are running at once (the peak is reported, bucketed).
    #[inline]
    pub fn observe_concurrency(&self, running: u64) {
        if self.is_enabled() {
            self.inner
                .usage
                .concurrency_peak
                .fetch_max(running, Ordering::Relaxed);
        }
    }

    /// Notes a configuration error of a declared kind.
    #[inline]
    pub fn config_error(&self, kind: ConfigError) {
        if self.is_enabled() {
            self.inner.usage.config_errors.insert(kind.index());
        }
    }

    /// Notes an error of an allowlisted type outside a run (`other` when not declared).
    #[inline]
    pub fn exception(&self, exception: ExceptionType) {
        if self.is_enabled() {
            let declared = self
                .inner
                .catalog
                .len(telemetry_model::Section::ExceptionTypes);
            self.inner
                .usage
                .exception_types
                .add(allowlist_slot(exception.index(), declared), 1);
        }
    }

    /// Notes that an integration is installed.
    #[inline]
    pub fn integration_installed(&self, integration: Integration) {
        if self.is_enabled() {
            let declared = self
                .inner
                .catalog
                .len(telemetry_model::Section::Integrations);
            self.inner
                .usage
                .integrations_installed
                .insert(allowlist_slot(integration.index(), declared));
        }
    }

    /// Notes that an installed integration failed to import or load.
    #[inline]
    pub fn integration_import_failed(&self, integration: Integration) {
        if self.is_enabled() {
            let declared = self
                .inner
                .catalog
                .len(telemetry_model::Section::Integrations);
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
        if let Some(buffer) = &self.inner.buffer {
            let _ = buffer.purge();
        }
        Ok(status)
    }

    /// How many records were dropped because the queue to the worker was full.
    pub fn dropped_records(&self) -> u64 {
        self.inner.dropped_queue_full.load(Ordering::Relaxed)
    }

    fn send(&self, record: Record) {
        let Some(sender) = &self.inner.records else {
            return;
        };
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

    /// Delivers everything recorded so far, waiting at most `timeout`.
    ///
    /// Blocks the calling thread (it is safe to call from async code, but it occupies the
    /// thread until it returns). When telemetry is off it returns at once.
    pub fn flush(&self, timeout: Duration) -> Result<FlushReport, FlushError> {
        let Some(control) = &self.inner.control else {
            return Ok(FlushReport::default());
        };
        let deadline = Instant::now() + timeout;
        let (reply, answer) = std_mpsc::channel();
        control
            .send(Control::Flush { deadline, reply })
            .map_err(|_| FlushError::WorkerGone)?;
        match answer.recv_timeout(timeout + Duration::from_millis(50)) {
            Ok(result) => result,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::WorkerGone),
        }
    }

    /// The current status: the decision and its reason, where events go, what is pending.
    pub fn status(&self) -> Status {
        // The running buffer's counts: no second connection to the spool.
        let buffer = self.inner.buffer.as_ref();
        let stats = buffer.and_then(|buffer| buffer.stats().ok());
        let mut status = self.inner.config.status_with(stats);
        if let Some(buffer) = buffer {
            status.buffer = buffer.kind().to_owned();
        }
        status.dropped_events += self.dropped_records();
        status.last_sent = self.inner.stats.last_sent();
        status.scrubbed_events = self.inner.stats.scrubbed();
        status.failed_deliveries = self.inner.stats.failed_attempts();
        status.rejected_events = self.inner.stats.rejected();
        status.circuit_open = self.inner.stats.circuit_open.load(Ordering::Relaxed);
        status
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.enabled.store(false, Ordering::Relaxed);
        let Some(control) = self.control.take() else {
            return;
        };
        let deadline = Instant::now() + self.shutdown_timeout;
        let (reply, answer) = std_mpsc::channel();
        let asked = control.send(Control::Shutdown { deadline, reply }).is_ok();
        // Closing the record queue lets the worker see the end even if the message was lost.
        self.records.take();
        let finished = asked && answer.recv_timeout(self.shutdown_timeout).is_ok();
        let worker = self
            .worker
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (true, Some(worker)) = (finished, worker) {
            // The worker has replied and is returning; joining takes microseconds.
            let _ = worker.join();
        }
        // Otherwise the worker thread is left to finish at its own deadline: the host's
        // shutdown never waits longer than the configured timeout.
    }
}
