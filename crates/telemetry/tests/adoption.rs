//! Adopting the library the way SDKs are written: one `init` per process however many entry
//! points call it, a no-op handle, awaitable flush and shutdown that leave the runtime's thread
//! free, and a handle that survives a panic.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::{CATALOG, Fixture, read_events};
use telemetry::{
    EnvSnapshot, EventType, FeatureSet, FlushError, RunOutcome, RunRecord, Telemetry,
    TelemetryConfig,
};

/// An enabled configuration exporting to the fixture, under an SDK name of the test's own (the
/// process-wide registry is keyed by SDK name, and tests may share a process).
fn config(fixture: &Fixture, sdk: &str, endpoint: &str) -> TelemetryConfig {
    TelemetryConfig::new(sdk, "1.0.0", CATALOG, "TESTSDK")
        .unwrap()
        .state_dir(fixture.home())
        .env(EnvSnapshot::from_pairs([
            ("TESTSDK_SDK_TELEMETRY_ENABLED", "1"),
            ("TESTSDK_SDK_TELEMETRY_ENDPOINT", endpoint),
        ]))
}

fn summaries(fixture: &Fixture) -> usize {
    read_events(&fixture.export())
        .iter()
        .filter(|event| event.event_type == EventType::SdkUsage)
        .count()
}

#[test]
fn a_second_init_joins_the_first_and_the_last_guard_sends_one_summary() {
    let fixture = Fixture::new();
    let config = config(&fixture, "adopt_one", &fixture.file_endpoint());
    let first = telemetry::init(&config);
    assert!(first.is_enabled());
    // A second entry point of the library, with a configuration of its own.
    let second = telemetry::init(&config.clone().shutdown_timeout(Duration::from_secs(5)));
    assert!(first.same_instance(&second));
    assert!(telemetry::current("adopt_one").same_instance(&first));
    support::run(&first, RunOutcome::Completed);
    support::run(&second, RunOutcome::Failed);
    let third = second.clone();
    drop(first);
    drop(second);
    // A guard is still alive: nothing stopped, nothing summarised yet.
    assert!(third.is_enabled());
    assert_eq!(summaries(&fixture), 0);
    drop(third);
    let events = read_events(&fixture.export());
    assert_eq!(
        events
            .iter()
            .filter(|event| event.event_type == EventType::Run)
            .count(),
        2
    );
    assert_eq!(summaries(&fixture), 1, "one worker, one summary");
    // The instance is gone: `current` hands out a handle that records nothing, and a new init
    // starts a new instance.
    assert!(!telemetry::current("adopt_one").is_enabled());
    let again = telemetry::init(&config);
    assert!(again.is_enabled());
    drop(again);
    assert_eq!(summaries(&fixture), 2);
}

/// The first `init` decides and starts outside the registry's lock: while it waits for a state
/// file another process has locked, `current` and the `init` of another SDK answer at once.
#[test]
#[cfg(unix)]
fn a_slow_first_init_holds_up_no_other_caller() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let locked = Fixture::new();
    std::fs::create_dir_all(locked.home()).unwrap();
    let lock_file = locked.home().join("telemetry_state.lock");
    // Another process holds the state directory's lock, as a stuck SDK process would.
    let mut holder = Command::new("flock")
        .arg(&lock_file)
        // Holds it until its standard input closes, which also happens if this test dies. The
        // command is named, not passed to `-c`: that would run it in the user's `$SHELL`.
        .args(["sh", "-c", "echo held; read _"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");

    let slow_config = config(&locked, "adopt_slow_start", &locked.file_endpoint());
    let slow = std::thread::spawn(move || telemetry::init(&slow_config));
    // Let it reach the state file's lock, which it waits on for up to two seconds.
    std::thread::sleep(Duration::from_millis(300));

    assert!(!telemetry::current("adopt_slow_start").is_enabled());
    let other = Fixture::new();
    let other_guard = telemetry::init(&config(&other, "adopt_other", &other.file_endpoint()));
    assert!(other_guard.is_enabled());
    assert!(
        !slow.is_finished(),
        "the other callers returned only after the slow init had finished"
    );

    drop(holder.stdin.take());
    holder.wait().unwrap();
    let slow_guard = slow.join().unwrap();
    let again = telemetry::init(&config(
        &locked,
        "adopt_slow_start",
        &locked.file_endpoint(),
    ));
    assert!(
        again.same_instance(&slow_guard),
        "the same instance once started"
    );
}

/// A first `init` that panics while starting (here the host's warning sink panics) leaves no
/// count behind: the next instance stops when its last guard is dropped.
#[test]
fn a_first_init_that_panics_leaves_the_registry_as_it_was() {
    let fixture = Fixture::new();
    let panicking = TelemetryConfig::new("adopt_panicking_sink", "1.0.0", CATALOG, "TESTSDK")
        .unwrap()
        .state_dir(fixture.home())
        .env(EnvSnapshot::from_pairs([(
            "TESTSDK_SDK_TELEMETRY_ENABLED",
            "maybe",
        )]))
        .warnings(Arc::new(|message: &str| {
            panic!("the host's sink: {message}")
        }));
    let started =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| telemetry::init(&panicking)));
    assert!(started.is_err(), "the sink's panic reaches the caller");

    let guard = telemetry::init(&config(
        &fixture,
        "adopt_panicking_sink",
        &fixture.file_endpoint(),
    ));
    assert!(guard.is_enabled());
    drop(guard);
    assert!(
        !telemetry::current("adopt_panicking_sink").is_enabled(),
        "the instance outlived its last guard"
    );
    assert_eq!(summaries(&fixture), 1, "and it was stopped");
}

#[test]
fn the_disabled_handle_records_nothing_and_reads_no_setting() {
    let telemetry = Telemetry::disabled();
    assert!(!telemetry.is_enabled());
    telemetry.record_run(RunRecord {
        features: FeatureSet::new(),
        duration: Duration::from_secs(1),
        outcome: RunOutcome::Completed,
        exception: None,
    });
    assert_eq!(
        telemetry.flush(Duration::from_secs(1)).unwrap().delivered,
        0
    );
    let status = telemetry.status();
    assert!(!status.enabled, "{status:?}");
    telemetry.shutdown(Duration::from_secs(1));
    assert!(!telemetry::current("no_such_sdk").is_enabled());
    let guard = telemetry::TelemetryGuard::disabled();
    assert!(!guard.is_enabled());
    drop(guard.clone());
    drop(guard);
}

/// A TCP port that accepts connections and never answers: the TLS handshake never ends.
fn silent_endpoint() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}/v1/events", listener.local_addr().unwrap());
    (listener, endpoint)
}

#[test]
fn awaited_flush_and_shutdown_leave_a_single_threaded_runtime_free() {
    let fixture = Fixture::new();
    let (_listener, endpoint) = silent_endpoint();
    let telemetry = config(&fixture, "adopt_async", &endpoint).start();
    support::run(&telemetry, RunOutcome::Completed);
    let ticks = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Another task on the same (only) thread, counting while the flush waits.
        let counter = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            loop {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        let flushed = telemetry.flush_async(Duration::from_millis(800)).await;
        assert!(
            matches!(flushed, Err(FlushError::Timeout) | Ok(_)),
            "{flushed:?}"
        );
        let during_flush = ticks.load(Ordering::Relaxed) - before;
        assert!(
            during_flush >= 5,
            "the other task ran {during_flush} times while the flush waited: the thread was blocked"
        );
        let before = ticks.load(Ordering::Relaxed);
        telemetry.shutdown_async(Duration::from_millis(800)).await;
        let during_shutdown = ticks.load(Ordering::Relaxed) - before;
        assert!(during_shutdown >= 5, "{during_shutdown}");
        ticker.abort();
    });
    assert!(!telemetry.is_enabled());
    // The worker was asked to stop; dropping the last handle now waits for nothing.
    drop(telemetry);
    // What the silent endpoint never took stays in the spool for the next process.
    let next = config(&fixture, "adopt_async", &fixture.file_endpoint()).start();
    assert!(next.status().pending_events.unwrap_or(0) >= 1);
}

#[test]
fn a_handle_can_be_held_across_a_panic() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>(_: &T) {}
    let fixture = Fixture::new();
    let telemetry = config(&fixture, "adopt_unwind", &fixture.file_endpoint()).start();
    unwind_safe(&telemetry);
    let crashed = std::panic::catch_unwind(|| {
        support::run(&telemetry, RunOutcome::Completed);
        panic!("the host's run panicked");
    });
    assert!(crashed.is_err());
    support::run(&telemetry, RunOutcome::Crashed);
    telemetry.shutdown(Duration::from_secs(5));
    let runs = read_events(&fixture.export())
        .iter()
        .filter(|event| event.event_type == EventType::Run)
        .count();
    assert_eq!(runs, 2);
}

#[test]
fn the_prompt_names_the_command_users_type() {
    use telemetry::PromptOutcome;
    let fixture = Fixture::new();
    let config = fixture.config(&[]).command_name("acme-jobs");
    assert_eq!(config.cli_command(), "acme-jobs");
    let mut output = Vec::new();
    let outcome = config.prompt_with(
        true,
        true,
        Box::new(std::io::Cursor::new("no\n")),
        &mut output,
    );
    let output = String::from_utf8(output).unwrap();
    assert_eq!(outcome, PromptOutcome::Declined, "{output}");
    assert!(output.contains("acme-jobs telemetry enable"), "{output}");
    assert!(!output.contains("testsdk telemetry"), "{output}");
    // Without one, the SDK's name; control characters are never echoed.
    assert_eq!(fixture.config(&[]).cli_command(), "testsdk");
    assert_eq!(
        fixture
            .config(&[])
            .command_name("acme\u{1b}[2J-jobs")
            .cli_command(),
        "acme[2J-jobs"
    );
}
