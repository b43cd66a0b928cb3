//! Counts that must survive a full disk: a small file, made at its full size while there is
//! room, and only ever overwritten in place afterwards.
//!
//! When the disk is full, SQLite cannot write anything, not even the few bytes of a counter:
//! every transaction appends to the write-ahead log. But overwriting bytes a file already has
//! needs no new blocks, so this file still takes writes. The worker puts here, as a last resort,
//! the counts it could not add to the spool's ledger (events it had to drop because storage
//! failed), and the spool's `ledger` adds them to what it reads, so that every event stays
//! accounted for.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::DeliveryLedger;

/// The file's size: room for the counters, made once.
const LEN: u64 = 256;

/// The counters kept, in the file's order: one little-endian `u64` each. New counters go at
/// the end: a file made by an older version has zeros there, and an older version leaves
/// them alone.
const FIELDS: usize = 9;

/// The counts of a [`DeliveryLedger`] that a full disk can make the worker unable to store.
fn fields(ledger: &DeliveryLedger) -> [u64; FIELDS] {
    [
        ledger.delivered,
        ledger.failed_deliveries,
        ledger.dropped_queue_full,
        ledger.dropped_scrubbed,
        ledger.dropped_storage,
        ledger.dropped_rejected,
        ledger.purged,
        ledger.dropped_invalid,
        ledger.refused_records,
    ]
}

fn ledger_of(fields: [u64; FIELDS]) -> DeliveryLedger {
    DeliveryLedger {
        delivered: fields[0],
        failed_deliveries: fields[1],
        dropped_queue_full: fields[2],
        dropped_scrubbed: fields[3],
        dropped_storage: fields[4],
        dropped_rejected: fields[5],
        purged: fields[6],
        dropped_invalid: fields[7],
        refused_records: fields[8],
        ..DeliveryLedger::default()
    }
}

/// The overflow file beside a spool: `<spool>-counts`.
#[derive(Debug, Clone)]
pub(crate) struct OverflowCounts {
    path: PathBuf,
}

impl OverflowCounts {
    pub(crate) fn beside(spool: &Path) -> OverflowCounts {
        let mut name = spool.as_os_str().to_os_string();
        name.push("-counts");
        OverflowCounts {
            path: PathBuf::from(name),
        }
    }

    /// Makes the file at its full size if it is missing or shorter (best effort: without it,
    /// a full disk can still lose counts, as it did before). Bytes it already holds are kept.
    ///
    /// Not synced: writing the bytes reserves the file's blocks at once, and a file that a
    /// crash lost or cut short is completed at the next open. (A file cut short used to stay
    /// short, and `add` refused it for good.) The sync was one of the few that the first start
    /// in every new state directory paid.
    pub(crate) fn prepare(&self) {
        let missing = match std::fs::symlink_metadata(&self.path) {
            // Only ever a regular file of ours: a link or anything else is left alone, and
            // `open` refuses what is too short.
            Ok(metadata) if !metadata.is_file() || metadata.len() >= LEN => return,
            Ok(_) => false,
            Err(error) if error.kind() == io::ErrorKind::NotFound => true,
            Err(_) => return,
        };
        let mut options = OpenOptions::new();
        options.write(true);
        if missing {
            // Private to the user, like the spool beside it.
            options.create_new(true).mode(0o600);
        }
        let made = options.open(&self.path).and_then(|file| {
            // Another process may have completed it meanwhile: only the missing tail is
            // written, with zeros, so no count is ever overwritten.
            let len = file.metadata()?.len().min(LEN);
            file.write_all_at(&[0; LEN as usize][len as usize..], len)
        });
        // Another process made it first, or the disk is already full: then `open` refuses
        // the short file until a later start completes it.
        let _ = made;
    }

    fn open(&self) -> io::Result<File> {
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        if file.metadata()?.len() < LEN {
            return Err(io::Error::other("the overflow counts file is too short"));
        }
        Ok(file)
    }

    fn read_from(file: &File) -> io::Result<[u64; FIELDS]> {
        let mut bytes = [0u8; FIELDS * 8];
        file.read_exact_at(&mut bytes, 0)?;
        let mut fields = [0u64; FIELDS];
        for (field, chunk) in fields.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *field = u64::from_le_bytes(word);
        }
        Ok(fields)
    }

    /// What the file holds; zero when it does not exist.
    pub(crate) fn read(&self) -> io::Result<DeliveryLedger> {
        match self.open() {
            Ok(file) => Ok(ledger_of(Self::read_from(&file)?)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(DeliveryLedger::default()),
            Err(error) => Err(error),
        }
    }

    /// Adds the counts of `counts` under an exclusive lock, writing in place.
    pub(crate) fn add(&self, counts: &DeliveryLedger) -> io::Result<()> {
        let file = self.open()?;
        file.lock()?;
        let mut fields = Self::read_from(&file)?;
        for (field, added) in fields.iter_mut().zip(self::fields(counts)) {
            *field = field.saturating_add(added);
        }
        let mut bytes = [0u8; FIELDS * 8];
        for (chunk, field) in bytes.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&field.to_le_bytes());
        }
        file.write_all_at(&bytes, 0)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_in_a_file_that_never_grows() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let overflow = OverflowCounts::beside(&dir.path().join("spool.sqlite3"));
        assert_eq!(overflow.read().ok(), Some(DeliveryLedger::default()));
        overflow.prepare();
        // Every count the worker keeps in memory; times and the circuit are not counts.
        let counts = DeliveryLedger {
            delivered: 1,
            failed_deliveries: 2,
            dropped_queue_full: 3,
            dropped_scrubbed: 4,
            dropped_storage: 5,
            dropped_rejected: 6,
            purged: 7,
            dropped_invalid: 8,
            refused_records: 9,
            ..DeliveryLedger::default()
        };
        for _ in 0..3 {
            overflow
                .add(&counts)
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let read = overflow.read().unwrap_or_else(|error| panic!("{error}"));
        let mut expected = DeliveryLedger::default();
        for _ in 0..3 {
            expected.add_counts(&counts);
        }
        assert_eq!(read, expected);
        let len = std::fs::metadata(&overflow.path)
            .map(|m| m.len())
            .unwrap_or(0);
        assert_eq!(len, LEN, "the file keeps the size it was made with");
    }

    #[test]
    fn a_file_cut_short_is_completed_with_what_it_held() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let overflow = OverflowCounts::beside(&dir.path().join("spool.sqlite3"));
        // A crash after the first counter was written, before the rest reached the disk.
        std::fs::write(&overflow.path, 5u64.to_le_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert!(overflow.read().is_err(), "a short file is refused");
        overflow.prepare();
        let len = std::fs::metadata(&overflow.path).map_or(0, |m| m.len());
        assert_eq!(len, LEN);
        let read = overflow.read().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(read.delivered, 5, "the bytes it held are kept");
        overflow
            .add(&DeliveryLedger {
                delivered: 1,
                ..DeliveryLedger::default()
            })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(overflow.read().map(|read| read.delivered).ok(), Some(6));
    }

    #[test]
    fn a_link_in_the_files_place_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let overflow = OverflowCounts::beside(&dir.path().join("spool.sqlite3"));
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"x").unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&target, &overflow.path).unwrap_or_else(|e| panic!("{e}"));
        overflow.prepare();
        assert_eq!(std::fs::read(&target).ok(), Some(b"x".to_vec()));
    }
}
