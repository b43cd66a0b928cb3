//! Transports that deliver serialized telemetry events, behind one async [`Transport`] trait.
//!
//! - [`FileTransport`]: offline export, one JSON event per line in
//!   `<dir>/<sdk>-telemetry-YYYY-MM-DD.jsonl`, appended (air-gapped networks, audits, demos).
//! - [`NullTransport`]: accepts and discards (benchmarks, and SDKs that only want `preview`).
//!
//! The HTTPS transport (feature `https`) will live here too. A transport moves bytes: it never
//! sees a consent decision and never builds or changes an event.
//!
//! Most SDK authors depend on the `telemetry` facade instead, which picks a transport from the
//! endpoint setting.
//!
//! # Feature flags
//!
//! None yet.
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.85) and newer.

mod backoff;
mod file;
mod null;

use std::fmt;
use std::time::Duration;

pub use backoff::Backoff;
pub use file::FileTransport;
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

/// Why a flush of the transport's own buffers failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flushing the transport failed: {0}")]
pub struct FlushError(pub String);

/// Delivers batches of serialized events somewhere.
///
/// Rules for implementations:
/// - `send` is called by one sender at a time (the telemetry worker); it must not assume it is
///   never called concurrently from other processes that share a destination.
/// - `send` returns only after the batch is durably handed over (written and synced, or
///   acknowledged by a server); `Ok` means the sender may forget the events.
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

    /// Pushes out anything the transport itself still holds. Most transports hold nothing.
    async fn flush(&self) -> Result<(), FlushError> {
        Ok(())
    }
}
