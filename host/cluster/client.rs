//! The submitter's side: [`ClusterExecutor`]. `submit` encodes the call and hands it to
//! the connection thread, which uploads the component once, publishes the task, and turns
//! what comes back (started notices, results, the server's max-deliveries advisories) into
//! the futures' outcomes.
//!
//! Invariant: a task is in `Shared::tasks` from `submit` until its future is done; the
//! first result for an id removes it, so a second one (a redelivered task that ran twice)
//! finds nothing and is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{BuildError, SubmitError, TaskError};
use crate::executor::Executor;
use crate::future::{Promise, TaskFuture, promise};
use crate::output::{HostStream, OutputMode, write_host};
use crate::settings::{TaskSettings, task_settings_setters};
use crate::sync::lock;

use super::nats::{Names, NatsOptions, Queue, QueueConfig, ensure_queue, random_id, stop_key};
use super::wire::{self, RemoteCall, ResultMessage, StartedMessage, TaskMessage};

/// How much of a task's stdout/stderr a worker sends back when the executor forwards
/// output (the rest is dropped, as [`OutputMode::Capture`] drops it).
const FORWARDED_OUTPUT_LIMIT: usize = 1 << 20;
/// Publishes awaiting the server's ack at once (more stalls the client).
const PUBLISH_WINDOW: usize = 512;
/// How long a publish is retried while the server is away (a restart) before its tasks fail.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);

/// Settings of a [`ClusterExecutor`].
///
/// ```no_run
/// use std::time::Duration;
/// use wasmpool::cluster::ClusterExecutor;
/// let cluster = ClusterExecutor::builder("nats://127.0.0.1:4222")
///     .queue("images")
///     .budget(wasmpool::Budget::default().timeout(Duration::from_secs(30)))
///     .queue_timeout(Duration::from_secs(60))
///     .build()?;
/// # Ok::<(), wasmpool::BuildError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    url: String,
    queue: String,
    settings: TaskSettings,
    nats: NatsOptions,
    queue_config: QueueConfig,
    queue_timeout: Option<Duration>,
}

impl ClusterBuilder {
    task_settings_setters!();

    /// The queue to submit to (default `default`): workers serve one queue each.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = name.into();
        self
    }

    /// Credentials and TLS for the connection.
    pub fn nats_options(mut self, options: NatsOptions) -> Self {
        self.nats = options;
        self
    }

    /// How long a worker may hold a task without a sign of life before it is handed to
    /// another (default 10 s). Running tasks send progress acks every third of it, so it
    /// need not exceed the longest task. Takes effect when this call creates the queue.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.queue_config.ack_wait = wait;
        self
    }

    /// How many times a task is handed out before it fails as poison (default 3). Takes
    /// effect when this call creates the queue.
    pub fn max_deliver(mut self, times: i64) -> Self {
        self.queue_config.max_deliver = times;
        self
    }

    /// Fails a task that no worker has begun within `limit` with
    /// [`TaskError::QueueTimeout`], and withdraws it (default: tasks wait as long as it
    /// takes, in the stream, for a worker to come).
    pub fn queue_timeout(mut self, limit: Duration) -> Self {
        self.queue_timeout = Some(limit);
        self
    }

    /// Connects, creates the queue's streams and buckets if they are missing, and starts
    /// the connection thread.
    pub fn build(self) -> Result<ClusterExecutor, BuildError> {
        ClusterExecutor::start(self)
    }
}

/// An [`Executor`] whose tasks run on `wasmpool worker` processes anywhere, carried by a
/// NATS JetStream server: the same futures, budgets and error kinds as the local pools.
///
/// Each call's component travels once, by content, through the server's object store;
/// the workers compile it themselves. What the delivery guarantees are (at-least-once
/// delivery, one outcome per task, poison tasks, a server restart) is in the
/// [module docs](crate::cluster).
///
/// ```no_run
/// use wasmpool::{Executor, TaskComponent};
/// use wasmpool::cluster::ClusterExecutor;
/// let component = TaskComponent::from_file("fixture_tasks.wasm")?;
/// let cluster = ClusterExecutor::connect("nats://127.0.0.1:4222")?;
/// let future = cluster.submit(component.call_wave("add(2, 3)")?)?;
/// assert_eq!(future.result()?.as_i64(), Some(5));
/// let report = future.report().expect("a finished task has a report");
/// println!("ran on {:?}, pid {}", report.host, report.pid);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ClusterExecutor {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl std::fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterExecutor")
            .field("submitter", &self.shared.submitter)
            .field("queue", &self.shared.names.queue)
            .field("in_flight", &lock(&self.shared.tasks).len())
            .finish()
    }
}

/// A task submitted and not yet done.
struct Pending {
    promise: Promise,
    /// A worker said it began the task.
    started: bool,
    submitted: Instant,
}

/// A component's `.wasm` and its name in the object store.
struct Upload {
    hash: String,
    bytes: Arc<[u8]>,
}

/// What the caller's threads ask of the connection thread.
enum Command {
    Publish {
        body: bytes::Bytes,
        msg_id: String,
        ids: Vec<u64>,
        component: Arc<Upload>,
    },
    /// The future of task `id` was cancelled (or aborted): withdraw it.
    Stop(u64),
    /// Take nothing new; finish when every task is done.
    Shutdown,
}

/// Everything the executor handle and the connection thread share.
struct Shared {
    submitter: String,
    names: Names,
    settings: TaskSettings,
    queue_timeout: Option<Duration>,
    commands: mpsc::UnboundedSender<Command>,
    tasks: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// The server's largest message, in bytes.
    max_payload: AtomicUsize,
    /// The delivery limit of the queue, as the server has it.
    max_deliver: AtomicU64,
    /// Hashes of the sources seen, by the address of their bytes (kept alive here).
    uploads: Mutex<HashMap<usize, Arc<Upload>>>,
}

impl ClusterExecutor {
    /// Connects to the server at `url` (e.g. `nats://127.0.0.1:4222`) with the default
    /// settings: queue `default`, no budget, nothing but the sandbox.
    pub fn connect(url: &str) -> Result<ClusterExecutor, BuildError> {
        Self::builder(url).build()
    }

    /// A builder for the server at `url`.
    pub fn builder(url: impl Into<String>) -> ClusterBuilder {
        ClusterBuilder {
            url: url.into(),
            queue: "default".to_string(),
            settings: TaskSettings::default(),
            nats: NatsOptions::default(),
            queue_config: QueueConfig::default(),
            queue_timeout: None,
        }
    }

    fn start(builder: ClusterBuilder) -> Result<ClusterExecutor, BuildError> {
        let names = Names::new(&builder.queue)?;
        if builder.queue_config.max_deliver < 1 {
            return Err(BuildError::Invalid("max_deliver must be at least 1".into()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            submitter: random_id(),
            names,
            settings: builder.settings.clone(),
            queue_timeout: builder.queue_timeout,
            commands: tx,
            tasks: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            max_payload: AtomicUsize::new(1 << 20),
            max_deliver: AtomicU64::new(0),
            uploads: Mutex::new(HashMap::new()),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wasmpool-cluster".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BuildError::Spawn(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match connect(&builder, &thread_shared).await {
                        Ok(connection) => {
                            let _ = ready_tx.send(Ok(()));
                            connection.serve(rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let thread_id = thread.thread().id();
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ClusterExecutor {
                shared,
                thread: Mutex::new(Some(thread)),
                thread_id,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(BuildError::Cluster(
                "the connection thread ended before connecting".into(),
            )),
        }
    }

    /// This submitter's id: its results come on its own subject.
    pub fn submitter_id(&self) -> &str {
        &self.shared.submitter
    }

    /// The tasks submitted and not yet done.
    pub fn in_flight(&self) -> usize {
        lock(&self.shared.tasks).len()
    }
}

impl Executor for ClusterExecutor {
    fn submit(&self, call: Call) -> Result<TaskFuture, SubmitError> {
        let mut futures = self.shared.submit_group(&[call])?;
        futures
            .pop()
            .ok_or_else(|| SubmitError::Incompatible("nothing was submitted".into()))
    }

    /// The calls of one component travel as one message (one publish, one ack, one worker),
    /// split only where a message would exceed the server's payload limit.
    fn submit_batch(&self, calls: Vec<Call>) -> Result<Vec<TaskFuture>, SubmitError> {
        let mut futures = Vec::with_capacity(calls.len());
        let mut rest = &calls[..];
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take_while(|c| c.component().same_component(first.component()))
                .count();
            match self.shared.submit_group(&rest[..same]) {
                Ok(f) => futures.extend(f),
                Err(e) => {
                    for f in &futures {
                        f.cancel();
                    }
                    return Err(e);
                }
            }
            rest = &rest[same..];
        }
        Ok(futures)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if cancel_futures {
            let waiting: Vec<TaskFuture> = lock(&self.shared.tasks)
                .values()
                .filter(|p| !p.started)
                .map(|p| p.promise.future())
                .collect();
            for future in waiting {
                future.cancel();
            }
        }
        let _ = self.shared.commands.send(Command::Shutdown);
        if wait && std::thread::current().id() != self.thread_id {
            let thread = lock(&self.thread).take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl Shared {
    /// Submits calls of one component as one message (or several, if one would be too
    /// large for the server).
    fn submit_group(self: &Arc<Self>, calls: &[Call]) -> Result<Vec<TaskFuture>, SubmitError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SubmitError::Shutdown);
        }
        let Some(first) = calls.first() else {
            return Ok(Vec::new());
        };
        let upload = self.upload_of(first.component())?;
        let ids: Vec<u64> = calls
            .iter()
            .map(|_| self.next_id.fetch_add(1, Ordering::Relaxed))
            .collect();
        let body = self.encode(first.component(), &upload, calls, &ids)?;
        let max = self.max_payload.load(Ordering::Relaxed);
        if body.len() > max {
            if calls.len() > 1 {
                let half = calls.len() / 2;
                let mut futures = self.submit_group(&calls[..half])?;
                match self.submit_group(&calls[half..]) {
                    Ok(more) => futures.extend(more),
                    Err(e) => {
                        for f in &futures {
                            f.cancel();
                        }
                        return Err(e);
                    }
                }
                return Ok(futures);
            }
            return Err(SubmitError::Incompatible(format!(
                "the task's message is {} bytes, more than the NATS server's limit of {max} \
                 bytes (max_payload): pass large data through a directory instead",
                body.len()
            )));
        }
        let mut futures = Vec::with_capacity(ids.len());
        {
            let mut tasks = lock(&self.tasks);
            let now = Instant::now();
            for &id in &ids {
                let (promise, future) = promise();
                let commands = self.commands.clone();
                future.add_done_callback(move |f| {
                    if f.is_cancelled() {
                        let _ = commands.send(Command::Stop(id));
                    }
                });
                tasks.insert(
                    id,
                    Pending {
                        promise,
                        started: false,
                        submitted: now,
                    },
                );
                futures.push(future);
            }
        }
        let msg_id = format!("{}-{}", self.submitter, ids[0]);
        let command = Command::Publish {
            body: body.into(),
            msg_id,
            ids,
            component: upload,
        };
        if self.commands.send(command).is_err() {
            return Err(SubmitError::BrokenPool(
                "the connection to the NATS server has ended".into(),
            ));
        }
        Ok(futures)
    }

    fn encode(
        &self,
        component: &TaskComponent,
        upload: &Upload,
        calls: &[Call],
        ids: &[u64],
    ) -> Result<Vec<u8>, SubmitError> {
        let mut settings = self.settings.clone();
        let budget = std::mem::take(&mut settings.budget);
        settings.output = match settings.output {
            OutputMode::Prefixed | OutputMode::Plain => OutputMode::Capture {
                limit: FORWARDED_OUTPUT_LIMIT,
            },
            other => other,
        };
        let message = TaskMessage {
            submitter: self.submitter.clone(),
            component: upload.hash.clone(),
            origin: component.origin().to_string(),
            config: component.runtime().config().clone(),
            settings,
            calls: calls
                .iter()
                .zip(ids)
                .map(|(call, &id)| RemoteCall {
                    id,
                    function: call.function_index(),
                    budget: call.budget().or(&budget),
                    argv: call.argv().map(std::borrow::Cow::Borrowed),
                    args: std::borrow::Cow::Borrowed(call.args()),
                })
                .collect(),
        };
        wire::encode(&message)
            .map_err(|e| SubmitError::Incompatible(format!("cannot send the call: {e}")))
    }

    /// The upload of `component`'s source, hashed on first use.
    fn upload_of(&self, component: &TaskComponent) -> Result<Arc<Upload>, SubmitError> {
        let Some(bytes) = component.source() else {
            return Err(SubmitError::Incompatible(format!(
                "{} was loaded from precompiled code, and a cluster ships the .wasm (workers \
                 compile it themselves): load it from its .wasm, or record it with \
                 TaskComponent::set_source",
                component.origin()
            )));
        };
        let key = Arc::as_ptr(bytes) as *const u8 as usize;
        let mut uploads = lock(&self.uploads);
        if let Some(upload) = uploads.get(&key) {
            return Ok(upload.clone());
        }
        let hash = hex(&Sha256::digest(bytes));
        let upload = Arc::new(Upload {
            hash,
            bytes: bytes.clone(),
        });
        uploads.insert(key, upload.clone());
        Ok(upload)
    }

    /// The promise of task `id` if it is still waiting, taking it out; `None` if it is not
    /// (done already: this is a duplicate, or the task was cancelled).
    fn take(&self, id: u64) -> Option<Promise> {
        lock(&self.tasks).remove(&id).map(|p| p.promise)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The connection thread's state.
struct Connection {
    shared: Arc<Shared>,
    client: async_nats::Client,
    js: jetstream::Context,
    queue: Queue,
    results: consumer::PullConsumer,
    /// Components known to be in the object store.
    uploaded: HashSet<String>,
    /// The stream sequence of each published message whose tasks may still be waiting.
    sequences: HashMap<u64, Vec<u64>>,
}

async fn connect(builder: &ClusterBuilder, shared: &Arc<Shared>) -> Result<Connection, BuildError> {
    let name = format!("wasmpool submitter {}", shared.submitter);
    let client = builder.nats.connect(&builder.url, &name).await?;
    shared
        .max_payload
        .store(client.server_info().max_payload, Ordering::Relaxed);
    let js = super::nats::jetstream_context(&client);
    let queue = ensure_queue(&js, &shared.names, &builder.queue_config).await?;
    shared
        .max_deliver
        .store(queue.max_deliver.max(0) as u64, Ordering::Relaxed);
    let consumer_name = format!("submitter-{}", shared.submitter);
    let results = queue
        .results
        .get_or_create_consumer(
            &consumer_name,
            consumer::pull::Config {
                durable_name: Some(consumer_name.clone()),
                filter_subject: shared.names.result_subject(&shared.submitter),
                ack_policy: consumer::AckPolicy::Explicit,
                // A submitter that vanished without shutting down leaves no consumer behind.
                inactive_threshold: Duration::from_secs(600),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BuildError::Cluster(format!("cannot create the result consumer: {e}")))?;
    Ok(Connection {
        shared: shared.clone(),
        client,
        js,
        queue,
        results,
        uploaded: HashSet::new(),
        sequences: HashMap::new(),
    })
}

/// How a publish ended: the tasks it carried, and the stream sequence or why it failed.
type Published = (Vec<u64>, Result<u64, String>);

impl Connection {
    /// Serves until shut down and every task is done.
    async fn serve(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let names = self.shared.names.clone();
        let mut results = match self.results.messages().await {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot read results: {e}")),
        };
        let mut started = match self
            .client
            .subscribe(names.started_subject(&self.shared.submitter))
            .await
        {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot subscribe to started notices: {e}")),
        };
        let mut advisories = match self.client.subscribe(names.max_deliveries_advisory()).await {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot subscribe to advisories: {e}")),
        };
        let window = Arc::new(Semaphore::new(PUBLISH_WINDOW));
        let mut publishes: JoinSet<Published> = JoinSet::new();
        let mut chores = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut open = true;
        loop {
            if !open && publishes.is_empty() && lock(&self.shared.tasks).is_empty() {
                break;
            }
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(Command::Publish { body, msg_id, ids, component }) => {
                        if let Err(e) = self.ensure_uploaded(&component).await {
                            self.fail(&ids, TaskError::ComponentUnavailable { message: e });
                            continue;
                        }
                        let Ok(permit) = window.clone().acquire_owned().await else {
                            continue;
                        };
                        let js = self.js.clone();
                        let subject = names.task_subject();
                        publishes.spawn(async move {
                            let outcome = publish(&js, subject, msg_id, body).await;
                            drop(permit);
                            (ids, outcome)
                        });
                    }
                    Some(Command::Stop(id)) => {
                        lock(&self.shared.tasks).remove(&id);
                        let stops = self.queue.stops.clone();
                        let key = stop_key(&self.shared.submitter, id);
                        chores.spawn(async move {
                            if let Err(e) = stops.put(key, bytes::Bytes::from_static(b"stop")).await {
                                log::warn!("cannot withdraw a cancelled task: {e}");
                            }
                        });
                    }
                    Some(Command::Shutdown) | None => open = false,
                },
                Some(message) = results.next() => match message {
                    Ok(message) => {
                        self.on_results(&message.payload);
                        if let Err(e) = message.ack().await {
                            log::warn!("cannot ack a result: {e}");
                        }
                    }
                    Err(e) => log::debug!("result consumer: {e}"),
                },
                Some(message) = started.next() => self.on_started(&message.payload),
                Some(message) = advisories.next() => self.on_max_deliveries(&message.payload, &mut chores),
                Some(done) = publishes.join_next() => match done {
                    Ok((ids, Ok(sequence))) => {
                        self.sequences.insert(sequence, ids);
                    }
                    Ok((ids, Err(e))) => self.fail(&ids, TaskError::BrokenPool {
                        reason: format!("the NATS server did not take the task: {e}"),
                    }),
                    Err(e) => log::error!("a publish panicked: {e}"),
                },
                Some(_) = chores.join_next() => {}
                _ = tick.tick() => self.on_tick(&mut chores),
            }
        }
        while chores.join_next().await.is_some() {}
        let consumer_name = format!("submitter-{}", self.shared.submitter);
        if let Err(e) = self.queue.results.delete_consumer(&consumer_name).await {
            log::debug!("cannot delete the result consumer: {e}");
        }
        let _ = self.client.flush().await;
    }

    async fn ensure_uploaded(&mut self, upload: &Upload) -> Result<(), String> {
        if self.uploaded.contains(&upload.hash) {
            return Ok(());
        }
        if self.queue.components.info(&upload.hash).await.is_err() {
            let mut bytes: &[u8] = &upload.bytes;
            self.queue
                .components
                .put(upload.hash.as_str(), &mut bytes)
                .await
                .map_err(|e| format!("cannot put the component in the object store: {e}"))?;
        }
        self.uploaded.insert(upload.hash.clone());
        Ok(())
    }

    fn fail(&self, ids: &[u64], error: TaskError) {
        for &id in ids {
            if let Some(promise) = self.shared.take(id) {
                promise.set_error(error.clone());
            }
        }
    }

    /// The connection cannot serve: every waiting task fails (no future is left hanging).
    fn fail_all(&self, reason: String) {
        log::error!("{reason}");
        let waiting: Vec<Pending> = lock(&self.shared.tasks).drain().map(|(_, p)| p).collect();
        for pending in waiting {
            pending.promise.set_error(TaskError::BrokenPool {
                reason: reason.clone(),
            });
        }
    }

    fn on_results(&self, body: &[u8]) {
        let message: ResultMessage = match wire::decode(body) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("dropped a result message that does not decode: {e}");
                return;
            }
        };
        for result in message.results {
            // A second result for the same task (it was delivered twice) finds nothing here.
            let Some(promise) = self.shared.take(result.id) else {
                continue;
            };
            let mut report = result.run.report(&result.worker, result.pid);
            report.host = Some(message.host.clone());
            if matches!(
                self.shared.settings.output,
                OutputMode::Prefixed | OutputMode::Plain
            ) {
                let prefix = match self.shared.settings.output {
                    OutputMode::Prefixed => format!("{}/{}: ", message.host, result.worker),
                    _ => String::new(),
                };
                forward(&prefix, HostStream::Stdout, report.stdout.take());
                forward(&prefix, HostStream::Stderr, report.stderr.take());
            }
            promise.complete_with_report(result.run.outcome, report);
        }
    }

    fn on_started(&self, body: &[u8]) {
        let Ok(message) = wire::decode::<StartedMessage>(body) else {
            return;
        };
        let mut tasks = lock(&self.shared.tasks);
        for id in message.ids {
            if let Some(pending) = tasks.get_mut(&id)
                && !pending.started
            {
                pending.started = true;
                pending.promise.set_running_or_notify_cancel();
            }
        }
    }

    /// A message reached the delivery limit: each worker that took it was lost.
    fn on_max_deliveries(&mut self, body: &[u8], chores: &mut JoinSet<()>) {
        let Ok(advisory) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let Some(sequence) = advisory.get("stream_seq").and_then(|s| s.as_u64()) else {
            return;
        };
        let Some(ids) = self.sequences.remove(&sequence) else {
            return;
        };
        let deliveries = advisory
            .get("deliveries")
            .and_then(|d| d.as_u64())
            .unwrap_or_else(|| self.shared.max_deliver.load(Ordering::Relaxed));
        self.fail(
            &ids,
            TaskError::BrokenPool {
                reason: format!(
                    "worker lost: the task was handed out {deliveries} times (the queue's \
                     limit) and each worker that took it was lost before it finished"
                ),
            },
        );
        let tasks = self.queue.tasks.clone();
        chores.spawn(async move {
            let _ = tasks.delete_message(sequence).await;
        });
    }

    /// Queue time-outs, and forgetting the sequences of messages whose tasks are all done.
    fn on_tick(&mut self, chores: &mut JoinSet<()>) {
        if let Some(limit) = self.shared.queue_timeout {
            let expired: Vec<u64> = lock(&self.shared.tasks)
                .iter()
                .filter(|(_, p)| !p.started && p.submitted.elapsed() >= limit)
                .map(|(&id, _)| id)
                .collect();
            for &id in &expired {
                let stops = self.queue.stops.clone();
                let key = stop_key(&self.shared.submitter, id);
                chores.spawn(async move {
                    let _ = stops.put(key, bytes::Bytes::from_static(b"stop")).await;
                });
            }
            self.fail(&expired, TaskError::QueueTimeout { limit });
        }
        let tasks = lock(&self.shared.tasks);
        self.sequences
            .retain(|_, ids| ids.iter().any(|id| tasks.contains_key(id)));
    }
}

/// Writes captured output to this process's stream, each line after `prefix`.
fn forward(prefix: &str, stream: HostStream, text: Option<String>) {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return;
    };
    let mut out = String::with_capacity(text.len() + prefix.len());
    for line in text.split_inclusive('\n') {
        out.push_str(prefix);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    write_host(stream, out.as_bytes());
}

/// Publishes one task message, retrying while the server is away; the server drops a
/// repeat of the same `msg_id` (its duplicate window), so a retry never queues it twice.
async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: String,
    body: bytes::Bytes,
) -> Result<u64, String> {
    let deadline = Instant::now() + PUBLISH_PATIENCE;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let error = match js
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
        {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        log::debug!("publish failed, retrying: {error}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
