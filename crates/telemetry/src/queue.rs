//! The queue from recording threads to the worker, split into shards.
//!
//! One bounded channel shared by every recording thread makes threads that record at the same
//! time write the same few cache lines (the channel's free-slot count, its tail, its wake-up
//! state) on every record, and on a virtual machine each such write can cost a hundred
//! nanoseconds or more. So the queue is split into one bounded channel per processor (at most
//! [`MAX_SHARDS`]): each thread is given a shard, in turn, the first time it records, and
//! threads that record at once mostly write to different memory. The worker collects from
//! every shard.
//!
//! The capacity is split evenly, so the queue never holds more than its configured number of
//! records in all; one thread alone can fill only its own shard.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::record::Record;

/// The most shards a queue is split into.
pub(crate) const MAX_SHARDS: usize = 8;

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
    let shards = shard_count(capacity);
    let mut senders = Vec::with_capacity(shards);
    let mut receivers = Vec::with_capacity(shards);
    for index in 0..shards {
        // The remainder goes to the first shards, so the capacities add up exactly.
        let size = capacity / shards + usize::from(index < capacity % shards);
        let (sender, receiver) = mpsc::channel(size);
        senders.push(Shard {
            sender,
            wake_below: size / 2,
        });
        receivers.push(receiver);
    }
    (
        RecordSenders {
            shards: senders.into_boxed_slice(),
        },
        RecordReceivers {
            shards: receivers,
            next: 0,
        },
    )
}

struct Shard {
    sender: mpsc::Sender<Record>,
    /// Free slots below which a record signals the worker.
    wake_below: usize,
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
    shards: Box<[Shard]>,
}

impl RecordSenders {
    pub(crate) fn send(&self, record: Record) -> Sent {
        let shard = &self.shards[thread_shard() % self.shards.len()];
        match shard.sender.try_send(record) {
            Ok(()) => Sent::Queued {
                wake: shard.sender.capacity() < shard.wake_below,
            },
            Err(_) => Sent::Dropped,
        }
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
    shards: Vec<mpsc::Receiver<Record>>,
    /// The shard to start from next time, so that no shard waits behind a busy one.
    next: usize,
}

impl RecordReceivers {
    /// Records waiting in all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(mpsc::Receiver::len).sum()
    }

    /// Moves up to `max` waiting records into `into`, taking from each shard in turn.
    pub(crate) fn drain(&mut self, into: &mut Vec<Record>, max: usize) -> Drained {
        let count = self.shards.len();
        let mut closed = 0;
        for offset in 0..count {
            let index = (self.next + offset) % count;
            loop {
                if into.len() >= max {
                    self.next = index;
                    return Drained::More;
                }
                match self.shards[index].try_recv() {
                    Ok(record) => into.push(record),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed += 1;
                        break;
                    }
                }
            }
        }
        self.next = (self.next + 1) % count;
        if closed == count {
            Drained::Closed
        } else {
            Drained::Empty
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
            let total: usize = senders
                .shards
                .iter()
                .map(|shard| shard.sender.max_capacity())
                .sum();
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
        let size = own.sender.max_capacity();
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
}
