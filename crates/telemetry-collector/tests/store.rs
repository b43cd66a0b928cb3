//! The store contract, run against both stores: SQLite on a real file and PostgreSQL on a real
//! private server. Once by `event_id` (also across collectors sharing one store, and under
//! concurrent writes), erasure that keeps late events out, retention with aggregates that carry
//! no session id, refusal counts, and report numbers equal to what was written. On SQLite the
//! files themselves are checked too: erased and expired rows leave the disk.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use support::postgres::Database;

use support::{catalogs, contains, name, run_event, store_bytes};
use telemetry_collector::report::ReportQuery;
use telemetry_collector::store::{PostgresStore, SqliteStore, Store, WriteJob};
use telemetry_collector::validate::{Refusal, RefusalCounts};
use telemetry_model::{
    CountBucket, DurationBucket, Event, EventType, HourTimestamp, OsFamily, RunOutcome, SessionId,
    UtcDate, Version,
};

/// Where a case's store lives.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Database),
}

impl Backend {
    fn sqlite() -> Option<Backend> {
        Some(Backend::Sqlite(tempfile::tempdir().unwrap()))
    }

    fn postgres(test: &str) -> Option<Backend> {
        Database::create(test).map(Backend::Postgres)
    }

    /// A store on this backend, as a newly started collector opens it.
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path()).unwrap()),
            Backend::Postgres(database) => {
                Arc::new(PostgresStore::connect(database.url()).await.unwrap())
            }
        }
    }

    /// Every byte the store keeps on disk, where the test can read it.
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Backend::Sqlite(dir) => Some(store_bytes(dir.path())),
            Backend::Postgres(_) => None,
        }
    }
}

/// Runs a case against SQLite and PostgreSQL, as two tests.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                if let Some(backend) = super::Backend::sqlite() {
                    super::$case(&backend);
                }
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() {
                if let Some(backend) = super::Backend::postgres(stringify!($case)) {
                    super::$case(&backend);
                }
            })*
        }
    };
}

contract!(
    each_event_is_stored_once_however_often_and_wherever_it_arrives,
    concurrent_collectors_store_each_event_once,
    a_deletion_request_erases_its_session_and_keeps_it_out,
    retention_deletes_old_events_and_keeps_day_aggregates_without_session_ids,
    the_report_counts_what_was_written,
    an_erasure_racing_an_insert_on_another_collector_leaves_nothing,
    retention_run_by_several_collectors_at_once_deletes_once,
);

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn job(events: Vec<Event>) -> WriteJob {
    WriteJob {
        events,
        refused: RefusalCounts::default(),
    }
}

fn deletion(session: SessionId) -> Event {
    let mut event = run_event(session, &[]);
    event.event_type = EventType::DeletionRequest;
    event.outcome = None;
    event.event_id = telemetry_model::EventId::random();
    event
}

fn query(days: u32) -> ReportQuery {
    ReportQuery {
        sdk: "flowkit".to_owned(),
        until: UtcDate::today(),
        days,
    }
}

fn each_event_is_stored_once_however_often_and_wherever_it_arrives(backend: &Backend) {
    let session = SessionId::random();
    let events: Vec<Event> = (0..50).map(|_| run_event(session, &["retries"])).collect();
    block_on(async {
        let first = backend.open().await;
        // A second collector on the same store.
        let second = backend.open().await;
        let outcomes = first
            .write(vec![job(events.clone()), job(events[..10].to_vec())])
            .await
            .unwrap();
        assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (50, 0));
        assert_eq!(
            (outcomes[1].accepted, outcomes[1].duplicates),
            (0, 10),
            "same group"
        );
        let again = second.write(vec![job(events.clone())]).await.unwrap();
        assert_eq!(
            (again[0].accepted, again[0].duplicates),
            (0, 50),
            "other collector"
        );
        let mut twice = events[0].clone();
        twice.event_id = telemetry_model::EventId::random();
        let inside = first
            .write(vec![job(vec![twice.clone(), twice])])
            .await
            .unwrap();
        assert_eq!(
            (inside[0].accepted, inside[0].duplicates),
            (1, 1),
            "same batch"
        );
        let report = second.report(&query(1)).await.unwrap();
        assert_eq!(report.totals.events, 51);
        assert_eq!(report.totals.runs, 51);
        assert_eq!(report.totals.sessions, 1);
    });
}

fn a_deletion_request_erases_its_session_and_keeps_it_out(backend: &Backend) {
    let erased = SessionId::random();
    let kept = SessionId::random();
    let erased_text = erased.to_string();
    block_on(async {
        let store = backend.open().await;
        store.register_catalogs(&catalogs()).await.unwrap();
        let mut events: Vec<Event> = (0..20).map(|_| run_event(erased, &["caching"])).collect();
        events.push(run_event(kept, &["retries"]));
        store.write(vec![job(events)]).await.unwrap();
        if let Some(bytes) = backend.bytes() {
            assert!(contains(&bytes, &erased_text));
        }

        let outcome = store
            .write(vec![job(vec![deletion(erased)])])
            .await
            .unwrap();
        assert_eq!(outcome[0].accepted, 1);
        let report = store.report(&query(1)).await.unwrap();
        assert_eq!(report.totals.events, 1);
        assert_eq!(report.totals.sessions, 1);
        assert_eq!(report.totals.features["caching"].sessions, 0);
        assert_eq!(report.erased_sessions, 1);

        // A batch that was in flight when the user opted out arrives late: it stays out.
        let late = store
            .write(vec![job(vec![run_event(erased, &["caching"])])])
            .await
            .unwrap();
        assert_eq!(late[0].accepted, 0);
        assert_eq!(late[0].refused.get(Refusal::Erased), 1);
        // The request again (a retry): nothing new.
        let again = store
            .write(vec![job(vec![deletion(erased)])])
            .await
            .unwrap();
        assert_eq!((again[0].accepted, again[0].duplicates), (0, 1));
        assert_eq!(store.report(&query(1)).await.unwrap().erased_sessions, 1);
    });
    // The erased events are gone from the file itself, not just from queries: only the
    // tombstone that keeps late events out still names the session.
    let Some(bytes) = backend.bytes() else {
        return;
    };
    let occurrences = bytes
        .windows(erased_text.len())
        .filter(|window| *window == erased_text.as_bytes())
        .count();
    assert!(
        occurrences <= 2,
        "the erased session id appears {occurrences} times in the store's files (the tombstone's row and its index entry at most)"
    );
}

fn retention_deletes_old_events_and_keeps_day_aggregates_without_session_ids(backend: &Backend) {
    let now = HourTimestamp::now().unix_seconds();
    let old_session = SessionId::random();
    let hour = |days_ago: u64| HourTimestamp::from_unix_seconds(now - days_ago * 86_400);
    let mut old: Vec<Event> = (0..5)
        .map(|_| {
            let mut event = run_event(old_session, &["serve"]);
            event.timestamp = hour(100);
            event
        })
        .collect();
    let mut erased_old = run_event(SessionId::random(), &[]);
    erased_old.timestamp = hour(100);
    old.push(erased_old.clone());
    let recent = run_event(SessionId::random(), &["retries"]);
    block_on(async {
        let store = backend.open().await;
        store.register_catalogs(&catalogs()).await.unwrap();
        let mut tombstone = deletion(erased_old.session_id);
        tombstone.timestamp = hour(100);
        store
            .write(vec![
                job(old),
                job(vec![recent.clone()]),
                job(vec![tombstone]),
            ])
            .await
            .unwrap();
        let expired = store.expire(hour(90)).await.unwrap();
        assert_eq!(expired.events, 5);
        assert_eq!(expired.days_rolled_up, 1);
        assert_eq!(
            store.expire(hour(90)).await.unwrap().events,
            0,
            "idempotent"
        );

        let report = store.report(&query(120)).await.unwrap();
        assert_eq!(report.totals.events, 6, "5 aggregated + 1 live");
        let old_day = report.days.iter().find(|day| day.aggregated).unwrap();
        assert_eq!(old_day.date, hour(100).date().to_string());
        assert_eq!(old_day.summary.events, 5);
        assert_eq!(old_day.summary.sessions, 1);
        assert_eq!(old_day.summary.features["serve"].sessions, 1);
        assert_eq!(report.days.iter().filter(|day| day.aggregated).count(), 1);
        assert_eq!(report.days.len(), 120);
    });
    let Some(bytes) = backend.bytes() else {
        return;
    };
    assert!(
        !contains(&bytes, &old_session.to_string()),
        "an expired session id is still in the store's files"
    );
    assert!(
        !contains(&bytes, &erased_old.session_id.to_string()),
        "an old tombstone outlived the retention"
    );
    assert!(contains(&bytes, &recent.session_id.to_string()));
}

fn the_report_counts_what_was_written(backend: &Backend) {
    let today = HourTimestamp::now();
    let yesterday = HourTimestamp::from_unix_seconds(today.unix_seconds() - 86_400);
    let (a, b, c) = (
        SessionId::random(),
        SessionId::random(),
        SessionId::random(),
    );
    let mut events = Vec::new();
    // Session a: 3 runs today, 2 failed with timeout_error, on macOS with flowkit 0.2.0.
    for index in 0..3 {
        let mut event = run_event(a, &["retries", "caching"]);
        event.os = OsFamily::Macos;
        event.sdk_version = Version::new("0.2.0").unwrap();
        if index < 2 {
            event.outcome = Some(RunOutcome::Failed);
            event
                .errors
                .exception_types
                .insert(name("timeout_error"), CountBucket::from_count(1));
        }
        event.duration = DurationBucket::UnderOneSecond;
        events.push(event);
    }
    // Session b: one run and a summary today.
    events.push(run_event(b, &["retries"]));
    let mut summary = run_event(b, &[]);
    summary.event_type = EventType::SdkUsage;
    summary.outcome = None;
    summary.concurrency_peak = Some(CountBucket::from_count(4));
    events.push(summary);
    // Session c: one run yesterday.
    let mut old = run_event(c, &["serve"]);
    old.timestamp = yesterday;
    events.push(old);
    let mut refused = RefusalCounts::default();
    refused.add(Refusal::UndeclaredName, 7);
    block_on(async {
        let store = backend.open().await;
        store.register_catalogs(&catalogs()).await.unwrap();
        store
            .write(vec![WriteJob { events, refused }])
            .await
            .unwrap();
        let report = store.report(&query(7)).await.unwrap();
        let totals = &report.totals;
        assert_eq!((totals.events, totals.sessions, totals.runs), (6, 3, 5));
        assert_eq!(totals.features["retries"].sessions, 2);
        assert!((totals.features["retries"].share - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(totals.features["caching"].sessions, 1);
        assert_eq!(totals.features["serve"].sessions, 1);
        assert_eq!(totals.features["schedules"].sessions, 0, "declared, unused");
        assert_eq!(totals.features.len(), 11, "every feature flowkit declares");
        assert_eq!(totals.exception_types["timeout_error"], 2);
        assert_eq!(totals.outcomes["failed"], 2);
        assert_eq!(totals.outcomes["completed"], 3);
        assert_eq!(totals.durations["<1s"], 3);
        assert_eq!(totals.durations["1-10s"], 2);
        assert_eq!(totals.sdk_versions["0.2.0"], 1);
        assert_eq!(totals.sdk_versions["0.1.0"], 2);
        assert_eq!(totals.os["macos"], 1);
        assert_eq!(totals.os["linux"], 2);
        assert_eq!(totals.runtimes["rust 1.95"], 3);
        assert_eq!(report.refused["undeclared_name"], 7);

        let day = |date: HourTimestamp| {
            report
                .days
                .iter()
                .find(|day| day.date == date.date().to_string())
                .unwrap()
        };
        assert_eq!(day(today).summary.events, 5);
        assert_eq!(day(today).summary.sessions, 2);
        assert_eq!(day(yesterday).summary.runs, 1);
        assert_eq!(day(yesterday).summary.features["serve"].share, 1.0);
        assert_eq!(report.days.len(), 7);
        assert_eq!(report.until, UtcDate::today().to_string());
        // Another SDK's report is empty, and says so.
        let other = store
            .report(&ReportQuery {
                sdk: "acme".to_owned(),
                ..query(7)
            })
            .await
            .unwrap();
        assert_eq!(other.totals.events, 0);
        assert_eq!(store.sdks().await.unwrap(), vec!["flowkit".to_owned()]);
    });
}

/// Four collectors write overlapping batches at once: each event is stored once, and the
/// answers add up to exactly one `accepted` per event.
fn concurrent_collectors_store_each_event_once(backend: &Backend) {
    let events: Vec<Event> = (0..400)
        .map(|index| {
            run_event(
                SessionId::random(),
                if index % 2 == 0 { &["retries"] } else { &[] },
            )
        })
        .collect();
    block_on(async {
        let mut tasks = Vec::new();
        for collector in 0..4 {
            let store = backend.open().await;
            // Each collector gets every event, in batches of 50 in its own order.
            let mut mine = events.clone();
            mine.rotate_left(collector * 100);
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0;
                let mut duplicates = 0;
                for chunk in mine.chunks(50) {
                    let outcome = store.write(vec![job(chunk.to_vec())]).await.unwrap();
                    accepted += outcome[0].accepted;
                    duplicates += outcome[0].duplicates;
                }
                (accepted, duplicates)
            }));
        }
        let mut accepted = 0;
        let mut duplicates = 0;
        for task in tasks {
            let (a, d) = task.await.unwrap();
            accepted += a;
            duplicates += d;
        }
        assert_eq!(
            accepted, 400,
            "each event accepted once, on whichever collector"
        );
        assert_eq!(duplicates, 3 * 400);
        let report = backend.open().await.report(&query(1)).await.unwrap();
        assert_eq!(report.totals.events, 400);
        assert_eq!(report.totals.sessions, 400);
    });
}

#[test]
fn a_store_from_a_newer_collector_is_refused_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let connection = rusqlite::Connection::open(dir.path().join(SqliteStore::FILE_NAME)).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    let error = SqliteStore::open(dir.path()).unwrap_err().to_string();
    assert!(error.contains("newer collector"), "{error}");
    let _unused: Option<Arc<dyn Store>> = None;
}

/// One collector stores a session's events while another erases that session, at the same
/// time, twenty times over: whichever commits first, nothing of the session remains.
fn an_erasure_racing_an_insert_on_another_collector_leaves_nothing(backend: &Backend) {
    block_on(async {
        let inserting = backend.open().await;
        let erasing = backend.open().await;
        for _ in 0..20 {
            let session = SessionId::random();
            let events: Vec<Event> = (0..50).map(|_| run_event(session, &["retries"])).collect();
            let insert = {
                let store = Arc::clone(&inserting);
                tokio::spawn(async move { store.write(vec![job(events)]).await.unwrap() })
            };
            let erase = {
                let store = Arc::clone(&erasing);
                tokio::spawn(async move {
                    store
                        .write(vec![job(vec![deletion(session)])])
                        .await
                        .unwrap()
                })
            };
            let inserted = insert.await.unwrap();
            erase.await.unwrap();
            // Either the events came first (stored, then erased) or the erasure did (refused).
            assert_eq!(
                inserted[0].accepted + inserted[0].refused.get(Refusal::Erased),
                50
            );
        }
        let report = backend.open().await.report(&query(1)).await.unwrap();
        assert_eq!(
            report.totals.events, 0,
            "an erased session's events survived"
        );
        assert_eq!(report.erased_sessions, 20);
    });
}

/// Three collectors run the hourly retention pass at the same moment: no error, each old
/// event deleted once, each day rolled up once.
fn retention_run_by_several_collectors_at_once_deletes_once(backend: &Backend) {
    let now = HourTimestamp::now().unix_seconds();
    let old = |days_ago: u64| {
        let mut event = run_event(SessionId::random(), &["serve"]);
        event.timestamp = HourTimestamp::from_unix_seconds(now - days_ago * 86_400);
        event
    };
    block_on(async {
        let store = backend.open().await;
        let events: Vec<Event> = (0..30).map(|index| old(95 + index % 3)).collect();
        store.write(vec![job(events)]).await.unwrap();
        store.write(vec![job(vec![old(1)])]).await.unwrap();
        let oldest = HourTimestamp::from_unix_seconds(now - 90 * 86_400);
        let mut passes = Vec::new();
        for _ in 0..3 {
            let store = backend.open().await;
            passes.push(tokio::spawn(
                async move { store.expire(oldest).await.unwrap() },
            ));
        }
        let mut deleted = 0;
        let mut rolled_up = 0;
        for pass in passes {
            let expired = pass.await.unwrap();
            deleted += expired.events;
            rolled_up += expired.days_rolled_up;
        }
        assert_eq!(deleted, 30);
        assert_eq!(rolled_up, 3);
        let report = store.report(&query(100)).await.unwrap();
        assert_eq!(report.totals.events, 31, "30 in aggregates, 1 live");
        assert_eq!(report.days.iter().filter(|day| day.aggregated).count(), 3);
    });
}
