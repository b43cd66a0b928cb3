//! Damage: damaged files moved aside, invalid rows dropped, unusable locations refused.

use super::*;

/// A valid spool file holding some events, as bytes, with its log folded in.
pub(super) fn spool_file_bytes() -> Vec<u8> {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    spool.append(encoded_events(200)).unwrap();
    drop(spool);
    // A closing spool leaves a small log for the next process; fold it into the file here.
    dir.raw()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    std::fs::read(dir.path()).unwrap()
}

#[test]
fn damaged_files_are_moved_aside_and_replaced() {
    let valid = spool_file_bytes();
    assert!(valid.len() > 16 * 4096, "{}", valid.len());
    let mut garbled = valid.clone();
    for byte in &mut garbled[4096..] {
        *byte ^= 0x5a;
    }
    let random: Vec<u8> = (0..20_000_u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let cases: [(&str, Vec<u8>); 7] = [
        ("text", b"this is not a database, it is a note\n".to_vec()),
        ("random bytes", random),
        ("truncated inside the header", valid[..50].to_vec()),
        ("truncated to the header", valid[..100].to_vec()),
        ("truncated to the first page", valid[..4096].to_vec()),
        ("truncated to half", valid[..valid.len() / 2].to_vec()),
        ("pages overwritten", garbled),
    ];
    for (case, bytes) in cases {
        let dir = SpoolDir::new();
        std::fs::write(dir.path(), &bytes).unwrap();
        let spool = SqliteSpool::open(dir.path(), SpoolLimits::default())
            .unwrap_or_else(|error| panic!("{case}: {error}"));
        let recovery = spool
            .recovery()
            .unwrap_or_else(|| panic!("{case}: no recovery"));
        assert_eq!(recovery.damaged, dir.path(), "{case}");
        let moved_name = recovery.moved_to.file_name().unwrap().to_str().unwrap();
        let seconds = moved_name
            .strip_prefix(&format!("{SPOOL_FILE_NAME}.corrupt-"))
            .unwrap_or_else(|| panic!("{case}: {moved_name}"));
        let seconds: u64 = seconds.parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(seconds) < 60, "{case}: {seconds}");
        assert_eq!(recovery.moved_to.parent(), dir.path().parent(), "{case}");
        assert!(
            std::fs::read(&recovery.moved_to).unwrap() == bytes,
            "{case}: the damaged file is moved as it was, unchanged"
        );
        let message = recovery.to_string();
        for path in [&recovery.damaged, &recovery.moved_to] {
            assert!(
                message.contains(&path.display().to_string()),
                "{case}: {message}"
            );
        }
        // The new spool works, and is healthy for the next process.
        let events = encoded_events(3);
        spool.append(events.clone()).unwrap();
        assert_eq!(
            ids(&spool.claim(10).unwrap().unwrap().events),
            ids(&events),
            "{case}"
        );
        drop(spool);
        dir.open(SpoolLimits::default());
    }
}

#[test]
fn a_second_recovery_in_the_same_second_gets_its_own_name() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let mut moved = Vec::new();
    for _ in 0..3 {
        // The log a closed spool leaves would be replayed over the damage (its pages include
        // the first): damage the file alone, as a log already folded in leaves it.
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.dir.path().join(format!("{SPOOL_FILE_NAME}{suffix}")));
        }
        std::fs::write(dir.path(), b"not a database, again").unwrap();
        let spool = dir.open_at(SpoolLimits::default(), &clock);
        moved.push(spool.recovery().unwrap().moved_to.clone());
    }
    let names: Vec<&str> = moved
        .iter()
        .map(|path| path.file_name().unwrap().to_str().unwrap())
        .collect();
    let stem = format!(
        "{SPOOL_FILE_NAME}.corrupt-{}",
        clock.0.load(Ordering::SeqCst)
    );
    assert_eq!(
        names,
        [stem.clone(), format!("{stem}-1"), format!("{stem}-2")]
    );
}

#[test]
fn invalid_rows_are_deleted_and_counted_never_sent() {
    let dir = SpoolDir::new();
    let spool = dir.open(SpoolLimits::default());
    let events = encoded_events(6);
    spool.append(events.clone()).unwrap();
    let other = encoded_events(1).remove(0);
    let raw = dir.raw();
    // (what damaged the row, the update)
    let damage = [
        (
            "not JSON",
            "UPDATE events SET json = '{\"event_id\":' WHERE event_id = ?1",
        ),
        (
            "JSON of another event",
            "UPDATE events SET json = ?2 WHERE event_id = ?1",
        ),
        (
            "not an event",
            "UPDATE events SET json = '{\"x\":1}' WHERE event_id = ?1",
        ),
        (
            "a blob",
            "UPDATE events SET json = x'00ff' WHERE event_id = ?1",
        ),
        (
            "an id that is no id",
            "UPDATE events SET event_id = 'nope' WHERE event_id = ?1",
        ),
    ];
    for (index, (case, sql)) in damage.iter().enumerate() {
        let id = events[index].id().to_string();
        let changed = if sql.contains("?2") {
            raw.execute(sql, rusqlite::params![id, other.json()])
        } else {
            raw.execute(sql, rusqlite::params![id])
        };
        assert_eq!(changed.unwrap(), 1, "{case}");
    }
    let claim = spool.claim(10).unwrap().unwrap();
    assert_eq!(
        ids(&claim.events),
        ids(&events[5..]),
        "only the intact event is sent"
    );
    let stats = spool.stats().unwrap();
    assert_eq!((stats.pending, stats.dropped_invalid), (1, 5));
    assert_totals_match(&dir, &spool);

    // A claim keeps looking past invalid rows until it is full.
    spool.acknowledge(claim.id).unwrap();
    let events = encoded_events(4);
    spool.append(events.clone()).unwrap();
    raw.execute(
        "UPDATE events SET json = 'garbage' WHERE event_id IN (?1, ?2)",
        rusqlite::params![events[0].id().to_string(), events[1].id().to_string()],
    )
    .unwrap();
    let claim = spool.claim(2).unwrap().unwrap();
    assert_eq!(ids(&claim.events), ids(&events[2..]));
    assert_eq!(spool.stats().unwrap().dropped_invalid, 7);
    assert_totals_match(&dir, &spool);
}

#[test]
fn unusable_locations_fail_with_a_message_naming_the_file() {
    let dir = SpoolDir::new();
    let cases = [
        (
            "a missing directory",
            dir.dir.path().join("missing").join(SPOOL_FILE_NAME),
        ),
        ("a directory", dir.dir.path().to_path_buf()),
        // procfs refuses new files even to root, unlike a directory without write permission.
        (
            "a read-only file system",
            PathBuf::from("/proc/telemetry-spool-test.sqlite3"),
        ),
    ];
    for (case, path) in cases {
        let error = SqliteSpool::open(&path, SpoolLimits::default()).unwrap_err();
        assert!(
            matches!(error, SpoolError::Open { .. }),
            "{case}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{case}: {message}"
        );
        assert!(
            message.starts_with("cannot open the telemetry spool"),
            "{case}: {message}"
        );
    }
    assert!(dir.dir.path().is_dir(), "the directory was left alone");
}
