//! The pause marker beside the file: `may_be_paused` says `false` only when no connection's
//! ledger holds a pause in effect.

use super::*;

/// The clock's time `seconds` from now, as the ledger keeps it.
fn in_seconds(clock: &TestClock, seconds: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(clock.0.load(Ordering::SeqCst) + seconds))
}

fn marker(dir: &SpoolDir) -> PathBuf {
    let mut name = dir.path().into_os_string();
    name.push("-paused");
    PathBuf::from(name)
}

#[test]
fn a_pause_one_connection_writes_is_seen_by_another_until_a_later_write_finds_it_over() {
    type SetPause = fn(&mut DeliveryLedger, Option<SystemTime>);
    let pauses: [(&str, SetPause); 2] = [
        ("the server's wait", |ledger, until| {
            ledger.not_before = until
        }),
        ("an open circuit", |ledger, until| {
            ledger.circuit_open_until = until;
        }),
    ];
    for (pause, set) in pauses {
        let dir = SpoolDir::new();
        let clock = TestClock::new();
        // Two processes on one file, both open before the pause is written.
        let writer = dir.open_at(limits(100), &clock);
        let sender = dir.open_at(limits(100), &clock);
        assert!(!sender.may_be_paused(), "{pause}: a new spool");

        let until = in_seconds(&clock, 30);
        writer
            .update_ledger(&mut |ledger| set(ledger, until))
            .unwrap();
        assert!(sender.may_be_paused(), "{pause}: written by the other");
        assert!(writer.may_be_paused(), "{pause}: written by itself");

        // Writes while the pause lasts keep the marker, whoever makes them.
        clock.advance(29);
        sender
            .append_and_record(encoded_events(2), &mut |ledger| ledger.delivered += 1)
            .unwrap();
        assert!(sender.may_be_paused(), "{pause}: still in effect");

        // Over: the next write that changes the ledger removes the marker.
        clock.advance(2);
        assert!(
            sender.may_be_paused(),
            "{pause}: over, but nothing wrote since"
        );
        writer
            .update_ledger(&mut |ledger| ledger.failed_deliveries += 1)
            .unwrap();
        assert!(!sender.may_be_paused(), "{pause}: over and written");
        assert!(!marker(&dir).exists(), "{pause}");
    }
}

#[test]
fn a_write_that_ends_a_pause_leaves_the_marker_to_the_next_one() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(limits(100), &clock);
    let until = in_seconds(&clock, 30);
    spool
        .update_ledger(&mut |ledger| ledger.circuit_open_until = until)
        .unwrap();
    // A success closes the circuit: had this write's commit failed, the circuit would still be
    // open, so the marker stays until a write finds it closed.
    spool
        .update_ledger(&mut |ledger| ledger.circuit_open_until = None)
        .unwrap();
    assert!(spool.may_be_paused());
    spool
        .update_ledger(&mut |ledger| ledger.delivered += 1)
        .unwrap();
    assert!(!spool.may_be_paused());
}

#[test]
fn a_file_that_holds_a_pause_without_a_marker_gets_one_when_opened() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let until = in_seconds(&clock, 60);
    drop(dir.open_at(limits(100), &clock));
    // As a version of the library that kept no marker would leave the file.
    let raw = dir.raw();
    raw.execute(
        "INSERT INTO meta (key, value) VALUES ('not_before_ms', ?1)",
        [until
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64],
    )
    .unwrap();
    drop(raw);
    assert!(!marker(&dir).exists());

    let spool = dir.open_at(limits(100), &clock);
    assert!(spool.may_be_paused());
    assert!(spool.ledger().unwrap().not_before.is_some());
}

#[test]
fn anything_in_the_markers_place_counts_as_a_pause_and_is_never_written_through() {
    let dir = SpoolDir::new();
    let clock = TestClock::new();
    let spool = dir.open_at(limits(100), &clock);
    // A directory where the marker goes: never mistaken for "no pause".
    std::fs::create_dir(marker(&dir)).unwrap();
    assert!(spool.may_be_paused());
    std::fs::remove_dir(marker(&dir)).unwrap();

    // A link there is not followed when a pause makes the marker.
    #[cfg(unix)]
    {
        let target = dir.dir.path().join("target");
        std::os::unix::fs::symlink(&target, marker(&dir)).unwrap();
        let until = in_seconds(&clock, 30);
        spool
            .update_ledger(&mut |ledger| ledger.not_before = until)
            .unwrap();
        assert!(spool.may_be_paused());
        assert!(!target.exists(), "nothing was created through the link");
    }
}
