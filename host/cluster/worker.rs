//! The worker's side: [`ClusterWorker`] and its builder, the public face of
//! `wasmpool worker --nats URL`. The work is in `serving.rs` (taking and running task
//! messages), `components.rs`, `stops.rs` and `results.rs`.
//!
//! A held message is acked only after every result of it was stored by the server, so a
//! worker that dies between the two loses nothing: the message is delivered again and the
//! submitter drops the second result. A call whose local worker process was lost is not
//! reported: its message is handed back (nak), to run elsewhere.

use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::error::BuildError;

use super::components::ComponentLoader;
use super::limits::WorkerLimits;
use super::nats::{Names, NatsOptions, host_name};
use super::serving::{Serving, WorkerPool, WorkerSetup, WorkerSummary};

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
    setup: WorkerSetup,
    queue: String,
    workers: Option<usize>,
}

impl std::fmt::Debug for ClusterWorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterWorkerBuilder")
            .field("url", &self.setup.url)
            .field("queue", &self.queue)
            .field("pool", &self.setup.pool)
            .field("workers", &self.workers)
            .field("limits", &self.setup.limits)
            .field("host", &self.setup.host)
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
        self.setup.nats = options;
        self
    }

    /// The local pool (default: threads).
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.setup.pool = pool;
        self
    }

    /// How many tasks run at once (default: one per CPU).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// What tasks may use here.
    pub fn limits(mut self, limits: WorkerLimits) -> Self {
        self.setup.limits = limits;
        self
    }

    /// The name this worker gives in task reports (default: the machine's host name).
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.setup.host = name.into();
        self
    }

    /// How components are compiled (default: [`Runtime::load_bytes`](crate::Runtime::load_bytes)).
    pub fn loader(mut self, loader: ComponentLoader) -> Self {
        self.setup.loader = Some(loader);
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
            setup: WorkerSetup {
                url: url.into(),
                nats: NatsOptions::default(),
                pool: WorkerPool::default(),
                limits: WorkerLimits::default(),
                host: host_name(),
                loader: None,
            },
            queue: "default".to_string(),
            workers: None,
        }
    }

    fn start(builder: ClusterWorkerBuilder) -> Result<ClusterWorker, BuildError> {
        let names = Names::new(&builder.queue)?;
        let workers = crate::settings::worker_count(builder.workers)?;
        let setup = builder.setup;
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
                    let serving = match Serving::connect(setup, names, workers).await {
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
