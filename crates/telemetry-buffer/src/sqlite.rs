//! A durable spool of serialized events in one SQLite file.
//!
//! Architecture Invariant: every write is one SQLite transaction, so a process killed at any
//! moment leaves either the whole batch or none of it; and every event read back is checked
//! with [`EncodedEvent::from_stored`] before it can reach a transport.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use telemetry_model::{EncodedEvent, EventId};

use crate::{
    Buffer, BufferError, BufferStats, Claim, ClaimId, DeliveryLedger, from_unix_millis,
    to_unix_millis,
};

/// The file name of the spool inside an SDK's state directory.
pub const SPOOL_FILE_NAME: &str = "telemetry_spool.sqlite3";

/// How long a claim stays exclusive unless [`SqliteSpool::with_claim_lease`] says otherwise.
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(60);

/// How long a statement waits for another connection (or process) to finish writing, unless
/// [`SqliteSpool::with_busy_timeout`] says otherwise.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most that dropping a spool waits for the write lock to release the claims it still holds.
/// Dropping happens on the way out of a process, which must not hang on another process's write;
/// a claim that cannot be released in time is still a lease, and frees its events when it expires.
const RELEASE_ON_DROP_WAIT: Duration = Duration::from_secs(1);

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

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// A durable, bounded [`Buffer`] in one SQLite file, shared safely by several processes.
///
/// # Storage
///
/// One row per event in table `events`: an integer key `seq` in the order of appending, the
/// event id, the JSON, its length in bytes, and `inserted_at`, the local unix second it was
/// appended (never sent; see Clocks).
/// The order has its own key rather than SQLite's implicit rowid, which `VACUUM` may renumber.
/// A `seq` is never used twice, even after the newest events are deleted: appending takes the
/// next one from a high-water mark in table `totals` (or one past the largest `seq` held, if
/// that is larger), as SQLite's `AUTOINCREMENT` would, without its extra write per row.
/// That is what lets a claim name its events by a range of `seq` (see below).
/// Table `totals` also holds the number and bytes of the rows, which the spool's own code
/// keeps exact in the same transaction as every insert and delete (one update per
/// transaction, not per row), so that bounds are checked without scanning; table `claims`
/// holds one row per claim; table `meta` holds one integer per key: the drop counters for each
/// reason (`dropped_full`, `dropped_age`, `dropped_invalid`), the delivery ledger (below), and
/// `created_at`, the unix second the file was created by the clock of the process that created
/// it (a file created by an earlier version has none; see Clocks).
/// No index but the keys: the age bound needs none (see Bounds), and the event id has none
/// either. Ids are random, so an index on them puts every new id on a random page of the index:
/// with a backlog of 20,000 events, one append of a few hundred events rewrote almost every page
/// of that index, and delivering rewrote them again, so the spool slowed down as its backlog
/// grew (end to end, 0.5 times the rate of plain inserts into a table keyed by event id with
/// the index, 1.3 times without it; see docs/performance.md). What the index bought was ignoring an event appended twice, which
/// the telemetry worker never does; delivery is at least once in any case (a batch sent just
/// before a crash is sent again), so receivers drop duplicates by `event_id`, and an event
/// appended twice is sent twice, never lost.
///
/// The delivery ledger ([`Buffer::ledger`]) is one row of `meta` per field, by key:
/// `delivered`, `failed_deliveries`, `last_sent_ms`, `dropped_queue_full`, `dropped_scrubbed`,
/// `dropped_storage`, `dropped_rejected`, `purged`, `not_before_ms`, `consecutive_failures` and
/// `circuit_open_until_ms`.
/// Times are milliseconds since the Unix epoch, and zero is unset, so a time at or before the
/// epoch reads back unset; counts stop at `i64::MAX`, the largest SQLite integer.
/// A row that is absent reads as zero (or unset): a file from before the ledger reads as an
/// empty ledger without a migration or a new schema version, and an older library that opens
/// the file ignores the rows it does not know.
/// [`update_ledger`](Buffer::update_ledger) reads the ledger and writes the rows that changed in
/// one `BEGIN IMMEDIATE` transaction, so the changes of several spools and processes apply one
/// after the other and none is lost; it returns the ledger as stored (times cut to the
/// millisecond), which every later read returns field for field.
/// [`purge`](Buffer::purge) adds what it deleted to `purged` in the transaction that deletes it.
/// [`ledger`](Buffer::ledger) and [`stats`](Buffer::stats) only read: in WAL mode a reader takes
/// no lock that a writer holds, so they answer at once while another process writes, with what
/// was last committed.
///
/// The schema version is `PRAGMA user_version` ([`SCHEMA_VERSION`]); a newer file is refused
/// with [`SpoolError::NewerSchema`] rather than misread. Opening an older file migrates it and
/// keeps its events, their order and the counters; claims held in a version 1 file are released,
/// claims held in a version 2 file are kept.
/// Opening a file already at [`SCHEMA_VERSION`] reads its version without a lock and writes
/// nothing, so it never waits for another process's write; only creating or migrating a file
/// takes the write lock (waiting up to [`BUSY_TIMEOUT`] for it), and reads the version again
/// under it, as another process may have migrated the file in the meantime.
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
/// `PRAGMA busy_timeout` ([`BUSY_TIMEOUT`], or what [`SqliteSpool::with_busy_timeout`] sets)
/// lets two processes share one file: a writer waits for the other's short transaction instead
/// of failing. When the wait runs out, the operation fails with a [`BufferError::Storage`] (a
/// [`SpoolError::Open`] when opening had to create or migrate the file) whose message says
/// that the spool is busy, kept locked by another process, so that a caller can tell a busy
/// spool from a broken one.
///
/// # Claims across processes
///
/// A claim is one row of table `claims`: a random id, the range `first_seq..=last_seq` of
/// events it covers, the number and bytes of the events in that range (kept exact when some
/// of an expired claim's events are dropped, so acknowledging reads no event), and
/// `expires_at`, the unix second its lease ends: when it was made, by the clock of the spool
/// that made it, plus that spool's lease ([`DEFAULT_CLAIM_LEASE`], or
/// [`with_claim_lease`](SqliteSpool::with_claim_lease)).
/// An event is claimed exactly when a live claim covers its `seq`; the event rows themselves
/// are never rewritten for it.
/// [`claim`](Buffer::claim) takes the oldest event that no live claim covers and the events
/// after it, up to the limit asked for, stopping early at the first event a live claim
/// covers, so claims never overlap and one claim is one contiguous run.
/// As `seq` is never reused, an event appended later can never fall inside a claim's range.
/// [`acknowledge`](Buffer::acknowledge) deletes the claim's row and the events in its range;
/// [`release`](Buffer::release) deletes only the claim's row, so its events are the oldest
/// unclaimed ones again, in their original order.
///
/// [`claim`](Buffer::claim) runs in a `BEGIN IMMEDIATE` transaction, which takes SQLite's
/// single write lock before it reads, so two spools on one file (in one process or two)
/// never hand out the same event under two live claims. Appending, acknowledging and
/// purging, which also read before they write, take the lock the same way.
///
/// A claim is a lease. By the clock of the spool that looks at it, a claim is live exactly while
/// `now < expires_at <= now + lease`, where `lease` is that spool's own lease.
/// So a claim is expired once its lease has run out, and also while it ends further ahead than
/// a whole lease: it was made while the clock ran ahead (or the clock has since stepped back to
/// before it was made), and believing it would hold its events until the clock caught up, which
/// may be years. Its events may then be sent twice, never held and never lost.
/// Spools that share a file should use the same lease: one with a shorter lease than another
/// treats the other's fresh claims as expired in the same way.
/// An expired claim holds nothing: its events count as unclaimed (for the bounds too), and the
/// next claim that takes any of them deletes its row, so that its holder's late
/// acknowledgement gets [`BufferError::UnknownClaim`] rather than deleting events that are now
/// someone else's. Acknowledging or releasing an expired claim still works while nobody has
/// taken its events.
///
/// Every spool remembers the claims it handed out and has not seen acknowledged or released
/// (or purged), and releases them when it is dropped, in one transaction, waiting at most one
/// second (less when its busy timeout is shorter) for the write lock. So a process that ends in
/// order never leaves events held for a lease; only one that dies (killed, crashed, or ended
/// without dropping the spool) leaves its claims to expire. Releasing on drop is best effort:
/// a claim it could not release is still a lease, and frees its events when it expires.
///
/// # Bounds
///
/// After each append, in the same transaction, the oldest events older than
/// [`SpoolLimits::max_age`] are dropped (counted in [`BufferStats::dropped_age`]), then the
/// oldest unclaimed events until the spool holds at most [`SpoolLimits::max_events`] and
/// [`SpoolLimits::max_bytes`] (counted in [`BufferStats::dropped_full`]).
/// Claimed events are never dropped while their lease runs; events under an expired lease
/// count as unclaimed.
/// Events are appended in the order of the local clock, so the age bound on append only looks
/// at the oldest events by `seq` and stops at the first that is young enough (re-stamping, and
/// looking past, events at the front whose time is implausible; see Clocks), which costs one
/// row read when nothing is too old. After the clock steps backwards, an old event can sit
/// behind a younger one and outlive that look; but claiming checks the age of every event it
/// reads and drops (and counts) the ones older than `max_age` instead of handing them out, so
/// an event older than `max_age` is never handed out. The counters persist across restarts.
///
/// # Clocks
///
/// An event's age is measured from its `inserted_at`, which is believed only when it is
/// plausible: no earlier than the spool existed, and no later than a lease from now.
/// The spool existed from `created_at`, but never before 2025-02-20T00:00:00Z: the release of
/// Rust 1.85, the first compiler for the 2024 edition that every version of this crate is
/// written in, so no spool of any version can hold an event appended earlier.
/// A file without `created_at` (created by a version before it was recorded) existed from that
/// date; so does a file created while the clock read earlier (1970, say).
/// A `created_at` later than a lease from now is not believed, but left in the file: the file
/// was created while the clock ran ahead, or the clock runs behind now and `created_at` is
/// right again once the clock is.
/// An event whose `inserted_at` is implausible was appended while the clock was wrong (it read
/// 1970, or ran ahead): it is never dropped as too old. Whenever an append or a claim meets it,
/// its `inserted_at` is set to now, and it ages from then, so it is sent, or dropped as too old
/// `max_age` after it was first met, never held for good.
/// One thing no rule can tell from time passing is a clock that jumps ahead now: the events
/// appended before it look old, and are dropped and counted in [`BufferStats::dropped_age`].
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
    busy_timeout: Duration,
    recovery: Option<Recovery>,
    connection: Mutex<Connection>,
    /// The claims this spool handed out and has not seen acknowledged or released (nor purged):
    /// dropping the spool releases them.
    held: Mutex<HashSet<ClaimId>>,
    /// Counts kept beside the spool for when its disk is full.
    #[cfg(unix)]
    overflow: crate::overflow::OverflowCounts,
}

impl fmt::Debug for SqliteSpool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteSpool")
            .field("path", &self.path)
            .field("limits", &self.limits)
            .field("claim_lease", &self.claim_lease)
            .field("busy_timeout", &self.busy_timeout)
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
        let (connection, recovery) = match open_connection(&path, unix_seconds(clock())) {
            Ok(connection) => (connection, None),
            Err(OpenFailure::Fatal(error)) => return Err(error),
            Err(OpenFailure::Damaged(reason)) => {
                let moved_to = move_aside(&path, &reason, unix_seconds(clock()))?;
                let connection = open_connection(&path, unix_seconds(clock())).map_err(
                    |failure| match failure {
                        OpenFailure::Fatal(error) => error,
                        OpenFailure::Damaged(detail) => SpoolError::Open {
                            path: path.clone(),
                            detail,
                        },
                    },
                )?;
                let recovery = Recovery {
                    damaged: path.clone(),
                    moved_to,
                    reason,
                };
                (connection, Some(recovery))
            }
        };
        Ok(SqliteSpool {
            limits: SpoolLimits {
                max_events: limits.max_events.max(1),
                ..limits
            },
            claim_lease: DEFAULT_CLAIM_LEASE,
            busy_timeout: BUSY_TIMEOUT,
            clock,
            recovery,
            #[cfg(unix)]
            overflow: {
                let overflow = crate::overflow::OverflowCounts::beside(&path);
                overflow.prepare();
                overflow
            },
            path,
            connection: Mutex::new(connection),
            held: Mutex::new(HashSet::new()),
        })
    }

    /// Sets how long a claim stays exclusive (at least one second, as leases are recorded in
    /// whole seconds). Spools that share a file should use the same lease: each treats a claim
    /// that ends further ahead than its own lease as expired (see "Claims across processes").
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

    /// Sets how long each operation waits for another process (or connection) that holds the
    /// spool's write lock, instead of [`BUSY_TIMEOUT`]. When the wait runs out, the operation
    /// fails with a [`BufferError::Storage`] whose message says that the spool is busy, locked by
    /// another process.
    ///
    /// Reading ([`stats`](Buffer::stats), [`ledger`](Buffer::ledger)) and opening a file that is
    /// already at [`SCHEMA_VERSION`] need no lock, so a `status` command answers at once
    /// whatever the wait; a short wait (or none) only bounds what it might still have to write.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> SqliteSpool {
        let connection = self
            .connection
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // `sqlite3_busy_timeout` only reports misuse of a closed connection, and this one is open.
        let _ = connection.busy_timeout(timeout);
        self.busy_timeout = timeout;
        self
    }

    /// How long each operation waits for another process's write lock.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout
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

    /// The claims handed out and not yet acknowledged or released.
    fn held(&self) -> MutexGuard<'_, HashSet<ClaimId>> {
        // A set of ids cannot be left half-changed by a panic.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The times this transaction judges rows and claims by.
    ///
    /// A creation time further ahead than a lease is not believed: either the file was created
    /// while the clock ran ahead, and believing it would make every event appended since look
    /// implausible, or the clock runs behind now, and the creation time is right again once the
    /// clock is. So it is left in the file as it is, and only [`EARLIEST_PLAUSIBLE`] holds.
    fn moment_in(&self, tx: &Transaction<'_>) -> SqlResult<Moment> {
        let now = self.now();
        let latest = now.saturating_add(seconds_i64(self.claim_lease));
        let created_at = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [CREATED_AT],
                |row| Ok(integer(row, 0)),
            )
            .optional()?
            .flatten()
            .filter(|created_at| *created_at <= latest);
        Ok(Moment {
            now,
            earliest: created_at.map_or(EARLIEST_PLAUSIBLE, |created_at| {
                created_at.max(EARLIEST_PLAUSIBLE)
            }),
            latest,
        })
    }

    fn storage_error(&self, action: &str, error: rusqlite::Error) -> BufferError {
        let detail = if is_busy(&error) {
            busy_detail(self.busy_timeout)
        } else {
            error.to_string()
        };
        BufferError::Storage(format!(
            "cannot {action} the telemetry spool {}: {detail}",
            self.path.display()
        ))
    }

    /// Appends `events` and applies `change` to the ledger, in one transaction.
    fn append_in(
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
            write_ledger(&tx, &before, &as_stored(&after))?;
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

    /// Drops the oldest available events until the spool is within its limits.
    fn drop_over_limits(
        &self,
        tx: &Transaction<'_>,
        moment: &Moment,
        claims: &mut Option<Vec<ClaimRange>>,
        totals: &mut Totals,
    ) -> SqlResult<()> {
        let max_events = len_i64(self.limits.max_events);
        let max_bytes = i64::try_from(self.limits.max_bytes).unwrap_or(i64::MAX);
        let over = |totals: &Totals| totals.events > max_events || totals.bytes > max_bytes;
        if !over(totals) {
            return Ok(());
        }
        let mut doomed = Doomed::default();
        {
            let mut oldest = tx.prepare_cached("SELECT seq, byte_len FROM events ORDER BY seq")?;
            let mut rows = oldest.query([])?;
            while over(totals) {
                let Some(row) = rows.next()? else { break };
                let seq: i64 = row.get(0)?;
                let claims = loaded_claims(tx, claims)?;
                if live_claim_over(claims, seq, moment).is_some() {
                    doomed.keep();
                    continue;
                }
                let byte_len = integer(row, 1).unwrap_or(0);
                doomed.push(seq, byte_len, claims);
                totals.events -= 1;
                totals.bytes -= byte_len;
            }
        }
        doomed.delete(tx)?;
        add_to_counter(tx, DROPPED_FULL, doomed.events)
    }

    fn claim_in(&self, connection: &mut Connection, max_events: usize) -> SqlResult<Option<Claim>> {
        let tx = immediate(connection)?;
        let moment = self.moment_in(&tx)?;
        let now = moment.now;
        let cutoff = age_cutoff(now, self.limits.max_age);
        let expires_at = moment.latest;
        let claims = read_claims(&tx)?;
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut doomed = Doomed::default();
        let mut restamped = Runs::default();
        let (mut aged, mut invalid) = (0, 0);
        // The rows this claim covers, `first..=last` by `seq`: from the oldest row that no live
        // claim holds, through rows no live claim holds, up to the first row that one does.
        let mut range: Option<(i64, i64)> = None;
        {
            let mut select = tx.prepare_cached(
                "SELECT seq, inserted_at, byte_len, event_id, json FROM events
                 WHERE seq > ?1 ORDER BY seq",
            )?;
            let mut after = i64::MIN;
            let mut ceiling = i64::MAX;
            // Rows are only read here; the ones to delete are deleted once the query is done,
            // so that no change disturbs the query reading them.
            'scan: loop {
                let mut rows = select.query(params![after])?;
                while events.len() < max_events {
                    let Some(row) = rows.next()? else {
                        break 'scan;
                    };
                    let seq: i64 = row.get(0)?;
                    let first = match range {
                        Some((first, _)) => first,
                        None => {
                            if let Some(held) = live_claim_over(&claims, seq, &moment) {
                                // Skip the whole range of the live claim in one step.
                                after = held.last;
                                continue 'scan;
                            }
                            ceiling = claims
                                .iter()
                                .filter(|claim| claim.is_live(&moment) && claim.first > seq)
                                .map(|claim| claim.first - 1)
                                .min()
                                .unwrap_or(i64::MAX);
                            seq
                        }
                    };
                    if seq > ceiling {
                        break 'scan;
                    }
                    range = Some((first, seq));
                    let byte_len = integer(row, 2).unwrap_or(0);
                    match integer(row, 1) {
                        // Only a plausible time says that an event is too old; an implausible
                        // one was written while the clock was wrong (see "Clocks").
                        Some(inserted_at)
                            if inserted_at < cutoff && moment.is_plausible(inserted_at) =>
                        {
                            doomed.push(seq, byte_len, &claims);
                            restamped.skip();
                            aged += 1;
                        }
                        inserted_at => match inserted_at.and_then(|_| stored_event(row, 3)) {
                            Some(event) => {
                                if inserted_at.is_some_and(|at| !moment.is_plausible(at)) {
                                    restamped.push(seq);
                                } else {
                                    restamped.skip();
                                }
                                events.push(event);
                                bytes += byte_len;
                                doomed.keep();
                            }
                            None => {
                                doomed.push(seq, byte_len, &claims);
                                restamped.skip();
                                invalid += 1;
                            }
                        },
                    }
                }
                break;
            }
        }
        let claim_id = match range {
            Some((first, last)) if !events.is_empty() => {
                // Expired claims whose rows this claim takes lose them: their late
                // acknowledgement must not delete rows that are now this claim's. Expired claims
                // that end before `first` hold no rows any more (every row before `first` is
                // held by a live claim, and claims never overlap), so they go too.
                if claims
                    .iter()
                    .any(|claim| !claim.is_live(&moment) && claim.first <= last)
                {
                    tx.prepare_cached(
                        "DELETE FROM claims
                             WHERE (expires_at <= ?1 OR expires_at > ?2) AND first_seq <= ?3",
                    )?
                    .execute(params![now, moment.latest, last])?;
                }
                let claim_id = unused_claim_id(&claims);
                tx.prepare_cached(
                    "INSERT INTO claims (claim_id, first_seq, last_seq, events, bytes, expires_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    claim_id,
                    first,
                    last,
                    len_i64(events.len()),
                    bytes,
                    expires_at
                ])?;
                Some(claim_id)
            }
            _ => None,
        };
        restamp(&tx, &restamped, now)?;
        doomed.delete(&tx)?;
        subtract_from_totals(&tx, doomed.events, doomed.bytes)?;
        add_to_counter(&tx, DROPPED_AGE, aged)?;
        add_to_counter(&tx, DROPPED_INVALID, invalid)?;
        tx.commit()?;
        Ok(claim_id.map(|claim_id| Claim {
            id: ClaimId(u64::from_ne_bytes(claim_id.to_ne_bytes())),
            events,
        }))
    }

    /// Acknowledges `claim` and, when it was known, applies `change` to the ledger, in one
    /// transaction. Returns the ledger as written, or `None` for an unknown claim.
    fn acknowledge_in(
        &self,
        connection: &mut Connection,
        claim: ClaimId,
        change: Option<&mut dyn FnMut(&mut DeliveryLedger)>,
    ) -> SqlResult<Option<Option<DeliveryLedger>>> {
        let claim_id = claim_column(claim);
        let tx = immediate(connection)?;
        // The claim knows what its range holds, so this reads no event.
        let range: Option<(i64, i64, i64, i64)> = tx
            .prepare_cached(
                "SELECT first_seq, last_seq, events, bytes FROM claims WHERE claim_id = ?1",
            )?
            .query_row(params![claim_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .optional()?;
        let Some((first, last, events, bytes)) = range else {
            return Ok(None);
        };
        tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2")?
            .execute(params![first, last])?;
        tx.prepare_cached("DELETE FROM claims WHERE claim_id = ?1")?
            .execute(params![claim_id])?;
        subtract_from_totals(&tx, events, bytes)?;
        let ledger = match change {
            Some(change) => {
                let before = read_ledger(&tx)?;
                let mut after = before.clone();
                change(&mut after);
                let after = as_stored(&after);
                write_ledger(&tx, &before, &after)?;
                Some(after)
            }
            None => None,
        };
        tx.commit()?;
        Ok(Some(ledger))
    }

    fn purge_in(&self, connection: &mut Connection) -> SqlResult<usize> {
        let tx = immediate(connection)?;
        let purged = tx.prepare_cached("DELETE FROM events")?.execute([])?;
        tx.prepare_cached("DELETE FROM claims")?.execute([])?;
        tx.prepare_cached("UPDATE totals SET events = 0, bytes = 0")?
            .execute([])?;
        let before = read_ledger(&tx)?;
        let mut after = before.clone();
        after.purged = after.purged.saturating_add(purged as u64);
        write_ledger(&tx, &before, &as_stored(&after))?;
        tx.commit()?;
        Ok(purged)
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
        self.append_in(&mut connection, &events, None)
            .map_err(|error| self.storage_error("append to", error))
    }

    fn append_and_record(
        &self,
        events: Vec<EncodedEvent>,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<BufferStats, BufferError> {
        {
            let mut connection = self.lock();
            self.append_in(&mut connection, &events, Some(change))
                .map_err(|error| self.storage_error("append to", error))?;
        }
        self.stats()
    }

    fn claim(&self, max_events: usize) -> Result<Option<Claim>, BufferError> {
        if max_events == 0 {
            return Ok(None);
        }
        let mut connection = self.lock();
        let claim = self
            .claim_in(&mut connection, max_events)
            .map_err(|error| self.storage_error("claim events from", error))?;
        if let Some(claim) = &claim {
            self.held().insert(claim.id);
        }
        Ok(claim)
    }

    fn acknowledge(&self, claim: ClaimId) -> Result<(), BufferError> {
        let mut connection = self.lock();
        let known = self
            .acknowledge_in(&mut connection, claim, None)
            .map_err(|error| self.storage_error("acknowledge events in", error))?;
        self.held().remove(&claim);
        match known {
            Some(_) => Ok(()),
            None => Err(BufferError::UnknownClaim(claim)),
        }
    }

    fn acknowledge_and_record(
        &self,
        claim: ClaimId,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        let mut connection = self.lock();
        let known = self
            .acknowledge_in(&mut connection, claim, Some(change))
            .map_err(|error| self.storage_error("acknowledge events in", error))?;
        self.held().remove(&claim);
        match known {
            Some(Some(ledger)) => Ok(ledger),
            Some(None) | None => Err(BufferError::UnknownClaim(claim)),
        }
    }

    fn release(&self, claim: ClaimId) -> Result<(), BufferError> {
        let connection = self.lock();
        let released = connection
            .execute(
                "DELETE FROM claims WHERE claim_id = ?1",
                params![claim_column(claim)],
            )
            .map_err(|error| self.storage_error("release events in", error))?;
        self.held().remove(&claim);
        if released == 0 {
            return Err(BufferError::UnknownClaim(claim));
        }
        Ok(())
    }

    fn stats(&self) -> Result<BufferStats, BufferError> {
        let connection = self.lock();
        let read = || -> SqlResult<BufferStats> {
            connection
                .prepare_cached(
                    "SELECT
                     (SELECT events FROM totals),
                     (SELECT value FROM meta WHERE key = ?1),
                     (SELECT value FROM meta WHERE key = ?2),
                     (SELECT value FROM meta WHERE key = ?3)",
                )?
                .query_row([DROPPED_FULL, DROPPED_AGE, DROPPED_INVALID], |row| {
                    Ok(BufferStats {
                        pending: usize::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        dropped_full: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                        dropped_age: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        dropped_invalid: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })
        };
        read().map_err(|error| self.storage_error("read", error))
    }

    fn purge(&self) -> Result<usize, BufferError> {
        let mut connection = self.lock();
        let purged = self
            .purge_in(&mut connection)
            .map_err(|error| self.storage_error("purge", error))?;
        self.held().clear();
        // Give the freed pages back to the file system and fold the log into the file, so the
        // deleted events do not linger on disk. Both are best effort: another process reading
        // the file can hold the checkpoint back, and the next one will finish it.
        let _ = connection.execute_batch("PRAGMA incremental_vacuum");
        let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        Ok(purged)
    }

    fn ledger(&self) -> Result<DeliveryLedger, BufferError> {
        let mut connection = self.lock();
        let read = |connection: &mut Connection| -> SqlResult<DeliveryLedger> {
            // A deferred transaction only reads: in WAL mode it needs no lock that a writer
            // holds, so it answers while another process appends.
            let tx = connection.transaction()?;
            let ledger = read_ledger(&tx)?;
            tx.finish()?;
            Ok(ledger)
        };
        let mut ledger = read(&mut connection)
            .map_err(|error| self.storage_error("read the ledger of", error))?;
        #[cfg(unix)]
        if let Ok(overflow) = self.overflow.read() {
            ledger.add_counts(&overflow);
        }
        Ok(ledger)
    }

    #[cfg(unix)]
    fn add_counts_when_full(&self, counts: &DeliveryLedger) -> Result<(), BufferError> {
        self.overflow.add(counts).map_err(|error| {
            BufferError::Storage(format!(
                "cannot add to the overflow counts beside the telemetry spool {}: {error}",
                self.path.display()
            ))
        })
    }

    fn update_ledger(
        &self,
        change: &mut dyn FnMut(&mut DeliveryLedger),
    ) -> Result<DeliveryLedger, BufferError> {
        let mut connection = self.lock();
        let mut update = |connection: &mut Connection| -> SqlResult<DeliveryLedger> {
            let tx = immediate(connection)?;
            let before = read_ledger(&tx)?;
            let mut after = before.clone();
            change(&mut after);
            // What is returned is what every later `ledger` reads, field for field.
            let after = as_stored(&after);
            write_ledger(&tx, &before, &after)?;
            tx.commit()?;
            Ok(after)
        };
        update(&mut connection).map_err(|error| self.storage_error("update the ledger of", error))
    }
}

impl Drop for SqliteSpool {
    /// Releases the claims this spool handed out and never saw acknowledged or released, so
    /// that a process that ends in order leaves no events held for a lease. Best effort, with a
    /// bounded wait (one second, or less when the spool waits less): a claim left behind is
    /// still a lease, and frees its events when it expires.
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(PoisonError::into_inner);
        if held.is_empty() {
            return;
        }
        let held: Vec<i64> = held.drain().map(claim_column).collect();
        let connection = self
            .connection
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = connection.busy_timeout(self.busy_timeout.min(RELEASE_ON_DROP_WAIT));
        let _ = release_claims(connection, &held);
    }
}

/// Deletes the claims' rows in one transaction, so their events are the oldest unclaimed ones
/// again. A claim that is gone already (taken over after it expired) is skipped.
fn release_claims(connection: &mut Connection, claims: &[i64]) -> SqlResult<()> {
    let tx = immediate(connection)?;
    {
        let mut delete = tx.prepare_cached("DELETE FROM claims WHERE claim_id = ?1")?;
        for claim in claims {
            delete.execute([claim])?;
        }
    }
    tx.commit()
}

/// The ledger's fields as rows of table `meta`, by key. A key that is absent reads as zero (or
/// unset), so files written before a field existed need no migration, and an older library
/// that opens the file ignores keys it does not know.
mod ledger_keys {
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
    pub(super) const NOT_BEFORE_MS: &str = "not_before_ms";
    pub(super) const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
    pub(super) const CIRCUIT_OPEN_UNTIL_MS: &str = "circuit_open_until_ms";
}

fn ledger_rows(ledger: &DeliveryLedger) -> [(&'static str, i64); 12] {
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
        (NOT_BEFORE_MS, time(ledger.not_before)),
        (CONSECUTIVE_FAILURES, i64::from(ledger.consecutive_failures)),
        (CIRCUIT_OPEN_UNTIL_MS, time(ledger.circuit_open_until)),
    ]
}

/// Sets the field that the row `key` holds to `value`; other keys of `meta` are not the ledger's.
fn set_ledger_field(ledger: &mut DeliveryLedger, key: &str, value: i64) {
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
fn as_stored(ledger: &DeliveryLedger) -> DeliveryLedger {
    let mut stored = DeliveryLedger::default();
    for (key, value) in ledger_rows(ledger) {
        set_ledger_field(&mut stored, key, value);
    }
    stored
}

fn read_ledger(tx: &Transaction<'_>) -> SqlResult<DeliveryLedger> {
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

/// Writes the rows of `after` that differ from `before`.
fn write_ledger(
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
    Ok(())
}

type SqlResult<T> = Result<T, rusqlite::Error>;

/// How many prepared statements a connection keeps: more than the spool has, so that at a
/// steady rate no statement is compiled again (compiling was a fifth of the spool's CPU when
/// it appended a few dozen events every 100 ms).
const STATEMENT_CACHE: usize = 64;

const DROPPED_FULL: &str = "dropped_full";
const DROPPED_AGE: &str = "dropped_age";
const DROPPED_INVALID: &str = "dropped_invalid";
/// The row of `meta` that holds the unix second the file was created, by the clock of the
/// process that created it. Files created before it was recorded have no such row.
const CREATED_AT: &str = "created_at";

/// 2025-02-20T00:00:00Z, the release of Rust 1.85, the first stable compiler for the 2024
/// edition that every version of this crate is written in: no spool of any version can hold an
/// event appended before it. It is the creation time of files that have none recorded, and the
/// earliest creation time believed of any file (one created while the clock read 1970 says
/// 1970).
const EARLIEST_PLAUSIBLE: i64 = 1_740_009_600;

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
    // 1 → 2: claims move to their own table as ranges of `seq`, the spool keeps `totals`
    // itself (no triggers), `seq` is never reused, and the index on the append time goes.
    // The table is rebuilt (create, copy, drop, rename) rather than altered, which works on
    // any SQLite and drops the old triggers and indexes with the old table.
    // Claims held in a version 1 file are released: they are leases, so a holder that still
    // acknowledges one gets `UnknownClaim`, and its events are sent again (receivers drop
    // duplicates by event id) rather than lost.
    "CREATE TABLE events_v2 (
         seq INTEGER PRIMARY KEY,
         event_id TEXT NOT NULL UNIQUE,
         json TEXT NOT NULL,
         byte_len INTEGER NOT NULL,
         inserted_at INTEGER NOT NULL
     );
     INSERT INTO events_v2 (seq, event_id, json, byte_len, inserted_at)
         SELECT seq, event_id, json, byte_len, inserted_at FROM events ORDER BY seq;
     DROP TABLE events;
     ALTER TABLE events_v2 RENAME TO events;
     CREATE TABLE claims (
         claim_id INTEGER PRIMARY KEY,
         first_seq INTEGER NOT NULL,
         last_seq INTEGER NOT NULL,
         events INTEGER NOT NULL,
         bytes INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     );
     ALTER TABLE totals ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 1;
     UPDATE totals SET
         events = (SELECT COUNT(*) FROM events),
         bytes = (SELECT COALESCE(SUM(byte_len), 0) FROM events),
         next_seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM events);",
    // 2 → 3: the event id loses its UNIQUE constraint, and with it the index SQLite keeps for
    // it (see "Storage" on `SqliteSpool`). An automatic index cannot be dropped on its own, so
    // the table is rebuilt as in 1 → 2. `seq` is copied as it is, so claims keep their ranges.
    "CREATE TABLE events_v3 (
         seq INTEGER PRIMARY KEY,
         event_id TEXT NOT NULL,
         json TEXT NOT NULL,
         byte_len INTEGER NOT NULL,
         inserted_at INTEGER NOT NULL
     );
     INSERT INTO events_v3 (seq, event_id, json, byte_len, inserted_at)
         SELECT seq, event_id, json, byte_len, inserted_at FROM events ORDER BY seq;
     DROP TABLE events;
     ALTER TABLE events_v3 RENAME TO events;",
];

/// The schema [`MIGRATIONS`] arrive at, written in one step into a new file.
///
/// A new file used to be taken through every migration, and rebuilding its tables twice was
/// most of what opening a spool cost the first process of a user (or of a fresh CI home). A test
/// holds the two to the same tables, columns, indexes and rows.
const NEW_FILE_SCHEMA: &str = "CREATE TABLE events (
         seq INTEGER PRIMARY KEY,
         event_id TEXT NOT NULL,
         json TEXT NOT NULL,
         byte_len INTEGER NOT NULL,
         inserted_at INTEGER NOT NULL
     );
     CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES
         ('dropped_full', 0), ('dropped_age', 0), ('dropped_invalid', 0);
     CREATE TABLE totals (
         id INTEGER PRIMARY KEY CHECK (id = 0),
         events INTEGER NOT NULL,
         bytes INTEGER NOT NULL,
         next_seq INTEGER NOT NULL DEFAULT 1
     );
     INSERT INTO totals (id, events, bytes, next_seq) VALUES (0, 0, 0, 1);
     CREATE TABLE claims (
         claim_id INTEGER PRIMARY KEY,
         first_seq INTEGER NOT NULL,
         last_seq INTEGER NOT NULL,
         events INTEGER NOT NULL,
         bytes INTEGER NOT NULL,
         expires_at INTEGER NOT NULL
     );";

/// Why [`open_connection`] failed: the file is damaged (move it aside), or something else.
enum OpenFailure {
    Damaged(String),
    Fatal(SpoolError),
}

/// Opens (or creates) the file and brings it to [`SCHEMA_VERSION`]; `now` is recorded as the
/// spool's creation time when this creates it.
fn open_connection(path: &Path, now: i64) -> Result<Connection, OpenFailure> {
    let open_error = |error: rusqlite::Error| {
        if is_damage(&error) {
            OpenFailure::Damaged(error.to_string())
        } else {
            let detail = if is_busy(&error) {
                busy_detail(BUSY_TIMEOUT)
            } else {
                error.to_string()
            };
            OpenFailure::Fatal(SpoolError::Open {
                path: path.to_path_buf(),
                detail,
            })
        }
    };
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // Room for every statement the spool runs, so none is compiled twice.
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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
    migrate(&mut connection, now).map_err(|error| match error {
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
/// write lock, so two processes opening a new file at once migrate it once. A new file also gets
/// its creation time, `now`, in the same transaction.
///
/// A file already at [`SCHEMA_VERSION`] is left alone without taking the write lock: reading the
/// version is a read, which in WAL mode waits for no writer, so a process that only wants to
/// read (`status`) opens the spool at once while another process writes to it.
fn migrate(connection: &mut Connection, now: i64) -> Result<(), MigrateError> {
    let found = schema_version(connection)?;
    if found >= SCHEMA_VERSION {
        return if found == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(MigrateError::Newer(found))
        };
    }
    let tx = immediate(connection)?;
    // Read again under the lock: another process may have migrated the file in between.
    let found = schema_version(&tx)?;
    let Ok(start) = usize::try_from(found) else {
        return Err(MigrateError::Newer(found));
    };
    if found > SCHEMA_VERSION {
        return Err(MigrateError::Newer(found));
    }
    if found == 0 {
        tx.execute_batch(NEW_FILE_SCHEMA)?;
    } else {
        for migration in &MIGRATIONS[start..] {
            tx.execute_batch(migration)?;
        }
    }
    if found == 0 {
        tx.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2)")?
            .execute(params![CREATED_AT, now])?;
    }
    if found < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    }
    tx.commit()?;
    Ok(())
}

fn schema_version(connection: &Connection) -> SqlResult<i64> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// SQLite's verdict that another connection held a lock for longer than this one waits.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// What a storage error says when SQLite gave up waiting for another process's lock, so that a
/// caller can tell a busy spool from a broken one without a variant of its own.
fn busy_detail(waited: Duration) -> String {
    format!(
        "the spool is busy: another process (or connection) kept it locked for longer than the {waited:?} this spool waits; try again later"
    )
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

/// The running totals of table `totals`, read and written once per append.
struct Totals {
    events: i64,
    bytes: i64,
    next_seq: i64,
}

fn subtract_from_totals(tx: &Transaction<'_>, events: i64, bytes: i64) -> SqlResult<()> {
    if events > 0 {
        tx.prepare_cached("UPDATE totals SET events = events - ?1, bytes = bytes - ?2")?
            .execute(params![events, bytes])?;
    }
    Ok(())
}

fn add_to_counter(tx: &Transaction<'_>, key: &str, amount: i64) -> SqlResult<()> {
    if amount > 0 {
        tx.prepare_cached("UPDATE meta SET value = value + ?1 WHERE key = ?2")?
            .execute(params![amount, key])?;
    }
    Ok(())
}

/// Events appended before this unix second are too old to keep.
fn age_cutoff(now: i64, max_age: Duration) -> i64 {
    now.saturating_sub(seconds_i64(max_age))
}

/// Drops the available events appended before `cutoff` from the front of the spool, stopping
/// at the first event young enough, and counts them. Events at the front whose time is
/// implausible are not old but were appended while the clock was wrong: they get the time `now`
/// and the look goes on past them.
///
/// Events are appended in the order of the clock, so the front is where old events are; after
/// the clock steps backwards an old event can sit behind a younger one and outlive this, but
/// claiming checks the age of every event it reads, so it is dropped before it could be sent.
fn drop_aged_head(
    tx: &Transaction<'_>,
    moment: &Moment,
    cutoff: i64,
    claims: &mut Option<Vec<ClaimRange>>,
    totals: &mut Totals,
) -> SqlResult<()> {
    let mut doomed = Doomed::default();
    let mut restamped = Runs::default();
    {
        let mut oldest =
            tx.prepare_cached("SELECT seq, inserted_at, byte_len FROM events ORDER BY seq")?;
        let mut rows = oldest.query([])?;
        while let Some(row) = rows.next()? {
            let Some(inserted_at) = integer(row, 1) else {
                break;
            };
            let seq: i64 = row.get(0)?;
            if !moment.is_plausible(inserted_at) {
                restamped.push(seq);
                doomed.keep();
                continue;
            }
            if inserted_at >= cutoff {
                break;
            }
            restamped.skip();
            let claims = loaded_claims(tx, claims)?;
            if live_claim_over(claims, seq, moment).is_some() {
                doomed.keep();
                continue;
            }
            doomed.push(seq, integer(row, 2).unwrap_or(0), claims);
        }
    }
    restamp(tx, &restamped, moment.now)?;
    doomed.delete(tx)?;
    totals.events -= doomed.events;
    totals.bytes -= doomed.bytes;
    add_to_counter(tx, DROPPED_AGE, doomed.events)
}

/// One row of table `claims`: a lease on the events whose `seq` is in `first..=last`.
#[derive(Clone, Copy, Debug)]
struct ClaimRange {
    id: i64,
    first: i64,
    last: i64,
    expires_at: i64,
}

impl ClaimRange {
    fn covers(&self, seq: i64) -> bool {
        (self.first..=self.last).contains(&seq)
    }

    /// Whether the lease still runs. A lease that ends further ahead than a lease from now was
    /// taken while the clock ran ahead: it counts as expired, or it would hold its events until
    /// the clock caught up, which may be years.
    fn is_live(&self, moment: &Moment) -> bool {
        self.expires_at > moment.now && self.expires_at <= moment.latest
    }
}

/// The times one transaction judges rows and claims by, in unix seconds (see "Clocks" on
/// [`SqliteSpool`]).
#[derive(Clone, Copy, Debug)]
struct Moment {
    now: i64,
    /// No event can have been appended before this: the later of the spool's creation and
    /// [`EARLIEST_PLAUSIBLE`].
    earliest: i64,
    /// `now` plus this spool's lease: no claim made now expires later, and no event can have
    /// been appended later.
    latest: i64,
}

impl Moment {
    /// Whether `inserted_at` can be when an event was appended. When it cannot, the event was
    /// appended while the clock was wrong, and it is treated as appended now.
    fn is_plausible(&self, inserted_at: i64) -> bool {
        (self.earliest..=self.latest).contains(&inserted_at)
    }
}

/// Every claim, live or expired. The table holds a row per batch being delivered, so few.
fn read_claims(tx: &Transaction<'_>) -> SqlResult<Vec<ClaimRange>> {
    let mut select =
        tx.prepare_cached("SELECT claim_id, first_seq, last_seq, expires_at FROM claims")?;
    select
        .query_map([], |row| {
            Ok(ClaimRange {
                id: row.get(0)?,
                first: row.get(1)?,
                last: row.get(2)?,
                expires_at: row.get(3)?,
            })
        })?
        .collect()
}

fn live_claim_over<'a>(
    claims: &'a [ClaimRange],
    seq: i64,
    moment: &Moment,
) -> Option<&'a ClaimRange> {
    claims
        .iter()
        .find(|claim| claim.is_live(moment) && claim.covers(seq))
}

/// Every claim, read from the file the first time it is asked for in a transaction.
fn loaded_claims<'a>(
    tx: &Transaction<'_>,
    claims: &'a mut Option<Vec<ClaimRange>>,
) -> SqlResult<&'a [ClaimRange]> {
    Ok(match claims {
        Some(claims) => claims,
        None => claims.insert(read_claims(tx)?),
    })
}

/// Rows gathered while a query reads them in `seq` order, to change once the query is done (a row
/// must not change under the query reading it), as runs of rows with no other row read between
/// them, so that each run is changed with one statement.
#[derive(Default)]
struct Runs {
    runs: Vec<(i64, i64)>,
    run_is_open: bool,
}

impl Runs {
    fn push(&mut self, seq: i64) {
        match self.runs.last_mut() {
            Some(run) if self.run_is_open => run.1 = seq,
            _ => self.runs.push((seq, seq)),
        }
        self.run_is_open = true;
    }

    /// The row just read is not gathered, so the next gathered row starts a new run.
    fn skip(&mut self) {
        self.run_is_open = false;
    }
}

/// Gives the rows in `runs` the append time `now`: their own time was implausible (see "Clocks"
/// on [`SqliteSpool`]), so from now on they age as if appended now.
fn restamp(tx: &Transaction<'_>, runs: &Runs, now: i64) -> SqlResult<()> {
    if runs.runs.is_empty() {
        return Ok(());
    }
    let mut update =
        tx.prepare_cached("UPDATE events SET inserted_at = ?1 WHERE seq BETWEEN ?2 AND ?3")?;
    for &(first, last) in &runs.runs {
        update.execute(params![now, first, last])?;
    }
    Ok(())
}

/// Rows to delete, gathered as [`Runs`]. Counts their rows and bytes for `totals`, and for each
/// claim whose range holds some of them (an expired claim's events can be dropped), so that
/// the claim's own count stays exact for its late acknowledgement.
#[derive(Default)]
struct Doomed {
    runs: Runs,
    events: i64,
    bytes: i64,
    /// `(claim id, events, bytes)` taken out of each claim's range.
    from_claims: Vec<(i64, i64, i64)>,
}

impl Doomed {
    fn push(&mut self, seq: i64, byte_len: i64, claims: &[ClaimRange]) {
        self.runs.push(seq);
        self.events += 1;
        self.bytes += byte_len;
        if let Some(claim) = claims.iter().find(|claim| claim.covers(seq)) {
            match self
                .from_claims
                .iter_mut()
                .find(|(id, _, _)| *id == claim.id)
            {
                Some((_, events, bytes)) => {
                    *events += 1;
                    *bytes += byte_len;
                }
                None => self.from_claims.push((claim.id, 1, byte_len)),
            }
        }
    }

    /// The row just read stays, so the next doomed row starts a new run.
    fn keep(&mut self) {
        self.runs.skip();
    }

    fn delete(&self, tx: &Transaction<'_>) -> SqlResult<()> {
        if self.runs.runs.is_empty() {
            return Ok(());
        }
        let mut delete = tx.prepare_cached("DELETE FROM events WHERE seq BETWEEN ?1 AND ?2")?;
        for &(first, last) in &self.runs.runs {
            delete.execute(params![first, last])?;
        }
        for &(claim_id, events, bytes) in &self.from_claims {
            tx.prepare_cached(
                "UPDATE claims SET events = events - ?1, bytes = bytes - ?2 WHERE claim_id = ?3",
            )?
            .execute(params![events, bytes, claim_id])?;
        }
        Ok(())
    }
}

/// A fresh random claim id that no claim has. Random rather than sequential, because several
/// processes hand out claims on one file, and an id is never reused while the file lives.
fn unused_claim_id(claims: &[ClaimRange]) -> i64 {
    loop {
        let candidate = i64::from_ne_bytes(random_u64().to_ne_bytes());
        if claims.iter().all(|claim| claim.id != candidate) {
            return candidate;
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

/// The event in columns `event_id, json` of a row, starting at `column`, or `None` when the row
/// does not hold a valid event.
fn stored_event(row: &rusqlite::Row<'_>, column: usize) -> Option<EncodedEvent> {
    let id: EventId = row.get_ref(column).ok()?.as_str().ok()?.parse().ok()?;
    let json = row.get_ref(column + 1).ok()?.as_str().ok()?;
    EncodedEvent::from_stored(id, json).ok()
}

/// An integer column, or `None` when the row holds something else there (a damaged row).
fn integer(row: &rusqlite::Row<'_>, column: usize) -> Option<i64> {
    row.get_ref(column).ok()?.as_i64().ok()
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

fn seconds_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}
