//! A durable spool of serialized events in one SQLite file.
//!
//! Architecture Invariant: every write is one SQLite transaction, so a process killed at any
//! moment leaves either the whole batch or none of it; and every event read back is checked
//! with [`EncodedEvent::from_stored`] before it can reach a transport.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, params};
use telemetry_model::{EncodedEvent, EventId};

use crate::{Buffer, BufferError, BufferStats, Claim, ClaimId};

/// The file name of the spool inside an SDK's state directory.
pub const SPOOL_FILE_NAME: &str = "telemetry_spool.sqlite3";

/// How long a claim stays exclusive unless [`SqliteSpool::with_claim_lease`] says otherwise.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// How long a statement waits for another connection (or process) to finish writing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The newest schema version this library reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How much a [`SqliteSpool`] holds before it drops its oldest unclaimed events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpoolLimits {
    /// The most events held, claimed or not. Default 100 000; at least one is always allowed.
    pub max_events: usize,
    /// The most bytes of event JSON held, claimed or not. Default 50 MiB.
    /// The file is larger than this by SQLite's page and index overhead.
    pub max_bytes: u64,
    /// Events older than this (by the local time they were appended) are dropped, never sent.
    /// Default 30 days.
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

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A durable, bounded [`Buffer`] in one SQLite file, shared safely by several processes.
///
/// # Storage
///
/// One row per event in table `events`: an integer key `seq` in the order of appending, the
/// event id (unique, so appending an id that is already held is ignored), the JSON, its
/// length in bytes, the local unix second it was appended (never sent), and the claim id and
/// lease expiry while a sender holds it.
/// The order has its own key rather than SQLite's implicit rowid, which `VACUUM` may renumber.
/// Table `totals` holds the number and bytes of the rows, kept exact by triggers, so that
/// bounds are checked without scanning; table `meta` holds the drop counters for each reason.
/// The schema version is `PRAGMA user_version` ([`SCHEMA_VERSION`]); a newer file is refused
/// with [`SpoolError::NewerSchema`] rather than misread.
///
/// # Durability
///
/// The journal is a write-ahead log (`PRAGMA journal_mode = WAL`, checked after it is set:
/// [`SpoolError::NotWal`] when the file system refuses it), so readers never block the
/// writer and a killed process leaves no half-written batch.
/// `PRAGMA synchronous = NORMAL` syncs the log only at checkpoints, not at every commit:
/// a committed batch survives the process crashing or being killed, but a power loss or
/// operating-system crash may lose the last few transactions; it never corrupts the file.
/// For telemetry, losing a few seconds of events on power loss is worth not paying an
/// `fsync` per batch.
/// `PRAGMA busy_timeout` ([`BUSY_TIMEOUT`]) lets two processes share one file: a writer
/// waits for the other's short transaction instead of failing.
///
/// # Claims across processes
///
/// [`claim`](Buffer::claim) runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's
/// single write lock before it reads, so two spools on one file (in one process or two)
/// never hand out the same event under two unexpired claims.
/// A claim is a lease ([`DEFAULT_CLAIM_LEASE`]): when its holder dies without acknowledging
/// or releasing it, its events are claimable again once the lease expires.
/// Acknowledging an expired claim still works while nobody else has claimed its events.
///
/// # Bounds
///
/// After each append, in the same transaction, events older than
/// [`SpoolLimits::max_age`] are dropped (counted in [`BufferStats::dropped_age`]), then the
/// oldest unclaimed events until the spool holds at most [`SpoolLimits::max_events`] and
/// [`SpoolLimits::max_bytes`] (counted in [`BufferStats::dropped_full`]).
/// Claimed events are never dropped while their lease runs; events under an expired lease
/// count as unclaimed. Claiming drops aged events first too, so an event older than
/// `max_age` is never handed out. The counters persist across restarts.
///
/// # Damage
///
/// [`open`](SqliteSpool::open) runs `PRAGMA quick_check` (time proportional to the file,
/// a fraction of a second at the default limits). A file that is not a database, or fails
/// the check, is moved aside to `<name>.corrupt-<unix seconds>` (its write-ahead log
/// beside it with `-wal` appended) and a new spool is started; [`SqliteSpool::recovery`]
/// then returns the notice to show the user, once. A row that fails validation when it is
/// read back is deleted and counted in [`BufferStats::dropped_invalid`], never sent.
/// A file SQLite can only read (read-only file system or file) is refused at open with
/// [`SpoolError::ReadOnly`]; storage failures after opening (a full disk, say) are
/// [`BufferError::Storage`] naming the file, and leave no half-written batch behind.
pub struct SqliteSpool {
    path: PathBuf,
    limits: SpoolLimits,
    claim_lease: Duration,
    clock: Clock,
    recovery: Option<Recovery>,
    connection: Mutex<Connection>,
}

impl fmt::Debug for SqliteSpool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSpool")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .field("claim_lease", &self.claim_lease)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl SqliteSpool {
    /// Opens the spool at `path`, creating it (but not its directory) when it does not exist,
    /// and migrating an older schema.
    ///
    /// A damaged file is moved aside and replaced by an empty spool; this still returns `Ok`,
    /// and [`recovery`](SqliteSpool::recovery) says what happened.
    pub fn open(path: impl AsRef<Path>, limits: SpoolLimits) -> Result<SqliteSpool, SpoolError> {
        SqliteSpool::open_with_clock(path, limits, SystemTime::now)
    }

    /// [`open`](SqliteSpool::open) with a clock other than the system's, which decides when
    /// events are too old and when claims expire. Tests use it to move time forward.
    pub fn open_with_clock(
        path: impl AsRef<Path>,
        limits: SpoolLimits,
        clock: impl Fn() -> SystemTime + Send + Sync + 'static,
    ) -> Result<SqliteSpool, SpoolError> {
        let path = path.as_ref().to_path_buf();
        let clock: Clock = Arc::new(clock);
        let (connection, recovery) = match open_connection(&path) {
            Ok(connection) => (connection, None),
            Err(OpenFailure::Fatal(error)) => return Err(error),
            Err(OpenFailure::Damaged(reason)) => {
                let moved_to = move_aside(&path, &reason, unix_seconds(clock()))?;
                let connection = open_connection(&path).map_err(|failure| match failure {
                    OpenFailure::Fatal(error) => error,
                    OpenFailure::Damaged(detail) => SpoolError::Open {
                        path: path.clone(),
                        detail,
                    },
                })?;
                let recovery = Recovery {
                    damaged: path.clone(),
                    moved_to,
                    reason,
                };
                (connection, Some(recovery))
            }
        };
        Ok(SqliteSpool {
            path,
            limits: SpoolLimits {
                max_events: limits.max_events.max(1),
                ..limits
            },
            claim_lease: DEFAULT_CLAIM_LEASE,
            clock,
            recovery,
            connection: Mutex::new(connection),
        })
    }

    /// Sets how long a claim stays exclusive (at least one second, as leases are stamped in
    /// whole seconds).
    pub fn with_claim_lease(mut self, lease: Duration) -> SqliteSpool {
        self.claim_lease = lease.max(Duration::from_secs(1));
        self
    }

    /// The spool file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits in force.
    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    /// How long a claim stays exclusive.
    pub fn claim_lease(&self) -> Duration {
        self.claim_lease
    }

    /// What [`open`](SqliteSpool::open) did with a damaged file, if it found one.
    /// Show it to the user once: it names the damaged file and where it was moved.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolls back any open transaction as it unwinds, so the
        // connection is usable as it is.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> i64 {
        unix_seconds((self.clock)())
    }

    fn storage_error(&self, action: &str, error: rusqlite::Error) -> BufferError {
        BufferError::Storage(format!(
            "cannot {action} the telemetry spool {}: {error}",
            self.path.display()
        ))
    }

    fn append_in(&self, connection: &mut Connection, events: &[EncodedEvent]) -> SqlResult<()> {
        let now = self.now();
        let tx = immediate(connection)?;
        {
            let mut insert = tx.prepare(
                "INSERT OR IGNORE INTO events (event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for event in events {
                let json = event.json();
                insert.execute(params![
                    event.id().to_string(),
                    json,
                    len_i64(json.len()),
                    now
                ])?;
            }
        }
        drop_aged(&tx, now, self.limits.max_age)?;
        self.drop_over_limits(&tx, now)?;
        tx.commit()
    }

    /// Drops the oldest available events until the spool is within its limits.
    fn drop_over_limits(&self, tx: &Transaction<'_>, now: i64) -> SqlResult<()> {
        let (events, bytes) = totals(tx)?;
        let excess_events = events.saturating_sub(len_i64(self.limits.max_events));
        let mut dropped = 0;
        if excess_events > 0 {
            dropped += tx.execute(
                "DELETE FROM events WHERE seq IN (
                     SELECT seq FROM events
                     WHERE claim_id IS NULL OR claim_expires_at <= ?1
                     ORDER BY seq LIMIT ?2)",
                params![now, excess_events],
            )?;
        }
        // Dropping by count also freed bytes: look at the totals again.
        let bytes = if dropped > 0 { totals(tx)?.1 } else { bytes };
        let max_bytes = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        let excess_bytes = bytes.saturating_sub(max_bytes);
        if excess_bytes > 0 {
            let mut doomed = Vec::new();
            {
                let mut oldest = tx.prepare(
                    "SELECT seq, byte_len FROM events
                     WHERE claim_id IS NULL OR claim_expires_at <= ?1
                     ORDER BY seq",
                )?;
                let mut rows = oldest.query(params![now])?;
                let mut freed = 0_i64;
                while freed < excess_bytes {
                    let Some(row) = rows.next()? else { break };
                    doomed.push(row.get::<_, i64>(0)?);
                    freed = freed.saturating_add(row.get::<_, i64>(1)?);
                }
            }
            let mut delete = tx.prepare("DELETE FROM events WHERE seq = ?1")?;
            for seq in doomed {
                dropped += delete.execute(params![seq])?;
            }
        }
        add_to_counter(tx, DROPPED_FULL, dropped)
    }

    fn claim_in(&self, connection: &mut Connection, max_events: usize) -> SqlResult<Option<Claim>> {
        let now = self.now();
        let expires_at =
            now.saturating_add(i64::try_from(self.claim_lease.as_secs()).unwrap_or(i64::MAX));
        let tx = immediate(connection)?;
        drop_aged(&tx, now, self.limits.max_age)?;
        let claim_id = unused_claim_id(&tx)?;
        let mut events = Vec::new();
        let mut invalid = 0;
        {
            let mut select = tx.prepare(
                "SELECT seq, event_id, json FROM events
                 WHERE seq > ?1 AND (claim_id IS NULL OR claim_expires_at <= ?2)
                 ORDER BY seq LIMIT ?3",
            )?;
            // The rows found are exactly the available rows between the first and the last
            // found, as this transaction holds the write lock: stamp them in one statement.
            let mut stamp = tx.prepare(
                "UPDATE events SET claim_id = ?1, claim_expires_at = ?2
                 WHERE seq BETWEEN ?3 AND ?4 AND (claim_id IS NULL OR claim_expires_at <= ?5)",
            )?;
            let mut delete = tx.prepare("DELETE FROM events WHERE seq = ?1")?;
            let mut after = i64::MIN;
            // Invalid rows are deleted as they are found, so look again until the claim is full
            // or nothing is left.
            while events.len() < max_events {
                let wanted = max_events - events.len();
                // Read the candidates to the end before changing any row, so no change can
                // disturb the query that is reading them.
                let found: Vec<(i64, Option<EncodedEvent>)> = select
                    .query_map(params![after, now, len_i64(wanted)], |row| {
                        Ok((row.get(0)?, stored_event(row)))
                    })?
                    .collect::<SqlResult<_>>()?;
                let (Some(&(first, _)), Some(&(last, _))) = (found.first(), found.last()) else {
                    break;
                };
                let complete = found.len() == wanted;
                for (seq, event) in found {
                    match event {
                        Some(event) => events.push(event),
                        None => {
                            delete.execute(params![seq])?;
                            invalid += 1;
                        }
                    }
                }
                stamp.execute(params![claim_id, expires_at, first, last, now])?;
                if !complete {
                    break;
                }
                after = last;
            }
        }
        add_to_counter(&tx, DROPPED_INVALID, invalid)?;
        tx.commit()?;
        Ok((!events.is_empty()).then(|| Claim {
            id: ClaimId(u64::from_ne_bytes(claim_id.to_ne_bytes())),
            events,
        }))
    }
}

impl Buffer for SqliteSpool {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn append(&self, events: Vec<EncodedEvent>) -> Result<(), BufferError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut connection = self.lock();
        self.append_in(&mut connection, &events)
            .map_err(|error| self.storage_error("append to", error))
    }

    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError> {
        if max_events == 0 {
            return Ok(None);
        }
        let mut connection = self.lock();
        self.claim_in(&mut connection, max_events)
            .map_err(|error| self.storage_error("claim events from", error))
    }

    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError> {
        let connection = self.lock();
        let deleted = connection
            .execute(
                "DELETE FROM events WHERE claim_id = ?1",
                params![claim_column(claim)],
            )
            .map_err(|error| self.storage_error("acknowledge events in", error))?;
        if deleted == 0 {
            return Err(BufferError::UnknownClaim(claim));
        }
        Ok(())
    }

    fn release(&self, claim: ClaimId) -> Result<(), BufferError> {
        let connection = self.lock();
        let released = connection
            .execute(
                "UPDATE events SET claim_id = NULL, claim_expires_at = NULL WHERE claim_id = ?1",
                params![claim_column(claim)],
            )
            .map_err(|error| self.storage_error("release events in", error))?;
        if released == 0 {
            return Err(BufferError::UnknownClaim(claim));
        }
        Ok(())
    }

    fn stats(&self) -> Result<BufferStats, BufferError> {
        let connection = self.lock();
        let read = || -> SqlResult<BufferStats> {
            connection.query_row(
                "SELECT
                     (SELECT events FROM totals),
                     (SELECT value FROM meta WHERE key = ?1),
                     (SELECT value FROM meta WHERE key = ?2),
                     (SELECT value FROM meta WHERE key = ?3)",
                [DROPPED_FULL, DROPPED_AGE, DROPPED_INVALID],
                |row| {
                    Ok(BufferStats {
                        pending: usize::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        dropped_full: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        dropped_age: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        dropped_invalid: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    })
                },
            )
        };
        read().map_err(|error| self.storage_error("read", error))
    }

    fn purge(&self) -> Result<usize, BufferError> {
        let connection = self.lock();
        let purged = connection
            .execute("DELETE FROM events", [])
            .map_err(|error| self.storage_error("purge", error))?;
        // Give the freed pages back to the file system and fold the log into the file, so the
        // deleted events do not linger on disk. Both are best effort: another process reading
        // the file can hold the checkpoint back, and the next one will finish it.
        let _ = connection.execute_batch("PRAGMA incremental_vacuum");
        let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(purged)
    }
}

type SqlResult<T> = Result<T, rusqlite::Error>;

const DROPPED_FULL: &str = "dropped_full";
const DROPPED_AGE: &str = "dropped_age";
const DROPPED_INVALID: &str = "dropped_invalid";

/// Schema migrations: entry `n` takes a file from `user_version` n to n + 1.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // 0 → 1: the first schema.
    "CREATE TABLE events (
         seq INTEGER PRIMARY KEY,
         event_id TEXT NOT NULL UNIQUE,
         json TEXT NOT NULL,
         byte_len INTEGER NOT NULL,
         inserted_at INTEGER NOT NULL,
         claim_id INTEGER,
         claim_expires_at INTEGER
     );
     CREATE INDEX events_by_claim ON events (claim_id) WHERE claim_id IS NOT NULL;
     CREATE INDEX events_by_age ON events (inserted_at);
     CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES
         ('dropped_full', 0), ('dropped_age', 0), ('dropped_invalid', 0);
     CREATE TABLE totals (
         id INTEGER PRIMARY KEY CHECK (id = 0),
         events INTEGER NOT NULL,
         bytes INTEGER NOT NULL
     );
     INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
     CREATE TRIGGER events_counted_on_insert AFTER INSERT ON events BEGIN
         UPDATE totals SET events = events + 1, bytes = bytes + NEW.byte_len;
     END;
     CREATE TRIGGER events_counted_on_delete AFTER DELETE ON events BEGIN
         UPDATE totals SET events = events - 1, bytes = bytes - OLD.byte_len;
     END;",
];

/// Why [`open_connection`] failed: the file is damaged (move it aside), or something else.
enum OpenFailure {
    Damaged(String),
    Fatal(SpoolError),
}

fn open_connection(path: &Path) -> Result<Connection, OpenFailure> {
    let open_error = |error: rusqlite::Error| {
        if is_damage(&error) {
            OpenFailure::Damaged(error.to_string())
        } else {
            OpenFailure::Fatal(SpoolError::Open {
                path: path.to_path_buf(),
                detail: error.to_string(),
            })
        }
    };
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // SQLite falls back to reading when it cannot write; a spool that cannot write is no use.
    if connection
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(open_error)?
    {
        return Err(OpenFailure::Fatal(SpoolError::ReadOnly {
            path: path.to_path_buf(),
        }));
    }
    // Check before anything writes: a damaged file is moved aside exactly as it was found.
    let check: String = connection
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(open_error)?;
    if check != "ok" {
        let problem = check.trim_start_matches("*** in database main ***").trim();
        return Err(OpenFailure::Damaged(format!(
            "quick_check: {}",
            problem.replace('\n', "; ")
        )));
    }
    let pages: i64 = connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(open_error)?;
    if pages == 0 {
        // Only possible before the first table exists; lets `purge` give freed pages back.
        connection
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(open_error)?;
    }
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::Fatal(SpoolError::NotWal {
            path: path.to_path_buf(),
            mode,
        }));
    }
    connection
        .execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(open_error)?;
    migrate(&mut connection).map_err(|error| match error {
        MigrateError::Sql(error) => open_error(error),
        MigrateError::Newer(found) => OpenFailure::Fatal(SpoolError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }),
    })?;
    Ok(connection)
}

enum MigrateError {
    Sql(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(error: rusqlite::Error) -> MigrateError {
        MigrateError::Sql(error)
    }
}

/// Brings the file to [`SCHEMA_VERSION`], one step at a time, in one transaction that holds the
/// write lock, so two processes opening a new file at once migrate it once.
fn migrate(connection: &mut Connection) -> Result<(), MigrateError> {
    let tx = immediate(connection)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let Ok(start) = usize::try_from(found) else {
        return Err(MigrateError::Newer(found));
    };
    if found > SCHEMA_VERSION {
        return Err(MigrateError::Newer(found));
    }
    for migration in &MIGRATIONS[start..] {
        tx.execute_batch(migration)?;
    }
    if found < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    }
    tx.commit()?;
    Ok(())
}

/// SQLite's verdict that the file is not a database, or a damaged one.
fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Moves a damaged spool (and its write-ahead log or journal) aside; returns the new path.
fn move_aside(path: &Path, reason: &str, now: i64) -> Result<PathBuf, SpoolError> {
    // Only ever rename a regular file: the path could name a device or a directory by mistake.
    let is_file = fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_file());
    if !is_file {
        return Err(SpoolError::NotAFile {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        });
    }
    let mut target = sibling(path, &format!(".corrupt-{now}"));
    let mut attempt = 1;
    while target.exists() {
        target = sibling(path, &format!(".corrupt-{now}-{attempt}"));
        attempt += 1;
    }
    fs::rename(path, &target).map_err(|source| SpoolError::MoveAside {
        path: path.to_path_buf(),
        to: target.clone(),
        reason: reason.to_owned(),
        source,
    })?;
    // A log or journal left beside the path would be replayed into the new file: move it with
    // the damaged file, under the name SQLite looks for next to it, so the pair can be inspected.
    for suffix in ["-wal", "-journal"] {
        let side = sibling(path, suffix);
        if side.exists() {
            let _ = fs::rename(&side, sibling(&target, suffix));
        }
    }
    let _ = fs::remove_file(sibling(path, "-shm"));
    Ok(target)
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn immediate(connection: &mut Connection) -> SqlResult<Transaction<'_>> {
    connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn totals(tx: &Transaction<'_>) -> SqlResult<(i64, i64)> {
    tx.query_row("SELECT events, bytes FROM totals", [], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
}

fn add_to_counter(tx: &Transaction<'_>, key: &str, amount: usize) -> SqlResult<()> {
    if amount > 0 {
        tx.execute(
            "UPDATE meta SET value = value + ?1 WHERE key = ?2",
            params![len_i64(amount), key],
        )?;
    }
    Ok(())
}

/// Drops every available event appended longer than `max_age` ago, and counts them.
fn drop_aged(tx: &Transaction<'_>, now: i64, max_age: Duration) -> SqlResult<()> {
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let cutoff = now.saturating_sub(max_age);
    let dropped = tx.execute(
        "DELETE FROM events
         WHERE inserted_at < ?1 AND (claim_id IS NULL OR claim_expires_at <= ?2)",
        params![cutoff, now],
    )?;
    add_to_counter(tx, DROPPED_AGE, dropped)
}

/// A fresh random claim id that no row carries. Random rather than sequential, because
/// several processes hand out claims on one file.
fn unused_claim_id(tx: &Transaction<'_>) -> SqlResult<i64> {
    loop {
        let candidate = i64::from_ne_bytes(random_u64().to_ne_bytes());
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE claim_id = ?1)",
            params![candidate],
            |row| row.get(0),
        )?;
        if !taken {
            return Ok(candidate);
        }
    }
}

fn claim_column(claim: ClaimId) -> i64 {
    i64::from_ne_bytes(claim.0.to_ne_bytes())
}

/// 64 random bits without a random-number crate: `RandomState` is seeded from the operating
/// system's randomness once per process, and each instance gets new keys; the time, process
/// id and a counter make every input distinct as well.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(since_epoch.as_nanos());
    }
    hasher.finish()
}

/// The event in a row of `seq, event_id, json`, or `None` when the row is not a valid event.
fn stored_event(row: &rusqlite::Row<'_>) -> Option<EncodedEvent> {
    let id: EventId = row.get_ref(1).ok()?.as_str().ok()?.parse().ok()?;
    let json = row.get_ref(2).ok()?.as_str().ok()?;
    EncodedEvent::from_stored(id, json).ok()
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |secs| -secs),
    }
}

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}
