//! The wire format: serialized events and the batch that carries them.
//!
//! An HTTPS request body is `{"schema_version": 1, "events": [ … ]}`; an offline export
//! holds the same event objects, one per line. [`event_schema`] describes one event object
//! and is committed as `docs/event.schema.json`.

use std::fmt;
use std::sync::Arc;

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::event::{Event, EventId};
use crate::stored::StoredEvent;

thread_local! {
    /// Where [`EncodedEvent::with_id`] assembles a copy before sharing it.
    static COPY_BUFFER: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The largest [`COPY_BUFFER`] kept between copies; an unusually large event does not pin
/// its size for the thread's life.
const MAX_KEPT_COPY_BUFFER: usize = 16 * 1024;

/// The version of the wire format this crate writes.
pub const SCHEMA_VERSION: u32 = 1;

/// A batch of events as one HTTPS request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WireBatch {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The events, in the order they were recorded.
    pub events: Vec<Event>,
}

/// One event already serialized to its JSON object, with its id kept beside it so that
/// buffers can deduplicate and acknowledge without parsing.
///
/// Buffers and transports only ever move these bytes: they never see an [`Event`] and never
/// decide anything about consent.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    id: EventId,
    json: Arc<str>,
}

impl EncodedEvent {
    /// Serializes an event.
    pub fn encode(event: &Event) -> Result<EncodedEvent, serde_json::Error> {
        // Room for a typical event up front, so serializing does not grow the buffer step by
        // step; the text is then copied once into its shared allocation.
        let mut json = Vec::with_capacity(1_024);
        serde_json::to_writer(&mut json, event)?;
        let json = String::from_utf8(json).map_err(serde::ser::Error::custom)?;
        Ok(EncodedEvent {
            id: event.event_id,
            json: json.into(),
        })
    }

    /// The same event under another id: a copy of the JSON with only the `event_id` value
    /// replaced.
    ///
    /// Events that differ only in their id serialize to the same text apart from it, so a
    /// producer that records many alike events can serialize and check one and issue copies.
    /// The id is the first field [`encode`](EncodedEvent::encode) writes; JSON in another
    /// layout (from [`from_stored`](EncodedEvent::from_stored), say) is decoded and encoded
    /// again instead.
    pub fn with_id(&self, id: EventId) -> Result<EncodedEvent, serde_json::Error> {
        const PREFIX: &str = "{\"event_id\":\"";
        let json: &str = &self.json;
        // `encode`'s layout: the prefix, the id's text, its closing quote. The id in it is
        // this event's (from `encode`, or checked by `from_stored`), so the layout is all
        // there is to check, without formatting the old id to compare.
        let id_end = PREFIX.len() + EventId::TEXT_LEN;
        let rest = json
            .strip_prefix(PREFIX)
            .filter(|_| json.as_bytes().get(id_end) == Some(&b'"'))
            .and_then(|_| json.get(id_end..));
        match rest {
            Some(rest) => {
                let mut text = [0u8; EventId::TEXT_LEN];
                let new_id = id.encode(&mut text);
                // Built in a buffer this thread keeps, so the shared text is allocated and
                // written once, not built in a `String` and copied again.
                let json = COPY_BUFFER.with(|buffer| {
                    let mut copy = buffer.borrow_mut();
                    copy.clear();
                    copy.push_str(PREFIX);
                    copy.push_str(new_id);
                    copy.push_str(rest);
                    let shared = Arc::<str>::from(copy.as_str());
                    if copy.capacity() > MAX_KEPT_COPY_BUFFER {
                        *copy = String::new();
                    }
                    shared
                });
                Ok(EncodedEvent { id, json })
            }
            None => {
                let mut event = self.decode()?;
                event.event_id = id;
                EncodedEvent::encode(&event)
            }
        }
    }

    /// Checks that `json` is one event object with the given id, for buffers that read
    /// events back from storage that may have been damaged.
    pub fn from_stored(id: EventId, json: &str) -> Result<EncodedEvent, serde_json::Error> {
        // Checked exactly as deserializing an `Event` would check it, without building one.
        let stored: StoredEvent = serde_json::from_str(json)?;
        if stored.event_id.0 != id {
            return Err(serde::de::Error::custom(
                "stored event id does not match its key",
            ));
        }
        Ok(EncodedEvent {
            id,
            json: json.into(),
        })
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event as one line of compact JSON (no newline inside).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The event decoded again, for previews and tests.
    pub fn decode(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("id", &self.id)
            .field("bytes", &self.json.len())
            .finish()
    }
}

/// Writes the HTTPS body `{"schema_version":1,"events":[…]}` around already serialized events,
/// without parsing them again.
pub fn encode_batch(events: &[EncodedEvent]) -> Vec<u8> {
    let payload: usize = events.iter().map(|event| event.json.len() + 1).sum();
    let mut body = Vec::with_capacity(payload + 40);
    body.extend_from_slice(b"{\"schema_version\":");
    body.extend_from_slice(SCHEMA_VERSION.to_string().as_bytes());
    body.extend_from_slice(b",\"events\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.json.as_bytes());
    }
    body.extend_from_slice(b"]}");
    body
}

/// The JSON Schema (draft 2020-12) of one event object.
pub fn event_schema() -> Schema {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Event>();
    schema.insert(
        "$id".to_owned(),
        "https://github.com/flowkit-dev/sdk-telemetry/docs/event.schema.json".into(),
    );
    schema
}

/// [`event_schema`] as the pretty-printed text committed in `docs/event.schema.json`.
pub fn event_schema_text() -> String {
    // Serializing a `serde_json::Value` tree cannot fail.
    let mut text = serde_json::to_string_pretty(&event_schema()).unwrap_or_default();
    text.push('\n');
    text
}
