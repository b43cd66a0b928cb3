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
//! fn main() -> std::process::ExitCode {
//!     let MyCli::Telemetry(command) = MyCli::parse();
//!     command.run_with_stdio(&config())
//! }
//! ```

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::config::{ManageError, TelemetryConfig};
use crate::status::Status;
use crate::worker::FlushError;

/// `status [--json]`, `enable`, `disable`, `preview`, `reset`, `flush`, `audit`.
#[derive(Clone, Debug, PartialEq, clap::Subcommand)]
pub enum TelemetryCommand {
    /// Show whether telemetry is on, why, and where events go
    Status {
        /// Print one JSON object (fields are a stable contract)
        #[arg(long)]
        json: bool,
    },
    /// Opt in to anonymous usage telemetry
    Enable,
    /// Opt out: nothing more is collected, unsent events are deleted, the session id is forgotten
    Disable,
    /// Print exactly what would be sent from this environment; sends nothing
    Preview,
    /// Replace the anonymous session id with a new one
    Reset,
    /// Send pending events now, waiting at most the timeout
    Flush {
        /// Seconds to wait at most
        #[arg(long, default_value_t = 10.0, value_parser = parse_timeout)]
        timeout: f64,
    },
    /// Print every recorded change of the telemetry decision
    Audit,
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds <= 3_600.0 => Ok(seconds),
        _ => Err(format!(
            "`{text}` is not a timeout: use seconds above 0 and at most 3600, such as 10"
        )),
    }
}

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the command could not do what was asked (a policy forbids it, a file failed).
pub const EXIT_FAILED: i32 = 1;

impl TelemetryCommand {
    /// Runs the command, writing to standard output and error; returns the exit code for
    /// `main` to return.
    pub fn run_with_stdio(&self, config: &TelemetryConfig) -> std::process::ExitCode {
        let code = self.run(config, &mut io::stdout().lock(), &mut io::stderr().lock());
        std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
    }

    /// Runs the command, writing its output to `out` and errors to `err`; returns the exit code
    /// ([`EXIT_OK`] or [`EXIT_FAILED`]).
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
                    for problem in &status.problems {
                        text.push_str(&format!("\n  {problem}"));
                    }
                }
                text
            }),
            TelemetryCommand::Disable => report(config.disable(), out, err, |status| {
                let mut text = if status.enabled {
                    // Never claim what is not true: something of higher precedence decides.
                    format!(
                        "Your opt-out is recorded and the session id was forgotten, but telemetry stays on in this environment because {}.",
                        status.reason_text()
                    )
                } else {
                    "Telemetry disabled. Nothing more will be collected, and the session id was forgotten.".to_owned()
                };
                if status.purged_events > 0 {
                    text.push_str(&format!(
                        "\nDeleted {} unsent events.",
                        status.purged_events
                    ));
                }
                if let Some(request) = &status.deletion_request {
                    text.push_str(&format!(
                        "\nDeletion request for the old session id: {request}."
                    ));
                }
                text
            }),
            TelemetryCommand::Preview => preview(config, out, err),
            TelemetryCommand::Reset => report(config.reset(), out, err, |status| {
                match &status.session_id {
                    Some(id) => format!("New anonymous session id: {id}"),
                    None => "Telemetry has no session id (it is not enabled); nothing to reset."
                        .to_owned(),
                }
            }),
            TelemetryCommand::Flush { timeout } => {
                flush(config, Duration::from_secs_f64(*timeout), out, err)
            }
            TelemetryCommand::Audit => audit(config, out, err),
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

fn preview(config: &TelemetryConfig, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<i32> {
    let preview = config.preview();
    let destination = preview.destination.as_deref().unwrap_or("no destination");
    let state = if preview.enabled {
        "enabled"
    } else {
        "disabled, so nothing is sent"
    };
    writeln!(
        err,
        "This is exactly what a process that used no features would send to {destination} \
         (telemetry is {state}; this preview sent nothing):"
    )?;
    if preview.placeholder_session {
        writeln!(
            err,
            "(The session id is a placeholder: one is created when telemetry is enabled.)"
        )?;
    }
    out.write_all(&preview.bytes)?;
    if !preview.bytes.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(EXIT_OK)
}

fn flush(
    config: &TelemetryConfig,
    timeout: Duration,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<i32> {
    let deadline = Instant::now() + timeout;
    let telemetry = config.start_for_management();
    if !telemetry.is_enabled() {
        writeln!(out, "Telemetry is disabled; there is nothing to send.")?;
        return Ok(EXIT_OK);
    }
    let result = telemetry.flush(timeout);
    // The flush kept the deadline; stopping the worker only stores what is queued (nothing:
    // this process recorded nothing), so it gets what is left and a moment to answer.
    telemetry.shutdown(deadline.saturating_duration_since(Instant::now()) + SHUTDOWN_GRACE);
    match result {
        Ok(report) => {
            writeln!(
                out,
                "Sent {} pending events; {} still pending.",
                report.delivered, report.pending
            )?;
            Ok(EXIT_OK)
        }
        Err(error @ FlushError::Paused { .. }) => {
            writeln!(out, "Nothing sent: {error}.")?;
            Ok(EXIT_OK)
        }
        Err(error) => {
            writeln!(err, "error: {error}")?;
            let status = config.status();
            match status.pending_events {
                Some(pending) => writeln!(err, "{pending} events still pending.")?,
                None => writeln!(err, "Pending events could not be counted.")?,
            }
            Ok(EXIT_FAILED)
        }
    }
}

/// What `flush` allows its worker beyond the deadline to stop: a few milliseconds of work.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

fn audit(config: &TelemetryConfig, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<i32> {
    let Some(log) = config.audit_log() else {
        writeln!(
            err,
            "error: this SDK has no state directory, so it keeps no audit log"
        )?;
        return Ok(EXIT_FAILED);
    };
    let (entries, skipped) = match log.read() {
        Ok(read) => read,
        Err(error) => {
            writeln!(err, "error: cannot read {}: {error}", log.path().display())?;
            return Ok(EXIT_FAILED);
        }
    };
    if entries.is_empty() {
        writeln!(out, "No changes recorded yet ({}).", log.path().display())?;
    }
    for entry in entries {
        let change = serde_json::to_value(entry.change).ok();
        let source = serde_json::to_value(entry.source).ok();
        let text = |value: Option<serde_json::Value>| {
            value
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        writeln!(
            out,
            "{}  {:<17} via {}",
            entry.date,
            text(change),
            text(source)
        )?;
    }
    if skipped > 0 {
        writeln!(
            err,
            "warning: {skipped} unreadable lines in {} were skipped",
            log.path().display()
        )?;
    }
    Ok(EXIT_OK)
}
