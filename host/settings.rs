//! What a builder sets for every task of its executor: [`TaskSettings`] and the builder
//! methods that fill it in (`task_settings_setters!`), and the [`TaskEnv`] a worker hands to
//! each task it runs.

use std::sync::Arc;

use crate::error::BuildError;
use crate::output::{Destination, OutputMode};
use crate::sandbox::{Budget, Capabilities};

/// What every task of an executor gets: set on either pool's builder and carried to each
/// worker (over the protocol, for the process pool).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskSettings {
    pub(crate) output: OutputMode,
    /// The executor's budget; a call's own budget overrides it field by field.
    pub(crate) budget: Budget,
    pub(crate) capabilities: Capabilities,
    pub(crate) policy: InstancePolicy,
    /// An export called once on every new instance before its first task.
    pub(crate) initializer: Option<String>,
}

/// The builder methods that set a [`TaskSettings`], for builders with a `settings` field
/// (both pools' builders have the same ones).
macro_rules! task_settings_setters {
    () => {
        /// What happens to the stdout/stderr of tasks (default: forwarded line by line,
        /// prefixed with the worker's name).
        pub fn output(mut self, mode: $crate::OutputMode) -> Self {
            self.settings.output = mode;
            self
        }

        /// The budget of every task (a call's own budget overrides it field by field).
        /// Default: no deadline, no fuel limit, [`DEFAULT_MAX_MEMORY`](crate::DEFAULT_MAX_MEMORY).
        pub fn budget(mut self, budget: $crate::Budget) -> Self {
            self.settings.budget = budget;
            self
        }

        /// What every task may reach (default: nothing but clocks and random).
        pub fn capabilities(mut self, capabilities: $crate::Capabilities) -> Self {
            self.settings.capabilities = capabilities;
            self
        }

        /// Fresh instance per task (the default), or reuse of a worker's instance.
        pub fn instance_policy(mut self, policy: $crate::InstancePolicy) -> Self {
            self.settings.policy = policy;
            self
        }

        /// An export (taking no arguments) called once on every new instance before its
        /// first task: `concurrent.futures`' `initializer=`. If it fails, the pool breaks:
        /// the task and every queued one fail with
        /// [`TaskError::BrokenPool`](crate::TaskError::BrokenPool), and `submit` is refused.
        pub fn initializer(mut self, export: impl Into<String>) -> Self {
            self.settings.initializer = Some(export.into());
            self
        }
    };
}
pub(crate) use task_settings_setters;

/// What a worker gives every task it runs.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub(crate) worker_name: Arc<str>,
    pub(crate) settings: TaskSettings,
    /// Where the lines its tasks print go.
    pub(crate) destination: Destination,
}

/// Which instance a task runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InstancePolicy {
    /// A fresh instance for every task: nothing a task leaves in its memory is seen by
    /// the next. The default.
    #[default]
    Fresh,
    /// A worker keeps its instance for up to `max_tasks` tasks of the same component,
    /// trading isolation between tasks for speed (no instantiation per task). An instance
    /// that trapped or hit a limit is always discarded. Tasks with a deadline or their own
    /// arguments still get a fresh instance.
    Reuse {
        /// How many tasks one instance serves at most.
        max_tasks: usize,
    },
}

/// The most workers a pool may have: each is a thread (or a process) with its own stack
/// and instance, so a count beyond this is a mistake, not a wish.
pub const MAX_WORKERS: usize = 1024;

/// How many workers a pool builder starts when it is not told: one per CPU this process
/// may use (1 if that is unknown), as `os.process_cpu_count()` gives
/// `ProcessPoolExecutor`.
///
/// ```
/// assert!(wasmpool::default_workers() >= 1);
/// ```
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many workers a pool builder starts: `workers` if given (0 and more than
/// [`MAX_WORKERS`] are refused), otherwise [`default_workers`].
pub(crate) fn worker_count(workers: Option<usize>) -> Result<usize, BuildError> {
    match workers {
        Some(0) => Err(BuildError::Invalid("workers must be at least 1".into())),
        Some(n) if n > MAX_WORKERS => Err(BuildError::Invalid(format!(
            "{n} workers is more than the limit of {MAX_WORKERS}"
        ))),
        Some(n) => Ok(n),
        None => Ok(default_workers()),
    }
}
