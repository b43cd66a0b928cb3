//! The SQLite spool across real processes: writers killed with SIGKILL mid-write, two processes
//! draining one file or adding to one ledger, a reader while another process holds the write
//! lock, claims left by a process that ends in order or is killed, and a file system that fills
//! up or turns read-only.
//!
//! Each child process is this test binary run again with one test selected by exact name
//! (`--exact child_… --nocapture`), which works the same under `cargo test` and
//! `cargo nextest run`. A `child_…` test returns at once unless its environment variable is
//! set, so in a normal run it passes without doing anything.

// Test helpers may panic: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use telemetry_buffer::{
    BUSY_TIMEOUT, Buffer, BufferError, DeliveryLedger, SPOOL_FILE_NAME, SpoolError, SpoolLimits,
    SqliteSpool,
};
use telemetry_model::{Event, EventId};
use telemetry_testkit::fixtures::encoded_events;

const WRITER_PATH: &str = "SPOOL_TEST_WRITER_PATH";
const DRAINER_PATH: &str = "SPOOL_TEST_DRAINER_PATH";
const DRAINER_OUTPUT: &str = "SPOOL_TEST_DRAINER_OUTPUT";
const DRAINER_BATCH: &str = "SPOOL_TEST_DRAINER_BATCH";
const SMALL_DISK_DIR: &str = "SPOOL_TEST_SMALL_DISK_DIR";
const LEDGER_PATH: &str = "SPOOL_TEST_LEDGER_PATH";
const LOCK_PATH: &str = "SPOOL_TEST_LOCK_PATH";
const CLAIMER_PATH: &str = "SPOOL_TEST_CLAIMER_PATH";

/// Limits that the crash test never reaches, so every committed event must still be there.
fn roomy() -> SpoolLimits {
    SpoolLimits {
        max_events: 10_000_000,
        max_bytes: u64::MAX,
        ..SpoolLimits::default()
    }
}

/// This test binary, run again with only the test `name` selected.
fn child(name: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", name, "--nocapture"]);
    command
}

/// Kills the child if the test fails before it does, so no process outlives the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe to its end on another thread, so the child never blocks on a full pipe.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Collects the ids a writer reports as committed, and signals once when the first arrives.
/// A line cut off by the kill has no newline and is not a report.
fn read_reports(
    pipe: impl Read + Send + 'static,
    first: mpsc::Sender<()>,
) -> JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut reported = Vec::new();
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line);
            if let Some(id) = text
                .strip_prefix("committed ")
                .and_then(|rest| rest.strip_suffix('\n'))
            {
                reported.push(id.to_owned());
                let _ = first.send(());
            }
            line.clear();
        }
        reported
    })
}

/// Reads a child's output until the line `wanted` (the test harness prints lines of its own
/// first); false when the output ends without it.
fn wait_for_line(output: &mut impl BufRead, wanted: &str) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match output.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.trim_end() == wanted => return true,
            Ok(_) => {}
        }
    }
}

fn ids_in_spool(path: &Path) -> HashSet<String> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut select = connection.prepare("SELECT event_id FROM events").unwrap();
    select
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn integrity(path: &Path) -> String {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

/// The event ids in a file of events, one JSON object a line, in order.
fn ids_in_jsonl(path: &Path) -> Vec<EventId> {
    BufReader::new(File::open(path).unwrap())
        .lines()
        .map(|line| {
            let event: Event = serde_json::from_str(&line.unwrap()).unwrap();
            event.event_id
        })
        .collect()
}

/// Claims everything, writes each event as a JSON line to `output`, then acknowledges.
fn drain_into(spool: &SqliteSpool, batch: usize, output: &Path) -> usize {
    let mut file = BufWriter::new(File::create(output).unwrap());
    let mut drained = 0;
    while let Some(claim) = spool.claim(batch).unwrap() {
        for event in &claim.events {
            writeln!(file, "{}", event.json()).unwrap();
        }
        // On disk before the acknowledgement: a crash in between sends twice, never loses.
        file.flush().unwrap();
        file.get_ref().sync_data().unwrap();
        drained += claim.events.len();
        spool.acknowledge(claim.id).unwrap();
    }
    drained
}

#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(WRITER_PATH) else {
        return;
    };
    let spool = SqliteSpool::open(&path, roomy()).unwrap();
    let mut stdout = std::io::stdout().lock();
    // Bounded in case nobody kills it; it also stops when the parent stops reading.
    for _ in 0..100_000 {
        let events = encoded_events(25);
        spool.append(events.clone()).unwrap();
        let mut report = String::new();
        for event in &events {
            report.push_str(&format!("committed {}\n", event.id()));
        }
        stdout.write_all(report.as_bytes()).unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn killed_writers_never_lose_or_damage_a_committed_batch() {
    const ROUNDS: u64 = 20;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPOOL_FILE_NAME);
    let mut committed: Vec<String> = Vec::new();
    let mut rounds_with_commits = 0;
    for round in 0..ROUNDS {
        // Kill times spread over 5..150 ms. Most rounds count from the writer's first commit,
        // so they land in its write loop however slowly it started; every fifth counts from
        // the start, so it may land while the writer opens (or creates) the file.
        let delay = Duration::from_millis(5 + (round * 47) % 146);
        let from_start = round % 5 == 0;
        let mut writer = KillOnDrop(
            child("child_writer")
                .env(WRITER_PATH, &path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (first_commit, committed_once) = mpsc::channel();
        let stdout = read_reports(writer.0.stdout.take().unwrap(), first_commit);
        let stderr = read_all(writer.0.stderr.take().unwrap());
        if !from_start {
            // A signal, not a sleep: the reader says when the first report arrives.
            let first = committed_once.recv_timeout(Duration::from_secs(60));
            assert!(first.is_ok(), "round {round}: the writer never committed");
        }
        // The point of this test is to kill at an arbitrary moment, not to wait for anything.
        std::thread::sleep(delay);
        writer.0.kill().unwrap();
        let status = writer.0.wait().unwrap();
        let (reported, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        assert!(
            status.code().is_none(),
            "round {round}: the writer ended by itself ({status}) before the kill: {stderr}"
        );
        if !reported.is_empty() {
            rounds_with_commits += 1;
        }
        committed.extend(reported);

        let spool = SqliteSpool::open(&path, roomy()).unwrap();
        assert_eq!(spool.recovery(), None, "round {round}");
        drop(spool);
        assert_eq!(integrity(&path), "ok", "round {round}");
        let held = ids_in_spool(&path);
        let missing: Vec<&String> = committed.iter().filter(|id| !held.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "round {round} (killed after {delay:?}): {} committed events are missing, such as {:?}",
            missing.len(),
            missing.first()
        );
    }
    assert!(
        rounds_with_commits >= ROUNDS * 4 / 5,
        "only {rounds_with_commits} of {ROUNDS} writers committed anything before the kill"
    );

    let spool = SqliteSpool::open(&path, roomy()).unwrap();
    assert_eq!(spool.stats().unwrap().dropped_total(), 0);
    let output = dir.path().join("delivered.jsonl");
    let drained = drain_into(&spool, 500, &output);
    assert_eq!(spool.stats().unwrap().pending, 0);
    let delivered = ids_in_jsonl(&output);
    assert_eq!(delivered.len(), drained);
    let mut times: HashMap<String, usize> = HashMap::new();
    for id in &delivered {
        *times.entry(id.to_string()).or_default() += 1;
    }
    assert!(
        times.values().all(|&n| n == 1),
        "an event was delivered twice"
    );
    for id in &committed {
        assert_eq!(
            times.get(id),
            Some(&1),
            "committed event {id} was not delivered"
        );
    }
    eprintln!(
        "{} events committed and reported by {ROUNDS} killed writers, {drained} delivered, in {:?}",
        committed.len(),
        started.elapsed()
    );
}

#[test]
fn child_drainer() {
    let (Some(path), Some(output), Some(batch)) = (
        std::env::var_os(DRAINER_PATH),
        std::env::var_os(DRAINER_OUTPUT),
        std::env::var(DRAINER_BATCH).ok(),
    ) else {
        return;
    };
    let spool = SqliteSpool::open(path, SpoolLimits::default()).unwrap();
    // Start together with the other drainer: the parent writes a line to both at once.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    drain_into(&spool, batch.parse().unwrap(), Path::new(&output));
}

#[test]
fn two_processes_draining_one_spool_deliver_every_event_once() {
    const EVENTS: usize = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPOOL_FILE_NAME);
    let events = encoded_events(EVENTS);
    SqliteSpool::open(&path, SpoolLimits::default())
        .unwrap()
        .append(events.clone())
        .unwrap();

    let outputs: Vec<PathBuf> = (0..2)
        .map(|index| dir.path().join(format!("drainer-{index}.jsonl")))
        .collect();
    let mut drainers: Vec<KillOnDrop> = outputs
        .iter()
        .zip(["7", "13"])
        .map(|(output, batch)| {
            KillOnDrop(
                child("child_drainer")
                    .env(DRAINER_PATH, &path)
                    .env(DRAINER_OUTPUT, output)
                    .env(DRAINER_BATCH, batch)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    for drainer in &mut drainers {
        drainer.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for drainer in &mut drainers {
        let stderr = read_all(drainer.0.stderr.take().unwrap());
        let status = drainer.0.wait().unwrap();
        assert!(status.success(), "{status}: {}", stderr.join().unwrap());
    }

    let delivered: Vec<Vec<EventId>> = outputs.iter().map(|output| ids_in_jsonl(output)).collect();
    for (index, ids) in delivered.iter().enumerate() {
        assert!(!ids.is_empty(), "drainer {index} delivered nothing");
    }
    let split: Vec<usize> = delivered.iter().map(Vec::len).collect();
    eprintln!("{EVENTS} events drained by two processes at once, split {split:?}");
    let all = delivered.concat();
    let unique: HashSet<EventId> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "an event was delivered twice");
    assert_eq!(
        unique,
        events
            .iter()
            .map(|event| event.id())
            .collect::<HashSet<_>>()
    );
    let spool = SqliteSpool::open(&path, SpoolLimits::default()).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 0);
}

#[test]
fn child_on_a_small_file_system() {
    let Some(dir) = std::env::var_os(SMALL_DISK_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let path = dir.join(SPOOL_FILE_NAME);
    let spool = SqliteSpool::open(&path, roomy()).unwrap();
    let mut stored = 0;
    let error = loop {
        match spool.append(encoded_events(20)) {
            Ok(()) => stored += 20,
            Err(error) => break error,
        }
        assert!(stored < 100_000, "the small file system never filled up");
    };
    assert!(stored > 0);
    let BufferError::Storage(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("full"), "{message}");
    assert_eq!(
        spool.stats().unwrap().pending,
        stored,
        "the failed batch left nothing behind"
    );
    drop(spool);

    // With the file system read-only, opening fails with a message naming the file.
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(remount.success());
    let error = SqliteSpool::open(&path, roomy()).unwrap_err();
    assert!(matches!(error, SpoolError::ReadOnly { .. }), "{error:?}");
    let read_only = error.to_string();
    assert!(
        read_only.contains(&path.display().to_string()),
        "{read_only}"
    );
    assert_eq!(integrity(&path), "ok");
    assert_eq!(ids_in_spool(&path).len(), stored);
    println!("full: {message}");
    println!("read-only: {read_only}");
}

#[test]
fn a_full_or_read_only_file_system_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A private mount namespace with a 256 KiB file system: a real ENOSPC and a real read-only
    // file system, without touching the machine's mounts. `--map-root-user` makes this work
    // without being root where unprivileged user namespaces are allowed.
    let output = Command::new("unshare")
        .args(["--mount", "--map-root-user", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(dir.path())
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child_on_a_small_file_system", "--nocapture"])
        .env(SMALL_DISK_DIR, dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{stderr}",
        output.status
    );
    let full = stdout
        .lines()
        .find_map(|line| line.strip_prefix("full: "))
        .unwrap_or_else(|| panic!("the child did not run: {stdout}\n{stderr}"));
    let read_only = stdout
        .lines()
        .find_map(|line| line.strip_prefix("read-only: "))
        .unwrap_or_else(|| panic!("the child did not finish: {stdout}\n{stderr}"));
    eprintln!("{full}\n{read_only}");
}

/// How many times each ledger child adds to the ledger.
const LEDGER_ROUNDS: u64 = 200;

#[test]
fn child_ledger_adder() {
    let Some(path) = std::env::var_os(LEDGER_PATH) else {
        return;
    };
    let spool = SqliteSpool::open(path, SpoolLimits::default()).unwrap();
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let mut purged = 0;
    for round in 0..LEDGER_ROUNDS {
        spool
            .update_ledger(&mut |ledger| {
                ledger.delivered += 1;
                ledger.dropped_scrubbed += 3;
            })
            .unwrap();
        spool.append(encoded_events(1)).unwrap();
        if round % 10 == 9 {
            purged += spool.purge().unwrap();
        }
    }
    purged += spool.purge().unwrap();
    println!("purged {purged}");
}

#[test]
fn two_processes_adding_to_one_ledger_keep_every_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPOOL_FILE_NAME);
    SqliteSpool::open(&path, SpoolLimits::default()).unwrap();
    let mut adders: Vec<KillOnDrop> = (0..2)
        .map(|_| {
            KillOnDrop(
                child("child_ledger_adder")
                    .env(LEDGER_PATH, &path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    // Both start at once: the parent writes a line to each.
    for adder in &mut adders {
        adder.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let mut purged = 0;
    for adder in &mut adders {
        let stdout = read_all(adder.0.stdout.take().unwrap());
        let stderr = read_all(adder.0.stderr.take().unwrap());
        let status = adder.0.wait().unwrap();
        let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
        assert!(status.success(), "{status}: {stderr}");
        let reported = stdout
            .lines()
            .find_map(|line| line.strip_prefix("purged "))
            .unwrap_or_else(|| panic!("the child did not run: {stdout}\n{stderr}"));
        purged += reported.parse::<u64>().unwrap();
    }
    let ledger = SqliteSpool::open(&path, SpoolLimits::default())
        .unwrap()
        .ledger()
        .unwrap();
    assert_eq!(ledger.delivered, 2 * LEDGER_ROUNDS);
    assert_eq!(ledger.dropped_scrubbed, 6 * LEDGER_ROUNDS);
    assert_eq!(
        purged,
        2 * LEDGER_ROUNDS,
        "each event appended was purged once"
    );
    assert_eq!(ledger.purged, purged, "every purged event is counted");
}

#[test]
fn child_lock_holder() {
    let Some(path) = std::env::var_os(LOCK_PATH) else {
        return;
    };
    // A plain connection in the middle of a write, as another process's append would be.
    let connection = rusqlite::Connection::open(path).unwrap();
    connection
        .execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE meta SET value = value + 1000 WHERE key = 'delivered';",
        )
        .unwrap();
    println!("locked");
    let mut done = String::new();
    std::io::stdin().read_line(&mut done).unwrap();
    connection.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn status_in_a_new_process_answers_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPOOL_FILE_NAME);
    let written = {
        let spool = SqliteSpool::open(&path, SpoolLimits::default()).unwrap();
        spool.append(encoded_events(3)).unwrap();
        spool
            .update_ledger(&mut |ledger| {
                *ledger = DeliveryLedger {
                    delivered: 5,
                    dropped_rejected: 2,
                    not_before: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_764_338_400)),
                    ..DeliveryLedger::default()
                };
            })
            .unwrap()
    };
    let mut holder = KillOnDrop(
        child("child_lock_holder")
            .env(LOCK_PATH, &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(holder.0.stdout.take().unwrap());
    assert!(
        wait_for_line(&mut stdout, "locked"),
        "the lock holder did not start"
    );

    // This process opened nothing before the lock was taken, as `status` in a new process.
    let started = Instant::now();
    let spool = SqliteSpool::open(&path, SpoolLimits::default())
        .unwrap()
        .with_busy_timeout(Duration::from_millis(100));
    assert_eq!(spool.ledger().unwrap(), written);
    assert_eq!(spool.stats().unwrap().pending, 3);
    let answered = started.elapsed();
    assert!(answered < BUSY_TIMEOUT / 2, "{answered:?}");

    // A write needs the lock: it waits as long as asked, then says the spool is busy.
    let error = spool.append(encoded_events(1)).unwrap_err();
    let BufferError::Storage(message) = &error else {
        panic!("{error:?}")
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("the spool is busy: another process"),
        "{message}"
    );
    assert!(started.elapsed() < BUSY_TIMEOUT, "{:?}", started.elapsed());

    holder.0.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let stderr = read_all(holder.0.stderr.take().unwrap());
    let status = holder.0.wait().unwrap();
    assert!(status.success(), "{status}: {}", stderr.join().unwrap());
    spool.append(encoded_events(1)).unwrap();
    assert_eq!(spool.stats().unwrap().pending, 4);
    assert_eq!(
        spool.ledger().unwrap(),
        written,
        "the other write was rolled back"
    );
}

#[test]
fn child_claimer() {
    let Some(path) = std::env::var_os(CLAIMER_PATH) else {
        return;
    };
    let spool = SqliteSpool::open(path, SpoolLimits::default()).unwrap();
    let claim = spool.claim(3).unwrap().unwrap();
    println!("claimed {}", claim.events.len());
    let mut end = String::new();
    std::io::stdin().read_line(&mut end).unwrap();
    // Returning drops the spool: the end of the process is in order.
}

#[test]
fn a_process_that_ends_in_order_leaves_no_claim_behind() {
    // (how the process that claimed three of five events ends, whether they are claimable at
    // once by the next process, rather than when the lease of 60 seconds runs out)
    let cases = [("returns", true), ("is killed", false)];
    for (ending, claimable) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE_NAME);
        let events = encoded_events(5);
        SqliteSpool::open(&path, SpoolLimits::default())
            .unwrap()
            .append(events.clone())
            .unwrap();
        let mut claimer = KillOnDrop(
            child("child_claimer")
                .env(CLAIMER_PATH, &path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdout = BufReader::new(claimer.0.stdout.take().unwrap());
        assert!(
            wait_for_line(&mut stdout, "claimed 3"),
            "{ending}: the claimer did not claim"
        );
        let stderr = read_all(claimer.0.stderr.take().unwrap());
        if claimable {
            claimer.0.stdin.take().unwrap().write_all(b"end\n").unwrap();
            let status = claimer.0.wait().unwrap();
            assert!(status.success(), "{status}: {}", stderr.join().unwrap());
        } else {
            claimer.0.kill().unwrap();
            claimer.0.wait().unwrap();
        }

        let spool = SqliteSpool::open(&path, SpoolLimits::default()).unwrap();
        let claim = spool.claim(10).unwrap().unwrap();
        let expected = if claimable { &events[..] } else { &events[3..] };
        let claimed: Vec<EventId> = claim.events.iter().map(|event| event.id()).collect();
        let expected: Vec<EventId> = expected.iter().map(|event| event.id()).collect();
        assert_eq!(claimed, expected, "the claiming process {ending}");
    }
}
