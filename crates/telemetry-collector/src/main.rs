//! `telemetry-collector`: see `telemetry-collector --help` and docs/collector.md.

fn main() -> std::process::ExitCode {
    telemetry_collector::cli::main()
}
