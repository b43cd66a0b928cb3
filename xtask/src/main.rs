//! `cargo xtask ci | codegen [--check] | bench`.

// A command-line tool reports its progress on standard error.
#![allow(clippy::print_stderr)]

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use xtask::codegen::generated_files;
use xtask::workspace_root;

const USAGE: &str = "usage: cargo xtask <ci | codegen [--check] | bench>

  ci        what CI runs: fmt, clippy, tests, docs, generated files, cargo-deny
  codegen   rewrite docs/event.schema.json and docs/collected-data.md (--check: only compare)
  bench     run the criterion benchmarks";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => ci(),
        ["codegen"] => codegen(false),
        ["codegen", "--check"] => codegen(true),
        ["bench"] => bench(),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(workspace_root());
    command
}

fn run(step: &str, command: &mut Command) -> anyhow::Result<()> {
    eprintln!("\n==> {step}");
    let status = command
        .status()
        .with_context(|| format!("{step}: could not start {command:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn ci() -> anyhow::Result<()> {
    ensure_tools()?;
    run("format", cargo().args(["fmt", "--all", "--check"]))?;
    run(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    codegen(true)?;
    run(
        "tests",
        cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--locked",
            "--no-fail-fast",
        ]),
    )?;
    run(
        "doc tests",
        cargo().args(["test", "--workspace", "--all-features", "--locked", "--doc"]),
    )?;
    run(
        "docs",
        cargo()
            .args([
                "doc",
                "--workspace",
                "--all-features",
                "--no-deps",
                "--locked",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    run(
        "benches compile",
        cargo().args([
            "bench",
            "--workspace",
            "--all-features",
            "--locked",
            "--no-run",
        ]),
    )?;
    run(
        "cargo-deny",
        cargo().args(["deny", "--locked", "check", "licenses", "bans", "sources"]),
    )?;
    eprintln!("\nci: all checks passed");
    Ok(())
}

/// Installs what the checks need when it is missing; each install is skipped when present.
fn ensure_tools() -> anyhow::Result<()> {
    if !succeeds(cargo().args(["nextest", "--version"])) {
        run(
            "install cargo-nextest",
            cargo().args(["install", "--locked", "cargo-nextest"]),
        )?;
    }
    if !succeeds(cargo().args(["deny", "--version"])) {
        run(
            "install cargo-deny",
            cargo().args(["install", "--locked", "cargo-deny"]),
        )?;
    }
    // The end-to-end tests validate exported events with an independent JSON Schema validator.
    if !succeeds(Command::new("python3").args(["-c", "import jsonschema"])) {
        run(
            "install python jsonschema",
            Command::new("python3").args(["-m", "pip", "install", "--quiet", "jsonschema"]),
        )?;
    }
    Ok(())
}

fn codegen(check: bool) -> anyhow::Result<()> {
    eprintln!(
        "\n==> generated files{}",
        if check { " (check)" } else { "" }
    );
    let mut stale = Vec::new();
    for file in generated_files()? {
        if file.is_up_to_date() {
            continue;
        }
        if check {
            stale.push(file.path);
        } else {
            std::fs::write(file.absolute_path(), &file.contents)
                .with_context(|| format!("cannot write {}", file.path))?;
            eprintln!("wrote {}", file.path);
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale generated files: {}; run `cargo xtask codegen` and commit",
            stale.join(", ")
        );
    }
    Ok(())
}

fn bench() -> anyhow::Result<()> {
    run(
        "benchmarks",
        cargo().args(["bench", "--workspace", "--all-features"]),
    )?;
    eprintln!("\nRecord the medians, the machine and the method in docs/performance.md.");
    Ok(())
}
