//! The thread pool: worker threads that each run one task at a time, every task in a
//! fresh wasm instance (or the worker's kept one), and optionally callers that help
//! (`help.rs`).

mod help;

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
use help::{Claim, Helpers};

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
    caller_helps: bool,
}

impl Default for ThreadPoolBuilder {
    fn default() -> Self {
        ThreadPoolBuilder {
            workers: None,
            name_prefix: "worker".to_string(),
            settings: TaskSettings::default(),
            caller_helps: false,
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

    /// Lets a thread that waits in [`TaskFuture::result`] (without a timeout) for a task
    /// submitted with [`submit`](Executor::submit) run that task itself, if no worker has
    /// taken it yet. Off by default.
    ///
    /// On an idle pool a round trip then costs no thread wake-up: the worker's (to start
    /// the task) and the caller's (to learn the result) each take tens of µs on a busy or
    /// virtual machine. What changes:
    /// - up to `workers` tasks run on the workers, plus one on each caller waiting in
    ///   `result()`; each of those callers, and the callers' spare instance, takes an
    ///   instance slot of the runtime's [`PoolingConfig`](crate::PoolingConfig) besides the
    ///   workers' (size `instances` for them if you set it);
    /// - a helped task runs in a fresh instance, whatever the
    ///   [`instance_policy`](Self::instance_policy), and its [report](TaskFuture::report)
    ///   and output prefix name the worker `{prefix}-caller`;
    /// - [`result_timeout`](TaskFuture::result_timeout), [`wait`](crate::wait) and
    ///   [`as_completed`](crate::as_completed) never run a task, nor does `result()` for a
    ///   task of a [`submit_batch`](Executor::submit_batch) (one worker runs a batch in
    ///   order);
    /// - `shutdown(wait)` also waits for the tasks callers run, and `shutdown_now` aborts
    ///   them.
    ///
    /// It cannot be combined with an [`initializer`](Self::initializer), which prepares
    /// each worker's instance: [`build`](Self::build) fails with [`BuildError::Invalid`].
    ///
    /// ```
    /// let pool = wasmpool::ThreadPoolExecutor::builder()
    ///     .workers(2)
    ///     .caller_helps(true)
    ///     .build()?;
    /// # Ok::<(), wasmpool::BuildError>(())
    /// ```
    pub fn caller_helps(mut self, helps: bool) -> Self {
        self.caller_helps = helps;
        self
    }

    task_settings_setters!();

    /// Starts the workers.
    pub fn build(self) -> Result<ThreadPoolExecutor, BuildError> {
        let workers = worker_count(self.workers)?;
        if self.caller_helps && self.settings.initializer.is_some() {
            return Err(BuildError::Invalid(
                "caller_helps cannot be combined with an initializer: a caller's instance \
                 would not be initialized"
                    .into(),
            ));
        }
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
        let helpers = self.caller_helps.then(|| {
            let env = TaskEnv {
                worker_name: Arc::from(format!("{}-caller", self.name_prefix)),
                settings: self.settings.clone(),
                destination: Destination::Host,
            };
            Arc::new(Helpers::new(env, cancelling.clone(), broken.clone()))
        });
        Ok(ThreadPoolExecutor {
            queue: Mutex::new(Some(sender)),
            helpers,
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
    job: Job,
    control: Arc<TaskControl>,
}

/// A task's promise and call: the worker's alone, or shared with a caller that may help.
enum Job {
    Owned(Promise, Call),
    Claimable(Arc<Claim>),
}

impl Task {
    /// A task for `call`, and its future (abort hook in place before it can start). With
    /// `helpers`, a caller waiting for the future may take the task and run it.
    fn new(call: Call, helpers: Option<&Arc<Helpers>>) -> (Task, TaskFuture) {
        let (promise, future) = promise();
        let control = Arc::new(TaskControl::default());
        let job = match helpers {
            None => Job::Owned(promise, call),
            Some(helpers) => Job::Claimable(Arc::new(Claim::new(
                promise,
                call,
                control.clone(),
                Arc::downgrade(helpers),
            ))),
        };
        future.extras().abort_hook = Some(AbortHook {
            target: control.clone(),
            id: 0,
        });
        if let Job::Claimable(claim) = &job {
            future.set_helper(claim.clone());
        }
        (Task { job, control }, future)
    }

    /// The claim a waiting caller may take the task from, if callers help.
    fn claim(&self) -> Option<Arc<Claim>> {
        match &self.job {
            Job::Owned(..) => None,
            Job::Claimable(claim) => Some(claim.clone()),
        }
    }

    /// The promise and call, unless a caller took them to run the task itself.
    fn take(self) -> Option<(Promise, Call, Arc<TaskControl>)> {
        let (promise, call) = match self.job {
            Job::Owned(promise, call) => (promise, call),
            Job::Claimable(claim) => claim.take()?,
        };
        Some((promise, call, self.control))
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
    let mut idle = IdleWork::default();
    while let Some(work) = crate::spin::recv_or_idle(tasks, || idle.run(&mut instances, env)) {
        let ran = match work {
            Work::One(task) => {
                let claim = task.claim();
                let ran = run_one(task, env, watch, &mut instances);
                if ran.is_none() {
                    // A caller took it (or it was cancelled).
                    idle.helped = claim;
                }
                ran
            }
            Work::Batch(batch) => batch
                .into_iter()
                .fold(None, |_, task| run_one(task, env, watch, &mut instances)),
        };
        if ran.is_some() {
            idle.last = ran;
        }
    }
}

/// What a worker does once nothing has come for a spin (and the queue is open): make the
/// next task's instance, and the callers' if a caller took the last task, off their round
/// trips (see `instance.rs`, spares).
#[derive(Default)]
struct IdleWork {
    /// The last task this worker ran (its call: moved here, so no reference count moves).
    last: Option<Call>,
    /// The claim of the last task a caller took.
    helped: Option<Arc<Claim>>,
}

impl IdleWork {
    fn run(&mut self, instances: &mut InstanceSlot, env: &TaskEnv) {
        if let Some(call) = self.last.take() {
            instances.prepare_spare(call.component(), env);
        }
        if let Some(claim) = self.helped.take() {
            claim.after_caller_took_it();
        }
    }
}

/// Runs one task on this worker (unless a caller took it) and completes its promise;
/// returns its call if it ran.
fn run_one(task: Task, env: &TaskEnv, watch: &Watch, instances: &mut InstanceSlot) -> Option<Call> {
    let (promise, call, control) = task.take()?;
    let running = &watch.running[watch.slot].0;
    *lock(running) = Some(promise.future());
    let ran = run_taken(
        promise,
        &call,
        &control,
        env,
        instances,
        &watch.cancelling,
        &watch.broken,
    );
    *lock(running) = None;
    ran.then_some(call)
}

/// Runs a task taken from the queue on this thread (a worker, or a caller that helps) and
/// completes its promise, unless the pool broke, shut down with `cancel_futures`, or the
/// task was cancelled; whether it ran. The thread registered the task where `shutdown_now`
/// looks before calling this: `shutdown_now` sets `cancelling` before it looks, so it
/// either finds the task and aborts it, or this sees `cancelling` and cancels it.
fn run_taken(
    promise: Promise,
    call: &Call,
    control: &Arc<TaskControl>,
    env: &TaskEnv,
    instances: &mut InstanceSlot,
    cancelling: &AtomicBool,
    broken: &Broken,
) -> bool {
    if let Some(reason) = broken.get() {
        promise.set_error(TaskError::BrokenPool {
            reason: reason.clone(),
        });
        return false;
    }
    if cancelling.load(Ordering::SeqCst) {
        promise.future().cancel();
    }
    if !promise.set_running_or_notify_cancel() {
        return false;
    }
    let run = run_guarded(call, env, control, instances);
    if let Some(reason) = run.breaks_pool() {
        broken.get_or_init(|| reason.to_string());
    }
    let (outcome, report) = run.into_parts(&env.worker_name, this_pid(), None);
    promise.complete_with_run_report(outcome, report);
    true
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
    /// Set when callers help (`ThreadPoolBuilder::caller_helps`).
    helpers: Option<Arc<Helpers>>,
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
        self.send(|| {
            let (task, future) = Task::new(call, self.helpers.as_ref());
            (Work::One(task), future)
        })
    }

    /// The batch is one queue entry: one worker runs its calls in order.
    fn submit_batch(&self, calls: Vec<Call>) -> Result<Vec<TaskFuture>, SubmitError> {
        self.send(|| {
            let (tasks, futures) = calls.into_iter().map(|c| Task::new(c, None)).unzip();
            (Work::Batch(tasks), futures)
        })
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let sender = lock(&self.queue).take();
        if cancel_futures {
            self.cancelling.store(true, Ordering::SeqCst);
            while let Ok(work) = self.backlog.try_recv() {
                for (promise, _, _) in work.into_tasks().into_iter().filter_map(Task::take) {
                    promise.future().cancel();
                }
            }
        }
        // Closing the queue lets each worker exit once the backlog is done.
        drop(sender);
        if wait {
            if let Some(helpers) = &self.helpers {
                helpers.wait_idle();
            }
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
    /// Makes work with `make` and queues it, unless the pool is shut down or broken: then
    /// nothing is made. Made under the queue's lock, so no task slips in after shutdown.
    fn send<R>(&self, make: impl FnOnce() -> (Work, R)) -> Result<R, SubmitError> {
        let queue = lock(&self.queue);
        let Some(sender) = queue.as_ref() else {
            return Err(SubmitError::Shutdown);
        };
        if let Some(reason) = self.broken.get() {
            return Err(SubmitError::BrokenPool(reason.clone()));
        }
        let (work, made) = make();
        match sender.send(work) {
            Ok(()) => Ok(made),
            Err(refused) => {
                // The promises are dropped, which resolves their futures (a claim would
                // otherwise keep its promise alive through its own future).
                refused
                    .0
                    .into_tasks()
                    .into_iter()
                    .for_each(|t| drop(t.take()));
                Err(SubmitError::Shutdown)
            }
        }
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
        if let Some(helpers) = &self.helpers {
            helpers.abort_all();
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
