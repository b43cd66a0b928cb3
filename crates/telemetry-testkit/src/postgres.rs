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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let server = PrivatePostgres {
            dir,
            bin,
            port,
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
        server.pg_ctl("start");
        server
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
        let output = self
            .command(program)
            .args(args)
            .output()
            .expect("the PostgreSQL tool runs");
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
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
        self.run("pg_ctl", &args);
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
