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

impl PoolSettings {
    /// How many workers the pool will have.
    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
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
    pub fn build(&self) -> anyhow::Result<Box<dyn Executor>> {
        self.check_available()?;
        match self.kind {
            PoolKind::Thread => Ok(Box::new(
                ThreadPoolExecutor::builder()
                    .workers(self.worker_count())
                    .budget(self.budget.clone())
                    .capabilities(self.capabilities.clone())
                    .output(self.output)
                    .build()?,
            )),
            #[cfg(unix)]
            PoolKind::Process => Ok(Box::new(
                wasmpool::ProcessPoolExecutor::builder()
                    .workers(self.worker_count())
                    .budget(self.budget.clone())
                    .capabilities(self.capabilities.clone())
                    .output(self.output)
                    .respawn(true)
                    .build()?,
            )),
            #[cfg(not(unix))]
            PoolKind::Process => anyhow::bail!("--pool process: process pools need a Unix system"),
        }
    }
}
