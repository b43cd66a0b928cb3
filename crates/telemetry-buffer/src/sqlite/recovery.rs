//! Opening a file, and what happens to a damaged one: it is moved aside and a new spool is
//! started (see "Damage" on [`SqliteSpool`]).

use super::migrations::MigrateError;
use super::*;

/// How many prepared statements a connection keeps: more than the spool has, so that at a
/// steady rate no statement is compiled again (compiling was a fifth of the spool's CPU when
/// it appended a few dozen events every 100 ms).
pub(super) const STATEMENT_CACHE: usize = 64;

/// Why [`open_connection`] failed: the file is damaged (move it aside), or something else.
pub(super) enum OpenFailure {
    Damaged(String),
    Fatal(SpoolError),
}

/// Opens (or creates) the file and brings it to [`SCHEMA_VERSION`]; `now` is recorded as the
/// spool's creation time when this creates it.
pub(super) fn open_connection(path: &Path, now: i64) -> Result<Connection, OpenFailure> {
    let open_error = |error: rusqlite::Error| {
        if is_damage(&error) {
            OpenFailure::Damaged(error.to_string())
        } else {
            let detail = if is_busy(&error) {
                busy_detail(BUSY_TIMEOUT)
            } else {
                error.to_string()
            };
            OpenFailure::Fatal(SpoolError::Open {
                path: path.to_path_buf(),
                detail,
            })
        }
    };
    // The spool holds its user's events: a new file is made readable by its owner only, before
    // SQLite opens it, and the log and index SQLite makes beside it take the file's permissions
    // (the log outlives each process, see below). An existing file, or a symbolic link, is left
    // as it is (`create_new` fails on both).
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI with options.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut connection = Connection::open_with_flags(path, flags).map_err(open_error)?;
    connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // Room for every statement the spool runs, so none is compiled twice.
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // SQLite falls back to reading when it cannot write; a spool that cannot write is no use.
    if connection
        .is_readonly(rusqlite::MAIN_DB)
        .map_err(open_error)?
    {
        return Err(OpenFailure::Fatal(SpoolError::ReadOnly {
            path: path.to_path_buf(),
        }));
    }
    // Check before anything writes: a damaged file is moved aside exactly as it was found.
    let check: String = connection
        .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
        .map_err(open_error)?;
    if check != "ok" {
        let problem = check.trim_start_matches("*** in database main ***").trim();
        return Err(OpenFailure::Damaged(format!(
            "quick_check: {}",
            problem.replace('\n', "; ")
        )));
    }
    let pages: i64 = connection
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(open_error)?;
    if pages == 0 {
        // A new file holds no event yet. Setting auto-vacuum and then the write-ahead log each
        // write its first page through SQLite's rollback journal, and with the default
        // `synchronous = FULL` each write syncs the journal twice, the directory and the file:
        // 8 `fsync`s before anything is stored, which on this kind of disk were about a tenth
        // of what starting telemetry costs. Those two writes are not synced, and the file is
        // synced once when both are done (below); a crash in between leaves a file without
        // events, which the next open recreates (an empty file again, or a damaged one moved
        // aside). The one sync matters: an unsynced header lost in a power cut after the log
        // had been synced would leave an empty file beside a full log, and SQLite deletes the
        // log of an empty file on open, events and counts with it. When another process made the file meanwhile, it is in
        // WAL mode already (setting the mode writes nothing) and auto-vacuum at most rewrites
        // the same flag through its log, where an unsynced commit can be lost but never damages
        // what was committed before. The journal stays a file: a memory journal would save two
        // files more, but switching to it would take a file another process made out of WAL
        // mode, rewriting its header unprotected.
        connection
            .execute_batch("PRAGMA synchronous = OFF")
            .map_err(open_error)?;
        // Only possible before the first table exists; lets `purge` give freed pages back.
        connection
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(open_error)?;
    }
    let mode: String = connection
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenFailure::Fatal(SpoolError::NotWal {
            path: path.to_path_buf(),
            mode,
        }));
    }
    if pages == 0 {
        std::fs::File::open(path)
            .and_then(|file| file.sync_all())
            .map_err(|error| {
                OpenFailure::Fatal(SpoolError::Open {
                    path: path.to_path_buf(),
                    detail: format!("cannot sync the new file: {error}"),
                })
            })?;
    }
    connection
        .execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(open_error)?;
    migrate(&mut connection, now).map_err(|error| match error {
        MigrateError::Sql(error) => open_error(error),
        MigrateError::Newer(found) => OpenFailure::Fatal(SpoolError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }),
    })?;
    // The log outlives the connection: closing the last connection would otherwise fold the log
    // into the file (syncing both) and delete it, and the next process's first write would
    // create it again (syncing its header and the directory). Short processes, the kind a CLI
    // runs, paid those four syncs each, about a quarter of what starting and stopping telemetry
    // cost in a home used before. A log left behind is what a crash leaves, which WAL mode is
    // made for: the next connection replays it. Its size is bounded at close
    // (`SqliteSpool::bound_log`). Best effort: without the setting, closing checkpoints as
    // before. Set last, so that a file refused above (a newer schema) is closed as it was found.
    let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    Ok(connection)
}

/// SQLite's verdict that the file is not a database, or a damaged one.
pub(super) fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Moves a damaged spool (and its write-ahead log or journal) aside; returns the new path.
pub(super) fn move_aside(path: &Path, reason: &str, now: i64) -> Result<PathBuf, SpoolError> {
    // Only ever rename a regular file: the path could name a device or a directory by mistake.
    let is_file = fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_file());
    if !is_file {
        return Err(SpoolError::NotAFile {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        });
    }
    let mut target = sibling(path, &format!(".corrupt-{now}"));
    let mut attempt = 1;
    while target.exists() {
        target = sibling(path, &format!(".corrupt-{now}-{attempt}"));
        attempt += 1;
    }
    fs::rename(path, &target).map_err(|source| SpoolError::MoveAside {
        path: path.to_path_buf(),
        to: target.clone(),
        reason: reason.to_owned(),
        source,
    })?;
    // A log or journal left beside the path would be replayed into the new file: move it with
    // the damaged file, under the name SQLite looks for next to it, so the pair can be inspected.
    for suffix in ["-wal", "-journal"] {
        let side = sibling(path, suffix);
        if side.exists() {
            let _ = fs::rename(&side, sibling(&target, suffix));
        }
    }
    let _ = fs::remove_file(sibling(path, "-shm"));
    Ok(target)
}

/// `path` with `suffix` appended to its file name.
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}
