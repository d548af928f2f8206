//! Calling into an instance. Two paths, one mechanism for stopping a guest:
//! - every store checks, at each epoch tick, its task's deadline and abort flag (so a
//!   spinning guest stops within a tick or two; see `store.rs`);
//! - a task with a deadline runs on the async path, where WASI calls are futures: a timer
//!   and the abort signal cut short a guest blocked in `sleep` or `poll`, which the
//!   synchronous path cannot do. Tasks without a deadline take the cheaper sync path.

use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Val};

use crate::component::ExportedFunction;
use crate::store::{Interrupted, TaskControl, TaskState};

/// Where a run failed: before the call (instantiation) or in it.
pub(crate) enum Failure {
    Start(String),
    Call(wasmtime::Error),
}

/// Calls `function` with `args`: on the sync path without a deadline, on the async path,
/// cut short by the deadline or an abort, with one.
pub(crate) fn call(
    store: &mut Store<TaskState>,
    instance: &Instance,
    function: &ExportedFunction,
    args: &[Val],
    deadline: Option<Instant>,
    control: &TaskControl,
) -> Result<Option<Val>, Failure> {
    match deadline {
        None => call_sync(store, instance, function, args),
        Some(deadline) => call_async(store, instance, function, args, deadline, control),
    }
}

fn call_sync(
    store: &mut Store<TaskState>,
    instance: &Instance,
    function: &ExportedFunction,
    args: &[Val],
) -> Result<Option<Val>, Failure> {
    let func = export(&mut *store, instance, function)?;
    // A component function has at most one result: no allocation for it.
    let returns = function.ty.results().len() > 0;
    let mut result = [Val::Bool(false)];
    func.call(&mut *store, args, &mut result[..usize::from(returns)])
        .map_err(Failure::Call)?;
    let [value] = result;
    Ok(returns.then_some(value))
}

fn export(
    store: &mut Store<TaskState>,
    instance: &Instance,
    function: &ExportedFunction,
) -> Result<wasmtime::component::Func, Failure> {
    instance
        .get_func(store, function.index)
        .ok_or_else(|| Failure::Start(format!("the instance has no export `{}`", function.name())))
}

thread_local! {
    /// Each worker thread's executor for the async path, made on first use.
    static ASYNC_RUNTIME: Result<tokio::runtime::Runtime, String> =
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"));
}

/// Runs `work` on this thread's async executor until it finishes, the deadline passes,
/// or the task is aborted, whichever comes first.
fn until_deadline<T>(
    deadline: Instant,
    control: &TaskControl,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    ASYNC_RUNTIME.with(|rt| {
        let rt = rt.as_ref().map_err(|e| Failure::Start(e.clone()))?;
        rt.block_on(async {
            // Biased: a deadline already passed, or an abort, wins over work that would
            // finish in the same poll, so the outcome never depends on chance.
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline.into()) => {
                    Err(Failure::Call(Interrupted::Deadline.into()))
                }
                () = control.aborted() => Err(Failure::Call(Interrupted::Aborted.into())),
                outcome = work => outcome,
            }
        })
    })
}

/// Instantiates `pre` on the async path (the instance of a task with a deadline).
pub(crate) fn instantiate_async(
    store: &mut Store<TaskState>,
    pre: &InstancePre<TaskState>,
    control: &TaskControl,
    deadline: Option<Instant>,
) -> Result<Instance, wasmtime::Error> {
    // wasmtime's error is kept whole: `classify_start` looks for the pooling limit in it.
    let work = async {
        pre.instantiate_async(&mut *store)
            .await
            .map_err(Failure::Call)
    };
    let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    until_deadline(deadline, control, work).map_err(|f| match f {
        Failure::Start(m) => wasmtime::Error::msg(m),
        Failure::Call(e) => e,
    })
}

fn call_async(
    store: &mut Store<TaskState>,
    instance: &Instance,
    function: &ExportedFunction,
    args: &[Val],
    deadline: Instant,
    control: &TaskControl,
) -> Result<Option<Val>, Failure> {
    let work = async {
        let func = export(&mut *store, instance, function)?;
        let mut results = vec![Val::Bool(false); function.ty.results().len()];
        func.call_async(&mut *store, args, &mut results)
            .await
            .map_err(Failure::Call)?;
        Ok(results.pop())
    };
    until_deadline(deadline, control, work)
}
