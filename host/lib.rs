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

mod call;
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
mod load;
mod outcome;
mod output;
#[cfg(unix)]
mod process_pool;
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

pub use call::Call;
pub use component::{ExportedFunction, TaskComponent};
pub use error::{
    BuildError, CallError, LoadError, ProtocolError, SubmitError, TaskError, TaskErrorKind,
    WaitTimeout,
};
pub use executor::{Executor, Map};
pub use future::{FutureState, Promise, ResultFuture, TaskFuture, promise};
pub use output::OutputMode;
#[cfg(unix)]
pub use process_pool::{
    PROTOCOL_VERSION as PROCESS_POOL_PROTOCOL_VERSION, ProcessPoolBuilder, ProcessPoolExecutor,
    WORKER_ENV, serve_worker_if_requested,
};
pub use report::TaskReport;
pub use runtime::{PoolingConfig, Runtime, RuntimeConfig};
pub use sandbox::{Budget, Capabilities, DirGrant};
pub use settings::InstancePolicy;
pub use spin::SPIN_ENV;
pub use store::DEFAULT_MAX_MEMORY;
pub use thread_pool::{ThreadPoolBuilder, ThreadPoolExecutor};
pub use value::TaskValue;
pub use wait::{AsCompleted, ReturnWhen, WaitResult, as_completed, wait};
/// The component-value type of arguments and results, re-exported from wasmtime.
pub use wasmtime::component::Val;

/// Process pools need Unix; elsewhere there is no worker mode to serve.
#[cfg(not(unix))]
pub fn serve_worker_if_requested() {}
