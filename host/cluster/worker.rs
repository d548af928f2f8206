//! The worker's side: [`ClusterWorker`] takes task messages from the queue and runs their
//! calls on a local pool, then publishes the results and acks the message.
//!
//! A held message is acked only after every result of it was stored by the server, so a
//! worker that dies between the two loses nothing: the message is delivered again and the
//! submitter drops the second result. A call whose local worker process was lost is not
//! reported: its message is handed back (nak), to run elsewhere.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{BuildError, LoadError, SubmitError, TaskError};
use crate::executor::Executor;
use crate::future::TaskFuture;
use crate::run::TaskRun;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::settings::TaskSettings;
use crate::sync::lock;
use crate::thread_pool::ThreadPoolExecutor;

use super::client::hex;
use super::limits::WorkerLimits;
use super::nats::{
    Names, NatsOptions, Queue, QueueConfig, WORKERS_CONSUMER, ensure_queue, host_name, stop_key,
};
use super::wire::{self, RemoteCall, RemoteResult, ResultMessage, StartedMessage, TaskMessage};

/// The largest component a worker fetches from the object store.
const MAX_COMPONENT: u64 = 512 << 20;
/// How many task messages a worker with `workers` local workers holds at once: enough
/// that the round trips of results and acks never leave its pool idle when tasks take
/// microseconds (each held message's claim is kept by progress acks meanwhile).
fn held_messages(workers: usize) -> usize {
    workers.saturating_mul(4).max(32)
}

/// How many stopped tasks a worker remembers before forgetting the oldest hour.
const STOPS_REMEMBERED: usize = 100_000;

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

/// Compiles a component's `.wasm` for a worker: `(runtime, bytes, origin)`. The default
/// is [`Runtime::load_bytes`]; the command line plugs in its compilation cache.
pub type ComponentLoader =
    Arc<dyn Fn(&Runtime, &[u8], &str) -> Result<TaskComponent, LoadError> + Send + Sync>;

/// Settings of a [`ClusterWorker`].
///
/// ```no_run
/// use std::time::Duration;
/// use wasmpool::cluster::{ClusterWorker, WorkerLimits, WorkerPool};
/// let worker = ClusterWorker::builder("nats://127.0.0.1:4222")
///     .pool(WorkerPool::Thread)
///     .workers(4)
///     .limits(WorkerLimits::default().max_timeout(Duration::from_secs(300)))
///     .start()?;
/// worker.stop(); // finish what it runs, hand back what it holds
/// worker.join()?;
/// # Ok::<(), wasmpool::BuildError>(())
/// ```
#[derive(Clone)]
pub struct ClusterWorkerBuilder {
    url: String,
    queue: String,
    nats: NatsOptions,
    pool: WorkerPool,
    workers: Option<usize>,
    limits: WorkerLimits,
    host: String,
    loader: Option<ComponentLoader>,
}

impl std::fmt::Debug for ClusterWorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWorkerBuilder")
            .field("url", &self.url)
            .field("queue", &self.queue)
            .field("pool", &self.pool)
            .field("workers", &self.workers)
            .field("limits", &self.limits)
            .field("host", &self.host)
            .finish()
    }
}

impl ClusterWorkerBuilder {
    /// The queue to serve (default `default`).
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = name.into();
        self
    }

    /// Credentials and TLS for the connection.
    pub fn nats_options(mut self, options: NatsOptions) -> Self {
        self.nats = options;
        self
    }

    /// The local pool (default: threads).
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.pool = pool;
        self
    }

    /// How many tasks run at once (default: one per CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// What tasks may use here.
    pub fn limits(mut self, limits: WorkerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The name this worker gives in task reports (default: the machine's host name).
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.host = name.into();
        self
    }

    /// How components are compiled (default: [`Runtime::load_bytes`]).
    pub fn loader(mut self, loader: ComponentLoader) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Connects, creates the queue if it is missing, and starts taking tasks on a thread of
    /// its own.
    pub fn start(self) -> Result<ClusterWorker, BuildError> {
        ClusterWorker::start(self)
    }
}

/// A running cluster worker: the library side of `wasmpool worker --nats URL`.
pub struct ClusterWorker {
    stop: watch::Sender<bool>,
    thread: JoinHandle<Result<WorkerSummary, BuildError>>,
}

impl std::fmt::Debug for ClusterWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWorker")
            .field("stopping", &*self.stop.borrow())
            .finish()
    }
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

/// Asks a [`ClusterWorker`] to stop, from anywhere (a signal handler's thread, say).
#[derive(Debug, Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Takes nothing new, finishes the running tasks, hands back the queued ones.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl ClusterWorker {
    /// A builder for a worker of the server at `url`.
    pub fn builder(url: impl Into<String>) -> ClusterWorkerBuilder {
        ClusterWorkerBuilder {
            url: url.into(),
            queue: "default".to_string(),
            nats: NatsOptions::default(),
            pool: WorkerPool::default(),
            workers: None,
            limits: WorkerLimits::default(),
            host: host_name(),
            loader: None,
        }
    }

    fn start(builder: ClusterWorkerBuilder) -> Result<ClusterWorker, BuildError> {
        let names = Names::new(&builder.queue)?;
        let workers = crate::settings::worker_count(builder.workers)?;
        let (stop, stopped) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wasmpool-cluster-worker".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("wasmpool-nats")
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let serving = match Serving::connect(builder, names, workers).await {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(BuildError::Cluster(e.to_string())));
                            return Err(e);
                        }
                    };
                    Ok(serving.serve(stopped).await)
                })
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ClusterWorker { stop, thread }),
            Ok(Err(_)) | Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(BuildError::Cluster(
                    "the worker thread ended before connecting".into(),
                )),
            },
        }
    }

    /// A handle that stops this worker.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Takes nothing new, finishes the running tasks and hands back the queued ones.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits until the worker has stopped (after [`stop`](Self::stop), or a fatal error).
    pub fn join(self) -> Result<WorkerSummary, BuildError> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(BuildError::Cluster("the worker thread panicked".into())))
    }
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

/// One held task message.
struct Held {
    message: jetstream::Message,
    submitter: String,
    /// Calls not yet settled (reported, skipped, or lost).
    remaining: AtomicUsize,
    /// A call's local worker was lost: hand the message back instead of acking it.
    lost: AtomicBool,
    done: AtomicBool,
    /// The worker's slot this message takes, given back as soon as it is acked.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

/// A settled call of a held message: its result, or `None` (skipped, or lost).
struct Settled {
    held: Arc<Held>,
    result: Option<RemoteResult>,
}

/// The worker's state on its connection.
struct Serving {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
    queue: Queue,
    pool_kind: WorkerPool,
    workers: usize,
    limits: WorkerLimits,
    host: String,
    loader: ComponentLoader,
    runtimes: Vec<(RuntimeConfig, Runtime)>,
    components: HashMap<(String, bool), TaskComponent>,
    pools: Vec<(TaskSettings, LocalPool)>,
    /// Stopped tasks (`submitter.id`), with when they were seen.
    stopped: Arc<Mutex<HashMap<String, Instant>>>,
    /// Local futures of the calls running here, by `submitter.id`.
    running: Arc<Mutex<HashMap<String, TaskFuture>>>,
    summary: WorkerSummary,
}

impl Serving {
    async fn connect(
        builder: ClusterWorkerBuilder,
        names: Names,
        workers: usize,
    ) -> Result<Serving, BuildError> {
        let client = builder
            .nats
            .connect(
                &builder.url,
                &format!("wasmpool worker on {}", builder.host),
            )
            .await?;
        let js = super::nats::jetstream_context(&client);
        let queue = ensure_queue(&js, &names, &QueueConfig::default()).await?;
        let loader = builder.loader.unwrap_or_else(|| {
            Arc::new(|runtime: &Runtime, bytes: &[u8], origin: &str| {
                runtime.load_bytes(bytes, origin)
            })
        });
        Ok(Serving {
            js,
            client,
            names,
            queue,
            pool_kind: builder.pool,
            workers,
            limits: builder.limits,
            host: builder.host,
            loader,
            runtimes: Vec::new(),
            components: HashMap::new(),
            pools: Vec::new(),
            stopped: Arc::new(Mutex::new(HashMap::new())),
            running: Arc::new(Mutex::new(HashMap::new())),
            summary: WorkerSummary::default(),
        })
    }

    async fn serve(mut self, mut stop: watch::Receiver<bool>) -> WorkerSummary {
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
        let component = match self.component(&task).await {
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

    /// The component a message names: from memory, or fetched, checked and compiled.
    async fn component(&mut self, task: &TaskMessage<'_>) -> Result<TaskComponent, String> {
        let mut config = task.config.clone();
        config.fuel |= self.limits.max_fuel.is_some();
        let key = (task.component.clone(), config.fuel);
        if let Some(c) = self.components.get(&key) {
            return Ok(c.clone());
        }
        let hash = &task.component;
        let info = self
            .queue
            .components
            .info(hash)
            .await
            .map_err(|e| format!("component {hash} is not in the object store: {e}"))?;
        if info.size as u64 > MAX_COMPONENT {
            return Err(format!(
                "component {hash} is {} bytes, more than this worker takes ({MAX_COMPONENT})",
                info.size
            ));
        }
        // Another upload of the same component can purge the chunks being read (a `put` of
        // an existing name purges the old chunks): a read that stalls is tried again, and
        // after a few tries the task fails instead of holding its claim forever.
        let mut bytes = Vec::new();
        let mut failure = String::new();
        for _ in 0..FETCH_ATTEMPTS {
            match fetch(&self.queue.components, hash, info.size).await {
                Ok(fetched) if &hex(&Sha256::digest(&fetched)) == hash => {
                    bytes = fetched;
                    failure.clear();
                    break;
                }
                Ok(fetched) => {
                    failure = format!(
                        "the object store's component {hash} has the SHA-256 {}: refused",
                        hex(&Sha256::digest(&fetched))
                    );
                }
                Err(e) => failure = format!("cannot fetch component {hash}: {e}"),
            }
        }
        if !failure.is_empty() {
            return Err(failure);
        }
        let runtime = self.runtime(&config).map_err(|e| e.to_string())?;
        let loader = self.loader.clone();
        let origin = task.origin.clone();
        let component = tokio::task::spawn_blocking(move || loader(&runtime, &bytes, &origin))
            .await
            .map_err(|e| format!("compiling the component failed: {e}"))?
            .map_err(|e| e.to_string())?;
        self.components.insert(key, component.clone());
        Ok(component)
    }

    fn runtime(&mut self, config: &RuntimeConfig) -> Result<Runtime, LoadError> {
        if let Some((_, r)) = self.runtimes.iter().find(|(c, _)| c == config) {
            return Ok(r.clone());
        }
        let runtime = Runtime::with_config(config.clone())?;
        self.runtimes.push((config.clone(), runtime.clone()));
        Ok(runtime)
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

/// How many times a worker tries to fetch a component.
const FETCH_ATTEMPTS: usize = 3;
/// How long a component's read may make no progress before it is given up.
const FETCH_STALL: Duration = Duration::from_secs(5);

/// Reads component `hash` from the object store; a read that makes no progress for
/// `FETCH_STALL` fails.
async fn fetch(
    store: &async_nats::jetstream::object_store::ObjectStore,
    hash: &str,
    size: usize,
) -> Result<Vec<u8>, String> {
    let mut object = store.get(hash).await.map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(size);
    loop {
        match tokio::time::timeout(FETCH_STALL, object.read_buf(&mut bytes)).await {
            Ok(Ok(0)) => return Ok(bytes),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no data for {FETCH_STALL:?} after {} of {size} bytes (its chunks are gone?)",
                    bytes.len()
                ));
            }
        }
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

/// Keeps the set of stopped tasks current, and aborts the ones running here.
async fn watch_stops(
    stops: async_nats::jetstream::kv::Store,
    stopped: Arc<Mutex<HashMap<String, Instant>>>,
    running: Arc<Mutex<HashMap<String, TaskFuture>>>,
    watching: tokio::sync::oneshot::Sender<()>,
) {
    let mut watching = Some(watching);
    let note = |key: String| {
        {
            let mut stopped = lock(&stopped);
            if stopped.len() >= STOPS_REMEMBERED {
                stopped.retain(|_, seen| seen.elapsed() < Duration::from_secs(3600));
            }
            stopped.insert(key.clone(), Instant::now());
        }
        let future = lock(&running).get(&key).cloned();
        if let Some(future) = future {
            future.abort();
        }
    };
    loop {
        let mut watch = match stops.watch_all().await {
            Ok(w) => w,
            Err(e) => {
                log::warn!("cannot watch stopped tasks, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The watch sees only stops put from now on: those put before (while no worker
        // watched, or this watch was down) are read once, after it began, so none is missed.
        let keys = match stops.keys().await {
            Ok(keys) => {
                keys.filter_map(|k| async { k.ok() })
                    .collect::<Vec<_>>()
                    .await
            }
            Err(e) => {
                log::warn!("cannot list stopped tasks, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for key in keys {
            note(key);
        }
        if let Some(watching) = watching.take() {
            let _ = watching.send(());
        }
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else {
                break;
            };
            note(entry.key);
        }
    }
}

/// What the reporter did.
#[derive(Default)]
struct Reported {
    tasks: u64,
    handed_back: u64,
}

/// Publishes settled calls' results, grouped per submitter (as many as are ready at
/// once in one message), then acks (or hands back) each message whose calls are all
/// settled.
async fn report(
    js: jetstream::Context,
    names: Names,
    host: String,
    max_payload: usize,
    mut settled: mpsc::UnboundedReceiver<Settled>,
) -> Reported {
    let mut reported = Reported::default();
    let mut ready = Vec::new();
    while settled.recv_many(&mut ready, 4096).await > 0 {
        let mut by_submitter: HashMap<&str, Vec<RemoteResult>> = HashMap::new();
        let mut finished = Vec::new();
        for s in &ready {
            if let Some(result) = &s.result {
                by_submitter
                    .entry(&s.held.submitter)
                    .or_default()
                    .push(result.clone());
            }
            if s.held.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                finished.push(s.held.clone());
            }
        }
        let mut stored = true;
        for (submitter, results) in by_submitter {
            reported.tasks += results.len() as u64;
            for body in result_bodies(&host, results, max_payload) {
                if let Err(e) = publish_result(&js, names.result_subject(submitter), body).await {
                    log::error!("cannot store results, handing their tasks back: {e}");
                    stored = false;
                }
            }
        }
        for held in finished {
            held.done.store(true, Ordering::SeqCst);
            let kind = if stored && !held.lost.load(Ordering::SeqCst) {
                AckKind::Ack
            } else {
                reported.handed_back += 1;
                AckKind::Nak(None)
            };
            if let Err(e) = held.message.ack_with(kind).await {
                log::warn!("cannot ack a task message: {e}");
            }
            lock(&held.slot).take();
        }
        ready.clear();
    }
    reported
}

/// Publishes a result body and waits until the server stored it, retrying while the
/// server is away.
async fn publish_result(
    js: &jetstream::Context,
    subject: String,
    body: bytes::Bytes,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let error = match js.publish(subject.clone(), body.clone()).await {
            Ok(ack) => match ack.await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The bodies that carry `results`, each within `max_payload`; a single result too large
/// to send becomes [`TaskError::Unreturnable`].
fn result_bodies(host: &str, results: Vec<RemoteResult>, max_payload: usize) -> Vec<bytes::Bytes> {
    let message = ResultMessage {
        host: host.to_string(),
        results,
    };
    match wire::encode(&message) {
        Ok(body) if body.len() <= max_payload => return vec![body.into()],
        Ok(_) | Err(_) => {}
    }
    let mut results = message.results;
    if results.len() > 1 {
        let rest = results.split_off(results.len() / 2);
        let mut bodies = result_bodies(host, results, max_payload);
        bodies.extend(result_bodies(host, rest, max_payload));
        return bodies;
    }
    let Some(mut result) = results.pop() else {
        return Vec::new();
    };
    let size = wire::encode(&ResultMessage {
        host: host.to_string(),
        results: vec![result.clone()],
    })
    .map(|b| b.len());
    let message = match size {
        Ok(n) => format!(
            "the result is {n} bytes, more than the NATS server's limit of {max_payload} bytes"
        ),
        Err(e) => e.to_string(),
    };
    result.run = TaskRun::failed(TaskError::Unreturnable { message }, result.run.elapsed);
    wire::encode(&ResultMessage {
        host: host.to_string(),
        results: vec![result],
    })
    .map(|b| vec![b.into()])
    .unwrap_or_default()
}
