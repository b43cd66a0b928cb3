//! The consent prompt in a real pseudo-terminal, CI and terminal detection, policy files,
//! and concurrent decisions, all through the real `flowkit` binary.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rexpect::session::{PtySession, spawn_command};

const PROMPT: &str = "Enable telemetry? [y/N]";

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("flowkit-home")
    }

    fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowkit"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("FLOWKIT_HOME", self.home())
            .env("TERM", "xterm")
            .env(
                "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
                format!("file://{}", self.export().display()),
            )
            .envs(vars.iter().copied());
        command
    }

    fn run(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.command(args, vars)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `flowkit simulate` in a pseudo-terminal, so stdin, stdout and stderr are terminals.
    fn simulate_in_terminal(&self, vars: &[(&str, &str)]) -> PtySession {
        spawn_command(
            self.command(&["simulate", "--runs", "2"], vars),
            Some(30_000),
        )
        .unwrap()
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.home().join("telemetry_state.toml")).unwrap_or_default()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.home().join("telemetry_audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    fn exported_lines(&self) -> usize {
        count_lines(&self.export())
    }
}

fn count_lines(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| {
                    std::fs::read_to_string(entry.unwrap().path())
                        .unwrap()
                        .lines()
                        .count()
                })
                .sum()
        })
        .unwrap_or(0)
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
    let mut session = sandbox.simulate_in_terminal(&[]);
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

    let state = sandbox.state();
    assert!(state.contains("prompted = true"), "{state}");
    assert!(state.contains(&format!("enabled = {enabled}")), "{state}");
    assert!(state.contains("prompt_date = \""), "{state}");
    assert_eq!(state.contains("session_id"), enabled, "{state}");
    let decision = if enabled { "enabled" } else { "disabled" };
    assert_eq!(
        changes(&sandbox.audit()),
        [pair("prompt_shown", "prompt"), pair(decision, "prompt")]
    );
    assert_eq!(
        sandbox.exported_lines(),
        if enabled { 3 } else { 0 },
        "answer {answer:?}"
    );

    // The next run does not ask again.
    let mut session = sandbox.simulate_in_terminal(&[]);
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
        let mut session = sandbox.simulate_in_terminal(vars);
        let output = session.exp_eof().unwrap();
        assert!(!output.contains(PROMPT), "{vars:?}: {output}");
        assert!(output.contains("Ran 2 flow runs"), "{output}");
        assert_eq!(sandbox.exported_lines(), 0, "{vars:?}");
        assert!(!sandbox.home().exists(), "{vars:?}: nothing is written");
    }
    // Not a terminal: stdin is /dev/null.
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["simulate", "--runs", "1"], &[]);
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains(PROMPT));
    assert_eq!(sandbox.exported_lines(), 0);
}

#[test]
fn ci_false_on_a_terminal_prompts() {
    let sandbox = Sandbox::new();
    let mut session = sandbox.simulate_in_terminal(&[("CI", "false")]);
    session.exp_string(PROMPT).unwrap();
    session.send_line("n").unwrap();
    session.exp_eof().unwrap();
    assert!(sandbox.state().contains("enabled = false"));
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
        let mut session = sandbox.simulate_in_terminal(vars);
        let output = session.exp_eof().unwrap();
        assert!(!output.contains(PROMPT), "{why}: {output}");
    }
    // A policy that forbids the prompt.
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_prompt = false\n").unwrap();
    let mut session = sandbox
        .simulate_in_terminal(&[("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap())]);
    let output = session.exp_eof().unwrap();
    assert!(!output.contains(PROMPT), "{output}");
}

#[test]
fn a_policy_that_forces_off_beats_the_env_var_and_enable() {
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "enabled = false\n").unwrap();
    let policy_var = ("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap());

    let output = sandbox.run(
        &["simulate", "--runs", "3"],
        &[policy_var, ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1")],
    );
    assert!(output.status.success());
    assert_eq!(sandbox.exported_lines(), 0);

    let output = sandbox.run(&["telemetry", "enable"], &[policy_var]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&policy.display().to_string()),
        "the message names the policy file: {stderr}"
    );
    assert_eq!(
        changes(&sandbox.audit()),
        [pair("refused_by_policy", "cli")]
    );

    let output = sandbox.run(&["telemetry", "status", "--json"], &[policy_var]);
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
    let output = sandbox.run(
        &["simulate", "--runs", "2"],
        &[
            ("FLOWKIT_TELEMETRY_POLICY_FILE", policy.to_str().unwrap()),
            ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ],
    );
    assert!(output.status.success());
    assert_eq!(count_lines(&fleet_export), 3);
    assert_eq!(sandbox.exported_lines(), 0, "the env endpoint is ignored");
}

#[test]
fn a_malformed_policy_means_off_and_names_the_file_and_line() {
    let sandbox = Sandbox::new();
    let policy = sandbox.dir.path().join("policy.toml");
    std::fs::write(&policy, "allow_prompt = true\nenabled = maybe\n").unwrap();
    let output = sandbox.run(
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
    assert_eq!(sandbox.exported_lines(), 0);
}

#[test]
fn fifty_concurrent_decisions_leave_a_valid_state_and_audit_log() {
    let sandbox = Sandbox::new();
    let children: Vec<_> = (0..50)
        .map(|index| {
            let command = if index % 2 == 0 { "enable" } else { "disable" };
            sandbox
                .command(&["telemetry", command], &[])
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
    let state: toml::Value = toml::from_str(&sandbox.state()).expect("the state file parses");
    let enabled = state["telemetry"]["enabled"].as_bool().unwrap();
    assert_eq!(state["telemetry"].get("session_id").is_some(), enabled);
    let audit = sandbox.audit();
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
