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

/// How every JSON object [`EncodedEvent::encode`] writes begins: its id comes first.
const ID_PREFIX: &str = "{\"event_id\":\"";

/// The most bytes of copies [`EncodedEvent::copies`] writes into one shared block: about a
/// hundred typical events, and half of glibc's default threshold (128 KiB) above which an
/// allocation is mapped, zeroed and unmapped on its own.
const SHARED_BLOCK: usize = 64 * 1024;

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
///
/// The JSON lives in a shared allocation, so a clone costs a reference count. Copies made
/// together by [`copies`](EncodedEvent::copies) share one allocation between them.
#[derive(Clone)]
pub struct EncodedEvent {
    id: EventId,
    /// The text that holds this event's JSON: the JSON alone, or the JSON of several copies
    /// written one after another.
    text: Arc<String>,
    /// Where this event's JSON lies in `text`.
    start: usize,
    end: usize,
}

impl EncodedEvent {
    /// Serializes an event.
    pub fn encode(event: &Event) -> Result<EncodedEvent, serde_json::Error> {
        // Room for a typical event up front, so serializing does not grow the buffer step by
        // step; what is left over is given back before the text is shared.
        let mut json = Vec::with_capacity(1_024);
        serde_json::to_writer(&mut json, event)?;
        let mut json = String::from_utf8(json).map_err(serde::ser::Error::custom)?;
        // The room left over would otherwise live as long as the event.
        json.shrink_to_fit();
        Ok(EncodedEvent::whole(event.event_id, json))
    }

    /// An event whose JSON is all of `json`.
    fn whole(id: EventId, json: String) -> EncodedEvent {
        EncodedEvent {
            id,
            start: 0,
            end: json.len(),
            text: Arc::new(json),
        }
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
        EncodedEvent::copies(&[(self, id)])
            .pop()
            .unwrap_or_else(|| Err(serde::ser::Error::custom("no copy was made")))
    }

    /// Copies of events under new ids, each exactly what [`with_id`](EncodedEvent::with_id)
    /// gives, in the order asked.
    ///
    /// The copies of events in [`encode`](EncodedEvent::encode)'s layout are written one after
    /// another into shared blocks of at most 64 KiB (an event larger than that
    /// gets a block of its own): a producer that turns a batch of records into alike events
    /// makes one allocation per hundred or so events instead of one per event. A copy keeps
    /// its whole block alive while it lives, so a holder that takes events in order and lets
    /// them go in order (every buffer of this workspace) holds at most one partly used block
    /// beyond the events it holds. Blocks stay below the allocator's usual threshold for
    /// mapping memory of its own, so they come from and go back to the heap like the
    /// per-event allocations they replace.
    pub fn copies(
        requests: &[(&EncodedEvent, EventId)],
    ) -> Vec<Result<EncodedEvent, serde_json::Error>> {
        let copy_len = ID_PREFIX.len() + EventId::TEXT_LEN;
        let mut left: usize = requests
            .iter()
            .filter_map(|(event, _)| event.after_id().map(|rest| copy_len + rest.len()))
            .sum();
        let mut blocks: Vec<String> = Vec::new();
        // Where each copy lies (block, start, end), or `None` for an event in another layout.
        let mut spans: Vec<Option<(usize, usize, usize)>> = Vec::with_capacity(requests.len());
        for (event, id) in requests {
            let Some(rest) = event.after_id() else {
                spans.push(None);
                continue;
            };
            let len = copy_len + rest.len();
            let fits = blocks
                .last()
                .is_some_and(|block| block.len() + len <= SHARED_BLOCK);
            if !fits {
                blocks.push(String::with_capacity(left.min(SHARED_BLOCK).max(len)));
            }
            let index = blocks.len() - 1;
            let block = &mut blocks[index];
            let start = block.len();
            let mut id_text = [0u8; EventId::TEXT_LEN];
            block.push_str(ID_PREFIX);
            block.push_str(id.encode(&mut id_text));
            block.push_str(rest);
            spans.push(Some((index, start, block.len())));
            left -= len;
        }
        let blocks: Vec<Arc<String>> = blocks.into_iter().map(Arc::new).collect();
        requests
            .iter()
            .zip(spans)
            .map(|(&(event, id), span)| match span {
                Some((index, start, end)) => Ok(EncodedEvent {
                    id,
                    text: Arc::clone(&blocks[index]),
                    start,
                    end,
                }),
                None => {
                    let mut decoded = event.decode()?;
                    decoded.event_id = id;
                    EncodedEvent::encode(&decoded)
                }
            })
            .collect()
    }

    /// The JSON after the id's closing quote, when the JSON is in `encode`'s layout: the
    /// prefix, the id's text, its closing quote. The id in it is this event's (from `encode`,
    /// or checked by `from_stored`), so the layout is all there is to check, without
    /// formatting the old id to compare.
    fn after_id(&self) -> Option<&str> {
        let json = self.json();
        let id_end = ID_PREFIX.len() + EventId::TEXT_LEN;
        json.strip_prefix(ID_PREFIX)
            .filter(|_| json.as_bytes().get(id_end) == Some(&b'"'))
            .and_then(|_| json.get(id_end..))
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
        Ok(EncodedEvent::whole(id, json.to_owned()))
    }

    /// The event's id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event as one line of compact JSON (no newline inside).
    pub fn json(&self) -> &str {
        self.text.get(self.start..self.end).unwrap_or_default()
    }

    /// The event decoded again, for previews and tests.
    pub fn decode(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_str(self.json())
    }
}

impl PartialEq for EncodedEvent {
    fn eq(&self, other: &EncodedEvent) -> bool {
        self.id == other.id && self.json() == other.json()
    }
}

impl Eq for EncodedEvent {}

impl fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedEvent")
            .field("id", &self.id)
            .field("bytes", &self.json().len())
            .finish()
    }
}

/// Writes the HTTPS body `{"schema_version":1,"events":[…]}` around already serialized events,
/// without parsing them again.
pub fn encode_batch(events: &[EncodedEvent]) -> Vec<u8> {
    let payload: usize = events.iter().map(|event| event.json().len() + 1).sum();
    let mut body = Vec::with_capacity(payload + 40);
    body.extend_from_slice(b"{\"schema_version\":");
    body.extend_from_slice(SCHEMA_VERSION.to_string().as_bytes());
    body.extend_from_slice(b",\"events\":[");
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(event.json().as_bytes());
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
