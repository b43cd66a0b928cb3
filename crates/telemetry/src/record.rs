//! What recording threads hand to the worker.

use std::time::Duration;

use telemetry_model::{
    BlockType, CatalogId, CommandName, ConfigErrorKind, ExceptionType, Feature, FeatureSet,
    Integration, Metric, RunOutcome,
};

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
    /// The type of the error that ended it, from the catalog's allowlist, or
    /// [`ExceptionType::OTHER`] for a type the catalog does not declare.
    ///
    /// A run whose features or exception type come from another catalog is refused and
    /// counted ([`Telemetry::refused_records`](crate::Telemetry::refused_records)).
    pub exception: Option<ExceptionType>,
}

/// What may be recorded only with the catalog it was made from.
pub(crate) trait FromCatalog: Copy {
    /// Whether a catalog with this id accepts it.
    fn is_from(self, catalog: CatalogId) -> bool;
}

macro_rules! from_catalog {
    ($($handle:ty),*) => {
        $(
            impl FromCatalog for $handle {
                #[inline]
                fn is_from(self, catalog: CatalogId) -> bool {
                    <$handle>::is_from(self, catalog)
                }
            }
        )*
    };
}

from_catalog!(
    Feature,
    Metric,
    ConfigErrorKind,
    BlockType,
    CommandName,
    ExceptionType,
    Integration,
    FeatureSet
);

impl FromCatalog for RunRecord {
    #[inline]
    fn is_from(self, catalog: CatalogId) -> bool {
        self.features.is_from(catalog)
            && self
                .exception
                .is_none_or(|exception| exception.is_from(catalog))
    }
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
