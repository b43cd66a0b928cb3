//! The state directory's lock, `<state dir>/telemetry_state.lock`: taken for every
//! read-change-write of the state file, and never waited for without bound.
//!
//! Between processes the lock is an exclusive `flock`. Another process may hold it for as long
//! as it likes (stuck, or `flock telemetry_state.lock sleep 1000`), so it is polled with a short
//! backoff and given up on after [`LOCK_WAIT`]: the SDK must not hang with someone else's lock.
//!
//! Polling alone is unfair: a thread that has just released the lock takes it again in
//! microseconds, long before a poller wakes up. Eight threads of one process looping on updates
//! (the `concurrent_updates_are_never_lost` test) measured a longest wait of 0.9 s, close enough
//! to the 2 s limit to fail on a slow disk. So the threads of one process queue on a condition
//! variable, woken at once by a release, and only the thread at the front polls the file: the
//! longest wait measured fell to 0.3 s, and the whole wait stays within [`LOCK_WAIT`].

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::no_follow::{self, OpenRefused, WriteMode};
use crate::state::{LOCK_FILE_NAME, StateError, create_private_dir};

/// The longest taking the lock waits, for other threads and other processes together. The lock
/// is held only for a read-change-write of a small file, so a holder that keeps it longer is
/// stuck or hostile.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The longest pause between two attempts to take the file lock: short enough that a lock
/// released by another process is taken almost at once, long enough not to spin.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

/// The lock files that a thread of this process holds or is taking.
static CLAIMED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Signalled whenever a path leaves [`CLAIMED`].
static RELEASED: Condvar = Condvar::new();

/// The exclusive lock of a state directory, held until dropped.
#[derive(Debug)]
pub(crate) struct StateLock {
    /// Declared first so that it is dropped first: the file lock is released before the next
    /// thread of this process is let in to take it.
    _file: File,
    _claim: Claim,
}

/// This process's claim on one lock file.
#[derive(Debug)]
struct Claim {
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.path);
        RELEASED.notify_all();
    }
}

/// Takes the lock of the state directory `dir`, creating the directory (mode 0700) and the
/// lock file (mode 0600) when missing.
pub(crate) fn lock_state_dir(dir: &Path) -> Result<StateLock, StateError> {
    let path = dir.join(LOCK_FILE_NAME);
    let deadline = Instant::now() + LOCK_WAIT;
    let lock_error = |source| StateError::Lock {
        path: path.clone(),
        source,
    };
    let locked = || StateError::Locked {
        path: path.clone(),
        waited: LOCK_WAIT,
    };
    let claim = claim(&path, deadline).ok_or_else(locked)?;
    create_private_dir(dir).map_err(lock_error)?;
    let file =
        no_follow::open_for_writing(&path, WriteMode::InPlace).map_err(
            |refused| match refused {
                OpenRefused::Symlink | OpenRefused::NotRegularFile => {
                    StateError::NotRegularFile { path: path.clone() }
                }
                OpenRefused::Io(error) => lock_error(error),
            },
        )?;
    let mut pause = Duration::from_millis(1);
    loop {
        match file.try_lock() {
            Ok(()) => {
                return Ok(StateLock {
                    _file: file,
                    _claim: claim,
                });
            }
            Err(fs::TryLockError::Error(error)) => return Err(lock_error(error)),
            Err(fs::TryLockError::WouldBlock) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(locked());
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(MAX_POLL_PAUSE);
            }
        }
    }
}

/// Waits until no other thread of this process holds or takes the lock file `path`, then claims
/// it; `None` when that did not happen before `deadline`.
fn claim(path: &Path, deadline: Instant) -> Option<Claim> {
    let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
    while claimed.contains(path) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        claimed = RELEASED
            .wait_timeout(claimed, left)
            .map_or_else(|poisoned| poisoned.into_inner().0, |(claimed, _)| claimed);
    }
    claimed.insert(path.to_path_buf());
    Some(Claim {
        path: path.to_path_buf(),
    })
}
