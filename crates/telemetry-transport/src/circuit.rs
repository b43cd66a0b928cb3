//! A circuit breaker that stops sending to a destination that keeps failing.

use std::time::{Duration, Instant};

/// What a [`CircuitBreaker`] currently lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Sends go through; consecutive failures are counted.
    Closed,
    /// Sends are refused until `until`, so a destination that is down is not hammered.
    Open {
        /// When the cool-down ends and one probe may go through.
        until: Instant,
    },
    /// The cool-down is over: one probe goes through, and its outcome closes or reopens the
    /// circuit.
    HalfOpen,
}

/// Stops sending to a destination after repeated failures, and probes it again after a cool-down.
///
/// Closed, it lets every send through and counts consecutive failures; the `failure_threshold`-th
/// opens it for `cool_down`. Open, it refuses every send until the cool-down has passed; the
/// next [`allow`](CircuitBreaker::allow) then turns it half-open and lets exactly one probe
/// through. A success closes it again, a failure reopens it for another cool-down.
///
/// It is pure logic: it does no I/O, reads no clock and never sleeps. The caller passes the
/// current time, which makes it deterministic under test. It complements the per-request
/// [`Backoff`](crate::Backoff): the backoff spaces retries of one batch, the breaker stops all
/// sending while the destination is known to be down.
///
/// If the caller never reports the outcome of a probe, another probe is allowed once a further
/// cool-down has passed, so a lost outcome cannot stop sending for good.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    cool_down: Duration,
    consecutive_failures: u32,
    state: Inner,
}

#[derive(Clone, Copy, Debug)]
enum Inner {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Instant },
}

impl CircuitBreaker {
    /// How many consecutive failures open the circuit by default.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
    /// How long the circuit stays open by default before a probe.
    pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(60);
    /// The longest cool-down accepted; longer ones are shortened to it.
    pub const MAX_COOL_DOWN: Duration = Duration::from_secs(24 * 60 * 60);

    /// A closed breaker that opens after `failure_threshold` consecutive failures (at least 1)
    /// and stays open for `cool_down` (at most [`MAX_COOL_DOWN`](Self::MAX_COOL_DOWN)).
    pub fn new(failure_threshold: u32, cool_down: Duration) -> CircuitBreaker {
        CircuitBreaker {
            failure_threshold: failure_threshold.max(1),
            cool_down: cool_down.min(Self::MAX_COOL_DOWN),
            consecutive_failures: 0,
            state: Inner::Closed,
        }
    }

    /// Whether a send may go through at `now`.
    ///
    /// When an open circuit's cool-down has passed, this call turns it half-open and answers
    /// `true` for the one probe; further calls answer `false` until the probe's outcome is
    /// recorded.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            Inner::Closed => true,
            Inner::Open { until } if now < until => false,
            Inner::Open { .. } => {
                self.state = Inner::HalfOpen { probe_started: now };
                true
            }
            Inner::HalfOpen { probe_started } => {
                if now.saturating_duration_since(probe_started) >= self.cool_down {
                    // The outcome of the last probe was never recorded: try another.
                    self.state = Inner::HalfOpen { probe_started: now };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records a delivered batch: the circuit closes and the failure count restarts.
    pub fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.state = Inner::Closed;
    }

    /// Records a failed send at `now`: it may open the circuit, and a failed probe reopens it.
    pub fn record_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        match self.state {
            Inner::Closed if self.consecutive_failures < self.failure_threshold => {}
            Inner::Closed | Inner::HalfOpen { .. } => self.open(now),
            // A send allowed before the circuit opened failed late: the cool-down already runs.
            Inner::Open { .. } => {}
        }
    }

    /// The current state, as of the last call.
    pub fn state(&self) -> CircuitState {
        match self.state {
            Inner::Closed => CircuitState::Closed,
            Inner::Open { until } => CircuitState::Open { until },
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// How many sends failed in a row since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    fn open(&mut self, now: Instant) {
        // The cool-down is capped, so the addition only fails for an `Instant` near the end of
        // the platform's range; probing again at once is the harmless fallback.
        let until = now.checked_add(self.cool_down).unwrap_or(now);
        self.state = Inner::Open { until };
    }
}

impl Default for CircuitBreaker {
    /// [`DEFAULT_FAILURE_THRESHOLD`](Self::DEFAULT_FAILURE_THRESHOLD) failures and a
    /// [`DEFAULT_COOL_DOWN`](Self::DEFAULT_COOL_DOWN).
    fn default() -> CircuitBreaker {
        CircuitBreaker::new(Self::DEFAULT_FAILURE_THRESHOLD, Self::DEFAULT_COOL_DOWN)
    }
}
