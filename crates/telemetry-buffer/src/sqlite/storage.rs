//! Storage: appending rows to table `events`, and the running totals and drop counters in
//! `totals` and `meta` that every insert and delete keeps exact in its own transaction (see
//! "Storage" on [`SqliteSpool`]).

use super::bounds::{age_cutoff, drop_aged_head};
use super::*;

/// The running totals of table `totals`, read and written once per append.
pub(super) struct Totals {
    pub(super) events: i64,
    pub(super) bytes: i64,
    pub(super) next_seq: i64,
}

pub(super) fn subtract_from_totals(tx: &Transaction<'_>, events: i64, bytes: i64) -> SqlResult<()> {
    if events > 0 {
        tx.prepare_cached("UPDATE totals SET events = events - ?1, bytes = bytes - ?2")?
            .execute(params![events, bytes])?;
    }
    Ok(())
}

pub(super) fn add_to_counter(tx: &Transaction<'_>, key: &str, amount: i64) -> SqlResult<()> {
    if amount > 0 {
        tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = ?2")?
            .execute(params![amount, key])?;
    }
    Ok(())
}

impl SqliteSpool {
    /// Appends `events` and applies `change` to the ledger, in one transaction.
    pub(super) fn append_in(
        &self,
        connection: &mut Connection,
        events: &[EncodedEvent],
        change: Option<&mut dyn FnMut(&mut DeliveryLedger)>,
    ) -> SqlResult<()> {
        let tx = immediate(connection)?;
        if let Some(change) = change {
            let before = read_ledger(&tx)?;
            let mut after = before.clone();
            change(&mut after);
            self.write_ledger_in(&tx, &before, &as_stored(&after))?;
        }
        if events.is_empty() {
            return tx.commit();
        }
        let moment = self.moment_in(&tx)?;
        let now = moment.now;
        let cutoff = age_cutoff(now, self.limits.max_age);
        // The oldest event is read before the new ones go in: they are not older than it.
        let (mut totals, oldest_inserted_at) = tx
            .prepare_cached(
                "SELECT events, bytes,
                 MAX(next_seq, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events)),
                 (SELECT inserted_at FROM events ORDER BY seq LIMIT 1)
             FROM totals",
            )?
            .query_row([], |row| {
                let totals = Totals {
                    events: row.get(0)?,
                    bytes: row.get(1)?,
                    next_seq: row.get(2)?,
                };
                Ok((totals, integer(row, 3)))
            })?;
        {
            // A `seq` that is taken is an error, never a silently lost event.
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut id = String::with_capacity(36);
            for event in events {
                id.clear();
                // Writing to a `String` cannot fail.
                let _ = write!(id, "{}", event.id());
                let json = event.json();
                let byte_len = len_i64(json.len());
                insert.execute(params![totals.next_seq, id, json, byte_len, now])?;
                totals.next_seq += 1;
                totals.events += 1;
                totals.bytes += byte_len;
            }
        }
        let mut claims = None;
        if oldest_inserted_at
            .is_some_and(|inserted_at| inserted_at < cutoff || !moment.is_plausible(inserted_at))
        {
            drop_aged_head(&tx, &moment, cutoff, &mut claims, &mut totals)?;
        }
        self.drop_over_limits(&tx, &moment, &mut claims, &mut totals)?;
        tx.prepare_cached("UPDATE totals SET events = ?1, bytes = ?2, next_seq = ?3")?
            .execute(params![totals.events, totals.bytes, totals.next_seq])?;
        tx.commit()
    }

    pub(super) fn purge_in(&self, connection: &mut Connection) -> SqlResult<usize> {
        let tx = immediate(connection)?;
        let purged = tx.prepare_cached("DELETE FROM events")?.execute([])?;
        tx.prepare_cached("DELETE FROM claims")?.execute([])?;
        tx.prepare_cached("UPDATE totals SET events = 0, bytes = 0")?
            .execute([])?;
        let before = read_ledger(&tx)?;
        let mut after = before.clone();
        after.purged = after.purged.saturating_add(purged as u64);
        self.write_ledger_in(&tx, &before, &as_stored(&after))?;
        tx.commit()?;
        Ok(purged)
    }
}
