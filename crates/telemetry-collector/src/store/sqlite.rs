//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! One connection writes (the collector's single writer calls [`Store::write`] with a whole
//! group of requests, committed in one transaction); another reads, so reports never wait for
//! a write. Events are rows of `events` with one column per field the reports group by; the
//! names an event carries (features, integrations, exception types, ...) are rows of
//! `event_names`, indexed by section and name. `synchronous = FULL`: an answered batch survives
//! a power cut, and group commit keeps the cost of that to one sync per group.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use telemetry_model::catalog::Section;
use telemetry_model::{Event, EventType, HourTimestamp, SessionId, UtcDate};

use super::summary::{self, Dialect, ReportRows};
use super::{Expired, Store, StoreError, WriteJob, WriteOutcome, wire_name};
use crate::report::{Report, ReportQuery, day_number};
use crate::validate::{Catalogs, Refusal};

/// The schema, applied once per version; `user_version` records what was applied.
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE
) STRICT;
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL UNIQUE,
    session INTEGER NOT NULL,
    sdk TEXT NOT NULL,
    sdk_version TEXT NOT NULL,
    library_version TEXT NOT NULL,
    runtime TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    interface TEXT NOT NULL,
    ci INTEGER NOT NULL,
    deployment TEXT NOT NULL,
    hour INTEGER NOT NULL,
    day INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    duration TEXT NOT NULL,
    concurrency_peak TEXT,
    outcome TEXT
) STRICT;
CREATE INDEX events_by_sdk_day ON events (sdk, day, event_type);
CREATE INDEX events_by_session ON events (session);
CREATE INDEX events_by_hour ON events (hour);
CREATE TABLE event_names (
    event INTEGER NOT NULL,
    section TEXT NOT NULL,
    name TEXT NOT NULL,
    bucket TEXT,
    PRIMARY KEY (event, section, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX event_names_by_name ON event_names (section, name);
CREATE TABLE erased_sessions (
    session_id TEXT PRIMARY KEY,
    day INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE erasures (
    day INTEGER PRIMARY KEY,
    sessions INTEGER NOT NULL
) STRICT;
CREATE TABLE refusals (
    day INTEGER NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, reason)
) STRICT, WITHOUT ROWID;
CREATE TABLE catalog_names (
    sdk TEXT NOT NULL,
    section TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (sdk, section, name)
) STRICT, WITHOUT ROWID;
CREATE TABLE daily_rollups (
    sdk TEXT NOT NULL,
    day INTEGER NOT NULL,
    dimension TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (sdk, day, dimension, key)
) STRICT, WITHOUT ROWID;
"];

/// How long a connection waits for another process's lock before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// The database file's name inside the data directory.
    pub const FILE_NAME: &'static str = "events.sqlite3";

    /// Opens (creating when missing) the store in `data_dir`, applying any migration due.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|error| StoreError::new("creating the data directory", error))?;
        let path = data_dir.join(Self::FILE_NAME);
        let mut writer = connect(&path)?;
        migrate(&mut writer)?;
        let reader = connect(&path)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || job(&mut lock(&inner.writer)))
            .await
            .map_err(|error| StoreError::new("the store's writer stopped", error))?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || job(&mut lock(&inner.reader)))
            .await
            .map_err(|error| StoreError::new("the store's reader stopped", error))?
    }
}

fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done transaction: rusqlite rolls back on drop.
    connection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let connection =
        Connection::open(path).map_err(|error| StoreError::new("opening the database", error))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| connection.pragma_update(None, "journal_mode", "WAL"))
        .and_then(|()| connection.pragma_update(None, "synchronous", "FULL"))
        // Deleted rows are overwritten, not left in free pages: erasure and retention are real.
        .and_then(|()| connection.pragma_update(None, "secure_delete", "ON"))
        // Every commit is still synced; checkpoints copy the log into the database less often
        // (the log grows to about 40 MB between them), which halves what a commit writes.
        .and_then(|()| connection.pragma_update(None, "wal_autocheckpoint", 10_000))
        .map_err(|error| StoreError::new("configuring the database", error))?;
    connection.set_prepared_statement_cache_capacity(64);
    Ok(connection)
}

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let fail = |error: rusqlite::Error| StoreError::new("migrating the database", error);
    let transaction = connection
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(fail)?;
    let applied: i64 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(fail)?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::new(
            "opening the database",
            format!(
                "it was written by a newer collector (schema {applied}; this one knows {})",
                MIGRATIONS.len()
            ),
        ));
    }
    for migration in &MIGRATIONS[applied..] {
        transaction.execute_batch(migration).map_err(fail)?;
    }
    transaction
        .pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(fail)?;
    transaction.commit().map_err(fail)
}

/// A transaction that takes the write lock at its start, so that a busy database is waited
/// for (up to the busy timeout) instead of failing when a read turns into a write while another
/// collector writes.
fn write_transaction(connection: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

fn day_of(hour: HourTimestamp) -> i64 {
    i64::try_from(hour.unix_seconds() / 86_400).unwrap_or(i64::MAX)
}

fn today() -> i64 {
    day_number(UtcDate::today())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn register_catalogs(&self, catalogs: &Catalogs) -> Result<(), StoreError> {
        let rows: Vec<(String, &'static str, String)> = catalogs
            .iter()
            .flat_map(|(sdk, catalog)| {
                Section::ALL.into_iter().flat_map(move |section| {
                    catalog
                        .entries(section)
                        .iter()
                        .map(move |entry| (sdk.to_owned(), section.key(), entry.name.to_string()))
                })
            })
            .collect();
        let sdks: Vec<String> = catalogs.iter().map(|(sdk, _)| sdk.to_owned()).collect();
        self.with_writer(move |connection| {
            let fail = |error| StoreError::new("recording the catalogs", error);
            let transaction = write_transaction(connection).map_err(fail)?;
            for sdk in &sdks {
                transaction
                    .execute("DELETE FROM catalog_names WHERE sdk = ?1", [sdk])
                    .map_err(fail)?;
            }
            {
                let mut insert = transaction
                    .prepare_cached(
                        "INSERT INTO catalog_names (sdk, section, name) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(fail)?;
                for (sdk, section, name) in &rows {
                    insert.execute(params![sdk, section, name]).map_err(fail)?;
                }
            }
            transaction.commit().map_err(fail)
        })
        .await
    }

    async fn write(&self, jobs: Vec<WriteJob>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.with_writer(move |connection| {
            let fail = |error| StoreError::new("storing events", error);
            let transaction = write_transaction(connection).map_err(fail)?;
            let today = today();
            let mut sessions = Sessions::new();
            let mut outcomes = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let mut outcome = WriteOutcome {
                    refused: job.refused.clone(),
                    ..WriteOutcome::default()
                };
                for event in &job.events {
                    write_event(&transaction, &mut sessions, event, &mut outcome).map_err(fail)?;
                }
                count_refusals(&transaction, today, &outcome).map_err(fail)?;
                outcomes.push(outcome);
            }
            transaction.commit().map_err(fail)?;
            let erased = jobs
                .iter()
                .flat_map(|job| &job.events)
                .any(|event| event.event_type == EventType::DeletionRequest);
            if erased {
                forget_old_pages(connection);
            }
            Ok(outcomes)
        })
        .await
    }

    async fn expire(&self, oldest: HourTimestamp) -> Result<Expired, StoreError> {
        self.with_writer(move |connection| {
            let fail = |error| StoreError::new("deleting expired events", error);
            let transaction = write_transaction(connection).map_err(fail)?;
            let oldest_seconds = i64::try_from(oldest.unix_seconds()).unwrap_or(i64::MAX);
            let days: Vec<(String, i64)> = {
                let mut statement = transaction
                    .prepare(
                        "SELECT DISTINCT sdk, day FROM events WHERE hour < ?1
                         AND NOT EXISTS (SELECT 1 FROM daily_rollups r
                                         WHERE r.sdk = events.sdk AND r.day = events.day)",
                    )
                    .map_err(fail)?;
                statement
                    .query_map([oldest_seconds], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(fail)?
                    .collect::<Result<_, _>>()
                    .map_err(fail)?
            };
            for (sdk, day) in &days {
                roll_up(&transaction, sdk, *day).map_err(fail)?;
            }
            transaction
                .execute(
                    "DELETE FROM event_names WHERE event IN (SELECT id FROM events WHERE hour < ?1)",
                    [oldest_seconds],
                )
                .map_err(fail)?;
            let events = transaction
                .execute("DELETE FROM events WHERE hour < ?1", [oldest_seconds])
                .map_err(fail)?;
            // Session numbers outlive their events by no more than this pass.
            transaction
                .execute(
                    "DELETE FROM sessions WHERE NOT EXISTS
                     (SELECT 1 FROM events WHERE events.session = sessions.id)",
                    [],
                )
                .map_err(fail)?;
            transaction
                .execute(
                    "DELETE FROM erased_sessions WHERE day < ?1",
                    [day_of(oldest)],
                )
                .map_err(fail)?;
            transaction.commit().map_err(fail)?;
            forget_old_pages(connection);
            Ok(Expired {
                events: events as u64,
                days_rolled_up: days.len() as u64,
            })
        })
        .await
    }

    async fn report(&self, query: &ReportQuery) -> Result<Report, StoreError> {
        let query = query.clone();
        self.with_reader(move |connection| {
            let fail = |error| StoreError::new("making the report", error);
            // One read transaction: every number comes from the same snapshot.
            let transaction = connection.transaction().map_err(fail)?;
            report(&transaction, &query).map_err(fail)
        })
        .await
    }

    async fn sdks(&self) -> Result<Vec<String>, StoreError> {
        self.with_reader(|connection| {
            let fail = |error| StoreError::new("listing SDKs", error);
            let mut statement = connection
                .prepare(
                    "SELECT sdk FROM catalog_names UNION SELECT sdk FROM events
                     UNION SELECT sdk FROM daily_rollups ORDER BY 1",
                )
                .map_err(fail)?;
            statement
                .query_map([], |row| row.get(0))
                .map_err(fail)?
                .collect::<Result<_, _>>()
                .map_err(fail)
        })
        .await
    }
}

/// Copies the WAL into the database and empties it, so the page images from before an erasure
/// or a retention pass (which still hold the deleted rows) are gone from disk too. Best effort:
/// a reader in the middle of a snapshot keeps the WAL until the next pass.
fn forget_old_pages(connection: &Connection) {
    let result = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match result {
        Ok(0) => {}
        Ok(_) => tracing::debug!("the WAL is still read; its old pages go at the next checkpoint"),
        Err(error) => tracing::warn!(%error, "checkpointing the WAL failed"),
    }
}

fn event_id_bytes(id: telemetry_model::EventId) -> [u8; 16] {
    uuid::Uuid::parse_str(&id.to_string()).map_or([0; 16], |id| id.into_bytes())
}

/// The number of each session seen in one group commit; `None` for an erased session.
type Sessions = HashMap<SessionId, Option<i64>>;

/// The session's number, made on its first event, or `None` when it was erased.
///
/// Events refer to their session by number: the index of events by session then grows at its
/// end instead of at random places (session ids are random), which halves what a commit writes.
fn session_number(
    transaction: &Transaction<'_>,
    sessions: &mut Sessions,
    session: SessionId,
) -> rusqlite::Result<Option<i64>> {
    if let Some(known) = sessions.get(&session) {
        return Ok(*known);
    }
    let text = session.to_string();
    let erased = transaction
        .prepare_cached("SELECT 1 FROM erased_sessions WHERE session_id = ?1")?
        .query_row([&text], |_| Ok(()))
        .optional()?
        .is_some();
    let number = if erased {
        None
    } else {
        let existing = transaction
            .prepare_cached("SELECT id FROM sessions WHERE session_id = ?1")?
            .query_row([&text], |row| row.get(0))
            .optional()?;
        match existing {
            Some(id) => Some(id),
            None => {
                transaction
                    .prepare_cached("INSERT INTO sessions (session_id) VALUES (?1)")?
                    .execute([&text])?;
                Some(transaction.last_insert_rowid())
            }
        }
    };
    sessions.insert(session, number);
    Ok(number)
}

fn write_event(
    transaction: &Transaction<'_>,
    sessions: &mut Sessions,
    event: &Event,
    outcome: &mut WriteOutcome,
) -> rusqlite::Result<()> {
    if event.event_type == EventType::DeletionRequest {
        sessions.insert(event.session_id, None);
        return erase(
            transaction,
            &event.session_id.to_string(),
            day_of(event.timestamp),
            outcome,
        );
    }
    let Some(session) = session_number(transaction, sessions, event.session_id)? else {
        outcome.refused.add(Refusal::Erased, 1);
        return Ok(());
    };
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO events (event_id, session, sdk, sdk_version, library_version, runtime,
                runtime_version, os, arch, interface, ci, deployment, hour, day, event_type,
                duration, concurrency_peak, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
             ON CONFLICT (event_id) DO NOTHING",
        )?
        .execute(params![
            // 16 bytes instead of 36 characters: the unique index on random ids is the one that
            // lands at scattered pages, so the smaller its entries the fewer pages a commit writes.
            event_id_bytes(event.event_id),
            session,
            event.sdk_name.as_str(),
            event.sdk_version.as_str(),
            event.library_version.as_str(),
            event.runtime.as_str(),
            event.runtime_version.as_str(),
            wire_name(&event.os),
            wire_name(&event.arch),
            wire_name(&event.interface),
            event.ci,
            wire_name(&event.deployment),
            i64::try_from(event.timestamp.unix_seconds()).unwrap_or(i64::MAX),
            day_of(event.timestamp),
            wire_name(&event.event_type),
            wire_name(&event.duration),
            event.concurrency_peak.as_ref().map(wire_name),
            event.outcome.as_ref().map(wire_name),
        ])?;
    if inserted == 0 {
        outcome.duplicates += 1;
        return Ok(());
    }
    outcome.accepted += 1;
    let id = transaction.last_insert_rowid();
    let mut insert = transaction.prepare_cached(
        "INSERT OR IGNORE INTO event_names (event, section, name, bucket) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let sets = [
        ("feature", &event.features),
        ("integration", &event.integrations),
        ("block_type", &event.block_types),
        ("command", &event.commands),
        ("config_error", &event.errors.config_errors),
        ("import_failure", &event.errors.integration_import_failures),
    ];
    for (section, names) in sets {
        for name in names {
            insert.execute(params![id, section, name.as_str(), None::<String>])?;
        }
    }
    for (name, bucket) in &event.metrics {
        insert.execute(params![id, "metric", name.as_str(), wire_name(bucket)])?;
    }
    for (name, bucket) in &event.errors.exception_types {
        insert.execute(params![
            id,
            "exception_type",
            name.as_str(),
            wire_name(bucket)
        ])?;
    }
    Ok(())
}

fn erase(
    transaction: &Transaction<'_>,
    session: &str,
    day: i64,
    outcome: &mut WriteOutcome,
) -> rusqlite::Result<()> {
    let new = transaction
        .prepare_cached(
            "INSERT INTO erased_sessions (session_id, day) VALUES (?1, ?2)
             ON CONFLICT (session_id) DO NOTHING",
        )?
        .execute(params![session, day])?;
    let number: Option<i64> = transaction
        .prepare_cached("SELECT id FROM sessions WHERE session_id = ?1")?
        .query_row([session], |row| row.get(0))
        .optional()?;
    if let Some(number) = number {
        transaction
            .prepare_cached(
                "DELETE FROM event_names WHERE event IN (SELECT id FROM events WHERE session = ?1)",
            )?
            .execute([number])?;
        transaction
            .prepare_cached("DELETE FROM events WHERE session = ?1")?
            .execute([number])?;
        transaction
            .prepare_cached("DELETE FROM sessions WHERE id = ?1")?
            .execute([number])?;
    }
    if new == 0 {
        outcome.duplicates += 1;
    } else {
        outcome.accepted += 1;
        transaction
            .prepare_cached(
                "INSERT INTO erasures (day, sessions) VALUES (?1, 1)
                 ON CONFLICT (day) DO UPDATE SET sessions = sessions + 1",
            )?
            .execute([day])?;
    }
    Ok(())
}

fn count_refusals(
    transaction: &Transaction<'_>,
    day: i64,
    outcome: &WriteOutcome,
) -> rusqlite::Result<()> {
    let mut upsert = transaction.prepare_cached(
        "INSERT INTO refusals (day, reason, count) VALUES (?1, ?2, ?3)
         ON CONFLICT (day, reason) DO UPDATE SET count = count + excluded.count",
    )?;
    for (reason, count) in outcome.refused.iter() {
        upsert.execute(params![
            day,
            reason.key(),
            i64::try_from(count).unwrap_or(i64::MAX)
        ])?;
    }
    Ok(())
}

/// The dimension rows of the SDK over days `from..=until`, per day or (with `per_day` false)
/// for the whole range, day reported as -1. Days already rolled up are left out.
fn dimension_rows(
    transaction: &Transaction<'_>,
    sdk: &str,
    (from, until): (i64, i64),
    per_day: bool,
) -> rusqlite::Result<Vec<summary::Row>> {
    let mut rows = Vec::new();
    for (name, sql) in summary::dimension_queries(Dialect::Sqlite, per_day) {
        let mut statement = transaction.prepare_cached(&sql)?;
        let found = statement.query_map(params![sdk, from, until], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                name,
                row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in found {
            rows.push(row?);
        }
    }
    Ok(rows)
}

/// Keeps one day's numbers in `daily_rollups` before its events are deleted.
fn roll_up(transaction: &Transaction<'_>, sdk: &str, day: i64) -> rusqlite::Result<()> {
    let rows = dimension_rows(transaction, sdk, (day, day), true)?;
    let mut insert = transaction.prepare_cached(
        "INSERT OR REPLACE INTO daily_rollups (sdk, day, dimension, key, value)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // A day with no rows of its own still gets a marker, so it is never rolled up twice.
    insert.execute(params![sdk, day, "events", "", 0])?;
    for (row_day, dimension, key, value) in rows {
        insert.execute(params![sdk, row_day, dimension, key, value])?;
    }
    Ok(())
}

fn report(transaction: &Transaction<'_>, query: &ReportQuery) -> rusqlite::Result<Report> {
    let (from, until) = query.day_numbers();
    let sdk = query.sdk.as_str();
    let rolled_up = transaction
        .prepare_cached(
            "SELECT day, dimension, key, value FROM daily_rollups
             WHERE sdk = ?1 AND day BETWEEN ?2 AND ?3",
        )?
        .query_map(params![sdk, from, until], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let features = transaction
        .prepare_cached(
            "SELECT name FROM catalog_names WHERE sdk = ?1 AND section = 'features' ORDER BY name",
        )?
        .query_map([sdk], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let refused = transaction
        .prepare_cached(
            "SELECT reason, SUM(count) FROM refusals WHERE day BETWEEN ?1 AND ?2 GROUP BY reason",
        )?
        .query_map(params![from, until], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let erased_sessions = transaction
        .prepare_cached(
            "SELECT COALESCE(SUM(sessions), 0) FROM erasures WHERE day BETWEEN ?1 AND ?2",
        )?
        .query_row(params![from, until], |row| row.get(0))?;
    let rows = ReportRows {
        per_day: dimension_rows(transaction, sdk, (from, until), true)?,
        totals: dimension_rows(transaction, sdk, (from, until), false)?,
        rolled_up,
        features,
        refused,
        erased_sessions,
    };
    Ok(summary::assemble(query, rows))
}
