//! The decision: is telemetry on for this process, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why telemetry is on or off, in order of precedence (highest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionReason {
    /// An enterprise policy file decides.
    Policy,
    /// `DO_NOT_TRACK` is set.
    DoNotTrack,
    /// A setting could not be understood, so telemetry is off for this process.
    InvalidSetting,
    /// The SDK's `…_SDK_TELEMETRY_ENABLED` variable decides.
    Env,
    /// The user's recorded decision (prompt or `enable`/`disable`).
    User,
    /// Nobody decided: off.
    Default,
}

impl DecisionReason {
    /// The spelling used by `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::Policy => "policy",
            DecisionReason::DoNotTrack => "do_not_track",
            DecisionReason::InvalidSetting => "invalid_setting",
            DecisionReason::Env => "env",
            DecisionReason::User => "user",
            DecisionReason::Default => "default",
        }
    }
}

impl fmt::Display for DecisionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether telemetry is on, and the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// Whether events are collected.
    pub enabled: bool,
    /// What decided it.
    pub reason: DecisionReason,
}

impl Decision {
    /// Off, for the given reason.
    pub fn off(reason: DecisionReason) -> Decision {
        Decision {
            enabled: false,
            reason,
        }
    }
}

/// Everything that can decide, each `None` when it has nothing to say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecisionInputs {
    /// `enabled` from an enterprise policy file.
    pub policy: Option<bool>,
    /// `DO_NOT_TRACK` is set.
    pub do_not_track: bool,
    /// A setting was invalid.
    pub invalid_setting: bool,
    /// The SDK's enabled variable.
    pub env: Option<bool>,
    /// The user's recorded decision.
    pub user: Option<bool>,
}

/// Decides: policy › `DO_NOT_TRACK` › invalid setting › env › user › default (off).
///
/// Architecture Invariant: the result is `enabled` only when the deciding input said `true`;
/// the default and every error mean off. A policy file that cannot be read is passed in as
/// `policy: Some(false)`.
pub fn decide(inputs: DecisionInputs) -> Decision {
    if let Some(enabled) = inputs.policy {
        // An organisation's policy decides for every user of the machine, both ways.
        return Decision {
            enabled,
            reason: DecisionReason::Policy,
        };
    }
    if inputs.do_not_track {
        return Decision::off(DecisionReason::DoNotTrack);
    }
    if inputs.invalid_setting {
        return Decision::off(DecisionReason::InvalidSetting);
    }
    if let Some(enabled) = inputs.env {
        return Decision {
            enabled,
            reason: DecisionReason::Env,
        };
    }
    if let Some(enabled) = inputs.user {
        return Decision {
            enabled,
            reason: DecisionReason::User,
        };
    }
    Decision::off(DecisionReason::Default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(inputs: DecisionInputs, enabled: bool, reason: DecisionReason) {
        assert_eq!(decide(inputs), Decision { enabled, reason }, "{inputs:?}");
    }

    #[test]
    fn precedence() {
        use DecisionReason::*;
        // (policy, do_not_track, invalid_setting, env, user) => (enabled, reason)
        let cases = [
            ((None, false, false, None, None), (false, Default)),
            ((None, false, false, None, Some(true)), (true, User)),
            ((None, false, false, None, Some(false)), (false, User)),
            ((None, false, false, Some(true), Some(false)), (true, Env)),
            ((None, false, false, Some(false), Some(true)), (false, Env)),
            (
                (None, false, true, Some(true), Some(true)),
                (false, InvalidSetting),
            ),
            (
                (None, true, false, Some(true), Some(true)),
                (false, DoNotTrack),
            ),
            (
                (Some(false), false, false, Some(true), Some(true)),
                (false, Policy),
            ),
            (
                (Some(true), true, false, Some(false), Some(false)),
                (true, Policy),
            ),
        ];
        for ((policy, do_not_track, invalid_setting, env, user), (enabled, reason)) in cases {
            let inputs = DecisionInputs {
                policy,
                do_not_track,
                invalid_setting,
                env,
                user,
            };
            check(inputs, enabled, reason);
        }
    }

    #[test]
    fn json_spellings_are_stable() {
        let spellings: Vec<String> = [
            DecisionReason::Policy,
            DecisionReason::DoNotTrack,
            DecisionReason::InvalidSetting,
            DecisionReason::Env,
            DecisionReason::User,
            DecisionReason::Default,
        ]
        .iter()
        .map(|reason| {
            serde_json::to_value(reason)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(
            spellings,
            [
                "policy",
                "do_not_track",
                "invalid_setting",
                "env",
                "user",
                "default"
            ]
        );
    }
}
