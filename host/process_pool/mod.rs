//! The process pool: each worker is a separate process that embeds wasmtime, so a task
//! that crashes its host code, or a worker that is killed, cannot take the pool's process
//! down with it.
//!
//! What users need to know (worker program, channel, when a task is running, broken pool)
//! is in the docs of [`ProcessPoolExecutor`].
//!
//! ## Data flow
//!
//! ```text
//!  caller              pool process                                         worker process (worker.rs)
//!  ──────              ────────────                                         ──────────────────────────
//!  submit(call) ─► pool.rs: RunTask ─framing::append─► Batch ─► State::on_submit ─► pump (state.rs):
//!                  the batch goes to the ready worker with the fewest tasks in flight (Worker::hand)
//!                  Worker.tx ─► writer thread (framing::write_frames) ══stdin══► main thread: read_frame
//!                                                                                 → ToWorker::decode → Job
//!                                                                                executor thread: run_task
//!                                                                                 → TaskRun → TaskResult
//!  TaskFuture ◄─ Promise ◄─ pool.rs: settle(Effects) ◄─ State::on(Event)     writer thread:
//!                           (after the lock)          (transitions.rs)       framing::write_frames
//!                                                          ▲                         ║
//!                                      Listener::report(Greeted | Results | Gone)    ║
//!                                      reader thread (process.rs) ◄══════stdout══════╝
//!                                      EOF ⇒ reap ⇒ Gone { end, exit }
//!  abort() ─► pool.rs: State::abort_route(id) ─► ABORT frame ─► main thread: TaskControl::abort
//! ```
//!
//! Every decision (which result answers which task, what a lost worker does, when the start
//! is over, the reason texts) is in `transitions.rs`; `state.rs` and `transitions.rs` do no
//! I/O and know neither `pool.rs` nor `process.rs`. `process.rs` only launches, reads, reaps
//! and reports; `pool.rs` only takes the lock, asks the state, and applies the `Effects`
//! it returns with the lock released (sends to a worker's writer thread stay under the lock,
//! so that a worker gets LOAD before the TASK that needs it).
//!
//! ## Words
//!
//! - *call*: a checked function call ([`Call`]).
//! - *task*: a submitted call with its promise (and its id on the wire).
//! - *chunk*: a task that runs several alike calls one after another (`map_chunked`); its
//!   value holds each call's outcome.
//! - *batch*: tasks handed to one worker at once, in one write (`state::Batch`).
//! - *run*: how one task ran (`TaskRun`).
//! - *message*: a `ToWorker`/`FromWorker` value; *frame*: its bytes on the pipe.
//! - *event*: what a reader thread saw (`transitions::Event`); *effects*: what the state
//!   decided must happen after the lock (`state::Effects`).
//! - *rules*: the settings the decisions depend on (`state::Rules`); *config*: how the
//!   workers are started (`pool::Config`).
//!
//! ## Files
//!
//! - `mod.rs` (this file): the public API, [`ProcessPoolBuilder`] and [`ProcessPoolExecutor`].
//! - `pool.rs`: the pool's life: start, submit, shutdown; applies what the state decides.
//! - `state.rs`: the state and its scheduling: queue, workers, handing batches, broken pool.
//! - `pace.rs`: how many tasks each worker is handed ahead (the pipeline depth).
//! - `transitions.rs`: the rules: what each event and call does to the state.
//! - `process.rs`: a worker process: launching it, its writer and reader threads, reaping it.
//! - `lifeline.rs`: a worker dies with the pool's process (death signal, launcher thread).
//! - `messages.rs`: the messages between pool and workers, independent of the pipe.
//! - `framing.rs`: the pipe: frames, the greeting, the writer loop both sides use.
//! - `codec/`: the byte encoding of every type the messages carry.
//! - `worker.rs`: the loop a worker process runs; `worker/task.rs` runs one TASK (a call or
//!   a chunk), `worker/outbox.rs` gathers its results.

pub(crate) mod codec;
pub(crate) mod framing;
mod lifeline;
pub(crate) mod messages;
mod pace;
mod pool;
mod process;
mod state;
mod transitions;
mod worker;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::call::Call;
use crate::error::{BuildError, SubmitError};
use crate::executor::{Executor, Map, Pending, map_in_batches};
use crate::future::TaskFuture;
use crate::settings::{TaskSettings, task_settings_setters};

pub use crate::error::ProtocolError;
pub use messages::PROTOCOL_VERSION;
pub use process::WORKER_ENV;

use pool::{Config, Shared, StartError};
use state::Rules;

/// How long [`ProcessPoolExecutor::shutdown_now`] lets the workers stop by themselves
/// before it kills them.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Turns this process into a process-pool worker if a pool started it as one, and never
/// returns in that case; otherwise returns at once and does nothing.
///
/// Call it as the **first statement of `main`** of any program whose process pools use it
/// as their worker program (by default, pools use the running program itself):
///
/// ```no_run
/// fn main() {
///     wasmpool::serve_worker_if_requested();
///     // ... the program, which may build a ProcessPoolExecutor ...
/// }
/// ```
///
/// A pool starts its workers with the environment variable [`WORKER_ENV`] set; this
/// function checks for it, serves tasks on stdin/stdout until the pool closes the
/// channel, and exits the process.
// The example is about where the call goes in `main`.
#[allow(clippy::needless_doctest_main)]
pub fn serve_worker_if_requested() {
    if std::env::var_os(WORKER_ENV).is_none() {
        return;
    }
    std::process::exit(worker::serve());
}

/// Settings of a [`ProcessPoolExecutor`].
///
/// ```no_run
/// use std::time::Duration;
/// let pool = wasmpool::ProcessPoolExecutor::builder()
///     .workers(2)
///     .worker_program("/usr/local/bin/wasmpool")
///     .budget(wasmpool::Budget::default().timeout(Duration::from_secs(5)))
///     .max_tasks_per_worker(1000)
///     .build()?;
/// # Ok::<(), wasmpool::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessPoolBuilder {
    workers: Option<usize>,
    program: Option<PathBuf>,
    name_prefix: String,
    settings: TaskSettings,
    respawn: bool,
    on_demand: bool,
    max_tasks_per_worker: Option<usize>,
    /// `None`: the depth follows the tasks (`pace.rs`).
    pipeline_depth: Option<usize>,
    handshake_timeout: Duration,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            workers: None,
            program: None,
            name_prefix: "worker".to_string(),
            settings: TaskSettings::default(),
            respawn: false,
            on_demand: false,
            max_tasks_per_worker: None,
            pipeline_depth: None,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

impl ProcessPoolBuilder {
    /// Every task setting at once: a cluster worker's local pools take a message's.
    pub(crate) fn task_settings(mut self, settings: crate::settings::TaskSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Default settings: one worker per CPU, running this program as the worker program.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many worker processes (at least 1). Default: the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The program to start as a worker: one whose `main` begins with
    /// [`serve_worker_if_requested`], such as the `wasmpool` binary. Default: the running
    /// program ([`std::env::current_exe`]).
    pub fn worker_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Workers are named `{prefix}-1`, `{prefix}-2`, ... (replacements get the next
    /// numbers); the name prefixes the lines their tasks print and is in each task report.
    pub fn worker_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    task_settings_setters!();

    /// Self-healing instead of `concurrent.futures`' broken pool: when a worker dies, only
    /// the tasks it was running fail (with a [`BrokenPool`](crate::TaskError::BrokenPool)
    /// error that names the crash), a new worker takes its place, and the pool goes on.
    /// "Running" means handed to that worker: with short tasks the pipeline hands a worker
    /// up to 64 at once, or two batches of short tasks (see
    /// [`pipeline_depth`](Self::pipeline_depth)), and none of them is
    /// run twice, since the worker may have finished some whose results had not left it yet;
    /// a depth of 1 limits the loss to the task that crashed.
    /// Default: off. A worker of the first start that dies before its handshake fails
    /// `build` in either mode; later, a replacement that dies before its handshake is
    /// started again, and the pool breaks only after
    /// 4 replacements in a row failed to start (a worker program that cannot start is not
    /// restarted forever).
    pub fn respawn(mut self, on: bool) -> Self {
        self.respawn = on;
        self
    }

    /// Starts workers as the work needs them, the way CPython's process pool does: `build`
    /// starts one (and checks it answers the handshake); a submit that finds no idle worker
    /// starts another, up to [`workers`](Self::workers). A pool sized for the machine then
    /// costs only as many processes as the work keeps busy (`-j 50` for three tasks starts
    /// three). While the pool can still grow, a task waits for a new worker rather than
    /// being pipelined behind another task. Default: off (every worker starts in `build`).
    ///
    /// ```no_run
    /// let pool = wasmpool::ProcessPoolExecutor::builder()
    ///     .workers(64)
    ///     .on_demand(true)
    ///     .build()?;
    /// assert_eq!(pool.worker_pids().len(), 1);
    /// # Ok::<(), wasmpool::BuildError>(())
    /// ```
    pub fn on_demand(mut self, on: bool) -> Self {
        self.on_demand = on;
        self
    }

    /// Replaces each worker after it has been handed `n` tasks (at least 1): it finishes
    /// them and exits, and a fresh process takes its place. Default: never. A batch
    /// ([`submit_batch`](Executor::submit_batch)) is handed whole, so a worker may run up to
    /// a batch's length beyond `n`.
    pub fn max_tasks_per_worker(mut self, n: usize) -> Self {
        self.max_tasks_per_worker = Some(n);
        self
    }

    /// Fixes how many tasks a worker is handed at a time (at least 1). By default the depth
    /// follows the tasks: 2 while they are long (or not measured yet), more as they get
    /// shorter, so that each worker has about 5 ms of work handed ahead (at most 512 tasks),
    /// from the mean time recent tasks took in the workers; and a batch
    /// ([`submit_batch`](Executor::submit_batch), [`map_chunked`](Executor::map_chunked))
    /// whose tasks take at most 2 ms together is handed to a worker that is down to the
    /// batch's length, so that it waits there behind the batch being run (as CPython's pool
    /// keeps one chunk queued ahead).
    ///
    /// Handed tasks count as running (see [`ProcessPoolExecutor`]); more depth hides the
    /// round trip between tasks, less keeps more tasks cancellable. A batch is handed whole
    /// to a worker with fewer than `n` tasks in flight. A task handed to a worker waits
    /// behind the ones before it there, even if another worker is idle: with long or uneven
    /// tasks (a long one after many short ones), use 1.
    pub fn pipeline_depth(mut self, n: usize) -> Self {
        self.pipeline_depth = Some(n);
        self
    }

    /// How long `build` waits for the workers to answer the handshake (default 30 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Starts the workers and waits until each has answered the handshake.
    ///
    /// Fails with [`BuildError::Invalid`] for a setting out of range, [`BuildError::Spawn`]
    /// if a worker process cannot be started, and [`BuildError::Worker`] if one does not
    /// answer as a wasmpool worker of this protocol version.
    pub fn build(self) -> Result<ProcessPoolExecutor, BuildError> {
        let workers = crate::settings::worker_count(self.workers)?;
        if self.pipeline_depth == Some(0) {
            return Err(BuildError::Invalid(
                "pipeline_depth must be at least 1".into(),
            ));
        }
        if self.max_tasks_per_worker == Some(0) {
            return Err(BuildError::Invalid(
                "max_tasks_per_worker must be at least 1".into(),
            ));
        }
        let program = match self.program {
            Some(path) => path,
            None => std::env::current_exe()?,
        };
        let shared = Shared::new(
            Config {
                workers,
                program,
                name_prefix: self.name_prefix,
                task: self.settings,
                handshake_timeout: self.handshake_timeout,
            },
            Rules {
                workers,
                on_demand: self.on_demand,
                respawn: self.respawn,
                max_tasks_per_worker: self.max_tasks_per_worker,
                pipeline_depth: self.pipeline_depth,
            },
        );
        match shared.start() {
            Ok(()) => Ok(ProcessPoolExecutor { shared }),
            Err(StartError::Spawn(e)) => Err(BuildError::Spawn(e)),
            Err(StartError::Worker(failure)) => Err(BuildError::Worker {
                worker: failure.worker,
                reason: failure.reason,
                source: failure.source,
            }),
        }
    }
}

/// Runs calls on a pool of worker processes, each task in a fresh instance of its
/// component: `concurrent.futures.ProcessPoolExecutor` for wasm components. The same API as
/// [`ThreadPoolExecutor`](crate::ThreadPoolExecutor), through the [`Executor`] trait.
///
/// Each finished future's [`report`](TaskFuture::report) names the worker and its process
/// id. Dropping the executor is the `with` block's exit: it waits for every submitted task
/// and for the worker processes to exit.
///
/// ## Workers
///
/// A worker is the program at [`ProcessPoolBuilder::worker_program`] (by default the running
/// program itself, [`std::env::current_exe`]) started with the environment variable
/// [`WORKER_ENV`] set. A program becomes a worker by calling
/// [`serve_worker_if_requested`] as the first statement of `main`, the way a Python program
/// guards its pool with `if __name__ == "__main__"` so that *spawn* can re-run it as a
/// worker. The `wasmpool` binary does, so it can serve as anybody's worker program.
///
/// The pool compiles each component once (in the pool's process) and sends the compiled
/// code to each worker once, before the first task that needs it; workers never compile.
///
/// ## Channel
///
/// The pool writes length-prefixed binary frames of a versioned protocol to the worker's
/// stdin and reads frames from its stdout; a worker of another protocol version is refused
/// at the handshake. The worker's stderr is the pool's stderr. The lines a task prints do
/// not go to the worker's stdout: they come back as frames and the pool prints them,
/// prefixed with the worker's name, on its own stdout or stderr, one whole line per write
/// (as the thread pool does). A worker moves the channel off fd 1 at start and points fd 1
/// at stderr, so that nothing can print into the channel by mistake.
///
/// ## When is a task running?
///
/// As in CPython's `ProcessPoolExecutor`, a task becomes *running* when it is handed to a
/// worker, not when the worker starts it. Each worker takes a few tasks at a time, so
/// that it can start the next one while the result of the last one travels back: 2 while
/// tasks are long, up to about 5 ms of work (at most 512 tasks) when they are short (see
/// [`pipeline_depth`](ProcessPoolBuilder::pipeline_depth)). A task further back in the queue
/// stays pending, and [`TaskFuture::cancel`] succeeds on it. Use a depth of 1 if `cancel`
/// should succeed on every task that has not really started.
/// [`TaskFuture::abort`] stops a handed task wherever it is.
///
/// ## Broken pool
///
/// If a worker dies abruptly (killed, aborted, crashed, or exits while it still has tasks)
/// or breaks the protocol, the pool is *broken*: every pending and running future fails at
/// once with [`TaskError::BrokenPool`](crate::TaskError::BrokenPool), whose reason names
/// the worker and how it ended, the other workers are killed, and every later `submit`
/// returns [`SubmitError::BrokenPool`]. With [`respawn`](ProcessPoolBuilder::respawn), only
/// the dead worker's tasks fail and a new worker takes its place.
///
/// ```no_run
/// use wasmpool::{Executor, ProcessPoolExecutor, TaskComponent};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     wasmpool::serve_worker_if_requested(); // this program is also the worker program
///     let component = TaskComponent::from_file("seed_tasks.wasm")?;
///     let pool = ProcessPoolExecutor::new(2)?;
///     let future = pool.submit(component.call_wave("quick-task(5)")?)?;
///     let value = future.result()?;
///     let pid = future.report().map(|r| r.pid).unwrap_or_default();
///     println!("ran task {value} in process {pid}");
///     Ok(())
/// }
/// ```
pub struct ProcessPoolExecutor {
    shared: Arc<Shared>,
}

impl ProcessPoolExecutor {
    /// A builder with default settings.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// A pool of `workers` processes running this program as the worker program, with
    /// otherwise default settings.
    pub fn new(workers: usize) -> Result<ProcessPoolExecutor, BuildError> {
        ProcessPoolBuilder::new().workers(workers).build()
    }

    /// How many worker processes the pool keeps (at most, when it starts them
    /// [on demand](ProcessPoolBuilder::on_demand)).
    pub fn workers(&self) -> usize {
        self.shared.config.workers
    }

    /// The process ids of the worker processes alive now (including one that is finishing
    /// its last tasks before being replaced).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.worker_pids()
    }

    /// Why the pool is broken, if it is.
    pub fn broken_reason(&self) -> Option<String> {
        self.shared.broken_reason()
    }

    /// Shuts the pool down without waiting (cancelling the tasks not started) and kills
    /// every worker with `SIGKILL`, like CPython's `kill_workers`. The running tasks fail
    /// with a broken-pool error.
    pub fn kill_workers(&self) {
        self.shared.shutdown(false, true);
        self.shared.signal_workers(rustix::process::Signal::KILL);
    }

    /// Like [`kill_workers`](Self::kill_workers), with `SIGTERM`.
    pub fn terminate_workers(&self) {
        self.shared.shutdown(false, true);
        self.shared.signal_workers(rustix::process::Signal::TERM);
    }

    /// Stops now: refuses new work, cancels the tasks not started, aborts the running ones
    /// (their futures become cancelled at once; the workers stop them within milliseconds),
    /// and waits for the workers to exit. A worker that has not exited after
    /// [`STOP_GRACE`] (frozen, stopped, or stuck in host code) is killed with `SIGKILL`;
    /// either way every worker process has been reaped when this returns.
    pub fn shutdown_now(&self) {
        self.shared.shutdown(false, true);
        for future in self.shared.running() {
            future.abort();
        }
        if !self.shared.wait_for_workers_for(STOP_GRACE) {
            self.shared.signal_workers(rustix::process::Signal::KILL);
            self.shared.wait_for_workers();
        }
    }
}

impl std::fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolExecutor")
            .field("workers", &self.workers())
            .field("pids", &self.worker_pids())
            .field("broken", &self.broken_reason())
            .finish()
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit(&self, call: Call) -> Result<TaskFuture, SubmitError> {
        self.shared.submit(call)
    }

    /// One batch per run of calls of the same component: its TASK frames go to one worker in
    /// one write, handed whole once the worker has fewer than
    /// [`pipeline_depth`](ProcessPoolBuilder::pipeline_depth) tasks in flight. Calls
    /// cancelled while the batch waits are left out of it.
    fn submit_batch(&self, calls: Vec<Call>) -> Result<Vec<TaskFuture>, SubmitError> {
        self.shared.submit_batch(calls)
    }

    /// Each chunk's run of alike calls (one function of one component, the same budget and
    /// argv, as a map's calls usually are) is one task, as in CPython: one frame to the
    /// worker, one result back holding every call's outcome, one future. The map still
    /// yields each call's own outcome; a chunk cancelled, aborted or lost with a broken
    /// pool yields that error for each of its calls. Its calls get futures of their own
    /// only from [`Map::in_flight`], and no [`TaskReport`](crate::TaskReport); a pool that
    /// captures output ([`OutputMode::Capture`](crate::OutputMode::Capture)) keeps one task
    /// per call instead, so that each call's report holds what it printed.
    fn map_chunked<I>(&self, calls: I, chunksize: usize) -> Result<Map<'_>, SubmitError>
    where
        I: IntoIterator<Item = Call>,
        Self: Sized,
    {
        let capture = matches!(
            self.shared.config.task.output,
            crate::OutputMode::Capture { .. }
        );
        if chunksize <= 1 || capture {
            return map_in_batches(self, calls, chunksize);
        }
        let mut pending = VecDeque::new();
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let chunk: Vec<Call> = calls.by_ref().take(chunksize).collect();
            match self.shared.submit_runs(&chunk, true) {
                Ok(tasks) => pending.extend(
                    tasks
                        .into_iter()
                        .map(|(future, calls)| Pending::of(future, calls)),
                ),
                Err(e) => {
                    drop(Map::new(self, pending));
                    return Err(e);
                }
            }
        }
        Ok(Map::new(self, pending))
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.shutdown(wait, cancel_futures);
    }

    fn shutdown_now(&self) {
        ProcessPoolExecutor::shutdown_now(self);
    }
}

impl Drop for ProcessPoolExecutor {
    fn drop(&mut self) {
        self.shared.shutdown(true, false);
    }
}
