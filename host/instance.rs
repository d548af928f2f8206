//! Which instance a task runs in: a new one (store, WASI context, instantiation, the
//! initializer), the one its worker kept from an earlier task under
//! [`InstancePolicy::Reuse`], or, under [`InstancePolicy::Fresh`], a spare: a new instance
//! the worker made while it had nothing else to do.
//!
//! A spare takes instantiation off an idle pool's round trip: made once a worker has had
//! nothing to do for a spin (`spin::recv_or_idle`, 50 µs; never while tasks are queued,
//! never once the queue is closed), it is what a fresh instance made for the next task
//! would be. Invariant: a spare has never run a task, and is taken only by a task
//! for which a new instance would be the same: same component, no arguments of its own
//! (`argv`), a memory cap it does not exceed, and no initializer in the pool. Instantiation
//! spends no task budget either way: fuel is set and the store armed after it.
//!
//! A start-up outside any task must not hold a worker: a spare's instantiation has its own
//! deadline ([`SPARE_TIME_LIMIT`]), needs a runtime that can interrupt, and a component whose
//! spare failed once (a trap, a limit, that deadline) gets no more spares from that worker:
//! its tasks instantiate for themselves, under their own budgets, as without spares.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The longest a spare's instantiation may take. Far above a normal one (~25 µs for the
/// fixtures, ~400 µs for an 18 MB CPython component); a start-up that runs longer is stopped
/// and its component gets no spares.
pub(crate) const SPARE_TIME_LIMIT: Duration = Duration::from_millis(250);

/// Where a worker keeps its instance between tasks ([`InstancePolicy::Reuse`]), or its
/// spare ([`InstancePolicy::Fresh`]).
#[derive(Default)]
pub(crate) struct InstanceSlot {
    kept: Option<KeptInstance>,
    spare: Option<KeptInstance>,
    /// The instance of the last task run, when not kept: torn down (its memory reset, ~20k
    /// instructions, tens of µs on a cold core) only when the thread next needs an instance
    /// or has nothing to do, so never between a task's end and its caller learning of it.
    /// Invariant: a slot holds no spent instance while it makes one, so a worker's pool
    /// slots in use are not raised by it.
    spent: Option<KeptInstance>,
    /// The last component whose spare could not be made: it gets no more.
    no_spare_for: Option<TaskComponent>,
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

    /// The spare, if `call` may run in it (see the module's invariant) with a memory cap of
    /// `max_memory`. The slot has no spare afterwards either way.
    pub(crate) fn take_spare(&mut self, call: &Call, max_memory: u64) -> Option<KeptInstance> {
        self.spare.take().filter(|spare| {
            spare.component.same_component(call.component())
                && call.argv().is_none()
                && spare.store.data().limiter().peak() <= max_memory
        })
    }

    /// Takes over the instance `other`'s last task used, to tear it down later, unless this
    /// slot holds one already. The rest of `other` is dropped.
    pub(crate) fn adopt_spent(&mut self, other: InstanceSlot) {
        if self.spent.is_none() {
            self.spent = other.spent;
        }
    }

    /// Makes a spare instance of `component`, unless the slot has one of it already, the
    /// policy is not [`InstancePolicy::Fresh`], the pool has an initializer, or its tasks
    /// may reach beyond their instance (a writable directory, the network): a start-up that
    /// could leave a mark is never run ahead, nor for a spare that may go unused. A worker
    /// calls this when it has no task to run. An instance that cannot be made is no spare:
    /// the next task makes its own and meets the error.
    pub(crate) fn prepare_spare(&mut self, component: &TaskComponent, env: &TaskEnv) {
        self.drop_spent();
        let is_of = |c: &TaskComponent| c.same_component(component);
        let has_one = self
            .spare
            .as_ref()
            .is_some_and(|spare| is_of(&spare.component));
        let failed_before = self.no_spare_for.as_ref().is_some_and(is_of);
        let caps = &env.settings.capabilities;
        let reaches_out = caps.network || caps.dirs.iter().any(|d| d.writable);
        let runtime = component.runtime().inner();
        if has_one
            || failed_before
            || reaches_out
            || !runtime.config.interruptible
            || env.settings.policy != InstancePolicy::Fresh
            || env.settings.initializer.is_some()
        {
            return;
        }
        self.spare = None;
        let control = Arc::new(TaskControl::default());
        let _ticking = runtime.ticker.as_ref().map(|t| t.running(true));
        let deadline = Instant::now().checked_add(SPARE_TIME_LIMIT);
        let budget = &env.settings.budget;
        match new_instance(component, None, env, budget, deadline, &control) {
            Ok(spare) => self.spare = Some(spare),
            Err(_) => self.no_spare_for = Some(component.clone()),
        }
    }

    /// Counts the task `live` just ran, and keeps it for the next one if the task finished
    /// `clean` (a trap, an interrupt or a limit leaves the store unusable) and it has served
    /// fewer than `max_tasks` tasks.
    pub(crate) fn keep(&mut self, mut live: KeptInstance, clean: bool, max_tasks: usize) {
        live.uses += 1;
        if clean && live.uses < max_tasks {
            self.kept = Some(live);
        } else {
            self.spent = Some(live);
        }
    }

    /// Tears down the instance of the last task run, if it was not kept.
    pub(crate) fn drop_spent(&mut self) {
        self.spent = None;
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

/// A new store and instance of `component` (its program arguments `argv`, if any), with the
/// initializer (if any) run. A failing initializer is [`TaskError::BrokenPool`]: it breaks
/// the pool, as in `concurrent.futures`.
pub(crate) fn new_instance(
    component: &TaskComponent,
    argv: Option<&[String]>,
    env: &TaskEnv,
    budget: &Budget,
    deadline: Option<Instant>,
    control: &Arc<TaskControl>,
) -> Result<KeptInstance, TaskError> {
    let start_error = |message: String| TaskError::Start { message };
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
    let wasi =
        wasi_context(&env.settings.capabilities, argv, &stdout, &stderr).map_err(start_error)?;
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

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::output::Destination;
    use crate::settings::TaskSettings;

    fn fixtures() -> &'static TaskComponent {
        static C: OnceLock<TaskComponent> = OnceLock::new();
        C.get_or_init(|| {
            TaskComponent::from_file(env!("WASMPOOL_FIXTURES_WASM")).expect("the fixtures load")
        })
    }

    fn env_with(settings: TaskSettings) -> TaskEnv {
        TaskEnv {
            worker_name: Arc::from("worker-1"),
            settings,
            destination: Destination::Host,
        }
    }

    #[test]
    fn a_spare_serves_one_task_that_a_new_instance_would_serve_alike() {
        let env = env_with(TaskSettings::default());
        let call = fixtures().call_wave("count()").expect("call");
        let mut slot = InstanceSlot::default();
        slot.prepare_spare(fixtures(), &env);
        assert!(slot.take_spare(&call, DEFAULT_MAX_MEMORY).is_some());
        assert!(
            slot.take_spare(&call, DEFAULT_MAX_MEMORY).is_none(),
            "used once"
        );

        // A call with its own program arguments needs a WASI context of its own.
        slot.prepare_spare(fixtures(), &env);
        let with_argv = call.clone().with_args(vec!["task".to_string()]);
        assert!(slot.take_spare(&with_argv, DEFAULT_MAX_MEMORY).is_none());
        // A cap below the memory the spare holds already: a new instance would fail.
        slot.prepare_spare(fixtures(), &env);
        assert!(slot.take_spare(&call, 1).is_none());
        // Another component (another load of the same file is another component).
        let other = TaskComponent::from_file(env!("WASMPOOL_FIXTURES_WASM")).expect("load");
        slot.prepare_spare(fixtures(), &env);
        let other_call = other.call_wave("count()").expect("call");
        assert!(slot.take_spare(&other_call, DEFAULT_MAX_MEMORY).is_none());
    }

    /// A component whose start-up never ends (its core module's start function loops) and
    /// which exports `f: func() -> u32`.
    fn endless_start_up() -> Vec<u8> {
        use wasm_encoder::{
            BlockType, CodeSection, ComponentBuilder, ComponentExportKind, ComponentValType,
            ExportKind, ExportSection, Function, FunctionSection, Module, PrimitiveValType,
            StartSection, TypeSection, ValType,
        };
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        types.ty().function([], [ValType::I32]);
        module.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0).function(1);
        module.section(&funcs);
        let mut exports = ExportSection::new();
        exports.export("f", ExportKind::Func, 1);
        module.section(&exports);
        module.section(&StartSection { function_index: 0 });
        let mut code = CodeSection::new();
        let mut endless = Function::new(Vec::new());
        endless
            .instructions()
            .loop_(BlockType::Empty)
            .br(0)
            .end()
            .end();
        code.function(&endless);
        let mut one = Function::new(Vec::new());
        one.instructions().i32_const(1).end();
        code.function(&one);
        module.section(&code);

        let mut component = ComponentBuilder::default();
        let module = component.core_module(None, &module);
        let instance = component.core_instantiate(None, module, []);
        let core_f = component.core_alias_export(None, instance, "f", ExportKind::Func);
        let (ty, encoder) = component.ty(None);
        encoder
            .function()
            .params([] as [(&str, ComponentValType); 0])
            .result(Some(ComponentValType::Primitive(PrimitiveValType::U32)));
        let f = component.lift_func(None, core_f, ty, []);
        component.export("f", ComponentExportKind::Func, f, None);
        component.finish()
    }

    #[test]
    fn a_start_up_that_never_ends_is_cut_at_the_spare_limit_and_not_retried() {
        let component = TaskComponent::from_bytes(&endless_start_up()).expect("it loads");
        let env = env_with(TaskSettings::default());
        let mut slot = InstanceSlot::default();
        let started = Instant::now();
        slot.prepare_spare(&component, &env);
        // It ran until its deadline (never earlier: the epoch callback compares with the
        // clock), and was stopped there, not left to spin: a generous bound on a loaded
        // machine, far below "forever".
        let took = started.elapsed();
        assert!(
            took >= SPARE_TIME_LIMIT,
            "{took:?}: did the start-up run at all?"
        );
        assert!(took < SPARE_TIME_LIMIT * 40, "{took:?}");
        assert!(slot.spare.is_none());
        assert!(
            slot.no_spare_for
                .as_ref()
                .is_some_and(|c| c.same_component(&component)),
            "its component gets no more spares"
        );
    }

    #[test]
    fn no_spare_under_reuse_with_an_initializer_or_with_reach() {
        let call = fixtures().call_wave("count()").expect("call");
        let reuse = TaskSettings {
            policy: InstancePolicy::Reuse { max_tasks: 3 },
            ..TaskSettings::default()
        };
        let initialized = TaskSettings {
            initializer: Some("noop".into()),
            ..TaskSettings::default()
        };
        let networked = TaskSettings {
            capabilities: crate::Capabilities {
                network: true,
                ..Default::default()
            },
            ..TaskSettings::default()
        };
        let writer = TaskSettings {
            capabilities: crate::Capabilities::default().dir_writable("/tmp", "/tmp"),
            ..TaskSettings::default()
        };
        let reader = TaskSettings {
            capabilities: crate::Capabilities::default().dir("/tmp", "/tmp"),
            ..TaskSettings::default()
        };
        // A read-only directory leaves no mark: its pool has spares.
        let mut slot = InstanceSlot::default();
        slot.prepare_spare(fixtures(), &env_with(reader));
        assert!(slot.take_spare(&call, DEFAULT_MAX_MEMORY).is_some());
        // A spare that cannot be made (here: the pool's cap is below the fixtures' memory)
        // is not tried again for that component.
        let mut slot = InstanceSlot::default();
        let capped = env_with(TaskSettings {
            budget: crate::Budget::default().max_memory(1),
            ..TaskSettings::default()
        });
        slot.prepare_spare(fixtures(), &capped);
        assert!(slot.spare.is_none());
        assert!(slot.no_spare_for.is_some());
        slot.prepare_spare(fixtures(), &env_with(TaskSettings::default()));
        assert!(slot.spare.is_none(), "no second try for that component");
        for settings in [reuse, initialized, networked, writer] {
            let mut slot = InstanceSlot::default();
            slot.prepare_spare(fixtures(), &env_with(settings));
            assert!(slot.take_spare(&call, DEFAULT_MAX_MEMORY).is_none());
        }
    }
}
