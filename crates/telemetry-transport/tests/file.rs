//! The file transport writes real files that hold exactly what was sent.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use telemetry_model::{EncodedEvent, Name, UtcDate, fixtures::encoded_events};
use telemetry_transport::{FileTransport, NullTransport, SendError, Transport};

fn transport(dir: &std::path::Path) -> FileTransport {
    FileTransport::new(dir.join("export"), Name::new("flowkit").unwrap())
}

#[tokio::test]
async fn appends_one_line_per_event_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let transport = transport(dir.path());
    let batches = [encoded_events(3), encoded_events(0), encoded_events(2)];
    for batch in &batches {
        transport.send(batch).await.unwrap();
    }
    let path = transport.file_for(UtcDate::today());
    assert!(path.ends_with(format!("flowkit-telemetry-{}.jsonl", UtcDate::today())));
    let text = fs::read_to_string(&path).unwrap();
    let sent: Vec<&str> = batches.iter().flatten().map(EncodedEvent::json).collect();
    let written: Vec<&str> = text.lines().collect();
    assert_eq!(written, sent);
    assert!(text.ends_with('\n'));
    assert_eq!(
        transport.destination(),
        format!("file://{}", dir.path().join("export").display())
    );
}

#[tokio::test]
async fn io_failures_are_retryable_and_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the export directory should be.
    let blocker = dir.path().join("export");
    fs::write(&blocker, b"not a directory").unwrap();
    let error = transport(dir.path())
        .send(&encoded_events(1))
        .await
        .unwrap_err();
    match error {
        SendError::Retryable {
            message,
            retry_after,
        } => {
            assert!(
                message.contains(&blocker.display().to_string()),
                "{message}"
            );
            assert_eq!(retry_after, None);
        }
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

#[tokio::test]
async fn null_transport_counts_and_discards() {
    let transport = NullTransport::new();
    transport.send(&encoded_events(4)).await.unwrap();
    transport.send(&encoded_events(1)).await.unwrap();
    assert_eq!(transport.accepted(), 5);
    assert_eq!(transport.kind(), "null");
}
