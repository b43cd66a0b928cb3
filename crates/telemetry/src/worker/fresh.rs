//! Direct delivery: full batches of records just taken from the queue are sent from memory,
//! without the trip through the buffer (append, claim, read back, acknowledge) that events
//! from the buffer take. A flush and a shutdown also send the last, partial batch this way.
//!
//! Why: at a steady rate of a few hundred records a second, that trip was most of what
//! telemetry cost the process (appending, claiming and acknowledging were about half of its
//! CPU, each a SQLite transaction that rewrites pages of the write-ahead log), while the events
//! in question had just been built and scrubbed by this very worker and never needed a second
//! look. A delivered event now costs one ledger update, shared with the next append.
//!
//! What does not change:
//! - **How long an accepted event lives only in memory.** Without direct delivery a record
//!   waits in the queue for at most the drain interval and is then appended, with the worker
//!   waiting [`STORE_WAIT`](super::STORE_WAIT) for the append. Direct delivery sends within
//!   the same wait: every request must have completed by then, and whatever was not delivered
//!   by then (the rest of the queue, a batch that failed, a request still running) is appended
//!   as before. So a process killed at any moment loses at most what it would have lost
//!   without direct delivery: what is in the queue, and what is being stored.
//! - **What binds every process.** The ledger's `Retry-After` wait and open circuit are read
//!   before the first request of every drain (unless the buffer knows that neither is in
//!   effect: [`Buffer::may_be_paused`](telemetry_buffer::Buffer::may_be_paused)), and a
//!   process that is backing off, has a round in flight, or waits for the buffer sends nothing
//!   directly. A failed request is written to
//!   the ledger (failed deliveries, the server's wait, the circuit) like a round's.
//! - **Accounting.** Delivered events are counted in the ledger in the same transaction as the
//!   next append, so `status` in any process shows them; refused batches are counted as
//!   rejected. Events read back from the buffer (written by another process, or left by a
//!   failure) are still only sent by rounds, after the second look ([`super::recheck`]).
//!
//! A request that has not completed when storing must no longer wait is abandoned and its
//! batch appended; the destination is then too slow to wait on, and this process stops trying
//! direct delivery. An abandoned request may have arrived, so its events may arrive twice:
//! delivery is at least once, and duplicates come only from requests that were in flight.

use std::time::{Instant, SystemTime};

use telemetry_model::EncodedEvent;
use telemetry_transport::SendError;

use crate::queue::Drained;
use crate::worker::Worker;
use crate::worker::delivery::{Attempt, FlushReport, ReadBack, Stopped, on_buffer, paused_until};

/// What direct delivery does with the records that do not fill a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leftover {
    /// Left for storing: a partial batch waits for the batch interval, as in the buffer.
    /// A transport that takes merged batches gets it with the drain's full batches instead,
    /// in the same write (see [`Worker::deliver_fresh`]).
    Store,
    /// Sent as a last, smaller batch: a flush delivers everything now in any case, and
    /// sending it directly spares a trip through the buffer.
    Send,
    /// Sent as a last, smaller batch with the `sdk_usage` summary, at shutdown.
    SendWithSummary,
}

/// What a drain's direct delivery left to do.
#[derive(Default)]
pub(super) struct Fresh {
    /// Events built and not delivered (a batch that failed or ran out of time): to be stored.
    pub(super) unsent: Vec<EncodedEvent>,
    /// Whether every record queued when direct delivery began was taken (and delivered, or
    /// is in `unsent`).
    pub(super) took_queue: bool,
    /// Events the destination accepted.
    pub(super) delivered: u64,
    /// The destination failed a request (its events are in `unsent`): a flush reports that
    /// rather than trying again at once.
    pub(super) failure: Option<Stopped>,
}

impl Worker {
    /// Sends full batches of queued records from memory until `store_by`, and returns the
    /// events that must be stored instead (a batch that failed or ran out of time). What the
    /// attempts did is kept in `attempts`, for the next write to the ledger.
    ///
    /// One send's events at a time are in memory, never beside a round's claimed batch (no
    /// direct request while a round is in flight): a batch, or for a transport that takes
    /// merged batches at most what a flush stores at once.
    ///
    /// A transport that takes merged batches (a file) also gets the drain's partial batch in
    /// its last send, when the drain fills at least one batch: it adds no append to one that
    /// happens anyway, and spares those events the trip through the buffer (append,
    /// claim, reading back and checking again, acknowledgement), which was most of what a
    /// steady rate cost the process once full batches went directly. A drain that fills no
    /// batch stores its records as before, so a slow trickle still waits for the interval.
    ///
    /// Also says whether it took everything that was queued when it began: the records queued
    /// since (during the requests, a few at most) are then left for the next drain, as if
    /// they had come a moment after this one, rather than stored on their own. Stored, they
    /// cost this drain an append and a later round a claim, a read back and an
    /// acknowledgement, for two or three events.
    pub(super) async fn deliver_fresh(&mut self, store_by: Instant) -> Fresh {
        self.deliver_fresh_leaving(store_by, Leftover::Store).await
    }

    /// For a flush: [`deliver_fresh`](Worker::deliver_fresh), then what is left in the queue as
    /// one last, smaller batch. Events read back from the buffer (another process's, or left
    /// by a failure) are still sent by the flush's round, after the second look.
    pub(super) async fn deliver_fresh_all(&mut self, store_by: Instant) -> Fresh {
        self.deliver_fresh_leaving(store_by, Leftover::Send).await
    }

    /// At shutdown: [`deliver_fresh`](Worker::deliver_fresh), then what is left in the queue
    /// and the `sdk_usage` summary as one last batch, which then no longer needs storing.
    pub(super) async fn deliver_fresh_and_summary(
        &mut self,
        store_by: Instant,
    ) -> Vec<EncodedEvent> {
        self.deliver_fresh_leaving(store_by, Leftover::SendWithSummary)
            .await
            .unsent
    }

    async fn deliver_fresh_leaving(&mut self, store_by: Instant, leftover: Leftover) -> Fresh {
        let batch_size = self.delivery.batch_size;
        let queued = self.records.len();
        let summary_due = leftover == Leftover::SendWithSummary && self.summary;
        let enough =
            queued >= batch_size || (leftover != Leftover::Store && (queued > 0 || summary_due));
        if !self.direct_delivery
            || !enough
            || self.round.is_some()
            || !self.backoffs.due()
            || self.waiting_for_buffer()
            || !self.usage_allowed()
        {
            return Fresh::default();
        }
        // The wait a destination imposed binds these requests as it binds rounds. The buffer
        // says at once when no pause can be in effect (for the spool, no pause marker beside
        // it); otherwise the ledger is read, without a lock, so another process's write does
        // not hold this up.
        if self.buffer.may_be_paused() {
            let ledger = on_buffer(&self.buffer, store_by, |buffer| buffer.ledger()).await;
            match ledger {
                Ok(Ok(ledger)) if paused_until(&ledger, SystemTime::now()).is_none() => {}
                _ => return Fresh::default(),
            }
        }
        // A transport that takes several batches at once (a file) gets them in one send, up to
        // the size a flush writes at once.
        let merged = self.delivery.transport.takes_merged_batches();
        let per_send = if merged {
            batch_size.max(self.final_chunk() / batch_size * batch_size)
        } else {
            batch_size
        };
        let mut budget = queued;
        let mut delivered = 0;
        // An opt-out through a running handle stops the next request, not only the next drain.
        while Instant::now() < store_by && self.usage_allowed() {
            let last = budget < batch_size;
            if last && leftover == Leftover::Store {
                break;
            }
            // The send that takes all that is left: the partial batch rides with full ones
            // when the transport merges them, and so do records queued since the drain began,
            // up to the size of one send.
            let rest = last || (merged && budget <= per_send);
            let take = if rest && merged {
                per_send
            } else if rest {
                budget
            } else {
                per_send.min(budget / batch_size * batch_size)
            };
            let mut records = Vec::with_capacity(take);
            if take > 0 && self.records.drain(&mut records, take) != Drained::More {
                // The queue is empty (or closed): whatever it seemed to hold is taken.
                budget = 0;
            } else {
                budget = budget.saturating_sub(records.len());
            }
            let mut events = self.events.events(records);
            if rest && leftover == Leftover::SendWithSummary && self.summary {
                // Once: should this batch be stored instead, it carries the summary there.
                self.summary = false;
                events.extend(self.events.summary());
            }
            let count = events.len() as u64;
            if !events.is_empty() {
                match self.send_fresh(events, store_by).await {
                    Sent::Delivered => delivered += count,
                    Sent::Dropped => {}
                    Sent::Store(unsent) => {
                        return Fresh {
                            unsent,
                            delivered,
                            ..Fresh::default()
                        };
                    }
                    Sent::Failed(unsent, failure) => {
                        return Fresh {
                            unsent,
                            delivered,
                            failure: Some(failure),
                            ..Fresh::default()
                        };
                    }
                }
            }
            if last {
                break;
            }
        }
        Fresh {
            took_queue: budget == 0,
            delivered,
            ..Fresh::default()
        }
    }

    /// Sends one batch. A batch that must be stored instead also ends this drain's direct
    /// delivery.
    async fn send_fresh(&mut self, events: Vec<EncodedEvent>, store_by: Instant) -> Sent {
        let count = events.len() as u64;
        self.delivery.note_first_attempt().await;
        let sent = tokio::time::timeout_at(
            tokio::time::Instant::from_std(store_by),
            self.delivery.transport.send(&events),
        )
        .await;
        match sent {
            Ok(Ok(())) => {
                self.attempts
                    .push(Attempt::Delivered(count, ReadBack::default()));
                self.backoffs.record(&Ok(FlushReport::default()));
                Sent::Delivered
            }
            Ok(Err(SendError::TooLarge)) => {
                // Rounds from the buffer split batches the destination finds too large.
                Sent::Store(events)
            }
            Ok(Err(SendError::Rejected { message })) => {
                tracing::warn!(%message, events = count, "the destination rejected a batch; it was dropped");
                self.attempts
                    .push(Attempt::Rejected(count, ReadBack::default()));
                Sent::Dropped
            }
            Ok(Err(SendError::Retryable {
                message,
                retry_after,
            })) => {
                tracing::debug!(%message, "delivery failed; events kept for a retry");
                self.attempts.push(Attempt::Failed { retry_after });
                let failure = Stopped::Failed {
                    message,
                    retry_after,
                };
                self.backoffs.record(&Err(failure.clone()));
                Sent::Failed(events, failure)
            }
            Err(_elapsed) => {
                tracing::debug!(
                    "the destination did not answer before events had to be stored; they are buffered and sent from there"
                );
                self.direct_delivery = false;
                Sent::Store(events)
            }
        }
    }
}

/// What became of one batch sent directly.
enum Sent {
    /// The destination accepted it.
    Delivered,
    /// The destination refused it for good; it is counted as rejected.
    Dropped,
    /// It must be stored, and sent from the buffer later.
    Store(Vec<EncodedEvent>),
    /// The destination failed; it must be stored, and sent from the buffer later.
    Failed(Vec<EncodedEvent>, Stopped),
}
