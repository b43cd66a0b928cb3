//! The shared store: PostgreSQL, for any number of collectors on one database.
//!
//! `events` is partitioned by day, so retention drops whole partitions instead of deleting
//! rows. The names an event carries are one array column of its row (`section:name`, and
//! `section:name:bucket` for metrics and exception types): one row per event instead of one
//! per name halves what the database does per event (measured; see docs/performance.md). PostgreSQL requires the partition key in every unique constraint,
//! so the key is `(event_id, day)`: an event sent again carries the same timestamp, hence the
//! same day, and is still stored once. Partitions are made ahead of the writes that need them,
//! under an advisory lock, so collectors never race to create one.
//!
//! A write is one transaction per group: deletion requests first, then one multi-row
//! `INSERT … SELECT FROM UNNEST(…) ON CONFLICT DO NOTHING RETURNING event_id` (the returned ids
//! are the new events), then the refusal counts. Every group takes one transaction-level
//! advisory lock, shared to insert and exclusive when it erases, so an insert on one collector
//! and an erasure on another cannot interleave.
//! Migrations run at start under an advisory lock: ten collectors starting at once migrate once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use telemetry_model::catalog::Section;
use telemetry_model::{Event, EventType, HourTimestamp, UtcDate};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::summary::{self, Dialect, ReportRows};
use super::{Expired, Store, StoreError, WriteJob, WriteOutcome, wire_name};
use crate::report::{Report, ReportQuery, day_number};
use crate::validate::{Catalogs, Refusal};

/// Advisory lock keys (one namespace: the ASCII of "tlmy" in the high half).
const MIGRATION_LOCK: i64 = 0x746c_6d79_0000_0001;
const PARTITION_LOCK: i64 = 0x746c_6d79_0000_0002;
const RETENTION_LOCK: i64 = 0x746c_6d79_0000_0003;
const ERASURE_LOCK: i64 = 0x746c_6d79_0000_0004;

/// How long a request waits for a pooled connection, or for a new one.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a group commit is tried when the database breaks a deadlock by aborting it.
const WRITE_ATTEMPTS: usize = 3;

/// Group commits one collector runs at once; the pool keeps connections for retention and
/// reports beside them.
const CONCURRENT_WRITES: usize = 4;

/// Connections per collector: the writer, retention, and reports.
const POOL_SIZE: usize = 8;

/// The schema, one entry per version, applied in order under [`MIGRATION_LOCK`].
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE events (
    event_id uuid NOT NULL,
    day integer NOT NULL,
    session_id uuid NOT NULL,
    sdk text NOT NULL,
    sdk_version text NOT NULL,
    library_version text NOT NULL,
    runtime text NOT NULL,
    runtime_version text NOT NULL,
    os text NOT NULL,
    arch text NOT NULL,
    interface text NOT NULL,
    ci boolean NOT NULL,
    deployment text NOT NULL,
    hour bigint NOT NULL,
    event_type text NOT NULL,
    duration text NOT NULL,
    concurrency_peak text,
    outcome text,
    names text[] NOT NULL,
    PRIMARY KEY (event_id, day)
) PARTITION BY RANGE (day);
-- Reports read whole days, which are whole partitions: no index on (sdk, day) pays for its
-- cost on every insert. Erasure finds a session's events through this one.
CREATE INDEX events_by_session ON events (session_id);
CREATE TABLE erased_sessions (
    session_id uuid PRIMARY KEY,
    day integer NOT NULL
);
CREATE TABLE erasures (
    day integer PRIMARY KEY,
    sessions bigint NOT NULL
);
CREATE TABLE refusals (
    day integer NOT NULL,
    reason text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (day, reason)
);
CREATE TABLE catalog_names (
    sdk text NOT NULL,
    section text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (sdk, section, name)
);
CREATE TABLE daily_rollups (
    sdk text NOT NULL,
    day integer NOT NULL,
    dimension text NOT NULL,
    key text NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (sdk, day, dimension, key)
);
"];

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    pool: Pool,
    /// Days whose partitions this process knows to exist.
    partitions: Mutex<BTreeSet<i32>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: it is never shown.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

fn fail(context: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    // tokio-postgres says only "db error"; the server's own message (and its SQLSTATE) is in
    // the source. Neither carries a parameter's value.
    move |error| match error.as_db_error() {
        Some(db) => {
            let failure =
                StoreError::new(context, format!("{} ({})", db.message(), db.code().code()));
            let code = db.code();
            if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
            {
                failure.transient()
            } else {
                failure
            }
        }
        None => StoreError::new(context, error),
    }
}

fn pool_fail(context: &'static str) -> impl Fn(deadpool_postgres::PoolError) -> StoreError {
    move |error| StoreError::new(context, error)
}

fn day_of(hour: HourTimestamp) -> i32 {
    i32::try_from(hour.unix_seconds() / 86_400).unwrap_or(i32::MAX)
}

fn uuid_of(id: impl std::fmt::Display) -> Uuid {
    id.to_string().parse().unwrap_or_default()
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/name`, or
    /// `host=/socket/dir dbname=…`) and applies any migration due.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config = url.parse().map_err(|_| {
            StoreError::new(
                "--database",
                "not a PostgreSQL connection string: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            )
        })?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|error| StoreError::new("setting up the connection pool", error))?;
        let store = PostgresStore {
            pool,
            partitions: Mutex::new(BTreeSet::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let context = "migrating the database";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(fail(context))?;
        let result = async {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY)",
                )
                .await
                .map_err(fail(context))?;
            let applied: i32 = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .await
                .map_err(fail(context))?
                .get(0);
            let applied = usize::try_from(applied).unwrap_or(0);
            if applied > MIGRATIONS.len() {
                return Err(StoreError::new(
                    "opening the database",
                    format!(
                        "it was written by a newer collector (schema {applied}; this one knows {})",
                        MIGRATIONS.len()
                    ),
                ));
            }
            for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
                let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
                let transaction = client.transaction().await.map_err(fail(context))?;
                transaction
                    .batch_execute(migration)
                    .await
                    .map_err(fail(context))?;
                transaction
                    .execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)",
                        &[&version],
                    )
                    .await
                    .map_err(fail(context))?;
                transaction.commit().await.map_err(fail(context))?;
                tracing::info!(version, "database migrated");
            }
            Ok(())
        }
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        result?;
        unlocked.map_err(fail(context))?;
        Ok(())
    }

    /// Makes the day partitions that `days` need and this process has not seen yet.
    async fn ensure_partitions(
        &self,
        client: &mut deadpool_postgres::Client,
        days: &BTreeSet<i32>,
    ) -> Result<(), StoreError> {
        let missing: Vec<i32> = {
            let known = self
                .partitions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            days.iter()
                .copied()
                .filter(|day| !known.contains(day))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let context = "making day partitions";
        let transaction = client.transaction().await.map_err(fail(context))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await
            .map_err(fail(context))?;
        for day in &missing {
            let next = day.saturating_add(1);
            transaction
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS events_d{day} PARTITION OF events
                         FOR VALUES FROM ({day}) TO ({next});"
                ))
                .await
                .map_err(fail(context))?;
        }
        transaction.commit().await.map_err(fail(context))?;
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(missing);
        Ok(())
    }

    fn forget_partitions(&self) {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    async fn write_group(&self, jobs: &[WriteJob]) -> Result<Vec<WriteOutcome>, StoreError> {
        let context = "storing events";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        let days: BTreeSet<i32> = jobs
            .iter()
            .flat_map(|job| &job.events)
            .filter(|event| event.event_type != EventType::DeletionRequest)
            .map(|event| day_of(event.timestamp))
            .collect();
        self.ensure_partitions(&mut client, &days).await?;
        let transaction = client.transaction().await.map_err(fail(context))?;

        // Erasures and inserts exclude each other through one lock: shared by groups that only
        // insert (they run side by side), exclusive for a group with a deletion request (rare,
        // and short). One lock per transaction: a lock per session cost more than the insert.
        let erases = jobs
            .iter()
            .flat_map(|job| &job.events)
            .any(|event| event.event_type == EventType::DeletionRequest);
        let lock = if erases {
            "SELECT pg_advisory_xact_lock($1)"
        } else {
            "SELECT pg_advisory_xact_lock_shared($1)"
        };
        transaction
            .execute(lock, &[&ERASURE_LOCK])
            .await
            .map_err(fail(context))?;

        let mut outcomes: Vec<WriteOutcome> = jobs
            .iter()
            .map(|job| WriteOutcome {
                refused: job.refused.clone(),
                ..WriteOutcome::default()
            })
            .collect();

        // Erasures first: an event and its session's erasure in one group end erased.
        for (job, outcome) in jobs.iter().zip(&mut outcomes) {
            for event in job
                .events
                .iter()
                .filter(|event| event.event_type == EventType::DeletionRequest)
            {
                let session = uuid_of(event.session_id);
                let new = transaction
                    .execute(
                        "INSERT INTO erased_sessions (session_id, day) VALUES ($1, $2)
                         ON CONFLICT (session_id) DO NOTHING",
                        &[&session, &day_of(event.timestamp)],
                    )
                    .await
                    .map_err(fail(context))?;
                transaction
                    .execute("DELETE FROM events WHERE session_id = $1", &[&session])
                    .await
                    .map_err(fail(context))?;
                if new == 0 {
                    outcome.duplicates += 1;
                } else {
                    outcome.accepted += 1;
                    transaction
                        .execute(
                            "INSERT INTO erasures (day, sessions) VALUES ($1, 1)
                             ON CONFLICT (day) DO UPDATE SET sessions = erasures.sessions + 1",
                            &[&day_of(event.timestamp)],
                        )
                        .await
                        .map_err(fail(context))?;
                }
            }
        }

        // Sessions erased before (or just now) keep their late events out.
        let sessions: Vec<Uuid> = jobs
            .iter()
            .flat_map(|job| &job.events)
            .filter(|event| event.event_type != EventType::DeletionRequest)
            .map(|event| uuid_of(event.session_id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let erased: HashSet<Uuid> = transaction
            .query(
                "SELECT session_id FROM erased_sessions WHERE session_id = ANY($1)",
                &[&sessions],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| row.get(0))
            .collect();

        // The events to insert, in event-id order so that concurrent groups lock rows alike.
        let mut rows: Vec<(Uuid, &Event)> = Vec::new();
        for (job, outcome) in jobs.iter().zip(&mut outcomes) {
            for event in job
                .events
                .iter()
                .filter(|event| event.event_type != EventType::DeletionRequest)
            {
                if erased.contains(&uuid_of(event.session_id)) {
                    outcome.refused.add(Refusal::Erased, 1);
                } else {
                    rows.push((uuid_of(event.event_id), event));
                }
            }
        }
        let mut sorted = rows.clone();
        sorted.sort_by_key(|(id, _)| *id);
        let mut inserted: HashSet<Uuid> = insert_events(&transaction, &sorted).await?;
        for (job, outcome) in jobs.iter().zip(&mut outcomes) {
            for event in job
                .events
                .iter()
                .filter(|event| event.event_type != EventType::DeletionRequest)
            {
                let id = uuid_of(event.event_id);
                if erased.contains(&uuid_of(event.session_id)) {
                    continue;
                }
                if inserted.remove(&id) {
                    outcome.accepted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
        }

        let today = i32::try_from(day_number(UtcDate::today())).unwrap_or(i32::MAX);
        let mut refused: BTreeMap<&'static str, i64> = BTreeMap::new();
        for outcome in &outcomes {
            for (reason, count) in outcome.refused.iter() {
                *refused.entry(reason.key()).or_default() +=
                    i64::try_from(count).unwrap_or(i64::MAX);
            }
        }
        for (reason, count) in refused {
            transaction
                .execute(
                    "INSERT INTO refusals (day, reason, count) VALUES ($1, $2, $3)
                     ON CONFLICT (day, reason) DO UPDATE SET count = refusals.count + excluded.count",
                    &[&today, &reason, &count],
                )
                .await
                .map_err(fail(context))?;
        }
        transaction.commit().await.map_err(fail(context))?;
        Ok(outcomes)
    }
}

async fn insert_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    rows: &[(Uuid, &Event)],
) -> Result<HashSet<Uuid>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut days = Vec::with_capacity(rows.len());
    let mut sessions = Vec::with_capacity(rows.len());
    let mut sdks = Vec::with_capacity(rows.len());
    let mut sdk_versions = Vec::with_capacity(rows.len());
    let mut library_versions = Vec::with_capacity(rows.len());
    let mut runtimes = Vec::with_capacity(rows.len());
    let mut runtime_versions = Vec::with_capacity(rows.len());
    let mut oses = Vec::with_capacity(rows.len());
    let mut arches = Vec::with_capacity(rows.len());
    let mut interfaces = Vec::with_capacity(rows.len());
    let mut cis = Vec::with_capacity(rows.len());
    let mut deployments = Vec::with_capacity(rows.len());
    let mut hours = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut durations = Vec::with_capacity(rows.len());
    let mut peaks: Vec<Option<String>> = Vec::with_capacity(rows.len());
    let mut outcomes: Vec<Option<String>> = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    for (id, event) in rows {
        event_ids.push(*id);
        days.push(day_of(event.timestamp));
        sessions.push(uuid_of(event.session_id));
        sdks.push(event.sdk_name.as_str());
        sdk_versions.push(event.sdk_version.as_str());
        library_versions.push(event.library_version.as_str());
        runtimes.push(event.runtime.as_str());
        runtime_versions.push(event.runtime_version.as_str());
        oses.push(wire_name(&event.os));
        arches.push(wire_name(&event.arch));
        interfaces.push(wire_name(&event.interface));
        cis.push(event.ci);
        deployments.push(wire_name(&event.deployment));
        hours.push(i64::try_from(event.timestamp.unix_seconds()).unwrap_or(i64::MAX));
        types.push(wire_name(&event.event_type));
        durations.push(wire_name(&event.duration));
        peaks.push(event.concurrency_peak.as_ref().map(wire_name));
        outcomes.push(event.outcome.as_ref().map(wire_name));
        names.push(names_of(event));
    }
    let parameters: [&(dyn ToSql + Sync); 19] = [
        &event_ids,
        &days,
        &sessions,
        &sdks,
        &sdk_versions,
        &library_versions,
        &runtimes,
        &runtime_versions,
        &oses,
        &arches,
        &interfaces,
        &cis,
        &deployments,
        &hours,
        &types,
        &durations,
        &peaks,
        &outcomes,
        &names,
    ];
    let inserted = transaction
        .query(
            "INSERT INTO events (event_id, day, session_id, sdk, sdk_version, library_version,
                 runtime, runtime_version, os, arch, interface, ci, deployment, hour, event_type,
                 duration, concurrency_peak, outcome, names)
             SELECT e, d, s, sdk, sv, lv, r, rv, o, a, i, c, dep, h, t, du, p, oc,
                 string_to_array(n, ' ')
             FROM UNNEST($1::uuid[], $2::integer[], $3::uuid[], $4::text[], $5::text[],
                 $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::boolean[], $13::text[], $14::bigint[], $15::text[], $16::text[], $17::text[],
                 $18::text[], $19::text[])
                 AS u(e, d, s, sdk, sv, lv, r, rv, o, a, i, c, dep, h, t, du, p, oc, n)
             ON CONFLICT (event_id, day) DO NOTHING
             RETURNING event_id",
            &parameters,
        )
        .await
        .map_err(fail("storing events"))?;
    Ok(inserted.iter().map(|row| row.get(0)).collect())
}

/// The names an event carries, as the words of one string: `section:name`, and
/// `section:name:bucket` for metrics and exception types. Names and buckets hold neither spaces
/// nor colons, so `string_to_array(…, ' ')` gives them back in the database.
fn names_of(event: &Event) -> String {
    let mut words: Vec<String> = Vec::new();
    let sets = [
        ("feature", &event.features),
        ("integration", &event.integrations),
        ("block_type", &event.block_types),
        ("command", &event.commands),
        ("config_error", &event.errors.config_errors),
        ("import_failure", &event.errors.integration_import_failures),
    ];
    for (section, set) in sets {
        words.extend(
            set.iter()
                .map(|name| format!("{section}:{}", name.as_str())),
        );
    }
    for (name, bucket) in &event.metrics {
        words.push(format!("metric:{}:{}", name.as_str(), wire_name(bucket)));
    }
    for (name, bucket) in &event.errors.exception_types {
        words.push(format!(
            "exception_type:{}:{}",
            name.as_str(),
            wire_name(bucket)
        ));
    }
    words.join(" ")
}

async fn dimension_rows(
    client: &impl deadpool_postgres::GenericClient,
    sdk: &str,
    (from, until): (i32, i32),
    per_day: bool,
) -> Result<Vec<summary::Row>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for (name, sql) in summary::dimension_queries(Dialect::Postgres, per_day) {
        for row in client.query(&sql, &[&sdk, &from, &until]).await? {
            rows.push((
                row.get::<_, i64>(0),
                name,
                row.get::<_, Option<String>>(1).unwrap_or_default(),
                row.get::<_, i64>(2),
            ));
        }
    }
    Ok(rows)
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn register_catalogs(&self, catalogs: &Catalogs) -> Result<(), StoreError> {
        let context = "recording the catalogs";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        let transaction = client.transaction().await.map_err(fail(context))?;
        for (sdk, catalog) in catalogs.iter() {
            transaction
                .execute("DELETE FROM catalog_names WHERE sdk = $1", &[&sdk])
                .await
                .map_err(fail(context))?;
            for section in Section::ALL {
                for entry in catalog.entries(section) {
                    transaction
                        .execute(
                            "INSERT INTO catalog_names (sdk, section, name) VALUES ($1, $2, $3)
                             ON CONFLICT DO NOTHING",
                            &[&sdk, &section.key(), &entry.name.as_str()],
                        )
                        .await
                        .map_err(fail(context))?;
                }
            }
        }
        transaction.commit().await.map_err(fail(context))
    }

    async fn write(&self, jobs: Vec<WriteJob>) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.write_group(&jobs).await;
            match result {
                Ok(outcomes) => return Ok(outcomes),
                Err(error) => {
                    // A partition another collector's retention dropped, or a database that
                    // came back empty: look again.
                    self.forget_partitions();
                    // A deadlock with another collector's partition or retention work rolled
                    // the whole group back: do it again, a few times, before answering 503.
                    if !error.is_transient() || attempts >= WRITE_ATTEMPTS {
                        return Err(error);
                    }
                    tracing::debug!(attempts, %error, "retrying a group commit");
                }
            }
        }
    }

    async fn expire(&self, oldest: HourTimestamp) -> Result<Expired, StoreError> {
        let context = "deleting expired events";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        let transaction = client.transaction().await.map_err(fail(context))?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .await
            .map_err(fail(context))?;
        let oldest_seconds = i64::try_from(oldest.unix_seconds()).unwrap_or(i64::MAX);
        let oldest_day = day_of(oldest);
        let days: Vec<(String, i32)> = transaction
            .query(
                "SELECT DISTINCT sdk, day FROM events e WHERE hour < $1 AND NOT EXISTS
                 (SELECT 1 FROM daily_rollups r WHERE r.sdk = e.sdk AND r.day = e.day)",
                &[&oldest_seconds],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for (sdk, day) in &days {
            let rows = dimension_rows(&transaction, sdk, (*day, *day), true)
                .await
                .map_err(fail(context))?;
            transaction
                .execute(
                    "INSERT INTO daily_rollups (sdk, day, dimension, key, value)
                     VALUES ($1, $2, 'events', '', 0) ON CONFLICT DO NOTHING",
                    &[sdk, day],
                )
                .await
                .map_err(fail(context))?;
            for (_, dimension, key, value) in rows {
                transaction
                    .execute(
                        "INSERT INTO daily_rollups (sdk, day, dimension, key, value)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (sdk, day, dimension, key) DO UPDATE SET value = excluded.value",
                        &[sdk, day, &dimension, &key, &value],
                    )
                    .await
                    .map_err(fail(context))?;
            }
        }
        // Whole days past the retention: drop their partitions.
        let partitions: Vec<String> = transaction
            .query(
                "SELECT c.relname FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = 'events'",
                &[],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut deleted: u64 = 0;
        let mut dropped = Vec::new();
        for partition in partitions {
            let Some(day) = partition
                .strip_prefix("events_d")
                .and_then(|day| day.parse::<i32>().ok())
            else {
                continue;
            };
            if day >= oldest_day {
                continue;
            }
            let count: i64 = transaction
                .query_one(&format!("SELECT COUNT(*) FROM events_d{day}"), &[])
                .await
                .map_err(fail(context))?
                .get(0);
            deleted += u64::try_from(count).unwrap_or(0);
            transaction
                .batch_execute(&format!("DROP TABLE IF EXISTS events_d{day};"))
                .await
                .map_err(fail(context))?;
            dropped.push(day);
        }
        // The edge day: its hours before the cutoff.
        // Only the edge day's partition can hold such rows; naming its day prunes the others.
        deleted += transaction
            .execute(
                "DELETE FROM events WHERE day = $2 AND hour < $1",
                &[&oldest_seconds, &oldest_day],
            )
            .await
            .map_err(fail(context))?;
        transaction
            .execute("DELETE FROM erased_sessions WHERE day < $1", &[&oldest_day])
            .await
            .map_err(fail(context))?;
        transaction.commit().await.map_err(fail(context))?;
        if !dropped.is_empty() {
            self.forget_partitions();
        }
        // Every day the window accepts gets its partitions now, at start and hourly, so that
        // writes almost never create one (creating takes a lock that writes wait for).
        let today = i32::try_from(day_number(UtcDate::today())).unwrap_or(i32::MAX);
        let window: BTreeSet<i32> = (oldest_day..=today.saturating_add(2)).collect();
        self.ensure_partitions(&mut client, &window).await?;
        Ok(Expired {
            events: deleted,
            days_rolled_up: days.len() as u64,
        })
    }

    async fn report(&self, query: &ReportQuery) -> Result<Report, StoreError> {
        let context = "making the report";
        let mut client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        // One snapshot for every number.
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(fail(context))?;
        let (from, until) = query.day_numbers();
        let from = i32::try_from(from).unwrap_or(0);
        let until = i32::try_from(until).unwrap_or(i32::MAX);
        let sdk = query.sdk.as_str();
        let rolled_up = transaction
            .query(
                "SELECT day::bigint, dimension, key, value FROM daily_rollups
                 WHERE sdk = $1 AND day BETWEEN $2 AND $3",
                &[&sdk, &from, &until],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect();
        let features = transaction
            .query(
                "SELECT name FROM catalog_names WHERE sdk = $1 AND section = 'features' ORDER BY name",
                &[&sdk],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let refused = transaction
            .query(
                "SELECT reason, SUM(count)::bigint FROM refusals WHERE day BETWEEN $1 AND $2 GROUP BY reason",
                &[&from, &until],
            )
            .await
            .map_err(fail(context))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let erased_sessions: i64 = transaction
            .query_one(
                "SELECT COALESCE(SUM(sessions), 0)::bigint FROM erasures WHERE day BETWEEN $1 AND $2",
                &[&from, &until],
            )
            .await
            .map_err(fail(context))?
            .get(0);
        let rows = ReportRows {
            per_day: dimension_rows(&transaction, sdk, (from, until), true)
                .await
                .map_err(fail(context))?,
            totals: dimension_rows(&transaction, sdk, (from, until), false)
                .await
                .map_err(fail(context))?,
            rolled_up,
            features,
            refused,
            erased_sessions,
        };
        transaction.commit().await.map_err(fail(context))?;
        Ok(summary::assemble(query, rows))
    }

    fn concurrent_writes(&self) -> usize {
        CONCURRENT_WRITES
    }

    async fn sdks(&self) -> Result<Vec<String>, StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(pool_fail("connecting to the database"))?;
        Ok(client
            .query(
                "SELECT sdk FROM catalog_names UNION SELECT sdk FROM events
                 UNION SELECT sdk FROM daily_rollups ORDER BY 1",
                &[],
            )
            .await
            .map_err(fail("listing SDKs"))?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }
}
