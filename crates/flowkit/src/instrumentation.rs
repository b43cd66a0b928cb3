//! How flowkit maps its own types to catalog names: the one place that talks to telemetry.
//!
//! Everything flowkit reports goes through [`Instruments`], whose fields are typed catalog
//! handles resolved once at start-up. Flow names, task names, parameters, error messages and
//! paths have no way in: no method here accepts a string that could reach an event.

use telemetry::{
    BlockType, Catalog, CatalogError, CommandName, ConfigErrorKind, ExceptionType, Feature, Metric,
    UnknownName,
};

use crate::flow::{BlockKind, ErrorKind};

/// flowkit's catalog, embedded in the binary.
pub const CATALOG_TOML: &str = include_str!("../catalog.toml");

/// Why the embedded catalog does not fit the code (a bug in flowkit, caught by its tests).
#[derive(Debug, thiserror::Error)]
pub enum InstrumentsError {
    /// The catalog does not parse.
    #[error("flowkit's catalog is invalid: {0}")]
    Catalog(#[from] CatalogError),
    /// The code uses a name the catalog does not declare.
    #[error("flowkit's catalog is incomplete: {0}")]
    Unknown(#[from] UnknownName),
}

/// The features flowkit reports.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Each field is named after the catalog entry it stands for.
pub struct Features {
    pub async_tasks: Feature,
    pub blocks: Feature,
    pub caching: Feature,
    pub concurrent_task_runner: Feature,
    pub deployments: Feature,
    pub parameters: Feature,
    pub retries: Feature,
    pub schedules: Feature,
    pub sequential_task_runner: Feature,
    pub serve: Feature,
    pub task_timeouts: Feature,
}

/// The metrics flowkit reports.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Each field is named after the catalog entry it stands for.
pub struct Metrics {
    pub blocks_registered: Metric,
    pub cache_hits: Metric,
    pub deployments_defined: Metric,
    pub flow_runs: Metric,
    pub flows_defined: Metric,
    pub task_retries: Metric,
    pub task_runs: Metric,
    pub tasks_defined: Metric,
}

/// The configuration errors flowkit reports.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Each field is named after the catalog entry it stands for.
pub struct ConfigErrors {
    pub invalid_parameter: ConfigErrorKind,
    pub unknown_block: ConfigErrorKind,
    pub invalid_schedule: ConfigErrorKind,
}

/// The CLI commands flowkit reports.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)] // Each field is named after the catalog entry it stands for.
pub struct Commands {
    pub demo: CommandName,
    pub simulate: CommandName,
}

/// Every catalog handle flowkit uses, resolved once.
#[derive(Debug)]
pub struct Instruments {
    /// The parsed catalog.
    pub catalog: Catalog,
    /// Feature handles.
    pub features: Features,
    /// Metric handles.
    pub metrics: Metrics,
    /// Configuration error handles.
    pub config_errors: ConfigErrors,
    /// Command handles.
    pub commands: Commands,
    block_types: [BlockType; 4],
    exception_types: [ExceptionType; 7],
}

impl Instruments {
    /// Parses the embedded catalog and resolves every handle.
    pub fn new() -> Result<Instruments, InstrumentsError> {
        let catalog = Catalog::from_toml(CATALOG_TOML)?;
        let feature = |name| catalog.feature(name);
        let metric = |name| catalog.metric(name);
        let features = Features {
            async_tasks: feature("async_tasks")?,
            blocks: feature("blocks")?,
            caching: feature("caching")?,
            concurrent_task_runner: feature("concurrent_task_runner")?,
            deployments: feature("deployments")?,
            parameters: feature("parameters")?,
            retries: feature("retries")?,
            schedules: feature("schedules")?,
            sequential_task_runner: feature("sequential_task_runner")?,
            serve: feature("serve")?,
            task_timeouts: feature("task_timeouts")?,
        };
        let metrics = Metrics {
            blocks_registered: metric("blocks_registered")?,
            cache_hits: metric("cache_hits")?,
            deployments_defined: metric("deployments_defined")?,
            flow_runs: metric("flow_runs")?,
            flows_defined: metric("flows_defined")?,
            task_retries: metric("task_retries")?,
            task_runs: metric("task_runs")?,
            tasks_defined: metric("tasks_defined")?,
        };
        let config_errors = ConfigErrors {
            invalid_parameter: catalog.config_error("invalid_parameter")?,
            unknown_block: catalog.config_error("unknown_block")?,
            invalid_schedule: catalog.config_error("invalid_schedule")?,
        };
        let commands = Commands {
            demo: catalog.command("demo")?,
            simulate: catalog.command("simulate")?,
        };
        let block_types = [
            catalog.block_type("secret")?,
            catalog.block_type("s3_bucket")?,
            catalog.block_type("webhook")?,
            catalog.block_type("database_credentials")?,
        ];
        let exception_types = [
            "timeout_error",
            "validation_error",
            "connection_error",
            "value_error",
            "permission_error",
            "cancelled_error",
            "crash",
        ]
        .map(|name| catalog.exception_type(name).unwrap_or(ExceptionType::OTHER));
        Ok(Instruments {
            catalog,
            features,
            metrics,
            config_errors,
            commands,
            block_types,
            exception_types,
        })
    }

    /// The block type of a block; the mapping is a `match`, so a new block kind cannot be
    /// reported until someone declares it.
    pub fn block_type(&self, kind: BlockKind) -> BlockType {
        let index = match kind {
            BlockKind::Secret => 0,
            BlockKind::S3Bucket => 1,
            BlockKind::Webhook => 2,
            BlockKind::DatabaseCredentials => 3,
        };
        self.block_types[index]
    }

    /// The exception type of an error. User-defined kinds are reported as `other`: their
    /// names are the user's words and never leave the process.
    pub fn exception_type(&self, kind: &ErrorKind) -> ExceptionType {
        let index = match kind {
            ErrorKind::Timeout => 0,
            ErrorKind::Validation => 1,
            ErrorKind::Connection => 2,
            ErrorKind::Value => 3,
            ErrorKind::Permission => 4,
            ErrorKind::Cancelled => 5,
            ErrorKind::Crashed => 6,
            ErrorKind::Custom(_) => return ExceptionType::OTHER,
        };
        self.exception_types[index]
    }
}
