//! The criterion configuration every benchmark of the workspace runs with.

use std::time::Duration;

use criterion::Criterion;

/// A short run: 20 samples after a second of warm-up, each benchmark measured for
/// `measurement_time`. Enough to compare two builds on one machine, short enough that
/// `cargo xtask bench` runs all of them in a few minutes.
pub fn short(measurement_time: Duration) -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(measurement_time)
}
