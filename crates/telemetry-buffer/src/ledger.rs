//! The delivery ledger: what became of events after they were recorded, and what a destination
//! asked senders to do, kept beside the events so that every process sharing a buffer sees it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Counters and delivery state that outlive the process that wrote them.
///
/// A durable buffer keeps it in the same file as the events, so that a new process's `status`
/// shows what earlier processes delivered and dropped, and so that a destination's `Retry-After`
/// or an open circuit binds every process that sends from the same buffer, not only the one
/// that heard it. An in-memory buffer keeps it for as long as it lives.
///
/// Together with [`BufferStats`](crate::BufferStats) it accounts for every event a process
/// handed to the worker: delivered, pending, or dropped for one of the reasons counted here or
/// there (the buffer counts what it drops itself: full, too old, invalid when read back).
///
/// Times are kept to the millisecond. Every field is a plain value: changing one is done through
/// [`Buffer::update_ledger`](crate::Buffer::update_ledger), which applies a change atomically
/// with respect to every other process sharing the buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryLedger {
    /// Events the destination accepted (a 2xx answer, or a whole append to an export file).
    pub delivered: u64,
    /// Delivery attempts that failed and were left for a retry (the events were kept).
    pub failed_deliveries: u64,
    /// When a delivery last succeeded.
    pub last_sent: Option<SystemTime>,
    /// Records dropped because the queue between recording threads and the worker was full.
    pub dropped_queue_full: u64,
    /// Events the scrubber dropped because they looked like personal data.
    pub dropped_scrubbed: u64,
    /// Events dropped because storage failed (a full disk, an unwritable file).
    pub dropped_storage: u64,
    /// Events the destination refused for good (a 4xx other than 408, 413 and 429).
    pub dropped_rejected: u64,
    /// Events read back that the sender's second look refused: not an event of this SDK as
    /// configured (an undeclared name, another SDK's or runtime's fields).
    pub dropped_invalid: u64,
    /// Events deleted because the user opted out before they were sent.
    pub purged: u64,
    /// Recording calls refused because a catalog handle in them came from another catalog than
    /// the SDK's: a mistake in the SDK's wiring. None of them became an event or counted in a
    /// summary, so they are not drops (an event was never made).
    pub refused_records: u64,
    /// No process may deliver before this time: the destination asked to wait (`Retry-After`).
    pub not_before: Option<SystemTime>,
    /// Deliveries that failed in a row, by any process; reset by a success.
    pub consecutive_failures: u32,
    /// While this lies in the future the circuit is open: scheduled deliveries pause until then.
    pub circuit_open_until: Option<SystemTime>,
}

impl DeliveryLedger {
    /// Every drop counted here (the buffer's own drops are in [`BufferStats`](crate::BufferStats)).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full
            .saturating_add(self.dropped_scrubbed)
            .saturating_add(self.dropped_storage)
            .saturating_add(self.dropped_rejected)
            .saturating_add(self.dropped_invalid)
    }

    /// Adds every counter of `other` to this one and takes the later of each time; the
    /// circuit fields are left alone. Used to move counts kept in memory into a durable ledger.
    pub fn add_counts(&mut self, other: &DeliveryLedger) {
        self.delivered = self.delivered.saturating_add(other.delivered);
        self.failed_deliveries = self
            .failed_deliveries
            .saturating_add(other.failed_deliveries);
        self.last_sent = later(self.last_sent, other.last_sent);
        self.dropped_queue_full = self
            .dropped_queue_full
            .saturating_add(other.dropped_queue_full);
        self.dropped_scrubbed = self.dropped_scrubbed.saturating_add(other.dropped_scrubbed);
        self.dropped_storage = self.dropped_storage.saturating_add(other.dropped_storage);
        self.dropped_rejected = self.dropped_rejected.saturating_add(other.dropped_rejected);
        self.dropped_invalid = self.dropped_invalid.saturating_add(other.dropped_invalid);
        self.purged = self.purged.saturating_add(other.purged);
        self.refused_records = self.refused_records.saturating_add(other.refused_records);
    }

    /// Whether any counter is above zero or a time is set.
    pub fn is_empty(&self) -> bool {
        *self == DeliveryLedger::default()
    }
}

/// The later of two optional times.
pub fn later(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Milliseconds since the Unix epoch, as durable buffers store times (0 for times before it).
pub fn to_unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

/// The time `millis` milliseconds after the Unix epoch; `None` for zero or less (unset).
pub fn from_unix_millis(millis: i64) -> Option<SystemTime> {
    let millis = u64::try_from(millis).ok().filter(|millis| *millis > 0)?;
    UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_survive_the_round_trip_to_milliseconds() {
        let time = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        assert_eq!(from_unix_millis(to_unix_millis(time)), Some(time));
        assert_eq!(from_unix_millis(0), None);
        assert_eq!(from_unix_millis(-5), None);
        assert_eq!(to_unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn adding_counts_sums_counters_and_keeps_the_later_time() {
        let early = UNIX_EPOCH + Duration::from_secs(10);
        let late = UNIX_EPOCH + Duration::from_secs(20);
        let mut ledger = DeliveryLedger {
            delivered: 3,
            last_sent: Some(late),
            consecutive_failures: 2,
            ..DeliveryLedger::default()
        };
        ledger.add_counts(&DeliveryLedger {
            delivered: 4,
            dropped_storage: 1,
            last_sent: Some(early),
            consecutive_failures: 9,
            ..DeliveryLedger::default()
        });
        assert_eq!(ledger.delivered, 7);
        assert_eq!(ledger.dropped_storage, 1);
        assert_eq!(ledger.last_sent, Some(late));
        assert_eq!(
            ledger.consecutive_failures, 2,
            "circuit fields are not counts"
        );
        assert_eq!(ledger.dropped_total(), 1);
    }
}
