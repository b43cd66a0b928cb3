//! The `flowkit` command: a demo, a workload simulator, and the telemetry management commands.

// A command-line tool talks to its user on standard output and error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod simulate;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use telemetry::EnvSnapshot;
use telemetry::cli::TelemetryCommand;

/// flowkit: run flows and tasks, with opt-in anonymous usage telemetry.
#[derive(Debug, Parser)]
#[command(name = "flowkit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a short sample workload with telemetry exported to local files, and show what was collected
    Demo(demo::DemoArgs),
    /// Run toy flows as a flowkit user would, honouring every telemetry setting
    Simulate(simulate::SimulateArgs),
    /// See and change what flowkit collects
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
}

/// Set by SIGTERM or SIGINT: a simulation stops after the flow run in progress, and every
/// command ends in order (telemetry stores what was recorded and gives back the batch it was
/// sending, instead of leaving it claimed until its lease runs out). A second signal while
/// stopping ends the process at once, as people expect of a second Ctrl-C.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registered first, so that it sees the flag as the previous signal left it.
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&stop),
        );
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = EnvSnapshot::from_process();
    let stop = stop_on_signals();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args, &env),
        Command::Simulate(args) => simulate::run(&args, &env, &stop),
        Command::Telemetry(command) => {
            let home = flowkit::default_home(&env);
            match flowkit::telemetry_config(home, telemetry::Interface::Cli) {
                Ok(config) => return command.run_with_stdio(&config.env(env)),
                Err(error) => Err(anyhow::Error::from(error)),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
