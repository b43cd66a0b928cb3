//! The consent state file, `<state dir>/telemetry_state.toml`: what the user decided and when,
//! and the anonymous session id.
//!
//! Written atomically (a temporary file in the same directory, synced, then renamed over the
//! old one) with mode 0600, so a crash or a second process never leaves a half-written file
//! and other local users cannot read it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telemetry_model::{SessionId, UtcDate};

/// The state file's name inside the state directory.
pub const STATE_FILE_NAME: &str = "telemetry_state.toml";

/// What the user decided, as recorded in the state file. Dates only, never times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    /// Whether the consent prompt has been shown in this environment.
    #[serde(default)]
    pub prompted: bool,
    /// The user's decision; absent until they decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The anonymous session id; created when telemetry is first enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// When the prompt was shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_date: Option<UtcDate>,
    /// When the user last decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_date: Option<UtcDate>,
    /// The version of the SDK's consent text that the prompt and the decision refer to;
    /// absent means version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_version: Option<u32>,
}

impl ConsentState {
    /// The consent version the recorded decision refers to.
    pub fn decided_version(&self) -> u32 {
        self.consent_version.unwrap_or(1)
    }

    /// The user's decision, if it was made for consent version `current` or later: a decision
    /// made before the SDK's collection changed materially no longer counts.
    pub fn decision_for(&self, current: u32) -> Option<bool> {
        self.enabled.filter(|_| self.decided_version() >= current)
    }

    /// Records a decision made today for consent version `version`; enabling creates a
    /// session id if there is none, and disabling forgets it.
    pub fn decide(&mut self, enabled: bool, today: UtcDate, version: u32) {
        self.enabled = Some(enabled);
        self.decision_date = Some(today);
        self.consent_version = Some(version);
        if enabled {
            self.session_id.get_or_insert_with(SessionId::random);
        } else {
            self.session_id = None;
        }
    }

    /// The session id, created now if there is none yet. Returns whether one was created.
    pub fn ensure_session_id(&mut self) -> (SessionId, bool) {
        match self.session_id {
            Some(id) => (id, false),
            None => {
                let id = SessionId::random();
                self.session_id = Some(id);
                (id, true)
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    telemetry: ConsentState,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read the telemetry state file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid state file.
    #[error(
        "the telemetry state file {path} is damaged ({detail}); telemetry stays off until you enable or disable it again"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The file cannot be written.
    #[error("cannot write the telemetry state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The state file of one state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateStore {
    path: PathBuf,
}

/// The lock file's name inside the state directory.
pub const LOCK_FILE_NAME: &str = "telemetry_state.lock";

/// The largest state file read; anything bigger is not one of ours.
const MAX_STATE_FILE_BYTES: u64 = 64 * 1024;

impl StateStore {
    /// The store for `<dir>/telemetry_state.toml`.
    pub fn in_dir(dir: &Path) -> StateStore {
        StateStore {
            path: dir.join(STATE_FILE_NAME),
        }
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is the default state (undecided).
    pub fn load(&self) -> Result<ConsentState, StateError> {
        let read_error = |source| StateError::Read {
            path: self.path.clone(),
            source,
        };
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(ConsentState::default());
            }
            Err(error) => return Err(read_error(error)),
        };
        let mut text = String::new();
        io::Read::read_to_string(
            &mut io::Read::take(file, MAX_STATE_FILE_BYTES + 1),
            &mut text,
        )
        .map_err(|error| match error.kind() {
            io::ErrorKind::InvalidData => StateError::Corrupt {
                path: self.path.clone(),
                detail: "not UTF-8 text".to_owned(),
            },
            _ => read_error(error),
        })?;
        if text.len() as u64 > MAX_STATE_FILE_BYTES {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                detail: format!("larger than {MAX_STATE_FILE_BYTES} bytes"),
            });
        }
        toml::from_str::<StateFile>(&text)
            .map(|file| file.telemetry)
            .map_err(|error| StateError::Corrupt {
                path: self.path.clone(),
                detail: error.message().to_owned(),
            })
    }

    /// Reads, changes and writes the state while holding an exclusive lock on
    /// `<dir>/telemetry_state.lock`, so that concurrent processes never lose each other's
    /// decisions. A damaged file is replaced: deciding again repairs it.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut ConsentState) -> R,
    ) -> Result<(ConsentState, R), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let lock = self.lock().map_err(write_error)?;
        let mut state = match self.load() {
            Ok(state) => state,
            Err(StateError::Corrupt { .. }) => ConsentState::default(),
            Err(error) => return Err(error),
        };
        let result = change(&mut state);
        self.save(&state)?;
        drop(lock);
        Ok((state, result))
    }

    /// Takes the state directory's exclusive lock; released when the returned file is dropped.
    /// Held only for the read-change-write of the state file; the audit log needs no lock
    /// because each entry is one append.
    pub fn lock(&self) -> io::Result<File> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(dir.join(LOCK_FILE_NAME))?;
        file.lock()?;
        Ok(file)
    }

    /// Writes the state atomically with mode 0600, creating the directory (mode 0700) if needed.
    pub fn save(&self, state: &ConsentState) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let text = toml::to_string(&StateFile {
            telemetry: state.clone(),
        })
        .map_err(|error| write_error(io::Error::other(error)))?;
        write_atomically(&self.path, text.as_bytes()).map_err(write_error)
    }
}

/// Replaces `path` with `contents` so that readers see either the old or the new file, never
/// a mix, even if the process dies half-way.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".{}.{:x}.tmp", std::process::id(), rand_suffix()));
    let temporary = dir.join(temporary_name);
    let result = (|| {
        let mut file = private_options().open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // Sync the directory so the rename itself survives a power cut.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Creates a directory readable only by its owner (on Unix), with its parents.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// A value that differs between concurrent writers, for temporary file names.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_undecided() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        assert_eq!(store.load().unwrap(), ConsentState::default());
    }

    #[test]
    fn round_trips_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(&dir.path().join("nested/home"));
        let mut state = ConsentState::default();
        let today: UtcDate = "2026-11-28".parse().unwrap();
        state.decide(true, today, 1);
        store.save(&state).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded, state);
        assert!(loaded.session_id.is_some());
        let text = fs::read_to_string(store.path()).unwrap();
        assert!(text.starts_with("[telemetry]\n"), "{text}");
        assert!(text.contains("decision_date = \"2026-11-28\""), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let dir_mode = fs::metadata(store.path().parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(dir_mode, 0o700);
        }
        let leftovers: Vec<_> = fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn disabling_forgets_the_session_id() {
        let today: UtcDate = "2026-11-28".parse().unwrap();
        let mut state = ConsentState::default();
        state.decide(true, today, 1);
        state.decide(false, today, 1);
        assert_eq!(state.enabled, Some(false));
        assert_eq!(state.session_id, None);
    }

    #[test]
    fn old_consent_versions_no_longer_count() {
        let today: UtcDate = "2026-11-28".parse().unwrap();
        let mut state = ConsentState::default();
        assert_eq!(state.decision_for(1), None);
        state.decide(true, today, 1);
        assert_eq!(state.decision_for(1), Some(true));
        assert_eq!(
            state.decision_for(2),
            None,
            "consent given for version 1 does not cover version 2"
        );
        state.decide(true, today, 2);
        assert_eq!(state.decision_for(2), Some(true));
    }

    #[test]
    fn updates_under_the_lock_repair_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        fs::write(store.path(), "[telemetry\n").unwrap();
        let today: UtcDate = "2026-11-28".parse().unwrap();
        let (state, ()) = store.update(|state| state.decide(false, today, 1)).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert_eq!(state.enabled, Some(false));
    }

    #[test]
    fn concurrent_updates_are_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        let today: UtcDate = "2026-11-28".parse().unwrap();
        std::thread::scope(|scope| {
            for index in 0..8 {
                let store = store.clone();
                scope.spawn(move || {
                    for _ in 0..10 {
                        store
                            .update(|state| state.decide(index % 2 == 0, today, 1))
                            .unwrap();
                        store.update(|state| state.prompted = true).unwrap();
                    }
                });
            }
        });
        let state = store.load().unwrap();
        assert!(state.prompted);
        assert!(state.enabled.is_some());
    }

    #[test]
    fn damaged_files_are_reported_never_read_as_consent() {
        let cases: &[&[u8]] = &[
            b"[telemetry]\nenabled = \"yes\"\n",
            b"enabled = true\n",
            b"[telemetry]\nenabled = true\nsession_id = \"not-a-uuid\"\n",
            b"[telemetry]\nenabled = true\ndecision_date = \"2026-11-28T10:00:00Z\"\n",
            b"\xff\xfe\x00garbage",
            b"[telemetry",
        ];
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        for contents in cases {
            fs::write(store.path(), contents).unwrap();
            let error = store.load().expect_err("damaged file accepted");
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            assert!(
                error.to_string().contains("telemetry_state.toml"),
                "{error}"
            );
        }
    }
}
