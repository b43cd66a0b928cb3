//! The consent prompt in a real pseudo-terminal, CI and terminal detection, policy files,
//! and concurrent decisions, all through the real `flowkit` binary.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use rexpect::session::{PtySession, spawn_command};
use support::{Sandbox, lines_in};

const PROMPT: &str = "Enable telemetry? [y/N]";

/// flowkit in the sandbox, exporting to its export directory unless `vars` say otherwise.
fn flowkit(sandbox: &Sandbox, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let endpoint = sandbox.file_endpoint();
    let mut all = vec![("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str())];
    all.extend(vars.iter().copied());
    sandbox.command(args, &all)
}

fn run(sandbox: &Sandbox, args: &[&str], vars: &[(&str, &str)]) -> Output {
    flowkit(sandbox, args, vars)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `flowkit simulate` in a pseudo-terminal, so stdin, stdout and stderr are terminals.
fn simulate_in_terminal(sandbox: &Sandbox, vars: &[(&str, &str)]) -> PtySession {
    spawn_command(
        flowkit(sandbox, &["simulate", "--runs", "2"], vars),
        Some(30_000),
    )
    .unwrap()
}

fn state(sandbox: &Sandbox) -> String {
    std::fs::read_to_string(sandbox.home().join("telemetry_state.toml")).unwrap_or_default()
}

fn audit(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    let text =
        std::fs::read_to_string(sandbox.home().join("telemetry_audit.jsonl")).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn count_lines(dir: &Path) -> usize {
    lines_in(dir).len()
}

fn changes(audit: &[serde_json::Value]) -> Vec<(String, String)> {
    audit
        .iter()
        .map(|entry| {
            (
                entry["change"].as_str().unwrap().to_owned(),
                entry["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(change: &str, source: &str) -> (String, String) {
    (change.to_owned(), source.to_owned())
}

/// Answers the prompt (None: waits for the timeout) and checks what was recorded.
fn check_prompt_answer(answer: Option<&str>, enabled: bool) {
    let sandbox = Sandbox::new();
    let mut session = simulate_in_terminal(&sandbox, &[]);
    session.exp_string("Help us improve flowkit!").unwrap();
    session.exp_string(PROMPT).unwrap();
    match answer {
        Some(answer) => {
            session.send_line(answer).unwrap();
        }
        None => {
            session.exp_string("No answer within 10 s").unwrap();
        }
    }
    session.exp_string("Ran 2 flow runs").unwrap();
    session.exp_eof().unwrap();

    let state = state(&sandbox);
    assert!(state.contains("prompted = true"), "{state}");
    assert!(state.contains(&format!("enabled = {enabled}")), "{state}");
    assert!(state.contains("prompt_date = \""), "{state}");
    assert_eq!(state.contains("session_id"), enabled, "{state}");
    let decision = if enabled { "enabled" } else { "disabled" };
    assert_eq!(
        changes(&audit(&sandbox)),
        [pair("prompt_shown", "prompt"), pair(decision, "prompt")]
    );
    assert_eq!(
        sandbox.exported_lines().len(),
        if enabled { 3 } else { 0 },
        "answer {answer:?}"
    );

    // The next run does not ask again.
    let mut session = simulate_in_terminal(&sandbox, &[]);
    let output = session.exp_eof().unwrap();
    assert!(!output.contains(PROMPT), "asked twice: {output}");
    assert!(output.contains("Ran 2 flow runs"), "{output}");
}

#[test]
fn answering_y_enables() {
    check_prompt_answer(Some("y"), true);
}

#[test]
fn answering_n_disables() {
    check_prompt_answer(Some("n"), false);
}

#[test]
fn pressing_enter_disables() {
    check_prompt_answer(Some(""), false);
}

#[test]
fn no_answer_is_no_after_the_timeout() {
    check_prompt_answer(None, false);
}

#[test]
fn no_prompt_in_ci_or_without_a_terminal_and_nothing_is_collected() {
    for vars in [
        &[("CI", "true")][..],
        &[("GITHUB_ACTIONS", "true")],
        &[("GITLAB_CI", "true")],
        &[("BUILDKITE", "true")],
    ] {
        let sandbox = Sandbox::new();
        let mut session = simulate_in_terminal(&sandbox, vars);
        let output = session.exp_eof().unwrap();
        assert!(!output.contains(PROMPT), "{vars:?}: {output}");
        assert!(output.contains("Ran 2 flow runs"), "{output}");
        assert_eq!(sandbox.exported_lines().len(), 0, "{vars:?}");
        assert!(!sandbox.home().exists(), "{vars:?}: nothing is written");
    }
    // Not a terminal: stdin is /dev/null.
    let sandbox = Sandbox::new();
    let output = run(&sandbox, &["simulate", "--runs", "1"], &[]);
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains(PROMPT));
    assert_eq!(sandbox.exported_lines().len(), 0);
}

#[test]
fn ci_false_on_a_terminal_prompts() {
    let sandbox = Sandbox::new();
    let mut session = simulate_in_terminal(&sandbox, &[("CI", "false")]);
    session.exp_string(PROMPT).unwrap();
    session.send_line("n").unwrap();
    session.exp_eof().unwrap();
    assert!(state(&sandbox).contains("enabled = false"));
}

#[test]
fn nothing_decided_elsewhere_is_asked_about() {
    // (variables, why no prompt)
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("DO_NOT_TRACK", "1")], "DO_NOT_TRACK"),
        (&[("FLOWKIT_SDK_TELEMETRY_ENABLED", "0")], "the env var"),
        (&[("FLOWKIT_SDK_TELEMETRY_ENABLED", "1")], "the env var"),
    ];
    for (vars, why) in cases {
        let sandbox = Sandbox::new();
        let mut session = simulate_in_terminal(&sandbox, vars);
        let output = session.exp_eof().unwrap();
        assert!(!output.contains(PROMPT), "{why}: {output}");
    }
    // A policy that forbids the prompt.
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_prompt = false\n").unwrap();
    let mut session = simulate_in_terminal(
        &sandbox,
        &[("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap())],
    );
    let output = session.exp_eof().unwrap();
    assert!(!output.contains(PROMPT), "{output}");
}

#[test]
fn a_policy_that_forces_off_beats_the_env_var_and_enable() {
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "enabled = false\n").unwrap();
    let policy_var = ("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap());

    let output = run(
        &sandbox,
        &["simulate", "--runs", "3"],
        &[policy_var, ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1")],
    );
    assert!(output.status.success());
    assert_eq!(sandbox.exported_lines().len(), 0);

    let output = run(&sandbox, &["telemetry", "enable"], &[policy_var]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&policy.display().to_string()),
        "the message names the policy file: {stderr}"
    );
    assert_eq!(
        changes(&audit(&sandbox)),
        [pair("refused_by_policy", "cli")]
    );

    let output = run(&sandbox, &["telemetry", "status", "--json"], &[policy_var]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["reason"], "policy");
    assert_eq!(status["enabled"], false);
    assert_eq!(status["policy_file"], policy.display().to_string());
}

#[test]
fn a_policy_destination_beats_the_env_endpoint() {
    let sandbox = Sandbox::new();
    let fleet_export = sandbox.dir.path().join("fleet-export");
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!("endpoint = \"file://{}\"\n", fleet_export.display()),
    )
    .unwrap();
    let output = run(
        &sandbox,
        &["simulate", "--runs", "2"],
        &[
            ("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap()),
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ],
    );
    assert!(output.status.success());
    assert_eq!(count_lines(&fleet_export), 3);
    assert_eq!(
        sandbox.exported_lines().len(),
        0,
        "the env endpoint is ignored"
    );
}

#[test]
fn a_malformed_policy_means_off_and_names_the_file_and_line() {
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_prompt = true\nenabled = maybe\n").unwrap();
    let output = run(
        &sandbox,
        &["simulate", "--runs", "1"],
        &[
            ("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap()),
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ],
    );
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&policy.display().to_string()) && stderr.contains("line 2"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(sandbox.exported_lines().len(), 0);
}

#[test]
fn fifty_concurrent_decisions_leave_a_valid_state_and_audit_log() {
    let sandbox = Sandbox::new();
    let children: Vec<_> = (0..50)
        .map(|index| {
            let command = if index % 2 == 0 { "enable" } else { "disable" };
            flowkit(&sandbox, &["telemetry", command], &[])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let state: toml::Value = toml::from_str(&state(&sandbox)).expect("the state file parses");
    let enabled = state["telemetry"]["enabled"].as_bool().unwrap();
    assert_eq!(state["telemetry"].get("session_id").is_some(), enabled);
    let audit = audit(&sandbox);
    assert_eq!(audit.len(), 50);
    let enables = audit
        .iter()
        .filter(|entry| entry["change"] == "enabled")
        .count();
    assert_eq!(enables, 25);
    assert!(audit.iter().all(|entry| entry["source"] == "cli"));
    let leftovers: Vec<String> = std::fs::read_dir(sandbox.home())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
