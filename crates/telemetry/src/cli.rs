//! The management commands as a clap subcommand an SDK mounts in its own CLI.
//!
//! ```no_run
//! use clap::Parser;
//! use telemetry::cli::TelemetryCommand;
//!
//! #[derive(Parser)]
//! enum MyCli {
//!     /// See and change what this SDK collects
//!     #[command(subcommand)]
//!     Telemetry(TelemetryCommand),
//! }
//!
//! # fn config() -> telemetry::TelemetryConfig { unimplemented!() }
//! let MyCli::Telemetry(command) = MyCli::parse();
//! std::process::exit(command.run_with_stdio(&config()));
//! ```

use std::io::{self, Write};

use crate::config::{ManageError, TelemetryConfig};
use crate::status::Status;

/// `status [--json]`, `enable`, `disable`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum TelemetryCommand {
    /// Show whether telemetry is on, why, and where events go
    Status {
        /// Print one JSON object (fields are a stable contract)
        #[arg(long)]
        json: bool,
    },
    /// Opt in to anonymous usage telemetry
    Enable,
    /// Opt out: nothing more is collected, and the session id is forgotten
    Disable,
}

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command could not do what was asked (a policy forbids it, a file failed).
pub const EXIT_FAILED: i32 = 1;

impl TelemetryCommand {
    /// Runs the command, writing to standard output and error; returns the exit code.
    pub fn run_with_stdio(&self, config: &TelemetryConfig) -> i32 {
        self.run(config, &mut io::stdout().lock(), &mut io::stderr().lock())
    }

    /// Runs the command, writing its output to `out` and errors to `err`; returns the exit code.
    pub fn run(&self, config: &TelemetryConfig, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
        let result = match self {
            TelemetryCommand::Status { json } => {
                let status = config.status();
                if *json {
                    serde_json::to_string_pretty(&status)
                        .map_err(io::Error::other)
                        .and_then(|json| writeln!(out, "{json}"))
                } else {
                    writeln!(out, "{status}")
                }
                .map(|()| EXIT_OK)
            }
            TelemetryCommand::Enable => report(config.enable(), out, err, |status| {
                let mut text = format!(
                    "Telemetry enabled. Thank you for helping improve {}.\n\
                     Only anonymous usage data is collected; see it with `{} telemetry status`.",
                    config.sdk_name(),
                    config.sdk_name()
                );
                if !status.enabled {
                    text.push_str(&format!(
                        "\nNote: telemetry stays off in this environment because {}.",
                        status.reason_text()
                    ));
                }
                text
            }),
            TelemetryCommand::Disable => report(config.disable(), out, err, |_| {
                "Telemetry disabled. Nothing more will be collected, and the session id was forgotten."
                    .to_owned()
            }),
        };
        result.unwrap_or(EXIT_FAILED)
    }
}

fn report(
    result: Result<Status, ManageError>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    message: impl FnOnce(&Status) -> String,
) -> io::Result<i32> {
    match result {
        Ok(status) => writeln!(out, "{}", message(&status)).map(|()| EXIT_OK),
        Err(error) => writeln!(err, "error: {error}").map(|()| EXIT_FAILED),
    }
}
