//! One task's store: its WASI context (what of the host it may reach), the memory and table
//! limits, and the epoch check that stops a guest at its deadline or when it is aborted.
//!
//! A store is armed for each task it runs ([`TaskState::arm`]): a kept instance's store is
//! re-armed with the next task's abort switch, deadline and memory cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::output::LineSink;
use crate::sandbox::Capabilities;

/// The memory cap of a task whose budget sets none. Never unlimited: a guest that
/// allocates without bound would otherwise take the host down.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

/// The most table elements an instance may have (stops table-growth floods). The only
/// table limit: the instance pool's table slots are sized from it too.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Lets another thread stop a running task (`TaskFuture::abort`, shutdown).
#[derive(Default)]
pub(crate) struct TaskControl {
    aborted: AtomicBool,
    wake: tokio::sync::Notify,
}

/// The thread pool's abort hook: the task's own control.
impl crate::future::StopTask for TaskControl {
    fn stop(&self, _id: u64) {
        self.abort();
    }
}

impl TaskControl {
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        // Stores a permit if nobody waits yet, so the async path sees it whenever it looks.
        self.wake.notify_one();
        // A guest that computes sees the flag at the next epoch tick: ticks for it too.
        crate::ticker::kick_all();
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Resolves once [`abort`](Self::abort) is called, or at once if it was called before
    /// and nobody has waited since.
    pub(crate) fn aborted(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

/// The data of one task's store.
pub(crate) struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// The current task's abort flag and deadline, read by the epoch callback.
    control: Arc<TaskControl>,
    deadline: Option<Instant>,
}

impl TaskState {
    /// Arms the store for the task about to run: its abort switch, deadline and memory cap.
    pub(crate) fn arm(
        &mut self,
        control: &Arc<TaskControl>,
        deadline: Option<Instant>,
        max_memory: u64,
    ) {
        self.control = control.clone();
        self.deadline = deadline;
        self.limiter.max = max_memory;
    }

    pub(crate) fn limiter(&self) -> &MemoryLimiter {
        &self.limiter
    }
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces the memory cap and remembers the peak and whether the cap was hit. Public only
/// to the benches' raw-wasmtime baseline (feature `test-hooks`), which pays for the same checks.
pub struct MemoryLimiter {
    max: u64,
    peak: u64,
    denied: bool,
}

impl MemoryLimiter {
    /// A limiter that refuses to grow a memory past `max` bytes.
    pub fn new(max: u64) -> MemoryLimiter {
        MemoryLimiter {
            max,
            peak: 0,
            denied: false,
        }
    }

    /// The memory cap, in bytes.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The largest memory the guest grew to, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak
    }

    /// Whether a growth was refused because of the cap.
    pub(crate) fn denied(&self) -> bool {
        self.denied
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.max {
            self.denied = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Why the epoch callback or the async path stopped a task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Interrupted {
    #[error("the task's deadline passed")]
    Deadline,
    #[error("the task was aborted")]
    Aborted,
}

/// A new store for one task, armed with `control`, `deadline` and `max_memory`. With `fuel`,
/// it starts with unlimited fuel (each task sets its own); with `interruptible`, it checks the
/// abort flag and deadline at every epoch tick. The error is the message of a start failure.
pub(crate) fn new_store(
    engine: &Engine,
    wasi: WasiCtx,
    max_memory: u64,
    control: &Arc<TaskControl>,
    deadline: Option<Instant>,
    fuel: bool,
    interruptible: bool,
) -> Result<Store<TaskState>, String> {
    let mut store = Store::new(
        engine,
        TaskState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(max_memory),
            control: control.clone(),
            deadline,
        },
    );
    store.limiter(|state| &mut state.limiter);
    if fuel {
        store.set_fuel(u64::MAX).map_err(|e| format!("{e:#}"))?;
    }
    if interruptible {
        store.epoch_deadline_callback(|store| {
            let state = store.data();
            if state.control.is_aborted() {
                Err(Interrupted::Aborted.into())
            } else if state.deadline.is_some_and(|d| Instant::now() >= d) {
                Err(Interrupted::Deadline.into())
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
    }
    Ok(store)
}

/// Builds the task's WASI context: its output sinks, and nothing of the host but what
/// `caps` grants. Without the network grant every socket address is refused
/// (wasmtime-wasi's default check) and name lookup is off.
pub(crate) fn wasi_context(
    caps: &Capabilities,
    argv: Option<&[String]>,
    stdout: &LineSink,
    stderr: &LineSink,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .envs(&caps.env)
        .args(argv.unwrap_or(&caps.args));
    if caps.network {
        builder
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    } else {
        builder
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
    }
    for grant in &caps.dirs {
        let perms = if grant.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&grant.host, &grant.guest, perms)
            .map_err(|e| format!("cannot open {} for the task: {e:#}", grant.host.display()))?;
    }
    Ok(builder.build())
}
