//! The `telemetry-collector` binary as a newcomer and an operator use it: `serve --dev` and its
//! printed settings, errors for every missing or bad flag, SIGTERM, `report`, and logs that
//! carry no event content and nothing about clients.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{batch, run_event, send};
use telemetry_model::SessionId;
use telemetry_testkit::pki::client_config_trusting;

fn collector() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"));
    command.env_remove("TELEMETRY_COLLECTOR_LOG");
    command
}

/// Starts `serve --dev` on a free port and returns it with the lines it printed up to the
/// report's address.
fn start_dev(data: &Path, extra: &[&str]) -> (Child, Vec<String>) {
    let mut child = collector()
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("TELEMETRY_COLLECTOR_LOG", "telemetry_collector=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "serve ended early: {lines:?}"
        );
        let done = line.starts_with("Stop with");
        lines.push(line.trim_end().to_owned());
        if done {
            break;
        }
    }
    (child, lines)
}

fn value_of<'a>(lines: &'a [String], variable: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.trim().strip_prefix(&format!("export {variable}=")))
        .unwrap_or_else(|| panic!("{variable} not printed: {lines:?}"))
        .split_whitespace()
        .next()
        .unwrap()
}

fn terminate(child: &mut Child) -> (std::process::ExitStatus, String) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn serve_dev_prints_what_a_client_needs_and_stops_in_order_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, lines) = start_dev(&data, &[]);
    let address = lines[0]
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("first line: {:?}", lines[0]));
    assert!(
        address.starts_with("127.0.0.1:") && !address.ends_with(":0"),
        "{address}"
    );
    let endpoint = value_of(&lines, "FLOWKIT_SDK_TELEMETRY_ENDPOINT");
    assert_eq!(endpoint, format!("https://{address}/v1/events"));
    let ca_file = value_of(&lines, "FLOWKIT_SDK_TELEMETRY_CA_FILE");
    assert!(Path::new(ca_file).is_absolute());

    // A client that trusts only the printed CA file reaches the collector.
    let ca = rustls_pki_types::pem::PemObject::from_pem_file(ca_file).unwrap();
    let client = client_config_trusting(ca);
    let addr = address.parse().unwrap();
    let session = SessionId::random();
    let events: Vec<_> = (0..20).map(|_| run_event(session, &["caching"])).collect();
    let mut hostile = events[0].clone();
    hostile.event_id = telemetry_model::EventId::random();
    hostile
        .features
        .insert(support::name("acme_secret_project"));
    let mut body = batch(&events);
    body.extend_from_slice(b"");
    let reply = send(
        addr,
        &client,
        "POST",
        "/v1/events",
        &[
            ("user-agent", "flowkit/0.1.0 marker-user-agent"),
            ("x-forwarded-for", "203.0.113.77"),
        ],
        body,
    );
    assert_eq!(reply.json()["accepted"], 20, "{}", reply.text());
    let refused = send(addr, &client, "POST", "/v1/events", &[], batch(&[hostile]));
    assert_eq!(refused.json()["rejected"], 1);

    let (status, stderr) = terminate(&mut child);
    assert!(status.success(), "{status}: {stderr}");
    // Logs carry counts only: no id, name, header or address of a client.
    for secret in [
        session.to_string(),
        events[0].event_id.to_string(),
        "acme_secret_project".to_owned(),
        "marker-user-agent".to_owned(),
        "203.0.113.77".to_owned(),
        "127.0.0.1".to_owned(),
    ] {
        assert!(
            !stderr.contains(&secret),
            "the log shows {secret}: {stderr}"
        );
    }
    assert!(
        stderr.contains("accepted=20"),
        "debug logs show counts: {stderr}"
    );

    // What was accepted is there after the stop; the report names the refusal.
    let output = collector()
        .args(["report", "--json", "--days", "1", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["sdk"], "flowkit");
    assert_eq!(report["totals"]["events"], 20);
    assert_eq!(report["totals"]["features"]["caching"]["sessions"], 1);
    assert_eq!(report["refused"]["undeclared_name"], 1);

    // A restart reuses the CA, so a client's CA setting stays valid.
    let (mut again, lines) = start_dev(&data, &[]);
    assert_eq!(value_of(&lines, "FLOWKIT_SDK_TELEMETRY_CA_FILE"), ca_file);
    let (status, _) = terminate(&mut again);
    assert!(status.success());

    let html = dir.path().join("report.html");
    let output = collector()
        .args(["report", "--data-dir"])
        .arg(&data)
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(std::fs::read_to_string(&html).unwrap().contains("caching"));
}

fn fails_with(args: &[&str], expected: &str) {
    let output = collector().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in {stderr}"
    );
    assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
}

#[test]
fn missing_and_bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let weak = dir.path().join("weak-token");
    std::fs::write(&weak, "secret\n").unwrap();
    let catalog = format!("flowkit={}", support::flowkit_catalog().display());
    fails_with(&["serve"], "--data-dir");
    fails_with(&["serve", "--data-dir", data], "--listen");
    fails_with(
        &["serve", "--data-dir", data, "--listen", "127.0.0.1:0"],
        "--tls-cert",
    );
    fails_with(
        &[
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:8443",
            "--data-dir",
            data,
        ],
        "loopback",
    );
    fails_with(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data,
            "--token-file",
            weak.to_str().unwrap(),
            "--catalog",
            &catalog,
        ],
        "at least 32",
    );
    fails_with(
        &["serve", "--dev", "--data-dir", data, "--catalog", "flowkit"],
        "expected SDK=PATH",
    );
    fails_with(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data,
            "--catalog",
            "flowkit=/nonexistent.toml",
        ],
        "cannot read /nonexistent.toml",
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    fails_with(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data,
            "--catalog",
            &catalog,
            "--tls-cert",
            not_pem.to_str().unwrap(),
            "--tls-key",
            not_pem.to_str().unwrap(),
        ],
        "--tls-cert",
    );
    fails_with(
        &["serve", "--dev", "--retention-days", "0"],
        "retention-days",
    );
    fails_with(
        &["report", "--data-dir", "/nonexistent"],
        "no collector data",
    );
}
