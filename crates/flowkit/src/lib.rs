//! flowkit: a small flows-and-tasks SDK, instrumented with privacy-first telemetry the way a
//! real SDK author would do it.
//!
//! Users build [`Flow`]s out of [`Task`]s with options (retries, caching, asynchronous tasks,
//! timeouts, task runners, blocks), deploy and serve them, and run them with a [`FlowKit`].
//! flowkit reports which of those options are used, how long runs take (bucketed) and how they
//! end, and never the names, parameters, outputs or error messages, which are the user's.
//!
//! ```
//! use flowkit::{Flow, FlowKit, Params, Task};
//!
//! let home = tempfile::tempdir()?;
//! let config = flowkit::telemetry_config(Some(home.path().to_path_buf()), telemetry::Interface::Programmatic)?;
//! let kit = FlowKit::start(&config);
//! let flow = Flow::new("hello").task(Task::new("greet", |_| Ok("hi".into())));
//! let run = kit.run(&flow, &Params::new());
//! assert_eq!(run.outcome, telemetry::RunOutcome::Completed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/sdk-guide.md` for how the instrumentation is put together.

mod flow;
pub mod instrumentation;
mod kit;

use std::path::PathBuf;

pub use flow::{
    Block, BlockKind, Deployment, ErrorKind, Flow, Params, Task, TaskContext, TaskError,
    TaskOutput, TaskRunner,
};
pub use kit::{FlowKit, FlowRun};
use telemetry::{DeploymentStage, EnvSnapshot, Interface, SetupError, TelemetryConfig};

/// flowkit's environment prefix: its variables are `FLOWKIT_SDK_TELEMETRY_*`.
pub const ENV_PREFIX: &str = "FLOWKIT";

/// Where flowkit sends telemetry unless told otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://telemetry.flowkit.example/v1/events";

/// Where users learn what flowkit collects and why.
pub const TELEMETRY_DOCS_URL: &str =
    "https://github.com/flowkit-dev/sdk-telemetry/blob/main/docs/privacy.md";

/// The variable that moves flowkit's state directory.
pub const HOME_VARIABLE: &str = "FLOWKIT_HOME";

/// flowkit's state directory: `$FLOWKIT_HOME`, else `~/.flowkit`; `None` when neither is known.
pub fn default_home(env: &EnvSnapshot) -> Option<PathBuf> {
    let var = |name| match env.get(name) {
        Some(Ok(value)) if !value.is_empty() => Some(PathBuf::from(value)),
        _ => None,
    };
    var(HOME_VARIABLE).or_else(|| var("HOME").map(|home| home.join(".flowkit")))
}

/// flowkit's telemetry configuration, with its state in `home`.
pub fn telemetry_config(
    home: Option<PathBuf>,
    interface: Interface,
) -> Result<TelemetryConfig, SetupError> {
    let mut config = TelemetryConfig::new(
        "flowkit",
        env!("CARGO_PKG_VERSION"),
        instrumentation::CATALOG_TOML,
        ENV_PREFIX,
    )?
    .default_endpoint(DEFAULT_ENDPOINT)?
    .interface(interface)
    .deployment(DeploymentStage::Development)
    .docs_url(TELEMETRY_DOCS_URL);
    if let Some(home) = home {
        config = config.state_dir(home);
    }
    Ok(config)
}
