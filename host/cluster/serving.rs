//! A cluster worker at work: pulling task messages, running their calls on local pools,
//! keeping their claims, and settling each call for the reporter (`results.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{BuildError, SubmitError, TaskError};
use crate::executor::Executor;
use crate::future::TaskFuture;
use crate::run::TaskRun;
use crate::runtime::Runtime;
use crate::settings::TaskSettings;
use crate::sync::lock;
use crate::thread_pool::ThreadPoolExecutor;

use super::components::{ComponentLoader, Components};
use super::limits::WorkerLimits;
use super::nats::{
    Names, NatsOptions, Queue, QueueConfig, WORKERS_CONSUMER, ensure_queue, stop_key,
};
use super::results::{Held, Settled, report};
use super::stops::watch_stops;
use super::wire::{self, RemoteCall, RemoteResult, StartedMessage, TaskMessage};

/// How many task messages a worker with `workers` local workers holds at once: enough
/// that the round trips of results and acks never leave its pool idle when tasks take
/// microseconds (each held message's claim is kept by progress acks meanwhile).
fn held_messages(workers: usize) -> usize {
    workers.saturating_mul(4).max(32)
}

/// Which local pool runs a cluster worker's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerPool {
    /// Threads of the worker process (the default).
    #[default]
    Thread,
    /// Worker processes, each its own sandbox process; `program` is the worker program
    /// (default: the running program, which must call
    /// [`serve_worker_if_requested`](crate::serve_worker_if_requested)).
    Process {
        /// The worker program.
        program: Option<PathBuf>,
    },
}

/// What a worker did, when it has stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerSummary {
    /// Tasks run and reported.
    pub tasks: u64,
    /// Task messages handed back to the queue (at a stop, or a lost local worker).
    pub handed_back: u64,
}

/// How a worker connects and what it runs with (its builder's settings but the queue and
/// the worker count).
#[derive(Clone)]
pub(crate) struct WorkerSetup {
    pub(crate) url: String,
    pub(crate) nats: NatsOptions,
    pub(crate) pool: WorkerPool,
    pub(crate) limits: WorkerLimits,
    pub(crate) host: String,
    pub(crate) loader: Option<ComponentLoader>,
}

/// A local pool for one set of task settings.
enum LocalPool {
    Thread(ThreadPoolExecutor),
    #[cfg(unix)]
    Process(crate::ProcessPoolExecutor),
}

impl LocalPool {
    fn executor(&self) -> &dyn Executor {
        match self {
            LocalPool::Thread(p) => p,
            #[cfg(unix)]
            LocalPool::Process(p) => p,
        }
    }

    /// Whether a task of this pool that failed with [`TaskError::BrokenPool`] lost its
    /// process (and may succeed elsewhere) rather than failed deterministically.
    fn loses_workers(&self) -> bool {
        !matches!(self, LocalPool::Thread(_))
    }
}

/// The worker's state on its connection.
pub(crate) struct Serving {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
    queue: Queue,
    pool_kind: WorkerPool,
    workers: usize,
    limits: WorkerLimits,
    host: String,
    components: Components,
    pools: Vec<(TaskSettings, LocalPool)>,
    /// Stopped tasks (`submitter.id`), with when they were seen.
    stopped: Arc<Mutex<HashMap<String, Instant>>>,
    /// Local futures of the calls running here, by `submitter.id`.
    running: Arc<Mutex<HashMap<String, TaskFuture>>>,
    summary: WorkerSummary,
}

impl Serving {
    pub(crate) async fn connect(
        setup: WorkerSetup,
        names: Names,
        workers: usize,
    ) -> Result<Serving, BuildError> {
        let client = setup
            .nats
            .connect(&setup.url, &format!("wasmpool worker on {}", setup.host))
            .await?;
        let js = super::nats::jetstream_context(&client);
        let queue = ensure_queue(&js, &names, &QueueConfig::default()).await?;
        let loader = setup.loader.unwrap_or_else(|| {
            Arc::new(|runtime: &Runtime, bytes: &[u8], origin: &str| {
                runtime.load_bytes(bytes, origin)
            })
        });
        let force_fuel = setup.limits.max_fuel.is_some();
        Ok(Serving {
            js,
            client,
            names,
            queue,
            pool_kind: setup.pool,
            workers,
            limits: setup.limits,
            host: setup.host,
            components: Components::new(loader, force_fuel),
            pools: Vec::new(),
            stopped: Arc::new(Mutex::new(HashMap::new())),
            running: Arc::new(Mutex::new(HashMap::new())),
            summary: WorkerSummary::default(),
        })
    }

    pub(crate) async fn serve(mut self, mut stop: watch::Receiver<bool>) -> WorkerSummary {
        let slots = Arc::new(Semaphore::new(held_messages(self.workers)));
        let (settled_tx, settled_rx) = mpsc::unbounded_channel::<Settled>();
        let (watching_tx, watching) = tokio::sync::oneshot::channel();
        let watcher = tokio::spawn(watch_stops(
            self.queue.stops.clone(),
            self.stopped.clone(),
            self.running.clone(),
            watching_tx,
        ));
        // Take no task before the stops put while no worker watched are known.
        tokio::select! {
            _ = watching => {}
            _ = stop.changed() => {}
        }
        let reporter = tokio::spawn(report(
            self.js.clone(),
            self.names.clone(),
            self.host.clone(),
            self.client.server_info().max_payload,
            settled_rx,
        ));
        let consumer: consumer::PullConsumer =
            match self.queue.tasks.get_consumer(WORKERS_CONSUMER).await {
                Ok(c) => c,
                Err(e) => {
                    log::error!("cannot find the workers' consumer: {e}");
                    return self.summary;
                }
            };
        let mut messages = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(s) => s,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            if messages.is_none() {
                match consumer
                    .stream()
                    .max_messages_per_batch(held_messages(self.workers) / 2)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(s) => messages = Some(s),
                    Err(e) => {
                        log::warn!("cannot pull tasks, retrying: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let Some(stream) = messages.as_mut() else {
                continue;
            };
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stop.changed() => break,
            };
            match next {
                Some(Ok(message)) => self.take(message, slot, &settled_tx).await,
                Some(Err(e)) => log::debug!("pulling tasks: {e}"),
                None => messages = None,
            }
        }
        // Stopping: take nothing new. Messages the server already sent this way and not yet
        // taken are handed back at once (else they would wait out AckWait); queued local
        // tasks are cancelled (and handed back), running ones finish and are reported.
        if let Some(mut stream) = messages.take() {
            let mut unstarted = Vec::new();
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(Duration::from_millis(50), stream.next()).await
            {
                unstarted.push(message);
            }
            // Stop pulling before handing them back: a message nak'd while this stream's
            // pull request is open comes straight back to it (one more delivery each time,
            // until MaxDeliver makes it poison).
            drop(stream);
            let _ = self.client.flush().await;
            for message in unstarted {
                self.summary.handed_back += 1;
                let _ = message.ack_with(AckKind::Nak(None)).await;
            }
        }
        for (_, pool) in &self.pools {
            pool.executor().shutdown(false, true);
        }
        for (_, pool) in &self.pools {
            pool.executor().shutdown(true, false);
        }
        drop(settled_tx);
        let reported = reporter.await.unwrap_or_default();
        watcher.abort();
        let _ = self.client.flush().await;
        self.summary.tasks = reported.tasks;
        self.summary.handed_back += reported.handed_back;
        self.summary
    }

    /// Runs the calls of one task message.
    async fn take(
        &mut self,
        message: jetstream::Message,
        slot: OwnedSemaphorePermit,
        settled: &mpsc::UnboundedSender<Settled>,
    ) {
        let task: TaskMessage<'static> = match wire::decode(&message.payload) {
            Ok(t) => t,
            Err(e) => {
                log::error!(
                    "dropped a task message this worker cannot read ({e}); is the submitter another version of wasmpool?"
                );
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let held = Arc::new(Held {
            message,
            submitter: task.submitter.clone(),
            remaining: AtomicUsize::new(task.calls.len()),
            lost: AtomicBool::new(false),
            done: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
        });
        if task.calls.is_empty() {
            let _ = held.message.ack().await;
            return;
        }
        tokio::spawn(keep_claim(Arc::downgrade(&held), self.queue.ack_wait / 3));
        let settle_now = |call: &RemoteCall<'_>, error: TaskError| Settled {
            held: held.clone(),
            result: Some(RemoteResult {
                id: call.id,
                worker: String::new(),
                pid: std::process::id(),
                run: TaskRun::failed(error, Duration::ZERO),
            }),
        };
        if let Err(message) = self.limits.admit_capabilities(&task.settings.capabilities) {
            for call in &task.calls {
                let _ = settled.send(settle_now(
                    call,
                    TaskError::Refused {
                        message: message.clone(),
                    },
                ));
            }
            return;
        }
        let component = match self.components.get(&self.queue.components, &task).await {
            Ok(c) => c,
            Err(message) => {
                for call in &task.calls {
                    let _ = settled.send(settle_now(
                        call,
                        TaskError::ComponentUnavailable {
                            message: message.clone(),
                        },
                    ));
                }
                return;
            }
        };
        #[cfg(feature = "test-hooks")]
        kill_hook(&component, &task.calls);
        // Started: the component is ready here and the calls go to the local pool now.
        let ids: Vec<u64> = task.calls.iter().map(|c| c.id).collect();
        if let Ok(body) = wire::encode(&StartedMessage { ids }) {
            let _ = self
                .client
                .publish(self.names.started_subject(&task.submitter), body.into())
                .await;
        }
        let mut calls = Vec::with_capacity(task.calls.len());
        let mut keys = Vec::with_capacity(task.calls.len());
        for call in task.calls {
            let key = stop_key(&task.submitter, call.id);
            if lock(&self.stopped).contains_key(&key) {
                let _ = settled.send(Settled {
                    held: held.clone(),
                    result: None,
                });
                continue;
            }
            match self.local_call(&component, &call) {
                Ok(c) => {
                    calls.push(c);
                    keys.push((key, call.id));
                }
                Err(error) => {
                    let _ = settled.send(settle_now(&call, error));
                }
            }
        }
        if calls.is_empty() {
            return;
        }
        let settings = task.settings.clone();
        let futures = match self.submit(&settings, calls.clone()) {
            Ok(f) => f,
            Err(e) => {
                let error = TaskError::from(e);
                for (_, id) in &keys {
                    let _ = settled.send(Settled {
                        held: held.clone(),
                        result: Some(RemoteResult {
                            id: *id,
                            worker: String::new(),
                            pid: std::process::id(),
                            run: TaskRun::failed(error.clone(), Duration::ZERO),
                        }),
                    });
                }
                return;
            }
        };
        let loses_workers = self.pool_for(&settings).is_some_and(|p| p.loses_workers());
        for (future, (key, id)) in futures.into_iter().zip(keys) {
            lock(&self.running).insert(key.clone(), future.clone());
            // A stop noted between the check above and this registration found nothing
            // running to abort: look again now that it is registered.
            if lock(&self.stopped).contains_key(&key) {
                future.abort();
            }
            let held = held.clone();
            let settled = settled.clone();
            let running = self.running.clone();
            let stopped = self.stopped.clone();
            future.add_done_callback(move |f| {
                lock(&running).remove(&key);
                let result = settle(
                    f,
                    id,
                    loses_workers,
                    &lock(&stopped).contains_key(&key),
                    &held,
                );
                let _ = settled.send(Settled { held, result });
            });
        }
    }

    /// The call to run locally, with the budget the limits admit.
    fn local_call(
        &self,
        component: &TaskComponent,
        call: &RemoteCall<'_>,
    ) -> Result<Call, TaskError> {
        let budget = self
            .limits
            .admit_budget(&call.budget)
            .map_err(|message| TaskError::Refused { message })?;
        let local = component
            .call_at(call.function, call.args.to_vec())
            .map_err(|e| TaskError::ComponentUnavailable {
                message: format!("the call does not fit the component here: {e}"),
            })?
            .with_budget(budget);
        Ok(match &call.argv {
            Some(argv) => local.with_args(argv.iter().cloned()),
            None => local,
        })
    }

    fn pool_for(&self, settings: &TaskSettings) -> Option<&LocalPool> {
        self.pools
            .iter()
            .find(|(s, _)| s == settings)
            .map(|(_, p)| p)
    }

    /// Submits to the pool for `settings`, building it (again, if it broke) as needed.
    fn submit(
        &mut self,
        settings: &TaskSettings,
        calls: Vec<Call>,
    ) -> Result<Vec<TaskFuture>, SubmitError> {
        if self.pool_for(settings).is_none() {
            let pool = self
                .build_pool(settings)
                .map_err(|e| SubmitError::BrokenPool(format!("cannot start a local pool: {e}")))?;
            self.pools.push((settings.clone(), pool));
        }
        let Some(pool) = self.pool_for(settings) else {
            return Err(SubmitError::BrokenPool("no local pool".into()));
        };
        match pool.executor().submit_batch(calls.clone()) {
            Err(SubmitError::BrokenPool(reason)) => {
                log::warn!("a local pool broke ({reason}); starting a new one");
                self.pools.retain(|(s, _)| s != settings);
                let pool = self.build_pool(settings).map_err(|e| {
                    SubmitError::BrokenPool(format!("cannot start a local pool: {e}"))
                })?;
                let futures = pool.executor().submit_batch(calls);
                self.pools.push((settings.clone(), pool));
                futures
            }
            other => other,
        }
    }

    fn build_pool(&self, settings: &TaskSettings) -> Result<LocalPool, BuildError> {
        Ok(match &self.pool_kind {
            WorkerPool::Thread => LocalPool::Thread(
                ThreadPoolExecutor::builder()
                    .workers(self.workers)
                    .task_settings(settings.clone())
                    .build()?,
            ),
            #[cfg(unix)]
            WorkerPool::Process { program } => {
                let mut builder = crate::ProcessPoolExecutor::builder()
                    .workers(self.workers)
                    .respawn(true)
                    .task_settings(settings.clone());
                if let Some(program) = program {
                    builder = builder.worker_program(program);
                }
                LocalPool::Process(builder.build()?)
            }
            #[cfg(not(unix))]
            WorkerPool::Process { .. } => {
                return Err(BuildError::Invalid("process pools need Unix".into()));
            }
        })
    }
}

/// Test hook for the poison-task tests, compiled only with the `test-hooks` feature:
/// with `WASMPOOL_CLUSTER_TEST_HOOK=kill-on:FUNC`, a worker that takes a call of `FUNC`
/// kills its own process with SIGKILL (a task that kills every worker that takes it).
#[cfg(feature = "test-hooks")]
pub(crate) const CLUSTER_TEST_HOOK_ENV: &str = "WASMPOOL_CLUSTER_TEST_HOOK";

#[cfg(feature = "test-hooks")]
fn kill_hook(component: &TaskComponent, calls: &[RemoteCall<'_>]) {
    let Ok(hook) = std::env::var(CLUSTER_TEST_HOOK_ENV) else {
        return;
    };
    let Some(victim) = hook.strip_prefix("kill-on:") else {
        return;
    };
    let poisoned = calls.iter().any(|c| {
        component
            .functions()
            .get(c.function)
            .is_some_and(|f| f.name() == victim || f.func_name() == victim)
    });
    if poisoned {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    }
}

/// How a local future ended, as the result to send (or `None`: lost, or stopped by its
/// submitter, who needs no result).
fn settle(
    future: &TaskFuture,
    id: u64,
    loses_workers: bool,
    stopped: &bool,
    held: &Held,
) -> Option<RemoteResult> {
    let outcome = future.result();
    match &outcome {
        Err(TaskError::Cancelled) if *stopped => return None,
        // Cancelled without being stopped: the worker is stopping; hand it back.
        Err(TaskError::Cancelled) => {
            held.lost.store(true, Ordering::SeqCst);
            return None;
        }
        Err(TaskError::BrokenPool { .. }) if loses_workers => {
            held.lost.store(true, Ordering::SeqCst);
            return None;
        }
        _ => {}
    }
    let report = future.report();
    let (worker, pid) = report
        .as_ref()
        .map_or((String::new(), std::process::id()), |r| {
            (r.worker.clone(), r.pid)
        });
    let run = match report {
        Some(r) => TaskRun {
            outcome,
            elapsed: r.elapsed,
            fuel_consumed: r.fuel_consumed,
            peak_memory: r.peak_memory,
            stdout: r.stdout,
            stderr: r.stderr,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
        },
        None => TaskRun::failed(
            outcome.err().unwrap_or(TaskError::Cancelled),
            Duration::ZERO,
        ),
    };
    Some(RemoteResult {
        id,
        worker,
        pid,
        run,
    })
}

/// Sends progress acks for a held message until it is done.
async fn keep_claim(held: std::sync::Weak<Held>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(held) = held.upgrade() else {
            return;
        };
        if held.done.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = held.message.ack_with(AckKind::Progress).await {
            log::debug!("progress ack: {e}");
        }
    }
}
