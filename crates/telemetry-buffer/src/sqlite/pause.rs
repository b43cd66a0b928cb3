//! The pause marker: `<spool>-paused`, an empty file that exists whenever the ledger may hold
//! a delivery pause in effect (a destination's `Retry-After`, an open circuit).
//!
//! A sender checks for a pause before each request it makes outside a round. Reading the
//! ledger for that is a trip to the spool (its lock, a read transaction, the counts file
//! beside it), once a drain in every process, to learn almost always that no pause is in
//! effect; looking whether the marker exists answers the same question with one `stat`.
//!
//! The marker only changes inside a write transaction that changes the ledger, so it follows
//! the ledger in the order the ledger's writes commit:
//! - a write that leaves a pause in effect makes the marker (before it commits: a reader that
//!   sees the marker early reads the ledger, as it would have without a marker);
//! - a write that finds no pause in effect and leaves none removes it. Removing it is safe under
//!   the write lock: no other write can commit a pause meanwhile, and had the write's own
//!   commit failed, the ledger stays as it was found, without a pause.
//!
//! So a reader that finds no marker reads the same answer the ledger would have given at that
//! moment. A marker left after its pause ended (no write since) costs the reader what it cost
//! before: it reads the ledger. A spool written by a version of this library that kept no
//! marker gets one when it is opened with a pause in effect.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::DeliveryLedger;

/// The marker beside one spool file.
#[derive(Debug, Clone)]
pub(super) struct PauseMarker {
    path: PathBuf,
}

impl PauseMarker {
    pub(super) fn beside(spool: &Path) -> PauseMarker {
        let mut name = spool.as_os_str().to_os_string();
        name.push("-paused");
        PauseMarker {
            path: PathBuf::from(name),
        }
    }

    /// Whether a pause may be in effect: `false` only when the marker certainly does not exist.
    pub(super) fn may_be_paused(&self) -> bool {
        match fs::symlink_metadata(&self.path) {
            Ok(_) => true,
            Err(error) => error.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Brings the marker in line with a ledger write from `before` to `after`, made at `now`
    /// inside the write transaction. Fails only when a pause needs the marker and it cannot be
    /// made: the write must then fail too, or readers would miss the pause.
    pub(super) fn follow(
        &self,
        before: &DeliveryLedger,
        after: &DeliveryLedger,
        now: SystemTime,
    ) -> io::Result<()> {
        if pausing(after, now) {
            self.make()
        } else {
            if !pausing(before, now) {
                // Best effort: a marker that stays only costs readers a look at the ledger.
                let _ = fs::remove_file(&self.path);
            }
            Ok(())
        }
    }

    /// Makes the marker when `ledger`, read when the spool was opened, holds a pause in effect.
    pub(super) fn follow_opened(&self, ledger: &DeliveryLedger, now: SystemTime) -> io::Result<()> {
        if pausing(ledger, now) {
            self.make()
        } else {
            Ok(())
        }
    }

    fn make(&self) -> io::Result<()> {
        let mut options = OpenOptions::new();
        // `create_new` never follows a link at the path: anything there already counts as the
        // marker, and nothing is written through it.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&self.path) {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Whether `ledger` holds a pause that has not ended at `now`. Wider than what senders obey
/// (they ignore a time implausibly far ahead): the marker may only err towards existing.
fn pausing(ledger: &DeliveryLedger, now: SystemTime) -> bool {
    let ahead = |until: Option<SystemTime>| until.is_some_and(|until| until > now);
    ahead(ledger.not_before) || ahead(ledger.circuit_open_until)
}
