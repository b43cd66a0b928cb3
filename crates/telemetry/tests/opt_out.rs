//! Opting out and identity keep their word, checked on real files and real threads: a
//! deletion request goes only where the user's valid configuration points and only when events
//! under the id left; ids are random, short-lived and never linked; what a buffer hands back
//! gets a second look before it leaves.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{CATALOG, Fixture, run};
use telemetry::{EnvSnapshot, Event, EventType, RunOutcome, TelemetryConfig};

const WAIT: Duration = Duration::from_secs(20);

/// A TCP listener on 127.0.0.1 that counts the connections it is offered (and answers none):
/// the SDK's built-in default endpoint, which an offline machine must never contact.
struct CountingListener {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl CountingListener {
    fn start() -> CountingListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        CountingListener { port, connections }
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/v1/events", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A destination that refuses everything, so that events wait in the spool.
#[derive(Debug)]
struct Refusing;

#[async_trait::async_trait]
impl telemetry::Transport for Refusing {
    fn kind(&self) -> &'static str {
        "refusing"
    }

    fn destination(&self) -> String {
        "nowhere".to_owned()
    }

    async fn send(
        &self,
        _events: &[telemetry::EncodedEvent],
    ) -> Result<(), telemetry::internals::transport::SendError> {
        Err(telemetry::internals::transport::SendError::Retryable {
            message: "refused".to_owned(),
            retry_after: None,
        })
    }
}

/// Runs one process of the test SDK: one run, a flush that succeeds, and an orderly exit.
fn one_run_delivered(config: &TelemetryConfig) {
    let telemetry = config.start();
    run(&telemetry, RunOutcome::Completed);
    telemetry.flush(WAIT).unwrap();
    drop(telemetry);
}

/// Enables telemetry, sends one run to the export, and returns the session id.
fn deliver_one(config: &TelemetryConfig) -> String {
    let session = config.enable().unwrap().session_id.unwrap();
    let telemetry = config.start();
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 1);
    drop(telemetry);
    session
}

#[test]
fn opting_out_contacts_only_the_configured_valid_destination_and_only_when_events_left() {
    let vendor = CountingListener::start();
    // (extra variables when opting out, what the deletion request says)
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TESTSDK_SDK_TELEMETRY_BATCH_SIZE", "bogus")],
            "not sent: a telemetry setting or the policy file is invalid",
        ),
        (
            &[("TESTSDK_SDK_TELEMETRY_ENABLED", "0")],
            "not sent: TESTSDK_SDK_TELEMETRY_ENABLED keeps telemetry off",
        ),
        (&[("DO_NOT_TRACK", "1")], "not sent: DO_NOT_TRACK is set"),
        (&[], "sent to file://"),
    ];
    for (vars, expected) in cases {
        let fixture = Fixture::new();
        let session = deliver_one(&fixture.exporting(&vendor.endpoint(), &[]));
        let status = fixture
            .exporting(&vendor.endpoint(), vars)
            .disable()
            .unwrap();
        let request = status.deletion_request.unwrap();
        assert!(request.starts_with(expected), "{vars:?}: {request}");
        let deletions: Vec<Event> = fixture
            .exported()
            .into_iter()
            .filter(|event| event.event_type == EventType::DeletionRequest)
            .collect();
        assert_eq!(
            deletions.len(),
            usize::from(*expected == "sent to file://"),
            "{vars:?}"
        );
        assert!(
            deletions
                .iter()
                .all(|event| event.session_id.to_string() == session)
        );
    }
    // Never the vendor: the built-in default endpoint was not contacted once.
    assert_eq!(vendor.connections(), 0);

    // No event under the id ever left: nothing to delete, nobody contacted.
    let fixture = Fixture::new();
    let config = fixture.exporting(&vendor.endpoint(), &[]);
    config.enable().unwrap();
    let request = config.disable().unwrap().deletion_request.unwrap();
    assert_eq!(
        request,
        "not sent: no event under the session id ever left this machine"
    );
    assert!(fixture.exported().is_empty());
}

#[test]
fn a_session_id_that_is_not_random_is_replaced_and_never_sent() {
    for (id, warns) in [
        ("00000000-0000-0000-0000-000000000000", true),
        ("ffffffff-ffff-ffff-ffff-ffffffffffff", true),
        // A version 1 (time-based) UUID: not random.
        ("c232ab00-9414-11ec-b3c8-9f6bdeced846", true),
        // A well-formed random id, hand-written without the date it was made: replaced too.
        ("2f1e4a52-7c1d-4b7e-9a55-3c0f6f8a9d11", false),
    ] {
        let fixture = Fixture::new();
        std::fs::create_dir_all(fixture.home()).unwrap();
        std::fs::write(
            fixture.home().join("telemetry_state.toml"),
            format!("[telemetry]\nenabled = true\nsession_id = \"{id}\"\n"),
        )
        .unwrap();
        let config = fixture.exporting("https://127.0.0.1:1/v1", &[]);
        one_run_delivered(&config);
        let exported = fixture.exported();
        assert!(!exported.is_empty());
        assert!(
            exported
                .iter()
                .all(|event| event.session_id.to_string() != id),
            "{id} was sent"
        );
        let warned = fixture
            .warnings()
            .iter()
            .any(|warning| warning.contains("was not a random id"));
        assert_eq!(warned, warns, "{id}");
        assert!(
            !fixture.state_text().contains(id),
            "{id} is still remembered"
        );
    }
}

#[test]
fn an_id_does_not_outlive_runs_that_something_else_keeps_off() {
    for vars in [
        &[("DO_NOT_TRACK", "1")][..],
        &[("TESTSDK_SDK_TELEMETRY_ENABLED", "0")],
        &[("TESTSDK_SDK_TELEMETRY_BATCH_SIZE", "bogus")],
    ] {
        let fixture = Fixture::new();
        let first = deliver_one(&fixture.exporting("https://127.0.0.1:1/v1", &[]));
        // A run kept off by something other than the user's own decision forgets the id...
        let kept_off = fixture.exporting("https://127.0.0.1:1/v1", vars).start();
        assert!(!kept_off.is_enabled());
        drop(kept_off);
        assert!(!fixture.state_text().contains(&first), "{vars:?}");
        // ...so the next run under the user's decision is not linked to the earlier ones.
        one_run_delivered(&fixture.exporting("https://127.0.0.1:1/v1", &[]));
        let sessions: std::collections::BTreeSet<String> = fixture
            .exported()
            .iter()
            .map(|event| event.session_id.to_string())
            .collect();
        assert_eq!(sessions.len(), 2, "{vars:?}: {sessions:?}");
    }
}

#[test]
fn an_id_is_replaced_by_age() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.home()).unwrap();
    let old = "2f1e4a52-7c1d-4b7e-9a55-3c0f6f8a9d11";
    std::fs::write(
        fixture.home().join("telemetry_state.toml"),
        format!(
            "[telemetry]\nenabled = true\nsession_id = \"{old}\"\nsession_date = \"2020-01-01\"\n"
        ),
    )
    .unwrap();
    one_run_delivered(&fixture.exporting("https://127.0.0.1:1/v1", &[]));
    assert!(
        fixture
            .exported()
            .iter()
            .all(|event| event.session_id.to_string() != old)
    );
    assert!(!fixture.state_text().contains(old));
    // A young id stays.
    let state = fixture.state_text();
    let telemetry = fixture.exporting("https://127.0.0.1:1/v1", &[]).start();
    drop(telemetry);
    assert_eq!(fixture.state_text(), state);
}

#[test]
fn one_request_never_carries_two_session_ids_and_reset_links_nothing() {
    let fixture = Fixture::new();
    let vendor = "https://127.0.0.1:1/v1";
    // Events wait in the spool under the first id: the destination refuses them.
    let config = fixture.exporting(vendor, &[]);
    let first = config.enable().unwrap().session_id.unwrap();
    let telemetry = config.clone().transport(Arc::new(Refusing)).start();
    for _ in 0..3 {
        run(&telemetry, RunOutcome::Completed);
    }
    assert!(telemetry.flush(WAIT).is_err());
    drop(telemetry);
    assert_eq!(config.status().pending_events, Some(4));

    // A new id, then more events, and now deliveries succeed.
    let second = config.reset().unwrap().session_id.unwrap();
    assert_ne!(first, second);
    one_run_delivered(&config);
    let exported = fixture.exported();
    assert!(!exported.is_empty());
    assert!(
        exported
            .iter()
            .all(|event| event.session_id.to_string() == second),
        "an event under the old id left after the reset"
    );
    let status = config.status();
    assert_eq!(status.pending_events, Some(0));
}

#[test]
fn an_event_edited_in_the_spool_never_leaves() {
    let fixture = Fixture::new();
    let config = fixture.exporting("https://127.0.0.1:1/v1", &[]);
    config.enable().unwrap();
    // A destination that refuses, so that the run waits in the spool.
    let telemetry = config.clone().transport(Arc::new(Refusing)).start();
    run(&telemetry, RunOutcome::Completed);
    assert!(telemetry.flush(WAIT).is_err());
    drop(telemetry);

    // Someone edits the waiting events: a user's data as a feature name, and an email.
    let spool = rusqlite::Connection::open(fixture.home().join("telemetry_spool.sqlite3")).unwrap();
    let edited = spool
        .execute(
            r#"UPDATE events SET json = replace(json, '"features":["retries"]', '"features":["john_smith_payroll","retries"]')"#,
            [],
        )
        .unwrap();
    assert!(edited >= 1);
    drop(spool);

    let telemetry = config.start();
    telemetry.flush(WAIT).unwrap();
    drop(telemetry);
    let exported = fixture.exported();
    assert!(
        exported.iter().all(|event| event
            .features
            .iter()
            .all(|name| name.as_str() != "john_smith_payroll")),
        "{exported:#?}"
    );
    let status = config.status();
    assert!(status.dropped_by_reason["invalid"] >= 1, "{status:#?}");
    assert_eq!(status.pending_events, Some(0));
}

#[test]
fn an_opt_out_that_cannot_purge_says_so() {
    let fixture = Fixture::new();
    let config = fixture.exporting("https://127.0.0.1:1/v1", &[]);
    deliver_one(&config);
    let mut other =
        rusqlite::Connection::open(fixture.home().join("telemetry_spool.sqlite3")).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let error = config.disable().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("your opt-out is recorded, but the unsent events could not be deleted"),
        "{error}"
    );
    lock.rollback().unwrap();
    // The opt-out itself is recorded.
    assert!(!config.status().enabled);
}

#[test]
fn names_that_match_this_machine_keep_telemetry_off_without_repeating_them() {
    // `retries` is a catalog name; a machine whose user is called that cannot send it.
    let fixture = Fixture::new();
    let config = fixture.exporting("https://127.0.0.1:1/v1", &[("USER", "retries")]);
    config.enable().unwrap();
    let telemetry = config.start();
    assert!(!telemetry.is_enabled());
    let warnings = fixture.warnings();
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("matches this machine's user name")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().all(|warning| !warning.contains("retries")),
        "{warnings:?}"
    );
    assert!(!config.status().enabled);
    drop(telemetry);
    assert!(fixture.exported().is_empty());
}

#[test]
fn build_metadata_is_dropped_from_versions_and_other_shapes_are_refused() {
    let with_build = TelemetryConfig::new("testsdk", "1.2.3+build.5", CATALOG, "TESTSDK").unwrap();
    let fixture = Fixture::new();
    let telemetry = with_build
        .state_dir(fixture.home())
        .env(EnvSnapshot::from_pairs([
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            (
                "TESTSDK_SDK_TELEMETRY_ENDPOINT",
                fixture.file_endpoint().as_str(),
            ),
        ]))
        .start();
    run(&telemetry, RunOutcome::Completed);
    telemetry.flush(WAIT).unwrap();
    drop(telemetry);
    assert!(
        fixture
            .exported()
            .iter()
            .all(|event| event.sdk_version.as_str() == "1.2.3")
    );
    for refused in ["1.0.0-alice", "192.168.001.010", "10.0.0.1"] {
        assert!(
            TelemetryConfig::new("testsdk", refused, CATALOG, "TESTSDK").is_err(),
            "{refused}"
        );
    }
}
