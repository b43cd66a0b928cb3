//! A private PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl start` on
//! a free port of 127.0.0.1 with a socket directory of its own, stopped when dropped.
//!
//! `cargo xtask ci` starts one server for the whole run and exports its URL as
//! `TELEMETRY_TEST_POSTGRES_URL`; tests then make a database each on it. Without that variable a
//! test starts a server of its own. Outside CI, a test that needs PostgreSQL is skipped (and
//! says so) only when no server binaries exist; in CI it fails instead.

// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running private server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

/// Where a test's database lives: on the shared server of the CI run, or on a server of the
/// test's own.
pub enum Database {
    Shared { url: String },
    Own { server: Postgres, url: String },
}

impl Database {
    /// A new empty database, or `None` when the test should be skipped.
    pub fn create(test: &str) -> Option<Database> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t_{}_{}_{}",
            test.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(20)
                .collect::<String>()
                .to_lowercase(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        if let Ok(server_url) = std::env::var("TELEMETRY_TEST_POSTGRES_URL") {
            psql(&server_url, &format!("CREATE DATABASE {name}"));
            let base = server_url
                .rsplit_once('/')
                .map_or(server_url.as_str(), |(base, _)| base);
            return Some(Database::Shared {
                url: format!("{base}/{name}"),
            });
        }
        let server = Postgres::start()?;
        server.createdb(&name);
        let url = server.url(&name);
        Some(Database::Own { server, url })
    }

    pub fn url(&self) -> &str {
        match self {
            Database::Shared { url } | Database::Own { url, .. } => url,
        }
    }
}

/// The directory of the server binaries, if any.
pub fn binaries() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

fn psql(url: &str, sql: &str) {
    let bin = binaries().expect("PostgreSQL binaries");
    let status = Command::new(bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql {sql:?} failed");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

impl Postgres {
    /// Starts a server of the test's own, or returns `None` (after saying so) when there are no
    /// binaries outside CI.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = binaries() else {
            assert!(
                !in_ci(),
                "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: CI must run these tests (apt-get install postgresql)"
            );
            eprintln!("skipped: no PostgreSQL server binaries in /usr/lib/postgresql/*/bin");
            return None;
        };
        let run_as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if run_as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user to run the server as, since initdb refuses root");
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown the server's directory");
        }
        let server = Postgres {
            dir,
            bin,
            port: free_port(),
            run_as_postgres,
        };
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        server.pg_ctl("start");
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .expect("the PostgreSQL tool runs");
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data().display().to_string();
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w", "-t", "60"];
        match action {
            "start" | "restart" => args.extend(["-o", options.as_str(), action]),
            _ => args.extend(["-m", "fast", action]),
        }
        self.run("pg_ctl", &args);
    }

    fn createdb(&self, name: &str) {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast: open connections are cut) and starts it again on the same port
    /// after `down`.
    pub fn restart(&self, down: std::time::Duration) {
        self.pg_ctl("stop");
        std::thread::sleep(down);
        self.pg_ctl("start");
    }

    /// The server's directory, for its log.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}
