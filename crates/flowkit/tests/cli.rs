//! The real `flowkit` binary, run as a user would, with a clean environment in a temp dir.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::{Sandbox, lines_in};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Waits, a bounded number of times, until a running flowkit has exported something: an
/// external process offers no signal to wait on.
fn wait_for_a_delivery(sandbox: &Sandbox) {
    for _ in 0..500 {
        if !sandbox.exported_lines().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the running process delivered nothing");
}

/// The distinct event ids of exported lines.
fn event_ids(lines: &[String]) -> std::collections::HashSet<String> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["event_id"].to_string()
        })
        .collect()
}

fn status_json(sandbox: &Sandbox, vars: &[(&str, &str)]) -> serde_json::Value {
    let output = sandbox.output(&["telemetry", "status", "--json"], vars);
    check_success(&output);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn simulate_collects_only_when_enabled_and_not_vetoed() {
    let runs = [
        "simulate",
        "--runs",
        "5",
        "--seed",
        "7",
        "--fail-rate",
        "0.3",
    ];
    // (extra variables, whether events are exported)
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[], false),
        (&[("FLOWKIT_SDK_TELEMETRY_ENABLED", "1")], true),
        (
            &[
                ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
                ("DO_NOT_TRACK", "1"),
            ],
            false,
        ),
        (&[("FLOWKIT_SDK_TELEMETRY_ENABLED", "false")], false),
    ];
    for (vars, exports) in cases {
        let sandbox = Sandbox::new();
        let endpoint = sandbox.file_endpoint();
        let mut vars = vars.to_vec();
        vars.push(("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint));
        let output = sandbox.output(&runs, &vars);
        check_success(&output);
        assert!(
            text(&output.stdout).contains("Ran 5 flow runs of \"etl\""),
            "{}",
            text(&output.stdout)
        );
        assert!(
            output.stderr.is_empty(),
            "{vars:?}: {}",
            text(&output.stderr)
        );
        let lines = sandbox.exported_lines();
        if *exports {
            assert_eq!(lines.len(), 6, "five runs and a summary: {lines:#?}");
        } else {
            assert!(lines.is_empty(), "{vars:?} exported {lines:#?}");
            assert!(
                !sandbox.home().exists(),
                "{vars:?}: nothing may be written for an undecided user"
            );
        }
    }
}

#[test]
fn an_invalid_setting_warns_once_runs_the_flows_and_collects_nothing() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let output = sandbox.output(
        &["simulate", "--runs", "1"],
        &[
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint),
            ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "abc"),
        ],
    );
    check_success(&output);
    assert!(
        text(&output.stdout).contains("Ran 1 flow runs"),
        "{}",
        text(&output.stdout)
    );
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "exactly one warning: {stderr}");
    assert!(
        stderr.contains("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE=\"abc\" is not valid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a whole number from 1 to 10000"),
        "{stderr}"
    );
    assert!(stderr.contains("telemetry is off"), "{stderr}");
    assert!(sandbox.exported_lines().is_empty());
}

#[test]
fn enable_and_disable_are_remembered_and_shown_by_status() {
    let sandbox = Sandbox::new();
    let status = status_json(&sandbox, &[]);
    assert_eq!(status["enabled"], false);
    assert_eq!(status["reason"], "default");
    for field in [
        "session_id",
        "endpoint",
        "transport",
        "buffer",
        "pending_events",
        "last_sent",
        "prompted",
        "policy_file",
    ] {
        assert!(
            status.get(field).is_some(),
            "status --json lacks {field}: {status}"
        );
    }

    let output = sandbox.output(&["telemetry", "enable"], &[]);
    check_success(&output);
    assert!(
        text(&output.stdout).contains("Telemetry enabled"),
        "{}",
        text(&output.stdout)
    );
    let endpoint = sandbox.file_endpoint();
    let status = status_json(&sandbox, &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint)]);
    assert_eq!(status["enabled"], true);
    assert_eq!(status["reason"], "user");
    let session = status["session_id"].as_str().unwrap().to_owned();
    assert_eq!(status["endpoint"], endpoint);
    assert_eq!(status["transport"], "file");

    // The user's decision now collects without any variable but the destination.
    let output = sandbox.output(
        &["simulate", "--runs", "2"],
        &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint)],
    );
    check_success(&output);
    let lines = sandbox.exported_lines();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|line| line.contains(&session)));

    // DO_NOT_TRACK still wins, and `status` says so.
    let output = sandbox.output(&["telemetry", "status"], &[("DO_NOT_TRACK", "1")]);
    check_success(&output);
    assert!(
        text(&output.stdout).starts_with("Telemetry: Disabled (DO_NOT_TRACK is set)"),
        "{}",
        text(&output.stdout)
    );

    let output = sandbox.output(&["telemetry", "disable"], &[]);
    check_success(&output);
    let status = status_json(&sandbox, &[]);
    assert_eq!(status["enabled"], false);
    assert_eq!(status["reason"], "user");
    assert_eq!(status["session_id"], serde_json::Value::Null);
}

#[test]
fn insecure_or_broken_destinations_are_refused_at_start_up() {
    // (variables, what the one warning says)
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "http://collector.example")],
            "plain http:// is not allowed",
        ),
        (
            &[
                ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", "https://127.0.0.1:9/"),
                ("FLOWKIT_SDK_TELEMETRY_CA_FILE", "/nonexistent/ca.pem"),
            ],
            "/nonexistent/ca.pem",
        ),
    ];
    for (vars, expected) in cases {
        let sandbox = Sandbox::new();
        let mut vars = vars.to_vec();
        vars.push(("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"));
        let output = sandbox.output(&["simulate", "--runs", "1"], &vars);
        check_success(&output);
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{vars:?}: {stderr}");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
        assert!(stderr.contains("telemetry is off"), "{stderr}");
        // status says what the process did: off.
        let status = status_json(&sandbox, &vars);
        assert_eq!(status["enabled"], false, "{vars:?}: {status}");
    }
}

#[test]
fn settings_that_would_fail_later_are_refused_at_start_up_and_status_says_off() {
    let sandbox = Sandbox::new();
    let long = format!("https://{}.example/", "a".repeat(130_000));
    // (variable, value, what the one warning says, what it must not echo)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
            "0.0000000001",
            "0.05",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_BATCH_INTERVAL_SECONDS",
            "1e30",
            "0.05",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "https://localhost:99999/v1",
            "port",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "https://ex%41mple.com/",
            "host",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "file:///dev/null",
            "/dev",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "file:///tmp/a%00b",
            "control",
            "panicked",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "https://alice:S3cret@collector.example/v1?token=abc#x",
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "S3cret",
        ),
        (
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            &long,
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ];
    for &(variable, value, expected, never) in cases {
        let vars = [("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"), (variable, value)];
        let output = sandbox.output(&["simulate", "--runs", "3"], &vars);
        check_success(&output);
        let stderr = text(&output.stderr);
        let shown = &stderr[..stderr.len().min(300)];
        assert_eq!(stderr.lines().count(), 1, "{variable}: {shown}");
        assert!(stderr.contains(expected), "{variable}: {shown}");
        assert!(stderr.contains("telemetry is off"), "{variable}: {shown}");
        assert!(
            !stderr.contains(never),
            "{variable} echoed {never:?}: {shown}"
        );
        assert!(
            stderr.len() < 1_000,
            "{variable}: a {} byte warning",
            stderr.len()
        );
        let status = status_json(&sandbox, &vars);
        assert_eq!(status["enabled"], false, "{variable}: {status}");
        assert!(!status.to_string().contains(never), "{variable}: {status}");
        assert!(sandbox.exported_lines().is_empty());
    }
}

#[test]
fn a_state_lock_another_process_holds_costs_a_bounded_wait_and_one_message() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
    ];
    std::fs::create_dir_all(sandbox.home()).unwrap();
    // `flock` holds the state lock until its standard input closes; its first line says it has it.
    let lock = sandbox.home().join("telemetry_state.lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo locked; read _"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock (util-linux) runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");

    for args in [
        &["simulate", "--runs", "2"][..],
        &["telemetry", "flush", "--timeout", "2"],
    ] {
        let output = sandbox.output(args, &vars);
        check_success(&output);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("another process holds the telemetry state lock"),
            "{args:?}: {stderr}"
        );
    }
    drop(holder.stdin.take());
    holder.wait().unwrap();
    // With the lock free again, the same run collects.
    let output = sandbox.output(&["simulate", "--runs", "2"], &vars);
    check_success(&output);
    assert_eq!(text(&output.stderr), "");
    assert!(!sandbox.exported_lines().is_empty());
}

#[test]
fn bad_usage_exits_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["simulate", "--fail-rate", "2"][..],
        &["simulate", "--runs", "x"],
        &["telemetry", "maybe"],
        &[],
    ] {
        let output = sandbox.output(args, &[]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let output = sandbox.output(&["simulate", "--param", "novalue"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("expected KEY=VALUE"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn demo_shows_where_events_went_and_that_user_data_is_absent() {
    let sandbox = Sandbox::new();
    // The caller's own settings must not leak into the demo.
    let output = sandbox.output(&["demo"], &[("FLOWKIT_SDK_TELEMETRY_ENABLED", "0")]);
    check_success(&output);
    let stdout = text(&output.stdout);
    let export_line = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.ends_with(".jsonl") && line.starts_with('/'))
        .unwrap_or_else(|| panic!("no export path in:\n{stdout}"));
    let export = PathBuf::from(export_line);
    assert!(
        export.starts_with(sandbox.dir.path()),
        "the demo home is under TMPDIR: {export:?}"
    );
    let lines = lines_in(export.parent().unwrap());
    assert!(lines.len() >= 5, "{lines:?}");
    assert!(stdout.contains("\"event_type\": \"run\""), "{stdout}");
    assert!(stdout.contains("\"event_type\": \"sdk_usage\""), "{stdout}");
    assert!(!stdout.contains("FOUND"), "{stdout}");
    for line in &lines {
        assert!(!line.contains("alice"), "{line}");
    }
    assert!(
        !sandbox.home().exists(),
        "the demo never touches the user's flowkit home"
    );

    // DO_NOT_TRACK is honoured even by the demo.
    let output = sandbox.output(&["demo"], &[("DO_NOT_TRACK", "1")]);
    check_success(&output);
    assert!(
        text(&output.stdout).contains("Telemetry stays off anyway: DO_NOT_TRACK is set"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn personal_data_in_names_parameters_and_errors_never_reaches_the_export_or_the_preview() {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "build-host-17".to_owned());
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let flow_name = format!("sync-{hostname}-alice@example.com");
    let secrets = [
        "alice@example.com".to_owned(),
        "/home/alice/customers.csv".to_owned(),
        "sk_live_51HxDemoSecretToken9f8e7d6cAbC".to_owned(),
        "10.20.30.40".to_owned(),
        flow_name.clone(),
        sandbox.home().display().to_string(),
        sandbox.export().display().to_string(),
    ];
    let params = [
        format!("email={}", secrets[0]),
        format!("input={}", secrets[1]),
        format!("token={}", secrets[2]),
        format!("host={}", secrets[3]),
        format!("machine={hostname}"),
    ];
    let mut args = vec![
        "simulate",
        "--runs",
        "20",
        "--seed",
        "3",
        "--fail-rate",
        "0.4",
        "--flow-name",
        &flow_name,
    ];
    for param in &params {
        args.extend(["--param", param.as_str()]);
    }
    let output = sandbox.output(
        &args,
        &[
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ],
    );
    check_success(&output);
    assert!(
        text(&output.stdout).contains("failed."),
        "{}",
        text(&output.stdout)
    );
    let lines = sandbox.exported_lines();
    assert_eq!(lines.len(), 21);
    assert!(
        lines.iter().any(|line| line.contains("\"failed\"")),
        "some runs failed"
    );
    let preview = sandbox.output(
        &["telemetry", "preview"],
        &[
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ],
    );
    check_success(&preview);
    let previewed = text(&preview.stdout);
    assert!(
        previewed.contains("\"event_type\":\"sdk_usage\""),
        "{previewed}"
    );
    for secret in secrets.iter().chain([&hostname]) {
        for line in lines.iter().chain([&previewed]) {
            assert!(
                !line.contains(secret.as_str()),
                "{secret:?} leaked into {line}"
            );
        }
    }
}

#[test]
fn events_wait_in_the_spool_until_a_later_flush_delivers_them() {
    let sandbox = Sandbox::new();
    // The export directory cannot be created (a file is in the way), so delivery fails.
    let blocked = sandbox.dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let blocked_endpoint = format!("file://{}/export", blocked.display());
    let enabled = ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1");
    let output = sandbox.output(
        &["simulate", "--runs", "4"],
        &[
            enabled,
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &blocked_endpoint),
        ],
    );
    check_success(&output);
    let status = status_json(&sandbox, &[enabled]);
    assert_eq!(status["buffer"], "sqlite");
    assert_eq!(
        status["pending_events"], 5,
        "four runs and a summary wait in the spool: {status}"
    );

    let endpoint = sandbox.file_endpoint();
    let output = sandbox.output(
        &["telemetry", "flush", "--timeout", "10"],
        &[enabled, ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint)],
    );
    check_success(&output);
    assert!(
        text(&output.stdout).contains("Sent 5 pending events; 0 still pending."),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(sandbox.exported_lines().len(), 5);
    assert_eq!(status_json(&sandbox, &[enabled])["pending_events"], 0);
}

#[test]
fn disable_purges_the_spool() {
    let sandbox = Sandbox::new();
    let output = sandbox.output(&["telemetry", "enable"], &[]);
    check_success(&output);
    let blocked = sandbox.dir.path().join("blocked");
    std::fs::write(&blocked, "not a directory").unwrap();
    let blocked_endpoint = format!("file://{}/export", blocked.display());
    let output = sandbox.output(
        &["simulate", "--runs", "3"],
        &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &blocked_endpoint)],
    );
    check_success(&output);
    assert_eq!(status_json(&sandbox, &[])["pending_events"], 4);
    let output = sandbox.output(
        &["telemetry", "disable"],
        &[("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &blocked_endpoint)],
    );
    check_success(&output);
    assert!(
        text(&output.stdout).contains("Deleted 4 unsent events."),
        "{}",
        text(&output.stdout)
    );
    assert_eq!(status_json(&sandbox, &[])["pending_events"], 0);
}

#[test]
fn a_damaged_spool_is_moved_aside_with_one_message_and_the_program_carries_on() {
    for damage in [
        &b"this is not a database at all, just garbage"[..],
        b"SQLite format 3\0truncated",
    ] {
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(sandbox.home()).unwrap();
        let spool = sandbox.home().join("telemetry_spool.sqlite3");
        std::fs::write(&spool, damage).unwrap();
        let endpoint = sandbox.file_endpoint();
        let output = sandbox.output(
            &["simulate", "--runs", "2"],
            &[
                ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
                ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint),
            ],
        );
        check_success(&output);
        let stderr = text(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&spool.display().to_string()) && stderr.contains(".corrupt-"),
            "{stderr}"
        );
        assert_eq!(sandbox.exported_lines().len(), 3, "a fresh spool took over");
        let moved: Vec<_> = std::fs::read_dir(sandbox.home())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".corrupt-"))
            .collect();
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert_eq!(
            std::fs::read(sandbox.home().join(&moved[0])).unwrap(),
            damage,
            "kept as found"
        );
    }
}

#[test]
fn a_spool_that_cannot_be_opened_falls_back_to_memory() {
    let sandbox = Sandbox::new();
    // A directory where the spool file should be.
    std::fs::create_dir_all(sandbox.home().join("telemetry_spool.sqlite3")).unwrap();
    let endpoint = sandbox.file_endpoint();
    let output = sandbox.output(
        &["simulate", "--runs", "2"],
        &[
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
            ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", &endpoint),
        ],
    );
    check_success(&output);
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("events are kept in memory"), "{stderr}");
    assert_eq!(sandbox.exported_lines().len(), 3);
}

#[test]
fn a_full_disk_loses_events_only_as_counted_drops() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
    ];
    // A real full file system for this process alone: a file-size limit of 300 KiB, with the
    // signal it raises ignored so that writes past it fail with EFBIG, as on a full disk.
    let flowkit = env!("CARGO_BIN_EXE_flowkit");
    let mut command = sandbox.command(&[], &vars);
    command.args([
        "-c",
        "trap '' XFSZ; ulimit -f 600; exec \"$0\" simulate --runs 4000",
        flowkit,
    ]);
    let command = std::process::Command::new("sh")
        .args(command.get_args())
        .env_clear()
        .envs(
            command
                .get_envs()
                .filter_map(|(key, value)| Some((key, value?))),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    check_success(&command);

    // Every run and the summary is pending, delivered or dropped for storage: none vanished.
    let status = status_json(&sandbox, &vars);
    let count = |field: &str| {
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {status}"))
    };
    let storage = status["dropped_by_reason"]["storage"].as_u64().unwrap();
    assert!(storage > 0, "the limit was reached: {status}");
    assert_eq!(count("dropped_events"), storage, "{status}");
    assert_eq!(
        count("pending_events") + count("delivered_events") + count("dropped_events"),
        4_001,
        "{status}"
    );

    // With room again, a flush delivers what was pending; the counts still add up. A batch
    // whose claim the full disk would not let go waits out its lease (30 s) and stays pending:
    // at most one batch.
    let output = sandbox.output(&["telemetry", "flush"], &vars);
    check_success(&output);
    let status = status_json(&sandbox, &vars);
    let count = |field: &str| {
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {status}"))
    };
    assert!(count("pending_events") <= 100, "{status}");
    assert_eq!(
        count("delivered_events") + count("pending_events") + count("dropped_events"),
        4_001,
        "{status}"
    );
    // Delivery is at least once: a batch exported just before the disk refused its removal
    // from the spool is still pending (or exported again later), never lost.
    let lines = sandbox.exported_lines();
    let ids = event_ids(&lines);
    let distinct = ids.len() as u64;
    assert!(
        (count("delivered_events")..=count("delivered_events") + count("pending_events"))
            .contains(&distinct),
        "{distinct} distinct events exported: {status}"
    );
}

#[test]
fn disable_stops_a_process_that_is_already_running_before_its_next_delivery() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
        ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "1"),
    ];
    check_success(&sandbox.output(&["telemetry", "enable"], &vars));
    // Forty runs of 100 ms each: about four seconds of a process delivering as it goes.
    let mut running = sandbox
        .command(&["simulate", "--runs", "40", "--task-millis", "100"], &vars)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_delivery(&sandbox);

    let output = sandbox.output(&["telemetry", "disable"], &vars);
    check_success(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Telemetry disabled."), "{stdout}");
    assert!(
        stdout.contains("Deletion request for the old session id: sent to file://"),
        "{stdout}"
    );
    let status = running.wait().unwrap();
    assert!(status.success());

    // Nothing arrived after the deletion request: not a run, not the summary.
    let lines = sandbox.exported_lines();
    let position = lines
        .iter()
        .position(|line| line.contains(r#""event_type":"deletion_request""#))
        .expect("a deletion request was exported");
    assert_eq!(position, lines.len() - 1, "{:#?}", &lines[position..]);
    assert!(
        lines
            .iter()
            .all(|line| !line.contains(r#""event_type":"sdk_usage""#))
    );
    assert!(lines.len() < 41, "the process went on delivering");
}

#[test]
fn disable_says_when_the_environment_still_turns_telemetry_on() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
    ];
    check_success(&sandbox.output(&["simulate", "--runs", "1"], &vars));
    let output = sandbox.output(&["telemetry", "disable"], &vars);
    check_success(&output);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(
            "telemetry stays on in this environment because FLOWKIT_SDK_TELEMETRY_ENABLED is set"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Nothing more will be collected"),
        "{stdout}"
    );
}

#[test]
fn sigterm_ends_a_simulation_in_order_leaving_nothing_claimed_and_nothing_twice() {
    let sandbox = Sandbox::new();
    let endpoint = sandbox.file_endpoint();
    let vars = [
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
        ("FLOWKIT_SDK_TELEMETRY_BATCH_SIZE", "1"),
    ];
    let running = sandbox
        .command(
            &["simulate", "--runs", "100000", "--task-millis", "2"],
            &vars,
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_a_delivery(&sandbox);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = running.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).starts_with("Stopped after "),
        "{}",
        text(&output.stdout)
    );

    // Nothing is held for a lease: a flush right away sends everything left, the summary
    // included, and no event arrives twice.
    let output = sandbox.output(&["telemetry", "flush", "--timeout", "10"], &vars);
    check_success(&output);
    assert!(
        text(&output.stdout).ends_with("; 0 still pending.\n"),
        "{}",
        text(&output.stdout)
    );
    let lines = sandbox.exported_lines();
    let ids = event_ids(&lines);
    assert_eq!(ids.len(), lines.len(), "an event was delivered twice");
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.contains(r#""event_type":"sdk_usage""#))
            .count(),
        1
    );
}
