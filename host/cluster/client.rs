//! The submitter's side: [`ClusterExecutor`] and its builder. `submit` encodes the call
//! (`submitted.rs`) and hands it to the connection thread (`connection.rs`), which
//! uploads the component once, publishes the task, and turns what comes back (started
//! notices, results, the server's max-deliveries advisories) into the futures' outcomes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::call::Call;
use crate::error::{BuildError, SubmitError};
use crate::executor::Executor;
use crate::future::TaskFuture;
use crate::settings::{TaskSettings, task_settings_setters};
use crate::sync::lock;

use super::connection::connect;
use super::nats::{Names, NatsOptions, QueueConfig, random_id};
use super::submitted::{Command, Shared};

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
    /// [`TaskError::QueueTimeout`](crate::TaskError::QueueTimeout), and withdraws it (default: tasks wait as long as it
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
                    match connect(
                        &builder.url,
                        &builder.nats,
                        &builder.queue_config,
                        &thread_shared,
                    )
                    .await
                    {
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

    /// Aborts every task, waiting or started (remote workers stop the started ones within
    /// a moment), and shuts down without waiting for them.
    fn shutdown_now(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let all: Vec<TaskFuture> = lock(&self.shared.tasks)
            .values()
            .map(|p| p.promise.future())
            .collect();
        for future in all {
            future.abort();
        }
        self.shutdown(false, true);
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}
