//! How flowkit maps its own types to catalog names: the one place that talks to telemetry.
//!
//! The handles come from `catalog.toml` at compile time (`telemetry::catalog!`): a name used
//! here that the catalog does not declare does not compile. `Instruments` owns the
//! [`Telemetry`] handle and says in flowkit's words what happened (a block was registered, a
//! task was retried); the rest of flowkit never calls telemetry itself. Flow names, task names,
//! parameters, error messages and paths have no way in: no method here accepts a string.

use std::time::Duration;

use telemetry::{
    BlockType, CommandName, ExceptionType, FeatureSet, Integration, RunOutcome, RunRecord,
    Telemetry,
};

use crate::flow::{BlockKind, ErrorKind, Flow, Params, TaskRunner};

telemetry::catalog!("catalog.toml");

/// What flowkit reports, in flowkit's words.
#[derive(Debug)]
pub(crate) struct Instruments {
    telemetry: Telemetry,
}

impl Instruments {
    pub(crate) fn new(telemetry: Telemetry) -> Instruments {
        Instruments { telemetry }
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub(crate) fn command_used(&self, command: CommandName) {
        self.telemetry.command_used(command);
    }

    pub(crate) fn integration_loaded(&self, integration: Integration, loaded: bool) {
        if loaded {
            self.telemetry.integration_installed(integration);
        } else {
            self.telemetry.integration_import_failed(integration);
        }
    }

    pub(crate) fn invalid_parameter(&self) {
        self.telemetry
            .config_error(config_errors::INVALID_PARAMETER);
    }

    pub(crate) fn unknown_block(&self) {
        self.telemetry.config_error(config_errors::UNKNOWN_BLOCK);
    }

    pub(crate) fn block_registered(&self, kind: BlockKind) {
        self.telemetry.count(metrics::BLOCKS_REGISTERED, 1);
        self.block_used(kind);
    }

    pub(crate) fn block_used(&self, kind: BlockKind) {
        self.telemetry.block_type_used(block_type(kind));
    }

    pub(crate) fn deployments_defined(&self, deployments: usize) {
        self.telemetry
            .count(metrics::DEPLOYMENTS_DEFINED, deployments as u64);
    }

    /// A flow this process runs for the first time, and its tasks.
    pub(crate) fn flow_defined(&self, tasks: usize) {
        self.telemetry.count(metrics::FLOWS_DEFINED, 1);
        self.telemetry.count(metrics::TASKS_DEFINED, tasks as u64);
    }

    pub(crate) fn flow_run_started(&self) {
        self.telemetry.count(metrics::FLOW_RUNS, 1);
    }

    pub(crate) fn task_run_started(&self) {
        self.telemetry.count(metrics::TASK_RUNS, 1);
    }

    pub(crate) fn cache_hit(&self) {
        self.telemetry.count(metrics::CACHE_HITS, 1);
    }

    pub(crate) fn task_retried(&self) {
        self.telemetry.count(metrics::TASK_RETRIES, 1);
    }

    pub(crate) fn tasks_running(&self, running: usize) {
        self.telemetry.observe_concurrency(running as u64);
    }

    /// One finished flow run: it becomes a `run` event.
    pub(crate) fn run_finished(
        &self,
        features: FeatureSet,
        duration: Duration,
        outcome: RunOutcome,
        error: Option<&ErrorKind>,
    ) {
        self.telemetry.record_run(RunRecord {
            features,
            duration,
            outcome,
            exception: error.map(exception_type),
        });
    }
}

/// The features a run uses, from the flow's configuration (never from its names).
pub(crate) fn features_of(flow: &Flow, params: &Params) -> FeatureSet {
    let mut set = FeatureSet::new().with(match flow.runner {
        TaskRunner::Sequential => features::SEQUENTIAL_TASK_RUNNER,
        TaskRunner::Concurrent { .. } => features::CONCURRENT_TASK_RUNNER,
    });
    if !params.is_empty() {
        set.insert(features::PARAMETERS);
    }
    if !flow.blocks.is_empty() {
        set.insert(features::BLOCKS);
    }
    for task in &flow.tasks {
        if task.retries > 0 {
            set.insert(features::RETRIES);
        }
        if task.cache {
            set.insert(features::CACHING);
        }
        if task.is_async {
            set.insert(features::ASYNC_TASKS);
        }
        if task.timeout.is_some() {
            set.insert(features::TASK_TIMEOUTS);
        }
    }
    set
}

/// The features a served deployment's run adds to its flow's.
pub(crate) fn served_features(scheduled: bool) -> FeatureSet {
    let served = FeatureSet::new()
        .with(features::DEPLOYMENTS)
        .with(features::SERVE);
    if scheduled {
        served.with(features::SCHEDULES)
    } else {
        served
    }
}

/// The block type of a block; a `match`, so a new block kind cannot be reported until someone
/// declares it.
fn block_type(kind: BlockKind) -> BlockType {
    match kind {
        BlockKind::Secret => block_types::SECRET,
        BlockKind::S3Bucket => block_types::S3_BUCKET,
        BlockKind::Webhook => block_types::WEBHOOK,
        BlockKind::DatabaseCredentials => block_types::DATABASE_CREDENTIALS,
    }
}

/// The exception type of an error. User-defined kinds are reported as `other`: their names are
/// the user's words and never leave the process.
fn exception_type(kind: &ErrorKind) -> ExceptionType {
    match kind {
        ErrorKind::Timeout => exception_types::TIMEOUT_ERROR,
        ErrorKind::Validation => exception_types::VALIDATION_ERROR,
        ErrorKind::Connection => exception_types::CONNECTION_ERROR,
        ErrorKind::Value => exception_types::VALUE_ERROR,
        ErrorKind::Permission => exception_types::PERMISSION_ERROR,
        ErrorKind::Cancelled => exception_types::CANCELLED_ERROR,
        ErrorKind::Crashed => exception_types::CRASH,
        ErrorKind::Custom(_) => ExceptionType::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration flowkit starts from reads the same catalog its handles came from, so
    /// no recording call is refused.
    #[test]
    fn the_configured_catalog_accepts_every_generated_handle() {
        let config = crate::telemetry_config(None, telemetry::Interface::Programmatic)
            .unwrap_or_else(|error| panic!("flowkit's configuration is valid: {error}"));
        let catalog = config.catalog();
        assert_eq!(catalog.id(), CATALOG_ID);
        let names = [
            (
                catalog.exception_type_name(exception_type(&ErrorKind::Crashed)),
                "crash",
            ),
            (
                catalog.exception_type_name(exception_type(&ErrorKind::Custom("crash".into()))),
                "other",
            ),
        ];
        for (name, expected) in names {
            assert_eq!(name.as_ref().map(telemetry::Name::as_str), Some(expected));
        }
        assert_eq!(
            catalog
                .block_type_name(block_type(BlockKind::S3Bucket))
                .map(telemetry::Name::as_str),
            Some("s3_bucket")
        );
    }
}
