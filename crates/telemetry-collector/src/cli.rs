//! The `telemetry-collector` command line: `serve` and `report`.

// Printing is this module's job: the first line of `serve`, reports, and errors.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use telemetry_model::UtcDate;

use crate::auth::Token;
use crate::dev::DevFiles;
use crate::ingest::IngestConfig;
use crate::report::{Report, ReportQuery};
use crate::server::{Server, ServerConfig};
use crate::store::{PostgresStore, SqliteStore, Store};
use crate::validate::{Catalogs, Limits};

/// The address `--dev` listens on unless `--listen` says otherwise.
pub const DEV_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);
/// The data directory `--dev` uses unless `--data-dir` says otherwise.
pub const DEV_DATA_DIR: &str = "collector-dev";
/// The example SDK's catalog, which `--dev` accepts when run from the workspace without `--catalog`.
const DEV_CATALOG: (&str, &str) = ("flowkit", "crates/flowkit/catalog.toml");

/// The receiving end of privacy-first SDK telemetry.
#[derive(Debug, Parser)]
#[command(name = "telemetry-collector", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Receive events over HTTPS and serve reports.
    Serve(ServeArgs),
    /// Print or write a report from the stored events, without a server.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The address and port to listen on (port 0 picks a free one). [--dev: 127.0.0.1:8443]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// The server's certificate chain, PEM. [--dev: made under the data directory]
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key, PEM.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the embedded store (SQLite) keeps its file. [--dev: ./collector-dev]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Store events in PostgreSQL instead, shared by any number of collectors
    /// (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE).
    #[arg(
        long,
        value_name = "URL",
        env = "TELEMETRY_COLLECTOR_DATABASE",
        hide_env_values = true
    )]
    database: Option<String>,
    /// An SDK to accept and its catalog, the same TOML the SDK compiles in; repeat for each SDK.
    #[arg(long = "catalog", value_name = "SDK=PATH")]
    catalogs: Vec<String>,
    /// A file holding the token that opens reports (at least 32 characters). [--dev: made]
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Events older than this many days are refused and deleted (at start and hourly).
    #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
    retention_days: u32,
    /// A first try on this machine: 127.0.0.1 only, with a throw-away CA, certificate and token.
    #[arg(long)]
    dev: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The collector's data directory (SQLite).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "database",
        conflicts_with = "database"
    )]
    data_dir: Option<PathBuf>,
    /// The collector's PostgreSQL database.
    #[arg(
        long,
        value_name = "URL",
        env = "TELEMETRY_COLLECTOR_DATABASE",
        hide_env_values = true
    )]
    database: Option<String>,
    /// The SDK to report on (needed when the store holds several).
    #[arg(long, value_name = "NAME")]
    sdk: Option<String>,
    /// How many days, ending today.
    #[arg(long, default_value_t = ReportQuery::DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=i64::from(ReportQuery::MAX_DAYS)))]
    days: u32,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write the report as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("telemetry-collector: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Report(args) => report(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("telemetry-collector: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TELEMETRY_COLLECTOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No timestamps: a log line about a batch would otherwise record when it arrived.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}

/// What `serve` resolved from its flags.
struct Resolved {
    listen: SocketAddr,
    data_dir: PathBuf,
    database: Option<String>,
    config: ServerConfig,
    dev: Option<DevFiles>,
}

fn resolve(args: ServeArgs) -> anyhow::Result<Resolved> {
    let data_dir = match (&args.data_dir, args.dev, &args.database) {
        (Some(dir), _, _) => dir.clone(),
        (None, true, _) => PathBuf::from(DEV_DATA_DIR),
        // With PostgreSQL nothing is written under the data directory.
        (None, false, Some(_)) => PathBuf::new(),
        (None, false, None) => bail!(
            "serve needs --data-dir DIR (where events are stored) or --database URL, or --dev for a first try"
        ),
    };
    let listen = match (args.listen, args.dev) {
        (Some(listen), true) if !listen.ip().is_loopback() => {
            bail!("--dev listens on a loopback address only (127.0.0.1 or ::1), not {listen}")
        }
        (Some(listen), _) => listen,
        (None, true) => DEV_LISTEN,
        (None, false) => bail!("serve needs --listen ADDR:PORT, such as 0.0.0.0:443"),
    };
    let dev = if args.dev {
        Some(DevFiles::ensure(&data_dir).with_context(|| {
            format!(
                "--dev: making the throw-away CA, certificate and token in {}",
                data_dir.display()
            )
        })?)
    } else {
        None
    };
    let (cert, key) = match (&args.tls_cert, &args.tls_key, &dev) {
        (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
        (_, _, Some(files)) => (files.cert.clone(), files.key.clone()),
        _ => bail!(
            "serve needs --tls-cert PEM and --tls-key PEM (the collector speaks HTTPS only), or --dev for a first try"
        ),
    };
    let tls = crate::tls::server_config(&cert, &key)?;
    let token_file = match (&args.token_file, &dev) {
        (Some(path), _) => path.clone(),
        (None, Some(files)) => files.token.clone(),
        (None, None) => bail!("serve needs --token-file PATH: the token that opens reports"),
    };
    let token = Token::from_file(&token_file)?;
    let mut catalogs = Catalogs::default();
    for spec in &args.catalogs {
        catalogs.load(spec)?;
    }
    if catalogs.is_empty() {
        let (sdk, path) = DEV_CATALOG;
        if args.dev && Path::new(path).is_file() {
            catalogs.load(&format!("{sdk}={path}"))?;
            eprintln!(
                "--dev: accepting {sdk} with its catalog {path}; give --catalog SDK=PATH for your own SDK"
            );
        } else {
            bail!(
                "serve needs at least one --catalog SDK=PATH: events of an SDK without a catalog are refused"
            );
        }
    }
    Ok(Resolved {
        listen,
        data_dir,
        database: args.database,
        config: ServerConfig {
            tls,
            catalogs: Arc::new(catalogs),
            token,
            retention: Duration::from_secs(u64::from(args.retention_days) * 86_400),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            max_connections: 512,
        },
        dev,
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let resolved = resolve(args)?;
    // Listening for signals starts before anything is printed: a SIGTERM sent as soon as the
    // first line appears still stops the collector in order.
    let shutdown = shutdown_signal()?;
    let store = open_store(resolved.database.as_deref(), &resolved.data_dir).await?;
    let catalogs = Arc::clone(&resolved.config.catalogs);
    let server = Server::bind(resolved.listen, resolved.config)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let address = server.local_addr()?;
    println!("listening on https://{address}");
    if let Some(files) = &resolved.dev {
        let ca = std::path::absolute(&files.ca).unwrap_or_else(|_| files.ca.clone());
        let token = Token::from_file(&files.token)?;
        for (sdk, _) in catalogs.iter() {
            let prefix = sdk.to_ascii_uppercase();
            println!();
            println!("To send {sdk}'s telemetry here, in another shell:");
            println!("  export {prefix}_SDK_TELEMETRY_ENDPOINT=https://{address}/v1/events");
            println!("  export {prefix}_SDK_TELEMETRY_CA_FILE={}", ca.display());
            println!(
                "  export {prefix}_SDK_TELEMETRY_ENABLED=true   # unless you enabled it already"
            );
        }
        println!();
        println!(
            "The report: https://{address}/ (any user name; password: {})",
            token.reveal()
        );
        match &resolved.database {
            Some(_) => println!("Stop with Ctrl-C. Data: the PostgreSQL database given"),
            None => println!("Stop with Ctrl-C. Data: {}", resolved.data_dir.display()),
        }
    }
    server.run(store, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes at the first SIGTERM or SIGINT; the handlers are installed now.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {},
            _ = interrupt.recv() => {},
        }
        tracing::info!("shutting down: finishing requests in progress");
    })
}

/// The store `--database` names, or the SQLite store in `data_dir`.
async fn open_store(database: Option<&str>, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match database {
        Some(url) => Arc::new(PostgresStore::connect(url).await?),
        None => Arc::new(SqliteStore::open(data_dir)?),
    })
}

async fn report(args: ReportArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_default();
    if args.database.is_none() && !data_dir.join(SqliteStore::FILE_NAME).is_file() {
        bail!(
            "--data-dir {}: no collector data there (expected {})",
            data_dir.display(),
            SqliteStore::FILE_NAME
        );
    }
    let store = open_store(args.database.as_deref(), &data_dir).await?;
    let sdk = match args.sdk {
        Some(sdk) => sdk,
        None => {
            let sdks = store.sdks().await?;
            match sdks.as_slice() {
                [only] => only.clone(),
                [] => bail!("the store holds no SDK yet"),
                _ => bail!(
                    "the store holds several SDKs ({}); choose one with --sdk NAME",
                    sdks.join(", ")
                ),
            }
        }
    };
    let query = ReportQuery {
        sdk,
        until: UtcDate::today(),
        days: args.days,
    };
    let report = store.report(&query).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(path) = &args.html {
        std::fs::write(path, crate::html::render(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    } else {
        print_summary(&report);
    }
    Ok(())
}

fn print_summary(report: &Report) {
    let totals = &report.totals;
    println!("{} from {} to {}", report.sdk, report.from, report.until);
    println!(
        "  events {}  sessions {}  runs {}",
        totals.events, totals.sessions, totals.runs
    );
    let mut features: Vec<_> = totals.features.iter().collect();
    features.sort_by(|a, b| b.1.sessions.cmp(&a.1.sessions).then(a.0.cmp(b.0)));
    for (name, adoption) in features {
        println!("  {name:<28} {:>5.1}% of sessions", adoption.share * 100.0);
    }
    for (reason, count) in &report.refused {
        println!("  refused ({reason}): {count}");
    }
}
