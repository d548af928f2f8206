//! wasmpool: Python's `concurrent.futures`, rebuilt in Rust for WebAssembly components.
//!
//! Load a task component, build an executor, submit calls, wait on futures:
//!
//! ```no_run
//! use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};
//! let component = TaskComponent::from_file("seed_tasks.wasm")?;
//! let pool = ThreadPoolExecutor::new(2)?;
//! let calls = (1..=5).rev().map(|n| component.call_wave(&format!("sleep-task({n})")));
//! let calls: Vec<_> = calls.collect::<Result<_, _>>()?;
//! let results: Vec<f64> = pool
//!     .map(calls)?
//!     .map(|r| r.map(|v| v.as_f64().unwrap_or_default()))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(results, [0.5, 0.4, 0.3, 0.2, 0.1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How a task goes, file by file:
//! 1. `runtime.rs`: the engine and host functions ([`Runtime`], [`RuntimeConfig`],
//!    [`PoolingConfig`]); `ticker.rs` ticks its epochs.
//! 2. `load.rs`: a `.wasm` becomes a [`TaskComponent`] (`component.rs`: its exports, finding
//!    one by name).
//! 3. `call.rs`: a [`Call`], checked against the WIT types (`types.rs`); values are
//!    [`TaskValue`] (`value.rs`); `json.rs` converts both to and from JSON.
//! 4. `settings.rs`, `sandbox.rs`: what every task gets (budget, capabilities, instance
//!    policy, output).
//! 5. `executor.rs`: [`Executor`] (`submit`, `map`); `thread_pool.rs` and `process_pool/`
//!    queue tasks for their workers.
//! 6. `run.rs`: a worker runs the task: `instance.rs` (a fresh or kept instance), `store.rs`
//!    (limits, WASI, abort), `invoke.rs` (the sync and async call paths), `output.rs` (the
//!    guest's stdout/stderr).
//! 7. `outcome.rs`: how it ended, as a value or a [`TaskError`] (`error.rs`), with a
//!    [`TaskReport`] (`report.rs`).
//! 8. `future/`: the [`TaskFuture`] the caller holds; `wait.rs`: [`wait()`], [`as_completed`].
//!
//! Support: `spin.rs` (spin, then park), `sync.rs` (locks; loom's in model checks,
//! `future_loom.rs`), `fuzzing/` (entry points and seeds of the fuzz targets).

mod call;
#[cfg(unix)]
pub mod cluster;
mod component;
mod error;
mod executor;
mod future;
#[cfg(all(test, feature = "loom"))]
mod future_loom;
/// Entry points for the fuzz targets in `fuzz/`; not a public API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod instance;
mod invoke;
pub mod json;
mod json_error;
mod load;
mod outcome;
mod output;
/// The process pool and the names only it needs: [`PROTOCOL_VERSION`](crate::process_pool::PROTOCOL_VERSION),
/// [`WORKER_ENV`](crate::process_pool::WORKER_ENV), [`ProtocolError`](crate::process_pool::ProtocolError).
/// Its executor, builder and [`serve_worker_if_requested`](crate::serve_worker_if_requested)
/// are at the crate root too.
#[cfg(unix)]
pub mod process_pool;
mod report;
mod run;
mod runtime;
mod sandbox;
mod settings;
mod spin;
mod store;
mod sync;
mod thread_pool;
mod ticker;
pub mod types;
mod value;
mod wait;
mod wave_fields;

pub use call::Call;
pub use component::{ExportedFunction, TaskComponent};
pub use error::{
    BuildError, CallError, LoadError, SubmitError, TaskError, TaskErrorKind, WaitTimeout,
};
pub use executor::{Executor, Map};
pub use future::{FutureState, Promise, ResultFuture, TaskFuture, promise};
pub use load::{MAX_COMPONENT_FILE, read_component_file};
pub use output::OutputMode;
#[cfg(unix)]
pub use process_pool::{
    ProcessPoolBuilder, ProcessPoolExecutor, STOP_GRACE, serve_worker_if_requested,
};
pub use report::TaskReport;
pub use runtime::{PoolingConfig, Runtime, RuntimeConfig};
pub use sandbox::{Budget, Capabilities, DirGrant};
pub use settings::{InstancePolicy, MAX_WORKERS, default_workers};
pub use spin::SPIN_ENV;
pub use store::DEFAULT_MAX_MEMORY;
/// The store limiter every task gets, for the benches' raw-wasmtime baseline; not a public API.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use store::MemoryLimiter;
pub use thread_pool::{ThreadPoolBuilder, ThreadPoolExecutor};
pub use value::TaskValue;
pub use wait::{AsCompleted, ReturnWhen, WaitResult, as_completed, wait};
/// The component-value type of arguments and results, re-exported from wasmtime.
pub use wasmtime::component::Val;

/// Process pools need Unix; elsewhere there is no worker mode to serve.
#[cfg(not(unix))]
pub fn serve_worker_if_requested() {}
