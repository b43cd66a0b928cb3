//! The process-level CPU benchmark of `cargo xtask bench`: what telemetry costs the whole
//! flowkit process per flow run, at a realistic rate, measured from outside the process.
//!
//! The criterion benchmarks time the recording thread; this one also counts the worker thread,
//! the blocking pool that writes the SQLite spool, the export and the start and stop of
//! telemetry, because all of them are CPU the user's machine spends. It runs the release
//! `flowkit simulate` as child processes with telemetry on and off, in pairs, with the default
//! SQLite spool and an offline file export, and subtracts. A telemetry-on child runs in a copy of
//! a home that an earlier telemetry-on process used (its state file holds a session id, its spool
//! exists), as every process of a user does but the first; what the first process in a new home
//! adds (creating the state file and the spool) is measured apart, with one-run processes in a
//! new home and in a used one. A telemetry-off child runs in a new home, which it never creates:
//! in a used one it would forget the session id, which is not what a process without telemetry
//! costs.
//!
//! The two children of a pair run at the same time, so that both meet the same state of the
//! machine. The CPU of a child is the growth of this process's `getrusage(RUSAGE_CHILDREN)`
//! (user plus system time) across waiting for it: the kernel adds a child's CPU, all its
//! threads included, to that sum when the child is waited for, and the other child of the pair
//! is waited for separately, before or after. `/proc/self/stat` (fields 16 and 17, `cutime`
//! and `cstime`) holds the same sums and needs no dependency, but in clock ticks of 10 ms:
//! over 2,000 runs a tick is 5 µs a run, the size of the target itself. getrusage reports
//! microseconds; nix wraps it without unsafe code of ours (the workspace denies it). Reading
//! the child's own `/proc/<pid>/stat` just before it exits would be racy, and `/usr/bin/time`
//! is not everywhere.
//!
//! On a shared machine single pairs swing by more than the target, so the verdict reads a
//! distribution-free 95% confidence interval for the median of the pairs' differences (the
//! sign test's order statistics) rather than the median alone: pass when the whole interval
//! is within the target, not settled when it straddles the target, a miss when it lies above.
//! When valgrind is installed, callgrind also counts the user-space instructions telemetry
//! adds, a figure the machine's load does not move; the benchmark never needs valgrind.

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

/// The target for telemetry's CPU per flow run, in microseconds.
pub(crate) const TARGET_US: f64 = 5.0;

/// On and off processes in the main measurement, run in pairs, the two of a pair at the same
/// time, so that both meet the same state of the machine (on this shared virtual machine the
/// CPU of identical processes drifts by a quarter within seconds). Fifteen pairs
/// give a confidence interval for the median from the 4th to the 12th smallest difference
/// (96.5%); seven gave only the smallest to the largest (98.4%), which on a shared machine
/// spans several times the target.
const PAIRS: usize = 15;

/// Set to a number of pairs (15 to 400) to measure with more than [`PAIRS`] where there is
/// time: the interval narrows with the square root of the pairs, about 5 s a pair.
const PAIRS_VARIABLE: &str = "XTASK_PROCESS_CPU_PAIRS";

/// The pairs of the main measurement: [`PAIRS`], or what [`PAIRS_VARIABLE`] asks for.
fn pairs() -> anyhow::Result<usize> {
    match std::env::var(PAIRS_VARIABLE) {
        Err(std::env::VarError::NotPresent) => Ok(PAIRS),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(pairs) if (PAIRS..=400).contains(&pairs) => Ok(pairs),
            _ => bail!(
                "{PAIRS_VARIABLE}={text:?} is not valid: expected a whole number from {PAIRS} to 400"
            ),
        },
        Err(_) => bail!(
            "{PAIRS_VARIABLE} is not valid Unicode: expected a whole number from {PAIRS} to 400"
        ),
    }
}

/// The confidence asked of the interval around the median; the order statistics give at
/// least this much (the note records how much).
const CONFIDENCE: f64 = 0.95;

/// Pairs of one-run processes: the cost of starting and stopping telemetry alone, in a new home
/// and in a used one.
const START_STOP_PAIRS: usize = 15;

/// The `FLOWKIT_HOME` a telemetry-on child starts with.
#[derive(Clone, Copy)]
enum Home<'a> {
    /// A directory that does not exist yet: the child creates the state file and the spool, as
    /// the first process after opting in does.
    New,
    /// A copy of this home, which an earlier telemetry-on process used, as every later process
    /// finds its home.
    CopyOf(&'a Path),
}

/// What one child process cost and left behind.
struct ChildRun {
    cpu: Duration,
    wall: Duration,
    exported_lines: usize,
}

/// Builds the release `flowkit`, measures, and writes the note that the results table reads.
pub(crate) fn run(cargo: &mut Command, target_dir: &Path, notes_dir: &Path) -> anyhow::Result<()> {
    let pairs = pairs()?;
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
        start_child(&flowkit, &scratch, "warm-up", 1, telemetry_on, Home::New)?.finish()?;
    }
    let used_home = prepare_used_home(&flowkit, &scratch)?;
    let used = Home::CopyOf(&used_home);
    let load_before = load_average();
    let start_stop = measure_pairs(&flowkit, &scratch, 1, START_STOP_PAIRS, Home::New)?;
    let start_stop_used = measure_pairs(&flowkit, &scratch, 1, START_STOP_PAIRS, used)?;
    let main = measure_pairs(&flowkit, &scratch, RUNS, pairs, used)?;
    let load_after = load_average();
    let instructions = count_instructions(&flowkit, &scratch, &used_home)?;

    let mut note = String::new();
    note.push_str(&format!(
        "runs={RUNS}\ntask_millis={TASK_MILLIS}\nhome=used\n"
    ));
    if let Some((before, after)) = load_before.zip(load_after) {
        note.push_str(&format!("load_before={before:.2}\nload_after={after:.2}\n"));
    }
    main.write_note(&mut note, "");
    start_stop.write_note(&mut note, "start_stop_");
    start_stop_used.write_note(&mut note, "start_stop_used_");
    match instructions {
        Some(counts) => counts.write_note(&mut note),
        None => note.push_str("callgrind_skipped=1\n"),
    }
    std::fs::create_dir_all(notes_dir)
        .with_context(|| format!("cannot create {}", notes_dir.display()))?;
    let path = notes_dir.join(format!("{NOTE}.txt"));
    std::fs::write(&path, note).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The home of one telemetry-on process with one flow run, kept for the children that start
/// in a used home. Its export is checked, so that a home whose process failed to deliver is
/// not copied.
fn prepare_used_home(flowkit: &Path, scratch: &ScratchDir) -> anyhow::Result<PathBuf> {
    let dir = scratch.path.join("used");
    let export = child_dir(&dir, Home::New)?;
    let mut command = Command::new(flowkit);
    simulate_in(&mut command, &dir, &export, 1, true);
    let output = command
        .output()
        .with_context(|| format!("could not start {}", flowkit.display()))?;
    if !output.status.success() {
        bail!(
            "flowkit simulate failed making a used home ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let exported = count_lines(&export)?;
    if exported != 2 {
        bail!("the process that made the used home exported {exported} events; expected 2");
    }
    Ok(dir.join("home"))
}

/// `pairs` processes with telemetry on and as many with it off, `runs` flow runs each.
fn measure_pairs(
    flowkit: &Path,
    scratch: &ScratchDir,
    runs: u32,
    pairs: usize,
    home: Home<'_>,
) -> anyhow::Result<Measurement> {
    let kind = match home {
        Home::New => "new home",
        Home::CopyOf(_) => "used home",
    };
    let mut measured = Vec::with_capacity(pairs);
    for pair in 0..pairs {
        let label = format!("{runs}-{pair}");
        // Both children of a pair run at the same time, so that both meet the same state of
        // the machine; which one starts first alternates.
        let on_first = pair % 2 == 0;
        let start = |telemetry_on: bool| {
            let child_home = if telemetry_on { home } else { Home::New };
            start_child(flowkit, scratch, &label, runs, telemetry_on, child_home)
        };
        let first = start(on_first)?;
        let second = start(!on_first)?;
        let (first, second) = (first.finish()?, second.finish()?);
        let (on, off) = if on_first {
            (first, second)
        } else {
            (second, first)
        };
        eprintln!(
            "{runs} runs, {kind}, pair {}: on {:.1} ms CPU, off {:.1} ms CPU, {} events exported",
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

/// A child started and not yet waited for.
struct StartedChild {
    child: std::process::Child,
    dir: PathBuf,
    started: Instant,
}

/// Starts one `flowkit simulate` in a new home or a copy of a used one, exporting into a new,
/// empty directory; its standard error goes to a file in its directory, so that nothing waits
/// on a pipe while another child is waited for.
fn start_child(
    flowkit: &Path,
    scratch: &ScratchDir,
    label: &str,
    runs: u32,
    telemetry_on: bool,
    home: Home<'_>,
) -> anyhow::Result<StartedChild> {
    let side = if telemetry_on { "on" } else { "off" };
    let dir = scratch.path.join(format!("{label}-{side}"));
    let export = child_dir(&dir, home)?;
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .with_context(|| format!("cannot create {}", stderr_path.display()))?;
    let mut command = Command::new(flowkit);
    simulate_in(&mut command, &dir, &export, runs, telemetry_on);
    command.stderr(stderr);
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("could not start {}", flowkit.display()))?;
    Ok(StartedChild {
        child,
        dir,
        started,
    })
}

impl StartedChild {
    /// Waits for the child and measures it. Its CPU is the growth of `getrusage(RUSAGE_CHILDREN)`
    /// across waiting for it alone: the kernel adds a child's CPU when it is waited for, so a
    /// second child still running (or exited and not yet waited for) is not counted here. Its
    /// wall time runs from its start to the end of this wait.
    fn finish(mut self) -> anyhow::Result<ChildRun> {
        let cpu_before = children_cpu()?;
        let status = self.child.wait().context("waiting for flowkit simulate")?;
        let wall = self.started.elapsed();
        let cpu = children_cpu()?.saturating_sub(cpu_before);
        if !status.success() {
            let stderr = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
            bail!("flowkit simulate failed ({status}): {}", stderr.trim());
        }
        let exported_lines = count_lines(&self.dir.join("export"))?;
        // The spool and the export of one child are a few megabytes; hundreds of them would
        // be litter.
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(ChildRun {
            cpu,
            wall,
            exported_lines,
        })
    }
}

/// Adds the arguments and the environment of the measured `flowkit simulate` to `command`
/// (the flowkit binary itself, or valgrind running it).
fn simulate_in(command: &mut Command, dir: &Path, export: &Path, runs: u32, telemetry_on: bool) {
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
        // shell must not change what is measured. `FLOWKIT_HOME` is a copy of a used home, or
        // does not exist yet, and then the child creates the spool, as on a first run.
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
}

/// Makes a child's directory `dir` with an empty export directory in it (returned) and, for a
/// used home, a copy of that home as `dir/home`; a new home is left for the child to make.
fn child_dir(dir: &Path, home: Home<'_>) -> anyhow::Result<PathBuf> {
    let export = dir.join("export");
    std::fs::create_dir_all(&export)
        .with_context(|| format!("cannot create {}", export.display()))?;
    if let Home::CopyOf(used) = home {
        copy_dir(used, &dir.join("home"))?;
    }
    Ok(export)
}

/// Copies the files of directory `from` into a new directory `to`, and its subdirectories in
/// the same way.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

/// The 1-minute load average, from `/proc/loadavg` (Linux only).
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// User-space instructions of telemetry-on and -off processes, counted by callgrind.
struct InstructionCounts {
    /// (on, off) of a process with [`RUNS`] flow runs.
    main: (u64, u64),
    /// (on, off) of a process with one flow run: starting and stopping telemetry.
    start_stop: (u64, u64),
    /// Events the telemetry-on process with [`RUNS`] runs exported under callgrind.
    exported: usize,
}

impl InstructionCounts {
    fn write_note(&self, note: &mut String) {
        let difference = |(on, off): (u64, u64)| on as f64 - off as f64;
        let lines = [
            ("callgrind_on", self.main.0 as f64),
            ("callgrind_off", self.main.1 as f64),
            ("callgrind_per_run", difference(self.main) / f64::from(RUNS)),
            ("callgrind_start_stop", difference(self.start_stop)),
            ("callgrind_exported", self.exported as f64),
        ];
        for (key, value) in lines {
            note.push_str(&format!("{key}={value:.0}\n"));
        }
    }
}

/// Counts with callgrind what telemetry adds to a process, on and off, with [`RUNS`] runs and
/// with one; `None` (and a message) without valgrind. Instructions do not depend on what
/// else the machine runs, so they tell a change in telemetry's work from a change in load;
/// they leave out the kernel's share (system calls, page faults), which getrusage counts.
fn count_instructions(
    flowkit: &Path,
    scratch: &ScratchDir,
    used_home: &Path,
) -> anyhow::Result<Option<InstructionCounts>> {
    let found = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        eprintln!(
            "\nprocess CPU: valgrind not found; the instruction counts are skipped (install valgrind for a figure the load does not move)"
        );
        return Ok(None);
    }
    eprintln!("\n==> process CPU: user-space instructions under callgrind, telemetry on and off");
    // The four processes mostly sleep, so they run at once.
    let cases = [(RUNS, true), (RUNS, false), (1, true), (1, false)];
    let children = cases
        .iter()
        .map(|&(runs, telemetry_on)| {
            let side = if telemetry_on { "on" } else { "off" };
            let dir = scratch.path.join(format!("callgrind-{runs}-{side}"));
            // As in the main measurement: telemetry on in a used home, off in a new one.
            let home = if telemetry_on {
                Home::CopyOf(used_home)
            } else {
                Home::New
            };
            let export = child_dir(&dir, home)?;
            let mut command = Command::new("valgrind");
            command.args([
                "--tool=callgrind",
                "--trace-children=no",
                &format!(
                    "--callgrind-out-file={}",
                    dir.join("callgrind.out").display()
                ),
            ]);
            command.arg(flowkit);
            simulate_in(&mut command, &dir, &export, runs, telemetry_on);
            let child = command.spawn().context("could not start valgrind")?;
            Ok((child, dir, export))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut counts = Vec::with_capacity(children.len());
    let mut exported = 0;
    for ((child, dir, export), (runs, telemetry_on)) in children.into_iter().zip(cases) {
        let output = child.wait_with_output().context("valgrind")?;
        let log = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            bail!(
                "flowkit simulate under callgrind failed ({}): {}",
                output.status,
                log.trim()
            );
        }
        let instructions = collected_instructions(&log).with_context(|| {
            format!("no instruction count in callgrind's output: {}", log.trim())
        })?;
        if telemetry_on && runs == RUNS {
            exported = count_lines(&export)?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        counts.push(instructions);
    }
    Ok(Some(InstructionCounts {
        main: (counts[0], counts[1]),
        start_stop: (counts[2], counts[3]),
        exported,
    }))
}

/// The total from callgrind's summary line, `==pid== Collected : 12345`.
fn collected_instructions(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let (_, count) = line.split_once("Collected :")?;
        count.trim().parse().ok()
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
        let (ci_low, ci_high, coverage) =
            median_interval(&per_run_us, CONFIDENCE).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        let lines = [
            ("pairs", self.measured.len() as f64),
            ("telemetry_cpu_per_run_median_us", median(&per_run_us)),
            ("telemetry_cpu_per_run_ci_low_us", ci_low),
            ("telemetry_cpu_per_run_ci_high_us", ci_high),
            ("telemetry_cpu_per_run_ci_coverage", coverage),
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

/// A distribution-free confidence interval for the median of the population that `sorted`
/// values were drawn from: the k-th smallest and the k-th largest value, for the largest k with
/// P(B < k) ≤ (1 − confidence) / 2 where B ~ Binomial(n, 1/2) counts the values below the
/// median (the sign test's interval). Returns the bounds and the interval's exact coverage,
/// at least `confidence`; `None` when too few values give that confidence (fewer than 6 for
/// 95%).
fn median_interval(sorted: &[f64], confidence: f64) -> Option<(f64, f64, f64)> {
    let n = sorted.len();
    // P(B ≤ j) for j = 0..=n, from the binomial coefficients C(n, j) / 2^n.
    let mut cumulative = Vec::with_capacity(n + 1);
    let mut coefficient = 1.0_f64;
    let mut sum = 0.0;
    for j in 0..=n {
        sum += coefficient;
        cumulative.push(sum / 2f64.powi(n as i32));
        coefficient = coefficient * (n - j) as f64 / (j + 1) as f64;
    }
    let tail = (1.0 - confidence) / 2.0;
    let k = (1..=n / 2)
        .take_while(|&k| cumulative[k - 1] <= tail)
        .last()?;
    Some((sorted[k - 1], sorted[n - k], 1.0 - 2.0 * cumulative[k - 1]))
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
    fn the_median_interval_is_the_sign_tests() {
        let check = |n: usize, expected: Option<(f64, f64, f64)>| {
            let values: Vec<f64> = (1..=n).map(|value| value as f64).collect();
            let got = median_interval(&values, 0.95);
            let close = |a: f64, b: f64| (a - b).abs() < 5e-4;
            let matches = match (got, expected) {
                (Some(got), Some(expected)) => {
                    close(got.0, expected.0) && close(got.1, expected.1) && close(got.2, expected.2)
                }
                (None, None) => true,
                _ => false,
            };
            assert!(matches, "{n} values: {got:?}, expected {expected:?}");
        };
        // Published tables of the sign test's interval: n = 6 gives the extremes at 96.9%,
        // n = 15 the 4th to the 12th value at 96.5%, n = 25 the 8th to the 18th at 95.7%.
        check(5, None);
        check(6, Some((1.0, 6.0, 0.9688)));
        check(7, Some((1.0, 7.0, 0.9844)));
        check(15, Some((4.0, 12.0, 0.9648)));
        check(25, Some((8.0, 18.0, 0.9567)));
        assert_eq!(
            collected_instructions("==12== Events : Ir\n==12== Collected : 4918520\n"),
            Some(4_918_520)
        );
        assert_eq!(collected_instructions("valgrind: no such tool"), None);
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
