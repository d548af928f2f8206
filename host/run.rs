//! Running one task: a fresh store and instance with the task's budget and capabilities,
//! the call, and its outcome. Every wasmtime error becomes a [`TaskError`] here, in
//! [`classify`], and nowhere else.
//!
//! Two paths, one mechanism for stopping a guest:
//! - every store checks, at each epoch tick, its task's deadline and abort flag (so a
//!   spinning guest stops within a tick or two);
//! - a task with a deadline runs on the async path, where WASI calls are futures: a timer
//!   and the abort signal cut short a guest blocked in `sleep` or `poll`, which the
//!   synchronous path cannot do. Tasks without a deadline take the cheaper sync path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, InstancePre, Val};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{
    FsPerms, I32Exit, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

use crate::call::Call;
use crate::component::ExportedFunction;
use crate::error::TaskError;
use crate::output::{HostStream, LineSink, OutputMode};
use crate::report::TaskReport;
use crate::sandbox::{Budget, Capabilities};
use crate::value::{TaskValue, wave_text};

/// The memory cap of a task whose budget sets none. Never unlimited: a guest that
/// allocates without bound would otherwise take the host down.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

/// The most table elements an instance may have (stops table-growth floods).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// What a worker gives every task it runs.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub(crate) worker_name: Arc<str>,
    pub(crate) output: OutputMode,
    /// The executor's budget; a call's own budget overrides it field by field.
    pub(crate) budget: Budget,
    pub(crate) capabilities: Capabilities,
}

/// Lets another thread stop a running task (`TaskFuture::abort`, shutdown).
#[derive(Default)]
pub(crate) struct TaskControl {
    aborted: AtomicBool,
    wake: tokio::sync::Notify,
}

impl TaskControl {
    pub(crate) fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        // Stores a permit if nobody waits yet, so the async path sees it whenever it looks.
        self.wake.notify_one();
    }

    fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }
}

/// How a task went.
pub(crate) struct TaskRun {
    pub(crate) outcome: Result<TaskValue, TaskError>,
    pub(crate) elapsed: Duration,
    pub(crate) fuel_consumed: Option<u64>,
    pub(crate) peak_memory: u64,
    pub(crate) stdout: Option<String>,
    pub(crate) stderr: Option<String>,
}

impl TaskRun {
    /// The report of this run by `worker` (process `pid`), its `attempt`-th.
    pub(crate) fn report(&self, worker: &str, pid: u32, attempt: u32) -> TaskReport {
        TaskReport {
            worker: worker.to_string(),
            pid,
            elapsed: self.elapsed,
            fuel_consumed: self.fuel_consumed,
            peak_memory: self.peak_memory,
            attempt,
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
        }
    }
}

/// The data of one task's store.
pub(crate) struct TaskState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces the memory cap and remembers the peak and whether the cap was hit.
struct MemoryLimiter {
    max: u64,
    peak: u64,
    denied: bool,
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
enum Interrupted {
    #[error("the task's deadline passed")]
    Deadline,
    #[error("the task was aborted")]
    Aborted,
}

/// Where a run failed: before the call (instantiation) or in it.
enum Failure {
    Start(String),
    Call(wasmtime::Error),
}

/// Runs `call` in a fresh instance under `env`. Never panics on guest behaviour.
pub(crate) fn run_task(call: &Call, env: &TaskEnv, control: &Arc<TaskControl>) -> TaskRun {
    let started = Instant::now();
    let component = call.component();
    let runtime = component.runtime().inner();
    let budget = call.budget().or(&env.budget);
    let stdout = LineSink::new(env.output, &env.worker_name, HostStream::Stdout);
    let stderr = LineSink::new(env.output, &env.worker_name, HostStream::Stderr);
    let failed_start = |message: String| TaskRun {
        outcome: Err(TaskError::Start { message }),
        elapsed: started.elapsed(),
        fuel_consumed: None,
        peak_memory: 0,
        stdout: None,
        stderr: None,
    };
    if budget.fuel.is_some() && !runtime.config.fuel {
        return failed_start(
            "a fuel budget needs a runtime with fuel metering (RuntimeConfig { fuel: true })"
                .into(),
        );
    }
    let wasi = match wasi_context(&env.capabilities, call.argv(), &stdout, &stderr) {
        Ok(wasi) => wasi,
        Err(message) => return failed_start(message),
    };
    let mut store = Store::new(
        &runtime.engine,
        TaskState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max: budget.max_memory.unwrap_or(DEFAULT_MAX_MEMORY),
                peak: 0,
                denied: false,
            },
        },
    );
    store.limiter(|state| &mut state.limiter);
    let fuel_budget = budget.fuel.unwrap_or(u64::MAX);
    if runtime.config.fuel {
        if let Err(e) = store.set_fuel(fuel_budget) {
            return failed_start(format!("{e:#}"));
        }
    }
    let deadline = budget.timeout.map(|t| started + t);
    let _ticking = runtime.ticker.as_ref().map(|t| t.running());
    if runtime.config.interruptible {
        let control = control.clone();
        store.epoch_deadline_callback(move |_| {
            if control.is_aborted() {
                Err(Interrupted::Aborted.into())
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Err(Interrupted::Deadline.into())
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        store.set_epoch_deadline(1);
    }

    let function = call.function();
    let result = match deadline {
        None => call_sync(&mut store, component.instance_pre(), function, call.args()),
        Some(deadline) => match component.instance_pre_async() {
            Ok(pre) => call_async(&mut store, pre, function, call.args(), deadline, control),
            Err(message) => Err(Failure::Start(message)),
        },
    };
    stdout.finish();
    stderr.finish();

    let fuel_consumed = runtime
        .config
        .fuel
        .then(|| store.get_fuel().ok().map(|left| fuel_budget - left))
        .flatten();
    let limiter = &store.data().limiter;
    let outcome = match result {
        Ok(value) => command_outcome(function, value),
        Err(Failure::Start(message)) => Err(TaskError::Start { message }),
        Err(Failure::Call(err)) => classify(&err, &budget, limiter, &stderr.tail()),
    };
    TaskRun {
        outcome: outcome.and_then(unwrap_result),
        elapsed: started.elapsed(),
        fuel_consumed,
        peak_memory: limiter.peak,
        stdout: stdout.captured(),
        stderr: stderr.captured(),
    }
}

fn call_sync(
    store: &mut Store<TaskState>,
    pre: &InstancePre<TaskState>,
    function: &ExportedFunction,
    args: &[Val],
) -> Result<Option<Val>, Failure> {
    let instance = pre
        .instantiate(&mut *store)
        .map_err(|e| Failure::Start(format!("{e:#}")))?;
    let func = export(&mut *store, &instance, function)?;
    let mut results = vec![Val::Bool(false); function.ty.results().len()];
    func.call(&mut *store, args, &mut results)
        .map_err(Failure::Call)?;
    Ok(results.pop())
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

fn call_async(
    store: &mut Store<TaskState>,
    pre: &InstancePre<TaskState>,
    function: &ExportedFunction,
    args: &[Val],
    deadline: Instant,
    control: &TaskControl,
) -> Result<Option<Val>, Failure> {
    ASYNC_RUNTIME.with(|rt| {
        let rt = rt.as_ref().map_err(|e| Failure::Start(e.clone()))?;
        rt.block_on(async {
            let work = async {
                let instance = pre
                    .instantiate_async(&mut *store)
                    .await
                    .map_err(|e| Failure::Start(format!("{e:#}")))?;
                let func = export(&mut *store, &instance, function)?;
                let mut results = vec![Val::Bool(false); function.ty.results().len()];
                func.call_async(&mut *store, args, &mut results)
                    .await
                    .map_err(Failure::Call)?;
                Ok(results.pop())
            };
            tokio::select! {
                outcome = work => outcome,
                () = tokio::time::sleep_until(deadline.into()) => {
                    Err(Failure::Call(Interrupted::Deadline.into()))
                }
                () = control.wake.notified() => Err(Failure::Call(Interrupted::Aborted.into())),
            }
        })
    })
}

/// Builds the task's WASI context: its output sinks, and nothing of the host but what
/// `caps` grants. Sockets stay closed (wasmtime-wasi denies every address by default).
fn wasi_context(
    caps: &Capabilities,
    argv: Option<&[String]>,
    stdout: &LineSink,
    stderr: &LineSink,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_ip_name_lookup(false)
        .envs(&caps.env)
        .args(argv.unwrap_or(&caps.args));
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

/// A command component's `wasi:cli/run#run` gives its exit code as the value: `ok` is 0,
/// `err` is exit code 1 and a failure (an explicit `exit(n)` is handled in [`classify`]).
fn command_outcome(
    function: &ExportedFunction,
    value: Option<Val>,
) -> Result<Option<Val>, TaskError> {
    let is_command = function.func_name() == "run"
        && function
            .interface()
            .is_some_and(|i| i.starts_with("wasi:cli/run@"));
    match value {
        Some(Val::Result(Ok(_))) if is_command => Ok(Some(Val::S32(0))),
        Some(Val::Result(Err(_))) if is_command => Err(TaskError::Failed {
            message: "exited with code 1".into(),
            value: "1".into(),
        }),
        other => Ok(other),
    }
}

/// The one place where wasmtime's errors become task errors.
fn classify(
    err: &wasmtime::Error,
    budget: &Budget,
    limiter: &MemoryLimiter,
    stderr_tail: &str,
) -> Result<Option<Val>, TaskError> {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return if exit.0 == 0 {
            Ok(Some(Val::S32(0)))
        } else {
            Err(TaskError::Failed {
                message: format!("exited with code {}", exit.0),
                value: exit.0.to_string(),
            })
        };
    }
    if let Some(interrupted) = err.downcast_ref::<Interrupted>() {
        return Err(match interrupted {
            Interrupted::Deadline => TaskError::Timeout {
                limit: budget.timeout.unwrap_or_default(),
            },
            Interrupted::Aborted => TaskError::Cancelled,
        });
    }
    if limiter.denied {
        return Err(TaskError::MemoryLimit { limit: limiter.max });
    }
    let backtrace = err
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| bt.to_string())
        .unwrap_or_default();
    Err(match err.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => TaskError::StackOverflow { backtrace },
        Some(Trap::OutOfFuel) => TaskError::OutOfFuel {
            limit: budget.fuel.unwrap_or_default(),
        },
        Some(trap) => {
            let text = trap.to_string();
            TaskError::Trap {
                trap: text
                    .strip_prefix("wasm trap: ")
                    .unwrap_or(&text)
                    .to_string(),
                panic: panic_message(stderr_tail),
                backtrace,
            }
        }
        None => TaskError::Trap {
            trap: format!("{err:#}"),
            panic: panic_message(stderr_tail),
            backtrace,
        },
    })
}

/// A `result<T, E>` return becomes the task's value (`ok`) or a `Failed` error (`err`).
fn unwrap_result(value: Option<Val>) -> Result<TaskValue, TaskError> {
    match value {
        Some(Val::Result(Ok(payload))) => Ok(TaskValue::from(payload.map(|b| *b))),
        Some(Val::Result(Err(payload))) => Err(failed(payload.map(|b| *b))),
        other => Ok(TaskValue::from(other)),
    }
}

fn failed(payload: Option<Val>) -> TaskError {
    let value = payload.as_ref().map(wave_text).unwrap_or_default();
    let message = match &payload {
        Some(Val::String(s)) => s.clone(),
        None => "the task returned err".to_string(),
        Some(_) => value.clone(),
    };
    TaskError::Failed { message, value }
}

/// The message of a Rust guest's panic, from what it printed on stderr:
/// `thread '...' panicked at src/lib.rs:1:2:\n<message>\nnote: ...`.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let body = stderr[start..].split_once('\n')?.1;
    let message: Vec<&str> = body
        .lines()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    let message = message.join("\n").trim().to_string();
    (!message.is_empty()).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_message_is_read_from_rust_panic_output() {
        let stderr = "thread '<unnamed>' panicked at src/lib.rs:20:9:\nboom here\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(panic_message(stderr).as_deref(), Some("boom here"));
        assert_eq!(panic_message("nothing"), None);
    }
}
