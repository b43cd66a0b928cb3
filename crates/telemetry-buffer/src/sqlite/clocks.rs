//! Clocks: which append times are believed, and what happens to events stamped while the clock
//! was wrong (see "Clocks" on [`SqliteSpool`]).

use super::bounds::Runs;
use super::*;

/// 2025-02-20T00:00:00Z, the release of Rust 1.85, the first stable compiler for the 2024
/// edition that every version of this crate is written in: no spool of any version can hold an
/// event appended before it. It is the creation time of files that have none recorded, and the
/// earliest creation time believed of any file (one created while the clock read 1970 says
/// 1970).
pub(super) const EARLIEST_PLAUSIBLE: i64 = 1_740_009_600;

/// The times one transaction judges rows and claims by, in unix seconds (see "Clocks" on
/// [`SqliteSpool`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Moment {
    pub(super) now: i64,
    /// No event can have been appended before this: the later of the spool's creation and
    /// [`EARLIEST_PLAUSIBLE`].
    pub(super) earliest: i64,
    /// `now` plus this spool's lease: no claim made now expires later, and no event can have
    /// been appended later.
    pub(super) latest: i64,
}

impl Moment {
    /// Whether `inserted_at` can be when an event was appended. When it cannot, the event was
    /// appended while the clock was wrong, and it is treated as appended now.
    pub(super) fn is_plausible(&self, inserted_at: i64) -> bool {
        (self.earliest..=self.latest).contains(&inserted_at)
    }
}

/// Gives the rows in `runs` the append time `now`: their own time was implausible (see "Clocks"
/// on [`SqliteSpool`]), so from now on they age as if appended now.
pub(super) fn restamp(tx: &Transaction<'_>, runs: &Runs, now: i64) -> SqlResult<()> {
    if runs.runs.is_empty() {
        return Ok(());
    }
    let mut update =
        tx.prepare_cached("UPDATE events SET inserted_at = ?1 WHERE seq BETWEEN ?2 AND ?3")?;
    for &(first, last) in &runs.runs {
        update.execute(params![now, first, last])?;
    }
    Ok(())
}

impl SqliteSpool {
    /// The times this transaction judges rows and claims by.
    ///
    /// A creation time further ahead than a lease is not believed: either the file was created
    /// while the clock ran ahead, and believing it would make every event appended since look
    /// implausible, or the clock runs behind now, and the creation time is right again once the
    /// clock is. So it is left in the file as it is, and only [`EARLIEST_PLAUSIBLE`] holds.
    pub(super) fn moment_in(&self, tx: &Transaction<'_>) -> SqlResult<Moment> {
        let now = self.now();
        let latest = now.saturating_add(seconds_i64(self.claim_lease));
        let created_at = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [CREATED_AT],
                |row| Ok(integer(row, 0)),
            )
            .optional()?
            .flatten()
            .filter(|created_at| *created_at <= latest);
        Ok(Moment {
            now,
            earliest: created_at.map_or(EARLIEST_PLAUSIBLE, |created_at| {
                created_at.max(EARLIEST_PLAUSIBLE)
            }),
            latest,
        })
    }
}
