//! The engine and the host functions task components link against: [`Runtime`], its engine
//! settings ([`RuntimeConfig`]) and its instance pool ([`PoolingConfig`]).

use std::sync::{Arc, OnceLock};

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::error::LoadError;
use crate::store::{DEFAULT_MAX_MEMORY, MAX_TABLE_ELEMENTS, TaskState};
use crate::ticker::Ticker;

/// Engine settings of a [`Runtime`]: what can be metered and interrupted (each costs speed
/// on call-heavy guests, see the README, so each can be turned off), the stack limit and the
/// instance pool.
///
/// A component carries its runtime's whole configuration wherever it runs: process-pool
/// workers and cluster workers build their runtime from it, so they enforce the same limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Meter fuel, so [`Budget::fuel`](crate::Budget) can be enforced (default: off;
    /// +40–75% on call-heavy code).
    pub fuel: bool,
    /// Check for deadlines and aborts at every epoch tick, so a task's timeout and
    /// [`TaskFuture::abort`](crate::TaskFuture::abort) stop a spinning guest (default: on;
    /// +35–60% on call-heavy code, ~0% on loops).
    pub interruptible: bool,
    /// The most wasm stack a task may use, in bytes (default: wasmtime's 512 KiB).
    pub max_wasm_stack: Option<usize>,
    /// Where instances get memory, tables and stacks: a pool of slots reserved up front
    /// (default: `Some(PoolingConfig::default())`), or `None` for the operating system on
    /// demand.
    pub pooling: Option<PoolingConfig>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            fuel: false,
            interruptible: true,
            max_wasm_stack: None,
            pooling: Some(PoolingConfig::default()),
        }
    }
}

impl RuntimeConfig {
    /// Turns fuel metering on or off.
    pub fn fuel(mut self, on: bool) -> Self {
        self.fuel = on;
        self
    }

    /// Turns deadline and abort checks on or off.
    pub fn interruptible(mut self, on: bool) -> Self {
        self.interruptible = on;
        self
    }

    /// Sets the wasm stack limit in bytes.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = Some(bytes);
        self
    }

    /// Sets the instance pool, or `None` to allocate every instance on demand.
    pub fn pooling(mut self, pooling: Option<PoolingConfig>) -> Self {
        self.pooling = pooling;
        self
    }
}

/// Where instances get memory, tables and stacks: slots reserved when the [`Runtime`] starts
/// ([`RuntimeConfig::pooling`] `Some`, the default), or the operating system per instance
/// (`None`). Each process that runs tasks (a process-pool or cluster worker) has its own pool
/// of these settings.
///
/// Each slot reserves 4 GiB + guard of *virtual* address space per memory, times `instances`.
/// When every slot is in use, a task fails with [`TaskError::NoInstanceSlot`](crate::TaskError)
/// ("maximum concurrent limit … reached"); nothing panics. Every task starts from a clean
/// memory image either way. Why the pool is the default: README.md, "Performance".
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolingConfig {
    /// Component instances alive at once, shared by every pool on this runtime (default 1000).
    pub instances: u32,
    /// Bytes of each linear memory reset in place between tasks instead of being returned to
    /// the OS (default 4 MiB).
    pub memory_keep_resident: usize,
    /// Bytes of each table reset in place between tasks instead of being returned to the OS
    /// (default 64 KiB).
    pub table_keep_resident: usize,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            instances: 1000,
            memory_keep_resident: 4 << 20,
            table_keep_resident: 64 << 10,
        }
    }
}

impl PoolingConfig {
    /// Sets how many instances may be alive at once.
    pub fn instances(mut self, count: u32) -> Self {
        self.instances = count;
        self
    }

    /// Sets how many bytes of each linear memory stay resident between tasks.
    pub fn memory_keep_resident(mut self, bytes: usize) -> Self {
        self.memory_keep_resident = bytes;
        self
    }

    /// Sets how many bytes of each table stay resident between tasks.
    pub fn table_keep_resident(mut self, bytes: usize) -> Self {
        self.table_keep_resident = bytes;
        self
    }

    /// wasmtime's settings for this pool.
    fn wasmtime(&self) -> wasmtime::PoolingAllocationConfig {
        // A wasm32-wasip2 component has a few core instances (the guest, the WASI adapter,
        // shims) and one or two memories and tables; leave room for that per instance.
        const CORE_PER_COMPONENT: u32 = 8;
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(self.instances)
            .total_core_instances(self.instances.saturating_mul(CORE_PER_COMPONENT))
            .total_memories(self.instances.saturating_mul(2))
            .total_tables(self.instances.saturating_mul(2))
            // One async stack per instance: every task runs on the async path.
            .total_stacks(self.instances)
            .max_memory_size(MAX_MEMORY_SIZE)
            // As many elements as the store's table limit allows.
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_tables_per_module(2)
            .max_memories_per_module(1)
            .linear_memory_keep_resident(self.memory_keep_resident)
            .table_keep_resident(self.table_keep_resident)
            // Linux 6.7+: reset only the pages a task dirtied (PAGEMAP_SCAN) instead of
            // `memset`ting all of the first `keep_resident` bytes; off where unsupported.
            .pagemap_scan(wasmtime::Enabled::Auto);
        pool
    }
}

/// The size of every memory slot in the pool: all a 32-bit memory can address.
const MAX_MEMORY_SIZE: usize = 1 << 32;

// The store's limiter (`Budget::max_memory`) decides before the pool does, so a guest that
// grows past its cap gets `MemoryLimit`, not a pool error.
const _: () = assert!(DEFAULT_MAX_MEMORY <= MAX_MEMORY_SIZE as u64);

/// A wasm engine and the host functions (WASI 0.2) that task components link against.
/// Components loaded by one runtime share its engine and compiled-code caches.
///
/// Most programs use [`Runtime::shared`] through
/// [`TaskComponent::from_file`](crate::TaskComponent::from_file).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    /// The sync WASI host functions: a component's imports are checked against them when it
    /// loads (tasks run with `linker_async`).
    pub(crate) linker: Linker<TaskState>,
    /// What every task links against: WASI's async host functions, which a deadline or an
    /// abort can cut short mid-wait (`invoke.rs`).
    pub(crate) linker_async: Linker<TaskState>,
    /// Present when `config.interruptible`.
    pub(crate) ticker: Option<Ticker>,
}

impl Runtime {
    /// A runtime with the default engine settings.
    pub fn new() -> Result<Runtime, LoadError> {
        Runtime::with_config(RuntimeConfig::default())
    }

    /// A runtime with the given settings, its instance pool included.
    pub fn with_config(config: RuntimeConfig) -> Result<Runtime, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut wasm = wasmtime::Config::new();
        if let Some(pool) = &config.pooling {
            wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pool.wasmtime(),
            ));
        }
        wasm.consume_fuel(config.fuel);
        wasm.epoch_interruption(config.interruptible);
        if let Some(size) = config.max_wasm_stack {
            wasm.max_wasm_stack(size);
        }
        let engine = Engine::new(&wasm).map_err(engine_error)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_error)?;
        let mut linker_async = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker_async).map_err(engine_error)?;
        let ticker =
            if config.interruptible {
                Some(Ticker::start(engine.clone()).map_err(|e| {
                    LoadError::Engine(format!("cannot start the epoch ticker: {e}"))
                })?)
            } else {
                None
            };
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                config,
                linker,
                linker_async,
                ticker,
            }),
        })
    }

    /// A runtime with the given settings and instance pool: `pooling` replaces
    /// `config.pooling` (`None` allocates every instance from the operating system on demand:
    /// less address space reserved, slower per task, and slower still with several worker
    /// threads).
    pub fn with_pooling(
        config: RuntimeConfig,
        pooling: Option<PoolingConfig>,
    ) -> Result<Runtime, LoadError> {
        Runtime::with_config(config.pooling(pooling))
    }

    /// The process-wide runtime with default settings, created on first use.
    pub fn shared() -> Result<Runtime, LoadError> {
        static SHARED: OnceLock<Result<Runtime, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Runtime::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(LoadError::Engine)
    }

    /// The engine settings.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The wasmtime engine behind this runtime, for the benchmarks' raw-wasmtime baseline
    /// (same settings, no pool); only in test and bench builds (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The instance pool's settings; `None` when instances are allocated on demand.
    pub fn pooling(&self) -> Option<&PoolingConfig> {
        self.inner.config.pooling.as_ref()
    }

    pub(crate) fn inner(&self) -> &RuntimeInner {
        &self.inner
    }

    /// True when both handles are the same runtime.
    pub(crate) fn same_as(&self, other: &Runtime) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
