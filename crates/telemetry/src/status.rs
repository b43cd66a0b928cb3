//! What `status` reports, and the decisions users make (`enable`, `disable`).

use std::fmt::{self, Write as _};

use serde::Serialize;
use telemetry_model::HourTimestamp;
use telemetry_policy::{AuditChange, AuditSource, DecisionReason, Setting};

use crate::config::{ManageError, TelemetryConfig};

/// Where telemetry stands, as `status` and `status --json` show it.
///
/// The JSON field names are a stable contract; new fields may be added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The SDK.
    pub sdk: String,
    /// Whether events are collected.
    pub enabled: bool,
    /// What decided: `policy`, `do_not_track`, `invalid_setting`, `env`, `user` or `default`.
    pub reason: DecisionReason,
    /// The anonymous session id, when one exists.
    pub session_id: Option<String>,
    /// Where events go: an `https://` URL or a `file://` directory.
    pub endpoint: Option<String>,
    /// The transport the endpoint calls for: `https`, `file` or `null`.
    pub transport: Option<String>,
    /// The buffer kind: `memory` (or `sqlite`).
    pub buffer: String,
    /// Events recorded but not yet delivered.
    pub pending_events: u64,
    /// Events dropped because a queue or buffer was full.
    pub dropped_events: u64,
    /// The hour of the last successful delivery.
    pub last_sent: Option<HourTimestamp>,
    /// Whether the consent prompt has been shown.
    pub prompted: bool,
    /// The enterprise policy file in force.
    pub policy_file: Option<String>,
    /// The consent state file.
    pub state_file: Option<String>,
    /// Problems found while deciding, one message each.
    pub problems: Vec<String>,
    /// Delivery attempts that failed and will be retried (the events were kept).
    pub failed_deliveries: u64,
    /// Events the destination refused for good (dropped and counted).
    pub rejected_events: u64,
    /// Whether repeated failures have paused deliveries until a cool-down passes.
    pub circuit_open: bool,
    /// Events the scrubber dropped because they looked like personal data, by reason.
    pub scrubbed_events: std::collections::BTreeMap<String, u64>,
    /// What happened to the deletion request that `disable` sends for the old session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_request: Option<String>,
    /// Pending events deleted by `disable`.
    #[serde(skip_serializing_if = "is_zero")]
    pub purged_events: u64,
    /// The page that explains the SDK's telemetry.
    pub docs_url: Option<String>,
    /// The variable that turns telemetry on or off for this SDK.
    #[serde(skip)]
    pub(crate) enabled_variable: String,
}

impl TelemetryConfig {
    /// Works out the status without starting anything: reads the environment and the state file.
    pub fn status(&self) -> Status {
        let stats = self
            .existing_buffer()
            .and_then(|buffer| buffer.stats().ok());
        self.status_with(stats)
    }

    /// The status, with the pending and dropped counts of a buffer already at hand.
    pub(crate) fn status_with(&self, stats: Option<telemetry_buffer::BufferStats>) -> Status {
        let resolution = self.resolve();
        let state = resolution.state.as_ref().ok();
        Status {
            sdk: self.sdk_name.to_string(),
            enabled: resolution.decision.enabled,
            reason: resolution.decision.reason,
            session_id: state
                .and_then(|state| state.session_id)
                .map(|id| id.to_string()),
            endpoint: resolution.endpoint.as_ref().map(ToString::to_string),
            transport: self
                .transport_kind(resolution.endpoint.as_ref())
                .map(str::to_owned),
            buffer: self.buffer_kind(&resolution).to_owned(),
            pending_events: stats.map_or(0, |stats| stats.pending as u64),
            dropped_events: stats.map_or(0, |stats| stats.dropped_total()),
            last_sent: None,
            prompted: state.is_some_and(|state| state.prompted),
            policy_file: resolution
                .policy_file()
                .map(|path| path.display().to_string()),
            state_file: self.state_file().map(|path| path.display().to_string()),
            problems: resolution.problems(),
            purged_events: 0,
            deletion_request: None,
            failed_deliveries: 0,
            rejected_events: 0,
            circuit_open: false,
            scrubbed_events: Default::default(),
            docs_url: self.docs_url.clone(),
            enabled_variable: self.prefix.variable(Setting::Enabled),
        }
    }

    /// Records that the user opts in, creating a session id, and returns the new status.
    /// The status may still say "off" when something of higher precedence (such as
    /// `DO_NOT_TRACK`) decides; [`Status::reason`] says what.
    pub fn enable(&self) -> Result<Status, ManageError> {
        self.enable_from(AuditSource::Cli)
    }

    /// [`enable`](TelemetryConfig::enable), recording `source` in the audit log.
    pub fn enable_from(&self, source: AuditSource) -> Result<Status, ManageError> {
        self.record_decision(true, source)?;
        Ok(self.status())
    }

    /// Records that the user opts out, forgets the session id and deletes pending events that
    /// were not sent; returns the new status.
    pub fn disable(&self) -> Result<Status, ManageError> {
        self.disable_from(AuditSource::Cli)
    }

    /// [`disable`](TelemetryConfig::disable), recording `source` in the audit log.
    pub fn disable_from(&self, source: AuditSource) -> Result<Status, ManageError> {
        let previous_session = self
            .state_store()
            .and_then(|store| store.load().ok())
            .and_then(|state| state.session_id);
        self.record_decision(false, source)?;
        let purged = self.purge_pending();
        let mut status = self.status();
        status.purged_events = purged;
        // Under DO_NOT_TRACK nothing leaves the machine, not even a deletion request.
        let may_send = self.deletion_on_opt_out && status.reason != DecisionReason::DoNotTrack;
        if let (Some(session), true) = (previous_session, may_send) {
            status.deletion_request = Some(match crate::erasure::request_deletion(self, session) {
                Ok(destination) => format!("sent to {destination}"),
                Err(error) => format!("not sent: {error}"),
            });
        }
        Ok(status)
    }

    /// Replaces the session id with a new random one, so later events cannot be linked to
    /// earlier ones. Does nothing when there is no session id (telemetry was never enabled or
    /// was disabled). Returns the new status.
    pub fn reset(&self) -> Result<Status, ManageError> {
        let store = self.state_store().ok_or(ManageError::NoStateDir)?;
        let (_, replaced) = store.update(|state| match state.session_id {
            Some(_) => {
                state.session_id = Some(telemetry_model::SessionId::random());
                true
            }
            None => false,
        })?;
        if replaced {
            self.audit(AuditChange::SessionReset, AuditSource::Cli);
        }
        Ok(self.status())
    }

    /// Deletes events waiting in the SDK's buffer or the spool; returns how many.
    fn purge_pending(&self) -> u64 {
        self.existing_buffer()
            .and_then(|buffer| buffer.purge().ok())
            .map_or(0, |purged| purged as u64)
    }
}

impl Status {
    /// The reason in words, such as `DO_NOT_TRACK is set`.
    pub fn reason_text(&self) -> String {
        match (self.reason, self.enabled) {
            (DecisionReason::Policy, _) => match &self.policy_file {
                Some(path) => format!("the policy file {path} decides"),
                None => "an enterprise policy file decides".to_owned(),
            },
            (DecisionReason::DoNotTrack, _) => "DO_NOT_TRACK is set".to_owned(),
            (DecisionReason::InvalidSetting, _) => {
                "a telemetry setting is invalid; see the problems below".to_owned()
            }
            (DecisionReason::Env, _) => format!("{} is set", self.enabled_variable),
            (DecisionReason::User, true) => "you enabled it".to_owned(),
            (DecisionReason::User, false) => "you disabled it".to_owned(),
            (DecisionReason::Default, _) => "off until you enable it".to_owned(),
        }
    }
}

impl fmt::Display for Status {
    /// The short human-readable form `status` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.enabled { "Enabled" } else { "Disabled" };
        let dash = || "-".to_owned();
        let mut text = String::new();
        let _ = writeln!(text, "Telemetry: {state} ({})", self.reason_text());
        let _ = writeln!(
            text,
            "Session id: {}",
            self.session_id.clone().unwrap_or_else(dash)
        );
        let _ = writeln!(
            text,
            "Endpoint: {}",
            self.endpoint.clone().unwrap_or_else(dash)
        );
        let _ = writeln!(
            text,
            "Transport: {}, buffer: {}, pending events: {}",
            self.transport.clone().unwrap_or_else(dash),
            self.buffer,
            self.pending_events
        );
        let _ = writeln!(
            text,
            "Last sent: {}",
            self.last_sent.map_or_else(dash, |hour| hour.to_string())
        );
        if self.failed_deliveries > 0 || self.rejected_events > 0 || self.circuit_open {
            let _ = writeln!(
                text,
                "Delivery: {} failed attempts, {} events rejected, circuit {}",
                self.failed_deliveries,
                self.rejected_events,
                if self.circuit_open {
                    "open (paused)"
                } else {
                    "closed"
                }
            );
        }
        if let Some(path) = &self.state_file {
            let _ = writeln!(text, "State file: {path}");
        }
        if let Some(path) = &self.policy_file {
            let _ = writeln!(text, "Policy file: {path}");
        }
        if let Some(url) = &self.docs_url {
            let _ = writeln!(text, "Learn more: {url}");
        }
        for problem in &self.problems {
            let _ = writeln!(text, "Problem: {problem}");
        }
        f.write_str(text.trim_end())
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
