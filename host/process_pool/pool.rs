//! The pool's life: starting its workers, accepting tasks, taking the reader threads'
//! events, shutting down. What each of these does to the queue and the workers is decided
//! in `transitions.rs` (scheduling in `state.rs`); this file takes the lock, asks the state,
//! and then does what it decided ([`Shared::settle`]) with the lock released.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{ProtocolError, SubmitError};
use crate::future::{AbortHook, StopTask, TaskFuture, promise};
use crate::runtime::RuntimeConfig;
use crate::settings::TaskSettings;
use crate::sync::lock;

use super::framing;
use super::messages::{Abort, Load, RunTask, Setup, ToWorker};
use super::process::{self, Listener, Spec};
use super::state::{Batch, Component, Effects, Phase, Rules, StartupFailure, State, Task, Worker};
use super::transitions::Event;

/// How a pool starts its workers (the rules it runs by are [`Rules`]).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) program: PathBuf,
    pub(crate) name_prefix: String,
    /// What every task gets.
    pub(crate) task: TaskSettings,
    pub(crate) handshake_timeout: Duration,
}

/// Everything the executor handle, the abort hooks and the reader threads share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    state: Mutex<State>,
    /// Notified when a worker becomes ready or goes away, and when the pool breaks.
    changed: Condvar,
    /// Wakes the deadline watchdog: a deadline earlier than the one it waits for, or the
    /// `changed` events (after which it may have to end).
    deadlines: Condvar,
    /// Components the workers may need, by the address of their precompiled bytes (kept
    /// alive here, so an address is never reused for another component).
    registry: Mutex<HashMap<usize, Arc<Component>>>,
    next_task: AtomicU64,
    next_serial: AtomicU64,
    /// Every future's abort hook points here (a weak route back: a future does not keep
    /// the pool alive).
    stopper: Arc<Stopper>,
}

/// The abort hook's target: asks the worker running a task to stop it.
struct Stopper {
    pool: Weak<Shared>,
}

impl StopTask for Stopper {
    fn stop(&self, id: u64) {
        let Some(shared) = self.pool.upgrade() else {
            return;
        };
        // Sent under the lock, as every frame to a worker is, so frames keep their order.
        let st = shared.lock();
        if let Some(tx) = st.abort_route(id)
            && let Ok(frame) = framing::frame(&ToWorker::Abort(Abort { id }))
        {
            let _ = tx.send(frame);
        }
    }
}

thread_local! {
    /// The pool whose reader thread this is (its address), 0 elsewhere: a done callback
    /// running on a reader thread must not wait for that same thread to exit.
    static READER_OF: Cell<usize> = const { Cell::new(0) };
}

impl Shared {
    pub(crate) fn new(config: Config, rules: Rules) -> Arc<Shared> {
        Arc::new_cyclic(|pool| Shared {
            stopper: Arc::new(Stopper { pool: pool.clone() }),
            config,
            state: Mutex::new(State::new(rules)),
            changed: Condvar::new(),
            deadlines: Condvar::new(),
            registry: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(1),
            next_serial: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Applies `change` to the state under the lock, then does what it decided.
    fn apply<R>(self: &Arc<Self>, change: impl FnOnce(&mut State) -> (Effects, R)) -> R {
        let mut st = self.lock();
        let (fx, out) = change(&mut st);
        if fx.wake {
            self.changed.notify_all();
        }
        let start_watchdog = self.rearm_watchdog(&mut st, fx.wake);
        drop(st);
        if start_watchdog {
            self.start_watchdog();
        }
        self.settle(fx);
        out
    }

    fn on_reader_thread(self: &Arc<Self>) -> bool {
        READER_OF.get() == Arc::as_ptr(self) as usize
    }

    // --- starting -------------------------------------------------------------------------

    /// Starts the pool's workers and waits for their handshakes.
    pub(crate) fn start(self: &Arc<Self>) -> Result<(), StartError> {
        let n = if self.lock().rules.on_demand {
            1
        } else {
            self.config.workers
        };
        self.lock().spawning = n;
        for started in 0..n {
            // The ones not attempted after a failure are not coming either.
            if let Err(e) = self.spawn_one(n - started - 1) {
                self.abandon();
                return Err(StartError::Spawn(e));
            }
        }
        // Each reader thread gives its worker `handshake_timeout` to greet it.
        let mut st = self.lock();
        loop {
            match st.start_verdict() {
                Some(Ok(())) => return Ok(()),
                Some(Err(failure)) => {
                    drop(st);
                    self.abandon();
                    return Err(StartError::Worker(failure));
                }
                None => {}
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Gives up on a pool that could not start: stops every worker and waits for them.
    fn abandon(self: &Arc<Self>) {
        self.apply(|st| (st.on_abandon(), ()));
        self.wait_for_workers();
    }

    /// Starts one worker process (counted in `spawning`) and registers it, then starts its
    /// reader thread. A failure un-counts it and `not_attempted` more, and breaks the pool.
    fn spawn_one(self: &Arc<Self>, not_attempted: usize) -> std::io::Result<()> {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(format!("{}-{serial}", self.config.name_prefix));
        let launched = framing::frame(&ToWorker::Setup(Setup {
            name: name.to_string(),
            settings: self.config.task.clone(),
        }))
        .map_err(std::io::Error::other)
        .and_then(|setup| {
            process::launch(&Spec {
                serial,
                name: name.clone(),
                program: &self.config.program,
                setup,
                handshake_timeout: self.config.handshake_timeout,
            })
        });
        let launched = match launched {
            Ok(launched) => launched,
            Err(e) => {
                self.apply(|st| (st.on_spawn_failed(&e, not_attempted), ()));
                return Err(e);
            }
        };
        let worker = Worker::new(
            serial,
            name,
            launched.pid,
            launched.child.clone(),
            launched.tx.clone(),
        );
        let added = {
            let mut st = self.lock();
            let added = st.on_spawned(worker);
            self.changed.notify_all();
            added
        };
        if added {
            launched.watch(self.clone());
        } else {
            launched.discard();
        }
        Ok(())
    }

    // --- deadlines ------------------------------------------------------------------------

    /// Keeps the deadline watchdog informed (under the lock): wakes it when the earliest
    /// deadline moved before the time it waits for, or on a `changed` event. Returns whether
    /// it must be started (the first task with a timeout was handed).
    fn rearm_watchdog(&self, st: &mut State, changed: bool) -> bool {
        let next = st.next_deadline();
        if !st.watchdog {
            st.watchdog = next.is_some();
            return st.watchdog;
        }
        if changed || next.is_some_and(|due| st.watching.is_none_or(|until| due < until)) {
            self.deadlines.notify_all();
        }
        false
    }

    /// Starts the thread that stops workers that overran a deadline (the parent is the
    /// authority on deadlines: a frozen, stopped or hostile worker cannot hold a future).
    fn start_watchdog(self: &Arc<Self>) {
        let pool = self.clone();
        let started = std::thread::Builder::new()
            .name(format!("{}-deadlines", self.config.name_prefix))
            .spawn(move || pool.watch_deadlines());
        if let Err(e) = started {
            log::error!("cannot start the process pool's deadline watchdog: {e}");
            self.lock().watchdog = false;
        }
    }

    /// The watchdog: sleeps until the earliest deadline, stops the workers that overran it,
    /// and ends once the pool is shut down and its workers are gone.
    fn watch_deadlines(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            if !matches!(st.phase, Phase::Open) && st.all_gone() {
                st.watchdog = false;
                return;
            }
            let now = Instant::now();
            st.watching = None;
            st = match st.next_deadline() {
                Some(due) if due <= now => {
                    let fx = st.on_overrun(now);
                    if fx.wake {
                        self.changed.notify_all();
                    }
                    drop(st);
                    self.settle(fx);
                    self.lock()
                }
                Some(due) => {
                    st.watching = Some(due);
                    self.deadlines
                        .wait_timeout(st, due - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .deadlines
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    // --- submitting -----------------------------------------------------------------------

    pub(crate) fn submit(self: &Arc<Self>, call: Call) -> Result<TaskFuture, SubmitError> {
        self.lock().check_open()?;
        let component = self.register(call.component())?;
        let mut frames = Vec::new();
        let (task, future) = self.prepare(&call, &[], component.id, &mut frames)?;
        self.enqueue(vec![Batch {
            tasks: vec![task],
            ends: vec![frames.len()],
            frames,
            component,
            resumed: false,
        }])?;
        Ok(future)
    }

    /// Submits `calls` as batches: each run of calls of one component is one batch, handed
    /// to one worker in one write.
    pub(crate) fn submit_batch(
        self: &Arc<Self>,
        calls: Vec<Call>,
    ) -> Result<Vec<TaskFuture>, SubmitError> {
        let tasks = self.submit_runs(&calls, false)?;
        Ok(tasks.into_iter().map(|(future, _)| future).collect())
    }

    /// Submits `calls` as [`submit_batch`](Self::submit_batch) does, with each run of alike
    /// calls ([`Call::alike`]) one task, a chunk, when `chunked`. Returns each task's future
    /// and the number of calls it runs.
    pub(crate) fn submit_runs(
        self: &Arc<Self>,
        calls: &[Call],
        chunked: bool,
    ) -> Result<Vec<(TaskFuture, usize)>, SubmitError> {
        self.lock().check_open()?;
        let mut batches: Vec<Batch> = Vec::new();
        let mut futures = Vec::with_capacity(if chunked { 1 } else { calls.len() });
        let mut start = 0;
        while let Some(call) = calls.get(start) {
            let alike = if chunked {
                calls[start + 1..]
                    .iter()
                    .take_while(|c| call.alike(c))
                    .count()
            } else {
                0
            };
            let batch = match batches.last_mut() {
                Some(batch)
                    if start > 0
                        && calls[start - 1]
                            .component()
                            .same_component(call.component()) =>
                {
                    batch
                }
                _ => {
                    let component = self.register(call.component())?;
                    // Sized for the rest of the calls, which usually share the component.
                    let rest = calls.len() - start;
                    batches.push(Batch {
                        tasks: Vec::with_capacity(if chunked { 1 } else { rest }),
                        frames: Vec::new(),
                        ends: Vec::with_capacity(if chunked { 1 } else { rest }),
                        component,
                        resumed: false,
                    });
                    let last = batches.len() - 1;
                    &mut batches[last]
                }
            };
            let others = &calls[start + 1..start + 1 + alike];
            let (task, future) =
                self.prepare(call, others, batch.component.id, &mut batch.frames)?;
            if batch.tasks.is_empty() && !chunked {
                // The frames of calls alike are alike: room for the rest at once.
                batch
                    .frames
                    .reserve(batch.frames.len() * (calls.len() - start - 1));
            }
            batch.tasks.push(task);
            batch.ends.push(batch.frames.len());
            futures.push((future, 1 + alike));
            start += 1 + alike;
        }
        self.enqueue(batches)?;
        Ok(futures)
    }

    /// Encodes `call` as a TASK frame at the end of `frames` (with `others`, the calls alike
    /// that run with it as a chunk) and makes its promise, with the abort hook in place
    /// before the task can start.
    fn prepare(
        self: &Arc<Self>,
        call: &Call,
        others: &[Call],
        component: u64,
        frames: &mut Vec<u8>,
    ) -> Result<(Task, TaskFuture), SubmitError> {
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let task = ToWorker::Task(RunTask {
            id,
            component,
            function: call.function_index(),
            budget: call.budget().clone(),
            argv: call.argv().map(Cow::Borrowed),
            args: Cow::Borrowed(call.args()),
            rest: others.iter().map(|c| Cow::Borrowed(c.args())).collect(),
        });
        // Straight into the batch's buffer: no frame of its own to copy.
        framing::append(frames, &task).map_err(|e| {
            SubmitError::Incompatible(format!("the call cannot be sent to a worker: {e}"))
        })?;
        let (promise, future) = promise();
        future.extras().abort_hook = Some(AbortHook {
            target: self.stopper.clone(),
            id,
        });
        let calls = 1 + others.len();
        let timeout = call.budget().timeout.or(self.config.task.budget.timeout);
        let timeout = timeout.map(|t| t.saturating_mul(u32::try_from(calls).unwrap_or(u32::MAX)));
        Ok((
            Task {
                id,
                promise,
                timeout,
                calls,
            },
            future,
        ))
    }

    /// Queues `batches` and hands what it can to the workers. If the pool closed meanwhile,
    /// the batches' futures fail with the reason (their promises are dropped).
    fn enqueue(self: &Arc<Self>, batches: Vec<Batch>) -> Result<(), SubmitError> {
        self.apply(|st| match st.on_submit(batches) {
            Ok(fx) => (fx, Ok(())),
            Err(e) => (Effects::default(), Err(e)),
        })
    }

    /// The workers' id of `component`, registering it on first use.
    fn register(&self, component: &TaskComponent) -> Result<Arc<Component>, SubmitError> {
        let code = component.precompiled().map_err(|e| {
            SubmitError::Incompatible(format!("cannot precompile it for the workers: {e}"))
        })?;
        let key = Arc::as_ptr(&code) as *const u8 as usize;
        let mut registry = lock(&self.registry);
        if let Some(entry) = registry.get(&key) {
            return Ok(entry.clone());
        }
        let id = registry.len() as u64 + 1;
        let config: &RuntimeConfig = component.runtime().config();
        let load = ToWorker::Load(Load {
            id,
            config: config.clone(),
            origin: component.origin().to_string(),
            code: code.clone(),
        });
        let load = framing::frame(&load).map_err(|_| {
            SubmitError::Incompatible(format!(
                "{} is too large to send to the workers ({} bytes compiled)",
                component.origin(),
                code.len()
            ))
        })?;
        let entry = Arc::new(Component { id, load });
        registry.insert(key, entry.clone());
        Ok(entry)
    }

    // --- shutting down --------------------------------------------------------------------

    pub(crate) fn shutdown(self: &Arc<Self>, wait: bool, cancel_futures: bool) {
        self.apply(|st| (st.on_shutdown(cancel_futures), ()));
        if wait {
            self.wait_for_workers();
        }
    }

    /// Blocks until every worker process has exited and been reaped (unless called from
    /// one of this pool's own reader threads, which would then wait for itself).
    pub(crate) fn wait_for_workers(self: &Arc<Self>) {
        if self.on_reader_thread() {
            return;
        }
        let st = self.lock();
        let _done = self
            .changed
            .wait_while(st, |s| !s.all_gone())
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// Like [`wait_for_workers`](Self::wait_for_workers), for at most `timeout`; returns
    /// whether they are all gone.
    pub(crate) fn wait_for_workers_for(self: &Arc<Self>, timeout: Duration) -> bool {
        if self.on_reader_thread() {
            return false;
        }
        let st = self.lock();
        let (st, _) = self
            .changed
            .wait_timeout_while(st, timeout, |s| !s.all_gone())
            .unwrap_or_else(PoisonError::into_inner);
        st.all_gone()
    }

    /// The futures of the tasks the workers are running now.
    pub(crate) fn running(&self) -> Vec<TaskFuture> {
        self.lock().running()
    }

    /// Sends `signal` to every worker process still running.
    pub(crate) fn signal_workers(&self, signal: rustix::process::Signal) {
        let children = self.lock().children();
        for child in children {
            process::signal(&child, signal);
        }
    }

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.lock().pids()
    }

    pub(crate) fn broken_reason(&self) -> Option<String> {
        self.lock().broken_reason()
    }

    /// Does what the state changes decided, without the lock: logs, kills processes,
    /// resolves futures (running their callbacks here), starts replacements. `wake` was
    /// done under the lock, by [`apply`](Self::apply).
    fn settle(self: &Arc<Self>, fx: Effects) {
        for warning in &fx.warnings {
            log::warn!("{warning}");
        }
        for child in &fx.kill {
            process::signal(child, rustix::process::Signal::KILL);
        }
        for promise in fx.cancelled {
            promise.future().cancel();
        }
        for (promise, error) in fx.failed {
            promise.set_error(error);
        }
        for _ in 0..fx.spawn {
            // A failure breaks the pool, with the reason (see `State::on_spawn_failed`).
            let _ = self.spawn_one(0);
        }
        for (promise, outcome, report) in fx.completed {
            promise.complete_with_run_report(outcome, report);
        }
    }
}

impl Listener for Shared {
    fn reader_started(self: &Arc<Self>) {
        READER_OF.set(Arc::as_ptr(self) as usize);
    }

    fn report(self: &Arc<Self>, event: Event) -> Result<(), ProtocolError> {
        self.apply(|st| {
            let mut fx = st.on(event);
            let violation = fx.violation.take();
            (fx, violation.map_or(Ok(()), Err))
        })
    }
}

/// Why [`Shared::start`] failed.
pub(crate) enum StartError {
    Spawn(std::io::Error),
    Worker(StartupFailure),
}
