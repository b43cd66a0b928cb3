//! PostgreSQL for tests: a database on the shared server of the CI run, or on a private server
//! of the test's own (`telemetry_testkit::postgres`).
//!
//! `cargo xtask ci` starts one server for the whole run and exports its URL as
//! `TELEMETRY_TEST_POSTGRES_URL`; tests then make a database each on it. Without that variable a
//! test starts a server of its own. Outside CI, a test that needs PostgreSQL is skipped (and
//! says so) only when no server binaries exist; in CI it fails instead.

// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use telemetry_testkit::postgres::PrivatePostgres as Postgres;
use telemetry_testkit::postgres::{Durability, binaries};

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
        let server = start()?;
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
    Some(Postgres::start(bin, Durability::Throwaway))
}
