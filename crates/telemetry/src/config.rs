//! How an SDK describes itself to the library, and how the library works out what to do.

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

    /// The buffer the settings call for: the SDK's own, else `PREFIX_SDK_TELEMETRY_BUFFER`,
    /// else the SQLite spool when this build has it and the SDK has a state directory.
    pub(crate) fn buffer_kind(&self, resolution: &Resolution) -> &'static str {
        if let Some(buffer) = &self.buffer {
            return buffer.kind();
        }
        let setting = resolution
            .settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.buffer);
        match (
            setting,
            cfg!(feature = "sqlite") && self.state_dir.is_some(),
        ) {
            (Some(BufferKind::Memory), _) | (None, false) => "memory",
            (Some(BufferKind::Sqlite), _) | (None, true) => "sqlite",
        }
    }

    /// Opens a buffer of `kind` (`memory` or `sqlite`) for a running process. A spool that
    /// cannot be opened (a read-only or full disk, a build without SQLite) is reported once and
    /// replaced by memory. Runs on the worker's thread: opening a spool may wait for another
    /// process.
    pub(crate) fn open_buffer_of_kind(&self, kind: &str) -> Arc<dyn Buffer> {
        let memory = || {
            Arc::new(telemetry_buffer::MemoryBuffer::new(self.buffer_capacity)) as Arc<dyn Buffer>
        };
        if kind == "memory" {
            return memory();
        }
        match self.open_spool(SpoolOpening::CreateIfMissing) {
            Ok(Some(spool)) => spool,
            Ok(None) => memory(),
            Err(problem) => {
                self.warn(&format!(
                    "{problem}; events are kept in memory for this run"
                ));
                memory()
            }
        }
    }

    /// The transport the configuration and the endpoint call for.
    pub(crate) fn transport_for(
        &self,
        resolution: &Resolution,
    ) -> Result<Arc<dyn Transport>, String> {
        if let Some(transport) = &self.transport {
            return Ok(Arc::clone(transport));
        }
        match &resolution.endpoint {
            Some(Endpoint::File(dir)) => Ok(Arc::new(telemetry_transport::FileTransport::new(
                dir,
                self.sdk_name.clone(),
            ))),
            #[cfg(feature = "https")]
            Some(Endpoint::Https(url)) => {
                use telemetry_transport::{ExtraCa, HttpsConfig, HttpsTransport};
                let mut https = HttpsConfig::new(url.clone(), self.user_agent());
                if let Some(ca_file) = resolution.ca_file() {
                    https = https.with_extra_ca(ExtraCa::File(ca_file.to_path_buf()));
                }
                HttpsTransport::new(https)
                    .map(|transport| Arc::new(transport) as Arc<dyn Transport>)
                    .map_err(|error| error.to_string())
            }
            // `resolve` turns telemetry off when there is nowhere to deliver.
            _ => Err("there is no transport for the endpoint".to_owned()),
        }
    }

    /// The description of this process that every event shares.
    pub(crate) fn event_template(&self, ci: bool, session_id: SessionId) -> EventTemplate {
        EventTemplate {
            session_id,
            sdk_name: self.sdk_name.clone(),
            sdk_version: self.sdk_version.clone(),
            library_version: crate::library_version(),
            runtime: self.runtime.clone(),
            runtime_version: self.runtime_version.clone(),
            os: OsFamily::current(),
            arch: Arch::current(),
            interface: self.interface,
            ci,
            deployment: self.deployment,
        }
    }

    /// The spool in the state directory, created or only opened if it exists. A damaged file
    /// is moved aside, and that is reported once.
    ///
    /// A claim's lease is [`CLAIM_LEASE`]: a process killed while delivering holds its batch
    /// back that long, and no longer.
    #[cfg(feature = "sqlite")]
    pub(crate) fn open_spool(
        &self,
        opening: SpoolOpening,
    ) -> Result<Option<Arc<dyn Buffer>>, String> {
        let Some(dir) = &self.state_dir else {
            return Ok(None);
        };
        let path = dir.join(telemetry_buffer::SPOOL_FILE_NAME);
        if opening == SpoolOpening::ExistingOnly && !path.exists() {
            return Ok(None);
        }
        telemetry_policy::create_private_dir(dir).map_err(|error| {
            format!(
                "cannot create the state directory {}: {error}",
                dir.display()
            )
        })?;
        let mut spool = telemetry_buffer::SqliteSpool::open(&path, self.spool_limits)
            .map_err(|error| error.to_string())?
            .with_claim_lease(CLAIM_LEASE);
        if opening == SpoolOpening::ExistingOnly {
            // `status`, `disable` and `flush` answer a person waiting at a terminal: a spool
            // another process keeps busy is reported as busy rather than waited on. Reads need
            // no lock, so `status` still counts.
            spool = spool.with_busy_timeout(MANAGEMENT_BUSY_TIMEOUT);
        }
        // The spool holds the same data as the state directory: private to the user.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        if let Some(recovery) = spool.recovery() {
            self.warn(&recovery.to_string());
        }
        Ok(Some(Arc::new(spool)))
    }

    #[cfg(not(feature = "sqlite"))]
    pub(crate) fn open_spool(
        &self,
        opening: SpoolOpening,
    ) -> Result<Option<Arc<dyn Buffer>>, String> {
        match opening {
            // Without SQLite no earlier process can have left a spool.
            SpoolOpening::ExistingOnly => Ok(None),
            SpoolOpening::CreateIfMissing => {
                Err("this build has no SQLite spool (feature `sqlite`)".to_owned())
            }
        }
    }

    /// The buffer that holds events of earlier processes, for `status`, `disable` and `flush`:
    /// `None` when there is none; an error when there is one that cannot be opened now.
    pub(crate) fn existing_buffer(&self) -> Result<Option<Arc<dyn Buffer>>, String> {
        match &self.buffer {
            Some(buffer) => Ok(Some(Arc::clone(buffer))),
            None => self.open_spool(SpoolOpening::ExistingOnly),
        }
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
        self.default_endpoint = Some(Endpoint::parse(endpoint)?);
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

    pub(crate) fn audit(&self, change: AuditChange, source: AuditSource) {
        if let Some(log) = self.audit_log()
            && let Err(error) = log.append(change, source)
        {
            tracing::debug!(%error, "audit log not written");
        }
    }

    pub(crate) fn warn(&self, message: &str) {
        tracing::warn!(sdk = %self.sdk_name, "{message}");
        (self.warnings)(&format!("{} telemetry: {message}", self.sdk_name));
    }

    /// Works out the decision and where events would go, reading the environment and the
    /// state file. No network, no writes.
    pub(crate) fn resolve(&self) -> Resolution {
        let env = self.env.clone().unwrap_or_else(EnvSnapshot::from_process);
        let settings = Settings::from_env(&self.prefix, &env);
        let policy = load_policy(&self.prefix, &env, &self.policy_path);
        let state = match self.state_store() {
            Some(store) => store.load(),
            None => Ok(ConsentState::default()),
        };
        let valid_settings = settings.as_ref().ok();
        let policy_endpoint = policy
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(|policy| policy.endpoint.clone());
        let endpoint = policy_endpoint
            .or_else(|| valid_settings.and_then(|settings| settings.endpoint.clone()))
            .or_else(|| self.default_endpoint.clone());
        let mut decision = decide(DecisionInputs {
            // A policy file that cannot be used keeps telemetry off.
            policy: match &policy {
                Ok(policy) => policy.as_ref().and_then(|policy| policy.enabled),
                Err(_) => Some(false),
            },
            do_not_track: telemetry_policy::do_not_track(&env),
            invalid_setting: settings.is_err(),
            env: valid_settings.and_then(|settings| settings.enabled),
            user: state
                .as_ref()
                .ok()
                .and_then(|state| state.decision_for(self.consent_version)),
        });
        let identity = MachineIdentity::detect(&env);
        let mut delivery_problem = self.delivery_problem(endpoint.as_ref());
        if decision.enabled && delivery_problem.is_none() {
            delivery_problem = self.name_problem(&identity);
        }
        if decision.enabled && delivery_problem.is_some() {
            decision = Decision::off(DecisionReason::InvalidSetting);
        }
        let mut resolution = Resolution {
            ci: is_ci(&env),
            identity,
            policy,
            settings,
            state,
            endpoint,
            decision,
            delivery_problem,
        };
        resolution.check_extra_ca(self);
        resolution
    }

    /// Why this SDK's own names cannot be sent from this machine, if they cannot: a catalog
    /// name, the SDK's name or the runtime's name that is, or contains, this machine's user
    /// name, host name or home directory's name would carry them in every event. The message
    /// does not repeat the name, which is the machine's own.
    fn name_problem(&self, identity: &MachineIdentity) -> Option<String> {
        let scrubber = Scrubber::new(identity.clone(), Vec::<String>::new());
        let catalog_names = telemetry_model::Section::ALL
            .iter()
            .flat_map(|section| self.catalog.entries(*section))
            .map(|entry| entry.name.as_str());
        let own = [self.sdk_name.as_str(), self.runtime.as_str()];
        let reason = own
            .into_iter()
            .chain(catalog_names)
            .find_map(|name| scrubber.refuses_name(name))?;
        let what = match reason {
            telemetry_policy::ScrubReason::Username => "user name",
            telemetry_policy::ScrubReason::MachineHostname => "host name",
            telemetry_policy::ScrubReason::HomeDirectory => "home directory",
            _ => "identity",
        };
        Some(format!(
            "a name that {} declares matches this machine's {what}, so events would carry it",
            self.sdk_name
        ))
    }

    /// Why events could not be delivered anywhere, if they could not.
    fn delivery_problem(&self, endpoint: Option<&Endpoint>) -> Option<String> {
        if self.transport.is_some() {
            return None;
        }
        match endpoint {
            None => Some(format!(
                "no endpoint is configured; set {} to an https:// URL or file:///dir",
                self.prefix.variable(telemetry_policy::Setting::Endpoint)
            )),
            #[cfg(feature = "https")]
            Some(Endpoint::Https(_)) => None,
            #[cfg(not(feature = "https"))]
            Some(Endpoint::Https(_)) => Some(format!(
                "this build has no HTTPS transport (feature `https`); set {}=file:///absolute/dir to export offline",
                self.prefix.variable(telemetry_policy::Setting::Endpoint)
            )),
            Some(Endpoint::File(_)) => None,
        }
    }

    /// The scrubber for this SDK on this machine: it never rejects the catalog's names or the
    /// event's field names.
    pub(crate) fn scrubber(&self, resolution: &Resolution) -> Scrubber {
        let mut allowed: Vec<String> = telemetry_model::Section::ALL
            .iter()
            .flat_map(|section| self.catalog.entries(*section))
            .map(|entry| entry.name.to_string())
            .collect();
        allowed.push(telemetry_model::catalog::OTHER.to_owned());
        allowed.push(self.sdk_name.to_string());
        allowed.push(self.runtime.to_string());
        allowed.extend(event_field_names());
        Scrubber::new(resolution.identity.clone(), allowed)
    }

    #[cfg(feature = "https")]
    /// The user agent of HTTPS requests: the SDK and this library, with their versions.
    pub(crate) fn user_agent(&self) -> String {
        format!(
            "{}/{} sdk-telemetry/{}",
            self.sdk_name,
            self.sdk_version,
            env!("CARGO_PKG_VERSION")
        )
    }

    /// The name of the transport that `endpoint` calls for.
    pub(crate) fn transport_kind(&self, endpoint: Option<&Endpoint>) -> Option<&'static str> {
        match (&self.transport, endpoint) {
            (Some(transport), _) => Some(transport.kind()),
            (None, Some(endpoint)) => Some(endpoint.transport_name()),
            (None, None) => None,
        }
    }

    /// The session id to send with: the one in the state file while it is a random (version 4)
    /// id younger than the maximum age, else a new one, remembered. An id that is not random
    /// (hand-written, all zeros) is replaced with one message and never sent.
    pub(crate) fn session_id(&self, resolution: &Resolution) -> SessionId {
        let Ok(state) = &resolution.state else {
            // A damaged state file is left alone until the user decides again.
            return SessionId::random();
        };
        let today = UtcDate::today();
        let max_age_days = self.session_max_age.as_secs() / 86_400;
        // Most runs find a good id and write nothing.
        let (id, made, _) = state.clone().ensure_session_id(today, max_age_days);
        if !made {
            return id;
        }
        let Some(store) = self.state_store() else {
            return SessionId::random();
        };
        match store.update(|state| state.ensure_session_id(today, max_age_days)) {
            Ok((_, (id, made, replaced))) => {
                if replaced == Some(SessionReplaced::NotRandom) {
                    self.warn(&format!(
                        "the session id in {} was not a random id made by this library; it was replaced and is never sent",
                        store.path().display()
                    ));
                }
                if made {
                    let source = match resolution.decision.reason {
                        DecisionReason::Policy => AuditSource::Policy,
                        DecisionReason::Env => AuditSource::Env,
                        _ => AuditSource::Api,
                    };
                    let change = match replaced {
                        Some(_) => AuditChange::SessionReset,
                        None => AuditChange::SessionCreated,
                    };
                    self.audit(change, source);
                }
                id
            }
            Err(error) => {
                // The id of this run stays its own: it is random and linked to nothing.
                self.warn(&format!(
                    "{error}; this run uses a session id of its own that is not remembered"
                ));
                SessionId::random()
            }
        }
    }

    /// Forgets the session id when something other than the user's own decision keeps
    /// telemetry off in this run (`DO_NOT_TRACK`, the enabled variable, a policy, an invalid
    /// setting): an id that outlived such runs would be a lasting per-install identifier.
    pub(crate) fn forget_session_when_kept_off(&self, resolution: &Resolution) {
        let kept_off = !resolution.decision.enabled
            && matches!(
                resolution.decision.reason,
                DecisionReason::DoNotTrack
                    | DecisionReason::Env
                    | DecisionReason::Policy
                    | DecisionReason::InvalidSetting
            );
        let holds_id = resolution
            .state
            .as_ref()
            .is_ok_and(|state| state.session_id.is_some());
        if !(kept_off && holds_id) {
            return;
        }
        if let Some(store) = self.state_store()
            && let Err(error) = store.update(|state| state.forget_session())
        {
            tracing::debug!(%error, "session id not forgotten");
        }
    }

    /// Records the user's decision in the state file and the audit log, unless a policy file
    /// decides. A damaged state file is replaced: deciding again repairs it.
    pub(crate) fn record_decision(
        &self,
        enabled: bool,
        source: AuditSource,
    ) -> Result<ConsentState, ManageError> {
        let store = self.state_store().ok_or(ManageError::NoStateDir)?;
        self.refuse_if_policy_decides(source)?;
        let version = self.consent_version;
        let (state, ()) = store.update(|state| state.decide(enabled, UtcDate::today(), version))?;
        let change = if enabled {
            AuditChange::Enabled
        } else {
            AuditChange::Disabled
        };
        self.audit(change, source);
        Ok(state)
    }

    /// Fails when a policy file decides (or cannot be read), naming the file.
    pub(crate) fn refuse_if_policy_decides(&self, source: AuditSource) -> Result<(), ManageError> {
        let env = self.env.clone().unwrap_or_else(EnvSnapshot::from_process);
        let refusal = match load_policy(&self.prefix, &env, &self.policy_path) {
            Ok(Some(Policy {
                enabled: Some(enabled),
                path,
                ..
            })) => Some(ManageError::ForbiddenByPolicy { path, enabled }),
            Ok(_) => None,
            Err(error) => Some(ManageError::ForbiddenByPolicy {
                path: error.path().to_path_buf(),
                enabled: false,
            }),
        };
        match refusal {
            Some(refusal) => {
                if source != AuditSource::Prompt {
                    self.audit(AuditChange::RefusedByPolicy, source);
                }
                Err(refusal)
            }
            None => Ok(()),
        }
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

/// Every property name and enumerated value in the event schema: the keys of a serialized
/// event and the spellings of its enums (such as `linux` or `sdk_usage`).
fn event_field_names() -> Vec<String> {
    fn collect(node: &serde_json::Value, names: &mut Vec<String>) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                    names.extend(properties.keys().cloned());
                }
                if let Some(value) = map.get("const").and_then(serde_json::Value::as_str) {
                    names.push(value.to_owned());
                }
                if let Some(serde_json::Value::Array(values)) = map.get("enum") {
                    names.extend(
                        values
                            .iter()
                            .filter_map(|value| value.as_str().map(str::to_owned)),
                    );
                }
                map.values().for_each(|value| collect(value, names));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|value| collect(value, names)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    collect(telemetry_model::wire::event_schema().as_value(), &mut names);
    names
}

fn print_warning(message: &str) {
    // The one place the library writes to stderr: warnings the person running the program
    // must see (an invalid setting), routed through the SDK's `warnings` sink when it sets one.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("warning: {message}");
    }
}

/// The outcome of reading the environment and the state file.
pub(crate) struct Resolution {
    pub(crate) ci: bool,
    pub(crate) identity: MachineIdentity,
    pub(crate) policy: Result<Option<Policy>, PolicyError>,
    pub(crate) settings: Result<Settings, SettingError>,
    pub(crate) state: Result<ConsentState, StateError>,
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) decision: Decision,
    pub(crate) delivery_problem: Option<String>,
}

impl Resolution {
    pub(crate) fn batch_size(&self) -> usize {
        self.settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.batch_size)
            .unwrap_or(DEFAULT_BATCH_SIZE)
    }

    pub(crate) fn batch_interval(&self) -> Duration {
        self.settings
            .as_ref()
            .ok()
            .and_then(|settings| settings.batch_interval)
            .unwrap_or(DEFAULT_BATCH_INTERVAL)
    }

    pub(crate) fn debug(&self) -> bool {
        self.settings.as_ref().is_ok_and(|settings| settings.debug)
    }

    /// Problems the person running the program should hear about, one message each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = &self.policy {
            problems.push(format!("{error}; telemetry is off"));
        }
        if let Err(error) = &self.settings {
            problems.push(format!("{error}; telemetry is off for this run"));
        }
        if let Err(error) = &self.state {
            problems.push(error.to_string());
        }
        if let (Some(problem), true) = (&self.delivery_problem, self.wanted_on()) {
            problems.push(format!("{problem}; telemetry is off for this run"));
        }
        problems
    }

    /// Whether telemetry would be on if events could be delivered.
    fn wanted_on(&self) -> bool {
        self.decision.enabled
            || (self.decision.reason == DecisionReason::InvalidSetting && self.settings.is_ok())
    }

    /// The policy file in force (or the one that could not be used).
    pub(crate) fn policy_file(&self) -> Option<&Path> {
        match &self.policy {
            Ok(policy) => policy.as_ref().map(|policy| policy.path.as_path()),
            Err(error) => Some(error.path()),
        }
    }

    /// Whether a policy file allows the consent prompt.
    pub(crate) fn policy_allows_prompt(&self) -> bool {
        match &self.policy {
            Ok(policy) => policy.as_ref().is_none_or(|policy| policy.allow_prompt),
            Err(_) => false,
        }
    }

    /// A CA file that cannot be used stops the HTTPS transport from being built: found here,
    /// where the decision is made, so that `status` says off when a process would run off. It
    /// builds the transport only when telemetry would be on and an extra CA is configured.
    fn check_extra_ca(&mut self, config: &TelemetryConfig) {
        #[cfg(feature = "https")]
        if self.decision.enabled
            && config.transport.is_none()
            && self.ca_file().is_some()
            && matches!(self.endpoint, Some(Endpoint::Https(_)))
            && let Err(problem) = config.transport_for(self)
        {
            self.delivery_problem = Some(problem);
            self.decision = Decision::off(DecisionReason::InvalidSetting);
        }
        #[cfg(not(feature = "https"))]
        let _ = config;
    }

    #[cfg(feature = "https")]
    /// The extra CA for a self-hosted HTTPS endpoint: the policy's, else the setting's.
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        let from_policy = match &self.policy {
            Ok(Some(policy)) => policy.ca_file.as_deref(),
            _ => None,
        };
        from_policy.or_else(|| {
            self.settings
                .as_ref()
                .ok()
                .and_then(|settings| settings.ca_file.as_deref())
        })
    }
}
