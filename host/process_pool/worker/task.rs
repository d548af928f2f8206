//! Running one TASK: a call, or a chunk of calls (a process pool's `map_chunked`) run one
//! after another in the worker's instance and answered as one task, whose value holds every
//! call's outcome.

use std::sync::Arc;

use wasmtime::component::Val;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::TaskError;
use crate::instance::InstanceSlot;
use crate::run::{TaskRun, run_guarded};
use crate::sandbox::Budget;
use crate::settings::TaskEnv;
use crate::store::TaskControl;
use crate::value::TaskValue;

use super::super::messages::RunTask;
use super::{IdMap, failed_run};

/// Runs `task` under `control`, or cancels it if it was aborted before it started.
pub(super) fn run_one(
    task: RunTask<'static>,
    control: &Arc<TaskControl>,
    components: &IdMap<Result<TaskComponent, String>>,
    env: &TaskEnv,
    instances: &mut InstanceSlot,
) -> TaskRun {
    if control.is_aborted() {
        return failed_run(TaskError::Cancelled);
    }
    let RunTask {
        component,
        function,
        budget,
        argv,
        args,
        rest,
        ..
    } = task;
    let argv = argv.as_deref();
    let mut run_call = |args: Vec<Val>| {
        if control.is_aborted() {
            return failed_run(TaskError::Cancelled);
        }
        match make_call(components, component, function, &budget, argv, args) {
            Ok(call) => run_guarded(&call, env, control, instances),
            Err(message) => failed_run(TaskError::ComponentUnavailable { message }),
        }
    };
    let first = run_call(args.into_owned());
    if rest.is_empty() {
        return first;
    }
    // A chunk: what its run measured adds up over its calls (its outcome is set last).
    let mut chunk = TaskRun::failed(TaskError::Cancelled, std::time::Duration::ZERO);
    let mut outcomes = Vec::with_capacity(rest.len() + 1);
    for run in
        std::iter::once(first).chain(rest.into_iter().map(|args| run_call(args.into_owned())))
    {
        // A failing initializer breaks the pool: the chunk ends with it.
        if run.breaks_pool().is_some() {
            return run;
        }
        outcomes.push(chunk.absorb(run));
    }
    chunk.outcome = Ok(TaskValue::chunk(outcomes));
    chunk
}

/// Builds the checked call of function `function` of component `component` with `args`: the
/// function by its index, resolved once (its arguments are checked again here). Any error
/// becomes `ComponentUnavailable`.
fn make_call(
    components: &IdMap<Result<TaskComponent, String>>,
    component: u64,
    function: usize,
    budget: &Budget,
    argv: Option<&[String]>,
    args: Vec<Val>,
) -> Result<Call, String> {
    let found = match components.get(&component) {
        Some(Ok(found)) => found,
        Some(Err(message)) => return Err(message.clone()),
        None => {
            return Err(format!(
                "component {component} was never sent to this worker"
            ));
        }
    };
    let call = found
        .call_at(function, args)
        .map_err(|e| e.to_string())?
        .with_budget(budget.clone());
    Ok(match argv {
        Some(argv) => call.with_args(argv.iter().cloned()),
        None => call,
    })
}
