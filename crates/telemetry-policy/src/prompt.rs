//! The consent prompt's logic: when to ask, what to say, how to read the answer.
//! The terminal interaction itself lives in the facade (`TelemetryConfig::prompt_if_needed`).

use std::time::Duration;

use crate::decision::DecisionReason;
use crate::state::ConsentState;

/// How long the prompt waits for an answer before taking it as "no".
pub const DEFAULT_PROMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that decides whether the prompt may appear.
#[derive(Clone, Copy, Debug)]
pub struct PromptContext<'a> {
    /// Standard input is a terminal.
    pub stdin_is_terminal: bool,
    /// Standard error (where the prompt is written) is a terminal.
    pub stderr_is_terminal: bool,
    /// A CI system was detected.
    pub ci: bool,
    /// No policy file forbids the prompt.
    pub policy_allows: bool,
    /// Why telemetry is currently on or off.
    pub reason: DecisionReason,
    /// The recorded state.
    pub state: &'a ConsentState,
    /// The SDK's current consent version.
    pub consent_version: u32,
}

/// Whether to ask: only a person at a terminal, outside CI, who has not decided for the current
/// consent version and has not been asked about it, when nothing of higher precedence decides.
pub fn should_prompt(context: &PromptContext<'_>) -> bool {
    let undecided = context.reason == DecisionReason::Default;
    let asked_about_this_version =
        context.state.prompted && context.state.decided_version() >= context.consent_version;
    context.stdin_is_terminal
        && context.stderr_is_terminal
        && !context.ci
        && context.policy_allows
        && undecided
        && !asked_about_this_version
}

/// Reads an answer: `y` or `yes` (any case) is yes; anything else, including an empty line, is no.
pub fn parse_answer(line: &str) -> bool {
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The prompt's text: what is collected, how to change it later, where to learn more.
pub fn prompt_text(sdk_name: &str, docs_url: Option<&str>) -> String {
    let mut lines = vec![
        format!("Help us improve {sdk_name}!"),
        String::new(),
        format!("{sdk_name} can send anonymous usage data: which features are used,"),
        "error types, and rough run durations. It never sends your code, data,".to_owned(),
        "names, parameters, file paths, hosts or credentials.".to_owned(),
        String::new(),
        "Change your mind at any time:".to_owned(),
        format!("  {sdk_name} telemetry enable | disable | status"),
    ];
    if let Some(url) = docs_url {
        lines.push(format!("Learn more: {url}"));
    }
    let width = lines
        .iter()
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = format!("╭{}╮\n", "─".repeat(width + 2));
    for line in &lines {
        let padding = width - line.chars().count();
        text.push_str(&format!("│ {line}{} │\n", " ".repeat(padding)));
    }
    text.push_str(&format!("╰{}╯\n", "─".repeat(width + 2)));
    text.push_str("Enable telemetry? [y/N] ");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_an_undecided_person_at_a_terminal() {
        let fresh = ConsentState::default();
        let asked = ConsentState {
            prompted: true,
            ..ConsentState::default()
        };
        let base = PromptContext {
            stdin_is_terminal: true,
            stderr_is_terminal: true,
            ci: false,
            policy_allows: true,
            reason: DecisionReason::Default,
            state: &fresh,
            consent_version: 1,
        };
        let cases = [
            (base, true),
            (
                PromptContext {
                    stdin_is_terminal: false,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    stderr_is_terminal: false,
                    ..base
                },
                false,
            ),
            (PromptContext { ci: true, ..base }, false),
            (
                PromptContext {
                    policy_allows: false,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    reason: DecisionReason::DoNotTrack,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    reason: DecisionReason::Env,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    reason: DecisionReason::User,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    state: &asked,
                    ..base
                },
                false,
            ),
            (
                PromptContext {
                    state: &asked,
                    consent_version: 2,
                    ..base
                },
                true,
            ),
        ];
        for (index, (context, expected)) in cases.iter().enumerate() {
            assert_eq!(
                should_prompt(context),
                *expected,
                "case {index}: {context:?}"
            );
        }
    }

    #[test]
    fn only_yes_means_yes() {
        for (line, expected) in [
            ("y\n", true),
            ("YES", true),
            (" yes ", true),
            ("", false),
            ("\n", false),
            ("n", false),
            ("yep", false),
            ("oui", false),
        ] {
            assert_eq!(parse_answer(line), expected, "{line:?}");
        }
    }

    #[test]
    fn the_text_names_the_sdk_the_commands_and_the_docs() {
        let text = prompt_text("flowkit", Some("https://flowkit.example/telemetry"));
        assert!(text.contains("Help us improve flowkit!"));
        assert!(text.contains("flowkit telemetry enable | disable | status"));
        assert!(text.contains("Learn more: https://flowkit.example/telemetry"));
        assert!(text.ends_with("Enable telemetry? [y/N] "));
        let widths: Vec<usize> = text
            .lines()
            .filter(|line| line.starts_with('│'))
            .map(|line| line.chars().count())
            .collect();
        assert!(
            widths.windows(2).all(|pair| pair[0] == pair[1]),
            "the box is aligned: {widths:?}"
        );
    }
}
