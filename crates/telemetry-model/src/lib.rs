//! The data model of privacy-first SDK telemetry: what an event is and what it may contain.
//!
//! This crate defines the closed set of types an event is built from: [`HourTimestamp`]
//! (UTC truncated to the hour), [`DurationBucket`] and [`CountBucket`], [`Name`]s that must be
//! declared in the SDK's [`Catalog`], the [`Event`] itself, and the wire batch with its JSON
//! Schema ([`wire::event_schema`]). It does no I/O and has no async code.
//!
//! Most SDK authors depend on the `telemetry` facade instead, which re-exports what they need.
//!
//! Architecture Invariant: no field of [`Event`] can hold free text. Names are checked against
//! the [`Name`] shape when built or parsed, durations and counts are buckets, and timestamps
//! cannot carry minutes or seconds.
//!
//! # Feature flags
//!
//! None.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

mod bucket;
pub mod catalog;
mod endpoint;
mod event;
mod name;
pub mod redact;
mod stored;
mod time;
pub mod wire;

pub use bucket::{CountBucket, DurationBucket};
pub use catalog::{
    BlockType, Catalog, CatalogEntry, CatalogError, CatalogId, CommandName, ConfigErrorKind,
    ExceptionType, Feature, FeatureSet, Integration, Metric, Section, UnknownName,
};
pub use endpoint::{Endpoint, EndpointError};
pub use event::{
    Arch, DeploymentStage, ErrorSummary, Event, EventId, EventType, Interface, InvalidId, OsFamily,
    RunOutcome, SessionId,
};
pub use name::{InvalidIdentifier, MAX_NAME_LEN, MAX_VERSION_LEN, Name, Version};
pub use time::{HourTimestamp, ParseDateError, ParseHourTimestampError, UtcDate};
pub use wire::{EncodedEvent, SCHEMA_VERSION, WireBatch};
