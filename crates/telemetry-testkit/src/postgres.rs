//! A private PostgreSQL server: `initdb` into a temporary directory (as the `postgres` user when
//! run as root, since initdb refuses root), `pg_ctl start` on a free port of 127.0.0.1 with a
//! socket directory of its own, stopped and deleted when dropped.
//!
//! The collector's tests start one when `cargo xtask ci` has not exported a shared server
//! (`TELEMETRY_TEST_POSTGRES_URL`), and its ingest benchmark starts one with the durability of
//! production. `cargo xtask ci` keeps a launcher of its own, which also installs the server
//! binaries: depending on this crate would build criterion and rustls before any task runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How the server keeps what it commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync = off`: quick, for tests, whose data are thrown away.
    Throwaway,
    /// `fsync`, `synchronous_commit` and `full_page_writes` on, as in production: every commit
    /// waits for its write-ahead log to reach the disk. For benchmarks.
    Production,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`, or `PG_BIN` when set.
pub fn binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
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

/// How many ports a server tries before its start fails.
const START_ATTEMPTS: usize = 5;

/// A port of 127.0.0.1 that nothing listened on when asked.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A running private server.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    durability: Durability,
}

impl PrivatePostgres {
    /// Starts a server with the binaries in `bin` (see [`binaries`]). Panics when it cannot:
    /// a test or benchmark that needs it cannot go on.
    pub fn start(bin: PathBuf, durability: Durability) -> PrivatePostgres {
        PrivatePostgres::start_on(bin, durability, std::iter::repeat_with(free_port))
    }

    /// [`start`](PrivatePostgres::start) on the first of `ports` that the server can bind.
    fn start_on(
        bin: PathBuf,
        durability: Durability,
        mut ports: impl Iterator<Item = u16>,
    ) -> PrivatePostgres {
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::tempdir().expect("a temporary directory");
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user to run the server as, since initdb refuses root");
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown the server's directory");
        }
        let mut server = PrivatePostgres {
            dir,
            bin,
            port: ports.next().expect("a port to try"),
            as_postgres,
            durability,
        };
        // `--no-sync` only spares initdb's own final sync of the new cluster.
        server.run(
            "initdb",
            &[
                "-D",
                &server.data(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // The port was free when it was asked for, but tests start servers and listeners in
        // parallel, and one of them can take it in the second initdb takes: a server that
        // cannot bind its port starts again on another.
        for attempt in 1.. {
            match server.try_pg_ctl("start") {
                Ok(()) => break,
                Err(_) if attempt < START_ATTEMPTS && server.port_was_taken() => {
                    server.port = ports.next().expect("a port to try");
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        server
    }

    /// Whether the server's log says its port was in use.
    fn port_was_taken(&self) -> bool {
        std::fs::read_to_string(self.dir.path().join("server.log"))
            .is_ok_and(|log| log.contains("Address already in use"))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(failure) = self.try_run(program, args) {
            panic!("{failure}");
        }
    }

    /// Runs a server tool; a failure says what ran and what it printed.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = self
            .command(program)
            .args(args)
            .output()
            .expect("the PostgreSQL tool runs");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    fn pg_ctl(&self, action: &str) {
        if let Err(failure) = self.try_pg_ctl(action) {
            panic!("{failure}");
        }
    }

    fn try_pg_ctl(&self, action: &str) -> Result<(), String> {
        let durability = match self.durability {
            Durability::Throwaway => "-c fsync=off",
            Durability::Production => "-c fsync=on -c synchronous_commit=on -c full_page_writes=on",
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 {durability}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", data.as_str(), "-l", log.as_str(), "-w", "-t", "60"];
        match action {
            "start" => args.extend(["-o", options.as_str(), action]),
            _ => args.extend(["-m", "fast", action]),
        }
        self.try_run("pg_ctl", &args)
    }

    /// Creates a database.
    pub fn createdb(&self, name: &str) {
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
    pub fn restart(&self, down: Duration) {
        self.pg_ctl("stop");
        std::thread::sleep(down);
        self.pg_ctl("start");
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .expect("postmaster.pid");
        text.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .expect("a process id on the first line of postmaster.pid")
    }

    /// The server's directory, for its log.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_taken_before_the_server_binds_it_is_given_up_for_another() {
        let Some(bin) = binaries() else {
            assert!(
                std::env::var("CI").map_or(true, |ci| ci.is_empty() || ci == "false" || ci == "0"),
                "no PostgreSQL server binaries: CI must run this test"
            );
            return;
        };
        // Another test's listener took the port the server was given.
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let taken = squatter.local_addr().expect("its address").port();
        let spare = free_port();
        let server =
            PrivatePostgres::start_on(bin, Durability::Throwaway, [taken, spare].into_iter());
        assert_eq!(server.port, spare);
        server.createdb("reached");
        drop(squatter);
    }
}
