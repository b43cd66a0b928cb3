//! Opening the state directory's files for writing without following a symbolic link.
//!
//! The audit log and the state lock are opened in place, so a symbolic link put where one of
//! them belongs would have this library append to (or create) whatever file the link names,
//! with the user's rights. Both are refused instead. `O_NOFOLLOW` would say it in one flag, but
//! the standard library has no portable name for it, so the file is looked at without following
//! links first and, after opening, checked to be the very file that was looked at (same device
//! and inode): a link swapped in between is caught, and nothing is written through it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

/// Why a file of the state directory was not opened.
#[derive(Debug)]
pub(crate) enum OpenRefused {
    /// The path is a symbolic link.
    Symlink,
    /// The path is something other than a regular file (a directory, a device, a FIFO).
    NotRegularFile,
    /// Opening failed.
    Io(io::Error),
}

impl From<io::Error> for OpenRefused {
    fn from(error: io::Error) -> OpenRefused {
        OpenRefused::Io(error)
    }
}

/// How often a file that changes while it is opened is looked at again. Another process of the
/// same user creating the file at the same moment is the usual reason; a second look settles it.
const ATTEMPTS: usize = 3;

/// How a file is written once open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Every write goes to the end (the audit log).
    Append,
    /// Writes go where the cursor is, from the start; nothing is truncated (the state lock).
    InPlace,
}

/// Opens the regular file `path` for writing, creating it with mode 0600 when it is missing,
/// and refuses when `path` is a symbolic link.
pub(crate) fn open_for_writing(path: &Path, mode: WriteMode) -> Result<File, OpenRefused> {
    let options = || {
        let mut options = OpenOptions::new();
        match mode {
            WriteMode::Append => options.append(true),
            WriteMode::InPlace => options.write(true),
        };
        options
    };
    for _ in 0..ATTEMPTS {
        match fs::symlink_metadata(path) {
            Ok(seen) if seen.file_type().is_symlink() => return Err(OpenRefused::Symlink),
            Ok(seen) if !seen.is_file() => return Err(OpenRefused::NotRegularFile),
            Ok(seen) => {
                let file = options().open(path)?;
                if is_same_file(&seen, &file.metadata()?) {
                    return Ok(file);
                }
                // Replaced between the look and the open: look again, without writing.
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut options = options();
                // `create_new` is O_CREAT | O_EXCL, which never follows a link, even a
                // dangling one: a link put here in the meantime makes it fail.
                options.create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(path) {
                    Ok(file) => return Ok(file),
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(error) => return Err(OpenRefused::Io(error)),
                }
            }
            Err(error) => return Err(OpenRefused::Io(error)),
        }
    }
    Err(OpenRefused::Io(io::Error::other(
        "it kept being replaced while it was opened",
    )))
}

#[cfg(unix)]
fn is_same_file(seen: &fs::Metadata, opened: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (seen.dev(), seen.ino()) == (opened.dev(), opened.ino())
}

/// Without device and inode numbers the look before opening is the whole check.
#[cfg(not(unix))]
fn is_same_file(_seen: &fs::Metadata, opened: &fs::Metadata) -> bool {
    opened.is_file()
}
