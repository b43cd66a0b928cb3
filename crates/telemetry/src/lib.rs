//! Privacy-first, opt-in usage telemetry for SDKs: the crate SDK authors depend on.
//!
//! An SDK declares what it may collect in a catalog, turns it into typed handles with
//! [`catalog!`], describes itself in a [`TelemetryConfig`], and starts telemetry with [`init`],
//! which keeps one instance per process behind a guard that dereferences to the [`Telemetry`]
//! handle ([`TelemetryConfig::start`] starts one of its own). The handle records usage with those
//! handles (never free-form strings); a background worker turns records into events, buffers
//! them, and delivers them in batches. Nothing is collected until the user opts in,
//! `DO_NOT_TRACK` always wins, and no failure of telemetry reaches the host.
//!
//! ```
//! use std::time::Duration;
//! use telemetry::{FeatureSet, RunOutcome, RunRecord, TelemetryConfig};
//!
//! mod catalog {
//!     // In an SDK: `telemetry::catalog!("catalog.toml");`
//!     telemetry::catalog!(inline: r#"
//!         [features]
//!         retries = "Tasks configured with automatic retries"
//!     "#);
//! }
//!
//! let config = TelemetryConfig::new("mysdk", "1.2.0", catalog::CATALOG_TOML, "MYSDK")?
//!     .state_dir(std::env::temp_dir().join("mysdk-doc-example"));
//! let telemetry = telemetry::init(&config); // off unless the user opted in
//! telemetry.record_run(RunRecord {
//!     features: FeatureSet::new().with(catalog::features::RETRIES),
//!     duration: Duration::from_millis(1_500),
//!     outcome: RunOutcome::Completed,
//!     exception: None,
//! });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture Invariant: recording never blocks, never allocates for a run, and never does
//! I/O on the caller's thread: it is an atomic load when off, and a bounded `try_send` when on.
//!
//! # Feature flags
//!
//! | feature | default | what it brings |
//! |---------|---------|----------------|
//! | `https` | yes     | the HTTPS transport for `https://` endpoints (hyper, rustls with ring, webpki roots) |
//! | `sqlite` | yes    | the durable SQLite spool, the default buffer when the SDK has a state directory |
//! | `bundled-sqlite` | yes | `sqlite` with SQLite compiled in, for systems without libsqlite3 |
//! | `cli`   | no      | [`cli::TelemetryCommand`], the management commands as a clap subcommand (requires `clap`) |
//! | `prompt` | no     | nothing: the consent prompt, `TelemetryConfig::prompt_if_needed`, is always available; the feature is kept so that manifests naming it still build |
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

mod catalog;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod consent_watch;
mod erasure;
mod global;
mod handle;
mod preview;
mod prompt;
mod queue;
mod record;
mod status;
mod template;
mod usage;
mod worker;

#[doc(hidden)]
pub use catalog::__private;
pub use config::{
    DEFAULT_QUEUE_CAPACITY, DEFAULT_SESSION_MAX_AGE, DEFAULT_SHUTDOWN_TIMEOUT, ManageError,
    SetupError, TelemetryConfig, WarningSink,
};
pub use global::{TelemetryGuard, current, init};
pub use handle::Telemetry;
pub use preview::Preview;
pub use prompt::PromptOutcome;
pub use record::RunRecord;
pub use status::Status;
#[doc(inline)]
pub use telemetry_buffer::{Buffer, MemoryBuffer};
#[doc(inline)]
pub use telemetry_model::{
    BlockType, Catalog, CatalogError, CatalogId, CommandName, ConfigErrorKind, CountBucket,
    DeploymentStage, DurationBucket, EncodedEvent, Event, EventType, ExceptionType, Feature,
    FeatureSet, HourTimestamp, Integration, Interface, Metric, Name, RunOutcome, Section,
    UnknownName,
};
#[doc(inline)]
pub use telemetry_policy::{
    AuditChange, AuditEntry, AuditSource, DecisionReason, Endpoint, EnvSnapshot,
};
#[doc(inline)]
pub use telemetry_transport::{FileTransport, NullTransport, Transport};
pub use worker::{FlushError, FlushReport, PauseReason};

/// The crates behind the facade, for SDKs that implement their own buffer or transport.
pub mod internals {
    #[doc(inline)]
    pub use telemetry_buffer as buffer;
    #[doc(inline)]
    pub use telemetry_model as model;
    #[doc(inline)]
    pub use telemetry_policy as policy;
    #[doc(inline)]
    pub use telemetry_transport as transport;

    /// The most queued records the worker turns into events before it hands them to the
    /// buffer: besides a full buffer, at most this many events exist at once.
    pub const DRAIN_CHUNK: usize = crate::worker::MAX_DRAIN;

    /// The most shards the record queue is split into (one per processor): one recording
    /// thread alone can fill only its shard, as little as this fraction of the queue.
    pub const MAX_QUEUE_SHARDS: usize = crate::queue::MAX_SHARDS;
}

/// The version of this library, as reported in every event.
pub(crate) fn library_version() -> telemetry_model::Version {
    telemetry_model::Version::new(env!("CARGO_PKG_VERSION"))
        .unwrap_or_else(|_| unreachable!("the crate version is a valid version"))
}
