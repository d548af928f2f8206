//! What a finished task tells about its run.

use std::sync::Arc;
use std::time::Duration;

/// How one task ran: where, how long, and what it used. Available from
/// [`TaskFuture::report`](crate::TaskFuture::report) once the task has finished (with a
/// value or an error); a task cancelled before it started has none.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskReport {
    /// The worker's name (`worker-1`, ...).
    pub worker: String,
    /// The machine that ran the task, for a [`ClusterExecutor`](crate::cluster::ClusterExecutor)'s
    /// tasks; `None` for the local pools.
    pub host: Option<String>,
    /// The worker's process id: the pool's own process for the thread pool, the worker
    /// process's for the process pool.
    pub pid: u32,
    /// Wall time from the start of instantiation to the end of the call.
    pub elapsed: Duration,
    /// Fuel consumed, when fuel was metered.
    pub fuel_consumed: Option<u64>,
    /// The largest linear memory the instance reached, in bytes.
    pub peak_memory: u64,
    /// The task's stdout, when the executor captures output. Past the capture limit it ends
    /// with the line `[wasmpool: output cut at LIMIT]` (and
    /// [`stdout_truncated`](TaskReport::stdout_truncated) is set).
    pub stdout: Option<String>,
    /// The task's stderr, when the executor captures output; cut as `stdout` is.
    pub stderr: Option<String>,
    /// Whether the captured stdout was cut at the capture limit
    /// ([`OutputMode::Capture`](crate::OutputMode::Capture)): the task wrote more than was
    /// kept. Set by the pool, never by what the guest prints.
    pub stdout_truncated: bool,
    /// Whether the captured stderr was cut at the capture limit.
    pub stderr_truncated: bool,
}

/// A [`TaskReport`] as an executor records it: the worker's name is shared, not copied, and
/// becomes the report's `worker` only when [`TaskFuture::report`](crate::TaskFuture::report)
/// asks for one (most tasks are never asked: no allocation for them).
#[derive(Debug, Clone)]
pub(crate) struct RunReport {
    pub(crate) worker: Arc<str>,
    /// Everything else; its `worker` is empty.
    pub(crate) report: TaskReport,
}

impl RunReport {
    /// The report as [`TaskFuture::report`](crate::TaskFuture::report) returns it.
    pub(crate) fn to_report(&self) -> TaskReport {
        TaskReport {
            worker: self.worker.to_string(),
            ..self.report.clone()
        }
    }
}

impl From<TaskReport> for RunReport {
    fn from(mut report: TaskReport) -> RunReport {
        RunReport {
            worker: Arc::from(std::mem::take(&mut report.worker)),
            report,
        }
    }
}
