//! Lock-free accumulators for the `sdk_usage` summary, updated on the recording thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use telemetry_model::CatalogId;

use crate::record::FromCatalog;

/// Where the first refusal is reported (the SDK's warning sink); spelled out rather than
/// imported so that the accumulators depend on `record` alone, as the worker depends on them.
type WarningSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A fixed-size set of small integers, safe to update from many threads.
#[derive(Debug)]
pub(crate) struct AtomicBitSet {
    words: Box<[AtomicU64]>,
    len: usize,
}

impl AtomicBitSet {
    pub(crate) fn new(bits: usize) -> AtomicBitSet {
        AtomicBitSet {
            words: (0..bits.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len: bits,
        }
    }

    /// Adds `index`; indexes beyond the size are ignored (a handle from another catalog).
    pub(crate) fn insert(&self, index: usize) {
        if index >= self.len {
            return;
        }
        if let Some(word) = self.words.get(index / 64) {
            let bit = 1u64 << (index % 64);
            // A plain load first keeps the common case (already set) free of contended writes.
            if word.load(Ordering::Relaxed) & bit == 0 {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// The whole set at once as one number (bit `n` for member `n`), when it has at most 128
    /// slots; `None` for larger sets.
    pub(crate) fn snapshot(&self) -> Option<u128> {
        match &*self.words {
            [] => Some(0),
            [low] => Some(u128::from(low.load(Ordering::Relaxed))),
            [low, high] => Some(
                u128::from(low.load(Ordering::Relaxed))
                    | (u128::from(high.load(Ordering::Relaxed)) << 64),
            ),
            _ => None,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(word_index, word)| {
                let bits = word.load(Ordering::Relaxed);
                (0..64)
                    .filter(move |bit| bits & (1u64 << bit) != 0)
                    .map(move |bit| word_index * 64 + bit)
            })
    }
}

/// A fixed-size array of counters, safe to update from many threads.
#[derive(Debug)]
pub(crate) struct AtomicCounters {
    counts: Box<[AtomicU64]>,
}

impl AtomicCounters {
    pub(crate) fn new(len: usize) -> AtomicCounters {
        AtomicCounters {
            counts: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn add(&self, index: usize, amount: u64) {
        if let Some(count) = self.counts.get(index) {
            count.fetch_add(amount, Ordering::Relaxed);
        }
    }

    /// Non-zero counters with their index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .enumerate()
            .filter(|&(_, count)| count > 0)
    }
}

/// Everything the `sdk_usage` summary reports, accumulated since start.
///
/// Allowlist sections (exception types, integrations) have one extra slot at the end for `other`.
pub(crate) struct UsageAccumulator {
    /// The catalog whose handles may be recorded; a handle of any other is refused.
    catalog: Option<CatalogId>,
    /// Recording calls refused for a handle of another catalog.
    refused: AtomicU64,
    /// Of `refused`, how many the buffer's ledger holds (advanced by the worker once a write
    /// that carried them has succeeded).
    refused_recorded: AtomicU64,
    /// Where the first refusal is reported: a foreign handle is a bug in the SDK, which its
    /// author should hear about, and the user may pass on.
    warnings: Option<WarningSink>,
    pub(crate) features: AtomicBitSet,
    pub(crate) block_types: AtomicBitSet,
    pub(crate) commands: AtomicBitSet,
    pub(crate) config_errors: AtomicBitSet,
    pub(crate) integrations_installed: AtomicBitSet,
    pub(crate) integration_import_failures: AtomicBitSet,
    pub(crate) metrics: AtomicCounters,
    pub(crate) exception_types: AtomicCounters,
    pub(crate) concurrency_peak: AtomicU64,
}

impl UsageAccumulator {
    /// An accumulator with no slots, for handles that never record.
    pub(crate) fn empty() -> UsageAccumulator {
        UsageAccumulator {
            catalog: None,
            refused: AtomicU64::new(0),
            refused_recorded: AtomicU64::new(0),
            warnings: None,
            features: AtomicBitSet::new(0),
            block_types: AtomicBitSet::new(0),
            commands: AtomicBitSet::new(0),
            config_errors: AtomicBitSet::new(0),
            integrations_installed: AtomicBitSet::new(0),
            integration_import_failures: AtomicBitSet::new(0),
            metrics: AtomicCounters::new(0),
            exception_types: AtomicCounters::new(0),
            concurrency_peak: AtomicU64::new(0),
        }
    }

    pub(crate) fn new(
        catalog: &telemetry_model::Catalog,
        warnings: WarningSink,
    ) -> UsageAccumulator {
        use telemetry_model::Section;
        let len = |section| catalog.len(section);
        UsageAccumulator {
            catalog: Some(catalog.id()),
            refused: AtomicU64::new(0),
            refused_recorded: AtomicU64::new(0),
            warnings: Some(warnings),
            features: AtomicBitSet::new(len(Section::Features)),
            block_types: AtomicBitSet::new(len(Section::BlockTypes)),
            commands: AtomicBitSet::new(len(Section::Commands)),
            config_errors: AtomicBitSet::new(len(Section::ConfigErrors)),
            integrations_installed: AtomicBitSet::new(len(Section::Integrations) + 1),
            integration_import_failures: AtomicBitSet::new(len(Section::Integrations) + 1),
            metrics: AtomicCounters::new(len(Section::Metrics)),
            exception_types: AtomicCounters::new(len(Section::ExceptionTypes) + 1),
            concurrency_peak: AtomicU64::new(0),
        }
    }
}

impl UsageAccumulator {
    /// Whether `handle` belongs to this accumulator's catalog; counts (and reports the first
    /// time) the refusal of one that does not.
    #[inline]
    pub(crate) fn accepts(&self, handle: impl FromCatalog) -> bool {
        let Some(catalog) = self.catalog else {
            return false;
        };
        if handle.is_from(catalog) {
            return true;
        }
        if self.refused.fetch_add(1, Ordering::Relaxed) == 0
            && let Some(warn) = &self.warnings
        {
            warn(
                "telemetry refused a record: a catalog handle came from another catalog than \
                 this SDK's (make handles with `telemetry::catalog!` from the catalog this \
                 configuration was built with)",
            );
        }
        false
    }

    /// How many recording calls were refused for a handle of another catalog.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Notes that a write holding the first `taken` refusals has succeeded.
    pub(crate) fn mark_refusals_recorded(&self, taken: u64) {
        self.refused_recorded.fetch_max(taken, Ordering::AcqRel);
    }

    /// Refusals the ledger does not hold yet (taken by a write still running or that failed,
    /// or not taken at all), for a `status` of the running process.
    pub(crate) fn unrecorded_refusals(&self) -> u64 {
        self.refused()
            .saturating_sub(self.refused_recorded.load(Ordering::Acquire))
    }
}

impl fmt::Debug for UsageAccumulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageAccumulator")
            .field("catalog", &self.catalog)
            .field("refused", &self.refused)
            .field("features", &self.features)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_sets_hold_inserted_indexes_and_ignore_out_of_range() {
        let set = AtomicBitSet::new(130);
        for index in [0, 63, 64, 129, 130, 10_000] {
            set.insert(index);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        // 130 slots take three words: too many for one number.
        assert_eq!(set.snapshot(), None);
    }

    #[test]
    fn small_bit_sets_snapshot_as_one_number() {
        assert_eq!(AtomicBitSet::new(0).snapshot(), Some(0));
        let set = AtomicBitSet::new(128);
        for index in [0, 5, 64, 127] {
            set.insert(index);
        }
        let expected = 1u128 | (1 << 5) | (1 << 64) | (1 << 127);
        assert_eq!(set.snapshot(), Some(expected));
    }

    #[test]
    fn counters_add_from_many_threads() {
        let counters = AtomicCounters::new(3);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counters.add(1, 1);
                    }
                });
            }
        });
        counters.add(7, 5);
        assert_eq!(counters.iter().collect::<Vec<_>>(), [(1, 4_000)]);
    }
}
