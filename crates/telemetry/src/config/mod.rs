//! How an SDK describes itself to the library: the builder and its accessors. Its other jobs
//! live beside it: `resolve` (what to do, and why), `wiring` (the buffer and transport), and
//! `consent` (recording a decision).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use telemetry_buffer::Buffer;
use telemetry_model::{
    Arch, Catalog, DeploymentStage, Integration, Interface, InvalidIdentifier, Name, OsFamily,
    SessionId, UtcDate, Version,
};
use telemetry_policy::{
    AuditChange, AuditLog, AuditSource, BufferKind, ConsentState, DEFAULT_BATCH_INTERVAL,
    DEFAULT_BATCH_SIZE, DEFAULT_PROMPT_TIMEOUT, Decision, DecisionInputs, DecisionReason, Endpoint,
    EndpointError, EnvPrefix, EnvSnapshot, InvalidPrefix, MachineIdentity, Policy, PolicyError,
    Scrubber, SessionReplaced, SettingError, Settings, StateError, StateStore, decide,
    default_policy_path, is_ci, load_policy,
};
use telemetry_transport::Transport;

use crate::template::EventTemplate;

/// The default capacity of the queue between recording threads and the worker, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8_192;

/// How long a session id lives by default before it is replaced: 30 days.
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// The default time that dropping the last handle waits for the worker to deliver.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a batch claimed from the spool stays exclusive to its sender: the HTTPS request
/// timeout (15 s) and a margin for the acknowledgement. A sender that dies while delivering
/// holds its batch back this long; one that exits normally releases it at once.
#[cfg(feature = "sqlite")]
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// How long a management command waits for another process's write lock on the spool.
#[cfg(feature = "sqlite")]
const MANAGEMENT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether opening the spool may create it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpoolOpening {
    /// A running process: create the file when it is missing.
    CreateIfMissing,
    /// `status`, `disable` and `flush` of earlier processes' events: only an existing file.
    ExistingOnly,
}

/// What is wrong with an SDK's telemetry set-up. These are mistakes in the SDK's code,
/// reported when the SDK builds its [`TelemetryConfig`], never a user's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The SDK name or a version has the wrong shape.
    #[error("invalid SDK identity: {0}")]
    Identity(#[from] InvalidIdentifier),
    /// The environment prefix has the wrong shape.
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    /// The catalog does not parse.
    #[error(transparent)]
    Catalog(#[from] telemetry_model::CatalogError),
    /// The default endpoint is not an `https://` or `file://` URL.
    #[error("invalid default endpoint: {0}")]
    Endpoint(#[from] EndpointError),
}

/// Receives the library's warnings meant for the person running the program, such as an invalid
/// setting. The default prints them to standard error, prefixed with the SDK's name.
pub type WarningSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Everything the library needs to know about an SDK: its identity, catalog, environment prefix,
/// state directory and defaults. Built once by the SDK; used to [`start`](TelemetryConfig::start)
/// telemetry and by the management commands.
///
/// ```
/// use telemetry::TelemetryConfig;
///
/// mod catalog {
///     // In an SDK: `telemetry::catalog!("catalog.toml");`
///     telemetry::catalog!(inline: r#"
///         [features]
///         retries = "Tasks configured with automatic retries"
///     "#);
/// }
/// let config = TelemetryConfig::new("mysdk", "1.2.0", catalog::CATALOG_TOML, "MYSDK")?
///     .default_endpoint("https://telemetry.mysdk.example/v1/events")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TelemetryConfig {
    pub(crate) sdk_name: Name,
    pub(crate) sdk_version: Version,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) prefix: EnvPrefix,
    pub(crate) state_dir: Option<PathBuf>,
    /// The command users type to run the SDK's CLI, as the prompt tells them.
    pub(crate) command_name: Option<String>,
    pub(crate) default_endpoint: Option<Endpoint>,
    pub(crate) interface: Interface,
    pub(crate) deployment: DeploymentStage,
    pub(crate) runtime: Name,
    pub(crate) runtime_version: Version,
    pub(crate) installed_integrations: Vec<Integration>,
    pub(crate) env: Option<EnvSnapshot>,
    pub(crate) buffer: Option<Arc<dyn Buffer>>,
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) buffer_capacity: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) warnings: WarningSink,
    pub(crate) policy_path: PathBuf,
    pub(crate) consent_version: u32,
    pub(crate) docs_url: Option<String>,
    pub(crate) prompt_timeout: Duration,
    pub(crate) deletion_on_opt_out: bool,
    pub(crate) session_max_age: Duration,
    #[cfg(feature = "sqlite")]
    pub(crate) spool_limits: telemetry_buffer::SpoolLimits,
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("sdk_name", &self.sdk_name)
            .field("sdk_version", &self.sdk_version)
            .field("prefix", &self.prefix)
            .field("state_dir", &self.state_dir)
            .field("default_endpoint", &self.default_endpoint)
            .field("interface", &self.interface)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

mod consent;
mod resolve;
mod wiring;

pub(crate) use resolve::Resolution;
pub(crate) use wiring::WiringError;

impl TelemetryConfig {
    /// A configuration for the SDK `sdk_name` (a lowercase identifier such as `flowkit`) at
    /// `sdk_version`, collecting only what `catalog` declares, reading settings from variables
    /// that start with `env_prefix` (such as `FLOWKIT`).
    ///
    /// Defaults: no state directory (decisions are not remembered), no default endpoint,
    /// programmatic interface, unknown deployment stage, the process environment, the SQLite
    /// spool in the state directory when built with it (otherwise an in-memory buffer of
    /// 10,000 events), a 2 s shutdown, the policy file
    /// `/etc/<sdk_name>/telemetry-policy.toml`, consent version 1 and a 10 s prompt timeout.
    ///
    /// The catalog is TOML text compiled into the SDK (`CATALOG_TOML` of the module
    /// [`catalog!`](crate::catalog!) generates): a `&'static str`, so that a catalog can never
    /// be built at run time from what a user typed, which would let a user's data pass as a
    /// declared name. Record with the handles `catalog!` generates.
    pub fn new(
        sdk_name: &str,
        sdk_version: &str,
        catalog_toml: &'static str,
        env_prefix: &str,
    ) -> Result<TelemetryConfig, SetupError> {
        Ok(TelemetryConfig {
            sdk_name: Name::new(sdk_name)?,
            sdk_version: Version::normalize(sdk_version)?,
            catalog: Arc::new(Catalog::from_toml(catalog_toml)?),
            prefix: EnvPrefix::new(env_prefix)?,
            state_dir: None,
            command_name: None,
            default_endpoint: None,
            interface: Interface::Programmatic,
            deployment: DeploymentStage::Unknown,
            runtime: Name::new("rust")?,
            runtime_version: Version::normalize(env!("TELEMETRY_RUSTC_VERSION"))
                .or_else(|_| Version::new("0"))?,
            installed_integrations: Vec::new(),
            env: None,
            buffer: None,
            transport: None,
            buffer_capacity: telemetry_buffer::DEFAULT_MEMORY_CAPACITY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            warnings: Arc::new(print_warning),
            policy_path: default_policy_path(sdk_name),
            consent_version: 1,
            docs_url: None,
            prompt_timeout: DEFAULT_PROMPT_TIMEOUT,
            deletion_on_opt_out: true,
            session_max_age: DEFAULT_SESSION_MAX_AGE,
            #[cfg(feature = "sqlite")]
            spool_limits: telemetry_buffer::SpoolLimits::default(),
        })
    }

    /// The configuration behind [`Telemetry::disabled`](crate::Telemetry::disabled): an SDK
    /// named `disabled` with an empty catalog, no state directory, no environment and no
    /// policy file, so everything that reads it decides off and touches no file.
    pub(crate) fn disabled() -> TelemetryConfig {
        static DISABLED: OnceLock<TelemetryConfig> = OnceLock::new();
        DISABLED
            .get_or_init(|| {
                TelemetryConfig::new("disabled", "0.0.0", "", "TELEMETRY_DISABLED")
                    .unwrap_or_else(|_| unreachable!("the disabled configuration is valid"))
                    .env(EnvSnapshot::from_pairs(Vec::<(String, String)>::new()))
                    // A path below a file: no policy can be found there.
                    .policy_path("/dev/null/telemetry-policy.toml")
                    .warnings(Arc::new(|_: &str| {}))
            })
            .clone()
    }

    /// The bounds of the SQLite spool: events, bytes and age (defaults: 100,000 events,
    /// 50 MiB, 30 days). Beyond them the oldest events are dropped and counted.
    #[cfg(feature = "sqlite")]
    #[must_use]
    pub fn spool_limits(mut self, limits: telemetry_buffer::SpoolLimits) -> TelemetryConfig {
        self.spool_limits = limits;
        self
    }

    /// Whether opting out sends one final `deletion_request` event asking the destination to
    /// delete everything sent under the old session id (on by default, as Mozilla's Glean does
    /// with its deletion-request ping). Turn it off only when the destination keeps nothing
    /// per session.
    #[must_use]
    pub fn deletion_request_on_opt_out(mut self, enabled: bool) -> TelemetryConfig {
        self.deletion_on_opt_out = enabled;
        self
    }

    /// How long a session id is used before a new one replaces it (default 30 days, at least
    /// one day): a long-lived id would become a per-install identifier.
    #[must_use]
    pub fn session_max_age(mut self, age: Duration) -> TelemetryConfig {
        self.session_max_age = age.max(Duration::from_secs(86_400));
        self
    }

    /// Where the enterprise policy file is looked for when `PREFIX_TELEMETRY_POLICY_FILE` is not
    /// set; by default `/etc/<sdk_name>/telemetry-policy.toml`.
    #[must_use]
    pub fn policy_path(mut self, path: impl Into<PathBuf>) -> TelemetryConfig {
        self.policy_path = path.into();
        self
    }

    /// The version of what the SDK collects, as far as consent goes. Raise it when collection
    /// changes materially: earlier decisions then no longer count, and users are asked again.
    #[must_use]
    pub fn consent_version(mut self, version: u32) -> TelemetryConfig {
        self.consent_version = version.max(1);
        self
    }

    /// The page that explains the SDK's telemetry, shown in the prompt and by `status`.
    #[must_use]
    pub fn docs_url(mut self, url: &str) -> TelemetryConfig {
        self.docs_url = Some(url.to_owned());
        self
    }

    /// How long the consent prompt waits before taking the answer as "no".
    #[must_use]
    pub fn prompt_timeout(mut self, timeout: Duration) -> TelemetryConfig {
        self.prompt_timeout = timeout;
        self
    }

    /// The directory for the consent state file (and later the spool and audit log),
    /// such as `~/.mysdk`. Without one, decisions are not remembered between processes.
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> TelemetryConfig {
        self.state_dir = Some(dir.into());
        self
    }

    /// Where events go unless the user's environment or a policy says otherwise:
    /// an `https://` URL, or `file:///absolute/dir` for offline export.
    pub fn default_endpoint(mut self, endpoint: &str) -> Result<TelemetryConfig, SetupError> {
        self.default_endpoint = Some(telemetry_policy::parse_endpoint(endpoint)?);
        Ok(self)
    }

    /// Whether the SDK is driven from its CLI or used as a library.
    #[must_use]
    pub fn interface(mut self, interface: Interface) -> TelemetryConfig {
        self.interface = interface;
        self
    }

    /// Development or production, as the SDK can tell.
    #[must_use]
    pub fn deployment(mut self, deployment: DeploymentStage) -> TelemetryConfig {
        self.deployment = deployment;
        self
    }

    /// The language runtime, for SDKs that wrap this library for another language
    /// (for example `python`, `3.12`). Defaults to `rust` and the compiler's version.
    pub fn runtime(mut self, name: &str, version: &str) -> Result<TelemetryConfig, SetupError> {
        self.runtime = Name::new(name)?;
        self.runtime_version = Version::normalize(version)?;
        Ok(self)
    }

    /// Integrations known to be installed, reported in every event.
    #[must_use]
    pub fn installed_integrations(
        mut self,
        integrations: impl IntoIterator<Item = Integration>,
    ) -> TelemetryConfig {
        self.installed_integrations = integrations.into_iter().collect();
        self
    }

    /// Reads settings from this snapshot instead of the process environment.
    #[must_use]
    pub fn env(mut self, env: EnvSnapshot) -> TelemetryConfig {
        self.env = Some(env);
        self
    }

    /// Uses this buffer instead of the spool or the in-memory buffer the settings call for.
    #[must_use]
    pub fn buffer(mut self, buffer: Arc<dyn Buffer>) -> TelemetryConfig {
        self.buffer = Some(buffer);
        self
    }

    /// The capacity of the default in-memory buffer, in events.
    #[must_use]
    pub fn buffer_capacity(mut self, events: usize) -> TelemetryConfig {
        self.buffer_capacity = events.max(1);
        self
    }

    /// Uses this transport instead of the one the endpoint calls for.
    #[must_use]
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> TelemetryConfig {
        self.transport = Some(transport);
        self
    }

    /// The capacity of the queue between recording threads and the worker; when it is full,
    /// new records are dropped and counted rather than blocking the caller.
    ///
    /// The capacity is split evenly into one shard per processor (at most
    /// [`internals::MAX_QUEUE_SHARDS`](crate::internals::MAX_QUEUE_SHARDS)), and each
    /// recording thread uses one shard, so threads that record at once do not contend; one
    /// thread alone can fill only its own shard.
    #[must_use]
    pub fn queue_capacity(mut self, records: usize) -> TelemetryConfig {
        self.queue_capacity = records.max(1);
        self
    }

    /// How long dropping the last [`Telemetry`](crate::Telemetry) handle waits for pending
    /// events to be delivered.
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> TelemetryConfig {
        self.shutdown_timeout = timeout;
        self
    }

    /// Sends the library's user-facing warnings somewhere other than standard error.
    #[must_use]
    pub fn warnings(mut self, sink: WarningSink) -> TelemetryConfig {
        self.warnings = sink;
        self
    }

    /// The command users type to run the SDK's CLI (`acme-jobs`), which the consent prompt
    /// shows in `acme-jobs telemetry enable`; the SDK's name when not set. Only visible ASCII
    /// characters are kept, and at most 64 of them.
    #[must_use]
    pub fn command_name(mut self, command: &str) -> TelemetryConfig {
        let kept: String = command
            .chars()
            .filter(char::is_ascii_graphic)
            .take(64)
            .collect();
        self.command_name = (!kept.is_empty()).then_some(kept);
        self
    }

    /// The command the prompt names: [`command_name`](TelemetryConfig::command_name), or the
    /// SDK's name.
    pub fn cli_command(&self) -> &str {
        self.command_name
            .as_deref()
            .unwrap_or(self.sdk_name.as_str())
    }

    /// The SDK's name.
    pub fn sdk_name(&self) -> &Name {
        &self.sdk_name
    }

    /// The SDK's catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The SDK's environment prefix.
    pub fn env_prefix(&self) -> &EnvPrefix {
        &self.prefix
    }

    /// The consent state file, when the SDK has a state directory.
    pub fn state_file(&self) -> Option<PathBuf> {
        self.state_store().map(|store| store.path().to_path_buf())
    }

    pub(crate) fn state_store(&self) -> Option<StateStore> {
        self.state_dir.as_deref().map(StateStore::in_dir)
    }

    /// The audit log, when the SDK has a state directory.
    pub fn audit_log(&self) -> Option<AuditLog> {
        self.state_dir.as_deref().map(AuditLog::in_dir)
    }

    pub(crate) fn warn(&self, message: &str) {
        tracing::warn!(sdk = %self.sdk_name, "{message}");
        (self.warnings)(&format!("{} telemetry: {message}", self.sdk_name));
    }
}

/// Why a management operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The SDK keeps no state directory, so there is nowhere to remember a decision.
    #[error("this SDK has no state directory, so a decision cannot be remembered")]
    NoStateDir,
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The opt-out was recorded, but the unsent events could not be deleted.
    #[error(
        "your opt-out is recorded, but the unsent events could not be deleted ({problem}); run the command again when no other program is using telemetry"
    )]
    PurgeFailed {
        /// Why.
        problem: String,
    },
    /// An enterprise policy file decides, so users cannot change the decision.
    #[error(
        "telemetry is turned {} for everyone on this machine by the policy file {}; ask your administrator to change it",
        if *enabled { "on" } else { "off" },
        path.display()
    )]
    ForbiddenByPolicy {
        /// The policy file.
        path: PathBuf,
        /// What the policy decides.
        enabled: bool,
    },
}

fn print_warning(message: &str) {
    // The one place the library writes to stderr: warnings the person running the program
    // must see (an invalid setting), routed through the SDK's `warnings` sink when it sets one.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("warning: {message}");
    }
}
