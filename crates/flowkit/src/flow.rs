//! Flows, tasks and their options: what a flowkit user writes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Parameters of a flow run: the user's data, never reported.
pub type Params = BTreeMap<String, String>;

/// What a task returns.
pub type TaskOutput = serde_json::Value;

/// The kind of a task error. flowkit reports built-in kinds by their catalog name and
/// user-defined kinds as `other`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The task took longer than its timeout.
    Timeout,
    /// The input was invalid.
    Validation,
    /// A service could not be reached.
    Connection,
    /// A value was invalid.
    Value,
    /// Access was denied.
    Permission,
    /// The run was cancelled.
    Cancelled,
    /// The task panicked.
    Crashed,
    /// A kind the user named; the name stays local.
    Custom(String),
}

/// A task failure, with a message that may contain anything (and so is never reported).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// What kind of failure it was.
    pub kind: ErrorKind,
    /// The user's description of what went wrong.
    pub message: String,
}

impl TaskError {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> TaskError {
        TaskError {
            kind,
            message: message.into(),
        }
    }
}

/// What a task can see while it runs.
#[derive(Debug)]
pub struct TaskContext<'a> {
    /// The flow run's parameters.
    pub params: &'a Params,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

type TaskFn = dyn Fn(&TaskContext<'_>) -> Result<TaskOutput, TaskError> + Send + Sync;

/// One step of a flow.
#[derive(Clone)]
pub struct Task {
    pub(crate) name: String,
    pub(crate) function: Arc<TaskFn>,
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) cache: bool,
    pub(crate) is_async: bool,
    pub(crate) timeout: Option<Duration>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.name)
            .field("retries", &self.retries)
            .field("cache", &self.cache)
            .field("is_async", &self.is_async)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// A task that runs `function`.
    pub fn new(
        name: impl Into<String>,
        function: impl Fn(&TaskContext<'_>) -> Result<TaskOutput, TaskError> + Send + Sync + 'static,
    ) -> Task {
        Task {
            name: name.into(),
            function: Arc::new(function),
            retries: 0,
            retry_delay: Duration::ZERO,
            cache: false,
            is_async: false,
            timeout: None,
        }
    }

    /// Retries a failed run up to `retries` times, waiting `delay` between attempts.
    #[must_use]
    pub fn retries(mut self, retries: u32, delay: Duration) -> Task {
        self.retries = retries;
        self.retry_delay = delay;
        self
    }

    /// Caches the result by the flow run's parameters, and reuses it in later runs.
    #[must_use]
    pub fn cached(mut self) -> Task {
        self.cache = true;
        self
    }

    /// Marks the task asynchronous: it may overlap with other tasks under a concurrent runner.
    #[must_use]
    pub fn asynchronous(mut self) -> Task {
        self.is_async = true;
        self
    }

    /// Fails an attempt that takes longer than `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Task {
        self.timeout = Some(timeout);
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How a flow runs its tasks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskRunner {
    /// One after another, stopping at the first failure.
    #[default]
    Sequential,
    /// All at once on threads, at most `max_workers` at a time.
    Concurrent {
        /// The most tasks running at once.
        max_workers: usize,
    },
}

/// Kinds of blocks: stored configuration that flows use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockKind {
    /// A secret value.
    Secret,
    /// A storage bucket.
    S3Bucket,
    /// A webhook to notify.
    Webhook,
    /// Database credentials.
    DatabaseCredentials,
}

/// A named, stored piece of configuration. The name and value are the user's and stay local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The user's name for the block.
    pub name: String,
    /// What kind of block it is (the only part that is reported).
    pub kind: BlockKind,
    /// The stored value.
    pub value: String,
}

/// A sequence of tasks with options.
#[derive(Clone, Debug)]
pub struct Flow {
    pub(crate) name: String,
    pub(crate) tasks: Vec<Task>,
    pub(crate) runner: TaskRunner,
    pub(crate) blocks: Vec<String>,
}

impl Flow {
    /// An empty flow.
    pub fn new(name: impl Into<String>) -> Flow {
        Flow {
            name: name.into(),
            tasks: Vec::new(),
            runner: TaskRunner::Sequential,
            blocks: Vec::new(),
        }
    }

    /// Adds a task.
    #[must_use]
    pub fn task(mut self, task: Task) -> Flow {
        self.tasks.push(task);
        self
    }

    /// Chooses how tasks run.
    #[must_use]
    pub fn runner(mut self, runner: TaskRunner) -> Flow {
        self.runner = runner;
        self
    }

    /// Declares that the flow loads a registered block by name.
    #[must_use]
    pub fn uses_block(mut self, name: impl Into<String>) -> Flow {
        self.blocks.push(name.into());
        self
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The flow's tasks.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }
}

/// A flow made runnable on a schedule by a long-running server.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub(crate) name: String,
    pub(crate) flow: Flow,
    pub(crate) interval: Option<Duration>,
    pub(crate) params: Params,
}

impl Deployment {
    /// A deployment of `flow`.
    pub fn new(name: impl Into<String>, flow: Flow) -> Deployment {
        Deployment {
            name: name.into(),
            flow,
            interval: None,
            params: Params::new(),
        }
    }

    /// Runs the flow every `interval` when served.
    #[must_use]
    pub fn every(mut self, interval: Duration) -> Deployment {
        self.interval = Some(interval);
        self
    }

    /// Default parameters for runs of this deployment.
    #[must_use]
    pub fn params(mut self, params: Params) -> Deployment {
        self.params = params;
        self
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
