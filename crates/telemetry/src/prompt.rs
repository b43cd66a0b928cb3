//! The consent prompt: asked once per environment, only of a person at a
//! terminal, and "no" unless they answer "y" in time.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::sync::mpsc;

use telemetry_model::UtcDate;
use telemetry_policy::{
    AuditChange, AuditSource, PromptContext, parse_answer, prompt_text, should_prompt,
};

use crate::config::TelemetryConfig;

/// What the prompt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptOutcome {
    /// The prompt was not shown: someone already decided, it was shown before, nobody is at a
    /// terminal, CI was detected, a policy forbids it, or the SDK has no state directory.
    NotShown,
    /// The user answered yes.
    Accepted,
    /// The user answered anything else, or pressed Enter.
    Declined,
    /// Nobody answered in time; taken as no.
    TimedOut,
}

impl TelemetryConfig {
    /// Shows the consent prompt on standard error and reads the answer from standard input, if
    /// and only if the prompt should appear (see [`PromptOutcome::NotShown`]). The answer, or
    /// "no" after the prompt timeout, is recorded in the state file and the audit log.
    ///
    /// Call it early in a CLI command, before [`start`](TelemetryConfig::start).
    pub fn prompt_if_needed(&self) -> PromptOutcome {
        let stdin_is_terminal = io::stdin().is_terminal();
        let stderr_is_terminal = io::stderr().is_terminal();
        self.prompt_with(
            stdin_is_terminal,
            stderr_is_terminal,
            Box::new(io::stdin()),
            &mut io::stderr(),
        )
    }

    /// [`prompt_if_needed`](TelemetryConfig::prompt_if_needed) with the terminal checks and the
    /// streams given by the caller.
    pub fn prompt_with(
        &self,
        stdin_is_terminal: bool,
        stderr_is_terminal: bool,
        input: Box<dyn Read + Send>,
        output: &mut dyn Write,
    ) -> PromptOutcome {
        let Some(store) = self.state_store() else {
            return PromptOutcome::NotShown;
        };
        let resolution = self.resolve();
        let state = resolution.state.as_ref().ok().cloned().unwrap_or_default();
        let context = PromptContext {
            stdin_is_terminal,
            stderr_is_terminal,
            ci: resolution.ci,
            policy_allows: resolution.policy_allows_prompt(),
            reason: resolution.decision.reason,
            state: &state,
            consent_version: self.consent_version,
        };
        if !should_prompt(&context) {
            return PromptOutcome::NotShown;
        }
        let _ = write!(
            output,
            "{}",
            prompt_text(self.cli_command(), self.docs_url.as_deref())
        );
        let _ = output.flush();

        let outcome = match read_line_within(input, self.prompt_timeout) {
            Some(line) if parse_answer(&line) => PromptOutcome::Accepted,
            Some(_) => PromptOutcome::Declined,
            None => PromptOutcome::TimedOut,
        };
        let enabled = outcome == PromptOutcome::Accepted;
        let today = UtcDate::today();
        let version = self.consent_version;
        let recorded = store.update(|state| {
            state.prompted = true;
            state.prompt_date = Some(today);
            state.decide(enabled, today, version);
        });
        self.audit(AuditChange::PromptShown, AuditSource::Prompt);
        self.audit(
            if enabled {
                AuditChange::Enabled
            } else {
                AuditChange::Disabled
            },
            AuditSource::Prompt,
        );
        let name = self.cli_command();
        let message = match (outcome, recorded) {
            (_, Err(error)) => {
                format!("Your answer could not be saved ({error}); telemetry stays off.")
            }
            (PromptOutcome::Accepted, Ok(_)) => {
                format!(
                    "Thank you! Telemetry is enabled. Turn it off any time with `{name} telemetry disable`."
                )
            }
            (PromptOutcome::TimedOut, Ok(_)) => format!(
                "\nNo answer within {} s: telemetry stays off. Turn it on any time with `{name} telemetry enable`.",
                self.prompt_timeout.as_secs()
            ),
            (_, Ok(_)) => {
                format!("Telemetry stays off. Turn it on any time with `{name} telemetry enable`.")
            }
        };
        let _ = writeln!(output, "{message}");
        outcome
    }
}

/// Reads one line on a helper thread and waits at most `timeout` for it. On a timeout the
/// thread is left blocked on its read; it ends with the process.
fn read_line_within(input: Box<dyn Read + Send>, timeout: std::time::Duration) -> Option<String> {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("telemetry-prompt".to_owned())
        .spawn(move || {
            let mut line = String::new();
            // End of input counts as an empty answer: no.
            let _ = BufReader::new(input).read_line(&mut line);
            let _ = sender.send(line);
        });
    match spawned {
        Ok(_) => receiver.recv_timeout(timeout).ok(),
        Err(_) => None,
    }
}
