//! The facade end to end on real parts: real files, real worker threads, real transports.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use telemetry::internals::transport::SendError;
use telemetry::{
    DecisionReason, EncodedEvent, Event, EventType, ExceptionType, FileTransport, FlushError,
    Integration, Name, RunOutcome, TelemetryConfig, Transport,
};

use support::{CATALOG, Fixture, run};

fn names(names: &std::collections::BTreeSet<Name>) -> Vec<&str> {
    names.iter().map(Name::as_str).collect()
}

#[test]
fn off_by_default_records_and_writes_nothing() {
    let fixture = Fixture::new();
    let endpoint = fixture.file_endpoint();
    let telemetry = fixture
        .config(&[("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint)])
        .start();
    assert!(!telemetry.is_enabled());
    assert_eq!(telemetry.status().reason, DecisionReason::Default);
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(
        telemetry.flush(Duration::from_secs(1)),
        Ok(Default::default())
    );
    drop(telemetry);
    assert!(!fixture.export().exists(), "nothing may be exported");
    assert!(
        !fixture.home().exists(),
        "an undecided user's state directory is not even created"
    );
    assert!(fixture.warnings().is_empty(), "{:?}", fixture.warnings());
}

#[test]
fn enabled_by_env_exports_runs_and_a_usage_summary() {
    let fixture = Fixture::new();
    let config = fixture.enabled_config();
    let telemetry = config.start();
    assert!(telemetry.is_enabled());
    let catalog = telemetry.catalog().clone();
    telemetry.feature_used(catalog.feature("caching").unwrap());
    telemetry.count(catalog.metric("flows_defined").unwrap(), 7);
    telemetry.command_used(catalog.command("run").unwrap());
    telemetry.integration_installed(catalog.integration("aws").unwrap());
    telemetry.integration_import_failed(Integration::OTHER);
    telemetry.exception(ExceptionType::OTHER);
    telemetry.observe_concurrency(3);
    run(&telemetry, RunOutcome::Completed);
    run(&telemetry, RunOutcome::Failed);
    drop(telemetry);

    let events = fixture.exported();
    assert_eq!(events.len(), 3, "two runs and one summary: {events:#?}");
    let session = events[0].session_id;
    for event in &events {
        assert_eq!(event.session_id, session);
        assert_eq!(event.timestamp.unix_seconds() % 3_600, 0);
        assert_eq!(event.sdk_name.as_str(), "testsdk");
        assert_eq!(event.sdk_version.as_str(), "1.2.3");
        assert_eq!(names(&event.integrations), ["aws"]);
    }
    let runs: Vec<&Event> = events
        .iter()
        .filter(|event| event.event_type == EventType::Run)
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome, Some(RunOutcome::Completed));
    assert_eq!(runs[0].duration.as_str(), "1-10s");
    assert_eq!(names(&runs[0].features), ["retries"]);
    assert!(runs[0].errors.is_empty());
    assert_eq!(runs[1].outcome, Some(RunOutcome::Failed));
    assert_eq!(
        runs[1]
            .errors
            .exception_types
            .keys()
            .map(Name::as_str)
            .collect::<Vec<_>>(),
        ["value_error"]
    );

    let summary = events
        .iter()
        .find(|event| event.event_type == EventType::SdkUsage)
        .unwrap();
    assert_eq!(names(&summary.features), ["caching", "retries"]);
    assert_eq!(names(&summary.commands), ["run"]);
    assert_eq!(
        summary
            .metrics
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [("flows_defined", "6-10")]
    );
    assert_eq!(
        names(&summary.errors.integration_import_failures),
        ["other"]
    );
    let exceptions: Vec<(&str, &str)> = summary
        .errors
        .exception_types
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(exceptions, [("other", "1"), ("value_error", "1")]);
    assert_eq!(
        summary.concurrency_peak.map(|peak| peak.as_str()),
        Some("2-5")
    );
    assert_eq!(summary.outcome, None);

    // The session id was created on first use and remembered for the next process.
    let state = std::fs::read_to_string(config.state_file().unwrap()).unwrap();
    assert!(state.contains(&session.to_string()), "{state}");
    assert!(
        !state.contains("enabled"),
        "the env var is not the user's decision: {state}"
    );
}

#[test]
fn do_not_track_and_invalid_settings_keep_telemetry_off() {
    // (variables, expected reason, expected warning fragment)
    type Vars<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(Vars<'_>, DecisionReason, Option<&str>)] = &[
        (
            &[
                ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
                ("DO_NOT_TRACK", "1"),
            ],
            DecisionReason::DoNotTrack,
            None,
        ),
        (
            &[
                ("TESTSDK_SDK_TELEMETRY_ENABLED", "true"),
                ("DO_NOT_TRACK", ""),
            ],
            DecisionReason::DoNotTrack,
            None,
        ),
        (
            &[("TESTSDK_SDK_TELEMETRY_ENABLED", "0")],
            DecisionReason::Env,
            None,
        ),
        (
            &[
                ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
                ("TESTSDK_SDK_TELEMETRY_BATCH_SIZE", "abc"),
            ],
            DecisionReason::InvalidSetting,
            Some(
                "TESTSDK_SDK_TELEMETRY_BATCH_SIZE=\"abc\" is not valid: expected a whole number from 1 to 10000",
            ),
        ),
        (
            &[("TESTSDK_SDK_TELEMETRY_ENABLED", "on")],
            DecisionReason::InvalidSetting,
            Some("TESTSDK_SDK_TELEMETRY_ENABLED=\"on\" is not valid"),
        ),
        (
            &[
                ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
                ("TESTSDK_SDK_TELEMETRY_ENDPOINT", "http://collector.example"),
            ],
            DecisionReason::InvalidSetting,
            Some("plain http:// is not allowed"),
        ),
    ];
    for (vars, reason, warning) in cases {
        let fixture = Fixture::new();
        let endpoint = fixture.file_endpoint();
        let mut vars = vars.to_vec();
        if !vars.iter().any(|(name, _)| name.ends_with("_ENDPOINT")) {
            vars.push(("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint));
        }
        let telemetry = fixture.config(&vars).start();
        assert!(!telemetry.is_enabled(), "{vars:?}");
        assert_eq!(telemetry.status().reason, *reason, "{vars:?}");
        run(&telemetry, RunOutcome::Completed);
        drop(telemetry);
        assert!(fixture.exported().is_empty(), "{vars:?}");
        let warnings = fixture.warnings();
        match warning {
            Some(expected) => {
                assert_eq!(
                    warnings.len(),
                    1,
                    "exactly one warning for {vars:?}: {warnings:?}"
                );
                assert!(warnings[0].contains(expected), "{warnings:?}");
                assert!(
                    warnings[0].starts_with("testsdk telemetry: "),
                    "{warnings:?}"
                );
                assert!(warnings[0].contains("telemetry is off"), "{warnings:?}");
            }
            None => assert!(warnings.is_empty(), "{vars:?}: {warnings:?}"),
        }
    }
}

#[test]
fn the_users_decision_is_remembered_and_reported() {
    let fixture = Fixture::new();
    let endpoint = fixture.file_endpoint();
    let config = fixture.config(&[("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint)]);
    let status = config.enable().unwrap();
    assert!(status.enabled);
    assert_eq!(status.reason, DecisionReason::User);
    let session = status
        .session_id
        .clone()
        .expect("enabling creates a session id");
    assert_eq!(
        config.status().session_id,
        Some(session.clone()),
        "the id is stable"
    );

    let telemetry = config.start();
    assert!(telemetry.is_enabled());
    run(&telemetry, RunOutcome::Completed);
    drop(telemetry);
    assert!(
        fixture
            .exported()
            .iter()
            .all(|event| event.session_id.to_string() == session)
    );

    let status = config.disable().unwrap();
    assert!(!status.enabled);
    assert_eq!(status.reason, DecisionReason::User);
    assert_eq!(status.session_id, None, "disabling forgets the session id");
    assert!(!config.start().is_enabled());

    // A damaged state file is reported, read as undecided, and repaired by the next decision.
    std::fs::write(config.state_file().unwrap(), "[telemetry\nenabled = true").unwrap();
    let telemetry = config.start();
    assert!(!telemetry.is_enabled());
    assert!(
        fixture
            .warnings()
            .iter()
            .any(|warning| warning.contains("is damaged")),
        "{:?}",
        fixture.warnings()
    );
    assert!(config.enable().unwrap().enabled);
}

/// A transport that tells the test about every batch it delivers to a real file transport,
/// and can be made to fail or hang.
#[derive(Debug)]
struct Observed {
    inner: FileTransport,
    batches: Mutex<mpsc::Sender<usize>>,
    mode: Mutex<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Deliver,
    FailTimes(u32),
    Hang,
}

impl Observed {
    fn new(dir: &Path, mode: Mode) -> (Arc<Observed>, mpsc::Receiver<usize>) {
        let (sender, receiver) = mpsc::channel();
        let transport = Observed {
            inner: FileTransport::new(dir, Name::new("testsdk").unwrap()),
            batches: Mutex::new(sender),
            mode: Mutex::new(mode),
        };
        (Arc::new(transport), receiver)
    }
}

#[async_trait::async_trait]
impl Transport for Observed {
    fn kind(&self) -> &'static str {
        "observed"
    }

    fn destination(&self) -> String {
        self.inner.destination()
    }

    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Hang => std::future::pending().await,
            Mode::FailTimes(times) if times > 0 => {
                *self.mode.lock().unwrap() = Mode::FailTimes(times - 1);
                Err(SendError::Retryable {
                    message: "refused".to_owned(),
                    retry_after: None,
                })
            }
            _ => {
                self.inner.send(events).await?;
                let _ = self.batches.lock().unwrap().send(events.len());
                Ok(())
            }
        }
    }
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn batches_are_sent_when_full() {
    let fixture = Fixture::new();
    let (transport, batches) = Observed::new(&fixture.export(), Mode::Deliver);
    let telemetry = fixture
        .config(&[
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            ("TESTSDK_SDK_TELEMETRY_BATCH_SIZE", "3"),
        ])
        .transport(transport)
        .start();
    for _ in 0..7 {
        run(&telemetry, RunOutcome::Completed);
    }
    // Two full batches go out without any flush; the seventh event waits for the interval.
    let mut delivered = 0;
    while delivered < 6 {
        let batch = batches
            .recv_timeout(WAIT)
            .expect("a full batch is delivered");
        assert!(batch <= 3, "batch of {batch} exceeds the batch size");
        delivered += batch;
    }
    assert_eq!(delivered, 6);
    // The worker handles one thing at a time, so the flush runs after those deliveries.
    let report = telemetry.flush(WAIT).unwrap();
    assert_eq!((report.delivered, report.pending), (1, 0));
    assert_eq!(fixture.exported().len(), 7);
}

#[test]
fn batches_are_sent_on_the_interval() {
    let fixture = Fixture::new();
    let (transport, batches) = Observed::new(&fixture.export(), Mode::Deliver);
    let telemetry = fixture
        .config(&[
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            ("TESTSDK_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS", "0.05"),
        ])
        .transport(transport)
        .start();
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(
        batches
            .recv_timeout(WAIT)
            .expect("the interval delivers a partial batch"),
        1
    );
    assert_eq!(fixture.exported().len(), 1);
    // A flush waits for the round in flight, which records its delivery before it ends.
    assert_eq!(telemetry.flush(WAIT).unwrap().pending, 0);
    assert!(telemetry.status().last_sent.is_some());
}

#[test]
fn failed_deliveries_keep_events_until_they_succeed() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::FailTimes(2));
    let telemetry = fixture
        .config(&[("TESTSDK_SDK_TELEMETRY_ENABLED", "1")])
        .transport(transport)
        .start();
    for _ in 0..4 {
        run(&telemetry, RunOutcome::Completed);
    }
    for _ in 0..2 {
        match telemetry.flush(WAIT) {
            Err(FlushError::Delivery(message)) => assert!(message.contains("refused"), "{message}"),
            other => panic!("expected a delivery failure, got {other:?}"),
        }
        assert_eq!(telemetry.status().pending_events, Some(4));
    }
    assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 4);
    assert_eq!(fixture.exported().len(), 4);
}

#[test]
fn flush_and_shutdown_return_at_their_deadline_when_the_destination_hangs() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::Hang);
    let telemetry = fixture
        .config(&[("TESTSDK_SDK_TELEMETRY_ENABLED", "1")])
        .transport(transport)
        .shutdown_timeout(Duration::from_millis(200))
        .start();
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(
        telemetry.flush(Duration::from_millis(200)),
        Err(FlushError::Timeout)
    );
    assert_eq!(
        telemetry.status().pending_events,
        Some(1),
        "the event is kept"
    );
    // Dropping returns after the shutdown timeout although the worker is stuck.
    drop(telemetry);
    assert!(fixture.exported().is_empty());
}

/// A shutdown with no time at all still leaves every record counted in a memory buffer: the
/// writes of a buffer that never blocks are done when they are made, so a deadline that has
/// passed cannot leave one behind.
#[test]
fn a_shutdown_without_time_still_counts_every_record_in_a_memory_buffer() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::FailTimes(u32::MAX));
    let telemetry = fixture
        .config(&[("TESTSDK_SDK_TELEMETRY_ENABLED", "1")])
        .transport(transport)
        .buffer(Arc::new(telemetry::MemoryBuffer::new(1_000)))
        .start();
    for _ in 0..50 {
        run(&telemetry, RunOutcome::Completed);
    }
    telemetry.shutdown(Duration::ZERO);
    let status = telemetry.status();
    // The 50 runs and the summary: pending (stored) or counted as dropped for storage.
    assert_eq!(
        status.pending_events.unwrap() + status.dropped_events,
        51,
        "{status:#?}"
    );
    assert_eq!(status.delivered_events, 0, "{status:#?}");
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::Hang);
    let telemetry = fixture
        .config(&[
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            ("TESTSDK_SDK_TELEMETRY_BATCH_SIZE", "1"),
        ])
        .transport(transport)
        .queue_capacity(1)
        .shutdown_timeout(Duration::from_millis(100))
        .start();
    for _ in 0..1_000 {
        run(&telemetry, RunOutcome::Completed);
    }
    let dropped = telemetry.dropped_records();
    assert!(
        dropped > 500,
        "a queue of one record fills at once, so most records are dropped: {dropped}"
    );
    // A flush stores what is queued and writes the counts before its delivery hangs.
    assert!(telemetry.flush(Duration::from_millis(300)).is_err());
    let status = telemetry.status();
    assert_eq!(status.dropped_events, dropped, "{status:#?}");
    assert_eq!(
        status.dropped_by_reason["queue_full"], dropped,
        "{status:#?}"
    );
}

#[test]
fn works_from_inside_a_hosts_tokio_runtime() {
    let fixture = Fixture::new();
    let config = fixture.enabled_config();
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            _ => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .unwrap();
        runtime.block_on(async {
            let telemetry = config.start();
            run(&telemetry, RunOutcome::Completed);
            tokio::task::yield_now().await;
            assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 1, "{flavor}");
            drop(telemetry);
        });
    }
    // Two runs and two summaries.
    assert_eq!(fixture.exported().len(), 4);
}

#[test]
fn handles_are_cheap_clones_and_the_last_one_shuts_down() {
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let telemetry = telemetry.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    run(&telemetry, RunOutcome::Completed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(telemetry);
    let events = fixture.exported();
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::Run)
            .count(),
        100
    );
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::SdkUsage)
            .count(),
        1
    );
}

#[test]
fn disabling_through_the_api_stops_collection_and_purges_what_is_pending() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::FailTimes(u32::MAX));
    let config = fixture.config(&[]).transport(transport);
    config.enable().unwrap();
    let telemetry = config.start();
    for _ in 0..3 {
        run(&telemetry, RunOutcome::Completed);
    }
    assert!(
        telemetry.flush(WAIT).is_err(),
        "the destination refuses, so events stay pending"
    );
    assert_eq!(telemetry.status().pending_events, Some(3));
    let status = telemetry.disable().unwrap();
    assert!(!status.enabled && status.session_id.is_none());
    let request = status.deletion_request.unwrap();
    assert!(
        request.starts_with("not sent: delivery failed, will retry: refused"),
        "{request}"
    );
    assert!(!telemetry.is_enabled());
    assert_eq!(
        telemetry.status().pending_events,
        Some(0),
        "unsent events are deleted"
    );
    run(&telemetry, RunOutcome::Completed);
    drop(telemetry);
    assert!(
        fixture.exported().is_empty(),
        "no summary after an opt-out either"
    );
    let audit = config.audit_log().unwrap().read().unwrap().0;
    let sources: Vec<_> = audit
        .iter()
        .map(|entry| (entry.change, entry.source))
        .collect();
    use telemetry::{AuditChange, AuditSource};
    assert_eq!(
        sources,
        [
            (AuditChange::Enabled, AuditSource::Cli),
            (AuditChange::Disabled, AuditSource::Api)
        ]
    );
}

#[test]
fn preview_shows_the_exact_bytes_and_sends_nothing() {
    let fixture = Fixture::new();
    let config = fixture.enabled_config();
    let preview = config.preview();
    assert!(preview.enabled);
    assert_eq!(preview.destination, Some(fixture.file_endpoint()));
    let text = String::from_utf8(preview.bytes).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "one JSONL line for a file destination"
    );
    let event: Event = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(event.event_type, EventType::SdkUsage);
    assert!(!fixture.export().exists(), "a preview writes nothing");
}

#[test]
fn a_new_consent_version_asks_again_and_old_consent_stops_counting() {
    use telemetry::PromptOutcome;
    let fixture = Fixture::new();
    let endpoint = fixture.file_endpoint();
    let answer = |config: &TelemetryConfig, text: &'static str| {
        let mut output = Vec::new();
        let outcome = config.prompt_with(
            true,
            true,
            Box::new(std::io::Cursor::new(text)),
            &mut output,
        );
        (outcome, String::from_utf8(output).unwrap())
    };
    let version_1 = fixture
        .config(&[("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint)])
        .prompt_timeout(WAIT);
    let (outcome, output) = answer(&version_1, "yes\n");
    assert_eq!(outcome, PromptOutcome::Accepted, "{output}");
    assert!(output.contains("Enable telemetry? [y/N]"), "{output}");
    assert_eq!(
        answer(&version_1, "y\n").0,
        PromptOutcome::NotShown,
        "asked once per environment"
    );
    assert!(version_1.start().is_enabled());

    let version_2 = version_1.clone().consent_version(2);
    assert!(
        !version_2.start().is_enabled(),
        "consent for version 1 does not cover version 2"
    );
    assert_eq!(answer(&version_2, "\n").0, PromptOutcome::Declined);
    assert!(!version_2.start().is_enabled());
    assert_eq!(answer(&version_2, "y\n").0, PromptOutcome::NotShown);
    // Not at a terminal: never asked.
    let version_3 = version_1.clone().consent_version(3);
    let mut output = Vec::new();
    let outcome = version_3.prompt_with(
        false,
        true,
        Box::new(std::io::Cursor::new("y\n")),
        &mut output,
    );
    assert_eq!(outcome, PromptOutcome::NotShown);
    assert!(output.is_empty());
}

#[test]
fn runs_alike_become_distinct_events_that_follow_what_changed() {
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    for _ in 0..3 {
        run(&telemetry, RunOutcome::Completed);
    }
    telemetry.flush(WAIT).unwrap();
    // An integration installed between runs of the same kind shows in the later ones only.
    telemetry.integration_installed(telemetry.catalog().integration("aws").unwrap());
    for _ in 0..2 {
        run(&telemetry, RunOutcome::Completed);
    }
    telemetry.flush(WAIT).unwrap();
    drop(telemetry);

    let mut runs: Vec<Event> = fixture
        .exported()
        .into_iter()
        .filter(|event| event.event_type == EventType::Run)
        .collect();
    assert_eq!(runs.len(), 5);
    let ids: std::collections::BTreeSet<_> = runs.iter().map(|event| event.event_id).collect();
    assert_eq!(ids.len(), 5, "every run has its own event id");
    let with_aws = runs
        .iter()
        .filter(|event| names(&event.integrations) == ["aws"])
        .count();
    assert_eq!(with_aws, 2);
    // Apart from the id and the integrations (and the hour, should one end meanwhile), the
    // five are the same event.
    let first = runs[0].clone();
    for event in &mut runs {
        event.event_id = first.event_id;
        event.timestamp = first.timestamp;
        event.integrations.clear();
        assert_eq!(*event, first);
    }
}

#[test]
fn names_and_versions_that_look_personal_keep_telemetry_off_before_anything_is_built() {
    // An SDK version shaped like an IPv4 address used to be the string an SDK author controls
    // that only the scrubber caught; the version grammar now refuses it with the configuration.
    let refused = TelemetryConfig::new("testsdk", "10.0.0.1", CATALOG, "TESTSDK").unwrap_err();
    assert!(refused.to_string().contains("IPv4 address"), "{refused}");

    // By construction nothing personal reaches an event. A catalog name that is also this
    // machine's user name would be in every event that uses it: the start-up check keeps
    // telemetry off, before the scrubber (which would drop each such event) is needed.
    let fixture = Fixture::new();
    let endpoint = fixture.file_endpoint();
    let config = fixture.config(&[
        ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
        ("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ("USER", "retries"),
    ]);
    let telemetry = config.start();
    assert!(!telemetry.is_enabled());
    run(&telemetry, RunOutcome::Completed);
    drop(telemetry);
    assert!(fixture.exported().is_empty());
    assert!(
        fixture
            .warnings()
            .iter()
            .any(|warning| warning.contains("matches this machine's user name"))
    );

    // The same workload with a user whose name equals an enum spelling loses nothing.
    let fixture = Fixture::new();
    let endpoint = fixture.file_endpoint();
    let config = fixture.config(&[
        ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
        ("TESTSDK_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ("USER", "linux"),
    ]);
    let telemetry = config.start();
    run(&telemetry, RunOutcome::Completed);
    telemetry.flush(WAIT).unwrap();
    assert!(telemetry.status().scrubbed_events.is_empty());
    drop(telemetry);
    assert_eq!(fixture.exported().len(), 2);
}

#[test]
fn opting_out_asks_the_destination_to_delete_the_old_session() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::Deliver);
    let config = fixture.config(&[]).transport(transport);
    let session = config.enable().unwrap().session_id.unwrap();
    let telemetry = config.start();
    run(&telemetry, RunOutcome::Completed);
    drop(telemetry);

    let status = config.disable().unwrap();
    assert_eq!(status.session_id, None);
    let request = status
        .deletion_request
        .expect("a deletion request was attempted");
    assert!(request.starts_with("sent to file://"), "{request}");
    let events = fixture.exported();
    let deletion: Vec<&Event> = events
        .iter()
        .filter(|event| event.event_type == EventType::DeletionRequest)
        .collect();
    assert_eq!(deletion.len(), 1, "{events:#?}");
    assert_eq!(deletion[0].session_id.to_string(), session);
    assert!(deletion[0].features.is_empty() && deletion[0].metrics.is_empty());

    // Disabling again (no session id any more) sends nothing; neither does an SDK that opts out of erasure.
    assert_eq!(config.disable().unwrap().deletion_request, None);
    let quiet = config.clone().deletion_request_on_opt_out(false);
    quiet.enable().unwrap();
    assert_eq!(quiet.disable().unwrap().deletion_request, None);
    let count = fixture
        .exported()
        .iter()
        .filter(|event| event.event_type == EventType::DeletionRequest)
        .count();
    assert_eq!(count, 1);
}

#[test]
fn under_do_not_track_not_even_a_deletion_request_leaves() {
    let fixture = Fixture::new();
    let (transport, _batches) = Observed::new(&fixture.export(), Mode::Deliver);
    let config = fixture
        .config(&[])
        .transport(Arc::clone(&transport) as Arc<dyn Transport>);
    config.enable().unwrap();
    // Events under the id left the machine, so a deletion request would be due...
    let telemetry = config.start();
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 1);
    drop(telemetry);
    let sent = fixture.exported().len();
    // ...but under DO_NOT_TRACK nothing leaves, and the status says why.
    let with_dnt = fixture
        .config(&[("DO_NOT_TRACK", "1")])
        .transport(transport);
    let status = with_dnt.disable().unwrap();
    assert_eq!(status.reason, DecisionReason::DoNotTrack);
    assert_eq!(
        status.deletion_request.as_deref(),
        Some("not sent: DO_NOT_TRACK is set")
    );
    assert_eq!(fixture.exported().len(), sent);
}

#[test]
fn the_spool_is_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    run(&telemetry, RunOutcome::Completed);
    drop(telemetry);
    let spool = fixture.home().join("telemetry_spool.sqlite3");
    let mode = std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{spool:?}");
}

#[test]
fn a_running_handle_reports_the_buffer_it_really_uses() {
    let fixture = Fixture::new();
    let telemetry = fixture.enabled_config().start();
    // The worker opens the buffer on its own thread before it answers anything.
    telemetry.flush(WAIT).unwrap();
    assert_eq!(telemetry.status().buffer, "sqlite");
    drop(telemetry);

    // A directory where the spool file should be: the spool cannot open, memory takes over.
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.home().join("telemetry_spool.sqlite3")).unwrap();
    let telemetry = fixture.enabled_config().start();
    assert!(telemetry.is_enabled());
    telemetry.flush(WAIT).unwrap();
    assert_eq!(telemetry.status().buffer, "memory");
    assert!(
        fixture
            .warnings()
            .iter()
            .any(|warning| warning.contains("events are kept in memory"))
    );
    run(&telemetry, RunOutcome::Completed);
    assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 1);
}

#[test]
fn a_spool_another_connection_keeps_locked_stretches_no_deadline_and_miscounts_nothing() {
    let fixture = Fixture::new();
    let config = fixture
        .enabled_config()
        .shutdown_timeout(Duration::from_millis(300));
    let telemetry = config.start();
    for _ in 0..5 {
        run(&telemetry, RunOutcome::Completed);
    }
    // Store the runs (the flush exports them), then record more and hold the spool's write
    // lock from another connection, as another process mid-transaction would.
    assert_eq!(telemetry.flush(WAIT).unwrap().delivered, 5);
    for _ in 0..3 {
        run(&telemetry, RunOutcome::Completed);
    }
    let mut other =
        rusqlite::Connection::open(fixture.home().join("telemetry_spool.sqlite3")).unwrap();
    let lock = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();

    let started = std::time::Instant::now();
    let result = telemetry.flush(Duration::from_millis(500));
    let took = started.elapsed();
    // The spool waits up to 5 s for the lock; the flush's deadline is what counts. A contract,
    // not a benchmark: the margin is generous.
    assert!(
        took < Duration::from_millis(1_400),
        "the flush took {took:?}"
    );
    match result {
        Err(FlushError::Storage(message)) => {
            assert!(message.contains("did not answer in time"), "{message}")
        }
        Err(FlushError::Timeout) => {}
        other => panic!("expected the busy spool to stop the flush, got {other:?}"),
    }
    // Counting needs no lock: the status of the running handle and of a new process agree.
    let status = config.status();
    assert_eq!(status.delivered_events, 5, "{status:#?}");
    assert!(
        status
            .problems
            .iter()
            .all(|problem| !problem.contains("cannot count")),
        "{status:#?}"
    );
    lock.rollback().unwrap();
    drop(other);

    // Once the lock is gone the three runs go out.
    telemetry.flush(WAIT).unwrap();
    let status = config.status();
    assert_eq!(
        (status.pending_events, status.delivered_events),
        (Some(0), 8),
        "{status:#?}"
    );
    // The summary goes out at shutdown, or, when the 300 ms shutdown cannot deliver it (a
    // loaded machine), stays pending for the next process: never lost, never counted twice.
    drop(telemetry);
    let status = config.status();
    assert_eq!(status.dropped_events, 0, "{status:#?}");
    assert_eq!(
        status.delivered_events + status.pending_events.unwrap(),
        9,
        "{status:#?}"
    );
    let next = config.start();
    next.flush(WAIT).unwrap();
    let status = config.status();
    assert_eq!(
        (
            status.pending_events,
            status.delivered_events,
            status.dropped_events
        ),
        (Some(0), 9, 0),
        "{status:#?}"
    );
    assert_eq!(fixture.exported().len(), 9);
}

/// Deliveries that went out directly reach the shared ledger while the process still runs and
/// keeps delivering, within the lag the worker allows itself (5 s) and a drain, not only at
/// shutdown: `status` in another process sees them. Then every exported event is counted.
#[test]
fn direct_deliveries_reach_the_shared_ledger_while_the_process_runs() {
    let fixture = Fixture::new();
    let config = fixture.enabled_config();
    let telemetry = config.start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // More than a batch every half second: every drain sends from memory, with no flush.
    let recorder = {
        let telemetry = telemetry.clone();
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..150 {
                    run(&telemetry, RunOutcome::Completed);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let started = std::time::Instant::now();
    let mut status = config.status();
    // A contract, not a benchmark: the bound is the lag, a drain and a generous margin.
    while status.delivered_events == 0 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        status = config.status();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    recorder.join().unwrap();
    assert!(status.delivered_events >= 150, "{status:#?}");
    assert!(status.last_sent.is_some(), "{status:#?}");
    assert!(telemetry.is_enabled(), "the process was still running");
    drop(telemetry);
    let status = config.status();
    let exported = fixture.exported().len() as u64;
    // Every run and the summary, each delivered once and counted once.
    assert_eq!(exported % 150, 1, "{exported} events exported");
    assert_eq!(
        (status.delivered_events, status.pending_events),
        (exported, Some(0)),
        "{status:#?}"
    );
}
