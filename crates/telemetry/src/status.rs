//! What `status` reports, and the decisions users make (`enable`, `disable`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use serde::Serialize;
use telemetry_buffer::{Buffer, BufferStats, DeliveryLedger};
use telemetry_model::HourTimestamp;
use telemetry_policy::{AuditChange, AuditSource, DecisionReason, Setting};

use crate::config::{ManageError, TelemetryConfig, WiringError};
use crate::worker::{PauseReason, paused_until};

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
    /// Events recorded but not yet delivered; `None` when the buffer could not be read (a
    /// problem then says why), never a guess.
    pub pending_events: Option<u64>,
    /// Events delivered, by every process that shared the buffer.
    pub delivered_events: u64,
    /// Events dropped, for every reason, by every process that shared the buffer.
    pub dropped_events: u64,
    /// Events dropped, by reason: `queue_full`, `buffer_full`, `age`, `invalid`, `scrubbed`,
    /// `storage`, `rejected` (every reason is present, zero or not).
    pub dropped_by_reason: BTreeMap<String, u64>,
    /// The hour of the last successful delivery, by any process.
    pub last_sent: Option<HourTimestamp>,
    /// Until when deliveries are paused for every process (`HH:MM:SS` UTC), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
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
    /// Recording calls the SDK made with a catalog handle of another catalog, by every process
    /// that shared the buffer: a mistake in the SDK's wiring, refused rather than reported
    /// under a wrong name. None of them became an event, so they are not drops.
    pub refused_records: u64,
    /// Whether repeated failures have paused deliveries until a cool-down passes.
    pub circuit_open: bool,
    /// Events this process's scrubber dropped because they looked like personal data, by
    /// reason (the total of every process is `dropped_by_reason.scrubbed`).
    pub scrubbed_events: BTreeMap<String, u64>,
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
        match self.existing_buffer() {
            Ok(buffer) => self.status_with(Ok(buffer.as_deref())),
            Err(problem) => self.status_with(Err(problem)),
        }
    }

    /// The status, with the counts of a buffer already at hand (`Ok(None)`: nothing was ever
    /// buffered here; an error: the buffer exists but cannot be read now).
    pub(crate) fn status_with(&self, buffer: Result<Option<&dyn Buffer>, WiringError>) -> Status {
        let resolution = self.resolve();
        let state = resolution.state.as_ref().ok();
        let mut problems = resolution.problems();
        let kind = match buffer {
            Ok(Some(buffer)) => buffer.kind(),
            _ => self.buffer_kind(&resolution),
        };
        let (stats, ledger) = match buffer {
            Ok(None) => (Some(BufferStats::default()), DeliveryLedger::default()),
            Err(problem) => {
                problems.push(format!(
                    "cannot count pending and delivered events: {problem}"
                ));
                (None, DeliveryLedger::default())
            }
            Ok(Some(buffer)) => {
                let stats = buffer.stats();
                let ledger = buffer.ledger();
                if let Some(error) = stats.as_ref().err().or(ledger.as_ref().err()) {
                    problems.push(format!(
                        "cannot count pending and delivered events: {error}"
                    ));
                }
                (stats.ok(), ledger.unwrap_or_default())
            }
        };
        let dropped_by_reason = dropped_by_reason(stats.as_ref(), &ledger);
        let pause = paused_until(&ledger, SystemTime::now());
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
            buffer: kind.to_owned(),
            pending_events: stats.map(|stats| stats.pending as u64),
            delivered_events: ledger.delivered,
            dropped_events: dropped_by_reason.values().sum(),
            dropped_by_reason,
            last_sent: ledger.last_sent.map(HourTimestamp::from_system_time),
            paused_until: pause.map(|(reason, until)| {
                let why = match reason {
                    PauseReason::ServerAskedToWait => "the server asked to wait",
                    PauseReason::RepeatedFailures => "repeated delivery failures",
                };
                format!("{} UTC ({why})", crate::worker::TimeOfDay(until))
            }),
            prompted: state.is_some_and(|state| state.prompted),
            policy_file: resolution
                .policy_file()
                .map(|path| path.display().to_string()),
            state_file: self.state_file().map(|path| path.display().to_string()),
            problems,
            purged_events: 0,
            deletion_request: None,
            failed_deliveries: ledger.failed_deliveries,
            rejected_events: ledger.dropped_rejected,
            refused_records: ledger.refused_records,
            circuit_open: matches!(pause, Some((PauseReason::RepeatedFailures, _))),
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
        let before = self
            .state_store()
            .and_then(|store| store.load().ok())
            .unwrap_or_default();
        self.record_decision(false, source)?;
        let purged = self.purge_pending();
        let mut status = self.status();
        status.purged_events = *purged.as_ref().unwrap_or(&0);
        if let (Some(session), true) = (before.session_id, self.deletion_on_opt_out) {
            let resolution = self.resolve();
            status.deletion_request = Some(
                match self.deletion_request_refusal(&resolution, before.session_used) {
                    Some(why) => format!("not sent: {why}"),
                    None => match crate::erasure::request_deletion(self, &resolution, session) {
                        Ok(destination) => format!("sent to {destination}"),
                        Err(error) => format!("not sent: {error}"),
                    },
                },
            );
        }
        match purged {
            Ok(_) => Ok(status),
            Err(problem) => Err(ManageError::PurgeFailed {
                problem: problem.to_string(),
            }),
        }
    }

    /// Why no deletion request may go out, if none may: it goes only to the configured, valid
    /// destination, only when events under the id may have left, and never when something
    /// other than the user keeps telemetry off (`DO_NOT_TRACK`, the enabled variable set to
    /// off, a policy), so that opting out never contacts anyone the user did not choose.
    fn deletion_request_refusal(
        &self,
        resolution: &crate::config::Resolution,
        session_used: bool,
    ) -> Option<String> {
        if !session_used {
            return Some("no event under the session id ever left this machine".to_owned());
        }
        if resolution.settings.is_err()
            || resolution.policy.is_err()
            || resolution.delivery_problem.is_some()
        {
            return Some(
                "a telemetry setting or the policy file is invalid, so the destination is not known"
                    .to_owned(),
            );
        }
        match resolution.decision.reason {
            DecisionReason::DoNotTrack => Some("DO_NOT_TRACK is set".to_owned()),
            DecisionReason::Policy => Some("a policy file decides".to_owned()),
            DecisionReason::Env if !resolution.decision.enabled => Some(format!(
                "{} keeps telemetry off in this environment",
                self.prefix.variable(Setting::Enabled)
            )),
            _ => None,
        }
    }

    /// Replaces the session id with a new random one, so later events cannot be linked to
    /// earlier ones. Does nothing when there is no session id (telemetry was never enabled or
    /// was disabled). Returns the new status.
    pub fn reset(&self) -> Result<Status, ManageError> {
        let store = self.state_store().ok_or(ManageError::NoStateDir)?;
        let (_, replaced) = store.update(|state| match state.session_id {
            Some(_) => {
                state.new_session(telemetry_model::UtcDate::today());
                true
            }
            None => false,
        })?;
        if replaced {
            self.audit(AuditChange::SessionReset, AuditSource::Cli);
        }
        Ok(self.status())
    }

    /// Deletes events waiting in the SDK's buffer or the spool; returns how many, or why they
    /// could not be deleted (a spool another process keeps busy, an unwritable file).
    fn purge_pending(&self) -> Result<u64, PurgeError> {
        match self.existing_buffer()? {
            None => Ok(0),
            Some(buffer) => Ok(buffer.purge()? as u64),
        }
    }
}

/// Why pending events could not be deleted.
#[derive(Debug, thiserror::Error)]
enum PurgeError {
    /// The spool exists and cannot be opened now.
    #[error(transparent)]
    Open(#[from] WiringError),
    /// The spool refused the deletion (busy, unwritable).
    #[error(transparent)]
    Buffer(#[from] telemetry_buffer::BufferError),
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
                .map_or_else(|| "unknown".to_owned(), |pending| pending.to_string())
        );
        let _ = writeln!(
            text,
            "Last sent: {}, delivered events: {}",
            self.last_sent.map_or_else(dash, |hour| hour.to_string()),
            self.delivered_events
        );
        if self.dropped_events > 0 {
            let reasons: Vec<String> = self
                .dropped_by_reason
                .iter()
                .filter(|(_, count)| **count > 0)
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            let _ = writeln!(
                text,
                "Dropped events: {} ({})",
                self.dropped_events,
                reasons.join(", ")
            );
        }
        if let Some(until) = &self.paused_until {
            let _ = writeln!(text, "Deliveries paused until {until}");
        }
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
        if self.refused_records > 0 {
            let _ = writeln!(
                text,
                "Refused records: {} (the SDK used catalog handles of another catalog; report this to its authors)",
                self.refused_records
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

/// Every drop reason with its count: the buffer's own drops and the ledger's.
fn dropped_by_reason(
    stats: Option<&BufferStats>,
    ledger: &DeliveryLedger,
) -> BTreeMap<String, u64> {
    let stats = stats.copied().unwrap_or_default();
    [
        ("queue_full", ledger.dropped_queue_full),
        ("buffer_full", stats.dropped_full),
        ("age", stats.dropped_age),
        ("invalid", stats.dropped_invalid + ledger.dropped_invalid),
        ("scrubbed", ledger.dropped_scrubbed),
        ("storage", ledger.dropped_storage),
        ("rejected", ledger.dropped_rejected),
    ]
    .into_iter()
    .map(|(reason, count)| (reason.to_owned(), count))
    .collect()
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
