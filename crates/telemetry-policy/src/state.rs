//! The consent state file, `<state dir>/telemetry_state.toml`: what the user decided and when,
//! and the anonymous session id.
//!
//! Written atomically (a temporary file in the same directory, synced, then renamed over the
//! old one) with mode 0600, so a crash or a second process never leaves a half-written file
//! and other local users cannot read it. Never written through a symbolic link: a state file
//! or lock that is one is refused, not followed and not silently replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemetry_model::{SessionId, UtcDate};

use crate::state_lock::{self, StateLock};
use telemetry_model::redact::{redacted_parser_message, redacted_path};

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
    /// When the session id was made (a date only): ids are replaced by age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_date: Option<UtcDate>,
    /// Whether events under the session id may have left the machine (a delivery under it
    /// succeeded): only then does opting out ask the destination to delete them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub session_used: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Why [`ConsentState::ensure_session_id`] replaced the id the file held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionReplaced {
    /// It was not a random (version 4) UUID, so not one this library made.
    NotRandom,
    /// It was older than the maximum age, or its date was missing or in the future.
    TooOld,
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
            if self.session_id.is_none() {
                self.new_session(today);
            }
        } else {
            self.forget_session();
        }
    }

    /// Forgets the session id and everything about it.
    pub fn forget_session(&mut self) {
        self.session_id = None;
        self.session_date = None;
        self.session_used = false;
    }

    /// Replaces the session id with a new random one made `today`.
    pub fn new_session(&mut self, today: UtcDate) -> SessionId {
        let id = SessionId::random();
        self.session_id = Some(id);
        self.session_date = Some(today);
        self.session_used = false;
        id
    }

    /// The session id to send with, made `today` when there is none, or when the one held is
    /// not a random (version 4) UUID, has no date, is dated in the future, or is older than
    /// `max_age_days`. Returns the id, whether one was made, and why an old one was replaced.
    pub fn ensure_session_id(
        &mut self,
        today: UtcDate,
        max_age_days: u64,
    ) -> (SessionId, bool, Option<SessionReplaced>) {
        let replaced = match (self.session_id, self.session_date) {
            (None, _) => None,
            (Some(id), _) if !id.is_random_v4() => Some(SessionReplaced::NotRandom),
            (Some(id), Some(made))
                if made <= today
                    && today.unix_seconds() - made.unix_seconds() < max_age_days * 86_400 =>
            {
                return (id, false, None);
            }
            (Some(_), _) => Some(SessionReplaced::TooOld),
        };
        (self.new_session(today), true, replaced)
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    telemetry: ConsentState,
}

/// Why the state file could not be read or written.
///
/// Messages show paths shortened by [`redacted_path`](crate::redacted_path): the state
/// directory comes from the user's environment and may be of any length.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read the telemetry state file {}: {source}", redacted_path(.path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid state file.
    #[error(
        "the telemetry state file {} is damaged ({detail}); telemetry stays off until you enable or disable it again",
        redacted_path(.path)
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said, with any value it quotes redacted.
        detail: String,
    },
    /// The file cannot be written.
    #[error("cannot write the telemetry state file {}: {source}", redacted_path(.path))]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The state file or its lock is a symbolic link (or the lock is not a regular file), which
    /// is never written through.
    #[error(
        "refusing to write telemetry state through {}: it is a symbolic link or not a regular file (replace it with a regular file)",
        redacted_path(.path)
    )]
    NotRegularFile {
        /// The state file or the lock file.
        path: PathBuf,
    },
    /// Another process held the state directory's lock for longer than the bounded wait.
    #[error(
        "another process holds the telemetry state lock {} and did not release it within {waited:?}; try again when it has finished",
        redacted_path(.path)
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited: Duration,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot take the telemetry state lock {}: {source}", redacted_path(.path))]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// The state file of one state directory.
///
/// The file is written only under the directory's lock, so that concurrent processes never lose
/// each other's decisions: [`update`](StateStore::update) is the one way to write it, and the
/// lock and the write it is made of are private to this module.
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
                detail: redacted_parser_message(error.message()),
            })
    }

    /// Reads, changes and writes the state while holding an exclusive lock on
    /// `<dir>/telemetry_state.lock`, so that concurrent processes never lose each other's
    /// decisions. A damaged file is replaced: deciding again repairs it. A change that leaves
    /// the state as it was writes nothing.
    ///
    /// Waits at most about two seconds for another process's lock, then fails with
    /// [`StateError::Locked`].
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut ConsentState) -> R,
    ) -> Result<(ConsentState, R), StateError> {
        let lock = self.lock()?;
        let (mut state, damaged) = match self.load() {
            Ok(state) => (state, false),
            Err(StateError::Corrupt { .. }) => (ConsentState::default(), true),
            Err(error) => return Err(error),
        };
        let before = state.clone();
        let result = change(&mut state);
        // Every start ensures the session id and marks it used before the first request, and
        // in a home that already has both neither changes anything: rewriting the same state
        // cost each process two temporary files, four syncs and two renames.
        // Unless the file on disk needs repair itself: a link is refused (by `save`), and a
        // file others can read is rewritten with mode 0600.
        if damaged || state != before || !self.is_private_file_or_missing() {
            self.save(&state)?;
        }
        drop(lock);
        Ok((state, result))
    }

    /// Whether the state file is missing, or a regular file (not a link) that only its owner
    /// can read and write: what `save` leaves.
    fn is_private_file_or_missing(&self) -> bool {
        match fs::symlink_metadata(&self.path) {
            Err(error) => error.kind() == io::ErrorKind::NotFound,
            Ok(metadata) if !metadata.is_file() => false,
            #[cfg(unix)]
            Ok(metadata) => {
                use std::os::unix::fs::PermissionsExt;
                metadata.permissions().mode() & 0o077 == 0
            }
            #[cfg(not(unix))]
            Ok(_) => true,
        }
    }

    /// Takes the state directory's exclusive lock; released when the returned lock is dropped.
    /// Held only for the read-change-write of the state file; the audit log needs no lock
    /// because each entry is one append.
    ///
    /// Another process may hold the lock for as long as it likes, so this waits at most about
    /// two seconds and then fails with [`StateError::Locked`] rather than block the SDK without
    /// bound. A lock file that is a symbolic link is refused.
    fn lock(&self) -> Result<StateLock, StateError> {
        state_lock::lock_state_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// Writes the state atomically with mode 0600, creating the directory (mode 0700) if needed.
    ///
    /// Refuses when the state file is a symbolic link: renaming over it would quietly replace
    /// a link the user (or someone else) made, and following it would write elsewhere.
    fn save(&self, state: &ConsentState) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        if fs::symlink_metadata(&self.path).is_ok_and(|metadata| metadata.is_symlink()) {
            return Err(StateError::NotRegularFile {
                path: self.path.clone(),
            });
        }
        let text = toml::to_string(&StateFile {
            telemetry: state.clone(),
        })
        .map_err(|error| write_error(io::Error::other(error)))?;
        write_atomically(&self.path, text.as_bytes()).map_err(write_error)
    }
}

/// Replaces `path` with `contents` so that readers see either the old or the new file, never
/// a mix, even if the process dies half-way.
///
/// Never writes through a symbolic link: the temporary file is created with `create_new`
/// (O_CREAT | O_EXCL, which fails on a link, even a dangling one), and the rename replaces
/// a link at `path` rather than following it. Callers that must not replace a link either
/// check for one first, as [`StateStore::save`] does.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
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
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

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

    #[cfg(unix)]
    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        store.update(|_| ()).unwrap();
        assert!(!store.path().exists(), "no file for a default state");
        store.update(|state| state.prompted = true).unwrap();
        // A write replaces the file (a new inode); no write keeps it.
        let inode = || fs::metadata(store.path()).unwrap().ino();
        let written = inode();
        store.update(|state| state.prompted = true).unwrap();
        assert_eq!(inode(), written, "the same state is not written again");
        store.update(|state| state.prompted = false).unwrap();
        assert_ne!(inode(), written, "a changed state is written");
        assert!(!store.load().unwrap().prompted);
        // A damaged file is replaced even when the change leaves the default state as it is.
        fs::write(store.path(), "[telemetry\n").unwrap();
        store.update(|_| ()).unwrap();
        assert_eq!(store.load().unwrap(), ConsentState::default());
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

    /// Makes `lock_holder` hold the lock of the state directory it names.
    const HOLD_LOCK_IN: &str = "TELEMETRY_POLICY_TEST_HOLD_STATE_LOCK_IN";

    /// What `lock_holder` prints once it holds the lock.
    const LOCK_HELD: &str = "telemetry-policy test: state lock held";

    /// Does nothing, except as the child process of
    /// `a_lock_held_by_another_process_is_given_up_on_with_a_clear_error`: then it takes the lock
    /// of the state directory named by [`HOLD_LOCK_IN`], says so on stdout, and holds the lock
    /// until its stdin is closed.
    #[test]
    fn lock_holder() {
        let Some(dir) = std::env::var_os(HOLD_LOCK_IN) else {
            return;
        };
        let _lock = StateStore::in_dir(Path::new(&dir)).lock().unwrap();
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{LOCK_HELD}").unwrap();
        stdout.flush().unwrap();
        io::copy(&mut io::stdin().lock(), &mut io::sink()).unwrap();
    }

    #[test]
    fn a_lock_held_by_another_process_is_given_up_on_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        let mut holder = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "state::tests::lock_holder", "--nocapture"])
            .env(HOLD_LOCK_IN, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut holder_says = BufReader::new(holder.stdout.take().unwrap()).lines();
        assert!(
            holder_says.any(|line| line.is_ok_and(|line| line == LOCK_HELD)),
            "the child process never took the lock"
        );
        let (sender, receiver) = mpsc::channel();
        let updater = store.clone();
        std::thread::spawn(move || {
            let outcome = updater.update(|state| state.prompted = true);
            let _ = sender.send(outcome.map(|_| ()));
        });
        // Only a guard against hanging forever when the wait is unbounded: the child is then
        // killed, the update goes through, and the assertion below fails.
        let outcome = receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                holder.kill().unwrap();
                receiver.recv().unwrap()
            });
        drop(holder.stdin.take());
        holder_says.for_each(drop);
        holder.wait().unwrap();
        let message = outcome
            .expect_err("the update went through although another process held the lock")
            .to_string();
        for expected in [LOCK_FILE_NAME, "another process holds"] {
            assert!(
                message.contains(expected),
                "expected `{expected}` in `{message}`"
            );
        }
        store.update(|state| state.prompted = true).unwrap();
        assert!(
            store.load().unwrap().prompted,
            "the lock is free once the holder is gone"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_state_file_and_its_lock_are_never_written_through_a_symbolic_link() {
        fn save(store: &StateStore) -> Result<(), StateError> {
            store.save(&ConsentState::default())
        }
        fn update(store: &StateStore) -> Result<(), StateError> {
            store.update(|state| state.prompted = true).map(|_| ())
        }
        type Write = fn(&StateStore) -> Result<(), StateError>;
        let cases: [(&str, Write); 3] = [
            (STATE_FILE_NAME, save),
            (STATE_FILE_NAME, update),
            (LOCK_FILE_NAME, update),
        ];
        for (link_name, write) in cases {
            for target_exists in [true, false] {
                let dir = tempfile::tempdir().unwrap();
                let target = dir.path().join("precious.txt");
                if target_exists {
                    fs::write(&target, "precious\n").unwrap();
                }
                let state_dir = dir.path().join("home");
                fs::create_dir(&state_dir).unwrap();
                let link = state_dir.join(link_name);
                std::os::unix::fs::symlink(&target, &link).unwrap();
                let store = StateStore::in_dir(&state_dir);
                let case = format!("{link_name}, target exists: {target_exists}");
                let message = write(&store)
                    .expect_err(&format!("{case}: written through the link"))
                    .to_string();
                for expected in [link_name, "symbolic link"] {
                    assert!(
                        message.contains(expected),
                        "{case}: expected `{expected}` in `{message}`"
                    );
                }
                assert_eq!(
                    fs::read_to_string(&target).ok(),
                    target_exists.then(|| "precious\n".to_owned()),
                    "{case}"
                );
                assert!(fs::symlink_metadata(&link).unwrap().is_symlink(), "{case}");
            }
        }
    }

    /// An update that changes nothing still repairs the file itself: a link whose target
    /// already holds the same state is refused, and a file others can read is made private.
    #[cfg(unix)]
    #[test]
    fn an_update_that_changes_nothing_still_refuses_a_link_and_repairs_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("home");
        fs::create_dir(&state_dir).unwrap();
        let target = dir.path().join("elsewhere.toml");
        fs::write(&target, "[telemetry]\nprompted = true\n").unwrap();
        std::os::unix::fs::symlink(&target, state_dir.join(STATE_FILE_NAME)).unwrap();
        let store = StateStore::in_dir(&state_dir);
        let message = store
            .update(|state| state.prompted = true)
            .expect_err("an update through a link")
            .to_string();
        assert!(message.contains("symbolic link"), "{message}");

        let readable = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(readable.path());
        fs::write(store.path(), "[telemetry]\nprompted = true\n").unwrap();
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        store.update(|state| state.prompted = true).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn messages_never_echo_credentials_or_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::in_dir(dir.path());
        fs::write(
            store.path(),
            "[telemetry]\nsession_id = \"https://alice:S3cret@host/v1?token=x\"\n",
        )
        .unwrap();
        let damaged = store.load().unwrap_err().to_string();
        let long_dir = format!("/{}", "x".repeat(130 * 1024));
        let long = StateStore::in_dir(Path::new(&long_dir));
        let unreadable = long.load().unwrap_err().to_string();
        let unwritable = long.save(&ConsentState::default()).unwrap_err().to_string();
        for message in [damaged, unreadable, unwritable] {
            assert!(message.contains(STATE_FILE_NAME), "{message}");
            for secret in ["alice", "S3cret", "token"] {
                assert!(
                    !message.contains(secret),
                    "`{secret}` echoed in `{message}`"
                );
            }
            assert!(message.len() < 400, "{} bytes echoed", message.len());
        }
        let unlockable = long.update(|_| ()).unwrap_err().to_string();
        assert!(unlockable.len() < 400, "{} bytes echoed", unlockable.len());
    }
}
