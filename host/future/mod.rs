//! The future of one task: a port of CPython's `concurrent.futures.Future` state machine.
//!
//! A [`TaskFuture`] is the consumer's handle; a [`Promise`] is the producer's (the executor's)
//! side. Both point at one shared state:
//!
//! ```text
//!   Pending --set_running_or_notify_cancel--> Running --complete (or Promise dropped)--> Finished
//!     |   \                                                                               ^
//!     |    `------------------complete (or Promise dropped) before it started-------------'
//!     `--cancel--> Cancelled
//! ```
//!
//! Every move into a terminal state (`Finished` or `Cancelled`) goes through one private
//! function, `TaskFuture::finish`, which wakes everybody and runs the done callbacks.

use std::fmt;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::sync::{Arc, Condvar, Mutex, MutexGuard, lock, wait_timeout_while, wait_while};

use crate::report::RunReport;
use crate::{TaskError, TaskReport, TaskValue, WaitTimeout};

mod awaiting;
mod promise;

pub use awaiting::ResultFuture;
pub use promise::{Promise, promise};

/// What a finished task produced.
type Outcome = Result<TaskValue, TaskError>;

/// A done callback, as stored until the future is done.
type Callback = Box<dyn FnOnce(&TaskFuture) + Send>;

/// Ids of futures (what [`TaskFuture::id`] returns).
static NEXT_FUTURE_ID: AtomicU64 = AtomicU64::new(1);

/// Keys of registrations on a future (wait/as_completed waiters, `.await` wakers).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A fresh key for [`TaskFuture::add_waiter`] (and for waker slots), unique process-wide.
pub(crate) fn next_key() -> u64 {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Where a future is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FutureState {
    /// Submitted, not started yet. The only state a future can be cancelled in.
    Pending,
    /// A worker is running the task.
    Running,
    /// The task finished: it returned a value or failed with a [`TaskError`].
    Finished,
    /// The future was cancelled before the task started.
    Cancelled,
}

impl FutureState {
    /// Finished or cancelled: the state will never change again.
    pub fn is_done(self) -> bool {
        matches!(self, FutureState::Finished | FutureState::Cancelled)
    }
}

impl fmt::Display for FutureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FutureState::Pending => "pending",
            FutureState::Running => "running",
            FutureState::Finished => "finished",
            FutureState::Cancelled => "cancelled",
        })
    }
}

/// The state shared by every handle of one future and its promise.
struct Shared {
    id: u64,
    inner: Mutex<Inner>,
    /// Notified (all) at the terminal transition; `result()` and friends block on it.
    done: Condvar,
    /// Crate-private extras, behind their own lock (see the end of this file).
    extras: Mutex<Extras>,
    /// `extras.helper` is set and not yet taken: `result()` looks at the extras only then.
    helpable: AtomicBool,
}

/// The mutable part of a future. Invariants:
/// - `outcome.is_some()` exactly when `state == Finished`;
/// - once the state is done (`Finished`/`Cancelled`) it never changes again, and
///   `callbacks`, `waiters` and `wakers` are empty (the terminal transition took them, and
///   nothing is added to a done future);
/// - no user code (callbacks, wakers) ever runs while this lock is held, so the lock is never
///   poisoned by it; all the same, every lock recovers from poisoning.
struct Inner {
    state: FutureState,
    outcome: Option<Outcome>,
    /// Done callbacks, in the order they were added.
    callbacks: Vec<Callback>,
    /// Registrations of `wait`/`as_completed`: each channel gets this future's id once, when
    /// the future becomes done. Keyed so that the waiter can remove itself.
    waiters: Vec<(u64, Sender<u64>)>,
    /// Wakers of tasks `.await`ing this future, keyed by their [`ResultFuture`].
    wakers: Vec<(u64, Waker)>,
    /// Threads blocked (or about to block) on `done`. Counted so that a change nobody
    /// waits for skips the condition variable's wake-up system call, which would otherwise
    /// be paid twice per task (start and finish).
    sleepers: usize,
}

/// The consumer's handle to the outcome of one task: a port of Python's
/// `concurrent.futures.Future`.
///
/// A `TaskFuture` is cheap to clone (all clones are the same future) and can be shared between
/// threads. Wait for it with [`result`](Self::result), [`wait`](crate::wait),
/// [`as_completed`](crate::as_completed), or `.await` it in async code.
///
/// ```
/// use wasmpool::{promise, FutureState, TaskValue};
/// use wasmtime::component::Val;
///
/// let (promise, future) = promise();
/// assert_eq!(future.state(), FutureState::Pending);
///
/// let worker = std::thread::spawn(move || {
///     if promise.set_running_or_notify_cancel() {
///         promise.set_result(TaskValue::from(Val::U32(42)));
///     }
/// });
/// assert_eq!(future.result().unwrap().as_i64(), Some(42));
/// assert_eq!(format!("{future:?}"), format!("TaskFuture(#{} state=finished returned u32)", future.id()));
/// worker.join().unwrap();
/// ```
#[derive(Clone)]
pub struct TaskFuture {
    shared: Arc<Shared>,
}

impl TaskFuture {
    fn new() -> Self {
        TaskFuture {
            shared: Arc::new(Shared {
                id: NEXT_FUTURE_ID.fetch_add(1, Ordering::Relaxed),
                inner: Mutex::new(Inner {
                    state: FutureState::Pending,
                    outcome: None,
                    callbacks: Vec::new(),
                    waiters: Vec::new(),
                    wakers: Vec::new(),
                    sleepers: 0,
                }),
                done: Condvar::new(),
                extras: Mutex::new(Extras::default()),
                helpable: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared.inner)
    }

    /// The future's id: unique among all futures of this process.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The current state.
    pub fn state(&self) -> FutureState {
        self.lock().state
    }

    /// Cancels the future if it has not started yet.
    ///
    /// Returns `true` if the future is now cancelled: it was pending (it becomes
    /// [`Cancelled`](FutureState::Cancelled): everything waiting on it wakes up and the done
    /// callbacks run in this thread before `cancel` returns), or it was cancelled already.
    /// Returns `false` if it is running or finished; those cannot be cancelled.
    pub fn cancel(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            FutureState::Pending => {
                self.finish(inner, FutureState::Cancelled, None);
                true
            }
            FutureState::Cancelled => true,
            FutureState::Running | FutureState::Finished => false,
        }
    }

    /// Cancels the task even if it is running: beyond `concurrent.futures`, whose `cancel`
    /// stops only pending tasks. A running task is interrupted through the same mechanism
    /// as its deadline (in either pool) and its future becomes cancelled at once; the
    /// guest stops within a few milliseconds. Returns `false` if the task had already
    /// finished.
    ///
    /// ```
    /// let (promise, future) = wasmpool::promise();
    /// assert!(promise.set_running_or_notify_cancel());
    /// assert!(future.abort());
    /// assert!(future.is_cancelled());
    /// ```
    pub fn abort(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            FutureState::Pending | FutureState::Running => {
                self.finish(inner, FutureState::Cancelled, None);
                let hook = self.extras().abort_hook.take();
                if let Some(AbortHook { target, id }) = hook {
                    target.stop(id);
                }
                true
            }
            FutureState::Cancelled => true,
            FutureState::Finished => false,
        }
    }

    /// Whether the future was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.state() == FutureState::Cancelled
    }

    /// Whether the task is running right now.
    pub fn is_running(&self) -> bool {
        self.state() == FutureState::Running
    }

    /// Whether the future is done: finished or cancelled.
    pub fn is_done(&self) -> bool {
        self.state().is_done()
    }

    /// Whether the future finished with an error. A cancelled future did not; this is what
    /// [`ReturnWhen::FirstError`](crate::ReturnWhen::FirstError) looks for.
    pub(crate) fn is_error(&self) -> bool {
        matches!(self.lock().outcome, Some(Err(_)))
    }

    /// Blocks until the future is done, then returns the task's outcome: its value, its error,
    /// or [`TaskError::Cancelled`] if the future was cancelled.
    ///
    /// On a thread pool built with
    /// [`caller_helps`](crate::ThreadPoolBuilder::caller_helps), a task that no worker has
    /// taken yet runs here, on the calling thread, before this returns.
    pub fn result(&self) -> Result<TaskValue, TaskError> {
        // A load first: the swap writes the line, and most futures never have a helper.
        if self.shared.helpable.load(Ordering::Acquire)
            && self.shared.helpable.swap(false, Ordering::AcqRel)
        {
            let helper = self.extras().helper.take();
            if let Some(helper) = helper {
                helper.run_here();
            }
        }
        let inner = self.block_while(None, |i| !i.state.is_done());
        outcome_of(&inner)
    }

    /// Like [`result`](Self::result), but gives up after `timeout`: the outer `Err` says the
    /// *wait* timed out (the task goes on untouched); the inner result is the task's outcome.
    pub fn result_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Result<TaskValue, TaskError>, WaitTimeout> {
        self.wait_done(timeout).map(|inner| outcome_of(&inner))
    }

    /// Blocks until the future is done, then returns the task's error: `None` if it returned a
    /// value, `Some(TaskError::Cancelled)` if the future was cancelled.
    pub fn error(&self) -> Option<TaskError> {
        self.result().err()
    }

    /// Like [`error`](Self::error), but gives up after `timeout` with a [`WaitTimeout`] (the
    /// task goes on untouched).
    pub fn error_timeout(&self, timeout: Duration) -> Result<Option<TaskError>, WaitTimeout> {
        self.result_timeout(timeout).map(Result::err)
    }

    /// Blocks until the task has started (or is done), for at most `timeout`.
    ///
    /// Useful to know that `cancel()` can no longer succeed, or that a worker is busy.
    pub fn wait_started(&self, timeout: Duration) -> Result<(), WaitTimeout> {
        let inner = self.block_while(Some(timeout), |i| i.state == FutureState::Pending);
        if inner.state == FutureState::Pending {
            Err(WaitTimeout(timeout))
        } else {
            Ok(())
        }
    }

    /// How the task ran (worker, time, fuel, memory), once it has finished; `None` while it
    /// is pending or running, and for a task cancelled before it started.
    pub fn report(&self) -> Option<TaskReport> {
        self.extras().report.as_ref().map(RunReport::to_report)
    }

    /// Blocks while `blocked` holds for the state (for at most `timeout`, if given), counted
    /// in `sleepers` meanwhile; returns the state, locked.
    fn block_while(
        &self,
        timeout: Option<Duration>,
        blocked: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'_, Inner> {
        let mut inner = self.lock();
        if !blocked(&inner) {
            return inner;
        }
        // A result due within microseconds is picked up without sleeping and being woken.
        #[cfg(not(all(test, feature = "loom")))]
        if timeout.is_none() {
            drop(inner);
            crate::spin::until(|| !blocked(&self.lock()));
            inner = self.lock();
            if !blocked(&inner) {
                return inner;
            }
        }
        inner.sleepers += 1;
        let mut inner = match timeout {
            None => wait_while(&self.shared.done, inner, &blocked),
            Some(timeout) => {
                // A change between here and the wait notifies (sleepers > 0): harmless.
                drop(inner);
                wait_timeout_while(&self.shared.done, &self.shared.inner, timeout, &blocked)
            }
        };
        inner.sleepers -= 1;
        inner
    }

    /// Waits up to `timeout` for the future to be done; returns the locked state if it is.
    fn wait_done(&self, timeout: Duration) -> Result<MutexGuard<'_, Inner>, WaitTimeout> {
        let inner = self.block_while(Some(timeout), |i| !i.state.is_done());
        if inner.state.is_done() {
            Ok(inner)
        } else {
            Err(WaitTimeout(timeout))
        }
    }

    /// Attaches a callback that runs exactly once, when the future is done (finished or
    /// cancelled), with this future as its argument.
    ///
    /// If the future is done already, the callback runs right away in this thread. Otherwise
    /// it runs in the thread that completes or cancels the future, after the state is set and
    /// without any lock held, so it may call any method of the future. Callbacks run in the
    /// order they were added. A callback that panics is caught and logged (`log::error!`);
    /// the other callbacks still run and the future is not affected.
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskFuture) + Send + 'static) {
        let mut inner = self.lock();
        if !inner.state.is_done() {
            inner.callbacks.push(Box::new(f));
            return;
        }
        drop(inner);
        self.run_callback(Box::new(f));
    }

    fn run_callback(&self, callback: Callback) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| callback(self))) {
            let message = crate::error::panic_text(&*payload);
            log::error!("a done callback of {self:?} panicked: {message}");
        }
    }

    /// The terminal transition; every way into `Finished` or `Cancelled` goes through here.
    ///
    /// The caller holds the lock, has checked that the state is not done yet, and passes the
    /// guard in, so that checking and moving are one atomic step. This sets the state, tells the
    /// `wait`/`as_completed` waiters, releases the lock, wakes blocked threads and `.await`ing
    /// tasks, and finally runs the callbacks (no lock held).
    fn finish(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        state: FutureState,
        outcome: Option<Outcome>,
    ) {
        debug_assert!(!inner.state.is_done() && state.is_done());
        debug_assert_eq!(outcome.is_some(), state == FutureState::Finished);
        inner.state = state;
        inner.outcome = outcome;
        for (_, waiter) in inner.waiters.drain(..) {
            // Unbounded channel: never blocks. A waiter that went away does not matter.
            let _ = waiter.send(self.id());
        }
        let wakers = mem::take(&mut inner.wakers);
        let callbacks = mem::take(&mut inner.callbacks);
        let sleepers = inner.sleepers > 0;
        drop(inner);
        if sleepers {
            self.shared.done.notify_all();
        }
        for (_, waker) in wakers {
            waker.wake();
        }
        for callback in callbacks {
            self.run_callback(callback);
        }
    }

    /// Registers a `wait`/`as_completed` waiter under `key`: when the future becomes done,
    /// its id is sent on `tx` (once). Returns `false`, registering nothing, if the future is
    /// done already. Remove the registration with [`remove_waiter`](Self::remove_waiter).
    pub(crate) fn add_waiter(&self, key: u64, tx: &Sender<u64>) -> bool {
        let mut inner = self.lock();
        if inner.state.is_done() {
            return false;
        }
        inner.waiters.push((key, tx.clone()));
        true
    }

    /// Removes the waiter registered under `key`, if it is still there.
    pub(crate) fn remove_waiter(&self, key: u64) {
        self.lock().waiters.retain(|(k, _)| *k != key);
    }

    /// How many waiters and wakers are registered (for tests of the clean-up).
    #[cfg(test)]
    pub(crate) fn registrations(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.waiters.len(), inner.wakers.len())
    }
}

/// The outcome of a done future (its state locked).
fn outcome_of(inner: &Inner) -> Outcome {
    match &inner.outcome {
        Some(outcome) => outcome.clone(),
        None => Err(TaskError::Cancelled),
    }
}

impl fmt::Debug for TaskFuture {
    /// Like Python's repr: `TaskFuture(#3 state=running)`,
    /// `TaskFuture(#3 state=finished returned f64)`, `TaskFuture(#3 state=finished raised trap)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        write!(f, "TaskFuture(#{} state={}", self.id(), inner.state)?;
        match &inner.outcome {
            Some(Ok(value)) => write!(f, " returned {}", type_name(value))?,
            Some(Err(error)) => write!(f, " raised {}", error.kind())?,
            None => {}
        }
        f.write_str(")")
    }
}

/// The component-model type name of a value ("nothing" for a function without a result).
fn type_name(value: &TaskValue) -> &'static str {
    value.val().map_or("nothing", crate::types::val_kind)
}

// `Extras`: the report and abort hook of a future, behind their own lock so that an abort
// hook runs without the state lock.

/// What stops a running task: the thread pool's task control, the process pool's route to
/// the worker running the task.
pub(crate) trait StopTask: Send + Sync {
    /// Stops task `id` (a target that is one task's own ignores the id).
    fn stop(&self, id: u64);
}

/// Stops the running task of a future (set by the executor that runs it): an executor's
/// shared [`StopTask`] target and the task's id. Setting one allocates nothing (an `Arc` clone).
pub(crate) struct AbortHook {
    pub(crate) target: std::sync::Arc<dyn StopTask>,
    pub(crate) id: u64,
}

/// Runs a task on the thread that waits for it, if no worker has taken it yet (a thread
/// pool's callers that help).
pub(crate) trait RunHere: Send + Sync {
    /// Runs the task here, or does nothing if it was taken already.
    fn run_here(&self);
}

/// Per-future data for the executors, beside the state machine.
#[derive(Default)]
pub(crate) struct Extras {
    /// How the task ran; set just before the future finishes.
    pub(crate) report: Option<RunReport>,
    /// Called by `TaskFuture::abort()` to stop the task while it runs. Executors set it
    /// before the task can start, so no abort slips between start and registration.
    pub(crate) abort_hook: Option<AbortHook>,
    /// Set by a thread pool whose callers help ([`TaskFuture::set_helper`]): runs the task
    /// in the first `result()` that waits for it, unless a worker took it.
    pub(crate) helper: Option<std::sync::Arc<dyn RunHere>>,
}

impl TaskFuture {
    /// The future's [`Extras`], locked. Do not hold this guard while calling into user code
    /// that might lock it again.
    pub(crate) fn extras(&self) -> MutexGuard<'_, Extras> {
        lock(&self.shared.extras)
    }

    /// Sets the [`RunHere`] the first `result()` calls (a thread pool whose callers help).
    pub(crate) fn set_helper(&self, helper: std::sync::Arc<dyn RunHere>) {
        self.extras().helper = Some(helper);
        self.shared.helpable.store(true, Ordering::Release);
    }
}
