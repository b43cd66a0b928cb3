//! A transport that discards everything.

use std::sync::atomic::{AtomicU64, Ordering};

use telemetry_model::EncodedEvent;

use crate::{SendError, Transport};

/// Accepts every batch and discards it, counting the events.
#[derive(Debug, Default)]
pub struct NullTransport {
    accepted: AtomicU64,
}

impl NullTransport {
    /// A new null transport.
    pub fn new() -> NullTransport {
        NullTransport::default()
    }

    /// How many events it has accepted.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Transport for NullTransport {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn destination(&self) -> String {
        "nowhere (null transport)".to_owned()
    }

    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        self.accepted
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}
