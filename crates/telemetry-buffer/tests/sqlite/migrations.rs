//! Schema versions: a newer file refused, every earlier one migrated, a new file made in one
//! step.

use super::*;

#[test]
fn spools_opened_at_once_on_a_new_file_set_it_up_once() {
    const SPOOLS: usize = 4;
    let dir = SpoolDir::new();
    let start = Barrier::new(SPOOLS);
    std::thread::scope(|scope| {
        for _ in 0..SPOOLS {
            let (dir, start) = (&dir, &start);
            scope.spawn(move || {
                start.wait();
                dir.open(SpoolLimits::default())
                    .append(encoded_events(10))
                    .unwrap();
            });
        }
    });
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, SPOOLS * 10);
    assert_totals_match(&dir, &spool);
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    for version in [SCHEMA_VERSION + 1, 99, -1] {
        let dir = SpoolDir::new();
        dir.raw()
            .execute_batch(&format!(
                "CREATE TABLE future (x); PRAGMA user_version = {version};"
            ))
            .unwrap();
        let error = SqliteSpool::open(dir.path(), SpoolLimits::default()).unwrap_err();
        assert!(
            matches!(error, SpoolError::NewerSchema { found, supported: SCHEMA_VERSION, .. } if found == version),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("schema version {version}")),
            "{message}"
        );
        assert_eq!(
            std::fs::read_dir(dir.dir.path()).unwrap().count(),
            1,
            "nothing was moved aside"
        );
        let tables: i64 = dir
            .raw()
            .query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'future'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
    }
}

#[test]
fn a_new_file_is_migrated_to_the_current_schema_in_wal_mode() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let auto_vacuum: i64 = raw
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "incremental");
    spool.append(encoded_events(1)).unwrap();
    assert!(
        dir.dir
            .path()
            .join(format!("{SPOOL_FILE_NAME}-wal"))
            .exists(),
        "writes go through the write-ahead log"
    );
    // An empty file (say, created by `touch`) is a new database, not damage.
    let empty = SpoolDir::new();
    std::fs::write(empty.path(), b"").unwrap();
    let spool = empty.open(SpoolLimits::default());
    spool.append(encoded_events(2)).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 2);
}

/// The schema version 1 of this library wrote, as it wrote it.
pub(super) const VERSION_1_SCHEMA: &str = "
    CREATE TABLE events (
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
    END;
    PRAGMA user_version = 1;";

/// What a spool file's schema is made of: every table's columns and indexes, the other
/// indexes and triggers, and the rows a new file starts with (`created_at` aside, which a
/// migrated file from before it was recorded does not have).
pub(super) fn schema_of(raw: &rusqlite::Connection) -> Vec<String> {
    use rusqlite::types::ValueRef;
    let rows = |sql: &str| -> Vec<String> {
        let mut statement = raw.prepare(sql).unwrap();
        let columns = statement.column_count();
        statement
            .query_map([], |row| {
                let values: Vec<String> = (0..columns)
                    .map(|column| match row.get_ref(column).unwrap() {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(value) => value.to_string(),
                        ValueRef::Real(value) => value.to_string(),
                        ValueRef::Text(text) => String::from_utf8_lossy(text).into_owned(),
                        ValueRef::Blob(bytes) => format!("{bytes:?}"),
                    })
                    .collect();
                Ok(values.join(" "))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut schema = Vec::new();
    for table in rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") {
        schema.push(format!("table {table}"));
        schema.extend(rows(&format!("PRAGMA table_info({table})")));
        schema.extend(rows(&format!(
            "SELECT name, \"unique\", origin, partial FROM pragma_index_list('{table}') ORDER BY name"
        )));
    }
    schema.extend(rows(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('index', 'trigger') ORDER BY name",
    ));
    schema.extend(rows(
        "SELECT key, value FROM meta WHERE key != 'created_at' ORDER BY key",
    ));
    schema.extend(rows("SELECT * FROM totals"));
    schema.extend(rows("PRAGMA auto_vacuum"));
    schema
}

#[test]
fn a_new_file_gets_in_one_step_the_schema_a_migrated_file_ends_with() {
    let migrated = SpoolDir::new();
    {
        let raw = migrated.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_1_SCHEMA).unwrap();
    }
    drop(migrated.open(SpoolLimits::default()));
    let new = SpoolDir::new();
    drop(new.open(SpoolLimits::default()));

    let new_schema = schema_of(&new.raw());
    assert!(new_schema.len() > 10, "{new_schema:#?}");
    assert_eq!(new_schema, schema_of(&migrated.raw()));
    let version = |dir: &SpoolDir| -> i64 {
        dir.raw()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!((version(&new), version(&migrated)), (3, 3));
}

#[test]
fn a_version_1_file_is_migrated_keeping_events_order_and_counters() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let now = clock.0.load(Ordering::SeqCst) as i64;
    let events = encoded_events(5);
    // Keys with gaps, as deletes leave them, and not in the order of the event ids.
    let seqs = [3_i64, 4, 7, 8, 12];
    {
        let raw = dir.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_1_SCHEMA).unwrap();
        for (event, seq) in events.iter().zip(seqs) {
            raw.execute(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    seq,
                    event.id().to_string(),
                    event.json(),
                    event.json().len() as i64,
                    now - 60
                ],
            )
            .unwrap();
        }
        // The third event is claimed the way version 1 claimed, with its lease still running.
        raw.execute(
            "UPDATE events SET claim_id = 42, claim_expires_at = ?1 WHERE seq = 7",
            [now + 3_600],
        )
        .unwrap();
        raw.execute_batch(
            "UPDATE meta SET value = 5 WHERE key = 'dropped_full';
             UPDATE meta SET value = 2 WHERE key = 'dropped_age';
             UPDATE meta SET value = 1 WHERE key = 'dropped_invalid';",
        )
        .unwrap();
    }

    let spool = dir.open_at(SpoolLimits::default(), &clock);
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    assert_eq!(SCHEMA_VERSION, 3);
    let stats = spool.stats().unwrap();
    assert_eq!(
        (
            stats.pending,
            stats.dropped_full,
            stats.dropped_age,
            stats.dropped_invalid
        ),
        (5, 5, 2, 1)
    );
    assert_totals_match(&dir, &spool);
    let kept: Vec<i64> = raw
        .prepare("SELECT seq FROM events ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kept, seqs, "the keys, and so the order, are kept");
    let columns: Vec<String> = raw
        .prepare("SELECT name FROM pragma_table_info('events')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        columns,
        ["seq", "event_id", "json", "byte_len", "inserted_at"]
    );
    let leftovers: Vec<String> = raw
        .prepare(
            "SELECT name FROM sqlite_schema
             WHERE type IN ('trigger', 'index') AND tbl_name = 'events'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The version 1 claim was released; a new event goes after the migrated ones.
    let version_1_claim = spool.acknowledge(telemetry_buffer::ClaimId(42));
    assert!(
        matches!(version_1_claim, Err(BufferError::UnknownClaim(_))),
        "{version_1_claim:?}"
    );
    let newer = encoded_events(1);
    spool.append(newer.clone()).unwrap();
    let claim = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&events).into_iter().chain(ids(&newer)).collect();
    assert_eq!(ids(&claim.events), expected);
    assert_eq!(
        claim.events[..5],
        events[..],
        "the bytes come back unchanged"
    );
    assert_eq!(claim_rows(&dir), [(3, 13)]);
    spool.acknowledge(claim.id).unwrap();
    assert_totals_match(&dir, &spool);

    // A migrated file opens again as it is.
    drop(spool);
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().dropped_total(), 8);
}

/// The schema version 2 of this library left a new file with, as it wrote it.
pub(super) const VERSION_2_SCHEMA: &str = "
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
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
    INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
    CREATE TABLE claims (
        claim_id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    PRAGMA user_version = 2;";

#[test]
fn a_version_2_file_is_migrated_keeping_its_claims() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let now = clock.0.load(Ordering::SeqCst) as i64;
    let events = encoded_events(4);
    let seqs = [5_i64, 6, 9, 10];
    {
        let raw = dir.raw();
        raw.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        raw.execute_batch(VERSION_2_SCHEMA).unwrap();
        let mut bytes = 0;
        for (event, seq) in events.iter().zip(seqs) {
            let len = event.json().len() as i64;
            bytes += len;
            raw.execute(
                "INSERT INTO events (seq, event_id, json, byte_len, inserted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![seq, event.id().to_string(), event.json(), len, now - 60],
            )
            .unwrap();
        }
        // A claim on the first two events, its lease (the default 60 s) still running; `seq`
        // 11 was used by an event since deleted.
        let claimed = (events[0].json().len() + events[1].json().len()) as i64;
        raw.execute(
            "INSERT INTO claims (claim_id, first_seq, last_seq, events, bytes, expires_at)
             VALUES (42, 5, 6, 2, ?1, ?2)",
            [claimed, now + 30],
        )
        .unwrap();
        raw.execute(
            "UPDATE totals SET events = 4, bytes = ?1, next_seq = 12",
            [bytes],
        )
        .unwrap();
    }

    let spool = dir.open_at(SpoolLimits::default(), &clock);
    let raw = dir.raw();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, 3);
    let indexes: i64 = raw
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0, "the event id is no longer indexed");
    assert_eq!(spool.stats().unwrap().pending, 4);
    assert_totals_match(&dir, &spool);

    // The claim is still held: only the other two are handed out, and it can be acknowledged.
    let newer = encoded_events(1);
    spool.append(newer.clone()).unwrap();
    let claim = spool.claim(10).unwrap().unwrap();
    let expected: Vec<EventId> = ids(&events[2..]).into_iter().chain(ids(&newer)).collect();
    assert_eq!(ids(&claim.events), expected);
    assert_eq!(
        claim.events[..2],
        events[2..],
        "the bytes come back unchanged"
    );
    let new_rows: Vec<(i64, i64)> = claim_rows(&dir)
        .into_iter()
        .filter(|&range| range != (5, 6))
        .collect();
    assert_eq!(new_rows, [(9, 12)], "the next `seq` was kept");
    spool
        .acknowledge(telemetry_buffer::ClaimId(42))
        .expect("a version 2 claim survives the migration");
    spool.acknowledge(claim.id).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
    assert_totals_match(&dir, &spool);
}

/// The schema version 3 of this library left a new file with before the ledger existed (and
/// before it recorded when a file was created), as it wrote it.
pub(super) const VERSION_3_SCHEMA: &str = "
    CREATE TABLE events (
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
    INSERT INTO totals (id, events, bytes) VALUES (0, 0, 0);
    CREATE TABLE claims (
        claim_id INTEGER PRIMARY KEY,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        events INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    PRAGMA user_version = 3;";

/// A spool file in WAL mode made by `schema`, as an earlier version of the library wrote it.
pub(super) fn earlier_file(dir: &SpoolDir, schema: &str) -> rusqlite::Connection {
    let raw = dir.raw();
    let mode: String = raw
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    raw.execute_batch(schema).unwrap();
    raw
}

#[test]
fn a_file_from_before_the_ledger_reads_as_an_empty_ledger() {
    // (case, the schema an earlier version wrote)
    let cases = [
        ("version 1", VERSION_1_SCHEMA),
        ("version 2", VERSION_2_SCHEMA),
        ("version 3", VERSION_3_SCHEMA),
    ];
    for (case, schema) in cases {
        let dir = SpoolDir::new();
        {
            let raw = earlier_file(&dir, schema);
            raw.execute_batch(
                "UPDATE meta SET value = 5 WHERE key = 'dropped_full';
                 UPDATE meta SET value = 2 WHERE key = 'dropped_age';",
            )
            .unwrap();
        }
        let spool = dir.open(SpoolLimits::default());
        assert_eq!(spool.ledger().unwrap(), DeliveryLedger::default(), "{case}");
        let stats = spool.stats().unwrap();
        assert_eq!(
            (stats.dropped_full, stats.dropped_age),
            (5, 2),
            "{case}: the spool's own counters are not the ledger's"
        );
        let written = spool
            .update_ledger(&mut |ledger| ledger.delivered = 3)
            .unwrap();
        assert_eq!(spool.ledger().unwrap(), written, "{case}");
        assert_eq!(spool.stats().unwrap(), stats, "{case}");
    }
}
