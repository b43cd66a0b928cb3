//! `cargo xtask ci | codegen [--check] | bench`.

// A command-line tool reports its progress on standard error.
#![allow(clippy::print_stderr)]

mod postgres;
mod process_cpu;

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use xtask::codegen::generated_files;
use xtask::workspace_root;

const USAGE: &str =
    "usage: cargo xtask <ci | codegen [--check] | bench [process-cpu | collector-ingest]>

  ci        what CI runs: fmt, clippy, tests, docs, generated files, cargo-deny
  codegen   rewrite docs/event.schema.json, docs/collected-data.md, the CI vendor table and
            the scrubber's list of the event schema's words
            (--check: only compare)
  bench     run the criterion benchmarks, the collector's ingest benchmark and the process
            CPU benchmark
            (process-cpu: only flowkit's whole-process CPU per flow run, about two minutes;
            collector-ingest: only the collector's ingest rate over HTTPS, on SQLite and on
            PostgreSQL, one to three minutes)";

/// The note the collector's ingest benchmark (`crates/telemetry-collector/benches/ingest.rs`)
/// leaves in `<target>/tmp/bench-notes/`.
const COLLECTOR_INGEST_NOTE: &str = "collector_ingest";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["ci"] => ci(),
        ["codegen"] => codegen(false),
        ["codegen", "--check"] => codegen(true),
        ["bench"] => bench(),
        ["bench", "process-cpu"] => bench_process_cpu(),
        ["bench", "collector-ingest"] => bench_collector_ingest(),
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
    // The collector's store tests run against a real PostgreSQL; one server serves the run.
    let postgres = postgres::TestPostgres::start()?;
    run(
        "tests",
        cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--locked",
                "--no-fail-fast",
            ])
            .env(postgres::URL_VARIABLE, postgres.url()),
    )?;
    drop(postgres);
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
    // The collector's report page is checked in a real headless browser, and that test fails
    // under CI without one.
    if !std::path::Path::new(CHROMIUM).exists() {
        install_chromium()?;
    }
    Ok(())
}

/// Where Debian's `chromium` package puts the browser that the end-to-end tests drive.
const CHROMIUM: &str = "/usr/bin/chromium";

fn install_chromium() -> anyhow::Result<()> {
    let apt_get = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    let install = ["install", "-y", "chromium"];
    // The machine's package lists usually know chromium already; refreshing them takes a while,
    // so only when the install fails without it.
    if run("install chromium", &mut apt_get(&install)).is_ok() {
        return Ok(());
    }
    run("update the package lists", &mut apt_get(&["update"]))?;
    run("install chromium", &mut apt_get(&install))
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
    let target_dir = bench_target_dir();
    let notes_dir = bench_notes_dir(&target_dir);
    // Notes left by an earlier run must not pass for this run's.
    let _ = std::fs::remove_dir_all(&notes_dir);
    run(
        "benchmarks",
        cargo().args(["bench", "--workspace", "--all-features"]),
    )?;
    // Its rows read "not measured" if it fails; the table of the criterion runs is still printed.
    let process_cpu = process_cpu::run(&mut cargo(), &target_dir, &notes_dir);
    print_bench_table(bench_rows(&target_dir));
    print_bench_notes(&notes_dir);
    process_cpu.context("process CPU benchmark")?;
    eprintln!(
        "\nRecord the results, the method and the machine (nproc, lscpu's model name, memory) in docs/performance.md."
    );
    Ok(())
}

/// Only the process CPU benchmark, and only its rows of the table.
fn bench_process_cpu() -> anyhow::Result<()> {
    let target_dir = bench_target_dir();
    let notes_dir = bench_notes_dir(&target_dir);
    let note = notes_dir.join(format!("{}.txt", process_cpu::NOTE));
    let _ = std::fs::remove_file(&note);
    process_cpu::run(&mut cargo(), &target_dir, &notes_dir)?;
    print_bench_table(process_cpu_rows(&target_dir));
    print_bench_note(&note);
    Ok(())
}

/// Only the collector's ingest benchmark, and only its rows of the table.
fn bench_collector_ingest() -> anyhow::Result<()> {
    let target_dir = bench_target_dir();
    let note = bench_notes_dir(&target_dir).join(format!("{COLLECTOR_INGEST_NOTE}.txt"));
    let _ = std::fs::remove_file(&note);
    run(
        "collector ingest benchmark",
        cargo().args([
            "bench",
            "--package",
            "telemetry-collector",
            "--all-features",
            "--bench",
            "ingest",
        ]),
    )?;
    print_bench_table(collector_ingest_rows(&target_dir));
    print_bench_note(&note);
    Ok(())
}

/// Where cargo puts criterion's results: `CARGO_TARGET_DIR` (relative to the workspace root,
/// where the benchmarks run) or the workspace's `target`.
fn bench_target_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The median of one criterion benchmark, in nanoseconds, from
/// `<target>/criterion/<group>/<function>/new/estimates.json`.
fn criterion_median_ns(target_dir: &std::path::Path, id: &str) -> Option<f64> {
    let path = target_dir
        .join("criterion")
        .join(id)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    // xtask has no JSON parser; the file is criterion's flat, machine-written object.
    let median = &text[text.find("\"median\":")?..];
    let value = &median[median.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// How many elements one iteration of a criterion benchmark handles (its
/// `Throughput::Elements`), from `<target>/criterion/<group>/<function>/new/benchmark.json`.
fn criterion_elements(target_dir: &std::path::Path, id: &str) -> Option<f64> {
    let path = target_dir
        .join("criterion")
        .join(id)
        .join("new")
        .join("benchmark.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value = &text[text.find("\"Elements\":")? + "\"Elements\":".len()..];
    let end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// Where benchmarks leave what criterion does not record: `<target>/tmp/bench-notes/`.
fn bench_notes_dir(target_dir: &std::path::Path) -> std::path::PathBuf {
    target_dir.join("tmp").join("bench-notes")
}

/// `key=value` lines that a benchmark left in `<target>/tmp/bench-notes/<name>.txt`.
fn bench_note_values(target_dir: &std::path::Path, name: &str) -> Vec<(String, f64)> {
    let path = bench_notes_dir(target_dir).join(format!("{name}.txt"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some((key.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn format_ns(ns: f64) -> String {
    match ns {
        ns if ns < 1_000.0 => format!("{ns:.2} ns"),
        ns if ns < 1_000_000.0 => format!("{:.2} µs", ns / 1_000.0),
        ns if ns < 1_000_000_000.0 => format!("{:.2} ms", ns / 1_000_000.0),
        ns => format!("{:.2} s", ns / 1_000_000_000.0),
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "MISS" }
}

/// One row of the comparison table.
struct BenchRow {
    what: String,
    target: String,
    measured: String,
    verdict: String,
}

impl BenchRow {
    fn new(what: &str, target: &str, measured: Option<(String, &str)>) -> BenchRow {
        let (measured, verdict) = measured.unwrap_or_else(|| ("not measured".to_owned(), "?"));
        BenchRow {
            what: what.to_owned(),
            target: target.to_owned(),
            measured,
            verdict: verdict.to_owned(),
        }
    }
}

/// The rows of the comparison table, each a target of issue 7 next to what was measured.
fn bench_rows(target_dir: &std::path::Path) -> Vec<BenchRow> {
    let median = |id: &str| criterion_median_ns(target_dir, id);
    let at_most =
        |id: &str, limit_ns: f64| median(id).map(|ns| (format_ns(ns), verdict(ns <= limit_ns)));
    let faster = |ours: &str, theirs: &str| {
        let (ours, theirs) = (median(ours)?, median(theirs)?);
        Some((
            format!(
                "{} vs {} ({:.2}x)",
                format_ns(ours),
                format_ns(theirs),
                theirs / ours
            ),
            verdict(ours < theirs),
        ))
    };
    let per_second = |id: &str| {
        let elements = criterion_elements(target_dir, id)?;
        median(id).map(|ns| elements * 1e9 / ns)
    };
    // The spool's end-to-end rate against one of the rusqlite baselines of the same run.
    let spool_vs = |baseline: &str| {
        let spool = per_second("throughput_sqlite/record_to_spool_to_null_transport")?;
        let baseline = per_second(&format!("throughput_sqlite/{baseline}"))?;
        let ratio = spool / baseline;
        Some((
            format!("{spool:.0} vs {baseline:.0} events/s ({ratio:.2}x)"),
            ratio,
        ))
    };
    let memory = bench_note_values(target_dir, "memory_bound");
    let memory_value = |key: &str| note_value(&memory, key);
    // The "small constant" above the buffer's bound: the worker thread, its runtime and the
    // allocator's slack.
    const SMALL_CONSTANT_KIB: f64 = 2_048.0;
    let mut rows = vec![
        BenchRow::new(
            "disabled `record_run`",
            "≤ 5 ns",
            at_most("record_disabled/record_run", 5.0),
        ),
        BenchRow::new(
            "disabled `feature_used`",
            "≤ 5 ns",
            at_most("record_disabled/feature_used", 5.0),
        ),
        BenchRow::new(
            "enabled `record_run`, accepted (worker busy)",
            "≤ 150 ns",
            at_most("record_enabled_accepted/telemetry", 150.0),
        ),
        BenchRow::new(
            "enabled `record_run`, back to back (queue full, mostly dropped)",
            "≤ 150 ns",
            at_most("record_enabled/telemetry_steady", 150.0),
        ),
        BenchRow::new(
            "enabled `record_run`, worker idle, minus timer",
            "≤ 150 ns",
            median("record_enabled_idle_worker/telemetry")
                .zip(median("record_enabled_idle_worker/timer_only"))
                .map(|(record, timer)| {
                    (format_ns(record - timer), verdict(record - timer <= 150.0))
                }),
        ),
        BenchRow::new(
            "enabled `record_run`, accepted, two threads, per record per thread",
            "≤ 150 ns",
            at_most("record_enabled_accepted/telemetry_two_threads", 150.0),
        ),
        BenchRow::new(
            "enabled `record_run`, back to back, two threads (mostly dropped)",
            "≤ 150 ns",
            at_most("record_enabled_two_threads/telemetry", 150.0),
        ),
        BenchRow::new(
            "vs OpenTelemetry emit: ours accepted, theirs back to back (none dropped)",
            "faster",
            faster(
                "record_enabled_accepted/telemetry",
                "record_enabled/otel_steady",
            ),
        ),
        BenchRow::new(
            "vs OpenTelemetry emit, one record at a time (our worker idle)",
            "faster",
            faster(
                "record_enabled_idle_worker/telemetry",
                "record_enabled_idle_worker/otel",
            ),
        ),
        BenchRow::new(
            "vs OpenTelemetry emit, back to back (not like for like: see the drops)",
            "faster",
            faster(
                "record_enabled/telemetry_steady",
                "record_enabled/otel_steady",
            )
            .map(|(measured, _)| (measured, "info")),
        ),
        BenchRow::new(
            "vs OpenTelemetry emit, two threads (not like for like: see the drops)",
            "faster",
            faster(
                "record_enabled_two_threads/telemetry",
                "record_enabled_two_threads/otel",
            )
            .map(|(measured, _)| (measured, "info")),
        ),
        BenchRow::new(
            "end to end, memory buffer → null transport",
            "≥ 1,000,000 events/s",
            per_second("throughput_memory/record_to_null_transport")
                .map(|rate| (format!("{rate:.0} events/s"), verdict(rate >= 1_000_000.0))),
        ),
        BenchRow::new(
            "end to end, memory, every run different (no run reused)",
            "report",
            per_second("throughput_memory/varied_runs_to_null_transport")
                .map(|rate| (format!("{rate:.0} events/s"), "info")),
        ),
        BenchRow::new(
            "end to end, SQLite spool vs rusqlite batched inserts keyed by event id",
            "≥ 0.5 × baseline",
            spool_vs("rusqlite_baseline_insert")
                .map(|(measured, ratio)| (measured, verdict(ratio >= 0.5))),
        ),
        BenchRow::new(
            "end to end, SQLite spool vs rusqlite inserts into a table with no index",
            "report",
            spool_vs("rusqlite_baseline_insert_unindexed").map(|(measured, _)| (measured, "info")),
        ),
        BenchRow::new(
            "end to end, SQLite spool vs rusqlite inserts plus taking the rows out",
            "report",
            spool_vs("rusqlite_baseline_insert_take").map(|(measured, _)| (measured, "info")),
        ),
        BenchRow::new(
            "memory, 10M-run flood, dead endpoint, buffer of 10,000",
            "peak growth ≤ buffer bound + 2 MiB",
            memory_value("peak_growth_over_idle_kib")
                .zip(memory_value("buffer_bound_kib"))
                .map(|(growth, bound)| {
                    (
                        format!(
                            "{:.1} MiB (buffer bound {:.1} MiB)",
                            growth / 1024.0,
                            bound / 1024.0
                        ),
                        verdict(growth <= bound + SMALL_CONSTANT_KIB),
                    )
                }),
        ),
        BenchRow::new(
            "memory, same flood: heap (RssAnon) after it, over start",
            "report",
            memory_value("rss_anon_after_kib")
                .zip(memory_value("rss_anon_before_start_kib"))
                .map(|(after, before)| (format!("{:.1} MiB", (after - before) / 1024.0), "info")),
        ),
        BenchRow::new(
            "start-up, telemetry off, empty environment",
            "≤ 1 ms",
            at_most("start_disabled/empty_env", 1_000_000.0),
        ),
        BenchRow::new(
            "start-up, telemetry off, process environment and state directory",
            "≤ 1 ms",
            at_most("start_disabled/process_env_state_dir", 1_000_000.0),
        ),
        BenchRow::new(
            "`flowkit telemetry status`, wall time (`flowkit --version` alone)",
            "report",
            median("flowkit_command/telemetry_status")
                .zip(median("flowkit_command/version"))
                .map(|(status, version)| {
                    (
                        format!("{} ({})", format_ns(status), format_ns(version)),
                        "info",
                    )
                }),
        ),
        BenchRow::new(
            "flow run overhead, one run at a time (on − off)",
            "≤ 10 µs (1 ms / 100)",
            median("flow_run/on_paced")
                .zip(median("flow_run/off_paced"))
                .map(|(on, off)| (format_ns(on - off), verdict(on - off <= 10_000.0))),
        ),
        BenchRow::new(
            "flow run overhead, back to back (on − off)",
            "≤ 10 µs (1 ms / 100)",
            median("flow_run/on")
                .zip(median("flow_run/off"))
                .map(|(on, off)| (format_ns(on - off), verdict(on - off <= 10_000.0))),
        ),
    ];
    rows.extend(process_cpu_rows(target_dir));
    rows.extend(collector_ingest_rows(target_dir));
    rows.extend([
        BenchRow::new(
            "scrubber, `run` event",
            "report",
            median("scrub_check_json/run_event").map(|ns| (format_ns(ns), "info")),
        ),
        BenchRow::new(
            "scrubber, `sdk_usage` summary",
            "report",
            median("scrub_check_json/summary_event").map(|ns| (format_ns(ns), "info")),
        ),
        BenchRow::new(
            "delivery of 100 events, HTTPS on loopback, connection kept",
            "report",
            median("send_100/https_keep_alive").map(|ns| (format_ns(ns), "info")),
        ),
        BenchRow::new(
            "delivery of 100 events, HTTPS on loopback, new connection (a process's first)",
            "report",
            median("send_100/https_new_connection").map(|ns| (format_ns(ns), "info")),
        ),
        BenchRow::new(
            "delivery of 100 events, offline file export (appended, not synced)",
            "report",
            median("send_100/file").map(|ns| (format_ns(ns), "info")),
        ),
    ]);
    rows
}

/// One value of a benchmark's note.
fn note_value(note: &[(String, f64)], key: &str) -> Option<f64> {
    note.iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| *value)
}

/// The rows of the process CPU benchmark: telemetry's share of flowkit's whole-process CPU,
/// from the note `process_cpu::run` left.
fn process_cpu_rows(target_dir: &std::path::Path) -> Vec<BenchRow> {
    let note = bench_note_values(target_dir, process_cpu::NOTE);
    let value = |key: &str| note_value(&note, key);
    let micros = |us: f64| format!("{us:.2} µs");
    let millis = |us: f64| format!("{:.2} ms", us / 1e3);
    // Telemetry's CPU per flow run (on − off): the median of the pairs, a confidence interval
    // for it, the smallest and largest pair, and whether every event of every telemetry-on
    // process reached the export: a process that delivered less did less work, so its CPU
    // cannot pass.
    let measured = |prefix: &str, unit: &dyn Fn(f64) -> String| {
        let per_run_us =
            |statistic: &str| value(&format!("{prefix}telemetry_cpu_per_run_{statistic}_us"));
        let (median, min, max) = (
            per_run_us("median")?,
            per_run_us("min")?,
            per_run_us("max")?,
        );
        let interval = per_run_us("ci_low")
            .zip(per_run_us("ci_high"))
            .zip(value(&format!("{prefix}telemetry_cpu_per_run_ci_coverage")))
            .filter(|((low, high), coverage)| {
                !low.is_nan() && !high.is_nan() && !coverage.is_nan()
            });
        let pairs = value(&format!("{prefix}pairs"))?;
        let expected = value(&format!("{prefix}exported_expected"))?;
        let fewest = value(&format!("{prefix}exported_min"))?;
        let most = value(&format!("{prefix}exported_max"))?;
        let exported = if fewest == most {
            format!("{most:.0} of {expected:.0} events exported by each")
        } else {
            format!("{fewest:.0} to {most:.0} of {expected:.0} events exported")
        };
        let interval_text = match interval {
            Some(((low, high), coverage)) => format!(
                "{:.1}% CI {} to {}, ",
                coverage * 100.0,
                unit(low),
                unit(high)
            ),
            None => String::new(),
        };
        Some((
            interval.map(|((low, high), _)| (low, high)),
            format!(
                "{} ({interval_text}pairs {} to {}, {pairs:.0} pairs); {exported}",
                unit(median),
                unit(min),
                unit(max)
            ),
            fewest == expected && most == expected,
        ))
    };
    let load = value("load_before")
        .zip(value("load_after"))
        .map(|(before, after)| format!("; load average {before:.2} before, {after:.2} after"))
        .unwrap_or_default();
    let instructions = if value("callgrind_skipped").is_some() {
        Some(("skipped: valgrind not installed".to_owned(), "info"))
    } else {
        value("callgrind_per_run")
            .zip(value("callgrind_start_stop"))
            .zip(value("callgrind_exported"))
            .map(|((per_run, start_stop), exported)| {
                (
                    format!(
                        "{per_run:.0} per flow run, of which start and stop {:.0} ({:.2} million a process); {exported:.0} events exported",
                        start_stop / f64::from(process_cpu::RUNS),
                        start_stop / 1e6
                    ),
                    "info",
                )
            })
    };
    // What the first process in a new home adds: creating the state file and the spool, the
    // difference between the two start-and-stop medians, spread over the runs of a process.
    let first_process = value("telemetry_cpu_per_run_median_us")
        .zip(value("start_stop_telemetry_cpu_per_process_median_ms"))
        .zip(value("start_stop_used_telemetry_cpu_per_process_median_ms"))
        .map(|((per_run_us, new_ms), used_ms)| {
            let extra_us = (new_ms - used_ms) * 1e3 / f64::from(process_cpu::RUNS);
            (
                format!(
                    "{:.2} µs ({per_run_us:.2} µs above, and {extra_us:.2} µs a run for the {:.2} ms that a new home's start and stop take beyond a used one's)",
                    per_run_us + extra_us,
                    new_ms - used_ms
                ),
                "info",
            )
        });
    vec![
        BenchRow::new(
            &format!(
                "process CPU per flow run, {} runs of about 2 ms, a used home, SQLite spool → file export (on − off, getrusage)",
                process_cpu::RUNS
            ),
            &format!("≤ {} µs, 95% CI", process_cpu::TARGET_US),
            measured("", &micros).map(|(interval, text, all_exported)| {
                (
                    format!("{text}{load}"),
                    interval_verdict(interval, process_cpu::TARGET_US, all_exported),
                )
            }),
        ),
        BenchRow::new(
            &format!(
                "process CPU per flow run, {} runs, the first process in a new home (median, derived)",
                process_cpu::RUNS
            ),
            "report",
            first_process,
        ),
        BenchRow::new(
            "process CPU, telemetry's start and stop alone, a new home (one run per process, on − off)",
            "report",
            // One run per process: the figures are per process.
            measured("start_stop_", &millis).map(|(_, text, _)| (text, "info")),
        ),
        BenchRow::new(
            "process CPU, telemetry's start and stop alone, a used home (one run per process, on − off)",
            "report",
            measured("start_stop_used_", &millis).map(|(_, text, _)| (text, "info")),
        ),
        BenchRow::new(
            &format!(
                "user-space instructions per flow run, {} runs, a used home (callgrind, on − off)",
                process_cpu::RUNS
            ),
            "report",
            instructions,
        ),
    ]
}

/// The verdict on a confidence interval against an upper target: pass when all of it is within
/// the target, a miss when all of it is above, not settled when it straddles the target (more
/// pairs, or a quieter machine, would decide). A run that did not deliver every event misses.
fn interval_verdict(interval: Option<(f64, f64)>, target: f64, all_exported: bool) -> &'static str {
    match interval {
        _ if !all_exported => "MISS",
        Some((_, high)) if high <= target => "pass",
        Some((low, _)) if low > target => "MISS",
        _ => "not settled",
    }
}

/// The rows of the collector's ingest benchmark (issue 14): its rate over HTTPS against plain
/// rusqlite inserting the same rows in the same run, and the latency of a batch under that
/// load, and the same through one and two collectors on PostgreSQL against a `COPY` of the same
/// rows, from the note the benchmark left. Rates are the medians of its rounds.
fn collector_ingest_rows(target_dir: &std::path::Path) -> Vec<BenchRow> {
    let note = bench_note_values(target_dir, COLLECTOR_INGEST_NOTE);
    let value = |key: &str| note_value(&note, key);
    let against_baseline = |key: &str| {
        let (rate, baseline) = value(key).zip(value("baseline_events_per_second"))?;
        let ratio = rate / baseline;
        Some((
            format!("{rate:.0} vs {baseline:.0} events/s ({ratio:.2}x)"),
            ratio,
        ))
    };
    let mut rows = vec![
        BenchRow::new(
            "collector ingest over HTTPS (gzip, batches of 100, 8 clients) vs rusqlite inserting the same rows, a transaction per batch",
            "≥ 0.5 × baseline",
            against_baseline("collector_events_per_second")
                .map(|(measured, ratio)| (measured, verdict(ratio >= 0.5))),
        ),
        BenchRow::new(
            "collector ingest, latency of a 100-event batch under that load",
            "report",
            value("latency_p50_ms")
                .zip(value("latency_p99_ms"))
                .map(|(p50, p99)| (format!("p50 {p50:.1} ms, p99 {p99:.1} ms"), "info")),
        ),
        BenchRow::new(
            "collector's SQLite store alone, one batch of 100 per write, vs the same baseline",
            "report",
            against_baseline("store_alone_events_per_second")
                .map(|(measured, _)| (measured, "info")),
        ),
    ];
    // The PostgreSQL half of the same run: its own server, fsync and synchronous_commit on.
    let skipped = value("postgres_skipped").is_some();
    let skipped_or = |measured: Option<(String, &'static str)>| {
        if skipped {
            Some(("skipped: no PostgreSQL server binaries".to_owned(), "?"))
        } else {
            measured
        }
    };
    let against_copy = |key: &str| {
        let (rate, copy) = value(key).zip(value("postgres_copy_events_per_second"))?;
        let ratio = rate / copy;
        Some((
            format!("{rate:.0} vs {copy:.0} events/s ({ratio:.2}x)"),
            ratio,
        ))
    };
    let latency = |prefix: &str| {
        value(&format!("{prefix}_latency_p50_ms"))
            .zip(value(&format!("{prefix}_latency_p99_ms")))
            .map(|(p50, p99)| (format!("p50 {p50:.1} ms, p99 {p99:.1} ms"), "info"))
    };
    rows.extend([
        BenchRow::new(
            "collector ingest on PostgreSQL, 1 collector (same clients and batches) vs a binary COPY per batch of the same rows, one connection",
            "≥ 0.5 × COPY",
            skipped_or(
                against_copy("postgres_one_collector_events_per_second")
                    .map(|(measured, ratio)| (measured, verdict(ratio >= 0.5))),
            ),
        ),
        BenchRow::new(
            "collector ingest on PostgreSQL, 2 collectors on one database (4 clients each) vs the same COPY",
            "≥ 0.5 × COPY",
            skipped_or(
                against_copy("postgres_two_collectors_events_per_second")
                    .map(|(measured, ratio)| (measured, verdict(ratio >= 0.5))),
            ),
        ),
        BenchRow::new(
            "collector ingest on PostgreSQL, latency of a 100-event batch, 1 collector / 2 collectors",
            "report",
            skipped_or(latency("postgres_one_collector").zip(latency("postgres_two_collectors")).map(
                |((one, _), (two, _))| (format!("{one} / {two}"), "info"),
            )),
        ),
        BenchRow::new(
            "binary COPY per batch from 8 connections at once, vs the same COPY from one",
            "report",
            skipped_or(
                against_copy("postgres_copy_8_connections_events_per_second")
                    .map(|(measured, _)| (measured, "info")),
            ),
        ),
    ]);
    rows
}

/// Prints the comparison table (Markdown, ready for docs/performance.md) on standard output.
#[allow(clippy::print_stdout)]
fn print_bench_table(rows: Vec<BenchRow>) {
    println!("\n| benchmark | target | measured (median) | verdict |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.target, row.measured, row.verdict
        );
    }
}

/// Prints what the benchmarks noted that criterion does not record.
fn print_bench_notes(notes_dir: &std::path::Path) {
    let mut notes: Vec<_> = std::fs::read_dir(notes_dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    notes.sort();
    for path in notes {
        print_bench_note(&path);
    }
}

#[allow(clippy::print_stdout)]
fn print_bench_note(path: &std::path::Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        println!("\n{}:", path.display());
        for line in text.lines() {
            println!("  {line}");
        }
    }
}
