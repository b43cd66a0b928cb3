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
//! of one shape differ only there), for a bounded number of shapes.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
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

/// Judges events read back from a buffer.
pub(crate) struct ReadBackCheck {
    template: EventTemplate,
    names: HashSet<String>,
    scrubber: Scrubber,
    verdicts: Mutex<HashMap<u64, Verdict>>,
    hasher: std::collections::hash_map::RandomState,
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
            verdicts: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The verdict on one event.
    pub(crate) fn judge(&self, event: &EncodedEvent) -> Verdict {
        let Some(shape) = shape_of(event.json()) else {
            return self.judge_in_full(event);
        };
        let mut hasher = self.hasher.build_hasher();
        hasher.write(shape.as_bytes());
        let key = hasher.finish();
        let mut verdicts = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(verdict) = verdicts.get(&key) {
            return *verdict;
        }
        let verdict = self.judge_in_full(event);
        if verdicts.len() >= VERDICTS {
            verdicts.clear();
        }
        verdicts.insert(key, verdict);
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
