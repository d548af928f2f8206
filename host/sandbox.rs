//! What a task may use: its budget (time, fuel, memory) and its capabilities (directories,
//! environment variables, arguments). Plain data, enforced where a task runs, the same way
//! in every pool: the memory cap, WASI grants and the epoch check in `store.rs`; fuel and
//! the deadline, set for each task, in `run.rs`.

use std::path::PathBuf;
use std::time::Duration;

/// Limits on one task. Set per executor, and overridden per call with
/// [`Call::with_budget`](crate::Call::with_budget): a field set on the call wins.
///
/// ```
/// use std::time::Duration;
/// let budget = wasmpool::Budget::default()
///     .timeout(Duration::from_millis(250))
///     .max_memory(64 << 20);
/// assert_eq!(budget.timeout, Some(Duration::from_millis(250)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Budget {
    /// Wall-clock deadline, from the start of the task.
    pub timeout: Option<Duration>,
    /// Fuel units (roughly, wasm instructions); needs a runtime with fuel metering.
    pub fuel: Option<u64>,
    /// Cap on each linear memory of the task's instance, in bytes.
    pub max_memory: Option<u64>,
}

impl Budget {
    /// Sets the wall-clock deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the fuel budget.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.fuel = Some(fuel);
        self
    }

    /// Sets the linear-memory cap in bytes.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// This budget with the unset fields taken from `base`.
    pub fn or(&self, base: &Budget) -> Budget {
        Budget {
            timeout: self.timeout.or(base.timeout),
            fuel: self.fuel.or(base.fuel),
            max_memory: self.max_memory.or(base.max_memory),
        }
    }
}

/// A host directory made visible to tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (e.g. `/data`).
    pub guest: String,
    /// Whether the guest may create, write and delete files in it.
    pub writable: bool,
}

/// What a task may reach beyond its own memory. By default: nothing but clocks and
/// random numbers (no files, no environment, no network, an empty stdin).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// The guest's command-line arguments (`argv`).
    pub args: Vec<String>,
    /// Whether the guest may open TCP/UDP sockets and resolve names (default: no).
    pub network: bool,
}

impl Capabilities {
    /// Grants `host` as `guest`, read-only.
    pub fn dir(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            writable: false,
        });
        self
    }

    /// Grants `host` as `guest`, read-write.
    pub fn dir_writable(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.dirs.push(DirGrant {
            host: host.into(),
            guest: guest.into(),
            writable: true,
        });
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Lets the guest use the network (TCP, UDP, name lookup) with the host's reach.
    pub fn network(mut self, allowed: bool) -> Self {
        self.network = allowed;
        self
    }

    /// Sets the arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}
