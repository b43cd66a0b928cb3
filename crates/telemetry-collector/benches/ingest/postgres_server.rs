//! The benchmark's own PostgreSQL server: `initdb` into a temporary directory (as the `postgres`
//! user when run as root, since initdb refuses root), `pg_ctl start` on a free port of 127.0.0.1
//! with a socket directory of its own, stopped and deleted when dropped.
//!
//! Unlike the tests' server, this one keeps the durability of production: `fsync = on`,
//! `synchronous_commit = on` and `full_page_writes = on` (each commit waits for its WAL to reach
//! the disk), and [`BenchPostgres::start`] checks that the server reports them so. Everything
//! else is PostgreSQL's default configuration.

use std::path::PathBuf;
use std::process::Command;

/// A running private server.
pub struct BenchPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`, or `PG_BIN` when set.
fn binaries() -> Option<PathBuf> {
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

impl BenchPostgres {
    /// Starts a server, or returns `None` when there are no server binaries.
    pub fn start() -> Option<BenchPostgres> {
        let bin = binaries()?;
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")
                .unwrap()
                .expect("a postgres user to run the server as, since initdb refuses root");
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let server = BenchPostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = server.data();
        // `--no-sync` only spares initdb's own final sync of the new cluster; the server below
        // syncs every commit.
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c full_page_writes=on",
            server.port,
            server.dir.path().display()
        );
        let log = server.dir.path().join("server.log").display().to_string();
        server.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        let output = command.args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{} {args:?} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of a database on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's process id, from `postmaster.pid`.
    pub fn pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        text.lines().next().unwrap().trim().parse().unwrap()
    }
}

impl Drop for BenchPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let mut command = if self.as_postgres {
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
