//! A temporary directory to run the real `flowkit` binary in, with a clean environment.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// flowkit's state directory (`FLOWKIT_HOME`).
    pub(crate) fn home(&self) -> PathBuf {
        self.dir.path().join("flowkit-home")
    }

    /// A directory for offline export.
    pub(crate) fn export(&self) -> PathBuf {
        self.dir.path().join("export")
    }

    /// `file://` for [`Sandbox::export`].
    pub(crate) fn file_endpoint(&self) -> String {
        format!("file://{}", self.export().display())
    }

    /// flowkit with only PATH, HOME, FLOWKIT_HOME, TMPDIR, TERM and the given variables set.
    pub(crate) fn command(&self, args: &[&str], vars: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowkit"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("FLOWKIT_HOME", self.home())
            .env("TMPDIR", self.dir.path())
            .env("TERM", "xterm")
            .envs(vars.iter().copied());
        command
    }

    /// Runs flowkit to completion with standard input closed.
    pub(crate) fn output(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        self.command(args, vars)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Every line exported so far.
    pub(crate) fn exported_lines(&self) -> Vec<String> {
        lines_in(&self.export())
    }
}

/// Every line of every file in `dir`; nothing when it does not exist.
pub(crate) fn lines_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(str::to_owned));
    }
    lines
}
