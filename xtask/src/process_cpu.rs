//! The process-level CPU benchmark of `cargo xtask bench`: what telemetry costs the whole
//! flowkit process per flow run, at a realistic rate, measured from outside the process.
//!
//! The criterion benchmarks time the recording thread; this one also counts the worker thread,
//! the blocking pool that writes the SQLite spool, the export and the start and stop of
//! telemetry, because all of them are CPU the user's machine spends. It runs the release
//! `flowkit simulate` as a child process with telemetry on and off, alternately, each child in
//! a fresh `FLOWKIT_HOME` with the default SQLite spool and an offline file export, and
//! subtracts.
//!
//! The CPU of a child is the growth of this process's `getrusage(RUSAGE_CHILDREN)` (user plus
//! system time) across spawning and waiting for it: the kernel adds a child's CPU, all its
//! threads included, to that sum when the child is waited for, and nothing else is waited for
//! in between. `/proc/self/stat` (fields 16 and 17, `cutime` and `cstime`) holds the same sums
//! and needs no dependency, but in clock ticks of 10 ms: over 2,000 runs a tick is 5 µs a run,
//! the size of the target itself. getrusage reports microseconds; nix wraps it without unsafe
//! code of ours (the workspace denies it). Reading the child's own `/proc/<pid>/stat` just
//! before it exits would be racy, and `/usr/bin/time` is not everywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The name of the note the benchmark leaves in `<target>/tmp/bench-notes/`.
pub(crate) const NOTE: &str = "process_cpu";

/// Flow runs per process in the main measurement.
pub(crate) const RUNS: u32 = 2_000;

/// How long each task of the simulated flow sleeps: with the extract task cached after the
/// first run, a run takes about 2 ms, a rate at which the worker stores and delivers as it
/// goes (a batch of 100 events every 0.2 s or so) rather than in one burst at exit.
const TASK_MILLIS: u64 = 1;

/// On and off processes in the main measurement, run in pairs whose order alternates, so that
/// a drift of the machine over the minute this takes falls on both sides.
const PAIRS: usize = 7;

/// Pairs of one-run processes: the cost of starting and stopping telemetry alone.
const START_STOP_PAIRS: usize = 15;

/// What one child process cost and left behind.
struct ChildRun {
    cpu: Duration,
    wall: Duration,
    exported_lines: usize,
}

/// Builds the release `flowkit`, measures, and writes the note that the results table reads.
pub(crate) fn run(cargo: &mut Command, target_dir: &Path, notes_dir: &Path) -> anyhow::Result<()> {
    crate::run(
        "process CPU: build flowkit (release)",
        cargo.args([
            "build",
            "--release",
            "--package",
            "flowkit",
            "--bin",
            "flowkit",
        ]),
    )?;
    let flowkit = target_dir
        .join("release")
        .join(format!("flowkit{}", std::env::consts::EXE_SUFFIX));
    let scratch = ScratchDir::create()?;

    eprintln!("\n==> process CPU: flowkit simulate, telemetry on and off");
    // The first processes read the binary from disk and fault its pages in; neither side of a
    // pair should pay for that.
    for telemetry_on in [true, false] {
        run_child(&flowkit, &scratch, "warm-up", 1, telemetry_on)?;
    }
    let start_stop = measure_pairs(&flowkit, &scratch, 1, START_STOP_PAIRS)?;
    let main = measure_pairs(&flowkit, &scratch, RUNS, PAIRS)?;

    let mut note = String::new();
    note.push_str(&format!("runs={RUNS}\ntask_millis={TASK_MILLIS}\n"));
    main.write_note(&mut note, "");
    start_stop.write_note(&mut note, "start_stop_");
    std::fs::create_dir_all(notes_dir)
        .with_context(|| format!("cannot create {}", notes_dir.display()))?;
    let path = notes_dir.join(format!("{NOTE}.txt"));
    std::fs::write(&path, note).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `pairs` processes with telemetry on and as many with it off, `runs` flow runs each.
fn measure_pairs(
    flowkit: &Path,
    scratch: &ScratchDir,
    runs: u32,
    pairs: usize,
) -> anyhow::Result<Measurement> {
    let mut measured = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let label = format!("{runs}-{pair}");
        let (on, off) = if pair % 2 == 0 {
            let on = run_child(flowkit, scratch, &label, runs, true)?;
            (on, run_child(flowkit, scratch, &label, runs, false)?)
        } else {
            let off = run_child(flowkit, scratch, &label, runs, false)?;
            (run_child(flowkit, scratch, &label, runs, true)?, off)
        };
        eprintln!(
            "{runs} runs, pair {}: on {:.1} ms CPU, off {:.1} ms CPU, {} events exported",
            pair + 1,
            millis(on.cpu),
            millis(off.cpu),
            on.exported_lines
        );
        if off.exported_lines != 0 {
            bail!(
                "flowkit with telemetry off exported {} events; expected none",
                off.exported_lines
            );
        }
        measured.push((on, off));
    }
    Ok(Measurement { runs, measured })
}

/// One `flowkit simulate` in a fresh state directory, with its CPU time and its export.
fn run_child(
    flowkit: &Path,
    scratch: &ScratchDir,
    label: &str,
    runs: u32,
    telemetry_on: bool,
) -> anyhow::Result<ChildRun> {
    let side = if telemetry_on { "on" } else { "off" };
    let dir = scratch.path.join(format!("{label}-{side}"));
    let export = dir.join("export");
    std::fs::create_dir_all(&export)
        .with_context(|| format!("cannot create {}", export.display()))?;
    let mut command = Command::new(flowkit);
    command
        .args([
            "simulate",
            "--runs",
            &runs.to_string(),
            "--task-millis",
            &TASK_MILLIS.to_string(),
            "--seed",
            "1",
        ])
        // Only these variables: a `DO_NOT_TRACK` or `FLOWKIT_SDK_TELEMETRY_*` of the caller's
        // shell must not change what is measured. `FLOWKIT_HOME` does not exist yet, so the
        // spool is created by the child, as on a first run.
        .env_clear()
        .env("FLOWKIT_HOME", dir.join("home"))
        .env(
            "FLOWKIT_SDK_TELEMETRY_ENABLED",
            if telemetry_on { "1" } else { "0" },
        )
        .env(
            "FLOWKIT_SDK_TELEMETRY_ENDPOINT",
            format!("file://{}", export.display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let cpu_before = children_cpu()?;
    let started = Instant::now();
    let output = command
        .output()
        .with_context(|| format!("could not start {}", flowkit.display()))?;
    let wall = started.elapsed();
    let cpu = children_cpu()?.saturating_sub(cpu_before);
    if !output.status.success() {
        bail!(
            "flowkit simulate failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let exported_lines = count_lines(&export)?;
    // The spool and the export of one child are a few megabytes; fourteen of them at once
    // would be litter.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ChildRun {
        cpu,
        wall,
        exported_lines,
    })
}

/// User plus system time of every child this process has waited for.
#[cfg(unix)]
fn children_cpu() -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::time::TimeValLike;

    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    Ok(Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
}

#[cfg(not(unix))]
fn children_cpu() -> anyhow::Result<Duration> {
    bail!("the process CPU benchmark needs getrusage, which only Unix has")
}

/// Lines in all the files of an export directory (one file per UTC day).
fn count_lines(export: &Path) -> anyhow::Result<usize> {
    let mut lines = 0;
    for entry in
        std::fs::read_dir(export).with_context(|| format!("cannot list {}", export.display()))?
    {
        let path = entry?.path();
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        lines += bytes.iter().filter(|&&byte| byte == b'\n').count();
    }
    Ok(lines)
}

/// The on and off processes of one measurement.
struct Measurement {
    runs: u32,
    measured: Vec<(ChildRun, ChildRun)>,
}

impl Measurement {
    /// `key=value` lines for the note; `prefix` tells the two measurements apart.
    fn write_note(&self, note: &mut String, prefix: &str) {
        let runs = f64::from(self.runs);
        // Each pair's difference, per flow run: the pairs are what alternate, so the spread
        // of the differences is the spread of the result.
        let per_run_us = sorted(
            self.measured
                .iter()
                .map(|(on, off)| (on.cpu.as_secs_f64() - off.cpu.as_secs_f64()) * 1e6 / runs),
        );
        let per_process_ms = sorted(
            self.measured
                .iter()
                .map(|(on, off)| millis(on.cpu) - millis(off.cpu)),
        );
        let on_ms = sorted(self.measured.iter().map(|(on, _)| millis(on.cpu)));
        let off_ms = sorted(self.measured.iter().map(|(_, off)| millis(off.cpu)));
        let wall_per_run_ms = sorted(self.measured.iter().map(|(on, _)| millis(on.wall) / runs));
        let exported = sorted(self.measured.iter().map(|(on, _)| on.exported_lines as f64));
        let lines = [
            ("pairs", self.measured.len() as f64),
            ("telemetry_cpu_per_run_median_us", median(&per_run_us)),
            ("telemetry_cpu_per_run_min_us", first(&per_run_us)),
            ("telemetry_cpu_per_run_max_us", last(&per_run_us)),
            (
                "telemetry_cpu_per_process_median_ms",
                median(&per_process_ms),
            ),
            ("cpu_on_median_ms", median(&on_ms)),
            ("cpu_off_median_ms", median(&off_ms)),
            ("wall_per_run_on_median_ms", median(&wall_per_run_ms)),
            // Every run is one `run` event, and the process adds one `sdk_usage` summary.
            ("exported_expected", runs + 1.0),
            ("exported_min", first(&exported)),
            ("exported_max", last(&exported)),
        ];
        for (key, value) in lines {
            note.push_str(&format!("{prefix}{key}={value:.3}\n"));
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The median of sorted values (the mean of the middle two for an even count); NaN for none.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

fn first(sorted: &[f64]) -> f64 {
    sorted.first().copied().unwrap_or(f64::NAN)
}

fn last(sorted: &[f64]) -> f64 {
    sorted.last().copied().unwrap_or(f64::NAN)
}

/// A directory of its own under the system's temporary directory, removed when dropped.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("xtask-process-cpu-{}", std::process::id()));
        // A directory left by a killed run with the same process id is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_sorted_values() {
        let check = |values: &[f64], expected: f64| {
            let got = median(values);
            assert!(
                got == expected || (got.is_nan() && expected.is_nan()),
                "median of {values:?}: {got}, expected {expected}"
            );
        };
        check(&[], f64::NAN);
        check(&[3.0], 3.0);
        check(&[1.0, 2.0, 10.0], 2.0);
        check(&[1.0, 2.0, 4.0, 10.0], 3.0);
    }

    #[test]
    fn lines_are_counted_across_the_files_of_an_export() {
        let dir = std::env::temp_dir().join(format!("xtask-count-lines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(count_lines(&dir).unwrap(), 0);
        std::fs::write(dir.join("day-1.jsonl"), "{}\n{}\n").unwrap();
        std::fs::write(dir.join("day-2.jsonl"), "{}\n").unwrap();
        let counted = count_lines(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(counted, 3);
    }
}
