//! The background worker: turns records into events, buffers them and delivers batches.
//!
//! It runs on its own thread with its own single-threaded tokio runtime, so hosts without tokio
//! and hosts with their own runtime both work, and nothing it does (serializing, disk, network)
//! ever happens on a thread that records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use telemetry_buffer::Buffer;
use telemetry_model::{
    Arch, Catalog, CountBucket, DeploymentStage, DurationBucket, EncodedEvent, ErrorSummary, Event,
    EventId, EventType, ExceptionType, FeatureSet, HourTimestamp, Interface, Name, OsFamily,
    RunOutcome, Section, SessionId, Version,
};
use telemetry_policy::{ScrubReason, Scrubber};
use telemetry_transport::{Backoff, CircuitBreaker, CircuitState, SendError, Transport};
use tokio::sync::mpsc;

use crate::config::{TelemetryConfig, WarningSink};
use crate::handle::{FlushError, FlushReport, Record, RunRecord, allowlist_slot};
use crate::queue::{Drained, RecordReceivers};
use crate::usage::{AtomicBitSet, UsageAccumulator};

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

/// Delivery counters, shared with the handles for `status`.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
    /// The hour of the last successful delivery, in Unix seconds; 0 before the first.
    last_sent_hour: AtomicU64,
    /// Events the scrubber dropped, by [`ScrubReason::ALL`] position.
    scrubbed: [AtomicU64; ScrubReason::ALL.len()],
    /// Whether the circuit breaker has stopped scheduled deliveries.
    pub(crate) circuit_open: std::sync::atomic::AtomicBool,
}

impl WorkerStats {
    fn count_scrubbed(&self, reason: ScrubReason) {
        if let Some(position) = ScrubReason::ALL
            .iter()
            .position(|candidate| *candidate == reason)
        {
            self.scrubbed[position].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Failed delivery attempts (the events were kept).
    pub(crate) fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }

    /// Events the destination refused for good (dropped and counted).
    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Events the scrubber dropped, by reason (only reasons that occurred).
    pub(crate) fn scrubbed(&self) -> BTreeMap<String, u64> {
        ScrubReason::ALL
            .iter()
            .zip(&self.scrubbed)
            .map(|(reason, count)| (reason.as_str().to_owned(), count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    pub(crate) fn last_sent(&self) -> Option<HourTimestamp> {
        match self.last_sent_hour.load(Ordering::Relaxed) {
            0 => None,
            seconds => Some(HourTimestamp::from_unix_seconds(seconds)),
        }
    }
}

/// The fields every event of this process shares.
#[derive(Clone, Debug)]
pub(crate) struct EventTemplate {
    session_id: SessionId,
    sdk_name: Name,
    sdk_version: Version,
    library_version: Version,
    runtime: Name,
    runtime_version: Version,
    os: OsFamily,
    arch: Arch,
    interface: Interface,
    ci: bool,
    deployment: DeploymentStage,
}

impl EventTemplate {
    pub(crate) fn new(config: &TelemetryConfig, ci: bool, session_id: SessionId) -> EventTemplate {
        EventTemplate {
            session_id,
            sdk_name: config.sdk_name.clone(),
            sdk_version: config.sdk_version.clone(),
            library_version: crate::library_version(),
            runtime: config.runtime.clone(),
            runtime_version: config.runtime_version.clone(),
            os: OsFamily::current(),
            arch: Arch::current(),
            interface: config.interface,
            ci,
            deployment: config.deployment,
        }
    }

    pub(crate) fn event(&self, event_type: EventType, duration: DurationBucket) -> Event {
        self.event_at(HourTimestamp::now(), event_type, duration)
    }

    fn event_at(
        &self,
        timestamp: HourTimestamp,
        event_type: EventType,
        duration: DurationBucket,
    ) -> Event {
        Event {
            event_id: EventId::random(),
            session_id: self.session_id,
            timestamp,
            event_type,
            sdk_name: self.sdk_name.clone(),
            sdk_version: self.sdk_version.clone(),
            library_version: self.library_version.clone(),
            runtime: self.runtime.clone(),
            runtime_version: self.runtime_version.clone(),
            os: self.os,
            arch: self.arch,
            interface: self.interface,
            ci: self.ci,
            deployment: self.deployment,
            integrations: BTreeSet::new(),
            features: BTreeSet::new(),
            block_types: BTreeSet::new(),
            commands: BTreeSet::new(),
            metrics: BTreeMap::new(),
            errors: ErrorSummary::default(),
            duration,
            concurrency_peak: None,
            outcome: None,
        }
    }
}

/// Everything a `run` event holds apart from its id. Two runs of the same shape serialize to
/// the same JSON but for the event id: the session, SDK and platform fields are the process's
/// own and never change while the worker runs, and the catalog is fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RunShape {
    hour: HourTimestamp,
    duration: DurationBucket,
    outcome: RunOutcome,
    features: FeatureSet,
    exception: Option<ExceptionType>,
    /// The installed integrations, one bit per allowlist slot.
    integrations: u128,
}

/// How the worker's checks ended for one event.
#[derive(Clone, Debug)]
enum Checked {
    /// Serialized and passed by the scrubber.
    Passed(EncodedEvent),
    /// The scrubber rejected it.
    Scrubbed(ScrubReason),
    /// It could not be serialized.
    Unencodable,
}

/// The checked result of recent run shapes, so that runs alike are serialized and scrubbed
/// once and then issued as copies under fresh ids ([`EncodedEvent::with_id`]), which the
/// scrubber would judge exactly as the original: it exempts the id's value and nothing else
/// differs.
///
/// Hosts run the same few kinds of work over and over, so a handful of shapes covers almost
/// every run. The cache is emptied when it reaches [`RUN_SHAPES`] entries, which bounds its
/// memory to a few hundred events; a new hour starts new shapes.
#[derive(Debug, Default)]
pub(crate) struct RunShapes {
    checked: HashMap<RunShape, Checked>,
}

/// The most run shapes remembered at once.
const RUN_SHAPES: usize = 256;

impl RunShapes {
    fn get(&self, shape: &RunShape) -> Option<&Checked> {
        self.checked.get(shape)
    }

    fn insert(&mut self, shape: RunShape, checked: Checked) {
        if self.checked.len() >= RUN_SHAPES {
            self.checked.clear();
        }
        self.checked.insert(shape, checked);
    }
}

/// The most events moved from the queue into the buffer in one go. Each chunk exists beside a
/// full buffer for a moment, so it is part of what memory telemetry can take; 256 events of a
/// few hundred bytes each keep that to about 150 KB, and a spool still writes them in one
/// transaction.
pub(crate) const MAX_DRAIN: usize = 256;

/// How often the worker collects queued records when no handle has signalled.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Worker {
    pub(crate) records: RecordReceivers,
    /// Signalled by handles when the queue is half full.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) buffer: Arc<dyn Buffer>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) usage: Arc<UsageAccumulator>,
    pub(crate) stats: Arc<WorkerStats>,
    pub(crate) template: EventTemplate,
    pub(crate) batch_size: usize,
    pub(crate) batch_interval: Duration,
    pub(crate) debug: bool,
    pub(crate) sdk_name: Name,
    pub(crate) warnings: WarningSink,
    pub(crate) started: Instant,
    /// Features used by runs, merged into the summary.
    pub(crate) run_features: FeatureSet,
    /// Exception counts from runs, by allowlist slot, merged into the summary.
    pub(crate) run_exceptions: Vec<u64>,
    /// Whether to send an `sdk_usage` summary at shutdown.
    pub(crate) summary: bool,
    /// Checks every serialized event before it is buffered.
    pub(crate) scrubber: Scrubber,
    /// Set when the user opted out through the running handle: nothing more is buffered.
    pub(crate) opted_out: Arc<std::sync::atomic::AtomicBool>,
    /// Run events already serialized and checked, by shape.
    pub(crate) run_shapes: RunShapes,
}

impl Worker {
    pub(crate) fn run_on_own_runtime(self) {
        // The I/O driver is needed by network transports; time by batching and deadlines.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(self.run()),
            Err(error) => tracing::warn!(%error, "telemetry worker runtime failed to start"),
        }
    }

    async fn run(mut self) {
        let mut schedule = DeliverySchedule::new();
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
                        self.drain_queue();
                        let result = self.deliver(deadline, Amount::Everything).await;
                        schedule.record(&result);
                        self.stats.circuit_open.store(schedule.is_open(), Ordering::Relaxed);
                        let _ = reply.send(result.map_err(FlushError::from));
                    }
                    Some(Control::Shutdown { deadline, reply }) => {
                        self.drain_queue();
                        if self.summary && self.usage_allowed() {
                            self.buffer_summary();
                        }
                        if let Err(stopped) = self.deliver(deadline, Amount::Everything).await {
                            tracing::debug!(?stopped, "events left undelivered at shutdown");
                        }
                        let _ = reply.send(());
                        return;
                    }
                    None => return,
                },
                // Records are collected when a handle signals a half-full queue, or at the latest
                // on the drain tick. Waiting on the queue itself would wake this thread for every
                // record, and a thread wake-up costs the recording thread microseconds.
                _ = self.wake.notified() => {
                    if !self.collect(&mut schedule).await {
                        return;
                    }
                }
                _ = drain.tick() => {
                    if !self.collect(&mut schedule).await {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if self.pending() > 0 && schedule.due() {
                        self.deliver_on_schedule(Amount::Everything, &mut schedule).await;
                    }
                }
            }
        }
    }

    /// Delivers with the batch interval as the deadline, and lets the schedule work out the next
    /// attempt after a failure.
    async fn deliver_on_schedule(&mut self, amount: Amount, schedule: &mut DeliverySchedule) {
        let deadline = Instant::now() + self.batch_interval.max(Duration::from_secs(5));
        let result = self.deliver(deadline, amount).await;
        schedule.record(&result);
        self.stats
            .circuit_open
            .store(schedule.is_open(), Ordering::Relaxed);
    }

    /// Whether collecting is still allowed: after `Telemetry::disable` nothing more is buffered.
    fn usage_allowed(&self) -> bool {
        !self.opted_out.load(Ordering::Relaxed)
    }

    fn pending(&self) -> usize {
        self.buffer.stats().map_or(0, |stats| stats.pending)
    }

    /// Moves queued records into the buffer and sends full batches when they are due.
    /// Returns `false` when every handle is gone (the worker should stop).
    async fn collect(&mut self, schedule: &mut DeliverySchedule) -> bool {
        let open = self.drain_queue();
        if self.pending() >= self.batch_size && schedule.due() {
            self.deliver_on_schedule(Amount::FullBatches, schedule)
                .await;
        }
        if !open {
            // Every handle is gone without a shutdown message: deliver what is possible.
            let deadline = Instant::now() + Duration::from_secs(1);
            let _ = self.deliver(deadline, Amount::Everything).await;
        }
        open
    }

    /// Moves the queued records into the buffer, a bounded chunk at a time so that a full
    /// queue never becomes one large allocation. Takes at most what was queued when it began
    /// (and a chunk), so threads that keep recording cannot hold the worker here for good.
    /// Returns `false` once the queue is closed.
    fn drain_queue(&mut self) -> bool {
        let mut budget = self.records.len() + MAX_DRAIN;
        loop {
            let mut records = Vec::with_capacity(MAX_DRAIN.min(self.records.len()));
            let drained = self.records.drain(&mut records, MAX_DRAIN.min(budget));
            budget = budget.saturating_sub(records.len());
            if !records.is_empty() {
                self.store(records);
            }
            match drained {
                Drained::Closed => return false,
                Drained::More if budget > 0 => {}
                Drained::More | Drained::Empty => return true,
            }
        }
    }

    /// Turns records into events, serializes them and appends them to the buffer.
    fn store(&mut self, records: Vec<Record>) {
        if !self.usage_allowed() {
            return;
        }
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            let checked = match record {
                Record::Run(run) => self.checked_run(run),
            };
            events.extend(self.accept(checked));
        }
        self.append(events);
    }

    /// The checked event for one run: a copy of an earlier run of the same shape under a new
    /// id, or a new event serialized and scrubbed.
    fn checked_run(&mut self, run: RunRecord) -> Checked {
        self.count_run(&run);
        let hour = HourTimestamp::now();
        let Some(integrations) = self.usage.integrations_installed.snapshot() else {
            // More integrations than one shape can hold: check every such event in full.
            let integrations = self.installed_integrations();
            return self.check(&self.run_event(run, hour, integrations));
        };
        let shape = RunShape {
            hour,
            duration: DurationBucket::from_duration(run.duration),
            outcome: run.outcome,
            features: run.features,
            exception: run.exception,
            integrations,
        };
        match self.run_shapes.get(&shape) {
            Some(Checked::Passed(earlier)) => match earlier.with_id(EventId::random()) {
                Ok(copy) => Checked::Passed(copy),
                Err(_) => Checked::Unencodable,
            },
            Some(rejected) => rejected.clone(),
            None => {
                let slots = (0..128).filter(|slot| integrations & (1u128 << slot) != 0);
                let integrations = self.allowlisted_slots(slots, Section::Integrations);
                let checked = self.check(&self.run_event(run, hour, integrations));
                self.run_shapes.insert(shape, checked.clone());
                checked
            }
        }
    }

    fn append(&self, events: Vec<EncodedEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(error) = self.buffer.append(events) {
            tracing::warn!(%error, "events could not be buffered and were dropped");
        }
    }

    /// Serializes an event and runs the scrubber over it.
    fn check(&self, event: &Event) -> Checked {
        match EncodedEvent::encode(event) {
            Ok(encoded) => match self.scrubber.check_json(encoded.json()) {
                Ok(()) => Checked::Passed(encoded),
                Err(reason) => Checked::Scrubbed(reason),
            },
            Err(error) => {
                tracing::warn!(%error, "event could not be serialized");
                Checked::Unencodable
            }
        }
    }

    /// The event to buffer, if it passed; a rejected one is counted and dropped.
    fn accept(&self, checked: Checked) -> Option<EncodedEvent> {
        match checked {
            Checked::Passed(encoded) => {
                if self.debug {
                    (self.warnings)(&format!(
                        "{} telemetry event: {}",
                        self.sdk_name,
                        encoded.json()
                    ));
                }
                Some(encoded)
            }
            Checked::Scrubbed(reason) => {
                self.stats.count_scrubbed(reason);
                // The reason only: the event's contents are exactly what must not be logged.
                tracing::warn!(%reason, "an event that looked like personal data was dropped");
                None
            }
            Checked::Unencodable => {
                tracing::warn!("an event could not be serialized and was dropped");
                None
            }
        }
    }

    /// Adds a run's features and exception to the process summary.
    fn count_run(&mut self, run: &RunRecord) {
        if let Some(exception) = run.exception {
            let declared = self.catalog.len(Section::ExceptionTypes);
            let slot = allowlist_slot(exception.index(), declared);
            if self.run_exceptions.len() <= slot {
                self.run_exceptions.resize(declared + 1, 0);
            }
            self.run_exceptions[slot] += 1;
        }
        self.run_features = self.run_features.union(run.features);
    }

    fn run_event(
        &self,
        run: RunRecord,
        hour: HourTimestamp,
        integrations: BTreeSet<Name>,
    ) -> Event {
        let mut event = self.template.event_at(
            hour,
            EventType::Run,
            DurationBucket::from_duration(run.duration),
        );
        event.outcome = Some(run.outcome);
        event.features = run
            .features
            .iter()
            .filter_map(|feature| self.catalog.feature_name(feature).cloned())
            .collect();
        event.integrations = integrations;
        if let Some(exception) = run.exception {
            event.errors.exception_types.insert(
                self.catalog.exception_type_name(exception),
                CountBucket::One,
            );
        }
        event
    }

    fn installed_integrations(&self) -> BTreeSet<Name> {
        self.allowlisted_names(&self.usage.integrations_installed, Section::Integrations)
    }

    fn allowlisted_names(&self, set: &AtomicBitSet, section: Section) -> BTreeSet<Name> {
        self.allowlisted_slots(set.iter(), section)
    }

    /// The names of allowlist slots; the slot past the declared names is `other`.
    fn allowlisted_slots(
        &self,
        slots: impl Iterator<Item = usize>,
        section: Section,
    ) -> BTreeSet<Name> {
        let declared = self.catalog.entries(section);
        slots
            .map(|slot| match declared.get(slot) {
                Some(entry) => entry.name.clone(),
                None => other_name(),
            })
            .collect()
    }

    fn names(&self, set: &AtomicBitSet, section: Section) -> BTreeSet<Name> {
        let declared = self.catalog.entries(section);
        set.iter()
            .filter_map(|index| declared.get(index).map(|entry| entry.name.clone()))
            .collect()
    }

    /// Builds the `sdk_usage` summary of the whole process and buffers it.
    fn buffer_summary(&mut self) {
        let usage = Arc::clone(&self.usage);
        let mut event = self.template.event(
            EventType::SdkUsage,
            DurationBucket::from_duration(self.started.elapsed()),
        );
        let mut features = self.names(&usage.features, Section::Features);
        features.extend(
            self.run_features
                .iter()
                .filter_map(|feature| self.catalog.feature_name(feature).cloned()),
        );
        event.features = features;
        event.block_types = self.names(&usage.block_types, Section::BlockTypes);
        event.commands = self.names(&usage.commands, Section::Commands);
        event.integrations = self.installed_integrations();
        let metrics = self.catalog.entries(Section::Metrics);
        event.metrics = usage
            .metrics
            .iter()
            .filter_map(|(index, count)| {
                Some((
                    metrics.get(index)?.name.clone(),
                    CountBucket::from_count(count),
                ))
            })
            .collect();
        let mut exception_counts: BTreeMap<Name, u64> = BTreeMap::new();
        let exceptions = self.catalog.entries(Section::ExceptionTypes);
        let from_runs = self.run_exceptions.iter().copied().enumerate();
        for (slot, count) in usage.exception_types.iter().chain(from_runs) {
            if count > 0 {
                let name = exceptions
                    .get(slot)
                    .map_or_else(other_name, |entry| entry.name.clone());
                *exception_counts.entry(name).or_default() += count;
            }
        }
        event.errors = ErrorSummary {
            integration_import_failures: self
                .allowlisted_names(&usage.integration_import_failures, Section::Integrations),
            config_errors: self.names(&usage.config_errors, Section::ConfigErrors),
            exception_types: exception_counts
                .into_iter()
                .map(|(name, count)| (name, CountBucket::from_count(count)))
                .collect(),
        };
        event.concurrency_peak = Some(CountBucket::from_count(
            usage.concurrency_peak.load(Ordering::Relaxed),
        ));
        if let Some(encoded) = self.accept(self.check(&event)) {
            self.append(vec![encoded]);
        }
    }

    /// Sends buffered events batch by batch until none are left (or, for
    /// [`Amount::FullBatches`], until less than a batch is left) or `deadline` passes.
    async fn deliver(&mut self, deadline: Instant, amount: Amount) -> Result<FlushReport, Stopped> {
        let mut report = FlushReport::default();
        let mut limit = self.batch_size;
        loop {
            if Instant::now() >= deadline {
                return Err(Stopped::Deadline);
            }
            if amount == Amount::FullBatches && self.pending() < self.batch_size {
                return Ok(report);
            }
            let claim = match self.buffer.claim(limit) {
                Ok(Some(claim)) => claim,
                Ok(None) => {
                    report.pending = self.pending() as u64;
                    return Ok(report);
                }
                Err(error) => {
                    return Err(Stopped::Failed {
                        message: error.to_string(),
                        retry_after: None,
                    });
                }
            };
            let count = claim.events.len() as u64;
            let sent = tokio::time::timeout_at(
                tokio::time::Instant::from_std(deadline),
                self.transport.send(&claim.events),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    let _ = self.buffer.acknowledge(claim.id);
                    report.delivered += count;
                    self.stats.delivered.fetch_add(count, Ordering::Relaxed);
                    self.stats.last_sent_hour.store(
                        HourTimestamp::now().unix_seconds().max(1),
                        Ordering::Relaxed,
                    );
                    // A size that had to be split down stays split for the rest of this
                    // delivery: the destination's limit does not change between batches.
                }
                Ok(Err(SendError::TooLarge)) if count > 1 => {
                    let _ = self.buffer.release(claim.id);
                    limit = (count as usize).div_ceil(2);
                }
                Ok(Err(SendError::TooLarge)) => {
                    let _ = self.buffer.acknowledge(claim.id);
                    self.stats.rejected.fetch_add(count, Ordering::Relaxed);
                    tracing::warn!("an event too large for the destination was dropped");
                }
                Ok(Err(SendError::Rejected { message })) => {
                    let _ = self.buffer.acknowledge(claim.id);
                    self.stats.rejected.fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(%message, events = count, "the destination rejected a batch; it was dropped");
                }
                Ok(Err(SendError::Retryable {
                    message,
                    retry_after,
                })) => {
                    let _ = self.buffer.release(claim.id);
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%message, "delivery failed; events kept for a retry");
                    return Err(Stopped::Failed {
                        message,
                        retry_after,
                    });
                }
                Err(_elapsed) => {
                    let _ = self.buffer.release(claim.id);
                    self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    return Err(Stopped::Deadline);
                }
            }
        }
    }
}

fn other_name() -> Name {
    Name::new(telemetry_model::catalog::OTHER)
        .unwrap_or_else(|_| unreachable!("`other` is a valid name"))
}

/// When the worker may try to deliver again: exponential backoff with full jitter after a
/// failure (or the destination's `Retry-After`), and a circuit breaker that stops trying a
/// destination that keeps failing until a cool-down has passed.
struct DeliverySchedule {
    backoff: Backoff,
    not_before: Option<Instant>,
    breaker: CircuitBreaker,
}

impl DeliverySchedule {
    fn new() -> DeliverySchedule {
        DeliverySchedule {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            not_before: None,
            breaker: CircuitBreaker::default(),
        }
    }

    /// Whether a scheduled delivery may run now.
    fn due(&mut self) -> bool {
        let now = Instant::now();
        self.not_before.is_none_or(|at| now >= at) && self.breaker.allow(now)
    }

    fn record(&mut self, result: &Result<FlushReport, Stopped>) {
        let now = Instant::now();
        match result {
            Ok(_) => {
                self.backoff.reset();
                self.not_before = None;
                self.breaker.record_success();
            }
            Err(stopped) => {
                let retry_after = match stopped {
                    Stopped::Failed { retry_after, .. } => *retry_after,
                    Stopped::Deadline => None,
                };
                let delay = retry_after.unwrap_or_else(|| self.backoff.next_delay());
                // Never earlier than a wait already asked for (a `Retry-After` outlives a flush
                // that merely ran out of time).
                self.not_before = Some(
                    self.not_before
                        .map_or(now + delay, |at| at.max(now + delay)),
                );
                self.breaker.record_failure(now);
            }
        }
    }

    fn is_open(&self) -> bool {
        !matches!(self.breaker.state(), CircuitState::Closed)
    }
}

/// How much of the buffer a delivery sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Amount {
    /// Only full batches: the batch size was reached, the rest waits for the interval.
    FullBatches,
    /// Everything: the interval elapsed, or a flush or shutdown asked for it.
    Everything,
}

/// Why delivery stopped before the buffer was empty. Undelivered events stay buffered.
#[derive(Debug)]
pub(crate) enum Stopped {
    /// The deadline passed.
    Deadline,
    /// The destination or the buffer failed; retry later, not before `retry_after` when given.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl From<Stopped> for FlushError {
    fn from(stopped: Stopped) -> FlushError {
        match stopped {
            Stopped::Deadline => FlushError::Timeout,
            Stopped::Failed { message, .. } => FlushError::Delivery(message),
        }
    }
}
