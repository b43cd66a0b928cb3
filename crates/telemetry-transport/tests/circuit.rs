//! The circuit breaker, driven by scripts of calls at chosen instants: no clock, no sleeps.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use telemetry_transport::{CircuitBreaker, CircuitState};

/// One call on the breaker, at a number of seconds after the script's start.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `allow(now)` must answer this.
    Allow(u64, bool),
    /// `record_failure(now)`.
    Fail(u64),
    /// `record_success()`.
    Succeed,
}

/// The state expected after a step; `Open` holds the end of the cool-down in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Closed,
    Open(u64),
    HalfOpen,
}

/// Each step with the state expected after it.
type Script = Vec<(Step, Expected)>;

use Expected::{Closed, HalfOpen, Open};
use Step::{Allow, Fail, Succeed};

fn check(name: &str, mut breaker: CircuitBreaker, script: &[(Step, Expected)]) {
    let start = Instant::now();
    let at = |seconds: u64| start + Duration::from_secs(seconds);
    for (index, &(step, expected)) in script.iter().enumerate() {
        match step {
            Allow(seconds, allowed) => assert_eq!(
                breaker.allow(at(seconds)),
                allowed,
                "{name}: step {index} {step:?}"
            ),
            Fail(seconds) => breaker.record_failure(at(seconds)),
            Succeed => breaker.record_success(),
        }
        let expected = match expected {
            Closed => CircuitState::Closed,
            Open(until) => CircuitState::Open { until: at(until) },
            HalfOpen => CircuitState::HalfOpen,
        };
        assert_eq!(
            breaker.state(),
            expected,
            "{name}: after step {index} {step:?}"
        );
    }
}

#[test]
fn scripted_transitions() {
    let ten_seconds = || CircuitBreaker::new(3, Duration::from_secs(10));
    let cases: Vec<(&str, CircuitBreaker, Script)> = vec![
        (
            "opens on the third consecutive failure and refuses until the cool-down ends",
            ten_seconds(),
            vec![
                (Allow(0, true), Closed),
                (Fail(0), Closed),
                (Fail(1), Closed),
                (Fail(2), Open(12)),
                (Allow(3, false), Open(12)),
                (Allow(11, false), Open(12)),
            ],
        ),
        (
            "after the cool-down exactly one probe goes through, and its success closes",
            ten_seconds(),
            vec![
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Open(10)),
                (Allow(10, true), HalfOpen),
                (Allow(10, false), HalfOpen),
                (Allow(15, false), HalfOpen),
                (Succeed, Closed),
                (Allow(15, true), Closed),
                (Fail(16), Closed),
                (Fail(17), Closed),
            ],
        ),
        (
            "a failed probe reopens for a fresh cool-down",
            ten_seconds(),
            vec![
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Open(10)),
                (Allow(25, true), HalfOpen),
                (Fail(26), Open(36)),
                (Allow(35, false), Open(36)),
                (Allow(36, true), HalfOpen),
            ],
        ),
        (
            "a success between failures restarts the count",
            ten_seconds(),
            vec![
                (Fail(0), Closed),
                (Fail(1), Closed),
                (Succeed, Closed),
                (Fail(2), Closed),
                (Fail(3), Closed),
                (Fail(4), Open(14)),
            ],
        ),
        (
            "a probe whose outcome is never recorded is replaced after another cool-down",
            ten_seconds(),
            vec![
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Open(10)),
                (Allow(10, true), HalfOpen),
                (Allow(19, false), HalfOpen),
                (Allow(20, true), HalfOpen),
                (Allow(20, false), HalfOpen),
            ],
        ),
        (
            "a late failure while open does not extend the cool-down",
            ten_seconds(),
            vec![
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Open(10)),
                (Fail(5), Open(10)),
                (Allow(10, true), HalfOpen),
            ],
        ),
        (
            "the default opens on the fifth failure for sixty seconds",
            CircuitBreaker::default(),
            vec![
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(0), Closed),
                (Fail(1), Open(61)),
                (Allow(60, false), Open(61)),
                (Allow(61, true), HalfOpen),
            ],
        ),
        (
            "a threshold of zero behaves as one",
            CircuitBreaker::new(0, Duration::from_secs(1)),
            vec![(Allow(0, true), Closed), (Fail(0), Open(1))],
        ),
        (
            "an absurd cool-down is capped at one day",
            CircuitBreaker::new(1, Duration::from_secs(u64::MAX / 4)),
            vec![(Fail(0), Open(86_400)), (Allow(86_400, true), HalfOpen)],
        ),
    ];
    for (name, breaker, script) in cases {
        check(name, breaker, &script);
    }
}

#[test]
fn counts_consecutive_failures() {
    let mut breaker = CircuitBreaker::new(2, Duration::from_secs(1));
    let now = Instant::now();
    assert_eq!(breaker.consecutive_failures(), 0);
    breaker.record_failure(now);
    breaker.record_failure(now);
    breaker.record_failure(now);
    assert_eq!(breaker.consecutive_failures(), 3);
    breaker.record_success();
    assert_eq!(breaker.consecutive_failures(), 0);
}
