//! What a cluster worker's operator allows tasks to use ([`WorkerLimits`]), and the check
//! of each task's request against it: a submitter asks, the worker decides.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sandbox::{Budget, Capabilities, DirGrant};
use crate::store::DEFAULT_MAX_MEMORY;

/// What tasks may use on one cluster worker. A task that asks for more fails with
/// [`TaskError::Refused`](crate::TaskError::Refused); a budget field the task leaves unset
/// gets the worker's maximum.
///
/// The default allows nothing beyond the sandbox: no directories, no environment
/// variables, no network, no deadline or fuel limit, and
/// [`DEFAULT_MAX_MEMORY`](crate::DEFAULT_MAX_MEMORY) of linear memory.
///
/// ```
/// use std::time::Duration;
/// use wasmpool::cluster::WorkerLimits;
/// let limits = WorkerLimits::default()
///     .max_timeout(Duration::from_secs(60))
///     .allow_dir("/srv/data", false)
///     .allow_env("LANG");
/// # let _ = limits;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerLimits {
    /// The longest deadline a task may ask for; tasks without one get it.
    pub max_timeout: Option<Duration>,
    /// The most fuel a task may ask for; tasks without a fuel budget get it.
    pub max_fuel: Option<u64>,
    /// The largest linear-memory cap a task may ask for; tasks without one get it.
    pub max_memory: u64,
    /// Host directories tasks may be granted (a grant of a directory inside one counts),
    /// and whether they may write there.
    pub dirs: Vec<(PathBuf, bool)>,
    /// Environment variable names tasks may set (`*`: any).
    pub env: Vec<String>,
    /// Whether tasks may use the network.
    pub network: bool,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        WorkerLimits {
            max_timeout: None,
            max_fuel: None,
            max_memory: DEFAULT_MAX_MEMORY,
            dirs: Vec::new(),
            env: Vec::new(),
            network: false,
        }
    }
}

impl WorkerLimits {
    /// Sets the longest deadline.
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.max_timeout = Some(timeout);
        self
    }

    /// Sets the most fuel.
    pub fn max_fuel(mut self, fuel: u64) -> Self {
        self.max_fuel = Some(fuel);
        self
    }

    /// Sets the largest memory cap, in bytes.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Lets tasks be granted `dir` (or a directory inside it), read-only unless `writable`.
    pub fn allow_dir(mut self, dir: impl Into<PathBuf>, writable: bool) -> Self {
        self.dirs.push((dir.into(), writable));
        self
    }

    /// Lets tasks set the environment variable `name` (`*`: any).
    pub fn allow_env(mut self, name: impl Into<String>) -> Self {
        self.env.push(name.into());
        self
    }

    /// Lets tasks use the network.
    pub fn allow_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// The budget a task runs with: each field as asked if within the limit, the limit if
    /// unset. Errors say what was asked and what is allowed.
    pub(crate) fn admit_budget(&self, asked: &Budget) -> Result<Budget, String> {
        let timeout = match (asked.timeout, self.max_timeout) {
            (Some(t), Some(max)) if t > max => {
                return Err(format!(
                    "a deadline of {t:?} is more than the worker's maximum of {max:?}"
                ));
            }
            (t, max) => t.or(max),
        };
        let fuel = match (asked.fuel, self.max_fuel) {
            (Some(f), Some(max)) if f > max => {
                return Err(format!(
                    "{f} units of fuel are more than the worker's maximum of {max}"
                ));
            }
            (f, max) => f.or(max),
        };
        let max_memory = match asked.max_memory {
            Some(m) if m > self.max_memory => {
                return Err(format!(
                    "a memory cap of {m} bytes is more than the worker's maximum of {} bytes",
                    self.max_memory
                ));
            }
            Some(m) => m,
            None => self.max_memory,
        };
        Ok(Budget {
            timeout,
            fuel,
            max_memory: Some(max_memory),
        })
    }

    /// Checks what a task asks to reach. Directories are compared after resolving symbolic
    /// links and `..`, so a grant cannot climb out of an allowed directory.
    pub(crate) fn admit_capabilities(&self, asked: &Capabilities) -> Result<(), String> {
        if asked.network && !self.network {
            return Err(
                "the task asks for the network, which this worker does not allow (--allow-network)"
                    .into(),
            );
        }
        for (name, _) in &asked.env {
            if !self
                .env
                .iter()
                .any(|allowed| allowed == "*" || allowed == name)
            {
                return Err(format!(
                    "the task sets the environment variable {name}, which this worker does not allow (--allow-env)"
                ));
            }
        }
        for grant in &asked.dirs {
            self.admit_dir(grant)?;
        }
        Ok(())
    }

    fn admit_dir(&self, grant: &DirGrant) -> Result<(), String> {
        let shown = grant.host.display();
        let asked = resolve(&grant.host).map_err(|e| {
            format!("the task asks for the directory {shown}, which cannot be opened here: {e}")
        })?;
        let mut read_only_match = false;
        for (dir, writable) in &self.dirs {
            let Ok(allowed) = resolve(dir) else {
                continue;
            };
            if asked.starts_with(&allowed) {
                if *writable || !grant.writable {
                    return Ok(());
                }
                read_only_match = true;
            }
        }
        Err(if read_only_match {
            format!(
                "the task asks to write in the directory {shown}, which this worker grants read-only"
            )
        } else {
            format!(
                "the task asks for the directory {shown}, which is not among the directories this worker grants (--allow-dir)"
            )
        })
    }
}

fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    std::fs::canonicalize(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_within_the_limits_is_kept_and_unset_fields_get_the_limits() {
        let limits = WorkerLimits::default()
            .max_timeout(Duration::from_secs(10))
            .max_memory(1 << 20);
        let budget = limits
            .admit_budget(&Budget::default().timeout(Duration::from_secs(2)))
            .expect("admitted");
        assert_eq!(budget.timeout, Some(Duration::from_secs(2)));
        assert_eq!(budget.max_memory, Some(1 << 20));
        let budget = limits.admit_budget(&Budget::default()).expect("admitted");
        assert_eq!(budget.timeout, Some(Duration::from_secs(10)));
        let refused = limits
            .admit_budget(&Budget::default().timeout(Duration::from_secs(11)))
            .expect_err("over the limit");
        assert!(refused.contains("maximum of 10s"), "{refused}");
        let refused = limits
            .admit_budget(&Budget::default().max_memory(2 << 20))
            .expect_err("over the limit");
        assert!(refused.contains("memory cap"), "{refused}");
    }

    #[test]
    fn directories_env_and_network_need_the_workers_leave() {
        let root = tempfile::tempdir().expect("tempdir");
        let allowed = root.path().join("data");
        let inside = allowed.join("inner");
        std::fs::create_dir_all(&inside).expect("mkdir");
        let limits = WorkerLimits::default()
            .allow_dir(&allowed, false)
            .allow_env("LANG");
        let read = |p: &Path| Capabilities::default().dir(p, "/d");
        assert_eq!(limits.admit_capabilities(&read(&inside)), Ok(()));
        let climbing = inside.join("../..");
        let refused = limits
            .admit_capabilities(&read(&climbing))
            .expect_err("outside");
        assert!(refused.contains("not among the directories"), "{refused}");
        let write = Capabilities::default().dir_writable(&inside, "/d");
        let refused = limits.admit_capabilities(&write).expect_err("read-only");
        assert!(refused.contains("read-only"), "{refused}");
        assert_eq!(
            limits.admit_capabilities(&Capabilities::default().env("LANG", "C")),
            Ok(())
        );
        let refused = limits
            .admit_capabilities(&Capabilities::default().env("PATH", "/x"))
            .expect_err("env");
        assert!(refused.contains("PATH"), "{refused}");
        let refused = limits
            .admit_capabilities(&Capabilities::default().network(true))
            .expect_err("network");
        assert!(refused.contains("network"), "{refused}");
    }
}
