//! Offline export: events appended to daily JSONL files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use telemetry_model::{EncodedEvent, Name, UtcDate};

use crate::{SendError, Transport};

/// Appends each event as one line of JSON to `<dir>/<sdk>-telemetry-YYYY-MM-DD.jsonl` (UTC date).
///
/// A batch is appended whole or not at all. Under an exclusive lock on the file, `send` notes
/// the file's length and appends the batch; if the write fails (a full disk, a file-size
/// limit, an I/O error), the file is cut back to the noted length before `send` returns the
/// error. So a failed batch leaves no partial line behind, and a retry of it writes each event
/// once. The lock (an advisory `flock`-style lock, taken with [`File::lock`]) is what makes
/// this safe when several processes export to the same file: their batches never interleave
/// within a line, and a rollback never cuts lines another process appended. A file that does
/// not end with a newline (a writer died in the middle of a batch, or a power cut kept only
/// part of one) gets one before the batch, so that the first event is never joined to that
/// fragment. Where the file system cannot lock files, batches are appended and rolled back
/// without the lock.
///
/// # Durability
///
/// An appended batch is in the file: it survives the process crashing or being killed. It is
/// not synced: the operating system writes it to disk within seconds, as it does the spool's
/// commits (`PRAGMA synchronous = NORMAL`), and a power cut or an operating-system crash may
/// lose the last seconds of the export, as it may the spool's last transactions. The events
/// come from that spool or straight from memory, so a sync here would promise more than the
/// path before it keeps; it cost the process about 70 µs of CPU per append.
///
/// The directory is created when missing. Every I/O failure (a full disk, a missing permission)
/// is retryable: the events stay in the buffer.
#[derive(Debug, Clone)]
pub struct FileTransport {
    dir: PathBuf,
    sdk_name: Name,
}

/// Why a batch could not be appended.
#[derive(Debug, thiserror::Error)]
enum AppendError {
    /// The batch was not written, or was written and then cut off again.
    #[error("cannot append to {}: {error}", path.display())]
    NotWritten {
        /// The export directory or file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// The batch failed and cutting it off failed too, so part of it may remain.
    #[error(
        "cannot append to {}: {error}; cutting the file back to its previous {length} bytes failed too: {rollback}",
        path.display()
    )]
    RollbackFailed {
        /// The export file.
        path: PathBuf,
        /// What failed first.
        error: io::Error,
        /// The length the file was to be cut back to.
        length: u64,
        /// Why the rollback failed.
        rollback: io::Error,
    },
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

    fn append(&self, events: &[EncodedEvent]) -> Result<(), AppendError> {
        fs::create_dir_all(&self.dir).map_err(|error| AppendError::NotWritten {
            path: self.dir.clone(),
            error,
        })?;
        let path = self.file_for(UtcDate::today());
        let not_written = |error| AppendError::NotWritten {
            path: path.clone(),
            error,
        };
        // Read access is for the last byte only; appending mode sends every write to the end.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(not_written)?;
        // Held until `file` is dropped, which closes it. Another exporter holds it only for one
        // write, so waiting for it is short.
        match file.lock() {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Unsupported => {}
            Err(error) => return Err(not_written(error)),
        }
        let length = file.metadata().map_err(not_written)?.len();
        let Err(error) = append_whole_lines(&mut file, length, events) else {
            return Ok(());
        };
        match file.set_len(length) {
            Ok(()) => Err(not_written(error)),
            Err(rollback) => Err(AppendError::RollbackFailed {
                path,
                error,
                length,
                rollback,
            }),
        }
    }
}

/// Writes `events` as lines at the end of `file`, which is `length` bytes long, starting a new
/// line first when the file ends in the middle of one.
///
/// The lines go out with vectored writes straight from the events' own text, each event's JSON
/// and a newline as two slices: gathering them first into a buffer of its own copied every
/// byte once more, and the fresh buffer's pages were faulted in at every append (the allocator
/// gives such memory back between appends). The kernel takes up to `IOV_MAX` (1,024 on Linux)
/// slices per call; the standard library passes no more than that, and the loop goes on from
/// where each call stopped.
fn append_whole_lines(file: &mut File, length: u64, events: &[EncodedEvent]) -> io::Result<()> {
    let mut start_line = false;
    if let Some(last) = length.checked_sub(1) {
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(last))?;
        file.read_exact(&mut byte)?;
        start_line = byte != *b"\n";
    }
    const NEWLINE: &[u8] = b"\n";
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * events.len() + 1);
    if start_line {
        slices.push(IoSlice::new(NEWLINE));
    }
    for event in events {
        slices.push(IoSlice::new(event.json().as_bytes()));
        slices.push(IoSlice::new(NEWLINE));
    }
    write_all_vectored(file, &mut slices)
}

/// Writes every byte of `slices`, however many calls that takes.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    // Skips empty slices at the front, so that an empty event list writes nothing.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file took no more bytes",
                ));
            }
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Transport for FileTransport {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn destination(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// A file has no request size: several batches appended at once are one locked append,
    /// one vectored write.
    fn takes_merged_batches(&self) -> bool {
        true
    }

    async fn send(&self, events: &[EncodedEvent]) -> Result<(), SendError> {
        if events.is_empty() {
            return Ok(());
        }
        // Local disk writes are short; the worker runs on its own thread, so blocking here
        // (on the lock and the write) never stalls the host.
        self.append(events).map_err(|error| SendError::Retryable {
            message: error.to_string(),
            retry_after: None,
        })
    }
}
