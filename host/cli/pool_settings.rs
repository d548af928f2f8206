//! Building the pool that runs the tasks, from `--pool`, `--workers` and the sandbox flags.
//! Both pools are used through the library's [`Executor`] trait, so `run` and `map` do not
//! care which one they have.

use std::time::Duration;

use anyhow::Context;
use wasmpool::cluster::{ClusterExecutor, NatsOptions};
use wasmpool::{
    Budget, Capabilities, Executor, InstancePolicy, OutputMode, TaskComponent, ThreadPoolExecutor,
};

use super::args::{NatsArgs, PoolKind};

/// How many tasks `map --nats` keeps in flight per `-j` (and `-j`'s default there): the
/// cluster's size is not known to the submitter.
pub const CLUSTER_DEFAULT_WORKERS: usize = 16;

/// Everything needed to build (and, after a pool broke, rebuild) the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Threads or processes.
    pub kind: PoolKind,
    /// How many workers; `None`: one per CPU.
    pub workers: Option<usize>,
    /// Each task's budget.
    pub budget: Budget,
    /// What each task may reach.
    pub capabilities: Capabilities,
    /// Where the tasks' stdout and stderr go.
    pub output: OutputMode,
    /// Fresh instances, or `--reuse`.
    pub policy: InstancePolicy,
    /// `--init`: the export called on every new instance.
    pub initializer: Option<String>,
    /// `--nats`: run on a cluster instead (`kind` is then ignored).
    pub cluster: Option<ClusterTarget>,
}

/// Where `--nats` sends the tasks.
#[derive(Debug, Clone)]
pub struct ClusterTarget {
    /// The server and queue.
    pub nats: NatsArgs,
    /// `--queue-timeout`.
    pub queue_timeout: Option<Duration>,
}

impl ClusterTarget {
    /// The target `args` name, if `--nats` was given.
    pub fn from_args(args: &NatsArgs, queue_timeout: Option<Duration>) -> Option<ClusterTarget> {
        args.nats.as_ref().map(|_| ClusterTarget {
            nats: args.clone(),
            queue_timeout,
        })
    }
}

/// The connection options the `--nats-*` flags ask for.
pub fn nats_options(args: &NatsArgs) -> NatsOptions {
    let mut options = NatsOptions::default();
    if let Some(path) = &args.nats_creds {
        options = options.credentials_file(path);
    }
    if let Some(path) = &args.nats_tls_ca {
        options = options.root_certificates(path).require_tls(true);
    }
    options
}

/// A started pool and how many workers it has (the library decides the default count).
pub struct Pool {
    /// The pool.
    pub executor: Box<dyn Executor>,
    /// How many workers it has.
    pub workers: usize,
}

/// The instance policy `--reuse[=N]` asks for (`None`: not given, a fresh instance per task).
pub fn instance_policy(reuse: Option<usize>) -> InstancePolicy {
    match reuse {
        Some(max_tasks) => InstancePolicy::Reuse { max_tasks },
        None => InstancePolicy::Fresh,
    }
}

impl PoolSettings {
    /// Fails (a usage error) when `--init` names no export of `component`, or one that
    /// takes parameters: checked before any task, so that the pool never breaks on it.
    pub fn check_initializer(&self, component: &TaskComponent) -> anyhow::Result<()> {
        let Some(name) = &self.initializer else {
            return Ok(());
        };
        let function = component
            .function(name)
            .with_context(|| format!("--init {name}: {}", component.origin()))?;
        if function.params().len() != 0 {
            anyhow::bail!(
                "--init {name}: the initializer must take no parameters; it is {}",
                function.signature()
            );
        }
        Ok(())
    }

    /// Fails (a usage error) when this build cannot make the pool asked for; checked before
    /// anything is loaded.
    pub fn check_available(&self) -> anyhow::Result<()> {
        match self.kind {
            PoolKind::Thread => Ok(()),
            #[cfg(unix)]
            PoolKind::Process => Ok(()),
            #[cfg(not(unix))]
            PoolKind::Process => {
                anyhow::bail!("--pool process: process pools need a Unix system; use --pool thread")
            }
        }
    }

    /// Starts a pool.
    ///
    /// The process pool runs this very program as its worker program (`main` starts with
    /// `serve_worker_if_requested`), and respawns a worker that dies: only the tasks that
    /// worker held fail (`broken-pool`, which `--retries` runs again), the map goes on.
    pub fn build(&self) -> anyhow::Result<Pool> {
        if let Some(target) = &self.cluster {
            return self.build_cluster(target);
        }
        self.check_available()?;
        match self.kind {
            PoolKind::Thread => {
                let mut builder = ThreadPoolExecutor::builder()
                    .budget(self.budget.clone())
                    .capabilities(self.capabilities.clone())
                    .output(self.output)
                    .instance_policy(self.policy);
                if let Some(init) = &self.initializer {
                    builder = builder.initializer(init);
                }
                if let Some(n) = self.workers {
                    builder = builder.workers(n);
                }
                let pool = builder.build()?;
                let workers = pool.workers();
                Ok(Pool {
                    executor: Box::new(pool),
                    workers,
                })
            }
            #[cfg(unix)]
            PoolKind::Process => {
                let mut builder = wasmpool::ProcessPoolExecutor::builder()
                    .budget(self.budget.clone())
                    .capabilities(self.capabilities.clone())
                    .output(self.output)
                    .instance_policy(self.policy)
                    .respawn(true)
                    .on_demand(true);
                if let Some(init) = &self.initializer {
                    builder = builder.initializer(init);
                }
                if let Some(n) = self.workers {
                    builder = builder.workers(n);
                }
                let pool = builder.build()?;
                let workers = pool.workers();
                Ok(Pool {
                    executor: Box::new(pool),
                    workers,
                })
            }
            #[cfg(not(unix))]
            PoolKind::Process => anyhow::bail!("--pool process: process pools need a Unix system"),
        }
    }

    /// Connects to the cluster `--nats` names.
    fn build_cluster(&self, target: &ClusterTarget) -> anyhow::Result<Pool> {
        let url = target.nats.nats.as_deref().unwrap_or_default();
        let mut builder = ClusterExecutor::builder(url)
            .queue(&target.nats.queue)
            .nats_options(nats_options(&target.nats))
            .budget(self.budget.clone())
            .capabilities(self.capabilities.clone())
            .output(self.output)
            .instance_policy(self.policy);
        if let Some(init) = &self.initializer {
            builder = builder.initializer(init);
        }
        if let Some(limit) = target.queue_timeout {
            builder = builder.queue_timeout(limit);
        }
        let cluster = builder.build().with_context(|| format!("--nats {url}"))?;
        Ok(Pool {
            executor: Box::new(cluster),
            workers: self.workers.unwrap_or(CLUSTER_DEFAULT_WORKERS),
        })
    }
}
