//! A bounded in-memory buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use telemetry_model::EncodedEvent;

use crate::{Buffer, BufferError, BufferStats, Claim, ClaimId, DeliveryLedger};

/// The default capacity of a [`MemoryBuffer`], in events.
pub const DEFAULT_MEMORY_CAPACITY: usize = 10_000;

/// A bounded in-memory buffer. Pending events are lost when the process ends.
///
/// The capacity counts unclaimed and claimed events together. When an append would exceed it,
/// the oldest unclaimed events are dropped; if every held event is claimed, the oldest new
/// events are dropped instead, so memory stays bounded either way.
#[derive(Debug)]
pub struct MemoryBuffer {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    unclaimed: VecDeque<EncodedEvent>,
    claimed: HashMap<ClaimId, Vec<EncodedEvent>>,
    claimed_len: usize,
    next_claim: u64,
    dropped_full: u64,
    ledger: DeliveryLedger,
}

impl MemoryBuffer {
    /// A buffer that holds at most `capacity` events (at least one).
    pub fn new(capacity: usize) -> MemoryBuffer {
        MemoryBuffer {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The most events the buffer holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` inconsistent in a way that
        // matters for telemetry, so a poisoned lock is used as it is.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryBuffer {
    fn default() -> MemoryBuffer {
        MemoryBuffer::new(DEFAULT_MEMORY_CAPACITY)
    }
}

impl Buffer for MemoryBuffer {
    fn kind(&self) -> &'static str {
        "memory"
    }

    /// Every operation takes the buffer's mutex for the time it needs to move or count a
    /// batch in memory, and nothing else.
    fn never_blocks(&self) -> bool {
        true
    }

    fn append(&self, events: Vec<EncodedEvent>) -> Result<(), BufferError> {
        let mut inner = self.lock();
        let room_for_unclaimed = self.capacity.saturating_sub(inner.claimed_len);
        let mut events = events.into_iter();
        // Events that could never fit are the oldest of this append: skip them up front.
        let excess = events.len().saturating_sub(room_for_unclaimed);
        if excess > 0 {
            events.nth(excess - 1);
            inner.dropped_full += excess as u64;
        }
        // Grow the ring at most to the capacity: doubling past it would leave up to half of
        // its slots unused for good.
        let wanted = (inner.unclaimed.len() + events.len()).min(room_for_unclaimed);
        if wanted > inner.unclaimed.capacity() {
            let target = (inner.unclaimed.capacity() * 2).clamp(wanted, self.capacity);
            let additional = target - inner.unclaimed.len();
            inner.unclaimed.reserve_exact(additional);
        }
        for event in events {
            if inner.unclaimed.len() >= room_for_unclaimed {
                inner.unclaimed.pop_front();
                inner.dropped_full += 1;
            }
            inner.unclaimed.push_back(event);
        }
        Ok(())
    }

    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError> {
        let mut inner = self.lock();
        if inner.unclaimed.is_empty() || max_events == 0 {
            return Ok(None);
        }
        let count = max_events.min(inner.unclaimed.len());
        let events: Vec<EncodedEvent> = inner.unclaimed.drain(..count).collect();
        let id = ClaimId(inner.next_claim);
        inner.next_claim += 1;
        inner.claimed_len += events.len();
        inner.claimed.insert(id, events.clone());
        Ok(Some(Claim { id, events }))
    }

    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError> {
        let mut inner = self.lock();
        let events = inner
            .claimed
            .remove(&claim)
            .ok_or(BufferError::UnknownClaim(claim))?;
        inner.claimed_len -= events.len();
        Ok(())
    }

    fn release(&self, claim: ClaimId) -> Result<(), BufferError> {
        let mut inner = self.lock();
        let events = inner
            .claimed
            .remove(&claim)
            .ok_or(BufferError::UnknownClaim(claim))?;
        inner.claimed_len -= events.len();
        for event in events.into_iter().rev() {
            inner.unclaimed.push_front(event);
        }
        Ok(())
    }

    fn stats(&self) -> Result<BufferStats, BufferError> {
        let inner = self.lock();
        Ok(BufferStats {
            pending: inner.unclaimed.len() + inner.claimed_len,
            dropped_full: inner.dropped_full,
            ..BufferStats::default()
        })
    }

    fn purge(&self) -> Result<usize, BufferError> {
        let mut inner = self.lock();
        let purged = inner.unclaimed.len() + inner.claimed_len;
        inner.unclaimed.clear();
        inner.claimed.clear();
        inner.claimed_len = 0;
        inner.ledger.purged = inner.ledger.purged.saturating_add(purged as u64);
        Ok(purged)
    }

    fn ledger(&self) -> Result<DeliveryLedger, BufferError> {
        Ok(self.lock().ledger.clone())
    }

    fn update_ledger(
        &self,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        let mut inner = self.lock();
        change(&mut inner.ledger);
        Ok(inner.ledger.clone())
    }
}
