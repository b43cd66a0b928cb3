//! Schema versions: the migrations from every earlier version, and the schema a new file gets
//! in one step (see "Storage" on [`SqliteSpool`]).

use super::*;

/// Schema migrations: entry `n` takes a file from `user_version` n to n + 1.
pub(super) const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
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
pub(super) const NEW_FILE_SCHEMA: &str = "CREATE TABLE events (
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

pub(super) enum MigrateError {
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
pub(super) fn migrate(connection: &mut Connection, now: i64) -> Result<(), MigrateError> {
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

pub(super) fn schema_version(connection: &Connection) -> SqlResult<i64> {
    connection.query_row("PRAGMA user_version", [], |row| row.get(0))
}
