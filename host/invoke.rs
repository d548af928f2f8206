//! Calling into an instance, always on the async path, so that a task can be stopped
//! wherever it is:
//! - a spinning guest: every store checks its task's deadline and abort flag at each epoch
//!   tick, and traps within a tick or two (see `store.rs`);
//! - a guest blocked in WASI (`sleep`, `poll`, a blocking read): WASI calls are futures
//!   here, and the deadline's timer or the abort signal drops the call mid-wait.
//!
//! Every store, kept or not, is instantiated and called here: a store instantiated with the
//! async linker accepts only async calls. What this costs per task: `benches/budgets.rs`,
//! group `trivial-task`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Val};

use crate::component::ExportedFunction;
use crate::store::{Interrupted, TaskControl, TaskState};

/// Where a run failed: before the call (instantiation) or in it.
pub(crate) enum Failure {
    Start(String),
    Call(wasmtime::Error),
}

/// Calls `function` with `args`, cut short by the deadline (if any) or an abort.
pub(crate) fn call(
    store: &mut Store<TaskState>,
    instance: &Instance,
    function: &ExportedFunction,
    args: &[Val],
    deadline: Option<Instant>,
    control: &TaskControl,
) -> Result<Option<Val>, Failure> {
    let work = async {
        let func = instance
            .get_func(&mut *store, function.index)
            .ok_or_else(|| {
                Failure::Start(format!("the instance has no export `{}`", function.name()))
            })?;
        // A component function has at most one result: no allocation for it.
        let returns = function.ty.results().len() > 0;
        let mut result = [Val::Bool(false)];
        func.call_async(&mut *store, args, &mut result[..usize::from(returns)])
            .await
            .map_err(Failure::Call)?;
        let [value] = result;
        Ok(returns.then_some(value))
    };
    until_stopped(deadline, control, work)
}

/// Instantiates `pre`, cut short by the deadline (if any) or an abort.
pub(crate) fn instantiate(
    store: &mut Store<TaskState>,
    pre: &InstancePre<TaskState>,
    deadline: Option<Instant>,
    control: &TaskControl,
) -> Result<Instance, wasmtime::Error> {
    // wasmtime's error is kept whole: `classify_start` looks for the pooling limit in it.
    let work = async {
        pre.instantiate_async(&mut *store)
            .await
            .map_err(Failure::Call)
    };
    until_stopped(deadline, control, work).map_err(|f| match f {
        Failure::Start(m) => wasmtime::Error::msg(m),
        Failure::Call(e) => e,
    })
}

thread_local! {
    /// Each worker thread's executor, made on first use.
    static ASYNC_RUNTIME: Result<tokio::runtime::Runtime, String> =
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"));
}

/// Runs `work` on this thread's executor until it finishes, the deadline (if any) passes,
/// or the task is aborted, whichever comes first. A deadline already passed, or an abort
/// made before, wins over work that would finish at once, so the outcome never depends on
/// chance.
///
/// Most calls never wait (a guest that computes and returns, or only writes its output):
/// they finish in their first poll. That poll is made in the executor's context (WASI's
/// host functions and timers need it) but outside its scheduler, which costs ~1.5k
/// instructions to enter and leave, and without the deadline's timer and the abort's
/// waiter, which only a wait needs (~0.5k more): a third of a reused instance's call.
/// Work that did not finish in it (it waits for a timer or I/O, or the guest yielded) goes
/// on under `block_on`, raced against the deadline and the abort, polled again with a waker
/// that works; nothing it started is lost: it is the same future. A guest that computes
/// without waiting is stopped by the epoch check (`store.rs`), on either path.
fn until_stopped<T>(
    deadline: Option<Instant>,
    control: &TaskControl,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    let interrupted = |why: Interrupted| Err(Failure::Call(why.into()));
    if control.is_aborted() {
        return interrupted(Interrupted::Aborted);
    }
    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
        return interrupted(Interrupted::Deadline);
    }
    ASYNC_RUNTIME.with(|rt| {
        let rt = rt.as_ref().map_err(|e| Failure::Start(e.clone()))?;
        let mut work = pin!(work);
        {
            let _context = rt.enter();
            let mut first = Context::from_waker(Waker::noop());
            if let Poll::Ready(outcome) = work.as_mut().poll(&mut first) {
                return outcome;
            }
        }
        rt.block_on(async {
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = expired => interrupted(Interrupted::Deadline),
                () = control.aborted() => interrupted(Interrupted::Aborted),
                outcome = work => outcome,
            }
        })
    })
}
