//! The `flowkit` command: a demo, a workload simulator, and the telemetry management commands.

// A command-line tool talks to its user on standard output and error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod simulate;

use std::process::ExitCode;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = EnvSnapshot::from_process();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args, &env),
        Command::Simulate(args) => simulate::run(&args, &env),
        Command::Telemetry(command) => {
            let home = flowkit::default_home(&env);
            flowkit::telemetry_config(home, telemetry::Interface::Cli)
                .map(|config| config.env(env))
                .map_err(anyhow::Error::from)
                .map(|config| command.run_with_stdio(&config))
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
