//! The spool's public types besides [`SqliteSpool`] itself: its constants, limits, errors and
//! the notice of a recovery.

use super::*;

/// The file name of the spool inside an SDK's state directory.
pub const SPOOL_FILE_NAME: &str = "telemetry_spool.sqlite3";

/// How long a claim stays exclusive unless [`SqliteSpool::with_claim_lease`] says otherwise.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// How long a statement waits for another connection (or process) to finish writing, unless
/// [`SqliteSpool::with_busy_timeout`] says otherwise.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest schema version this library reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// How much a [`SqliteSpool`] holds before it drops its oldest unclaimed events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// The most events held, claimed or not. Default 100 000; at least one is always allowed.
    pub max_events: usize,
    /// The most bytes of event JSON held, claimed or not. Default 50 MiB.
    /// The file is larger than this by SQLite's page and index overhead.
    pub max_bytes: u64,
    /// Events older than this (by the local time they were appended) are dropped, never sent.
    /// Default 30 days. A time that cannot be right counts as the time the spool first met the
    /// event (see "Clocks" on [`SqliteSpool`]).
    pub max_age: Duration,
}

impl SpoolLimits {
    /// The default limit on events.
    pub const DEFAULT_MAX_EVENTS: usize = 100_000;
    /// The default limit on bytes of event JSON: 50 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 50 * 1024 * 1024;
    /// The default limit on age: 30 days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
}

impl Default for SpoolLimits {
    fn default() -> SpoolLimits {
        SpoolLimits {
            max_events: SpoolLimits::DEFAULT_MAX_EVENTS,
            max_bytes: SpoolLimits::DEFAULT_MAX_BYTES,
            max_age: SpoolLimits::DEFAULT_MAX_AGE,
        }
    }
}

/// Why a spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite could not open, read or set up the file (missing directory, no permission,
    /// full disk, locked by a process that never lets go).
    #[error("cannot open the telemetry spool {path}: {detail}")]
    Open {
        /// The spool file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// SQLite could open the file only for reading (a read-only file system or file).
    #[error(
        "the telemetry spool {path} is read-only; expected a writable file in a writable directory"
    )]
    ReadOnly {
        /// The spool file.
        path: PathBuf,
    },
    /// The file was written by a newer version of this library.
    #[error(
        "the telemetry spool {path} has schema version {found}, but this library reads versions 0 to {supported}; upgrade the library or delete the file"
    )]
    NewerSchema {
        /// The spool file.
        path: PathBuf,
        /// The file's `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        supported: i64,
    },
    /// The file system refused write-ahead logging (some network file systems do).
    #[error(
        "the telemetry spool {path} cannot use write-ahead logging (journal mode is {mode}, expected wal); keep the state directory on a local file system"
    )]
    NotWal {
        /// The spool file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The file is damaged but could not be moved aside to start afresh.
    #[error(
        "the telemetry spool {path} is damaged ({reason}) and cannot be moved aside to {to}: {source}"
    )]
    MoveAside {
        /// The spool file.
        path: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// What the damage was.
        reason: String,
        /// Why the move failed.
        source: io::Error,
    },
    /// The path is damaged or not a database, and is not a regular file, so it is left alone.
    #[error(
        "the telemetry spool {path} is not a usable database ({reason}) and not a regular file, so it was left in place; expected a path to a regular file"
    )]
    NotAFile {
        /// The spool path.
        path: PathBuf,
        /// What SQLite reported.
        reason: String,
    },
}

/// What [`SqliteSpool::open`] did with a damaged file: it moved it aside and started afresh.
///
/// Its `Display` is the one message to show the user; it names both paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The spool path that held the damaged file (and now holds a new, empty spool).
    pub damaged: PathBuf,
    /// Where the damaged file now is: `<name>.corrupt-<unix seconds>`, next to it.
    pub moved_to: PathBuf,
    /// What was wrong with it, as SQLite reported it.
    pub reason: String,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the telemetry spool {} was damaged ({}); it was moved to {} and a new, empty spool was started",
            self.damaged.display(),
            self.reason,
            self.moved_to.display()
        )
    }
}
