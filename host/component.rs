//! Loading task components: reading, compiling, linking and pre-instantiating them once,
//! and listing their exported functions. Running a call is `run.rs`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker, Type};

use crate::error::LoadError;
use crate::run::TaskState;
use crate::ticker::Ticker;
use crate::types::wit_signature;

/// Engine settings of a [`Runtime`]: what can be metered and interrupted. Each costs
/// speed on call-heavy guests (see the README), so each can be turned off.
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
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            fuel: false,
            interruptible: true,
            max_wasm_stack: None,
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
}

/// How instances get their memory, tables and instance data: from a pool reserved when the
/// [`Runtime`] starts (the default) or from the operating system per instance.
///
/// The pool is the fast default for a fresh instance per task: instantiating takes a slot
/// instead of `mmap`, and dropping the store resets the slot instead of `munmap`. The
/// `keep_resident` sizes keep the first bytes of each slot mapped (reset by `memset` or, on
/// Linux 6.7+, only the dirty pages), so a task costs no `madvise(DONTNEED)`: in a
/// multi-threaded process each of those sends a TLB shoot-down to every other core, which
/// made two workers slower than one. Isolation is the same as on demand: every task still
/// starts from a clean memory image.
///
/// The price is address space reserved up front: each memory slot is a 4 GiB reservation
/// plus a guard region (virtual, `PROT_NONE`, not resident), times `instances`. When every
/// slot is in use, a task fails to start with [`TaskError::Start`](crate::TaskError)
/// ("maximum concurrent limit … reached"); it never panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolingConfig {
    /// How many component instances may be alive at once (default 1000). A thread pool
    /// holds one per worker (its running task, or its kept instance under
    /// [`InstancePolicy::Reuse`](crate::InstancePolicy)); pools sharing a runtime share it.
    pub instances: u32,
    /// Bytes of each linear memory kept resident between tasks (default 4 MiB). Up to this
    /// much of what a task touched is reset in place (`memset`) rather than given back
    /// with `madvise`; it must cover what a typical task touches, e.g. a Rust guest's
    /// default 1 MiB stack plus its data and first heap pages (17+ pages of 64 KiB), or
    /// every task pays a TLB shoot-down. Only pages a task touched ever become resident.
    pub memory_keep_resident: usize,
    /// Bytes of each table kept resident between tasks (default 64 KiB).
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
            // One async stack per instance for the async path (tasks with a deadline).
            .total_stacks(self.instances)
            // 4 GiB: all a 32-bit memory can address, so the per-task cap
            // (`Budget::max_memory`, default `DEFAULT_MAX_MEMORY` = 1 GiB), enforced by the
            // store's limiter, always decides first and a grower gets `MemoryLimit`.
            .max_memory_size(1 << 32)
            // As many elements as the store's table limit allows.
            .table_elements(TABLE_ELEMENTS)
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

/// Table slots in the pool hold up to this many elements (the same cap as the store's
/// limiter in `run.rs`, `MAX_TABLE_ELEMENTS`).
const TABLE_ELEMENTS: usize = 1 << 20;

/// A wasm engine and the host functions (WASI 0.2) that task components link against.
/// Components loaded by one runtime share its engine and compiled-code caches.
///
/// Most programs use [`Runtime::shared`] through [`TaskComponent::from_file`].
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) engine: Engine,
    pub(crate) config: RuntimeConfig,
    pooling: Option<PoolingConfig>,
    linker: Linker<TaskState>,
    /// For tasks with a deadline: WASI's async host functions, which a timer can cut short.
    linker_async: Linker<TaskState>,
    /// Present when `config.interruptible`.
    pub(crate) ticker: Option<Ticker>,
}

impl Runtime {
    /// A runtime with the default engine settings.
    pub fn new() -> Result<Runtime, LoadError> {
        Runtime::with_config(RuntimeConfig::default())
    }

    /// A runtime with the given engine settings and the default instance pool
    /// ([`PoolingConfig::default`]).
    pub fn with_config(config: RuntimeConfig) -> Result<Runtime, LoadError> {
        Runtime::with_pooling(config, Some(PoolingConfig::default()))
    }

    /// A runtime with the given engine settings; `pooling` is the instance pool, or `None`
    /// to allocate every instance from the operating system on demand (less address space
    /// reserved, slower per task, and slower still with several worker threads).
    pub fn with_pooling(
        config: RuntimeConfig,
        pooling: Option<PoolingConfig>,
    ) -> Result<Runtime, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut wasm = wasmtime::Config::new();
        if let Some(pool) = &pooling {
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
                pooling,
                linker,
                linker_async,
                ticker,
            }),
        })
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

    /// The wasmtime engine behind this runtime, for code that drives wasmtime directly with
    /// the same settings (the benchmarks' raw-wasmtime baseline).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The instance pool's settings; `None` when instances are allocated on demand.
    pub fn pooling(&self) -> Option<&PoolingConfig> {
        self.inner.pooling.as_ref()
    }

    pub(crate) fn inner(&self) -> &RuntimeInner {
        &self.inner
    }

    /// Loads a component from a `.wasm` file.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<TaskComponent, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Loads a component from bytes; `origin` names them in error messages.
    pub fn load_bytes(&self, bytes: &[u8], origin: &str) -> Result<TaskComponent, LoadError> {
        let origin = origin.to_string();
        classify_header(bytes, &origin)?;
        let component = Component::new(&self.inner.engine, bytes).map_err(|e| {
            let message = format!("{e:#}");
            if message.contains("unexpected end") {
                LoadError::Truncated {
                    origin: origin.clone(),
                    message,
                }
            } else {
                LoadError::Invalid {
                    origin: origin.clone(),
                    message,
                }
            }
        })?;
        self.link(component, origin)
    }

    /// Loads a component precompiled by [`TaskComponent::precompiled`], skipping compilation.
    ///
    /// # Safety
    ///
    /// `bytes` must come from [`TaskComponent::precompiled`] (wasmtime's `serialize`) of a
    /// runtime with the same settings, and must not have been altered: wasmtime checks the
    /// header and the engine settings, but runs the machine code inside as it is.
    pub unsafe fn load_precompiled(
        &self,
        bytes: &[u8],
        origin: &str,
    ) -> Result<TaskComponent, LoadError> {
        // SAFETY: the caller guarantees `bytes` is an unaltered `serialize` output.
        let component =
            unsafe { Component::deserialize(&self.inner.engine, bytes) }.map_err(|e| {
                LoadError::Invalid {
                    origin: origin.to_string(),
                    message: format!("not a usable precompiled component: {e:#}"),
                }
            })?;
        self.link(component, origin.to_string())
    }

    fn link(&self, component: Component, origin: String) -> Result<TaskComponent, LoadError> {
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link {
                origin: origin.clone(),
                message: format!("{e:#}"),
            })?;
        let functions = exported_functions(&self.inner.engine, &component);
        Ok(TaskComponent {
            inner: Arc::new(ComponentInner {
                origin,
                runtime: self.clone(),
                pre,
                pre_async: OnceLock::new(),
                functions,
                precompiled: OnceLock::new(),
            }),
        })
    }
}

/// Checks the 8-byte preamble: magic, then version 13 layer 1 (component) or version 1
/// layer 0 (core module).
fn classify_header(bytes: &[u8], origin: &str) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    const CORE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    let origin = origin.to_string();
    if bytes.len() < 4 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm { origin });
    }
    match bytes.get(4..8) {
        None => Err(LoadError::Truncated {
            origin,
            message: format!("{} bytes, shorter than the 8-byte header", bytes.len()),
        }),
        Some(v) if v == CORE => Err(LoadError::CoreModule { origin }),
        Some(v) if v == COMPONENT => check_section_sizes(&bytes[8..], &origin),
        Some(v) => Err(LoadError::Invalid {
            origin,
            message: format!("unknown wasm version/layer bytes {v:02x?}"),
        }),
    }
}

/// Walks the top-level sections (id byte, LEB128 size, payload): a section that claims more
/// bytes than the file has means the file was cut short.
fn check_section_sizes(mut rest: &[u8], origin: &str) -> Result<(), LoadError> {
    let truncated = |message: String| LoadError::Truncated {
        origin: origin.to_string(),
        message,
    };
    let total = rest.len() + 8;
    while let Some((_id, after_id)) = rest.split_first() {
        let offset = total - rest.len();
        let (size, after_size) = read_leb_u32(after_id)
            .ok_or_else(|| truncated(format!("section header at byte {offset} is cut off")))?;
        let size = size as usize;
        if size > after_size.len() {
            return Err(truncated(format!(
                "section at byte {offset} needs {size} bytes, only {} remain",
                after_size.len()
            )));
        }
        rest = &after_size[size..];
    }
    Ok(())
}

/// Reads an unsigned LEB128 `u32`; `None` if the bytes end first or it is too long.
fn read_leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// One exported function a task can call.
#[derive(Clone)]
pub struct ExportedFunction {
    name: String,
    interface: Option<String>,
    pub(crate) index: ComponentExportIndex,
    pub(crate) ty: ComponentFunc,
}

impl ExportedFunction {
    /// The name to call it by: `fib` at the top level, `wasmpool:tasks/math@0.1.0#add`
    /// inside an exported interface.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exported interface it belongs to, if any.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// The function's own name, without its interface.
    pub fn func_name(&self) -> &str {
        match &self.interface {
            Some(i) => &self.name[i.len() + 1..],
            None => &self.name,
        }
    }

    /// Its WIT signature, e.g. `func(n: u32) -> f64`.
    pub fn signature(&self) -> String {
        wit_signature(&self.ty)
    }

    /// Parameter names and types.
    pub fn params(&self) -> impl ExactSizeIterator<Item = (&str, Type)> + '_ {
        self.ty.params()
    }

    /// The result type, if the function returns one.
    pub fn result(&self) -> Option<Type> {
        self.ty.results().next()
    }
}

fn exported_functions(engine: &Engine, component: &Component) -> Vec<ExportedFunction> {
    let mut out = Vec::new();
    for (name, export) in component.component_type().exports(engine) {
        match export.ty {
            ComponentItem::ComponentFunc(ty) => {
                if let Some(index) = component.get_export_index(None, name) {
                    out.push(ExportedFunction {
                        name: name.to_string(),
                        interface: None,
                        index,
                        ty,
                    });
                }
            }
            ComponentItem::ComponentInstance(instance) => {
                let Some(parent) = component.get_export_index(None, name) else {
                    continue;
                };
                for (func_name, item) in instance.exports(engine) {
                    let ComponentItem::ComponentFunc(ty) = item.ty else {
                        continue;
                    };
                    if let Some(index) = component.get_export_index(Some(&parent), func_name) {
                        out.push(ExportedFunction {
                            name: format!("{name}#{func_name}"),
                            interface: Some(name.to_string()),
                            index,
                            ty,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// A compiled, linked and pre-instantiated task component. Cheap to clone; `Send + Sync`.
///
/// ```no_run
/// use wasmpool::TaskComponent;
/// let component = TaskComponent::from_file("fixture_tasks.wasm")?;
/// for f in component.functions() {
///     println!("{}: {}", f.name(), f.signature());
/// }
/// let call = component.call_wave("fib(20)")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct TaskComponent {
    inner: Arc<ComponentInner>,
}

struct ComponentInner {
    origin: String,
    runtime: Runtime,
    pre: InstancePre<TaskState>,
    /// Linked against the async WASI host functions; made on the first task with a deadline.
    pre_async: OnceLock<Result<InstancePre<TaskState>, String>>,
    functions: Vec<ExportedFunction>,
    /// The compiled code in wasmtime's serialized form, made on first use (for worker
    /// processes and the compilation cache).
    precompiled: OnceLock<Arc<[u8]>>,
}

impl std::fmt::Debug for TaskComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskComponent")
            .field("origin", &self.inner.origin)
            .field("functions", &self.inner.functions.len())
            .finish()
    }
}

impl TaskComponent {
    /// Loads a component from a file with the shared default [`Runtime`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<TaskComponent, LoadError> {
        Runtime::shared()?.load(path)
    }

    /// Loads a component from bytes with the shared default [`Runtime`].
    pub fn from_bytes(bytes: &[u8]) -> Result<TaskComponent, LoadError> {
        Runtime::shared()?.load_bytes(bytes, "<bytes>")
    }

    /// Where the component came from (its path), for messages.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Every exported function, top-level ones first, in export order.
    pub fn functions(&self) -> &[ExportedFunction] {
        &self.inner.functions
    }

    /// The component's imports: `(name, kind)` with kind `interface`, `func`, ...
    pub fn imports(&self) -> Vec<String> {
        let engine = &self.inner.runtime.inner.engine;
        self.inner
            .pre
            .component()
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The compiled component in wasmtime's serialized form (a `.cwasm`), for
    /// [`Runtime::load_precompiled`]. Made once and kept.
    pub fn precompiled(&self) -> Result<Arc<[u8]>, LoadError> {
        if let Some(bytes) = self.inner.precompiled.get() {
            return Ok(bytes.clone());
        }
        let bytes: Arc<[u8]> = self
            .inner
            .pre
            .component()
            .serialize()
            .map_err(|e| LoadError::Invalid {
                origin: self.inner.origin.clone(),
                message: format!("cannot serialize: {e:#}"),
            })?
            .into();
        Ok(self.inner.precompiled.get_or_init(|| bytes).clone())
    }

    /// The runtime that loaded this component.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// True when both handles are the same loaded component.
    pub fn same_component(&self, other: &TaskComponent) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// True when both components were loaded by the same runtime.
    pub fn same_runtime(&self, other: &TaskComponent) -> bool {
        Arc::ptr_eq(&self.inner.runtime.inner, &other.inner.runtime.inner)
    }

    pub(crate) fn function_at(&self, index: usize) -> &ExportedFunction {
        &self.inner.functions[index]
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<TaskState> {
        &self.inner.pre
    }

    /// The pre-instantiated component for the async path (tasks with a deadline).
    pub(crate) fn instance_pre_async(&self) -> Result<&InstancePre<TaskState>, String> {
        self.inner
            .pre_async
            .get_or_init(|| {
                self.inner
                    .runtime
                    .inner
                    .linker_async
                    .instantiate_pre(self.inner.pre.component())
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_classification() {
        assert!(matches!(
            classify_header(b"hello", "f"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            classify_header(b"\0asm\x01\0\0\0", "f"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(matches!(
            classify_header(b"\0asm\x0d", "f"),
            Err(LoadError::Truncated { .. })
        ));
        assert!(classify_header(b"\0asm\x0d\0\x01\0", "f").is_ok());
    }
}
