//! The queue from recording threads to the worker, split into shards.
//!
//! One queue shared by every recording thread makes threads that record at the same time write
//! the same few cache lines on every record, and on a virtual machine each such write can cost
//! a hundred nanoseconds or more. So the queue is split into one shard per processor (at most
//! [`MAX_SHARDS`]): each thread is given a shard, in turn, the first time it records, and
//! threads that record at once mostly write to different memory. The worker collects from
//! every shard.
//!
//! A shard is a ring of records behind a mutex, so a record is one uncontended lock and one
//! write into memory that is already there. What matters is a record on a thread that has just
//! slept (a flow's task waiting for I/O): its caches are cold, and every distinct cache line it
//! touches costs a miss. A channel touched five (its free-slot count, its tail, the block's
//! ready bits, the slot, the receiver's wake-up state) and allocated a new block every 32
//! records; a shard touches its lock's line and the slot's. The worker takes records out in
//! chunks, each under one short hold of the lock.
//!
//! The capacity is split evenly, so the queue never holds more than its configured number of
//! records in all, and no more memory than that many records (and the ring's rounding up);
//! one thread alone can fill only its own shard.

use std::cell::Cell;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::record::Record;

/// The most shards a queue is split into.
pub(crate) const MAX_SHARDS: usize = 8;

/// The most records of room an empty shard keeps; beyond it (after a flood) the room is given
/// back.
const KEPT_ROOM: usize = 1_024;

thread_local! {
    /// This thread's shard number, given out in turn on the thread's first record.
    static THREAD_SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The next shard number to give out.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

fn thread_shard() -> usize {
    THREAD_SHARD.with(|shard| match shard.get() {
        Some(number) => number,
        None => {
            let number = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            shard.set(Some(number));
            number
        }
    })
}

/// How many shards a queue of `capacity` records gets on this machine.
fn shard_count(capacity: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .clamp(1, MAX_SHARDS)
        .min(capacity.max(1))
}

/// A new queue of `capacity` records in all (at least one).
pub(crate) fn record_queue(capacity: usize) -> (RecordSenders, RecordReceivers) {
    let capacity = capacity.max(1);
    let count = shard_count(capacity);
    let shards: Arc<[Shard]> = (0..count)
        .map(|index| {
            // The remainder goes to the first shards, so the capacities add up exactly.
            let size = capacity / count + usize::from(index < capacity % count);
            Shard {
                slots: Mutex::new(Slots {
                    records: VecDeque::new(),
                    worker_gone: false,
                }),
                capacity: size,
            }
        })
        .collect();
    let closed = Arc::new(AtomicBool::new(false));
    (
        RecordSenders {
            shards: Arc::clone(&shards),
            closed: Arc::clone(&closed),
        },
        RecordReceivers {
            shards,
            closed,
            next: 0,
        },
    )
}

/// One shard, on cache lines of its own, so that threads recording into different shards
/// never write the same line.
#[repr(align(128))]
struct Shard {
    slots: Mutex<Slots>,
    /// The most records the shard holds.
    capacity: usize,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // A panic while the lock was held cannot leave the ring half changed (a push or a
        // drain either happened or not), so a poisoned lock is used as it is.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Slots {
    /// Recorded and not yet taken by the worker, oldest first.
    records: VecDeque<Record>,
    /// Set when the worker's side is dropped: nothing sent would be collected.
    worker_gone: bool,
}

/// What happened to a record handed to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Queued; `wake` when its shard is more than half full and the worker should collect.
    Queued { wake: bool },
    /// The thread's shard was full (or the worker is gone): the record was dropped.
    Dropped,
}

/// The recording side: shared by every handle.
pub(crate) struct RecordSenders {
    shards: Arc<[Shard]>,
    /// Set when the senders are gone, so that the worker knows no record will come.
    closed: Arc<AtomicBool>,
}

impl RecordSenders {
    pub(crate) fn send(&self, record: Record) -> Sent {
        let shard = &self.shards[thread_shard() % self.shards.len()];
        let mut slots = shard.lock();
        let held = slots.records.len();
        if held >= shard.capacity || slots.worker_gone {
            return Sent::Dropped;
        }
        slots.records.push_back(record);
        // More than half full: fewer than half of the slots free.
        Sent::Queued {
            wake: shard.capacity - (held + 1) < shard.capacity / 2,
        }
    }
}

impl Drop for RecordSenders {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Whether the queue can still deliver records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every shard is empty for now.
    Empty,
    /// `max` records were taken and more may be waiting.
    More,
    /// Every shard is closed (all handles are gone) and empty.
    Closed,
}

/// The worker's side.
pub(crate) struct RecordReceivers {
    shards: Arc<[Shard]>,
    closed: Arc<AtomicBool>,
    /// The shard to start from next time, so that no shard waits behind a busy one.
    next: usize,
}

impl RecordReceivers {
    /// Records waiting in all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().records.len())
            .sum()
    }

    /// Moves up to `max` waiting records into `into`, taking from each shard in turn.
    pub(crate) fn drain(&mut self, into: &mut Vec<Record>, max: usize) -> Drained {
        // Read before taking: a record sent before the senders closed is then taken below.
        let closed = self.closed.load(Ordering::Acquire);
        let count = self.shards.len();
        for offset in 0..count {
            let index = (self.next + offset) % count;
            let room = max.saturating_sub(into.len());
            let mut slots = self.shards[index].lock();
            let take = room.min(slots.records.len());
            into.extend(slots.records.drain(..take));
            if slots.records.is_empty() {
                if slots.records.capacity() > KEPT_ROOM {
                    slots.records.shrink_to(KEPT_ROOM);
                }
            } else {
                self.next = index;
                return Drained::More;
            }
        }
        self.next = (self.next + 1) % count;
        if closed {
            Drained::Closed
        } else {
            Drained::Empty
        }
    }
}

impl Drop for RecordReceivers {
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            let mut slots = shard.lock();
            slots.worker_gone = true;
            slots.records = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use telemetry_model::{FeatureSet, RunOutcome};

    use super::*;
    use crate::RunRecord;

    fn record() -> Record {
        Record::Run(RunRecord {
            features: FeatureSet::new(),
            duration: Duration::from_secs(1),
            outcome: RunOutcome::Completed,
            exception: None,
        })
    }

    #[test]
    fn capacities_add_up_to_the_configured_total() {
        for capacity in [1, 2, 3, 7, 8, 9, 100, 8_192] {
            let (senders, _receivers) = record_queue(capacity);
            let total: usize = senders.shards.iter().map(|shard| shard.capacity).sum();
            assert_eq!(total, capacity);
            assert!(senders.shards.len() <= MAX_SHARDS);
        }
    }

    #[test]
    fn threads_fill_their_own_shards_and_the_worker_takes_from_all() {
        let (senders, mut receivers) = record_queue(64);
        let shards = senders.shards.len();
        let senders = std::sync::Arc::new(senders);
        // More threads than shards: each fills what it can of its shard.
        let handles: Vec<_> = (0..shards * 2)
            .map(|_| {
                let senders = std::sync::Arc::clone(&senders);
                std::thread::spawn(move || {
                    (0..64)
                        .filter(|_| senders.send(record()) != Sent::Dropped)
                        .count()
                })
            })
            .collect();
        let queued: usize = handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(0))
            .sum();
        // Nothing beyond the total was taken, and at least one shard was filled. (Which
        // shards the threads got depends on other threads of the process recording too.)
        assert!((64 / shards..=64).contains(&queued), "{queued} queued");
        assert_eq!(receivers.len(), queued);

        let mut taken = Vec::new();
        assert_eq!(receivers.drain(&mut taken, 10), Drained::More);
        assert_eq!(taken.len(), 10);
        assert_eq!(receivers.drain(&mut taken, 1_000), Drained::Empty);
        assert_eq!(taken.len(), queued);
        drop(senders);
        assert_eq!(receivers.drain(&mut taken, 1_000), Drained::Closed);
    }

    #[test]
    fn a_shard_signals_when_more_than_half_full() {
        // An odd total, so that shards of both sizes (and odd ones) are covered on any machine.
        let (senders, _receivers) = record_queue(MAX_SHARDS * 5 + 3);
        let own = &senders.shards[thread_shard() % senders.shards.len()];
        let size = own.capacity;
        let mut wakes = Vec::new();
        while let Sent::Queued { wake } = senders.send(record()) {
            wakes.push(wake);
        }
        assert_eq!(wakes.len(), size, "this thread fills exactly its own shard");
        // After the k-th record the shard has `size - k` free slots: a signal exactly when
        // fewer than half are free, and from then on for every record until it is full.
        let expected: Vec<bool> = (1..=size).map(|k| size - k < size / 2).collect();
        assert_eq!(wakes, expected);
        let first = wakes.iter().position(|wake| *wake);
        assert_eq!(first, Some(size - size / 2), "{wakes:?}");
        assert_eq!(senders.send(record()), Sent::Dropped, "a full shard drops");
    }

    /// The number of the run a record stands for, kept in its duration.
    fn numbered(number: u64) -> Record {
        Record::Run(RunRecord {
            duration: Duration::from_millis(number),
            ..match record() {
                Record::Run(run) => run,
            }
        })
    }

    fn number(record: &Record) -> u64 {
        match record {
            Record::Run(run) => run.duration.as_millis() as u64,
        }
    }

    #[test]
    fn records_come_out_in_the_order_they_went_in_and_free_their_slots_at_once() {
        let (senders, mut receivers) = record_queue(MAX_SHARDS * 8);
        let size = senders.shards[thread_shard() % senders.shards.len()].capacity;
        for index in 0..size as u64 {
            assert!(matches!(senders.send(numbered(index)), Sent::Queued { .. }));
        }
        assert_eq!(senders.send(numbered(1_000)), Sent::Dropped, "full");
        // The worker collects a few: their slots are free again.
        let mut taken = Vec::new();
        assert_eq!(receivers.drain(&mut taken, 3), Drained::More);
        assert_eq!(receivers.len(), size - 3);
        for index in size as u64..size as u64 + 3 {
            assert!(matches!(senders.send(numbered(index)), Sent::Queued { .. }));
        }
        assert_eq!(senders.send(numbered(1_001)), Sent::Dropped, "full again");
        assert_eq!(receivers.drain(&mut taken, usize::MAX), Drained::Empty);
        assert_eq!(
            taken.iter().map(number).collect::<Vec<_>>(),
            (0..size as u64 + 3).collect::<Vec<_>>(),
            "in the order they were recorded"
        );
    }

    #[test]
    fn without_the_worker_records_are_dropped_and_counted_as_such() {
        let (senders, receivers) = record_queue(64);
        assert!(matches!(senders.send(record()), Sent::Queued { .. }));
        drop(receivers);
        assert_eq!(senders.send(record()), Sent::Dropped);
    }
}
