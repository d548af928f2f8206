//! The thread pool: worker threads that each run one task at a time, every task in a
//! fresh wasm instance.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::call::Call;
use crate::error::{BuildError, SubmitError, TaskError};
use crate::executor::Executor;
use crate::future::{AbortHook, Promise, TaskFuture, promise};
use crate::instance::InstanceSlot;
use crate::output::Destination;
use crate::run::run_guarded;
use crate::settings::{TaskEnv, TaskSettings, task_settings_setters, worker_count};
use crate::store::TaskControl;
use crate::sync::lock;

/// Settings of a [`ThreadPoolExecutor`].
///
/// ```
/// let pool = wasmpool::ThreadPoolExecutor::builder()
///     .workers(2)
///     .thread_name_prefix("task")
///     .build()?;
/// # Ok::<(), wasmpool::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    name_prefix: String,
    settings: TaskSettings,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            workers: None,
            name_prefix: "worker".to_string(),
            settings: TaskSettings::default(),
        }
    }
}

impl ThreadPoolBuilder {
    /// Default settings: one worker per CPU, workers named `worker-1`, `worker-2`, ...
    pub fn new() -> Self {
        Self::default()
    }

    /// Every task setting at once: a cluster worker's local pools take a message's.
    pub(crate) fn task_settings(mut self, settings: crate::settings::TaskSettings) -> Self {
        self.settings = settings;
        self
    }

    /// How many worker threads (at least 1). Default: the number of CPUs.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Workers are named `{prefix}-1`, `{prefix}-2`, ...; the name is the thread's name and
    /// prefixes the lines the worker's tasks print.
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    task_settings_setters!();

    /// Starts the workers.
    pub fn build(self) -> Result<ThreadPoolExecutor, BuildError> {
        let workers = worker_count(self.workers)?;
        let (sender, receiver) = crossbeam_channel::unbounded::<Work>();
        let running: RunningSlots = (0..workers).map(|_| RunningSlot::default()).collect();
        let broken = Broken::default();
        let cancelling = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(workers);
        for i in 1..=workers {
            let name = format!("{}-{i}", self.name_prefix);
            let env = TaskEnv {
                worker_name: Arc::from(name.as_str()),
                settings: self.settings.clone(),
                destination: Destination::Host,
            };
            let receiver = receiver.clone();
            let watch = Watch {
                running: running.clone(),
                slot: i - 1,
                broken: broken.clone(),
                cancelling: cancelling.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker_loop(&receiver, &env, &watch));
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    // Let the threads already started exit before reporting.
                    drop(sender);
                    threads.into_iter().for_each(|t| {
                        let _ = t.join();
                    });
                    return Err(BuildError::Spawn(e));
                }
            }
        }
        Ok(ThreadPoolExecutor {
            queue: Mutex::new(Some(sender)),
            backlog: receiver,
            threads: Mutex::new(threads),
            running,
            broken,
            cancelling,
            workers,
        })
    }
}

/// A task waiting in the queue.
struct Task {
    promise: Promise,
    call: Call,
    control: Arc<TaskControl>,
}

impl Task {
    /// A task for `call`, and its future (abort hook in place before it can start).
    fn new(call: Call) -> (Task, TaskFuture) {
        let (promise, future) = promise();
        let control = Arc::new(TaskControl::default());
        future.extras().abort_hook = Some(AbortHook {
            target: control.clone(),
            id: 0,
        });
        let task = Task {
            promise,
            call,
            control,
        };
        (task, future)
    }
}

/// What the queue carries: one task, or a batch that one worker runs in order.
enum Work {
    One(Task),
    Batch(Vec<Task>),
}

impl Work {
    fn into_tasks(self) -> Vec<Task> {
        match self {
            Work::One(task) => vec![task],
            Work::Batch(tasks) => tasks,
        }
    }
}

/// The future each worker is running, by worker index (for aborting on shutdown).
type RunningSlots = Arc<[RunningSlot]>;

/// One worker's running future. A slot is locked only by its worker and by
/// `shutdown_now`, and has a cache line of its own: workers never contend for one.
#[derive(Default)]
#[repr(align(128))]
struct RunningSlot(Mutex<Option<TaskFuture>>);

/// Why the pool is broken, once it is (a failed initializer): set once, read without a lock.
type Broken = Arc<OnceLock<String>>;

/// What a worker shares with the pool.
struct Watch {
    /// Set by `shutdown(cancel_futures)`: the tasks a worker has taken but not started (the
    /// rest of a batch) are cancelled instead of run.
    cancelling: Arc<AtomicBool>,
    running: RunningSlots,
    slot: usize,
    broken: Broken,
}

/// Runs tasks until the queue is closed and empty.
fn worker_loop(tasks: &Receiver<Work>, env: &TaskEnv, watch: &Watch) {
    let mut instances = InstanceSlot::default();
    for work in crate::spin::iter(tasks) {
        match work {
            Work::One(task) => run_one(task, env, watch, &mut instances),
            Work::Batch(batch) => {
                for task in batch {
                    run_one(task, env, watch, &mut instances);
                }
            }
        }
    }
}

/// Runs one task on this worker (unless it was cancelled or the pool broke) and completes
/// its promise.
fn run_one(task: Task, env: &TaskEnv, watch: &Watch, instances: &mut InstanceSlot) {
    if let Some(reason) = watch.broken.get() {
        task.promise.set_error(TaskError::BrokenPool {
            reason: reason.clone(),
        });
        return;
    }
    let running = &watch.running[watch.slot].0;
    // In the slot before `cancelling` is read: `shutdown_now` sets `cancelling` before it
    // reads the slots, so it either finds this task and aborts it, or this worker sees
    // `cancelling` and cancels the task.
    *lock(running) = Some(task.promise.future());
    if watch.cancelling.load(Ordering::SeqCst) {
        task.promise.future().cancel();
    }
    if !task.promise.set_running_or_notify_cancel() {
        *lock(running) = None;
        return;
    }
    let run = run_guarded(&task.call, env, &task.control, instances);
    *lock(running) = None;
    if let Some(reason) = run.breaks_pool() {
        watch.broken.get_or_init(|| reason.to_string());
    }
    let report = run.report(&env.worker_name, this_pid());
    task.promise.complete_with_report(run.outcome, report);
}

/// Runs calls on a pool of threads, each task in a fresh instance of its component:
/// `concurrent.futures.ThreadPoolExecutor` for wasm components.
///
/// Dropping the executor is the `with` block's exit: it waits for every submitted task.
///
/// ```no_run
/// use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};
/// let component = TaskComponent::from_file("seed_tasks.wasm")?;
/// let pool = ThreadPoolExecutor::builder().workers(2).build()?;
/// let future = pool.submit(component.call_wave("sleep-task(5)")?)?;
/// assert_eq!(future.result()?.as_f64(), Some(0.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ThreadPoolExecutor {
    /// `None` once shut down. Held while sending so no task slips in after shutdown.
    queue: Mutex<Option<Sender<Work>>>,
    /// The receiving end, kept to cancel the backlog on `shutdown(cancel_futures)`.
    backlog: Receiver<Work>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    running: RunningSlots,
    broken: Broken,
    cancelling: Arc<AtomicBool>,
    workers: usize,
}

impl ThreadPoolExecutor {
    /// A builder with default settings.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    /// A pool with `workers` threads and otherwise default settings.
    pub fn new(workers: usize) -> Result<ThreadPoolExecutor, BuildError> {
        ThreadPoolBuilder::new().workers(workers).build()
    }

    /// How many worker threads the pool has.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

impl Executor for ThreadPoolExecutor {
    fn submit(&self, call: Call) -> Result<TaskFuture, SubmitError> {
        let (task, future) = Task::new(call);
        self.send(Work::One(task))?;
        Ok(future)
    }

    /// The batch is one queue entry: one worker runs its calls in order.
    fn submit_batch(&self, calls: Vec<Call>) -> Result<Vec<TaskFuture>, SubmitError> {
        let (tasks, futures) = calls.into_iter().map(Task::new).unzip();
        self.send(Work::Batch(tasks))?;
        Ok(futures)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let sender = lock(&self.queue).take();
        if cancel_futures {
            self.cancelling.store(true, Ordering::SeqCst);
            while let Ok(work) = self.backlog.try_recv() {
                for task in work.into_tasks() {
                    task.promise.future().cancel();
                }
            }
        }
        // Closing the queue lets each worker exit once the backlog is done.
        drop(sender);
        if wait {
            let threads = std::mem::take(&mut *lock(&self.threads));
            let me = std::thread::current().id();
            for t in threads {
                // A done-callback running on a worker may shut the pool down: never join
                // the calling thread itself.
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
    }
    fn shutdown_now(&self) {
        ThreadPoolExecutor::shutdown_now(self);
    }
}

impl ThreadPoolExecutor {
    /// Queues `work` unless the pool is shut down or broken (then its promises are dropped
    /// with it, which resolves their futures).
    fn send(&self, work: Work) -> Result<(), SubmitError> {
        let queue = lock(&self.queue);
        let Some(sender) = queue.as_ref() else {
            return Err(SubmitError::Shutdown);
        };
        if let Some(reason) = self.broken.get() {
            return Err(SubmitError::BrokenPool(reason.clone()));
        }
        sender.send(work).map_err(|_| SubmitError::Shutdown)
    }

    /// Stops now: refuses new work, cancels the backlog, aborts the running tasks, and
    /// waits for the workers to exit.
    pub fn shutdown_now(&self) {
        self.shutdown(false, true);
        let running: Vec<TaskFuture> = self
            .running
            .iter()
            .filter_map(|slot| lock(&slot.0).clone())
            .collect();
        for future in running {
            future.abort();
        }
        self.shutdown(true, true);
    }
}

impl Drop for ThreadPoolExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

/// This process's id, asked of the OS once (a syscall per task otherwise): a pool's
/// threads never change process.
fn this_pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}
