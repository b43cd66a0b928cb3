//! `flowkit demo`: a sample workload with telemetry exported to local files, then a look at
//! exactly what was collected and what was not.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use flowkit::instrumentation::{commands, integrations};
use flowkit::{
    Block, BlockKind, Deployment, ErrorKind, Flow, FlowKit, Params, Task, TaskError, TaskRunner,
};
use telemetry::{EnvSnapshot, Event, EventType, Interface};

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Where to keep the demo's state and export (a new directory under the system's
    /// temporary directory by default); your own flowkit settings are never touched
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
}

/// Things a flowkit user might type that must never be collected.
const USER_DATA: [&str; 6] = [
    "alice-customer-sync",
    "alice@example.com",
    "/home/alice/customers.csv",
    "sk_live_51HxDemoSecretToken9f8e7d6c",
    "warehouse.internal.example.com",
    "10.20.30.40",
];

pub(crate) fn run(args: &DemoArgs, env: &EnvSnapshot) -> anyhow::Result<i32> {
    let home = match &args.home {
        Some(home) => home.clone(),
        None => new_demo_home()?,
    };
    let export = home.join("export");
    // The demo ignores the caller's FLOWKIT_* settings so that it never writes to a real
    // endpoint, but it honours DO_NOT_TRACK and everything else that protects the user.
    let demo_env = env.filtered(|name| !name.starts_with("FLOWKIT_"));
    let config = flowkit::telemetry_config(Some(home.clone()), Interface::Cli)?
        .default_endpoint(&format!("file://{}", export.display()))?
        .env(demo_env)
        .shutdown_timeout(Duration::from_secs(10));

    let mut out = String::new();
    let _ = writeln!(out, "flowkit demo\n============\n");
    let _ = writeln!(out, "Demo home: {}", home.display());
    let status = config
        .enable()
        .context("could not record the demo's consent")?;
    let _ = writeln!(
        out,
        "1. Opted in, as `flowkit telemetry enable` does (state file: {}).",
        status.state_file.as_deref().unwrap_or("-")
    );
    if !status.enabled {
        let _ = writeln!(
            out,
            "\nTelemetry stays off anyway: {}. Nothing was collected, and nothing will be.",
            status.reason_text()
        );
        print(&out);
        return Ok(0);
    }
    let _ = writeln!(
        out,
        "   Events go to {} (offline export; nothing uses the network).",
        status.endpoint.as_deref().unwrap_or("-")
    );

    let summary = run_workload(&config)?;
    let _ = writeln!(out, "2. Ran a sample workload: {summary}");
    let _ = writeln!(
        out,
        "   Its flow names, parameters, block values and error messages contain personal data on purpose."
    );

    let files = exported_files(&export)?;
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    let events: Vec<Event> = lines
        .iter()
        .map(|line| serde_json::from_str(line))
        .collect::<Result<_, _>>()
        .context("the export holds a line that is not a telemetry event")?;
    let runs = events
        .iter()
        .filter(|event| event.event_type == EventType::Run)
        .count();
    let summaries = events.len() - runs;
    let _ = writeln!(
        out,
        "3. Telemetry exported {} events ({runs} run events, {summaries} usage summary) to:",
        events.len()
    );
    for file in &files {
        let _ = writeln!(out, "     {}", file.display());
    }

    if let Some(run) = events
        .iter()
        .find(|event| event.event_type == EventType::Run)
    {
        let _ = writeln!(
            out,
            "\nOne run event, exactly as exported:\n{}",
            pretty(run)
        );
    }
    if let Some(usage) = events
        .iter()
        .find(|event| event.event_type == EventType::SdkUsage)
    {
        let _ = writeln!(
            out,
            "\nThe usage summary, exactly as exported:\n{}",
            pretty(usage)
        );
    }

    let exported = lines.join("\n");
    let leaked: Vec<&str> = USER_DATA
        .iter()
        .copied()
        .filter(|data| exported.contains(data))
        .collect();
    let _ = writeln!(
        out,
        "\n4. Checked the export for the workload's personal data:"
    );
    for data in USER_DATA {
        let verdict = if leaked.contains(&data) {
            "FOUND"
        } else {
            "absent"
        };
        let _ = writeln!(out, "     {verdict:<6}  {data}");
    }
    let _ = writeln!(
        out,
        "\nEvery timestamp is truncated to the hour, durations are buckets, and names come only from\n\
         flowkit's catalog (crates/flowkit/catalog.toml; docs/collected-data.md lists them).\n\
         Look for yourself: cat {}/*.jsonl",
        export.display()
    );
    print(&out);
    if leaked.is_empty() { Ok(0) } else { Ok(1) }
}

fn print(text: &str) {
    print!("{text}");
}

fn pretty(value: &Event) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn new_demo_home() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let home = std::env::temp_dir().join(format!("flowkit-demo-{}-{stamp:x}", std::process::id()));
    std::fs::create_dir_all(&home).with_context(|| format!("cannot create {}", home.display()))?;
    Ok(home)
}

fn exported_files(export: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(export) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "jsonl")
            })
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", export.display()));
        }
    };
    files.sort();
    Ok(files)
}

/// A workload that touches every option flowkit reports, with personal data in everything
/// the user controls.
fn run_workload(config: &telemetry::TelemetryConfig) -> anyhow::Result<String> {
    let kit = FlowKit::start(config);
    kit.command_used(commands::DEMO);
    kit.integration_loaded(integrations::AWS, true);
    kit.integration_loaded(integrations::KUBERNETES, false);
    kit.register_block(Block {
        name: "alice-api-token".to_owned(),
        kind: BlockKind::Secret,
        value: USER_DATA[3].to_owned(),
    });
    kit.register_block(Block {
        name: "customer-exports".to_owned(),
        kind: BlockKind::S3Bucket,
        value: format!("s3://{}/exports", USER_DATA[4]),
    });

    let params: Params = [
        ("email".to_owned(), USER_DATA[1].to_owned()),
        ("input".to_owned(), USER_DATA[2].to_owned()),
        ("host".to_owned(), USER_DATA[5].to_owned()),
    ]
    .into_iter()
    .collect();
    let sync = Flow::new(USER_DATA[0])
        .uses_block("alice-api-token")
        .task(
            Task::new("download", |_| Ok("rows".into()))
                .retries(2, Duration::ZERO)
                .cached(),
        )
        .task(Task::new("validate", |context| {
            // Fails on its first attempt of every run, with a message full of user data.
            if context.attempt == 1 && context.params.contains_key("fail") {
                return Err(TaskError::new(
                    ErrorKind::Value,
                    format!("bad row for {} in {}", USER_DATA[1], USER_DATA[2]),
                ));
            }
            Ok(serde_json::json!({"valid": true}))
        }))
        .task(
            Task::new("upload", |_| Ok(serde_json::Value::Null)).timeout(Duration::from_secs(30)),
        );
    let report = Flow::new("nightly-report")
        .runner(TaskRunner::Concurrent { max_workers: 4 })
        .uses_block("customer-exports")
        .task(Task::new("revenue", |_| Ok(1.into())).asynchronous())
        .task(Task::new("churn", |_| Ok(2.into())).asynchronous())
        .task(Task::new("notify", |_| {
            Err(TaskError::new(
                ErrorKind::Connection,
                format!("cannot reach {}", USER_DATA[4]),
            ))
        }));

    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(kit.run(&sync, &params));
    }
    let mut failing = params.clone();
    failing.insert("fail".to_owned(), "yes".to_owned());
    runs.push(kit.run(&sync, &failing));
    for _ in 0..2 {
        runs.push(kit.run(&report, &Params::new()));
    }
    let deployment = Deployment::new("alice-prod-sync", sync)
        .every(Duration::from_secs(3_600))
        .params(params);
    runs.extend(kit.serve(&[deployment], 2));

    let failed = runs.iter().filter(|run| run.error.is_some()).count();
    // Dropping the runtime stops telemetry, which delivers everything before it returns.
    drop(kit);
    Ok(format!(
        "{} flow runs, {} completed and {failed} failed.",
        runs.len(),
        runs.len() - failed
    ))
}
