//! The second look: every event read back from a buffer is judged again before it leaves.
//!
//! What a buffer hands back may not be what this process stored: another process (or an
//! older version) wrote it, the file was edited, or an SDK's own buffer returns something
//! else. So before a batch is sent, each event must decode as an event, carry this process's
//! session id, SDK and runtime, use only names this SDK's catalog declares, and pass the
//! scrubber. An event under another session id (left from before a `reset`, an opt-out or the
//! id's replacement by age) is deleted, so that one request never carries two session ids and
//! an id the user asked to forget never leaves; any other failure is dropped and counted.
//!
//! Runs alike are judged once: the verdict is kept by the event's text without its id (runs
//! of one shape differ only there), for a bounded number of shapes. The text itself is the key,
//! so two shapes never share a verdict; it is hashed with foldhash, as every event delivered
//! from a buffer is looked up and SipHash over a few hundred bytes was a tenth of the memory
//! path's time. The keys are bounded in number and in bytes ([`VERDICTS`], [`VERDICT_BYTES`]).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use telemetry_model::{Catalog, EncodedEvent, Event, Section, catalog::OTHER};
use telemetry_policy::Scrubber;

use crate::template::EventTemplate;

/// What happens to one event read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It may be sent.
    Send,
    /// It belongs to another session: deleted, counted as purged.
    OtherSession,
    /// It is not an event of this SDK as configured: dropped, counted as invalid.
    Invalid,
    /// The scrubber refused it: dropped, counted as scrubbed.
    Scrubbed,
}

/// The most verdicts remembered at once.
const VERDICTS: usize = 1_024;

/// The most bytes of event text kept as the verdicts' keys: memory telemetry holds for as
/// long as it runs, beside its buffer, when many shapes are read back. About 1,900 shapes of a
/// typical `run` event, so that 1,024 distinct shapes in turn (the throughput benchmark's
/// varied runs) are each judged once; with 256 KiB they were judged in full every time, and
/// that case fell from 340,000 to 196,000 events/s.
const VERDICT_BYTES: usize = 1_024 * 1_024;

/// The longest shape whose verdict is kept; longer ones are judged in full every time.
const LONGEST_KEPT: usize = 16 * 1_024;

/// Judges events read back from a buffer.
pub(crate) struct ReadBackCheck {
    template: EventTemplate,
    names: HashSet<String>,
    scrubber: Scrubber,
    verdicts: Mutex<Verdicts>,
}

/// Verdicts by the event's text without its id.
#[derive(Default)]
struct Verdicts {
    by_shape: foldhash::HashMap<Box<str>, Verdict>,
    /// The bytes of the keys.
    bytes: usize,
}

impl ReadBackCheck {
    pub(crate) fn new(
        template: EventTemplate,
        catalog: &Catalog,
        scrubber: Scrubber,
    ) -> ReadBackCheck {
        let mut names: HashSet<String> = Section::ALL
            .iter()
            .flat_map(|section| catalog.entries(*section))
            .map(|entry| entry.name.to_string())
            .collect();
        names.insert(OTHER.to_owned());
        ReadBackCheck {
            template,
            names,
            scrubber,
            verdicts: Mutex::new(Verdicts::default()),
        }
    }

    /// The verdict on one event.
    pub(crate) fn judge(&self, event: &EncodedEvent) -> Verdict {
        let Some(shape) = shape_of(event.json()).filter(|shape| shape.len() <= LONGEST_KEPT) else {
            return self.judge_in_full(event);
        };
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(verdict) = verdicts.by_shape.get(shape) {
            return *verdict;
        }
        let verdict = self.judge_in_full(event);
        if verdicts.by_shape.len() >= VERDICTS || verdicts.bytes + shape.len() > VERDICT_BYTES {
            *verdicts = Verdicts::default();
        }
        verdicts.bytes += shape.len();
        verdicts.by_shape.insert(shape.into(), verdict);
        verdict
    }

    fn judge_in_full(&self, event: &EncodedEvent) -> Verdict {
        let Ok(decoded) = event.decode() else {
            return Verdict::Invalid;
        };
        if decoded.session_id != self.template.session_id {
            return Verdict::OtherSession;
        }
        if !self.is_ours(&decoded) {
            return Verdict::Invalid;
        }
        match self.scrubber.check_json(event.json()) {
            Ok(()) => Verdict::Send,
            Err(_) => Verdict::Scrubbed,
        }
    }

    /// Whether the event is this SDK's, on this runtime, with only declared names.
    fn is_ours(&self, event: &Event) -> bool {
        let template = &self.template;
        let declared = |name: &telemetry_model::Name| self.names.contains(name.as_str());
        event.sdk_name == template.sdk_name
            && event.sdk_version == template.sdk_version
            && event.library_version == template.library_version
            && event.runtime == template.runtime
            && event.runtime_version == template.runtime_version
            && event.integrations.iter().all(declared)
            && event.features.iter().all(declared)
            && event.block_types.iter().all(declared)
            && event.commands.iter().all(declared)
            && event.metrics.keys().all(declared)
            && event
                .errors
                .integration_import_failures
                .iter()
                .all(declared)
            && event.errors.config_errors.iter().all(declared)
            && event.errors.exception_types.keys().all(declared)
    }
}

/// The event's text after its id (`{"event_id":"<uuid>",` comes first in every event this
/// library writes); `None` for a text of another shape, which is judged in full every time.
fn shape_of(json: &str) -> Option<&str> {
    const PREFIX: &str = r#"{"event_id":""#;
    let rest = json.strip_prefix(PREFIX)?;
    let after_id = rest.get(telemetry_model::EventId::TEXT_LEN..)?;
    after_id.strip_prefix('"')
}

#[cfg(test)]
mod tests {
    use telemetry_model::{CountBucket, EventId, HourTimestamp, Name, SessionId};
    use telemetry_policy::{EnvSnapshot, MachineIdentity};
    use telemetry_testkit::fixtures;

    use super::*;

    fn check(event: &Event) -> ReadBackCheck {
        let template = EventTemplate {
            session_id: event.session_id,
            sdk_name: event.sdk_name.clone(),
            sdk_version: event.sdk_version.clone(),
            library_version: event.library_version.clone(),
            runtime: event.runtime.clone(),
            runtime_version: event.runtime_version.clone(),
            os: event.os,
            arch: event.arch,
            interface: event.interface,
            ci: event.ci,
            deployment: event.deployment,
        };
        let catalog = catalog();
        let identity = MachineIdentity::detect(&EnvSnapshot::from_pairs([("HOME", "/home/x")]));
        let mut allowed = declared(&catalog, &Section::ALL);
        allowed.extend(["flowkit", "rust"].map(str::to_owned));
        ReadBackCheck::new(template, &catalog, Scrubber::new(identity, allowed))
    }

    fn catalog() -> Catalog {
        Catalog::from_toml(include_str!("../../../flowkit/catalog.toml"))
            .expect("flowkit's catalog")
    }

    fn declared(catalog: &Catalog, sections: &[Section]) -> Vec<String> {
        sections
            .iter()
            .flat_map(|section| catalog.entries(*section))
            .map(|entry| entry.name.to_string())
            .collect()
    }

    fn encoded(event: &Event) -> EncodedEvent {
        EncodedEvent::encode(event).expect("encodes")
    }

    /// Runs of one shape differ only in their ids, and share one verdict.
    #[test]
    fn runs_of_one_shape_are_judged_once() {
        let ours = fixtures::run_event();
        let check = check(&ours);
        for _ in 0..3 {
            let mut event = ours.clone();
            event.event_id = EventId::random();
            assert_eq!(check.judge(&encoded(&event)), Verdict::Send);
        }
        let verdicts = check.verdicts.lock().expect("not poisoned");
        assert_eq!(verdicts.by_shape.len(), 1);
    }

    /// Three times as many shapes as the cache holds by count, and more than its bytes allow,
    /// each in turn with two that must be refused: a cleared or full cache never lends one
    /// shape's verdict to another, and its keys' bytes are counted exactly.
    #[test]
    fn verdicts_stay_per_shape_however_many_shapes_pass() {
        // Every name the catalog declares where a run has them: long shapes, so that the
        // cache's bytes run out before its count does.
        let mut ours = fixtures::run_event();
        let catalog = catalog();
        let names = |section| -> std::collections::BTreeSet<Name> {
            declared(&catalog, &[section])
                .iter()
                .map(|text| Name::new(text).expect("a declared name"))
                .collect()
        };
        let counted = |section| {
            names(section)
                .into_iter()
                .map(|name| (name, CountBucket::One))
        };
        ours.features = names(Section::Features);
        ours.integrations = names(Section::Integrations);
        ours.block_types = names(Section::BlockTypes);
        ours.commands = names(Section::Commands);
        ours.errors.config_errors = names(Section::ConfigErrors);
        ours.metrics = counted(Section::Metrics).collect();
        ours.errors.exception_types = counted(Section::ExceptionTypes).collect();
        let check = check(&ours);
        let mut undeclared = ours.clone();
        undeclared
            .features
            .insert(Name::new("not_in_the_catalog").expect("a name"));
        let mut other_session = ours.clone();
        other_session.session_id = SessionId::random();
        let base = ours.timestamp.unix_seconds();
        for hour in 0..(VERDICTS as u64 * 3) {
            let mut event = ours.clone();
            event.event_id = EventId::random();
            event.timestamp = HourTimestamp::from_unix_seconds(base + hour * 3_600);
            assert_eq!(check.judge(&encoded(&event)), Verdict::Send, "hour {hour}");
            undeclared.event_id = EventId::random();
            assert_eq!(check.judge(&encoded(&undeclared)), Verdict::Invalid);
            other_session.event_id = EventId::random();
            assert_eq!(check.judge(&encoded(&other_session)), Verdict::OtherSession);
        }
        let shape_bytes = encoded(&ours).json().len() as u64;
        assert!(
            shape_bytes * VERDICTS as u64 > VERDICT_BYTES as u64,
            "shapes of {shape_bytes} bytes never fill the cache's bytes"
        );
        let verdicts = check.verdicts.lock().expect("not poisoned");
        assert!(verdicts.by_shape.len() <= VERDICTS);
        assert!(verdicts.bytes <= VERDICT_BYTES);
        let bytes: usize = verdicts.by_shape.keys().map(|shape| shape.len()).sum();
        assert_eq!(bytes, verdicts.bytes);
    }
}
