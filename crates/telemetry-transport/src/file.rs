//! Offline export: events appended to daily JSONL files.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use telemetry_model::{EncodedEvent, Name, UtcDate};

use crate::{SendError, Transport};

/// Appends each event as one line of JSON to `<dir>/<sdk>-telemetry-YYYY-MM-DD.jsonl` (UTC date).
///
/// Each batch is written with one `write` to a file opened for appending and synced before
/// `send` returns, so an acknowledged event is on disk, and batches from two processes
/// exporting to the same directory do not interleave within a line. The directory is created
/// when missing. Every I/O failure (a full disk, a missing permission) is retryable: the events
/// stay in the buffer.
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
    sdk_name: Name,
}

impl FileTransport {
    /// Exports into `dir`, naming files after the SDK.
    pub fn new(dir: impl Into<PathBuf>, sdk_name: Name) -> FileTransport {
        FileTransport {
            dir: dir.into(),
            sdk_name,
        }
    }

    /// The export directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that events written on `date` go to.
    pub fn file_for(&self, date: UtcDate) -> PathBuf {
        self.dir
            .join(format!("{}-telemetry-{date}.jsonl", self.sdk_name))
    }

    fn append(&self, lines: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file_for(UtcDate::today()))?;
        file.write_all(lines)?;
        file.sync_data()
    }
}

#[async_trait::async_trait]
impl Transport for FileTransport {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn destination(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::with_capacity(events.iter().map(|event| event.json().len() + 1).sum());
        for event in events {
            lines.extend_from_slice(event.json().as_bytes());
            lines.push(b'\n');
        }
        // Local disk writes are short; the worker runs on its own thread, so blocking here
        // never stalls the host.
        self.append(&lines).map_err(|error| SendError::Retryable {
            message: format!("cannot append to {}: {error}", self.dir.display()),
            retry_after: None,
        })
    }
}
