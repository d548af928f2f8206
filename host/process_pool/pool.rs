//! The pool's life: starting its workers, accepting tasks, taking results and losses from
//! the reader threads, shutting down. The rules for what each event does to the queue and
//! the workers are in `state.rs`; this file takes the lock, applies them, and then does
//! what they decided ([`Shared::settle`]) with the lock released.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{ProtocolError, SubmitError, TaskError};
use crate::future::{Promise, TaskFuture, promise};
use crate::run::TaskRun;
use crate::runtime::RuntimeConfig;
use crate::settings::TaskSettings;

use super::framing::{self, Frame};
use super::messages::{Abort, Load, RunTask, ToWorker};
use super::process;
use super::state::{
    Effects, End, Job, MAX_FAILED_STARTS, Phase, StartupFailure, State, Worker, describe,
    describe_start,
};

/// The settings a pool was built with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) workers: usize,
    pub(crate) program: PathBuf,
    pub(crate) name_prefix: String,
    /// What every task gets.
    pub(crate) task: TaskSettings,
    pub(crate) respawn: bool,
    pub(crate) max_tasks_per_worker: Option<usize>,
    pub(crate) pipeline_depth: usize,
    pub(crate) handshake_timeout: Duration,
}

/// Everything the executor handle, the abort hooks and the reader threads share.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    state: Mutex<State>,
    /// Notified when a worker becomes ready or goes away, and when the pool breaks.
    changed: Condvar,
    /// Components the workers may need, by the address of their precompiled bytes (kept
    /// alive here, so an address is never reused for another component).
    registry: Mutex<HashMap<usize, Arc<ComponentEntry>>>,
    next_task: AtomicU64,
    pub(crate) next_serial: AtomicU64,
}

/// A component as the workers know it.
pub(crate) struct ComponentEntry {
    pub(crate) id: u64,
    /// Its LOAD frame (the code shared, not copied).
    pub(crate) load: Frame,
}

thread_local! {
    /// The pool whose reader thread this is (its address), 0 elsewhere: a done callback
    /// running on a reader thread must not wait for that same thread to exit.
    static READER_OF: Cell<usize> = const { Cell::new(0) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(settings: Settings) -> Arc<Shared> {
        Arc::new(Shared {
            settings,
            state: Mutex::new(State {
                phase: Phase::Open,
                queue: VecDeque::new(),
                workers: Vec::new(),
                spawning: 0,
                startup_failure: None,
                started: false,
                failed_starts: 0,
            }),
            changed: Condvar::new(),
            registry: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(1),
            next_serial: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Marks the calling thread as a reader thread of this pool.
    pub(crate) fn enter_reader_thread(self: &Arc<Self>) {
        READER_OF.set(Arc::as_ptr(self) as usize);
    }

    fn on_reader_thread(self: &Arc<Self>) -> bool {
        READER_OF.get() == Arc::as_ptr(self) as usize
    }

    // --- starting -------------------------------------------------------------------------

    /// Starts the pool's workers and waits for their handshakes.
    pub(crate) fn start(self: &Arc<Self>) -> Result<(), StartError> {
        let n = self.settings.workers;
        self.lock().spawning = n;
        for started in 0..n {
            if let Err(e) = process::start(self) {
                // The ones not attempted are not coming either.
                self.lock().spawning -= n - started - 1;
                self.abandon();
                return Err(StartError::Spawn(e));
            }
        }
        // Each reader thread gives its worker `handshake_timeout` to greet it.
        let mut st = self.lock();
        loop {
            if let Phase::Broken(reason) = &st.phase {
                let reason = reason.clone();
                let failure = st.startup_failure.take().unwrap_or(StartupFailure {
                    worker: "a worker".into(),
                    reason,
                    source: None,
                });
                drop(st);
                self.abandon();
                return Err(StartError::Worker(failure));
            }
            if st.spawning == 0 && st.workers.iter().all(|w| w.ready) {
                st.started = true;
                return Ok(());
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Gives up on a pool that could not start: stops every worker and waits for them.
    fn abandon(self: &Arc<Self>) {
        let mut fx = Effects::default();
        let mut st = self.lock();
        st.break_pool("the pool could not start".into(), &mut fx);
        drop(st);
        self.settle(fx);
        self.wait_for_workers();
    }

    /// Registers a worker whose process was just started (`spawning` counted it).
    /// Returns `false`, registering nothing, if the pool broke meanwhile.
    pub(crate) fn add_worker(&self, worker: Worker) -> bool {
        let mut st = self.lock();
        st.spawning -= 1;
        let added = !matches!(st.phase, Phase::Broken(_));
        if added {
            st.workers.push(worker);
        }
        self.changed.notify_all();
        added
    }

    /// A start that failed before the worker was registered.
    pub(crate) fn spawn_failed(self: &Arc<Self>, error: &std::io::Error) {
        let mut fx = Effects::default();
        let mut st = self.lock();
        st.spawning -= 1;
        st.break_pool(format!("cannot start a new worker: {error}"), &mut fx);
        self.changed.notify_all();
        drop(st);
        self.settle(fx);
    }

    // --- submitting -----------------------------------------------------------------------

    pub(crate) fn submit(self: &Arc<Self>, call: Call) -> Result<TaskFuture, SubmitError> {
        self.lock().phase.check()?;
        let component = self.register(call.component())?;
        let mut frames = Vec::new();
        let (task, future) = self.prepare(&call, component.id, &mut frames)?;
        self.enqueue(vec![Job {
            tasks: vec![task],
            ends: vec![frames.len()],
            frames,
            component,
        }])?;
        Ok(future)
    }

    /// Submits `calls` as batches: each run of calls of one component is one job, handed to
    /// one worker in one write.
    pub(crate) fn submit_batch(
        self: &Arc<Self>,
        calls: Vec<Call>,
    ) -> Result<Vec<TaskFuture>, SubmitError> {
        self.lock().phase.check()?;
        let mut jobs: Vec<Job> = Vec::new();
        let mut futures = Vec::with_capacity(calls.len());
        for (i, call) in calls.iter().enumerate() {
            let job = match jobs.last_mut() {
                Some(job) if i > 0 && calls[i - 1].component().same_component(call.component()) => {
                    job
                }
                _ => {
                    let component = self.register(call.component())?;
                    jobs.push(Job {
                        tasks: Vec::new(),
                        frames: Vec::new(),
                        ends: Vec::new(),
                        component,
                    });
                    let last = jobs.len() - 1;
                    &mut jobs[last]
                }
            };
            let (task, future) = self.prepare(call, job.component.id, &mut job.frames)?;
            job.tasks.push(task);
            job.ends.push(job.frames.len());
            futures.push(future);
        }
        self.enqueue(jobs)?;
        Ok(futures)
    }

    /// Encodes `call` as a TASK frame at the end of `frames` and makes its promise, with the
    /// abort hook in place before the task can start.
    fn prepare(
        self: &Arc<Self>,
        call: &Call,
        component: u64,
        frames: &mut Vec<u8>,
    ) -> Result<((u64, Promise), TaskFuture), SubmitError> {
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let task = ToWorker::Task(RunTask {
            id,
            component,
            function: call.function_index(),
            budget: call.budget().clone(),
            argv: call.argv().map(Cow::Borrowed),
            args: Cow::Borrowed(call.args()),
        });
        // Straight into the job's buffer: no frame of its own to copy.
        framing::append(frames, &task).map_err(|e| {
            SubmitError::Incompatible(format!("the call cannot be sent to a worker: {e}"))
        })?;
        let (promise, future) = promise();
        let pool = Arc::downgrade(self);
        future.extras().abort_hook = Some(Box::new(move || abort_task(&pool, id)));
        Ok(((id, promise), future))
    }

    /// Queues `jobs` and hands what it can to the workers. If the pool closed meanwhile,
    /// the jobs' futures fail with the reason (their promises are dropped).
    fn enqueue(self: &Arc<Self>, jobs: Vec<Job>) -> Result<(), SubmitError> {
        let mut st = self.lock();
        st.phase.check()?;
        st.queue.extend(jobs);
        let fx = st.pump(&self.settings);
        drop(st);
        self.settle(fx);
        Ok(())
    }

    /// The workers' id of `component`, registering it on first use.
    fn register(&self, component: &TaskComponent) -> Result<Arc<ComponentEntry>, SubmitError> {
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
        let entry = Arc::new(ComponentEntry { id, load });
        registry.insert(key, entry.clone());
        Ok(entry)
    }

    // --- what the reader threads report ---------------------------------------------------

    /// The worker answered the handshake.
    pub(crate) fn worker_ready(self: &Arc<Self>, serial: u64) {
        let mut st = self.lock();
        if let Some(w) = st.worker_mut(serial) {
            w.ready = true;
            st.failed_starts = 0;
        }
        let fx = st.pump(&self.settings);
        self.changed.notify_all();
        drop(st);
        self.settle(fx);
    }

    /// Results arrived. Fails if the worker answered a task it was not running.
    pub(crate) fn tasks_done(
        self: &Arc<Self>,
        serial: u64,
        results: Vec<(u64, TaskRun)>,
    ) -> Result<(), ProtocolError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        let broken = matches!(st.phase, Phase::Broken(_));
        let Some(w) = st.worker_mut(serial) else {
            return Ok(());
        };
        let (name, pid) = (w.name.clone(), w.pid);
        let mut done = Vec::with_capacity(results.len());
        let mut breaks_pool = None;
        let mut error = None;
        for (id, run) in results {
            let Some(i) = w.in_flight.iter().position(|(t, _)| *t == id) else {
                // A broken pool failed the task already and is stopping this worker.
                if !broken {
                    error = Some(ProtocolError::Malformed(format!(
                        "a result for task {id}, which it was not running"
                    )));
                    break;
                }
                continue;
            };
            let Some((_, promise)) = w.in_flight.remove(i) else {
                continue;
            };
            if run.breaks_pool {
                // The pool's initializer failed: concurrent.futures breaks the pool.
                breaks_pool = Some(match &run.outcome {
                    Err(TaskError::BrokenPool { reason }) => reason.clone(),
                    _ => format!("the initializer failed in {name}"),
                });
            }
            done.push((promise, run));
        }
        let mut fx = Effects::default();
        if let Some(reason) = breaks_pool {
            st.break_pool(reason, &mut fx);
        }
        fx.merge(st.pump(&self.settings));
        drop(st);
        self.settle(fx);
        for (promise, run) in done {
            let report = run.report(&name, pid, 1);
            promise.complete_with_report(run.outcome, report);
        }
        error.map_or(Ok(()), Err)
    }

    /// The worker's channel ended; `status` is how its process ended. Decides whether that
    /// was expected (the pool closed it, or is broken already) or breaks the pool, or, in
    /// respawn mode, fails only the worker's own tasks and starts a replacement.
    pub(crate) fn worker_gone(self: &Arc<Self>, serial: u64, end: End, status: Option<ExitStatus>) {
        let mut fx = Effects::default();
        let mut st = self.lock();
        let Some(i) = st.workers.iter().position(|w| w.serial == serial) else {
            return;
        };
        let worker = st.workers.remove(i);
        let closed_by_us = worker.tx.is_none() && worker.in_flight.is_empty();
        let expected =
            matches!(st.phase, Phase::Broken(_)) || (matches!(end, End::Eof) && closed_by_us);
        if !expected {
            let reason = describe(&worker, &end, status);
            if !worker.ready && st.startup_failure.is_none() {
                st.startup_failure = Some(StartupFailure {
                    worker: worker.name.to_string(),
                    reason: describe_start(&end, status),
                    source: match &end {
                        End::Handshake(e) | End::Protocol(e) => Some(e.clone()),
                        End::Eof => None,
                    },
                });
            }
            // Work is left for a replacement to do.
            let needed = matches!(st.phase, Phase::Open) || !st.queue.is_empty();
            if self.settings.respawn && worker.ready {
                let replace = !worker.retiring && needed;
                let error = TaskError::BrokenPool {
                    reason: if replace {
                        format!("{reason}; a new worker takes its place (respawn mode)")
                    } else {
                        reason
                    },
                };
                for (_, promise) in worker.in_flight {
                    fx.failed.push((promise, error.clone()));
                }
                if replace {
                    st.spawning += 1;
                    fx.spawn += 1;
                }
            } else if self.settings.respawn
                && st.started
                && (st.failed_starts < MAX_FAILED_STARTS || !needed)
            {
                // A replacement died before its greeting (it had no tasks yet): start
                // another if there is work for it, a bounded number of times in a row.
                if needed {
                    log::warn!("{reason}; starting another worker (respawn mode)");
                    st.failed_starts += 1;
                    st.spawning += 1;
                    fx.spawn += 1;
                }
            } else {
                let reason = if self.settings.respawn && st.failed_starts >= MAX_FAILED_STARTS {
                    format!(
                        "{reason}; {} replacement workers in a row failed to start, so \
                         respawn mode gives up",
                        st.failed_starts + 1
                    )
                } else {
                    reason
                };
                let error = TaskError::BrokenPool {
                    reason: reason.clone(),
                };
                for (_, promise) in worker.in_flight {
                    fx.failed.push((promise, error.clone()));
                }
                st.break_pool(reason, &mut fx);
            }
        }
        fx.merge(st.pump(&self.settings));
        self.changed.notify_all();
        drop(st);
        self.settle(fx);
    }

    // --- shutting down --------------------------------------------------------------------

    pub(crate) fn shutdown(self: &Arc<Self>, wait: bool, cancel_futures: bool) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Open) {
            st.phase = Phase::ShuttingDown;
        }
        let cancelled: Vec<Job> = if cancel_futures {
            st.queue.drain(..).collect()
        } else {
            Vec::new()
        };
        let fx = st.pump(&self.settings);
        drop(st);
        for (_, promise) in cancelled.iter().flat_map(|job| &job.tasks) {
            promise.future().cancel();
        }
        self.settle(fx);
        if wait {
            self.wait_for_workers();
        }
    }

    /// Blocks until every worker process has exited and been reaped (unless called from
    /// one of this pool's own reader threads, which would then wait for itself).
    fn wait_for_workers(self: &Arc<Self>) {
        if self.on_reader_thread() {
            return;
        }
        let st = self.lock();
        let _done = self
            .changed
            .wait_while(st, |s| !s.workers.is_empty() || s.spawning > 0)
            .unwrap_or_else(PoisonError::into_inner);
    }

    /// The futures of the tasks the workers are running now.
    pub(crate) fn running(&self) -> Vec<TaskFuture> {
        let st = self.lock();
        st.workers
            .iter()
            .flat_map(|w| w.in_flight.iter().map(|(_, p)| p.future()))
            .collect()
    }

    /// Sends `signal` to every worker process still running.
    pub(crate) fn signal_workers(&self, signal: rustix::process::Signal) {
        let children: Vec<_> = self
            .lock()
            .workers
            .iter()
            .map(|w| w.child.clone())
            .collect();
        for child in children {
            process::signal(&child, signal);
        }
    }

    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        self.lock().workers.iter().map(|w| w.pid).collect()
    }

    pub(crate) fn broken_reason(&self) -> Option<String> {
        match &self.lock().phase {
            Phase::Broken(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Does what the state changes decided, without the lock: kills processes, resolves
    /// futures (running their callbacks here), starts replacements.
    fn settle(self: &Arc<Self>, fx: Effects) {
        for child in &fx.kill {
            process::signal(child, rustix::process::Signal::KILL);
        }
        for (promise, error) in fx.failed {
            promise.set_error(error);
        }
        for _ in 0..fx.spawn {
            // A failure breaks the pool, with the reason (see `spawn_failed`).
            let _ = process::start(self);
        }
    }
}

/// The abort hook of a task: asks the worker running it to stop it.
fn abort_task(pool: &Weak<Shared>, id: u64) {
    let Some(shared) = pool.upgrade() else {
        return;
    };
    let st = shared.lock();
    let worker = st
        .workers
        .iter()
        .find(|w| w.in_flight.iter().any(|(t, _)| *t == id));
    if let Some(tx) = worker.and_then(|w| w.tx.as_ref())
        && let Ok(frame) = framing::frame(&ToWorker::Abort(Abort { id }))
    {
        let _ = tx.send(frame);
    }
}

/// Why [`Shared::start`] failed.
pub(crate) enum StartError {
    Spawn(std::io::Error),
    Worker(StartupFailure),
}
