//! A private PostgreSQL server for the test run: `initdb` into a temporary directory (as the
//! `postgres` user when run as root, since initdb refuses root), `pg_ctl start` on a free port
//! of 127.0.0.1 with a socket directory of its own, stopped and deleted when dropped. The
//! collector's tests make one database each on it (`TELEMETRY_TEST_POSTGRES_URL`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// The variable that tells the tests where the server is.
pub(crate) const URL_VARIABLE: &str = "TELEMETRY_TEST_POSTGRES_URL";

/// A running server; stopped when dropped.
pub(crate) struct TestPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn binaries() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The server binaries, installed from Debian's `postgresql` package when missing.
fn ensure_binaries() -> anyhow::Result<PathBuf> {
    if let Some(bin) = binaries() {
        return Ok(bin);
    }
    eprintln!("\n==> install PostgreSQL (apt-get install postgresql)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "postgresql"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install() {
        let _ = Command::new("apt-get").arg("update").status();
        if !install() {
            bail!("PostgreSQL's server binaries are missing and apt-get could not install them");
        }
    }
    binaries().context("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/initdb")
}

impl TestPostgres {
    pub(crate) fn start() -> anyhow::Result<TestPostgres> {
        let bin = ensure_binaries()?;
        let as_postgres = nix::unistd::Uid::effective().is_root();
        let dir = std::env::temp_dir().join(format!("xtask-postgres-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if as_postgres {
            let user = nix::unistd::User::from_name("postgres")?
                .context("running as root, and there is no postgres user to run the server as")?;
            std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = TestPostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        eprintln!("\n==> start PostgreSQL on 127.0.0.1:{port}");
        let data = server.data();
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
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            server.dir.display()
        );
        let log = server.dir.join("server.log").display().to_string();
        server.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )?;
        Ok(server)
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
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

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self.command(program).args(args).output()?;
        if !output.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
