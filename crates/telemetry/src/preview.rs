//! `preview`: exactly what would be sent, built from the catalog and the real environment.

use telemetry_model::{CountBucket, DurationBucket, EncodedEvent, EventType, SessionId};
use telemetry_policy::Endpoint;

use crate::config::TelemetryConfig;

/// The bytes a process would send, and where, without sending anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// Whether telemetry is on in this environment.
    pub enabled: bool,
    /// Where the bytes would go.
    pub destination: Option<String>,
    /// The exact bytes: an HTTPS request body, or the lines appended to an export file.
    pub bytes: Vec<u8>,
    /// Whether the session id in the bytes is a placeholder (no session id exists yet).
    pub placeholder_session: bool,
}

impl TelemetryConfig {
    /// The `sdk_usage` summary that a process in this environment would send if it used no
    /// features, exactly as it would be written for the configured destination. Reads the
    /// environment and the state file; writes and sends nothing.
    pub fn preview(&self) -> Preview {
        let resolution = self.resolve();
        let existing = resolution
            .state
            .as_ref()
            .ok()
            .and_then(|state| state.session_id);
        let session = existing.unwrap_or_else(SessionId::random);
        let template = self.event_template(resolution.ci, session);
        let mut event = template.event(EventType::SdkUsage, DurationBucket::UnderOneSecond);
        event.integrations = self
            .installed_integrations
            .iter()
            .filter_map(|integration| self.catalog.integration_name(*integration))
            .collect();
        event.concurrency_peak = Some(CountBucket::Zero);
        let bytes = match EncodedEvent::encode(&event) {
            Ok(encoded) => match &resolution.endpoint {
                Some(Endpoint::Https(_)) => {
                    telemetry_model::wire::encode_batch(std::slice::from_ref(&encoded))
                }
                _ => format!("{}\n", encoded.json()).into_bytes(),
            },
            Err(_) => Vec::new(),
        };
        Preview {
            enabled: resolution.decision.enabled,
            destination: resolution.endpoint.as_ref().map(ToString::to_string),
            bytes,
            placeholder_session: existing.is_none(),
        }
    }
}
