//! Bounds: dropping the oldest unclaimed events over the count, byte and age limits, and
//! counting them (see "Bounds" on [`SqliteSpool`]).

use super::claims::{ClaimRange, live_claim_over, loaded_claims};
use super::clocks::{Moment, restamp};
use super::storage::{Totals, add_to_counter};
use super::*;

/// Events appended before this unix second are too old to keep.
pub(super) fn age_cutoff(now: i64, max_age: Duration) -> i64 {
    now.saturating_sub(seconds_i64(max_age))
}

/// Drops the available events appended before `cutoff` from the front of the spool, stopping
/// at the first event young enough, and counts them. Events at the front whose time is
/// implausible are not old but were appended while the clock was wrong: they get the time `now`
/// and the look goes on past them.
///
/// Events are appended in the order of the clock, so the front is where old events are; after
/// the clock steps backwards an old event can sit behind a younger one and outlive this, but
/// claiming checks the age of every event it reads, so it is dropped before it could be sent.
pub(super) fn drop_aged_head(
    tx: &Transaction<'_>,
    moment: &Moment,
    cutoff: i64,
    claims: &mut Option<Vec<ClaimRange>>,
    totals: &mut Totals,
) -> SqlResult<()> {
    let mut doomed = Doomed::default();
    let mut restamped = Runs::default();
    {
        let mut oldest =
            tx.prepare_cached("SELECT seq, inserted_at, byte_len FROM events ORDER BY seq")?;
        let mut rows = oldest.query([])?;
        while let Some(row) = rows.next()? {
            let Some(inserted_at) = integer(row, 1) else {
                break;
            };
            let seq: i64 = row.get(0)?;
            if !moment.is_plausible(inserted_at) {
                restamped.push(seq);
                doomed.keep();
                continue;
            }
            if inserted_at >= cutoff {
                break;
            }
            restamped.skip();
            let claims = loaded_claims(tx, claims)?;
            if live_claim_over(claims, seq, moment).is_some() {
                doomed.keep();
                continue;
            }
            doomed.push(seq, integer(row, 2).unwrap_or(0), claims);
        }
    }
    restamp(tx, &restamped, moment.now)?;
    doomed.delete(tx)?;
    totals.events -= doomed.events;
    totals.bytes -= doomed.bytes;
    add_to_counter(tx, DROPPED_AGE, doomed.events)
}

/// Rows gathered while a query reads them in `seq` order, to change once the query is done (a row
/// must not change under the query reading it), as runs of rows with no other row read between
/// them, so that each run is changed with one statement.
#[derive(Default)]
pub(super) struct Runs {
    pub(super) runs: Vec<(i64, i64)>,
    pub(super) run_is_open: bool,
}

impl Runs {
    pub(super) fn push(&mut self, seq: i64) {
        match self.runs.last_mut() {
            Some(run) if self.run_is_open => run.1 = seq,
            _ => self.runs.push((seq, seq)),
        }
        self.run_is_open = true;
    }

    /// The row just read is not gathered, so the next gathered row starts a new run.
    pub(super) fn skip(&mut self) {
        self.run_is_open = false;
    }
}

/// Rows to delete, gathered as [`Runs`]. Counts their rows and bytes for `totals`, and for each
/// claim whose range holds some of them (an expired claim's events can be dropped), so that
/// the claim's own count stays exact for its late acknowledgement.
#[derive(Default)]
pub(super) struct Doomed {
    pub(super) runs: Runs,
    pub(super) events: i64,
    pub(super) bytes: i64,
    /// `(claim id, events, bytes)` taken out of each claim's range.
    pub(super) from_claims: Vec<(i64, i64, i64)>,
}

impl Doomed {
    pub(super) fn push(&mut self, seq: i64, byte_len: i64, claims: &[ClaimRange]) {
        self.runs.push(seq);
        self.events += 1;
        self.bytes += byte_len;
        if let Some(claim) = claims.iter().find(|claim| claim.covers(seq)) {
            match self
                .from_claims
                .iter_mut()
                .find(|(id, _, _)| *id == claim.id)
            {
                Some((_, events, bytes)) => {
                    *events += 1;
                    *bytes += byte_len;
                }
                None => self.from_claims.push((claim.id, 1, byte_len)),
            }
        }
    }

    /// The row just read stays, so the next doomed row starts a new run.
    pub(super) fn keep(&mut self) {
        self.runs.skip();
    }

    pub(super) fn delete(&self, tx: &Transaction<'_>) -> SqlResult<()> {
        if self.runs.runs.is_empty() {
            return Ok(());
        }
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2")?;
        for &(first, last) in &self.runs.runs {
            delete.execute(params![first, last])?;
        }
        for &(claim_id, events, bytes) in &self.from_claims {
            tx.prepare_cached(
                "UPDATE claims SET events = events - ?1, bytes = bytes - ?2 WHERE claim_id = ?3",
            )?
            .execute(params![events, bytes, claim_id])?;
        }
        Ok(())
    }
}

impl SqliteSpool {
    /// Drops the oldest available events until the spool is within its limits.
    pub(super) fn drop_over_limits(
        &self,
        tx: &Transaction<'_>,
        moment: &Moment,
        claims: &mut Option<Vec<ClaimRange>>,
        totals: &mut Totals,
    ) -> SqlResult<()> {
        let max_events = len_i64(self.limits.max_events);
        let max_bytes = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        let over = |totals: &Totals| totals.events > max_events || totals.bytes > max_bytes;
        if !over(totals) {
            return Ok(());
        }
        let mut doomed = Doomed::default();
        {
            let mut oldest = tx.prepare_cached("SELECT seq, byte_len FROM events ORDER BY seq")?;
            let mut rows = oldest.query([])?;
            while over(totals) {
                let Some(row) = rows.next()? else { break };
                let seq: i64 = row.get(0)?;
                let claims = loaded_claims(tx, claims)?;
                if live_claim_over(claims, seq, moment).is_some() {
                    doomed.keep();
                    continue;
                }
                let byte_len = integer(row, 1).unwrap_or(0);
                doomed.push(seq, byte_len, claims);
                totals.events -= 1;
                totals.bytes -= byte_len;
            }
        }
        doomed.delete(tx)?;
        add_to_counter(tx, DROPPED_FULL, doomed.events)
    }
}
