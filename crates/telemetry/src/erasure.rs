//! Erasure on opt-out: one final request asking the destination to delete what was sent.

use std::sync::mpsc;
use std::time::Duration;

use telemetry_model::{DurationBucket, EncodedEvent, EventType, SessionId};

use telemetry_policy::ScrubReason;
use telemetry_transport::SendError;

use crate::config::{Resolution, TelemetryConfig, WiringError};

/// How long `disable` waits for the deletion request to be delivered.
const DELETION_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a deletion request was not sent; `disable` shows it after "not sent: ".
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErasureError {
    /// No transport could be built for the destination.
    #[error(transparent)]
    Wiring(#[from] WiringError),
    /// The event could not be serialized.
    #[error("the request could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// The scrubber found something that looks like personal data in the request.
    #[error("the request looked like personal data ({0}) and was withheld")]
    Withheld(ScrubReason),
    /// The destination refused the request, or could not be reached.
    #[error(transparent)]
    Send(#[from] SendError),
    /// No answer within [`DELETION_TIMEOUT`].
    #[error("the destination did not answer in time")]
    NoAnswer,
    /// The thread or runtime that sends could not be started.
    #[error("cannot start the sender: {0}")]
    Start(#[from] std::io::Error),
}

/// Sends one `deletion_request` event for `session` to the configured destination and returns
/// where it went. Runs on its own thread and runtime, so it works from sync code and from inside
/// a host's async runtime alike, and never waits longer than a few seconds.
pub(crate) fn request_deletion(
    config: &TelemetryConfig,
    resolution: &Resolution,
    session: SessionId,
) -> Result<String, ErasureError> {
    let transport = config.transport_for(resolution)?;
    let template = config.event_template(resolution.ci, session);
    let event = template.event(EventType::DeletionRequest, DurationBucket::UnderOneSecond);
    let encoded = EncodedEvent::encode(&event)?;
    // The same second line of defence as every other event.
    if let Err(reason) = config.scrubber(resolution).check_json(encoded.json()) {
        return Err(ErasureError::Withheld(reason));
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
                        Ok(sent) => sent.map_err(ErasureError::from),
                        Err(_) => Err(ErasureError::NoAnswer),
                    }
                }),
                Err(error) => Err(ErasureError::Start(error)),
            };
            let _ = sender.send(result);
        })?;
    match receiver.recv_timeout(DELETION_TIMEOUT + Duration::from_secs(1)) {
        Ok(result) => result.map(|()| destination),
        Err(_) => Err(ErasureError::NoAnswer),
    }
}
