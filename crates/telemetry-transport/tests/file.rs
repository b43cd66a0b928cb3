//! The file transport writes real files that hold exactly what was sent.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use telemetry_model::{EncodedEvent, Name, UtcDate};
use telemetry_testkit::fixtures::encoded_events;
use telemetry_transport::{FileTransport, NullTransport, SendError, Transport};

fn transport(dir: &Path) -> FileTransport {
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

#[tokio::test]
async fn events_never_join_a_line_already_in_the_file() {
    // (what the file holds before the batch, what it holds after it, `{batch}` standing for the
    // batch's lines)
    let cases = [
        ("", "{batch}"),
        ("{\"earlier\":1}\n", "{\"earlier\":1}\n{batch}"),
        // What a writer that died in the middle of a batch leaves behind.
        (
            "{\"earlier\":1}\n{\"event_id\":\"0000",
            "{\"earlier\":1}\n{\"event_id\":\"0000\n{batch}",
        ),
    ];
    for (before, after) in cases {
        let dir = tempfile::tempdir().unwrap();
        let transport = transport(dir.path());
        let path = transport.file_for(UtcDate::today());
        fs::create_dir_all(transport.dir()).unwrap();
        fs::write(&path, before).unwrap();
        let events = encoded_events(3);
        transport.send(&events).await.unwrap();
        let batch: String = events
            .iter()
            .map(|event| format!("{}\n", event.json()))
            .collect();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            after.replace("{batch}", &batch),
            "before: {before:?}"
        );
    }
}

/// A real full file system, without privileges: the test binary runs itself again as a child
/// under `ulimit -f`, with `SIGXFSZ` ignored, so that a write past the limit writes what fits
/// and then fails with `EFBIG`, as a write to a full disk does, instead of killing the child.
#[cfg(unix)]
mod full_file_system {
    use std::collections::HashSet;

    use telemetry_model::Event;
    use telemetry_testkit::fixtures::run_event;

    use super::*;

    /// This test's name as the harness knows it, for the child to run.
    const THIS_TEST: &str =
        "full_file_system::never_leaves_a_torn_line_and_a_retry_writes_each_event_once";

    /// Makes the test binary the child; its value is the export directory.
    const CHILD_ROLE: &str = "TELEMETRY_TRANSPORT_TEST_FULL_FILE_SYSTEM_CHILD";

    /// How the child tells the parent which batch failed.
    const FAILED_BATCH_MARKER: &str = "failed batch: ";

    /// `ulimit -f` counts in blocks of this many bytes (POSIX).
    const ULIMIT_BLOCK: u64 = 512;

    #[tokio::test]
    async fn never_leaves_a_torn_line_and_a_retry_writes_each_event_once() {
        if let Some(dir) = std::env::var_os(CHILD_ROLE) {
            let failed = append_until_the_file_is_full(Path::new(&dir)).await;
            println!("{FAILED_BATCH_MARKER}{failed}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let transport = transport(dir.path());
        let batches = numbered_batches();
        // A limit three quarters into batch 4, so that its append is cut off part way: a write
        // takes what fits, and the one after it fails.
        let failing = 4;
        let before: u64 = batches[..failing]
            .iter()
            .map(|batch| batch_len(batch))
            .sum();
        let blocks = (before + batch_len(&batches[failing]) * 3 / 4) / ULIMIT_BLOCK;
        let limit = blocks * ULIMIT_BLOCK;
        assert!(
            before < limit && limit < before + batch_len(&batches[failing]),
            "the limit of {limit} bytes must cut batch {failing} (from byte {before})"
        );

        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ && ulimit -f \"$1\" && shift && exec \"$0\" \"$@\"")
            .arg(std::env::current_exe().unwrap())
            .arg(blocks.to_string())
            .args([THIS_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROLE, transport.dir())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&child.stdout);
        let stderr = String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "child: {stdout}\n{stderr}");
        // The harness prints its own words around the child's, on the same line.
        let failed: usize = stdout
            .split_once(FAILED_BATCH_MARKER)
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!("the child did not say which batch failed: {stdout}\n{stderr}")
            })
            .parse()
            .unwrap();
        assert_eq!(failed, failing, "the batch the limit cuts");

        let path = transport.file_for(UtcDate::today());
        assert_each_event_once("under the limit", &path, &batches[..failing]);
        transport.send(&batches[failing]).await.unwrap();
        assert_each_event_once("after the retry", &path, &batches[..=failing]);
    }

    /// The child's part: appends the batches until one fails, tries that one once more (it
    /// fails again), and returns its index.
    async fn append_until_the_file_is_full(dir: &Path) -> usize {
        let transport = FileTransport::new(dir, Name::new("flowkit").unwrap());
        for (index, batch) in numbered_batches().iter().enumerate() {
            if let Err(error) = transport.send(batch).await {
                assert!(matches!(error, SendError::Retryable { .. }), "{error:?}");
                let again = transport.send(batch).await;
                assert!(
                    matches!(again, Err(SendError::Retryable { .. })),
                    "{again:?}"
                );
                return index;
            }
        }
        panic!("every batch fit under the file-size limit");
    }

    /// Checks that every line of the file at `path` is a whole event, and that the file holds
    /// the events of `batches`, each once, in order.
    fn assert_each_event_once(step: &str, path: &Path, batches: &[Vec<EncodedEvent>]) {
        let text = fs::read_to_string(path).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{step}: the file ends mid-line"
        );
        let mut seen = HashSet::new();
        let written: Vec<String> = text
            .lines()
            .map(|line| {
                let event: Event = serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("{step}: a torn line ({error}): {line:?}"));
                let id = event.event_id.to_string();
                assert!(seen.insert(id.clone()), "{step}: {id} appears twice");
                id
            })
            .collect();
        let expected: Vec<String> = batches
            .iter()
            .flatten()
            .map(|event| event.id().to_string())
            .collect();
        assert_eq!(written, expected, "{step}");
    }

    /// The same batches in the parent and in the child: 8 batches of 600 events (about 230 KB
    /// each; with a newline after each event, 1,200 slices, more than one vectored write takes,
    /// so every batch is written in more than one call) whose ids are their numbers.
    fn numbered_batches() -> Vec<Vec<EncodedEvent>> {
        let session_id = "00000000-0000-4000-8000-000000000000".parse().unwrap();
        (0..8u64)
            .map(|batch| {
                (1..=600u64)
                    .map(|index| {
                        let event = Event {
                            event_id: format!(
                                "00000000-0000-4000-8000-{:012}",
                                batch * 1000 + index
                            )
                            .parse()
                            .unwrap(),
                            session_id,
                            ..run_event()
                        };
                        EncodedEvent::encode(&event).unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    fn batch_len(batch: &[EncodedEvent]) -> u64 {
        batch
            .iter()
            .map(|event| event.json().len() as u64 + 1)
            .sum()
    }
}
