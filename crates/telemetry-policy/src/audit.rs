//! The audit log, `<state dir>/telemetry_audit.jsonl`: one line per change of decision,
//! kept locally and never sent.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telemetry_model::UtcDate;

use crate::no_follow::{self, OpenRefused, WriteMode};
use telemetry_model::redact::redacted_path;

/// The audit log's name inside the state directory.
pub const AUDIT_FILE_NAME: &str = "telemetry_audit.jsonl";

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditChange {
    /// Telemetry was enabled.
    Enabled,
    /// Telemetry was disabled.
    Disabled,
    /// A new session id replaced the old one.
    SessionReset,
    /// A session id was created.
    SessionCreated,
    /// The consent prompt was shown.
    PromptShown,
    /// A change was refused because a policy file decides.
    RefusedByPolicy,
}

/// Who made the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSource {
    /// The consent prompt.
    Prompt,
    /// A management command.
    Cli,
    /// The SDK's API.
    Api,
    /// An environment variable.
    Env,
    /// An enterprise policy file.
    Policy,
}

/// One line of the audit log. Dates only, never times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// When.
    pub date: UtcDate,
    /// What changed.
    pub change: AuditChange,
    /// Who changed it.
    pub source: AuditSource,
}

/// The audit log of one state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `<dir>/telemetry_audit.jsonl`.
    pub fn in_dir(dir: &Path) -> AuditLog {
        AuditLog {
            path: dir.join(AUDIT_FILE_NAME),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry with a single write (mode 0600, directory created when missing).
    ///
    /// Refuses when the log is a symbolic link (or anything but a regular file): the log is
    /// appended to in place, so a link would have the entry written to whatever file it names.
    pub fn append(&self, change: AuditChange, source: AuditSource) -> io::Result<()> {
        let entry = AuditEntry {
            date: UtcDate::today(),
            change,
            source,
        };
        let mut line = serde_json::to_string(&entry).map_err(io::Error::other)?;
        line.push('\n');
        if let Some(dir) = self.path.parent() {
            crate::state::create_private_dir(dir)?;
        }
        let shown = redacted_path(&self.path);
        let mut file = no_follow::open_for_writing(&self.path, WriteMode::Append).map_err(|refused| {
            match refused {
                OpenRefused::Symlink => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the telemetry audit log {shown} is a symbolic link; refusing to write through it (replace it with a regular file)"
                    ),
                ),
                OpenRefused::NotRegularFile => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the telemetry audit log {shown} is not a regular file; refusing to write to it"
                    ),
                ),
                OpenRefused::Io(error) => io::Error::new(
                    error.kind(),
                    format!("cannot open the telemetry audit log {shown}: {error}"),
                ),
            }
        })?;
        file.write_all(line.as_bytes())
    }

    /// Every entry, oldest first; unreadable lines are skipped and counted.
    pub fn read(&self) -> io::Result<(Vec<AuditEntry>, usize)> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(error) => return Err(error),
        };
        let mut entries = Vec::new();
        let mut skipped = 0;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(entry) => entries.push(entry),
                Err(_) => skipped += 1,
            }
        }
        Ok((entries, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn appends_and_reads_back_entries() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::in_dir(&dir.path().join("home"));
        assert_eq!(log.read().unwrap(), (Vec::new(), 0));
        log.append(AuditChange::Enabled, AuditSource::Prompt)
            .unwrap();
        log.append(AuditChange::Disabled, AuditSource::Cli).unwrap();
        let mut file = OpenOptions::new().append(true).open(log.path()).unwrap();
        file.write_all(b"garbage\n").unwrap();
        let (entries, skipped) = log.read().unwrap();
        assert_eq!(skipped, 1);
        let changes: Vec<_> = entries
            .iter()
            .map(|entry| (entry.change, entry.source))
            .collect();
        assert_eq!(
            changes,
            [
                (AuditChange::Enabled, AuditSource::Prompt),
                (AuditChange::Disabled, AuditSource::Cli)
            ]
        );
        let text = fs::read_to_string(log.path()).unwrap();
        assert!(text.starts_with("{\"date\":\""), "{text}");
        assert!(!text.contains('T'), "dates only, never times: {text}");
    }

    #[cfg(unix)]
    #[test]
    fn the_log_is_never_written_through_a_symbolic_link() {
        for target_exists in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("precious.txt");
            if target_exists {
                fs::write(&target, "precious\n").unwrap();
            }
            let log = AuditLog::in_dir(dir.path());
            std::os::unix::fs::symlink(&target, log.path()).unwrap();
            let message = log
                .append(AuditChange::Enabled, AuditSource::Cli)
                .expect_err("appended through the link")
                .to_string();
            for expected in [AUDIT_FILE_NAME, "symbolic link"] {
                assert!(
                    message.contains(expected),
                    "expected `{expected}` in `{message}`"
                );
            }
            assert_eq!(
                fs::read_to_string(&target).ok(),
                target_exists.then(|| "precious\n".to_owned())
            );
        }
    }
}
