//! The delivery ledger: one row of table `meta` per field (see "Storage" on [`SqliteSpool`]).

use super::*;

/// The ledger's fields as rows of table `meta`, by key. A key that is absent reads as zero (or
/// unset), so files written before a field existed need no migration, and an older library
/// that opens the file ignores keys it does not know.
pub(super) mod ledger_keys {
    pub(super) const DELIVERED: &str = "delivered";
    pub(super) const FAILED_DELIVERIES: &str = "failed_deliveries";
    pub(super) const LAST_SENT_MS: &str = "last_sent_ms";
    pub(super) const DROPPED_QUEUE_FULL: &str = "dropped_queue_full";
    pub(super) const DROPPED_SCRUBBED: &str = "dropped_scrubbed";
    pub(super) const DROPPED_STORAGE: &str = "dropped_storage";
    pub(super) const DROPPED_REJECTED: &str = "dropped_rejected";
    /// Not `dropped_invalid`: that key is the spool's own count of rows it could not read.
    pub(super) const DROPPED_INVALID_READ_BACK: &str = "dropped_invalid_read_back";
    pub(super) const PURGED: &str = "purged";
    pub(super) const REFUSED_RECORDS: &str = "refused_records";
    pub(super) const NOT_BEFORE_MS: &str = "not_before_ms";
    pub(super) const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
    pub(super) const CIRCUIT_OPEN_UNTIL_MS: &str = "circuit_open_until_ms";
}

pub(super) fn ledger_rows(ledger: &DeliveryLedger) -> [(&'static str, i64); 13] {
    use ledger_keys::*;
    let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let time = |value: Option<SystemTime>| value.map_or(0, to_unix_millis);
    [
        (DELIVERED, count(ledger.delivered)),
        (FAILED_DELIVERIES, count(ledger.failed_deliveries)),
        (LAST_SENT_MS, time(ledger.last_sent)),
        (DROPPED_QUEUE_FULL, count(ledger.dropped_queue_full)),
        (DROPPED_SCRUBBED, count(ledger.dropped_scrubbed)),
        (DROPPED_STORAGE, count(ledger.dropped_storage)),
        (DROPPED_REJECTED, count(ledger.dropped_rejected)),
        (DROPPED_INVALID_READ_BACK, count(ledger.dropped_invalid)),
        (PURGED, count(ledger.purged)),
        (REFUSED_RECORDS, count(ledger.refused_records)),
        (NOT_BEFORE_MS, time(ledger.not_before)),
        (CONSECUTIVE_FAILURES, i64::from(ledger.consecutive_failures)),
        (CIRCUIT_OPEN_UNTIL_MS, time(ledger.circuit_open_until)),
    ]
}

/// Sets the field that the row `key` holds to `value`; other keys of `meta` are not the ledger's.
pub(super) fn set_ledger_field(ledger: &mut DeliveryLedger, key: &str, value: i64) {
    use ledger_keys::*;
    let count = u64::try_from(value).unwrap_or(0);
    match key {
        DELIVERED => ledger.delivered = count,
        FAILED_DELIVERIES => ledger.failed_deliveries = count,
        LAST_SENT_MS => ledger.last_sent = from_unix_millis(value),
        DROPPED_QUEUE_FULL => ledger.dropped_queue_full = count,
        DROPPED_SCRUBBED => ledger.dropped_scrubbed = count,
        DROPPED_STORAGE => ledger.dropped_storage = count,
        DROPPED_REJECTED => ledger.dropped_rejected = count,
        DROPPED_INVALID_READ_BACK => ledger.dropped_invalid = count,
        PURGED => ledger.purged = count,
        REFUSED_RECORDS => ledger.refused_records = count,
        NOT_BEFORE_MS => ledger.not_before = from_unix_millis(value),
        CONSECUTIVE_FAILURES => {
            ledger.consecutive_failures = u32::try_from(value).unwrap_or(0);
        }
        CIRCUIT_OPEN_UNTIL_MS => ledger.circuit_open_until = from_unix_millis(value),
        _ => {}
    }
}

/// `ledger` as reading it back from the file gives it: times cut to the millisecond (unset at or
/// before the Unix epoch), counts stopped at `i64::MAX`.
pub(super) fn as_stored(ledger: &DeliveryLedger) -> DeliveryLedger {
    let mut stored = DeliveryLedger::default();
    for (key, value) in ledger_rows(ledger) {
        set_ledger_field(&mut stored, key, value);
    }
    stored
}

pub(super) fn read_ledger(tx: &Transaction<'_>) -> SqlResult<DeliveryLedger> {
    let mut select = tx.prepare_cached("SELECT key, value FROM meta")?;
    let mut rows = select.query([])?;
    let mut ledger = DeliveryLedger::default();
    while let Some(row) = rows.next()? {
        let Ok(key) = row.get_ref(0)?.as_str() else {
            continue;
        };
        set_ledger_field(&mut ledger, key, integer(row, 1).unwrap_or(0));
    }
    Ok(ledger)
}

impl SqliteSpool {
    /// Writes the rows of `after` that differ from `before`, inside a write transaction, and
    /// keeps the pause marker in step with what the transaction leaves (see [`super::pause`]).
    /// A pause whose marker cannot be made fails the transaction, so that no reader misses it.
    pub(super) fn write_ledger_in(
        &self,
        tx: &Transaction<'_>,
        before: &DeliveryLedger,
        after: &DeliveryLedger,
    ) -> SqlResult<()> {
        if before == after {
            return Ok(());
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?;
        for ((key, old), (_, new)) in ledger_rows(before).into_iter().zip(ledger_rows(after)) {
            if old != new {
                upsert.execute(params![key, new])?;
            }
        }
        self.pause
            .follow(before, after, (self.clock)())
            .map_err(|error| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!(
                        "cannot make the pause marker beside the spool: {error}"
                    )),
                )
            })
    }
}
