//! The write-ahead log between processes: a closing spool leaves a small log for the next one
//! to replay instead of checkpointing and deleting it (four syncs a process), folds a log grown
//! past its bound into the file, and keeps the log and its index as private as the file.

use super::*;

fn log_path(dir: &SpoolDir) -> PathBuf {
    dir.dir.path().join(format!("{SPOOL_FILE_NAME}-wal"))
}

fn log_len(dir: &SpoolDir) -> Option<u64> {
    std::fs::metadata(log_path(dir)).ok().map(|meta| meta.len())
}

#[test]
fn a_closed_spool_leaves_its_log_and_the_next_replays_it() {
    let dir = SpoolDir::new();
    let events = encoded_events(10);
    {
        let spool = dir.open(SpoolLimits::default());
        spool.append(events.clone()).unwrap();
    }
    let left = log_len(&dir).expect("the log is still there after the spool closed");
    assert!(left > 0, "the log still holds the appended events");
    // What the file alone holds is the header and the empty schema: the events are in the log.
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, 10);
    let claim = spool
        .claim(100)
        .unwrap()
        .expect("the replayed events can be claimed");
    assert_eq!(ids(&claim.events), ids(&events));
}

#[test]
fn a_log_grown_past_its_bound_is_folded_into_the_file_at_close() {
    let dir = SpoolDir::new();
    // About 600 bytes an event: well over the 256 KiB a closing spool leaves.
    let events = encoded_events(1_000);
    {
        let spool = dir.open(SpoolLimits::default());
        spool.append(events.clone()).unwrap();
        assert!(
            log_len(&dir).unwrap() > 256 * 1024,
            "the appends went through the log"
        );
    }
    assert_eq!(
        log_len(&dir).unwrap_or(0),
        0,
        "the log was checkpointed and cut at close"
    );
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, 1_000);
    let claim = spool.claim(1_000).unwrap().unwrap();
    assert_eq!(ids(&claim.events), ids(&events));
}

#[test]
fn a_log_another_connection_reads_is_left_for_a_later_close() {
    let dir = SpoolDir::new();
    let first = dir.open(SpoolLimits::default());
    first.append(encoded_events(1_000)).unwrap();
    // A read transaction held open elsewhere pins the log: the close must not wait for it.
    let reader = dir.raw();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .unwrap();
    let started = Instant::now();
    drop(first);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closing waited {:?} for the reader",
        started.elapsed()
    );
    assert!(log_len(&dir).unwrap() > 256 * 1024, "the log is left whole");
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let spool = dir.open(SpoolLimits::default());
    assert_eq!(spool.stats().unwrap().pending, 1_000);
}

#[cfg(unix)]
#[test]
fn the_file_its_log_and_its_index_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = SpoolDir::new();
    {
        let spool = dir.open(SpoolLimits::default());
        spool.append(encoded_events(3)).unwrap();
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.dir.path().join(format!("{SPOOL_FILE_NAME}{suffix}"));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}
