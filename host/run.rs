//! Running one task: the instance it runs in (`instance.rs`), the call on the sync or async
//! path (`invoke.rs`), and how it ended (`outcome.rs`), measured into a [`TaskRun`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::call::Call;
use crate::error::{TaskError, panic_text};
use crate::instance::{new_instance, reuse_limit};
use crate::invoke::{self, Failure};
use crate::outcome::{classify, command_outcome, unwrap_result};
use crate::report::{RunReport, TaskReport};
use crate::store::DEFAULT_MAX_MEMORY;
use crate::value::TaskValue;

use crate::instance::InstanceSlot;
use crate::settings::TaskEnv;
use crate::store::TaskControl;

/// How a task went.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskRun {
    pub(crate) outcome: Result<TaskValue, TaskError>,
    pub(crate) elapsed: Duration,
    pub(crate) fuel_consumed: Option<u64>,
    pub(crate) peak_memory: u64,
    pub(crate) stdout: Option<String>,
    pub(crate) stderr: Option<String>,
    /// The captured stdout was cut at the capture limit.
    pub(crate) stdout_truncated: bool,
    /// The captured stderr was cut at the capture limit.
    pub(crate) stderr_truncated: bool,
}

impl TaskRun {
    /// A run that failed with `error` before the call, after `elapsed`: nothing measured,
    /// nothing captured.
    pub(crate) fn failed(error: TaskError, elapsed: Duration) -> TaskRun {
        TaskRun {
            outcome: Err(error),
            elapsed,
            fuel_consumed: None,
            peak_memory: 0,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
        }
    }

    /// Adds `run` (a chunk's call) to this run, a chunk's: its elapsed time and fuel add up,
    /// its peak memory counts if higher, its captured output follows what was captured
    /// before. Returns `run`'s outcome.
    pub(crate) fn absorb(&mut self, run: TaskRun) -> Result<TaskValue, TaskError> {
        self.elapsed += run.elapsed;
        if let Some(fuel) = run.fuel_consumed {
            self.fuel_consumed = Some(self.fuel_consumed.unwrap_or(0).saturating_add(fuel));
        }
        self.peak_memory = self.peak_memory.max(run.peak_memory);
        for (kept, more) in [
            (&mut self.stdout, run.stdout),
            (&mut self.stderr, run.stderr),
        ] {
            if let Some(more) = more {
                kept.get_or_insert_with(String::new).push_str(&more);
            }
        }
        self.stdout_truncated |= run.stdout_truncated;
        self.stderr_truncated |= run.stderr_truncated;
        run.outcome
    }

    /// Whether this run breaks its pool: only a failing initializer ends a run with
    /// [`TaskError::BrokenPool`] (a host panic is [`TaskError::Panic`]), and then the pool
    /// breaks, as in `concurrent.futures`.
    pub(crate) fn breaks_pool(&self) -> Option<&str> {
        match &self.outcome {
            Err(TaskError::BrokenPool { reason }) => Some(reason),
            _ => None,
        }
    }

    /// The outcome, and the report of this run by `worker` (process `pid`, on `host` for a
    /// cluster's task); the captured output moves into the report.
    pub(crate) fn into_parts(
        self,
        worker: &Arc<str>,
        pid: u32,
        host: Option<String>,
    ) -> (Result<TaskValue, TaskError>, RunReport) {
        let report = TaskReport {
            worker: String::new(),
            host,
            pid,
            elapsed: self.elapsed,
            fuel_consumed: self.fuel_consumed,
            peak_memory: self.peak_memory,
            stdout: self.stdout,
            stderr: self.stderr,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
        };
        (self.outcome, RunReport::with_worker(worker.clone(), report))
    }
}

/// [`run_task`], with a panic of the host code caught: it becomes that task's
/// [`TaskError::Panic`], and the worker's kept instance (which may be mid-call) is dropped.
/// Both pools run every task through this, so a host bug fails one task and the worker goes on.
pub(crate) fn run_guarded(
    call: &Call,
    env: &TaskEnv,
    control: &Arc<TaskControl>,
    slot: &mut InstanceSlot,
) -> TaskRun {
    // One clock read per task: the run's elapsed time and a panic's both count from here.
    let started = Instant::now();
    guarded(&env.worker_name, started, slot, |slot| {
        run_task(call, env, control, started, slot)
    })
}

/// Runs `run` with a panic caught and turned into [`TaskError::Panic`] of `worker` (its
/// elapsed time counted from `started`); after a panic `slot` is emptied.
fn guarded(
    worker: &str,
    started: Instant,
    slot: &mut InstanceSlot,
    run: impl FnOnce(&mut InstanceSlot) -> TaskRun,
) -> TaskRun {
    match catch_unwind(AssertUnwindSafe(|| run(&mut *slot))) {
        Ok(run) => run,
        Err(payload) => {
            // The kept instance may be mid-call: never reuse it.
            *slot = InstanceSlot::default();
            let error = TaskError::Panic {
                worker: worker.to_string(),
                message: panic_text(&*payload).to_string(),
            };
            TaskRun::failed(error, started.elapsed())
        }
    }
}

/// Runs `call` under `env`, in a fresh instance or the worker's kept one, timed from
/// `started`. Never panics on guest behaviour.
fn run_task(
    call: &Call,
    env: &TaskEnv,
    control: &Arc<TaskControl>,
    started: Instant,
    slot: &mut InstanceSlot,
) -> TaskRun {
    let component = call.component();
    let runtime = component.runtime().inner();
    let budget = call.budget().or(&env.settings.budget);
    if budget.fuel.is_some() && !runtime.config.fuel {
        return TaskRun::failed(TaskError::FuelNotEnabled, started.elapsed());
    }
    // A timeout past what an `Instant` can hold (centuries) is no deadline at all.
    let deadline = budget.timeout.and_then(|t| started.checked_add(t));
    // Only a deadline needs ticks from the start; an abort asks for them (`ticker.rs`).
    let _ticking = runtime
        .ticker
        .as_ref()
        .map(|t| t.running(deadline.is_some()));
    let max_tasks = reuse_limit(env.settings.policy, deadline, call);

    let fuel_budget = budget.fuel.unwrap_or(u64::MAX);
    let max_memory = budget.max_memory.unwrap_or(DEFAULT_MAX_MEMORY);
    // Take the kept instance if it fits, or the spare if it does, or make a new one.
    let ready = slot
        .take(component, max_tasks)
        .or_else(|| slot.take_spare(call, max_memory));
    let mut live = match ready {
        Some(live) => live,
        None => {
            slot.drop_spent();
            match new_instance(component, call.argv(), env, &budget, deadline, control) {
                Ok(live) => live,
                Err(error) => return TaskRun::failed(error, started.elapsed()),
            }
        }
    };
    live.store.data_mut().arm(control, deadline, max_memory);
    if runtime.config.fuel
        && let Err(e) = live.store.set_fuel(fuel_budget)
    {
        let message = format!("{e:#}");
        return TaskRun::failed(TaskError::Start { message }, started.elapsed());
    }

    let function = call.function();
    let result = invoke::call(
        &mut live.store,
        &live.instance,
        function,
        call.args(),
        deadline,
        control,
    );
    live.stdout.finish();
    live.stderr.finish();

    let fuel_consumed = runtime
        .config
        .fuel
        .then(|| live.store.get_fuel().ok().map(|left| fuel_budget - left))
        .flatten();
    let limiter = live.store.data().limiter();
    let peak_memory = limiter.peak();
    let outcome = match result {
        Ok(value) => command_outcome(function, value),
        Err(Failure::Start(message)) => Err(TaskError::Start { message }),
        Err(Failure::Call(err)) => classify(&err, &budget, limiter, &live.stderr.tail()),
    };
    let (stdout, stdout_truncated) = live.stdout.take_captured().unzip();
    let (stderr, stderr_truncated) = live.stderr.take_captured().unzip();
    let run = TaskRun {
        outcome: outcome.and_then(unwrap_result),
        elapsed: started.elapsed(),
        fuel_consumed,
        peak_memory,
        stdout,
        stderr,
        stdout_truncated: stdout_truncated.unwrap_or(false),
        stderr_truncated: stderr_truncated.unwrap_or(false),
    };
    // A trap, an interrupt or a limit leaves the store unusable: only a clean finish keeps it.
    let clean = matches!(&run.outcome, Ok(_) | Err(TaskError::Failed { .. }));
    slot.keep(live, clean, max_tasks);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_panic_fails_only_that_task_as_panic() {
        let mut slot = InstanceSlot::default();
        let run = guarded("worker-3", Instant::now(), &mut slot, |_| {
            panic!("index out of bounds")
        });
        assert_eq!(
            run.outcome,
            Err(TaskError::Panic {
                worker: "worker-3".into(),
                message: "index out of bounds".into(),
            })
        );
        let err = run.outcome.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(err.kind().as_str(), "panic");
        // The same worker runs the next task normally.
        let next = guarded("worker-3", Instant::now(), &mut slot, |_| {
            TaskRun::failed(TaskError::Cancelled, Duration::ZERO)
        });
        assert_eq!(next.outcome, Err(TaskError::Cancelled));
    }

    #[test]
    fn a_chunk_adds_up_what_its_calls_measured() {
        let mut chunk = TaskRun::failed(TaskError::Cancelled, Duration::ZERO);
        let call = |ms, fuel, peak, stdout: Option<&str>, cut| TaskRun {
            outcome: Ok(TaskValue::unit()),
            elapsed: Duration::from_millis(ms),
            fuel_consumed: fuel,
            peak_memory: peak,
            stdout: stdout.map(str::to_string),
            stderr: None,
            stdout_truncated: cut,
            stderr_truncated: false,
        };
        let first = call(3, Some(10), 64, Some("a\n"), false);
        assert_eq!(chunk.absorb(first), Ok(TaskValue::unit()));
        let failed = TaskRun {
            outcome: Err(TaskError::Cancelled),
            ..call(4, None, 128, None, false)
        };
        assert_eq!(chunk.absorb(failed), Err(TaskError::Cancelled));
        assert_eq!(
            chunk.absorb(call(5, Some(7), 32, Some("b\n"), true)),
            Ok(TaskValue::unit())
        );
        assert_eq!(chunk.elapsed, Duration::from_millis(12));
        assert_eq!(chunk.fuel_consumed, Some(17));
        assert_eq!(chunk.peak_memory, 128);
        assert_eq!(chunk.stdout.as_deref(), Some("a\nb\n"));
        assert_eq!(chunk.stderr, None);
        assert!(chunk.stdout_truncated && !chunk.stderr_truncated);
    }

    #[test]
    fn a_panic_without_text_is_an_unknown_panic() {
        let mut slot = InstanceSlot::default();
        let run = guarded("w", Instant::now(), &mut slot, |_| {
            std::panic::panic_any(7_u32)
        });
        assert!(
            matches!(&run.outcome, Err(TaskError::Panic { message, .. }) if message == "unknown panic"),
            "{:?}",
            run.outcome
        );
    }
}
