//! How a running process learns that the user withdrew consent from another process.
//!
//! `disable` (in any process) records "off" in the state file and forgets the session id;
//! `reset` replaces the id. A running process looks at the state file's size and modification
//! time before each delivery and about once a second: one `stat`, no lock, no read unless the
//! file changed. When its session id is no longer the file's, or the user's decision is now
//! "off", it stops recording and sending for good and deletes what it holds.

use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use telemetry_model::SessionId;
use telemetry_policy::StateStore;

/// Watches one state file for the end of one session's consent.
#[derive(Debug)]
pub(crate) struct ConsentWatch {
    store: StateStore,
    path: PathBuf,
    /// The session id the file held when the process started (its own, unless the file could
    /// not be written and the process runs under an id of its own).
    session: Option<SessionId>,
    consent_version: u32,
    /// The file's (modification time, size) when it was last read, and whether consent was
    /// withdrawn then; withdrawal is final.
    seen: Mutex<(Option<(SystemTime, u64)>, bool)>,
}

impl ConsentWatch {
    pub(crate) fn new(
        store: StateStore,
        session: Option<SessionId>,
        consent_version: u32,
    ) -> ConsentWatch {
        ConsentWatch {
            path: store.path().to_path_buf(),
            store,
            session,
            consent_version,
            seen: Mutex::new((None, false)),
        }
    }

    /// Whether consent for this process's session was withdrawn (or its id replaced).
    pub(crate) fn withdrawn(&self) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.1 {
            return true;
        }
        let stamp = match fs::metadata(&self.path) {
            Ok(metadata) => metadata
                .modified()
                .ok()
                .map(|modified| (modified, metadata.len())),
            // The file was deleted: the id it held, if any, is gone with it.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                seen.1 = self.session.is_some();
                return seen.1;
            }
            // Unreadable for now: decide when it can be read.
            Err(_) => return false,
        };
        if stamp.is_some() && stamp == seen.0 {
            return false;
        }
        let Ok(state) = self.store.load() else {
            // A damaged file says nothing about consent; the next change is read again.
            return false;
        };
        seen.0 = stamp;
        seen.1 = state.session_id != self.session
            || state.decision_for(self.consent_version) == Some(false);
        seen.1
    }
}
