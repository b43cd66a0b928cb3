//! Claims across processes: leases on runs of events, taken, acknowledged and released under
//! the file's write lock (see "Claims across processes" on [`SqliteSpool`]).

use super::bounds::{Doomed, Runs, age_cutoff};
use super::clocks::{Moment, restamp};
use super::storage::{add_to_counter, subtract_from_totals};
use super::*;

/// Deletes the claims' rows in one transaction, so their events are the oldest unclaimed ones
/// again. A claim that is gone already (taken over after it expired) is skipped.
pub(super) fn release_claims(connection: &mut Connection, claims: &[i64]) -> SqlResult<()> {
    let tx = immediate(connection)?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM claims WHERE claim_id = ?1")?;
        for claim in claims {
            delete.execute([claim])?;
        }
    }
    tx.commit()
}

/// One row of table `claims`: a lease on the events whose `seq` is in `first..=last`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClaimRange {
    pub(super) id: i64,
    pub(super) first: i64,
    pub(super) last: i64,
    pub(super) expires_at: i64,
}

impl ClaimRange {
    pub(super) fn covers(&self, seq: i64) -> bool {
        (self.first..=self.last).contains(&seq)
    }

    /// Whether the lease still runs. A lease that ends further ahead than a lease from now was
    /// taken while the clock ran ahead: it counts as expired, or it would hold its events until
    /// the clock caught up, which may be years.
    pub(super) fn is_live(&self, moment: &Moment) -> bool {
        self.expires_at > moment.now && self.expires_at <= moment.latest
    }
}

/// Every claim, live or expired. The table holds a row per batch being delivered, so few.
pub(super) fn read_claims(tx: &Transaction<'_>) -> SqlResult<Vec<ClaimRange>> {
    let mut select =
        tx.prepare_cached("SELECT claim_id, first_seq, last_seq, expires_at FROM claims")?;
    select
        .query_map([], |row| {
            Ok(ClaimRange {
                id: row.get(0)?,
                first: row.get(1)?,
                last: row.get(2)?,
                expires_at: row.get(3)?,
            })
        })?
        .collect()
}

pub(super) fn live_claim_over<'a>(
    claims: &'a [ClaimRange],
    seq: i64,
    moment: &Moment,
) -> Option<&'a ClaimRange> {
    claims
        .iter()
        .find(|claim| claim.is_live(moment) && claim.covers(seq))
}

/// Every claim, read from the file the first time it is asked for in a transaction.
pub(super) fn loaded_claims<'a>(
    tx: &Transaction<'_>,
    claims: &'a mut Option<Vec<ClaimRange>>,
) -> SqlResult<&'a [ClaimRange]> {
    Ok(match claims {
        Some(claims) => claims,
        None => claims.insert(read_claims(tx)?),
    })
}

/// A fresh random claim id that no claim has. Random rather than sequential, because several
/// processes hand out claims on one file, and an id is never reused while the file lives.
pub(super) fn unused_claim_id(claims: &[ClaimRange]) -> i64 {
    loop {
        let candidate = i64::from_ne_bytes(random_u64().to_ne_bytes());
        if claims.iter().all(|claim| claim.id != candidate) {
            return candidate;
        }
    }
}

pub(super) fn claim_column(claim: ClaimId) -> i64 {
    i64::from_ne_bytes(claim.0.to_ne_bytes())
}

/// 64 random bits without a random-number crate: `RandomState` is seeded from the operating
/// system's randomness once per process, and each instance gets new keys; the time, process
/// id and a counter make every input distinct as well.
pub(super) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}

impl SqliteSpool {
    pub(super) fn claim_in(
        &self,
        connection: &mut Connection,
        max_events: usize,
    ) -> SqlResult<Option<Claim>> {
        let tx = immediate(connection)?;
        let moment = self.moment_in(&tx)?;
        let now = moment.now;
        let cutoff = age_cutoff(now, self.limits.max_age);
        let expires_at = moment.latest;
        let claims = read_claims(&tx)?;
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut doomed = Doomed::default();
        let mut restamped = Runs::default();
        let (mut aged, mut invalid) = (0, 0);
        // The rows this claim covers, `first..=last` by `seq`: from the oldest row that no live
        // claim holds, through rows no live claim holds, up to the first row that one does.
        let mut range: Option<(i64, i64)> = None;
        {
            let mut select = tx.prepare_cached(
                "SELECT seq, inserted_at, byte_len, event_id, json FROM events
                 WHERE seq > ?1 ORDER BY seq",
            )?;
            let mut after = i64::MIN;
            let mut ceiling = i64::MAX;
            // Rows are only read here; the ones to delete are deleted once the query is done,
            // so that no change disturbs the query reading them.
            'scan: loop {
                let mut rows = select.query(params![after])?;
                while events.len() < max_events {
                    let Some(row) = rows.next()? else {
                        break 'scan;
                    };
                    let seq: i64 = row.get(0)?;
                    let first = match range {
                        Some((first, _)) => first,
                        None => {
                            if let Some(held) = live_claim_over(&claims, seq, &moment) {
                                // Skip the whole range of the live claim in one step.
                                after = held.last;
                                continue 'scan;
                            }
                            ceiling = claims
                                .iter()
                                .filter(|claim| claim.is_live(&moment) && claim.first > seq)
                                .map(|claim| claim.first - 1)
                                .min()
                                .unwrap_or(i64::MAX);
                            seq
                        }
                    };
                    if seq > ceiling {
                        break 'scan;
                    }
                    range = Some((first, seq));
                    let byte_len = integer(row, 2).unwrap_or(0);
                    match integer(row, 1) {
                        // Only a plausible time says that an event is too old; an implausible
                        // one was written while the clock was wrong (see "Clocks").
                        Some(inserted_at)
                            if inserted_at < cutoff && moment.is_plausible(inserted_at) =>
                        {
                            doomed.push(seq, byte_len, &claims);
                            restamped.skip();
                            aged += 1;
                        }
                        inserted_at => match inserted_at.and_then(|_| stored_event(row, 3)) {
                            Some(event) => {
                                if inserted_at.is_some_and(|at| !moment.is_plausible(at)) {
                                    restamped.push(seq);
                                } else {
                                    restamped.skip();
                                }
                                events.push(event);
                                bytes += byte_len;
                                doomed.keep();
                            }
                            None => {
                                doomed.push(seq, byte_len, &claims);
                                restamped.skip();
                                invalid += 1;
                            }
                        },
                    }
                }
                break;
            }
        }
        let claim_id = match range {
            Some((first, last)) if !events.is_empty() => {
                // Expired claims whose rows this claim takes lose them: their late
                // acknowledgement must not delete rows that are now this claim's. Expired claims
                // that end before `first` hold no rows any more (every row before `first` is
                // held by a live claim, and claims never overlap), so they go too.
                if claims
                    .iter()
                    .any(|claim| !claim.is_live(&moment) && claim.first <= last)
                {
                    tx.prepare_cached(
                        "DELETE FROM claims
                             WHERE (expires_at <= ?1 OR expires_at > ?2) AND first_seq <= ?3",
                    )?
                    .execute(params![now, moment.latest, last])?;
                }
                let claim_id = unused_claim_id(&claims);
                tx.prepare_cached(
                    "INSERT INTO claims (claim_id, first_seq, last_seq, events, bytes, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    claim_id,
                    first,
                    last,
                    len_i64(events.len()),
                    bytes,
                    expires_at
                ])?;
                Some(claim_id)
            }
            _ => None,
        };
        restamp(&tx, &restamped, now)?;
        doomed.delete(&tx)?;
        subtract_from_totals(&tx, doomed.events, doomed.bytes)?;
        add_to_counter(&tx, DROPPED_AGE, aged)?;
        add_to_counter(&tx, DROPPED_INVALID, invalid)?;
        tx.commit()?;
        Ok(claim_id.map(|claim_id| Claim {
            id: ClaimId(u64::from_ne_bytes(claim_id.to_ne_bytes())),
            events,
        }))
    }

    /// Acknowledges `claim` and, when it was known, applies `change` to the ledger, in one
    /// transaction. Returns the ledger as written, or `None` for an unknown claim.
    pub(super) fn acknowledge_in(
        &self,
        connection: &mut Connection,
        claim: ClaimId,
        change: Option<&mut dyn FnMut(&mut DeliveryLedger)>,
    ) -> SqlResult<Option<Option<DeliveryLedger>>> {
        let claim_id = claim_column(claim);
        let tx = immediate(connection)?;
        // The claim knows what its range holds, so this reads no event.
        let range: Option<(i64, i64, i64, i64)> = tx
            .prepare_cached(
                "SELECT first_seq, last_seq, events, bytes FROM claims WHERE claim_id = ?1",
            )?
            .query_row(params![claim_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let Some((first, last, events, bytes)) = range else {
            return Ok(None);
        };
        tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2")?
            .execute(params![first, last])?;
        tx.prepare_cached("DELETE FROM claims WHERE claim_id = ?1")?
            .execute(params![claim_id])?;
        subtract_from_totals(&tx, events, bytes)?;
        let ledger = match change {
            Some(change) => {
                let before = read_ledger(&tx)?;
                let mut after = before.clone();
                change(&mut after);
                let after = as_stored(&after);
                self.write_ledger_in(&tx, &before, &after)?;
                Some(after)
            }
            None => None,
        };
        tx.commit()?;
        Ok(Some(ledger))
    }
}
