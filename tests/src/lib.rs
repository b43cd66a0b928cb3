//! Helpers for the workspace's end-to-end tests: run flowkit workloads into a real export
//! directory, read what was exported, and validate it with an independent JSON Schema validator.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use telemetry::{EnvSnapshot, Interface, TelemetryConfig};

/// A flow name full of business data, which must never leave the process.
pub const FLOW_NAME: &str = "customer-sync-acme";
/// A parameter value that is personal data.
pub const PARAM_VALUE: &str = "alice@example.com";
/// An error message that names an internal host.
pub const ERROR_MESSAGE: &str = "cannot reach db.internal.example.com";

/// Runs `runs` flow runs as a flowkit user would: parameters on every run ([`PARAM_VALUE`]), a
/// retried and a cached task on a concurrent runner, and a connection error
/// ([`ERROR_MESSAGE`]) on every third run, in a flow named [`FLOW_NAME`].
pub fn hostile_workload(kit: &flowkit::FlowKit, runs: usize) {
    use flowkit::{ErrorKind, Flow, Params, Task, TaskError, TaskRunner};
    let flow = Flow::new(FLOW_NAME)
        .runner(TaskRunner::Concurrent { max_workers: 2 })
        .task(
            Task::new("load", |context| match context.params.get("fail") {
                Some(_) => Err(TaskError::new(ErrorKind::Connection, ERROR_MESSAGE)),
                None => Ok(1.into()),
            })
            .retries(1, std::time::Duration::ZERO),
        )
        .task(Task::new("store", |_| Ok(2.into())).cached());
    for run in 0..runs {
        let mut params = Params::new();
        params.insert("owner".to_owned(), PARAM_VALUE.to_owned());
        if run % 3 == 0 {
            params.insert("fail".to_owned(), "yes".to_owned());
        }
        kit.run(&flow, &params);
    }
}

/// The committed event schema.
pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/event.schema.json")
}

/// A flowkit configuration with telemetry enabled by its environment variable and exporting
/// to `export`, with state in `home`, reading no other variable.
pub fn enabled_flowkit_config(home: &Path, export: &Path) -> TelemetryConfig {
    enabled_flowkit_config_with(home, export, &[])
}

/// [`enabled_flowkit_config`] with more environment variables, such as a hostile `USER`.
pub fn enabled_flowkit_config_with(
    home: &Path,
    export: &Path,
    vars: &[(&str, &str)],
) -> TelemetryConfig {
    // The endpoint parser decodes `%XX`, and trims the value as it does every setting (Unicode
    // whitespace included), so every byte but plain path characters is escaped.
    let endpoint = format!(
        "file://{}",
        percent_encode_path(&export.display().to_string())
    );
    let mut pairs = vec![
        ("FLOWKIT_SDK_TELEMETRY_ENABLED", "1"),
        ("FLOWKIT_SDK_TELEMETRY_ENDPOINT", endpoint.as_str()),
    ];
    pairs.extend(vars.iter().copied());
    flowkit::telemetry_config(Some(home.to_path_buf()), Interface::Programmatic)
        .map(|config| config.env(EnvSnapshot::from_pairs(pairs)))
        .unwrap_or_else(|error| panic!("flowkit's configuration is invalid: {error}"))
}

/// `path` with every byte other than ASCII letters, digits and `/._-~` written as `%XX`.
pub fn percent_encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Every line of every file in an export directory.
pub fn exported_lines(export: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(export) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

const VALIDATOR: &str = r#"
import json, sys
try:
    from jsonschema import Draft202012Validator
except ImportError:
    sys.exit("python3 has no jsonschema module: run `python3 -m pip install jsonschema` (cargo xtask ci does)")
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
validator = Draft202012Validator(schema)
count = bad = 0
for count, line in enumerate(sys.stdin, 1):
    for error in validator.iter_errors(json.loads(line)):
        bad += 1
        print(f"line {count}: {error.message}", file=sys.stderr)
print(count)
sys.exit(1 if bad else 0)
"#;

/// Validates each line against the committed schema with Python's `jsonschema` package,
/// a validator that shares no code with the Rust types. Returns how many lines it validated.
pub fn validate_with_python(lines: &[String]) -> Result<usize, String> {
    let mut child = Command::new("python3")
        .args(["-c", VALIDATOR])
        .arg(schema_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run python3: {error}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        for line in lines {
            writeln!(stdin, "{line}").map_err(|error| error.to_string())?;
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|error| error.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        stdout
            .trim()
            .parse()
            .map_err(|_| format!("unexpected validator output: {stdout}"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}
