//! What the collector accepts: the body's encoding and size, the batch's shape, and each event
//! against its SDK's catalog and the time window.
//!
//! A body that is not a batch is refused whole (400, 413 or 415); a batch is checked event by
//! event, so one bad event never costs the good ones beside it. Refused events are counted by
//! reason and dropped here: nothing of them is stored or logged.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use serde::Deserialize;
use serde_json::value::RawValue;
use telemetry_model::{
    Catalog, CatalogError, Event, EventType, HourTimestamp, Name, SCHEMA_VERSION,
};

/// Why an event was refused. Each reason is counted; the events themselves are never kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// Not an event of the schema: a missing, mistyped or unknown field, or a value of the
    /// wrong shape.
    Schema,
    /// The event names an SDK this collector has no catalog for.
    UnknownSdk,
    /// A feature, metric, command or other name that the SDK's catalog does not declare.
    UndeclaredName,
    /// Fields that do not belong to the event's type (an outcome on a summary, usage data on a
    /// deletion request).
    Inconsistent,
    /// A timestamp more than an hour ahead of the collector's clock.
    Future,
    /// A timestamp older than the retention period.
    TooOld,
    /// An event of a session that asked to be erased.
    Erased,
}

impl Refusal {
    /// Every reason, in the order reports list them.
    pub const ALL: [Refusal; 7] = [
        Refusal::Schema,
        Refusal::UnknownSdk,
        Refusal::UndeclaredName,
        Refusal::Inconsistent,
        Refusal::Future,
        Refusal::TooOld,
        Refusal::Erased,
    ];

    /// The reason's name in reports and metrics.
    pub fn key(self) -> &'static str {
        match self {
            Refusal::Schema => "schema",
            Refusal::UnknownSdk => "unknown_sdk",
            Refusal::UndeclaredName => "undeclared_name",
            Refusal::Inconsistent => "inconsistent",
            Refusal::Future => "future",
            Refusal::TooOld => "too_old",
            Refusal::Erased => "erased",
        }
    }

    /// The reason named by `key`, if any.
    pub fn from_key(key: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|reason| reason.key() == key)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Refused events counted by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefusalCounts(BTreeMap<Refusal, u64>);

impl RefusalCounts {
    /// Counts one more event refused for `reason`.
    pub fn add(&mut self, reason: Refusal, count: u64) {
        if count > 0 {
            *self.0.entry(reason).or_default() += count;
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &RefusalCounts) {
        for (&reason, &count) in &other.0 {
            self.add(reason, count);
        }
    }

    /// How many events were refused, for every reason together.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The count for one reason.
    pub fn get(&self, reason: Refusal) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }

    /// The reasons with a count above zero.
    pub fn iter(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        self.0.iter().map(|(&reason, &count)| (reason, count))
    }
}

/// The catalog of each SDK the collector accepts events from.
#[derive(Clone, Debug, Default)]
pub struct Catalogs(BTreeMap<String, Catalog>);

/// A `--catalog SDK=PATH` that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogsError {
    /// The argument is not `SDK=PATH`.
    #[error("--catalog {0:?}: expected SDK=PATH, such as flowkit=crates/flowkit/catalog.toml")]
    Syntax(String),
    /// The SDK name is not a valid name.
    #[error("--catalog {sdk:?}: the SDK name is not valid: {source}")]
    BadSdk {
        /// The name given.
        sdk: String,
        /// What is wrong with it.
        source: telemetry_model::InvalidIdentifier,
    },
    /// The same SDK was given twice.
    #[error("--catalog: the SDK {0} is given twice; give one catalog per SDK")]
    Duplicate(String),
    /// The file could not be read.
    #[error("--catalog {sdk}: cannot read {path}: {source}")]
    Read {
        /// The SDK.
        sdk: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid catalog.
    #[error("--catalog {sdk}: {path}: {source}")]
    Invalid {
        /// The SDK.
        sdk: String,
        /// The file.
        path: String,
        /// Why.
        source: CatalogError,
    },
}

impl Catalogs {
    /// Adds the catalog of one SDK.
    pub fn insert(&mut self, sdk: &Name, catalog: Catalog) -> Result<(), CatalogsError> {
        if self.0.contains_key(sdk.as_str()) {
            return Err(CatalogsError::Duplicate(sdk.as_str().to_owned()));
        }
        self.0.insert(sdk.as_str().to_owned(), catalog);
        Ok(())
    }

    /// Reads and adds the catalog given as `SDK=PATH`.
    pub fn load(&mut self, spec: &str) -> Result<(), CatalogsError> {
        let (sdk, path) = spec
            .split_once('=')
            .filter(|(sdk, path)| !sdk.is_empty() && !path.is_empty())
            .ok_or_else(|| CatalogsError::Syntax(spec.to_owned()))?;
        let name = Name::new(sdk).map_err(|source| CatalogsError::BadSdk {
            sdk: sdk.to_owned(),
            source,
        })?;
        let shown = Path::new(path).display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogsError::Read {
            sdk: sdk.to_owned(),
            path: shown.clone(),
            source,
        })?;
        let catalog = Catalog::from_toml(&text).map_err(|source| CatalogsError::Invalid {
            sdk: sdk.to_owned(),
            path: shown,
            source,
        })?;
        self.insert(&name, catalog)
    }

    /// The catalog of `sdk`, if the collector accepts it.
    pub fn get(&self, sdk: &str) -> Option<&Catalog> {
        self.0.get(sdk)
    }

    /// Every SDK with its catalog.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Catalog)> {
        self.0.iter().map(|(sdk, catalog)| (sdk.as_str(), catalog))
    }

    /// Whether no SDK is accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How much the collector reads of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body, as sent (compressed or not), in bytes.
    pub max_body_bytes: usize,
    /// The largest body after decompression, in bytes: a gzip bomb stops here.
    pub max_inflated_bytes: usize,
    /// The most events in one batch.
    pub max_events: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 << 20,
            max_inflated_bytes: 16 << 20,
            max_events: 10_000,
        }
    }
}

/// Why a body was refused as a whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// The body, as sent or once inflated, is over the limit.
    #[error("the body is larger than {limit} bytes{}", if *.inflated { " once decompressed" } else { "" })]
    TooLarge {
        /// The limit that was hit.
        limit: usize,
        /// Whether it was hit while decompressing.
        inflated: bool,
    },
    /// A `content-encoding` other than identity or gzip.
    #[error("unsupported content-encoding {0:?}: send identity or gzip")]
    UnsupportedEncoding(String),
    /// The gzip stream is broken.
    #[error("the gzip body cannot be decompressed")]
    BadGzip,
    /// The body is not a batch.
    #[error("the body is not a telemetry batch: {0}")]
    NotABatch(String),
    /// A schema version this collector does not read.
    #[error("unsupported schema_version {0}: this collector reads {SCHEMA_VERSION}")]
    UnsupportedSchema(u32),
    /// More events than allowed in one batch.
    #[error("the batch has {count} events; at most {limit} are accepted in one batch")]
    TooManyEvents {
        /// How many it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl BodyError {
    /// The HTTP status this refusal answers with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge { .. } | BodyError::TooManyEvents { .. } => 413,
            BodyError::UnsupportedEncoding(_) => 415,
            BodyError::BadGzip | BodyError::NotABatch(_) | BodyError::UnsupportedSchema(_) => 400,
        }
    }
}

/// Decodes a request body by its `content-encoding`, inflating gzip up to the limit.
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limits: &Limits,
) -> Result<std::borrow::Cow<'a, [u8]>, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            limit: limits.max_body_bytes,
            inflated: false,
        });
    }
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(std::borrow::Cow::Borrowed(body)),
        Some(encoding) if encoding.eq_ignore_ascii_case("gzip") => {
            let mut inflated = Vec::with_capacity(body.len().saturating_mul(4).min(1 << 20));
            let cap = u64::try_from(limits.max_inflated_bytes).unwrap_or(u64::MAX);
            GzDecoder::new(body)
                .take(cap.saturating_add(1))
                .read_to_end(&mut inflated)
                .map_err(|_| BodyError::BadGzip)?;
            if inflated.len() > limits.max_inflated_bytes {
                return Err(BodyError::TooLarge {
                    limit: limits.max_inflated_bytes,
                    inflated: true,
                });
            }
            Ok(std::borrow::Cow::Owned(inflated))
        }
        Some(other) => Err(BodyError::UnsupportedEncoding(shorten(other))),
    }
}

/// The events of a batch that passed every check, and the count of those that did not.
#[derive(Debug, Default)]
pub struct Checked {
    /// Events to store (`deletion_request`s among them).
    pub events: Vec<Event>,
    /// Events refused, by reason.
    pub refused: RefusalCounts,
}

/// The time window events must fall in.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// The oldest hour accepted.
    pub oldest: HourTimestamp,
    /// The newest hour accepted: the current hour plus one hour of clock skew.
    pub newest: HourTimestamp,
}

impl Window {
    /// The window at `now` for a retention of `retention`.
    pub fn at(now: SystemTime, retention: Duration) -> Window {
        let now = HourTimestamp::from_system_time(now);
        let oldest = now.unix_seconds().saturating_sub(retention.as_secs());
        // A timestamp is the start of its hour: keep the hour that the retention's edge falls in.
        Window {
            oldest: HourTimestamp::from_unix_seconds(oldest),
            newest: HourTimestamp::from_unix_seconds(now.unix_seconds() + 3_600),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    schema_version: u32,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// Parses a decoded body as a batch and checks each event.
pub fn check_batch(
    json: &[u8],
    catalogs: &Catalogs,
    window: Window,
    limits: &Limits,
) -> Result<Checked, BodyError> {
    let text = std::str::from_utf8(json)
        .map_err(|_| BodyError::NotABatch("the body is not UTF-8".to_owned()))?;
    let batch: RawBatch<'_> = serde_json::from_str(text).map_err(|error| {
        // serde_json's messages name the position and the expected shape, never a value.
        BodyError::NotABatch(error.to_string())
    })?;
    if batch.schema_version != SCHEMA_VERSION {
        return Err(BodyError::UnsupportedSchema(batch.schema_version));
    }
    if batch.events.len() > limits.max_events {
        return Err(BodyError::TooManyEvents {
            count: batch.events.len(),
            limit: limits.max_events,
        });
    }
    let mut checked = Checked {
        events: Vec::with_capacity(batch.events.len()),
        refused: RefusalCounts::default(),
    };
    for raw in batch.events {
        match serde_json::from_str::<Event>(raw.get()) {
            Err(_) => checked.refused.add(Refusal::Schema, 1),
            Ok(event) => match check_event(&event, catalogs, window) {
                Ok(()) => checked.events.push(event),
                Err(reason) => checked.refused.add(reason, 1),
            },
        }
    }
    Ok(checked)
}

/// Checks one well-formed event against its SDK's catalog, its type and the time window.
pub fn check_event(event: &Event, catalogs: &Catalogs, window: Window) -> Result<(), Refusal> {
    let catalog = catalogs
        .get(event.sdk_name.as_str())
        .ok_or(Refusal::UnknownSdk)?;
    if event.timestamp > window.newest {
        return Err(Refusal::Future);
    }
    if event.timestamp < window.oldest {
        return Err(Refusal::TooOld);
    }
    check_shape(event)?;
    check_names(event, catalog)
}

fn check_shape(event: &Event) -> Result<(), Refusal> {
    let consistent = match event.event_type {
        EventType::Run => event.outcome.is_some() && event.concurrency_peak.is_none(),
        EventType::SdkUsage => event.outcome.is_none(),
        EventType::DeletionRequest => {
            event.outcome.is_none()
                && event.concurrency_peak.is_none()
                && event.integrations.is_empty()
                && event.features.is_empty()
                && event.block_types.is_empty()
                && event.commands.is_empty()
                && event.metrics.is_empty()
                && event.errors.is_empty()
        }
    };
    if consistent {
        Ok(())
    } else {
        Err(Refusal::Inconsistent)
    }
}

fn check_names(event: &Event, catalog: &Catalog) -> Result<(), Refusal> {
    let declared = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(Refusal::UndeclaredName)
        }
    };
    let allowlisted_integration =
        |name: &Name| name.as_str() == "other" || catalog.integration(name.as_str()).is_ok();
    for name in &event.features {
        declared(catalog.feature(name.as_str()).is_ok())?;
    }
    for name in &event.block_types {
        declared(catalog.block_type(name.as_str()).is_ok())?;
    }
    for name in &event.commands {
        declared(catalog.command(name.as_str()).is_ok())?;
    }
    for name in event.metrics.keys() {
        declared(catalog.metric(name.as_str()).is_ok())?;
    }
    for name in &event.errors.config_errors {
        declared(catalog.config_error(name.as_str()).is_ok())?;
    }
    for name in event
        .integrations
        .iter()
        .chain(&event.errors.integration_import_failures)
    {
        declared(allowlisted_integration(name))?;
    }
    for name in event.errors.exception_types.keys() {
        declared(name.as_str() == "other" || catalog.exception_type(name.as_str()).is_ok())?;
    }
    Ok(())
}

/// A value shown in a message: at most 40 characters, escaped.
fn shorten(value: &str) -> String {
    let short: String = value.chars().take(40).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use telemetry_model::{CountBucket, RunOutcome};
    use telemetry_testkit::fixtures::run_event;

    use super::*;

    const CATALOG: &str = r#"
        [features]
        retries = "Tasks with retries"
        caching = "Cached tasks"
        [metrics]
        task_runs = "Task runs"
        [exception_types]
        timeout_error = "A timeout"
        [integrations]
        aws = "AWS"
        [config_errors]
        invalid_parameter = "A bad parameter"
        [commands]
        demo = "The demo"
        [block_types]
        secret = "A secret"
    "#;

    fn catalogs() -> Catalogs {
        let mut catalogs = Catalogs::default();
        catalogs
            .insert(
                &Name::new("flowkit").unwrap(),
                Catalog::from_toml(CATALOG).unwrap(),
            )
            .unwrap();
        catalogs
    }

    fn name(text: &str) -> Name {
        Name::new(text).unwrap()
    }

    fn now_window() -> Window {
        Window::at(SystemTime::now(), Duration::from_secs(90 * 86_400))
    }

    fn fresh() -> Event {
        let mut event = run_event();
        event.timestamp = HourTimestamp::now();
        event
    }

    fn check(event: &Event) -> Result<(), Refusal> {
        check_event(event, &catalogs(), now_window())
    }

    #[test]
    fn a_declared_event_of_the_current_hour_passes() {
        let mut event = fresh();
        event.features.insert(name("caching"));
        event
            .metrics
            .insert(name("task_runs"), CountBucket::from_count(3));
        event.integrations.insert(name("aws"));
        event.integrations.insert(name("other"));
        event
            .errors
            .exception_types
            .insert(name("timeout_error"), CountBucket::from_count(1));
        event
            .errors
            .exception_types
            .insert(name("other"), CountBucket::from_count(1));
        event.errors.config_errors.insert(name("invalid_parameter"));
        event.commands.insert(name("demo"));
        event.block_types.insert(name("secret"));
        assert_eq!(check(&event), Ok(()));
    }

    #[test]
    fn every_name_must_be_declared_in_its_section() {
        let cases: [fn(&mut Event); 8] = [
            |e| {
                e.features.insert(name("undeclared"));
            },
            |e| {
                e.features.insert(name("demo"));
            }, // declared, but as a command
            |e| {
                e.metrics
                    .insert(name("retries"), CountBucket::from_count(1));
            },
            |e| {
                e.integrations.insert(name("gcp"));
            },
            |e| {
                e.errors.integration_import_failures.insert(name("gcp"));
            },
            |e| {
                e.errors
                    .exception_types
                    .insert(name("value_error"), CountBucket::from_count(1));
            },
            |e| {
                e.errors.config_errors.insert(name("other"));
            },
            |e| {
                e.commands.insert(name("simulate"));
            },
        ];
        for (index, change) in cases.into_iter().enumerate() {
            let mut event = fresh();
            change(&mut event);
            assert_eq!(check(&event), Err(Refusal::UndeclaredName), "case {index}");
        }
    }

    #[test]
    fn an_sdk_without_a_catalog_is_refused() {
        let mut event = fresh();
        event.sdk_name = name("acme_jobs");
        assert_eq!(check(&event), Err(Refusal::UnknownSdk));
    }

    #[test]
    fn timestamps_must_fall_between_the_retention_and_one_hour_ahead() {
        let now = HourTimestamp::now().unix_seconds();
        let at = |seconds: u64| {
            let mut event = fresh();
            event.timestamp = HourTimestamp::from_unix_seconds(seconds);
            check(&event)
        };
        assert_eq!(at(now + 3_600), Ok(()), "one hour of clock skew is allowed");
        assert_eq!(at(now + 7_200), Err(Refusal::Future));
        assert_eq!(at(now - 89 * 86_400), Ok(()));
        assert_eq!(at(now - 90 * 86_400), Ok(()), "the edge hour is kept");
        assert_eq!(at(now - 90 * 86_400 - 3_600), Err(Refusal::TooOld));
    }

    #[test]
    fn fields_must_match_the_event_type() {
        let mut summary = fresh();
        summary.event_type = EventType::SdkUsage;
        assert_eq!(
            check(&summary),
            Err(Refusal::Inconsistent),
            "a summary has no outcome"
        );
        summary.outcome = None;
        assert_eq!(check(&summary), Ok(()));

        let mut run = fresh();
        run.outcome = None;
        assert_eq!(
            check(&run),
            Err(Refusal::Inconsistent),
            "a run has an outcome"
        );
        run.outcome = Some(RunOutcome::Failed);
        run.concurrency_peak = Some(CountBucket::from_count(2));
        assert_eq!(check(&run), Err(Refusal::Inconsistent));

        let mut deletion = fresh();
        deletion.event_type = EventType::DeletionRequest;
        deletion.outcome = None;
        assert_eq!(
            check(&deletion),
            Err(Refusal::Inconsistent),
            "usage data on a deletion request"
        );
        deletion.features.clear();
        assert_eq!(check(&deletion), Ok(()));
    }

    fn batch(events: &[serde_json::Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "schema_version": 1, "events": events })).unwrap()
    }

    #[test]
    fn one_bad_event_costs_only_itself() {
        let good = serde_json::to_value(fresh()).unwrap();
        let mut unknown_field = good.clone();
        unknown_field["hostname"] = "build-7.corp.example".into();
        let mut free_text = good.clone();
        free_text["features"] = serde_json::json!(["Customer Sync for ACME"]);
        let mut minutes = good.clone();
        minutes["timestamp"] = "2026-11-30T10:17:00Z".into();
        let mut bad_id = good.clone();
        bad_id["event_id"] = "not-a-uuid".into();
        let mut second = serde_json::to_value(fresh()).unwrap();
        second["sdk_name"] = "acme".into();
        let body = batch(&[good, unknown_field, free_text, minutes, bad_id, second]);
        let checked = check_batch(&body, &catalogs(), now_window(), &Limits::default()).unwrap();
        assert_eq!(checked.events.len(), 1);
        assert_eq!(checked.refused.get(Refusal::Schema), 4);
        assert_eq!(checked.refused.get(Refusal::UnknownSdk), 1);
        assert_eq!(checked.refused.total(), 5);
    }

    #[test]
    fn a_body_that_is_not_a_batch_is_refused_whole() {
        let limits = Limits::default();
        let check = |body: &[u8]| check_batch(body, &catalogs(), now_window(), &limits).map(|_| ());
        assert!(matches!(check(b"not json"), Err(BodyError::NotABatch(_))));
        assert!(matches!(check(b"[]"), Err(BodyError::NotABatch(_))));
        assert!(matches!(check(&[0xff, 0xfe]), Err(BodyError::NotABatch(_))));
        assert!(matches!(
            check(br#"{"schema_version":1,"events":[],"extra":1}"#),
            Err(BodyError::NotABatch(_))
        ));
        assert_eq!(
            check(br#"{"schema_version":2,"events":[]}"#),
            Err(BodyError::UnsupportedSchema(2))
        );
        let small = Limits {
            max_events: 2,
            ..Limits::default()
        };
        let three = batch(&[
            serde_json::Value::Null,
            serde_json::Value::Null,
            serde_json::Value::Null,
        ]);
        assert_eq!(
            check_batch(&three, &catalogs(), now_window(), &small).map(|_| ()),
            Err(BodyError::TooManyEvents { count: 3, limit: 2 })
        );
        for error in [
            BodyError::NotABatch(String::new()),
            BodyError::UnsupportedSchema(2),
        ] {
            assert_eq!(error.status(), 400);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_is_inflated_up_to_the_cap_and_a_bomb_is_refused() {
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_inflated_bytes: 64 << 10,
            max_events: 10,
        };
        let body = batch(&[]);
        let compressed = gzip(&body);
        assert_eq!(
            &*decode_body(Some("gzip"), &compressed, &limits).unwrap(),
            &body[..]
        );
        assert_eq!(
            &*decode_body(Some("GZIP"), &compressed, &limits).unwrap(),
            &body[..]
        );
        assert_eq!(&*decode_body(None, &body, &limits).unwrap(), &body[..]);
        assert_eq!(
            &*decode_body(Some("identity"), &body, &limits).unwrap(),
            &body[..]
        );

        // 64 MiB of zeros compress to about 64 KiB: refused after inflating at most the cap.
        let bomb = gzip(&vec![0_u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let error = decode_body(Some("gzip"), &bomb, &limits).unwrap_err();
        assert_eq!(
            error,
            BodyError::TooLarge {
                limit: 64 << 10,
                inflated: true
            }
        );
        assert_eq!(error.status(), 413);
        assert_eq!(
            decode_body(Some("gzip"), b"not gzip", &limits),
            Err(BodyError::BadGzip)
        );
        let error = decode_body(Some("br"), &body, &limits).unwrap_err();
        assert_eq!(error.status(), 415);
        assert!(error.to_string().contains("identity or gzip"), "{error}");
        let large = vec![b' '; (1 << 20) + 1];
        assert_eq!(
            decode_body(None, &large, &limits).unwrap_err().status(),
            413
        );
    }

    #[test]
    fn catalog_arguments_are_checked() {
        let mut catalogs = Catalogs::default();
        let error = catalogs.load("flowkit").unwrap_err();
        assert!(error.to_string().contains("expected SDK=PATH"), "{error}");
        let error = catalogs.load("Flow Kit=/dev/null").unwrap_err();
        assert!(matches!(error, CatalogsError::BadSdk { .. }), "{error}");
        let error = catalogs
            .load("flowkit=/nonexistent/catalog.toml")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot read /nonexistent/catalog.toml"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[features]\nBad-Name = \"x\"\n").unwrap();
        let error = catalogs
            .load(&format!("flowkit={}", bad.display()))
            .unwrap_err();
        assert!(matches!(error, CatalogsError::Invalid { .. }), "{error}");
        let good = dir.path().join("good.toml");
        std::fs::write(&good, CATALOG).unwrap();
        catalogs
            .load(&format!("flowkit={}", good.display()))
            .unwrap();
        let error = catalogs
            .load(&format!("flowkit={}", good.display()))
            .unwrap_err();
        assert!(matches!(error, CatalogsError::Duplicate(_)), "{error}");
    }
}
