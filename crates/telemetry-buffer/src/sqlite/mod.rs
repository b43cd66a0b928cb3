//! A durable spool of serialized events in one SQLite file.
//!
//! Architecture Invariant: every write is one SQLite transaction, so a process killed at any
//! moment leaves either the whole batch or none of it; and every event read back is checked
//! with [`EncodedEvent::from_stored`] before it can reach a transport.
//!
//! This module holds [`SqliteSpool`], its [`Buffer`] implementation and what every part shares;
//! each section of the spool's doc has a module of its own: `storage` (appending, totals and
//! counters), `ledger` (the delivery ledger's rows), `migrations` (schema versions), `claims`
//! (claims across processes), `bounds`, `clocks` and `recovery` (damage). `types` holds the
//! other public types: limits, errors and the recovery notice.

mod bounds;
mod claims;
mod clocks;
mod ledger;
mod migrations;
mod pause;
mod recovery;
mod storage;
mod types;

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

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use telemetry_model::{EncodedEvent, EventId};

use crate::{
    Buffer, BufferError, BufferStats, Claim, ClaimId, DeliveryLedger, from_unix_millis,
    to_unix_millis,
};
use claims::{claim_column, release_claims};
use ledger::{as_stored, read_ledger};
use migrations::migrate;
use pause::PauseMarker;
use recovery::{OpenFailure, move_aside, open_connection};
pub use types::{
    BUSY_TIMEOUT, DEFAULT_CLAIM_LEASE, Recovery, SCHEMA_VERSION, SPOOL_FILE_NAME, SpoolError,
    SpoolLimits,
};

/// The most that dropping a spool waits for the write lock to release the claims it still holds.
/// Dropping happens on the way out of a process, which must not hang on another process's write;
/// a claim that cannot be released in time is still a lease, and frees its events when it expires.
const RELEASE_ON_DROP_WAIT: Duration = Duration::from_secs(1);

/// The largest write-ahead log a closing spool leaves for the next process to replay (64
/// pages of 4 KiB and their frame headers): replaying reads and checksums every page of it,
/// about a tenth of a millisecond here, against the four syncs of checkpointing and deleting
/// the log at every close.
const LOG_KEPT_AT_CLOSE: u64 = 256 * 1024;

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
/// [`may_be_paused`](Buffer::may_be_paused) does not read the ledger: every write that leaves a
/// delivery pause in effect makes an empty file `<spool>-paused` beside the spool, in its
/// transaction, and a write that finds no pause in effect and leaves none removes it, so a
/// sender learns with one `stat` that no pause binds it.
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
/// The log outlives the process: a closing spool does not fold it into the file (SQLite's
/// checkpoint on close, four syncs with the log's re-creation by the next process), unless it
/// has grown past 256 KiB; the next connection replays it, as after a crash. So the last
/// transactions of a process are, like every commit, on disk once the operating system writes
/// them back (within seconds), not synced at exit.
/// A new file is created with mode 0600 before SQLite opens it, and the log and its index
/// take the file's permissions.
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
    /// Exists while the ledger may hold a delivery pause (see [`pause`]).
    pause: PauseMarker,
    /// Cleared when the marker could not be made for a pause found at open: every question
    /// about a pause is then answered from the ledger.
    pause_marker_trusted: bool,
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
        let pause = PauseMarker::beside(&path);
        let pause_marker_trusted = pause_marker_at_open(&connection, &pause, clock());
        Ok(SqliteSpool {
            pause,
            pause_marker_trusted,
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

    /// Looks for the pause marker beside the file: no lock, no transaction.
    fn may_be_paused(&self) -> bool {
        !self.pause_marker_trusted || self.pause.may_be_paused()
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
            self.write_ledger_in(&tx, &before, &after)?;
            tx.commit()?;
            Ok(after)
        };
        update(&mut connection).map_err(|error| self.storage_error("update the ledger of", error))
    }
}

impl SqliteSpool {
    /// Keeps the write-ahead log small for the next process, which replays all of it when it
    /// opens the file: when the log file has grown beyond [`LOG_KEPT_AT_CLOSE`], its pages are
    /// folded into the file and the log is cut to nothing. Connections close without doing that
    /// themselves (see `open_connection`), so most short processes leave a log of a few pages
    /// and skip four syncs; about one in sixty (a process adds about one page) pays for the
    /// checkpoint. Never waits: when another connection reads or writes, the checkpoint is left
    /// to a later close, or to SQLite's own checkpoint once the log reaches a thousand pages.
    fn bound_log(connection: &Connection, path: &Path) {
        let log_len =
            std::fs::metadata(recovery::sibling(path, "-wal")).map_or(0, |meta| meta.len());
        if log_len <= LOG_KEPT_AT_CLOSE {
            return;
        }
        if connection.busy_timeout(Duration::ZERO).is_ok() {
            let _ = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

impl Drop for SqliteSpool {
    /// Releases the claims this spool handed out and never saw acknowledged or released, so
    /// that a process that ends in order leaves no events held for a lease. Best effort, with a
    /// bounded wait (one second, or less when the spool waits less): a claim left behind is
    /// still a lease, and frees its events when it expires. Then bounds the write-ahead log
    /// the connection leaves behind (see `bound_log`).
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(PoisonError::into_inner);
        let held: Vec<i64> = held.drain().map(claim_column).collect();
        let connection = self
            .connection
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if !held.is_empty() {
            let _ = connection.busy_timeout(self.busy_timeout.min(RELEASE_ON_DROP_WAIT));
            let _ = release_claims(connection, &held);
        }
        SqliteSpool::bound_log(connection, &self.path);
    }
}

type SqlResult<T> = Result<T, rusqlite::Error>;

const DROPPED_FULL: &str = "dropped_full";
const DROPPED_AGE: &str = "dropped_age";
const DROPPED_INVALID: &str = "dropped_invalid";
/// The row of `meta` that holds the unix second the file was created, by the clock of the
/// process that created it. Files created before it was recorded have no such row.
const CREATED_AT: &str = "created_at";

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

/// Makes the pause marker for a pause the file holds already (written by a version of this
/// library that kept no marker). Returns whether the marker can be trusted.
fn pause_marker_at_open(connection: &Connection, pause: &PauseMarker, now: SystemTime) -> bool {
    let ledger = connection
        .unchecked_transaction()
        .and_then(|tx| read_ledger(&tx));
    match ledger {
        Ok(ledger) => pause.follow_opened(&ledger, now).is_ok(),
        Err(_) => false,
    }
}

fn immediate(connection: &mut Connection) -> SqlResult<Transaction<'_>> {
    connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
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
