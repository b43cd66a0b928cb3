//! Erasure on opt-out: one final request asking the destination to delete what was sent.

use std::sync::mpsc;
use std::time::Duration;

use telemetry_model::{DurationBucket, EncodedEvent, EventType, SessionId};

use crate::config::{Resolution, TelemetryConfig};

/// How long `disable` waits for the deletion request to be delivered.
const DELETION_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one `deletion_request` event for `session` to the configured destination and returns
/// where it went. Runs on its own thread and runtime, so it works from sync code and from inside
/// a host's async runtime alike, and never waits longer than a few seconds.
pub(crate) fn request_deletion(
    config: &TelemetryConfig,
    resolution: &Resolution,
    session: SessionId,
) -> Result<String, String> {
    let transport = config.transport_for(resolution)?;
    let template = config.event_template(resolution.ci, session);
    let event = template.event(EventType::DeletionRequest, DurationBucket::UnderOneSecond);
    let encoded = EncodedEvent::encode(&event).map_err(|error| error.to_string())?;
    // The same second line of defence as every other event.
    if let Err(reason) = config.scrubber(resolution).check_json(encoded.json()) {
        return Err(format!(
            "the request looked like personal data ({reason}) and was withheld"
        ));
    }
    let destination = transport.destination();
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("telemetry-erasure".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(runtime) => runtime.block_on(async {
                    match tokio::time::timeout(
                        DELETION_TIMEOUT,
                        transport.send(std::slice::from_ref(&encoded)),
                    )
                    .await
                    {
                        Ok(sent) => sent.map_err(|error| error.to_string()),
                        Err(_) => Err("the destination did not answer in time".to_owned()),
                    }
                }),
                Err(error) => Err(error.to_string()),
            };
            let _ = sender.send(result);
        })
        .map_err(|error| error.to_string())?;
    match receiver.recv_timeout(DELETION_TIMEOUT + Duration::from_secs(1)) {
        Ok(result) => result.map(|()| destination),
        Err(_) => Err("the destination did not answer in time".to_owned()),
    }
}
