//! Building the pool that runs the tasks, from `--pool`, `--workers` and the sandbox flags.
//! Both pools are used through the library's [`Executor`] trait, so `run` and `map` do not
//! care which one they have.

use wasmpool::{Budget, Capabilities, Executor, OutputMode, ThreadPoolExecutor};

use super::args::PoolKind;

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
}

/// A started pool and how many workers it has (the library decides the default count).
pub struct Pool {
    /// The pool.
    pub executor: Box<dyn Executor>,
    /// How many workers it has.
    pub workers: usize,
}

impl PoolSettings {
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
        self.check_available()?;
        match self.kind {
            PoolKind::Thread => {
                let mut builder = ThreadPoolExecutor::builder()
                    .budget(self.budget.clone())
                    .capabilities(self.capabilities.clone())
                    .output(self.output);
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
                    .respawn(true);
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
}
