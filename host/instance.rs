//! Which instance a task runs in: a new one (store, WASI context, instantiation, the
//! initializer), or the one its worker kept from an earlier task under
//! [`InstancePolicy::Reuse`].

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::Instance;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::TaskError;
use crate::invoke::{self, Failure};
use crate::outcome::{classify, classify_start, unwrap_result};
use crate::output::{HostStream, LineSink};
use crate::sandbox::Budget;
use crate::settings::{InstancePolicy, TaskEnv};
use crate::store::{DEFAULT_MAX_MEMORY, TaskControl, TaskState, new_store, wasi_context};

/// A live instance with its store and output sinks; a worker keeps it between tasks under
/// [`InstancePolicy::Reuse`].
pub(crate) struct KeptInstance {
    component: TaskComponent,
    pub(crate) store: Store<TaskState>,
    pub(crate) instance: Instance,
    /// How many tasks it has run.
    uses: usize,
    pub(crate) stdout: LineSink,
    pub(crate) stderr: LineSink,
}

/// Where a worker keeps its instance between tasks; empty under [`InstancePolicy::Fresh`].
#[derive(Default)]
pub(crate) struct InstanceSlot {
    kept: Option<KeptInstance>,
}

impl InstanceSlot {
    /// The kept instance, if it is of `component` and has run fewer than `max_tasks` tasks.
    /// The slot is empty afterwards either way.
    pub(crate) fn take(
        &mut self,
        component: &TaskComponent,
        max_tasks: usize,
    ) -> Option<KeptInstance> {
        self.kept
            .take()
            .filter(|k| k.component.same_component(component) && k.uses < max_tasks)
    }

    /// Counts the task `live` just ran, and keeps it for the next one if the task finished
    /// `clean` (a trap, an interrupt or a limit leaves the store unusable) and it has served
    /// fewer than `max_tasks` tasks.
    pub(crate) fn keep(&mut self, mut live: KeptInstance, clean: bool, max_tasks: usize) {
        live.uses += 1;
        if clean && live.uses < max_tasks {
            self.kept = Some(live);
        }
    }
}

/// How many tasks an instance made for `call` may serve: 0 (not kept) unless the policy is
/// [`InstancePolicy::Reuse`] and the call has neither a deadline nor its own arguments.
pub(crate) fn reuse_limit(policy: InstancePolicy, deadline: Option<Instant>, call: &Call) -> usize {
    match policy {
        InstancePolicy::Reuse { max_tasks } if deadline.is_none() && call.argv().is_none() => {
            max_tasks.max(1)
        }
        _ => 0,
    }
}

/// A new store and instance for `call`, with the initializer (if any) run. A failing
/// initializer is [`TaskError::BrokenPool`]: it breaks the pool, as in `concurrent.futures`.
pub(crate) fn new_instance(
    call: &Call,
    env: &TaskEnv,
    budget: &Budget,
    deadline: Option<Instant>,
    control: &Arc<TaskControl>,
) -> Result<KeptInstance, TaskError> {
    let start_error = |message: String| TaskError::Start { message };
    let component = call.component();
    let runtime = component.runtime().inner();
    let sink = |stream| {
        LineSink::new(
            env.settings.output,
            &env.worker_name,
            stream,
            &env.destination,
        )
    };
    let stdout = sink(HostStream::Stdout);
    let stderr = sink(HostStream::Stderr);
    let wasi = wasi_context(&env.settings.capabilities, call.argv(), &stdout, &stderr)
        .map_err(start_error)?;
    let mut store = new_store(
        &runtime.engine,
        wasi,
        budget.max_memory.unwrap_or(DEFAULT_MAX_MEMORY),
        control,
        deadline,
        runtime.config.fuel,
        runtime.config.interruptible,
    )
    .map_err(start_error)?;
    let pre = component.instance_pre_async().map_err(start_error)?;
    let instance = invoke::instantiate(&mut store, pre, deadline, control).map_err(|error| {
        let limiter = store.data().limiter();
        classify_start(&error, budget, deadline, control, limiter)
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
            .map_err(|reason| TaskError::BrokenPool { reason })?;
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
    let result = invoke::call(
        &mut kept.store,
        &kept.instance,
        &function,
        &[],
        deadline,
        control,
    );
    let outcome = match result {
        Ok(value) => unwrap_result(value).map(drop),
        Err(Failure::Start(m)) => Err(TaskError::Start { message: m }),
        Err(Failure::Call(err)) => {
            let limiter = kept.store.data().limiter();
            classify(&err, &Budget::default(), limiter, &kept.stderr.tail()).map(drop)
        }
    };
    kept.stdout.finish();
    kept.stderr.finish();
    outcome.map_err(|e| format!("the initializer `{name}` failed: {e}"))
}
