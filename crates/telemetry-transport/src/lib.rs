//! Transports that deliver serialized telemetry events, behind one async [`Transport`] trait.
//!
//! - `HttpsTransport` (feature `https`): each batch is one `POST` of
//!   `{"schema_version":1,"events":[…]}` to an `https://` endpoint over HTTP/1.1, with
//!   certificate verification by rustls against the public web roots plus an optional extra CA,
//!   gzip for larger bodies, timeouts, and `Retry-After` honoured. Plain HTTP is refused.
//! - [`FileTransport`]: offline export, one JSON event per line in
//!   `<dir>/<sdk>-telemetry-YYYY-MM-DD.jsonl`, appended (air-gapped networks, audits, demos).
//! - [`NullTransport`]: accepts and discards (benchmarks, and SDKs that only want `preview`).
//!
//! Helpers for the sender: [`Backoff`] (exponential, full jitter) spaces the retries of a
//! batch, and [`CircuitBreaker`] stops sending to a destination that keeps failing.
//!
//! A transport moves bytes: it never sees a consent decision and never builds or changes an
//! event. Errors ([`SendError`]) never contain event contents, so they are safe to log.
//!
//! Most SDK authors depend on the `telemetry` facade instead, which picks a transport from the
//! endpoint setting.
//!
//! # Feature flags
//!
//! | feature | default | what it brings | what it requires |
//! |---|---|---|---|
//! | `https` | off | `HttpsTransport`, `HttpsConfig`, `HttpsConfigError`, `ExtraCa` | hyper, hyper-util, hyper-rustls, rustls (ring), webpki-roots, tokio (time), flate2, httpdate |
//!
//! The file and null transports, [`Backoff`] and [`CircuitBreaker`] need no feature.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

mod backoff;
mod circuit;
mod file;
#[cfg(feature = "https")]
mod https;
mod null;

use std::fmt;
use std::time::Duration;

pub use backoff::Backoff;
pub use circuit::{CircuitBreaker, CircuitState};
pub use file::FileTransport;
#[cfg(feature = "https")]
pub use https::{ExtraCa, HttpsConfig, HttpsConfigError, HttpsTransport};
pub use null::NullTransport;
use telemetry_model::EncodedEvent;

/// Why a batch was not delivered, and what the sender should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Keep the events and try again later, not before `retry_after` when it is given.
    #[error("delivery failed, will retry: {message}")]
    Retryable {
        /// What went wrong, without event contents.
        message: String,
        /// The earliest time to try again that the destination asked for.
        retry_after: Option<Duration>,
    },
    /// The batch is too large for the destination: split it and send the halves.
    #[error("the batch is too large for the destination")]
    TooLarge,
    /// The destination refused the batch for good: drop it and count it.
    #[error("the destination rejected the batch: {message}")]
    Rejected {
        /// What the destination said, without event contents.
        message: String,
    },
}

/// Delivers batches of serialized events somewhere.
///
/// Rules for implementations:
/// - `send` is called by one sender at a time (the telemetry worker); it must not assume it is
///   never called concurrently from other processes that share a destination.
/// - `send` returns only after the batch is handed over (written to the destination, where it
///   outlives the process, or acknowledged by a server); `Ok` means the sender may forget the
///   events. A destination on a local disk need not sync: the events come from a spool that
///   does not sync each commit either (see [`FileTransport`]).
/// - `send` must not block indefinitely: network transports enforce their own timeouts, and the
///   caller additionally races every call against its own deadline.
/// - Errors never contain event contents, so they are safe to log.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    /// A short name for `status`: `file`, `https` or `null`.
    fn kind(&self) -> &'static str;

    /// Where events go, for `status` and messages, such as `file:///var/lib/export`.
    fn destination(&self) -> String;

    /// Delivers one batch, oldest event first.
    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError>;

    /// Whether several batches may go in one `send`, as one larger batch. A destination that
    /// takes requests has limits of its own, which the batch size setting is there to respect,
    /// so the default is no; a local file has none, and appending several batches in one
    /// write costs one open, lock and write instead of one per batch.
    fn takes_merged_batches(&self) -> bool {
        false
    }
}
