//! What recording threads hand to the worker.

use std::time::Duration;

use telemetry_model::{ExceptionType, FeatureSet, RunOutcome};

/// One finished unit of work (a flow run, a job, a request), as the SDK reports it.
///
/// Copy and allocation-free, so recording it costs the caller almost nothing; the worker
/// turns it into a `run` event with a bucketed duration and catalog names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRecord {
    /// The features the run used.
    pub features: FeatureSet,
    /// How long it took (sent only as a bucket).
    pub duration: Duration,
    /// How it ended.
    pub outcome: RunOutcome,
    /// The type of the error that ended it, from the catalog's allowlist.
    pub exception: Option<ExceptionType>,
}

/// What the recording threads send to the worker.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Record {
    Run(RunRecord),
}

/// The accumulator slot of an allowlisted handle: its index, or the extra last slot for `other`.
pub(crate) fn allowlist_slot(index: Option<usize>, declared: usize) -> usize {
    index.filter(|&index| index < declared).unwrap_or(declared)
}
