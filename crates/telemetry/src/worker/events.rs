//! The storing half's first step: records become serialized events that passed the scrubber.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use telemetry_model::{
    Catalog, CountBucket, DurationBucket, EncodedEvent, ErrorSummary, Event, EventId, EventType,
    ExceptionType, FeatureSet, HourTimestamp, Name, RunOutcome, Section,
};
use telemetry_policy::{ScrubReason, Scrubber};

use crate::record::{Record, RunRecord, allowlist_slot};
use crate::template::EventTemplate;
use crate::usage::{AtomicBitSet, UsageAccumulator};
use crate::worker::WorkerStats;

/// Receives the library's user-facing messages (the debug print of each event).
pub(crate) type MessageSink = Arc<dyn Fn(&str) + Send + Sync>;

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

/// What a record becomes, before the copies of a drain are made together.
enum Planned {
    /// This checked event.
    Checked(Checked),
    /// A copy of this event, which passed, under this id.
    Copy(EncodedEvent, EventId),
}

/// The checked result of recent run shapes, so that runs alike are serialized and scrubbed
/// once and then issued as copies under fresh ids ([`EncodedEvent::copies`]), which the
/// scrubber would judge exactly as the original: it exempts the id's value and nothing else
/// differs.
///
/// Hosts run the same few kinds of work over and over, so a handful of shapes covers almost
/// every run. The cache is emptied when it reaches [`RUN_SHAPES`] entries, which bounds its
/// memory to a few hundred events; a new hour starts new shapes.
#[derive(Debug, Default)]
struct RunShapes {
    checked: HashMap<RunShape, Checked, BuildHasherDefault<ShapeHasher>>,
}

/// The hash of the run shapes' table: a multiply and rotate per word, as rustc's own FxHash.
/// The standard library's SipHash, which guards a table against keys chosen to collide, took
/// about 560 instructions a run here, a quarter of building a `run` event from a shape seen
/// before; the keys are the host's own buckets and flags, at most [`RUN_SHAPES`] of them.
#[derive(Clone, Copy, Debug, Default)]
struct ShapeHasher(u64);

impl ShapeHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for ShapeHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_u128(&mut self, value: u128) {
        self.add(value as u64);
        self.add((value >> 64) as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
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

/// Turns records and the process's usage into events: catalog names, buckets, hour
/// timestamps, serialized and passed through the scrubber before anything can store them.
pub(crate) struct EventBuilder {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) usage: Arc<UsageAccumulator>,
    pub(crate) template: EventTemplate,
    pub(crate) scrubber: Scrubber,
    pub(crate) stats: Arc<WorkerStats>,
    /// Prints every event that passed when set (the debug setting).
    pub(crate) debug: Option<MessageSink>,
    pub(crate) started: Instant,
    /// Features used by runs, merged into the summary.
    run_features: FeatureSet,
    /// Exception counts from runs, by allowlist slot, merged into the summary.
    run_exceptions: Vec<u64>,
    run_shapes: RunShapes,
}

impl EventBuilder {
    pub(crate) fn new(
        catalog: Arc<Catalog>,
        usage: Arc<UsageAccumulator>,
        template: EventTemplate,
        scrubber: Scrubber,
        stats: Arc<WorkerStats>,
        debug: Option<MessageSink>,
    ) -> EventBuilder {
        EventBuilder {
            catalog,
            usage,
            template,
            scrubber,
            stats,
            debug,
            started: Instant::now(),
            run_features: FeatureSet::new(),
            run_exceptions: Vec::new(),
            run_shapes: RunShapes::default(),
        }
    }

    /// The events for `records`, each checked; the ones that fail are counted and left out.
    pub(crate) fn events(&mut self, records: Vec<Record>) -> Vec<EncodedEvent> {
        let planned: Vec<Planned> = records
            .into_iter()
            .map(|record| match record {
                Record::Run(run) => self.plan_run(run),
            })
            .collect();
        // The copies of earlier shapes, made together in shared blocks.
        let requests: Vec<(&EncodedEvent, EventId)> = planned
            .iter()
            .filter_map(|planned| match planned {
                Planned::Copy(earlier, id) => Some((earlier, *id)),
                Planned::Checked(_) => None,
            })
            .collect();
        let mut copies = EncodedEvent::copies(&requests).into_iter();
        drop(requests);
        let mut events = Vec::with_capacity(planned.len());
        for planned in planned {
            let checked = match planned {
                Planned::Checked(checked) => checked,
                Planned::Copy(..) => match copies.next() {
                    Some(Ok(copy)) => Checked::Passed(copy),
                    Some(Err(_)) | None => Checked::Unencodable,
                },
            };
            events.extend(self.accept(checked));
        }
        events
    }

    /// What one run becomes: a copy of an earlier run of the same shape under a new id, or a
    /// new event serialized and scrubbed.
    fn plan_run(&mut self, run: RunRecord) -> Planned {
        self.count_run(&run);
        let hour = HourTimestamp::now();
        let Some(integrations) = self.usage.integrations_installed.snapshot() else {
            // More integrations than one shape can hold: check every such event in full.
            let integrations = self.installed_integrations();
            return Planned::Checked(self.check(&self.run_event(run, hour, integrations)));
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
            Some(Checked::Passed(earlier)) => Planned::Copy(earlier.clone(), EventId::random()),
            Some(rejected) => Planned::Checked(rejected.clone()),
            None => {
                let slots = (0..128).filter(|slot| integrations & (1u128 << slot) != 0);
                let integrations = self.allowlisted_slots(slots, Section::Integrations);
                let checked = self.check(&self.run_event(run, hour, integrations));
                self.run_shapes.insert(shape, checked.clone());
                Planned::Checked(checked)
            }
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
                if let Some(print) = &self.debug {
                    print(&format!(
                        "{} telemetry event: {}",
                        self.template.sdk_name,
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
                // Counted with the scrubber's drops: both are events the checks refused.
                self.stats.count_unencodable();
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
        // The recording call refused handles of other catalogs; these lookups cannot fail.
        if let Some(name) = run
            .exception
            .and_then(|exception| self.catalog.exception_type_name(exception))
        {
            event.errors.exception_types.insert(name, CountBucket::One);
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

    /// The `sdk_usage` summary of the whole process, checked; `None` when the checks refused it.
    pub(crate) fn summary(&self) -> Option<EncodedEvent> {
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
        self.accept(self.check(&event))
    }
}

fn other_name() -> Name {
    Name::new(telemetry_model::catalog::OTHER)
        .unwrap_or_else(|_| unreachable!("`other` is a valid name"))
}
