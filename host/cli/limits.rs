//! From the budget and capability flags to the library's [`Budget`], [`Capabilities`] and
//! [`RuntimeConfig`]: the one place where `--timeout`, `--fuel`, `--max-memory`, `--dir`,
//! `--dir-rw`, `--env` and `--network` take effect, for `run` and `map` alike.

use anyhow::{Context, bail};
use wasmpool::{Budget, Capabilities, RuntimeConfig};

use super::args::SandboxArgs;

/// What the flags ask for, ready for a runtime and a pool.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Engine settings: fuel metering is on exactly when `--fuel` was given.
    pub runtime: RuntimeConfig,
    /// Each task's budget.
    pub budget: Budget,
    /// What each task may reach.
    pub capabilities: Capabilities,
}

impl Sandbox {
    /// Sizes the runtime's instance pool for `workers` workers (`None`: one per CPU). A
    /// worker holds one instance at a time, so twice as many slots and a few more are ample;
    /// the library's default of 1000 slots reserves terabytes of address space, which a
    /// `ulimit -v`, a small container or valgrind refuses.
    pub fn size_pool_for(&mut self, workers: Option<usize>) {
        let workers = workers.unwrap_or_else(wasmpool::default_workers);
        if let Some(pooling) = &mut self.runtime.pooling {
            let slots = workers.saturating_mul(2).saturating_add(2);
            pooling.instances = u32::try_from(slots)
                .map_or(pooling.instances, |slots| slots.min(pooling.instances));
        }
    }
}

impl SandboxArgs {
    /// Checks the flags against the host (directories exist) and resolves `--env KEY`.
    pub fn resolve(&self) -> anyhow::Result<Sandbox> {
        let mut runtime = RuntimeConfig::default();
        runtime.fuel = self.fuel.is_some();

        let mut budget = Budget::default();
        if let Some(timeout) = self.timeout {
            if timeout.is_zero() {
                bail!("--timeout must be longer than 0");
            }
            budget = budget.timeout(timeout);
        }
        if let Some(fuel) = self.fuel {
            budget = budget.fuel(fuel);
        }
        if let Some(bytes) = self.max_memory {
            budget = budget.max_memory(bytes);
        }

        let mut capabilities = Capabilities::default();
        for (spec, writable) in self
            .dirs
            .iter()
            .map(|d| (d, false))
            .chain(self.dirs_rw.iter().map(|d| (d, true)))
        {
            let flag = if writable { "--dir-rw" } else { "--dir" };
            let meta = std::fs::metadata(&spec.host)
                .with_context(|| format!("{flag} {}", spec.host.display()))?;
            if !meta.is_dir() {
                bail!("{flag} {}: not a directory", spec.host.display());
            }
            capabilities = if writable {
                capabilities.dir_writable(&spec.host, &spec.guest)
            } else {
                capabilities.dir(&spec.host, &spec.guest)
            };
        }
        for spec in &self.env {
            let value = match &spec.value {
                Some(value) => value.clone(),
                None => match std::env::var(&spec.key) {
                    Ok(value) => value,
                    Err(std::env::VarError::NotPresent) => continue,
                    Err(std::env::VarError::NotUnicode(_)) => {
                        bail!("--env {}: the host's value is not valid UTF-8", spec.key)
                    }
                },
            };
            capabilities = capabilities.env(&spec.key, value);
        }
        capabilities = capabilities.network(self.network);
        Ok(Sandbox {
            runtime,
            budget,
            capabilities,
        })
    }
}
