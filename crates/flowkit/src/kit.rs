//! The flowkit runtime: runs flows and reports what it may through telemetry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use telemetry::{CommandName, FeatureSet, Integration, RunOutcome, Telemetry, TelemetryConfig};

use crate::flow::{
    Block, Deployment, ErrorKind, Flow, Params, Task, TaskContext, TaskError, TaskOutput,
    TaskRunner,
};
use crate::instrumentation::{self, Instruments};

/// The result of one flow run.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRun {
    /// How the run ended.
    pub outcome: RunOutcome,
    /// The error that ended it, if any.
    pub error: Option<TaskError>,
    /// Each successful task's output, by task name.
    pub outputs: BTreeMap<String, TaskOutput>,
    /// How long the run took.
    pub duration: Duration,
}

/// The flowkit runtime. Dropping it stops telemetry, delivering what it can within a bounded time.
#[derive(Debug)]
pub struct FlowKit {
    instruments: Instruments,
    blocks: Mutex<BTreeMap<String, Block>>,
    cache: Mutex<HashMap<String, TaskOutput>>,
    seen_flows: Mutex<HashSet<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FlowKit {
    /// Starts flowkit with the given telemetry configuration (see [`crate::telemetry_config`]).
    pub fn start(config: &TelemetryConfig) -> FlowKit {
        FlowKit {
            instruments: Instruments::new(config.start()),
            blocks: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(HashMap::new()),
            seen_flows: Mutex::new(HashSet::new()),
        }
    }

    /// The telemetry handle, for status and flushing.
    pub fn telemetry(&self) -> &Telemetry {
        self.instruments.telemetry()
    }

    /// Registers a block so that flows can use it by name.
    pub fn register_block(&self, block: Block) {
        self.instruments.block_registered(block.kind);
        lock(&self.blocks).insert(block.name.clone(), block);
    }

    /// Reports whether one of flowkit's integration packages loaded (a handle from
    /// [`instrumentation::integrations`]); a package flowkit does not know is reported only as
    /// [`Integration::OTHER`].
    pub fn integration_loaded(&self, integration: Integration, loaded: bool) {
        self.instruments.integration_loaded(integration, loaded);
    }

    /// Reports that a parameter was not given as `key=value`.
    pub fn invalid_parameter(&self) {
        self.instruments.invalid_parameter();
    }

    /// Reports that a CLI command ran (a handle from [`instrumentation::commands`]).
    pub fn command_used(&self, command: CommandName) {
        self.instruments.command_used(command);
    }

    /// Runs a flow once with the given parameters.
    pub fn run(&self, flow: &Flow, params: &Params) -> FlowRun {
        self.run_with(flow, params, FeatureSet::new())
    }

    /// Serves deployments: runs each deployment's flow `rounds` times with its parameters.
    /// A real server waits for each schedule; this example runs the rounds back to back.
    pub fn serve(&self, deployments: &[Deployment], rounds: usize) -> Vec<FlowRun> {
        self.instruments.deployments_defined(deployments.len());
        let mut runs = Vec::new();
        for _ in 0..rounds {
            for deployment in deployments {
                let extra = instrumentation::served_features(deployment.interval.is_some());
                runs.push(self.run_with(&deployment.flow, &deployment.params, extra));
            }
        }
        runs
    }

    fn run_with(&self, flow: &Flow, params: &Params, extra: FeatureSet) -> FlowRun {
        let started = Instant::now();
        let features = instrumentation::features_of(flow, params).union(extra);
        self.note_flow(flow);
        self.instruments.flow_run_started();
        let (outputs, error) = match self.check_blocks(flow) {
            Ok(()) => self.run_tasks(flow, params),
            Err(error) => (BTreeMap::new(), Some(error)),
        };
        let outcome = match &error {
            None => RunOutcome::Completed,
            Some(error) if error.kind == ErrorKind::Cancelled => RunOutcome::Cancelled,
            Some(error) if is_crash(error) => RunOutcome::Crashed,
            Some(_) => RunOutcome::Failed,
        };
        let duration = started.elapsed();
        self.instruments.run_finished(
            features,
            duration,
            outcome,
            error.as_ref().map(|error| &error.kind),
        );
        FlowRun {
            outcome,
            error,
            outputs,
            duration,
        }
    }

    /// Counts a flow and its tasks the first time this process runs it.
    fn note_flow(&self, flow: &Flow) {
        if lock(&self.seen_flows).insert(flow.name.clone()) {
            self.instruments.flow_defined(flow.tasks.len());
        }
    }

    fn check_blocks(&self, flow: &Flow) -> Result<(), TaskError> {
        let blocks = lock(&self.blocks);
        for name in &flow.blocks {
            match blocks.get(name) {
                Some(block) => self.instruments.block_used(block.kind),
                None => {
                    self.instruments.unknown_block();
                    return Err(TaskError::new(
                        ErrorKind::Validation,
                        format!("block {name:?} is not registered"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn run_tasks(
        &self,
        flow: &Flow,
        params: &Params,
    ) -> (BTreeMap<String, TaskOutput>, Option<TaskError>) {
        let mut outputs = BTreeMap::new();
        match flow.runner {
            TaskRunner::Sequential => {
                self.instruments.tasks_running(1);
                for task in &flow.tasks {
                    match self.run_task(flow, task, params) {
                        Ok(output) => {
                            outputs.insert(task.name.clone(), output);
                        }
                        Err(error) => return (outputs, Some(error)),
                    }
                }
                (outputs, None)
            }
            TaskRunner::Concurrent { max_workers } => {
                let mut first_error = None;
                for chunk in flow.tasks.chunks(max_workers.max(1)) {
                    self.instruments.tasks_running(chunk.len());
                    let results: Vec<(String, Result<TaskOutput, TaskError>)> =
                        std::thread::scope(|scope| {
                            let handles: Vec<_> = chunk
                                .iter()
                                .map(|task| {
                                    (
                                        task.name.clone(),
                                        scope.spawn(|| self.run_task(flow, task, params)),
                                    )
                                })
                                .collect();
                            handles
                                .into_iter()
                                .map(|(name, handle)| {
                                    let result = handle.join().unwrap_or_else(|_| Err(crash()));
                                    (name, result)
                                })
                                .collect()
                        });
                    for (name, result) in results {
                        match result {
                            Ok(output) => {
                                outputs.insert(name, output);
                            }
                            Err(error) => {
                                first_error.get_or_insert(error);
                            }
                        }
                    }
                }
                (outputs, first_error)
            }
        }
    }

    fn run_task(&self, flow: &Flow, task: &Task, params: &Params) -> Result<TaskOutput, TaskError> {
        // The cache key holds the user's names and parameters; it stays in this process.
        let cache_key = task
            .cache
            .then(|| format!("{}\u{0}{}\u{0}{params:?}", flow.name, task.name));
        if let Some(key) = &cache_key
            && let Some(output) = lock(&self.cache).get(key)
        {
            self.instruments.cache_hit();
            return Ok(output.clone());
        }
        self.instruments.task_run_started();
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let context = TaskContext { params, attempt };
            let result = catch_unwind(AssertUnwindSafe(|| (task.function)(&context)))
                .unwrap_or_else(|_| Err(crash()));
            let result = match (result, task.timeout) {
                (Ok(_), Some(timeout)) if started.elapsed() > timeout => Err(TaskError::new(
                    ErrorKind::Timeout,
                    format!("task {:?} took longer than {timeout:?}", task.name),
                )),
                (result, _) => result,
            };
            match result {
                Ok(output) => {
                    if let Some(key) = cache_key {
                        lock(&self.cache).insert(key, output.clone());
                    }
                    return Ok(output);
                }
                Err(error) if attempt <= task.retries && !is_crash(&error) => {
                    self.instruments.task_retried();
                    if !task.retry_delay.is_zero() {
                        std::thread::sleep(task.retry_delay);
                    }
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn crash() -> TaskError {
    TaskError::new(ErrorKind::Crashed, "the task panicked")
}

fn is_crash(error: &TaskError) -> bool {
    error.kind == ErrorKind::Crashed
}
