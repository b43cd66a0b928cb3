//! The write path: a bounded queue in front of a writer that commits requests in groups, one
//! group at a time or, for a store that takes them side by side, several
//! ([`crate::store::Store::concurrent_writes`]).
//!
//! Each request waits for the commit that holds its events before it is answered, so a 200
//! means stored. When the queue is full the request is answered 503 with `Retry-After` at once
//! instead of waiting without bound; the client keeps its events and sends them again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

use crate::store::{Store, StoreError, WriteJob, WriteOutcome};

/// How the writer groups requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IngestConfig {
    /// Requests waiting for the writer, at most; one more is answered 503.
    pub queue: usize,
    /// Events in one group commit, at most (a single larger request is committed alone).
    pub group_events: usize,
    /// What `Retry-After` says when the queue is full or the store failed.
    pub retry_after: Duration,
}

impl Default for IngestConfig {
    fn default() -> IngestConfig {
        IngestConfig {
            queue: 256,
            group_events: 5_000,
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Why a write was not done. Either way nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The queue is full: the store cannot keep up.
    #[error("the write queue is full")]
    Overloaded,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The collector is shutting down.
    #[error("the collector is shutting down")]
    Closed,
}

struct Pending {
    job: WriteJob,
    reply: oneshot::Sender<Result<WriteOutcome, Arc<StoreError>>>,
}

/// The sending side of the write queue. Cheap to clone; the writer stops once every clone is
/// dropped and the queue is empty.
#[derive(Clone, Debug)]
pub struct Ingest {
    sender: mpsc::Sender<Pending>,
    retry_after: Duration,
}

impl Ingest {
    /// Starts the writer on the current runtime.
    pub fn start(store: Arc<dyn Store>, config: IngestConfig) -> (Ingest, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(config.queue.max(1));
        let writer = tokio::spawn(write_loop(store, receiver, config.group_events.max(1)));
        (
            Ingest {
                sender,
                retry_after: config.retry_after,
            },
            writer,
        )
    }

    /// What `Retry-After` says when a write is refused.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Queues a write and waits for its commit.
    pub async fn write(&self, job: WriteJob) -> Result<WriteOutcome, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .try_send(Pending { job, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => IngestError::Closed,
            })?;
        match answer.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(error)) => Err(IngestError::Store(StoreError::new(
                "the group commit failed",
                error,
            ))),
            Err(_) => Err(IngestError::Closed),
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<Pending>,
    group_events: usize,
) {
    // A store that takes several transactions at once (PostgreSQL) gets several groups in
    // flight; SQLite has one writer and gets one.
    let writers = Arc::new(Semaphore::new(store.concurrent_writes().max(1)));
    let mut in_flight = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&writers).acquire_owned().await else {
            break;
        };
        let Some(first) = receiver.recv().await else {
            break;
        };
        let mut events = first.job.events.len();
        let mut group = vec![first];
        while events < group_events {
            match receiver.try_recv() {
                Ok(next) => {
                    events += next.job.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let store = Arc::clone(&store);
        in_flight.spawn(async move {
            commit(store.as_ref(), group, events).await;
            drop(permit);
        });
        // Reap finished commits as we go, so the set stays small.
        while in_flight.try_join_next().is_some() {}
    }
    // The queue is closed: finish every commit still running before the writer stops.
    while in_flight.join_next().await.is_some() {}
}

async fn commit(store: &dyn Store, group: Vec<Pending>, events: usize) {
    let (jobs, replies): (Vec<WriteJob>, Vec<_>) = group
        .into_iter()
        .map(|pending| (pending.job, pending.reply))
        .unzip();
    let requests = jobs.len();
    match store.write(jobs).await {
        Ok(outcomes) => {
            let accepted: u64 = outcomes.iter().map(|outcome| outcome.accepted).sum();
            tracing::debug!(requests, events, accepted, "group committed");
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A request whose client went away still had its events stored.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            tracing::warn!(requests, events, %error, "a group commit failed; its requests are answered 503");
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}
