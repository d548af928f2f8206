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

/// What every task of an executor gets: set on either pool's builder and carried to each
/// worker (over the protocol, for the process pool).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaskSettings {
    pub(crate) output: OutputMode,
    /// The executor's budget; a call's own budget overrides it field by field.
    pub(crate) budget: Budget,
    pub(crate) capabilities: Capabilities,
    pub(crate) policy: InstancePolicy,
    /// An export called once on every new instance before its first task.
    pub(crate) initializer: Option<String>,
}

/// The builder methods that set a [`TaskSettings`], for builders with a `settings` field
/// (both pools' builders have the same ones).
macro_rules! task_settings_setters {
    () => {
        /// What happens to the stdout/stderr of tasks (default: forwarded line by line,
        /// prefixed with the worker's name).
        pub fn output(mut self, mode: $crate::OutputMode) -> Self {
            self.settings.output = mode;
            self
        }

        /// The budget of every task (a call's own budget overrides it field by field).
        /// Default: no deadline, no fuel limit, [`DEFAULT_MAX_MEMORY`](crate::DEFAULT_MAX_MEMORY).
        pub fn budget(mut self, budget: $crate::Budget) -> Self {
            self.settings.budget = budget;
            self
        }

        /// What every task may reach (default: nothing but clocks and random).
        pub fn capabilities(mut self, capabilities: $crate::Capabilities) -> Self {
            self.settings.capabilities = capabilities;
            self
        }

        /// Fresh instance per task (the default), or reuse of a worker's instance.
        pub fn instance_policy(mut self, policy: $crate::InstancePolicy) -> Self {
            self.settings.policy = policy;
            self
        }

        /// An export (taking no arguments) called once on every new instance before its
        /// first task: `concurrent.futures`' `initializer=`. If it fails, the pool breaks:
        /// the task and every queued one fail with
        /// [`TaskError::BrokenPool`](crate::TaskError::BrokenPool), and `submit` is refused.
        pub fn initializer(mut self, export: impl Into<String>) -> Self {
            self.settings.initializer = Some(export.into());
            self
        }
    };
}
pub(crate) use task_settings_setters;

/// What a worker gives every task it runs.
#[derive(Clone)]
pub(crate) struct TaskEnv {
    pub(crate) worker_name: Arc<str>,
    pub(crate) settings: TaskSettings,
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
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRun {
    pub(crate) outcome: Result<TaskValue, TaskError>,
    pub(crate) elapsed: Duration,
    pub(crate) fuel_consumed: Option<u64>,
    pub(crate) peak_memory: u64,
    pub(crate) stdout: Option<String>,
    pub(crate) stderr: Option<String>,
    /// The initializer failed: the pool must break.
    pub(crate) breaks_pool: bool,
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
    /// The current task's abort flag and deadline, read by the epoch callback.
    control: Arc<TaskControl>,
    deadline: Option<Instant>,
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

/// Which instance a task runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InstancePolicy {
    /// A fresh instance for every task: nothing a task leaves in its memory is seen by
    /// the next. The default.
    #[default]
    Fresh,
    /// A worker keeps its instance for up to `max_tasks` tasks of the same component,
    /// trading isolation between tasks for speed (no instantiation per task). An instance
    /// that trapped or hit a limit is always discarded. Tasks with a deadline or their own
    /// arguments still get a fresh instance.
    Reuse {
        /// How many tasks one instance serves at most.
        max_tasks: usize,
    },
}

/// A worker's kept instance (for [`InstancePolicy::Reuse`]).
pub(crate) struct KeptInstance {
    component: crate::TaskComponent,
    store: Store<TaskState>,
    instance: Instance,
    uses: usize,
    stdout: LineSink,
    stderr: LineSink,
}

/// Where a worker keeps its instance between tasks; empty under [`InstancePolicy::Fresh`].
#[derive(Default)]
pub(crate) struct InstanceSlot {
    kept: Option<KeptInstance>,
}

/// Runs `call` under `env`, in a fresh instance or the worker's kept one. Never panics on
/// guest behaviour.
pub(crate) fn run_task(
    call: &Call,
    env: &TaskEnv,
    control: &Arc<TaskControl>,
    slot: &mut InstanceSlot,
) -> TaskRun {
    let started = Instant::now();
    let component = call.component();
    let runtime = component.runtime().inner();
    let budget = call.budget().or(&env.settings.budget);
    let failed_start = |message: String| TaskRun {
        outcome: Err(TaskError::Start { message }),
        elapsed: started.elapsed(),
        fuel_consumed: None,
        peak_memory: 0,
        stdout: None,
        stderr: None,
        breaks_pool: false,
    };
    if budget.fuel.is_some() && !runtime.config.fuel {
        return failed_start(
            "a fuel budget needs a runtime with fuel metering (RuntimeConfig { fuel: true })"
                .into(),
        );
    }
    let deadline = budget.timeout.map(|t| started + t);
    let _ticking = runtime.ticker.as_ref().map(|t| t.running());
    let max_tasks = match env.settings.policy {
        InstancePolicy::Reuse { max_tasks } if deadline.is_none() && call.argv().is_none() => {
            max_tasks.max(1)
        }
        _ => 0,
    };

    // Take the kept instance if it fits, or make a new one (kept or not).
    let kept = slot
        .kept
        .take()
        .filter(|k| k.component.same_component(component) && k.uses < max_tasks);
    let mut live = match kept {
        Some(kept) => kept,
        None => match new_instance(call, env, &budget, deadline, control) {
            Ok(live) => live,
            Err((error, breaks_pool)) => {
                let mut run = failed_start(String::new());
                run.outcome = Err(error);
                run.breaks_pool = breaks_pool;
                return run;
            }
        },
    };
    let fuel_budget = budget.fuel.unwrap_or(u64::MAX);
    {
        let state = live.store.data_mut();
        state.control = control.clone();
        state.deadline = deadline;
        state.limiter.max = budget.max_memory.unwrap_or(DEFAULT_MAX_MEMORY);
    }
    if runtime.config.fuel
        && let Err(e) = live.store.set_fuel(fuel_budget)
    {
        return failed_start(format!("{e:#}"));
    }

    let function = call.function();
    let result = match deadline {
        None => call_sync(&mut live.store, &live.instance, function, call.args()),
        Some(deadline) => call_async(
            &mut live.store,
            &live.instance,
            function,
            call.args(),
            deadline,
            control,
        ),
    };
    live.stdout.finish();
    live.stderr.finish();

    let fuel_consumed = runtime
        .config
        .fuel
        .then(|| live.store.get_fuel().ok().map(|left| fuel_budget - left))
        .flatten();
    let limiter = &live.store.data().limiter;
    let peak_memory = limiter.peak;
    let outcome = match result {
        Ok(value) => command_outcome(function, value),
        Err(Failure::Start(message)) => Err(TaskError::Start { message }),
        Err(Failure::Call(err)) => classify(&err, &budget, limiter, &live.stderr.tail()),
    };
    let run = TaskRun {
        outcome: outcome.and_then(unwrap_result),
        elapsed: started.elapsed(),
        fuel_consumed,
        peak_memory,
        stdout: live.stdout.take_captured(),
        stderr: live.stderr.take_captured(),
        breaks_pool: false,
    };
    // A trap, an interrupt or a limit leaves the store unusable: only a clean finish keeps it.
    let clean = matches!(&run.outcome, Ok(_) | Err(TaskError::Failed { .. }));
    live.uses += 1;
    if clean && live.uses < max_tasks {
        slot.kept = Some(live);
    }
    run
}

/// A new store and instance for `call`, with the initializer (if any) run. The error says
/// why, and whether it breaks the pool (a failing initializer does, as in
/// `concurrent.futures`).
fn new_instance(
    call: &Call,
    env: &TaskEnv,
    budget: &Budget,
    deadline: Option<Instant>,
    control: &Arc<TaskControl>,
) -> Result<KeptInstance, (TaskError, bool)> {
    let start_error = |message: String| (TaskError::Start { message }, false);
    let component = call.component();
    let runtime = component.runtime().inner();
    let stdout = LineSink::new(env.settings.output, &env.worker_name, HostStream::Stdout);
    let stderr = LineSink::new(env.settings.output, &env.worker_name, HostStream::Stderr);
    let wasi = wasi_context(&env.settings.capabilities, call.argv(), &stdout, &stderr)
        .map_err(start_error)?;
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
            control: control.clone(),
            deadline,
        },
    );
    store.limiter(|state| &mut state.limiter);
    if runtime.config.fuel {
        store
            .set_fuel(u64::MAX)
            .map_err(|e| start_error(format!("{e:#}")))?;
    }
    if runtime.config.interruptible {
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
    let instance = if deadline.is_some() {
        let pre = component.instance_pre_async().map_err(start_error)?;
        instantiate_async(&mut store, pre, control, deadline)
    } else {
        component
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| format!("{e:#}"))
    };
    let instance = instance.map_err(|message| {
        // Say which limit stopped instantiation, if one did.
        let error = if control.is_aborted() {
            TaskError::Cancelled
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            TaskError::Timeout {
                limit: budget.timeout.unwrap_or_default(),
            }
        } else if store.data().limiter.denied {
            TaskError::MemoryLimit {
                limit: store.data().limiter.max,
            }
        } else {
            TaskError::Start { message }
        };
        (error, false)
    })?;
    let mut kept = KeptInstance {
        component: component.clone(),
        store,
        instance,
        uses: 0,
        stdout,
        stderr,
    };
    if let Some(name) = &env.settings.initializer {
        initialize(&mut kept, name, deadline, control)
            .map_err(|reason| (TaskError::BrokenPool { reason }, true))?;
    }
    Ok(kept)
}

/// Calls the initializer export `name` (no arguments) on a new instance.
fn initialize(
    kept: &mut KeptInstance,
    name: &str,
    deadline: Option<Instant>,
    control: &TaskControl,
) -> Result<(), String> {
    let function = kept
        .component
        .function(name)
        .map_err(|e| format!("initializer: {e}"))?
        .clone();
    if function.params().len() != 0 {
        return Err(format!(
            "the initializer `{name}` must take no arguments; it is {}",
            function.signature()
        ));
    }
    let result = match deadline {
        None => call_sync(&mut kept.store, &kept.instance, &function, &[]),
        Some(d) => call_async(&mut kept.store, &kept.instance, &function, &[], d, control),
    };
    let outcome = match result {
        Ok(value) => unwrap_result(value).map(drop),
        Err(Failure::Start(m)) => Err(TaskError::Start { message: m }),
        Err(Failure::Call(err)) => {
            let limiter = &kept.store.data().limiter;
            classify(&err, &Budget::default(), limiter, &kept.stderr.tail()).map(drop)
        }
    };
    kept.stdout.finish();
    kept.stderr.finish();
    outcome.map_err(|e| format!("the initializer `{name}` failed: {e}"))
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
                () = control.wake.notified() => Err(Failure::Call(Interrupted::Aborted.into())),
                outcome = work => outcome,
            }
        })
    })
}

fn instantiate_async(
    store: &mut Store<TaskState>,
    pre: &InstancePre<TaskState>,
    control: &TaskControl,
    deadline: Option<Instant>,
) -> Result<Instance, String> {
    let work = async {
        pre.instantiate_async(&mut *store)
            .await
            .map_err(|e| Failure::Start(format!("{e:#}")))
    };
    let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    until_deadline(deadline, control, work).map_err(|f| match f {
        Failure::Start(m) => m,
        Failure::Call(e) => format!("{e:#}"),
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

/// Builds the task's WASI context: its output sinks, and nothing of the host but what
/// `caps` grants. Without the network grant every socket address is refused
/// (wasmtime-wasi's default check) and name lookup is off.
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
