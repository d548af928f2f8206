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

/// A [`TaskReport`] as an executor records it, kept small because every finished future
/// holds one: the worker's name is shared, not copied, and becomes the report's `worker`
/// only when [`TaskFuture::report`](crate::TaskFuture::report) asks for one (most tasks are
/// never asked); what few tasks have (a host, captured output) is boxed apart.
#[derive(Debug, Clone)]
pub(crate) struct RunReport {
    worker: Arc<str>,
    pid: u32,
    elapsed: Duration,
    fuel_consumed: Option<u64>,
    peak_memory: u64,
    /// `None` when the report has no host and nothing was captured.
    rare: Option<Box<RareParts>>,
}

/// The parts of a report that only some tasks have.
#[derive(Debug, Clone, Default)]
struct RareParts {
    host: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    stdout_truncated: bool,
    stderr_truncated: bool,
}

impl RunReport {
    /// The report as [`TaskFuture::report`](crate::TaskFuture::report) returns it.
    pub(crate) fn to_report(&self) -> TaskReport {
        let rare = self.rare.as_deref().cloned().unwrap_or_default();
        TaskReport {
            worker: self.worker.to_string(),
            host: rare.host,
            pid: self.pid,
            elapsed: self.elapsed,
            fuel_consumed: self.fuel_consumed,
            peak_memory: self.peak_memory,
            stdout: rare.stdout,
            stderr: rare.stderr,
            stdout_truncated: rare.stdout_truncated,
            stderr_truncated: rare.stderr_truncated,
        }
    }
}

impl RunReport {
    /// `report` as run by `worker` (whatever `report.worker` says is dropped).
    pub(crate) fn with_worker(worker: Arc<str>, report: TaskReport) -> RunReport {
        let rare = RareParts {
            host: report.host,
            stdout: report.stdout,
            stderr: report.stderr,
            stdout_truncated: report.stdout_truncated,
            stderr_truncated: report.stderr_truncated,
        };
        let has_rare = rare.host.is_some()
            || rare.stdout.is_some()
            || rare.stderr.is_some()
            || rare.stdout_truncated
            || rare.stderr_truncated;
        RunReport {
            worker,
            pid: report.pid,
            elapsed: report.elapsed,
            fuel_consumed: report.fuel_consumed,
            peak_memory: report.peak_memory,
            rare: has_rare.then(|| Box::new(rare)),
        }
    }
}

impl From<TaskReport> for RunReport {
    fn from(mut report: TaskReport) -> RunReport {
        let worker = Arc::from(std::mem::take(&mut report.worker));
        RunReport::with_worker(worker, report)
    }
}
