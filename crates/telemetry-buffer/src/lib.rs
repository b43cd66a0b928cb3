//! Buffers that hold serialized telemetry events until a transport has delivered them.
//!
//! The [`Buffer`] trait is the extension point; [`MemoryBuffer`] is a bounded in-memory
//! implementation, and `SqliteSpool` (feature `sqlite`) a durable one in a SQLite file that
//! several processes can share. Delivery works by *claim and acknowledge*: the sender claims
//! a batch, tries to deliver it, then acknowledges it (the events are gone) or releases it
//! (the events are pending again, ahead of newer ones). A buffer never decides anything about
//! consent; it stores and hands back bytes.
//!
//! Most SDK authors depend on the `telemetry` facade instead, which picks and wires a buffer.
//!
//! # Feature flags
//!
//! | feature | default | what it brings | requires |
//! |---|---|---|---|
//! | `sqlite` | no | `SqliteSpool`, the durable spool | a system libsqlite3, 3.34.1 or newer |
//! | `bundled-sqlite` | no | `sqlite`, with SQLite compiled in from source | a C compiler |
//!
//! # Supported Rust versions
//!
//! The workspace's `rust-version` (1.89) and newer.

mod ledger;
mod memory;
#[cfg(all(feature = "sqlite", unix))]
mod overflow;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::fmt;

pub use ledger::{DeliveryLedger, from_unix_millis, later, to_unix_millis};
pub use memory::{DEFAULT_MEMORY_CAPACITY, MemoryBuffer};
#[cfg(feature = "sqlite")]
pub use sqlite::{
    BUSY_TIMEOUT, DEFAULT_CLAIM_LEASE, Recovery, SCHEMA_VERSION, SPOOL_FILE_NAME, SpoolError,
    SpoolLimits, SqliteSpool,
};
use telemetry_model::EncodedEvent;

/// Identifies one claimed batch until it is acknowledged or released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimId(pub u64);

/// A batch of events claimed for delivery.
#[derive(Debug)]
pub struct Claim {
    /// Pass this to [`Buffer::acknowledge`] or [`Buffer::release`].
    pub id: ClaimId,
    /// The events, oldest first.
    pub events: Vec<EncodedEvent>,
}

/// What a buffer holds, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Events waiting for delivery, claimed or not.
    pub pending: usize,
    /// Events dropped because the buffer was full: since it was opened for an in-memory
    /// buffer, since the file was created for a durable one.
    pub dropped_full: u64,
    /// Events dropped because they were older than the buffer keeps them (durable buffers).
    pub dropped_age: u64,
    /// Events dropped because what storage gave back was not a valid event (durable buffers).
    pub dropped_invalid: u64,
}

impl BufferStats {
    /// Every event dropped, for whatever reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_full
            .saturating_add(self.dropped_age)
            .saturating_add(self.dropped_invalid)
    }
}

/// Why a buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The claim does not exist (already acknowledged or released, or from another buffer).
    #[error("unknown claim {0:?}")]
    UnknownClaim(ClaimId),
    /// The storage behind the buffer failed.
    #[error("buffer storage failed: {0}")]
    Storage(String),
}

/// Holds serialized events between recording and delivery.
///
/// Rules for implementations:
/// - Bounded: when full, [`append`](Buffer::append) drops the *oldest* unclaimed events, counts
///   them in [`BufferStats::dropped_full`], and never fails because of it.
/// - Claimed events are not handed out again until released; a released batch goes back in
///   front of newer events, in its original order.
/// - Called from the telemetry worker thread and from management commands, never from the
///   thread that records an event; methods may block on local disk I/O but never on the network.
/// - Shared by reference between threads (`Send + Sync`); every method takes `&self`.
pub trait Buffer: Send + Sync + fmt::Debug {
    /// A short name for `status`, such as `memory` or `sqlite`.
    fn kind(&self) -> &'static str;

    /// Adds events, dropping the oldest unclaimed ones if the buffer would overflow.
    fn append(&self, events: Vec<EncodedEvent>) -> Result<(), BufferError>;

    /// Claims up to `max_events` of the oldest unclaimed events; `None` when there are none.
    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError>;

    /// The claimed events were delivered (or deliberately dropped): forget them.
    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError>;

    /// The claimed events were not delivered: make them pending again.
    fn release(&self, claim: ClaimId) -> Result<(), BufferError>;

    /// Counts of what the buffer holds.
    fn stats(&self) -> Result<BufferStats, BufferError>;

    /// Deletes every pending event, claimed or not (the user disabled telemetry), and adds
    /// their number to [`DeliveryLedger::purged`]. Returns how many were deleted.
    fn purge(&self) -> Result<usize, BufferError>;

    /// The delivery ledger: counters and the delivery state a destination imposed.
    ///
    /// Must answer while another process holds the buffer's write lock (a durable buffer reads
    /// a consistent snapshot without it), so that `status` never waits on a busy writer.
    fn ledger(&self) -> Result<DeliveryLedger, BufferError>;

    /// Whether the ledger may hold a delivery pause in effect ([`DeliveryLedger::not_before`],
    /// [`DeliveryLedger::circuit_open_until`]): `false` only when it certainly does not, so that
    /// a sender about to make a request can skip reading the ledger. Answers at once, without
    /// the buffer's lock or a trip to its storage; the default always says `true`.
    fn may_be_paused(&self) -> bool {
        true
    }

    /// Whether every method answers at once: the buffer lives in this process's memory and
    /// never waits for a disk, a file lock or another process. A caller that must not block
    /// (an async runtime's thread) may then call it directly rather than hand each call to a
    /// thread of its own, which costs more than the call. The default says `false`.
    fn never_blocks(&self) -> bool {
        false
    }

    /// Applies `change` to the ledger atomically with respect to every other user of the buffer
    /// (another process sharing a durable buffer included) and returns the ledger as written.
    ///
    /// `change` may be called more than once if the buffer retries; it must only compute the new
    /// ledger from the one it is given. When the buffer cannot store the result (a full disk),
    /// nothing changes and the error says why.
    fn update_ledger(
        &self,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError>;

    /// Adds `counts` (their counters only) to a record that takes writes when the buffer's own
    /// storage is full, for counts that must not be lost with the process; [`ledger`](Buffer::ledger)
    /// includes them from then on. The default has no such record and fails.
    fn add_counts_when_full(&self, counts: &DeliveryLedger) -> Result<(), BufferError> {
        let _ = counts;
        Err(BufferError::Storage(
            "this buffer keeps no counts apart from its storage".to_owned(),
        ))
    }

    /// [`append`](Buffer::append)s `events` (none is fine) and applies `change` to the ledger,
    /// as one step where the buffer can make it one (a durable buffer: one transaction, so
    /// events and the counts that go with them are stored together, and a busy buffer is
    /// waited for once). Returns the buffer's counts afterwards. When it fails, neither the
    /// events nor the change are stored.
    ///
    /// The default calls [`append`](Buffer::append), [`update_ledger`](Buffer::update_ledger)
    /// and [`stats`](Buffer::stats) one after the other.
    fn append_and_record(
        &self,
        events: Vec<EncodedEvent>,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<BufferStats, BufferError> {
        self.append(events)?;
        self.update_ledger(change)?;
        self.stats()
    }

    /// [`acknowledge`](Buffer::acknowledge)s `claim` and then applies `change` to the ledger,
    /// as one step where the buffer can make it one (a durable buffer: one transaction, so a
    /// delivery is counted exactly when its events are gone). When the acknowledgement fails,
    /// the ledger is left alone.
    ///
    /// The default calls the two methods one after the other.
    fn acknowledge_and_record(
        &self,
        claim: ClaimId,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        self.acknowledge(claim)?;
        self.update_ledger(change)
    }
}
