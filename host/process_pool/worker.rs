//! The worker process: the loop a program runs when a process pool started it.
//!
//! Three threads:
//! - the main thread reads frames from stdin: components to load and tasks go to the
//!   executor in order (the TASK frames that arrived together, a batch, as one piece of
//!   work); an abort stops the task it names at once;
//! - the executor thread runs one task at a time with [`run_guarded`], exactly as a thread-pool
//!   worker does, and appends each result to the outbox (`worker/outbox.rs`) as soon as the
//!   task is done;
//! - the outbox's writer thread writes results and output lines to the channel, together
//!   when they come in a burst.
//!
//! The channel to the pool is the process's original stdout. Before anything else runs, the
//! worker moves it to a private descriptor and points fd 1 at stderr, so nothing printed by
//! accident can corrupt a frame. The lines tasks print reach the pool as OUTPUT frames (see
//! `output.rs`), and the pool prints them on its own stdout/stderr.
//!
//! When the pool closes stdin, the worker finishes the tasks it has and exits with code 0.
//! When the pool's process dies, the worker dies too (`lifeline.rs`). A malformed frame from
//! the pool makes it exit with code 2.

mod outbox;
mod task;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::component::TaskComponent;
use crate::error::{ProtocolError, TaskError};
use crate::instance::InstanceSlot;
use crate::output::Destination;
use crate::run::TaskRun;
use crate::runtime::{Runtime, RuntimeConfig};
use crate::settings::TaskEnv;
use crate::store::TaskControl;
use crate::sync::lock;

use super::framing::{CHANNEL_BUFFER, append, hello_frame, read_frame_with, whole_frame_buffered};
use super::messages::{Abort, FromWorker, Load, Message, Output, RunTask, TaskResult, ToWorker};
use outbox::Outbox;
use task::run_one;

/// Test hook for the crash tests, compiled only with the `test-hooks` feature (which
/// `cargo test` turns on and a release build never has): `exit-after:N`, `abort-after:N`
/// or `garbage-after:N` makes the worker exit with code 0, abort, or write garbage on its
/// channel when its Nth task arrives. The pool removes it from every worker's environment;
/// only a wrapper program started as the worker can set it.
pub(crate) const TEST_HOOK_ENV: &str = "WASMPOOL_WORKER_TEST_HOOK";

/// What the executor thread does, in order.
enum Work {
    Load(Load),
    /// Tasks that arrived together (a batch, or one task), run one after another, each
    /// with its abort switch (also in [`Controls`] until it is done).
    Run(Vec<(RunTask<'static>, Arc<TaskControl>)>),
}

/// The abort switches of the tasks received and not finished, by task id. A task aborted
/// before it starts is not run.
type Controls = Arc<Mutex<IdMap<Arc<TaskControl>>>>;

/// A map keyed by the ids the pool hands out (tasks, components).
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The hash of an id the pool chose: a multiply, not SipHash. The keys come from the pool
/// that started this worker (a trusted peer, which numbers them in sequence), so nothing
/// here needs SipHash's resistance to chosen keys; it cost four hashes of ~140 instructions
/// per task.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses for its control bytes, mix
        // every bit of the id.
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Serves the pool on stdin/stdout until stdin ends; returns the exit code.
pub(crate) fn serve() -> i32 {
    match serve_inner() {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("wasmpool worker {}: {message}", std::process::id());
            2
        }
    }
}

fn serve_inner() -> Result<(), String> {
    super::lifeline::bind_to_parent()?;
    let channel = take_stdout().map_err(|e| format!("cannot set up the channel: {e}"))?;
    let (out, writer) = Outbox::start(channel, "wasmpool-worker-writer")
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let hello = hello_frame(std::process::id());
    out.push_bytes(true, &hello);

    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(CHANNEL_BUFFER, stdin.lock());
    let setup = match read_frame_with(&mut input, ToWorker::decode) {
        // The pool went away before it said anything (e.g. a failed build): nothing to do.
        Ok(None) => return finish(&out, writer),
        Ok(Some(Ok(ToWorker::Setup(setup)))) => setup,
        Ok(Some(Ok(_))) => return Err("the first frame from the pool is not SETUP".into()),
        Ok(Some(Err(e))) | Err(e) => return Err(e.to_string()),
    };
    // The lines tasks print go to the pool as OUTPUT frames (fd 1 is stderr now).
    let lines = out.clone();
    let forward = move |stream, line: &[u8]| {
        let output = FromWorker::Output(Output {
            stream,
            line: Cow::Borrowed(line),
        });
        let _ = lines.push(false, |bytes| append(bytes, &output));
    };
    let env = TaskEnv {
        worker_name: Arc::from(setup.name),
        settings: setup.settings,
        destination: Destination::Forward(Arc::new(forward)),
    };

    let controls: Controls = Arc::default();
    let (work, work_rx) = unbounded::<Work>();
    let executor = {
        let (out, controls) = (out.clone(), controls.clone());
        std::thread::Builder::new()
            .name("wasmpool-worker-executor".into())
            .spawn(move || execute(&work_rx, &out, &controls, &env))
            .map_err(|e| format!("cannot start the executor thread: {e}"))?
    };

    #[cfg(feature = "test-hooks")]
    let hook = TestHook::from_env();
    #[cfg(feature = "test-hooks")]
    let mut tasks_seen = 0u64;
    // TASK frames read and not yet handed to the executor: those that arrived together.
    let mut batch = Vec::new();
    loop {
        let message = match read_frame_with(&mut input, ToWorker::decode) {
            Ok(Some(decoded)) => decoded.map_err(|e| e.to_string())?,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        };
        if !matches!(message, ToWorker::Task(_)) {
            // Everything before this frame first: a LOAD runs after the tasks before it,
            // and an ABORT finds the tasks before it registered.
            hand_over(&mut batch, &controls, &work);
        }
        match message {
            ToWorker::Setup(_) => return Err("a second SETUP frame".into()),
            ToWorker::Load(load) => {
                let _ = work.send(Work::Load(load));
            }
            ToWorker::Task(task) => {
                #[cfg(feature = "test-hooks")]
                {
                    tasks_seen += 1;
                    hook.on_task(tasks_seen, &out);
                }
                batch.push(task);
            }
            ToWorker::Abort(Abort { id }) => {
                if let Some(control) = lock(&controls).get(&id) {
                    control.abort();
                }
            }
        }
        // Nothing more has arrived whole: what was read goes to work now, before a wait.
        if !whole_frame_buffered(input.buffer()) {
            hand_over(&mut batch, &controls, &work);
        }
    }
    hand_over(&mut batch, &controls, &work);
    // Stdin ended. The pool's process died: stop now, nobody will read the results (the
    // queued tasks are not run; the running one ends with the process). The pool closed
    // it: finish the tasks received, then exit.
    if super::lifeline::pool_is_gone() {
        return Err("the pool's process is gone; stopping".into());
    }
    drop(work);
    let _ = executor.join();
    finish(&out, writer)
}

fn finish(out: &Outbox, writer: std::thread::JoinHandle<()>) -> Result<(), String> {
    out.close();
    let _ = writer.join();
    Ok(())
}

/// Registers the tasks of `batch` (their abort switches, under one lock) and hands them to
/// the executor as one piece of work, each with its switch; nothing if `batch` is empty.
fn hand_over(batch: &mut Vec<RunTask<'static>>, controls: &Controls, work: &Sender<Work>) {
    if batch.is_empty() {
        return;
    }
    let tasks: Vec<_> = {
        let mut controls = lock(controls);
        batch
            .drain(..)
            .map(|task| {
                let control = Arc::new(TaskControl::default());
                controls.insert(task.id, control.clone());
                (task, control)
            })
            .collect()
    };
    let _ = work.send(Work::Run(tasks));
}

/// Moves the channel off fd 1 and points fd 1 at stderr.
fn take_stdout() -> std::io::Result<File> {
    let stdout = std::io::stdout();
    let channel = rustix::io::fcntl_dupfd_cloexec(&stdout, 3)?;
    rustix::stdio::dup2_stdout(std::io::stderr())?;
    Ok(File::from(channel))
}

/// Does the work in order until the main thread closes the queue.
///
/// Never inlined: `benches/instructions.rs` has callgrind write the worker's counters when
/// this returns (after the last task, before the channel closes).
#[inline(never)]
fn execute(work: &Receiver<Work>, out: &Outbox, controls: &Controls, env: &TaskEnv) {
    let mut runtimes: Vec<(RuntimeConfig, Runtime)> = Vec::new();
    let mut components: IdMap<Result<TaskComponent, String>> = IdMap::default();
    let mut instances = InstanceSlot::default();
    // Results pushed since the last urgent one.
    let mut held = 0;
    // The component of the last task run: when nothing has come for a spin, the next task's
    // instance is made (a spare, `instance.rs`), off its round trip; never at the end (a
    // closed queue skips it).
    let mut last: Option<u64> = None;
    let idle = |instances: &mut InstanceSlot,
                last: Option<u64>,
                components: &IdMap<Result<TaskComponent, String>>| {
        if let Some(Ok(component)) = last.and_then(|id| components.get(&id)) {
            instances.prepare_spare(component, env);
        }
    };
    while let Some(item) = crate::spin::recv_or_idle(work, || {
        idle(&mut instances, last.take(), &components);
    }) {
        match item {
            Work::Load(load) => {
                let loaded = load_component(&mut runtimes, &load);
                components.insert(load.id, loaded);
            }
            Work::Run(tasks) => {
                last = tasks.last().map(|(task, _)| task.component);
                for (task, control) in tasks {
                    let id = task.id;
                    let run = run_one(task, &control, &components, env, &mut instances);
                    // The tasks left in hand: the rest of this batch and every batch queued
                    // behind it, each registered until it is done.
                    let left = {
                        let mut controls = lock(controls);
                        controls.remove(&id);
                        controls.len()
                    };
                    // Results leave at once when at most one task is left in hand, or when
                    // those held back are as many as the tasks left: the pool hands a worker
                    // more work once it is down to its refill mark (half its pipeline depth,
                    // one less than a fixed depth, or a batch's length with one batch
                    // queued behind the running one), and that work should arrive while the
                    // tasks left run. Other results may wait a little for the ones after them
                    // (`outbox.rs`): a batch's results travel together.
                    held += 1;
                    let urgent = results_are_urgent(held, left);
                    if urgent {
                        held = 0;
                    }
                    let _ = out.push(urgent, |bytes| append_result(bytes, id, run));
                }
            }
        }
    }
}

/// Whether the `held` results not sent yet (the latest one included) should leave now, with
/// `left` tasks still in hand (queued batches included): when at most one is left, or when
/// as many results wait as tasks are left (the pool is then at its refill mark, and its
/// next batch should arrive while those run). With one batch queued behind the running
/// one, that is once per batch, as the running one ends (the outbox still sends results
/// held longer than its `COALESCE` bound).
fn results_are_urgent(held: usize, left: usize) -> bool {
    left <= 1 || held >= left
}

fn load_component(
    runtimes: &mut Vec<(RuntimeConfig, Runtime)>,
    load: &Load,
) -> Result<TaskComponent, String> {
    let runtime = match runtimes.iter().find(|(c, _)| *c == load.config) {
        Some((_, runtime)) => runtime.clone(),
        None => {
            let runtime = Runtime::with_config(load.config.clone()).map_err(|e| e.to_string())?;
            runtimes.push((load.config.clone(), runtime.clone()));
            runtime
        }
    };
    // SAFETY: the bytes are `TaskComponent::precompiled()` output (wasmtime's `serialize`)
    // made by the pool process that started this worker, received whole (the frame's length
    // is checked) over the pipe that process created for this worker alone, and loaded with
    // a runtime of the same settings. wasmtime also checks the header, its own version and
    // the engine settings before using them.
    unsafe { runtime.load_precompiled(&load.code, &load.origin) }.map_err(|e| e.to_string())
}

/// Appends the RESULT frame of task `id` to `out`. A value that cannot be sent (a resource)
/// becomes a [`TaskError::Unreturnable`] in a run that keeps its report; a frame too large
/// becomes that error with an empty report. On error `out` is left as it was.
fn append_result(out: &mut Vec<u8>, id: u64, run: TaskRun) -> Result<(), ProtocolError> {
    let cannot_return = |e: ProtocolError| TaskError::Unreturnable {
        message: e.to_string(),
    };
    let message = FromWorker::Result(TaskResult { id, run });
    let error = match append(out, &message) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let FromWorker::Result(TaskResult { run, .. }) = message else {
        return Err(error);
    };
    let run = match error {
        ProtocolError::FrameTooLarge { .. } => failed_run(cannot_return(error)),
        _ => TaskRun {
            outcome: Err(cannot_return(error)),
            ..run
        },
    };
    append(out, &FromWorker::Result(TaskResult { id, run })).or_else(|e| {
        append(
            out,
            &FromWorker::Result(TaskResult {
                id,
                run: failed_run(cannot_return(e)),
            }),
        )
    })
}

/// A run that failed before it started: nothing measured.
fn failed_run(error: TaskError) -> TaskRun {
    TaskRun::failed(error, Duration::ZERO)
}

/// See [`TEST_HOOK_ENV`].
#[cfg(feature = "test-hooks")]
enum TestHook {
    None,
    ExitAfter(u64),
    AbortAfter(u64),
    GarbageAfter(u64),
}

#[cfg(feature = "test-hooks")]
impl TestHook {
    fn from_env() -> TestHook {
        let Ok(value) = std::env::var(TEST_HOOK_ENV) else {
            return TestHook::None;
        };
        let parsed = value
            .split_once(':')
            .and_then(|(what, n)| Some((what, n.parse::<u64>().ok()?)));
        match parsed {
            Some(("exit-after", n)) => TestHook::ExitAfter(n),
            Some(("abort-after", n)) => TestHook::AbortAfter(n),
            Some(("garbage-after", n)) => TestHook::GarbageAfter(n),
            _ => TestHook::None,
        }
    }

    fn on_task(&self, seen: u64, out: &Outbox) {
        match *self {
            TestHook::ExitAfter(n) if seen == n => std::process::exit(0),
            TestHook::AbortAfter(n) if seen == n => std::process::abort(),
            TestHook::GarbageAfter(n) if seen == n => {
                out.push_bytes(true, b"\x07\0\0\0\xffgarbage!");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Val;

    use super::*;
    use crate::process_pool::framing::read_frame;
    use crate::value::TaskValue;

    /// The tasks left in hand after each result that was urgent, as the executor runs tasks
    /// with `lefts` left after each one.
    fn urgent_when_left(lefts: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut held = 0;
        let mut sent_when_left = Vec::new();
        for left in lefts {
            held += 1;
            if results_are_urgent(held, left) {
                sent_when_left.push(left);
                held = 0;
            }
        }
        sent_when_left
    }

    /// A pipeline of 11 tasks (a fresh task's adaptive depth) sends its results when 5 are
    /// left, then 2, then 1 and 0: the pool learns of the first half while the second runs.
    #[test]
    fn results_leave_at_half_of_what_is_left_and_at_the_end() {
        assert_eq!(urgent_when_left((0..11).rev()), [5, 2, 1, 0]);
        // A lone task's result leaves at once.
        assert!(results_are_urgent(1, 0));
    }

    /// A batch of 256 running with the next batch of 256 queued behind it: its results are
    /// urgent once, as it ends (the pool then hands the batch after).
    #[test]
    fn with_a_batch_queued_behind_results_leave_as_the_running_one_ends() {
        assert_eq!(urgent_when_left((256..512).rev()), [256]);
    }

    /// The RESULT frame of `run`, decoded.
    fn sent(id: u64, run: TaskRun) -> TaskResult {
        let mut bytes = vec![9];
        append_result(&mut bytes, id, run).unwrap();
        let (kind, payload) = read_frame(&mut &bytes[1..]).unwrap().unwrap();
        match FromWorker::decode(kind, &payload).unwrap() {
            FromWorker::Result(result) => result,
            other => panic!("not a result: {other:?}"),
        }
    }

    #[test]
    fn a_value_that_cannot_be_sent_becomes_unreturnable_and_keeps_the_report() {
        let mut deep = Val::Bool(true);
        for _ in 0..200 {
            deep = Val::Option(Some(Box::new(deep)));
        }
        let run = TaskRun {
            outcome: Ok(TaskValue::from(deep)),
            elapsed: Duration::from_millis(3),
            fuel_consumed: Some(9),
            peak_memory: 1,
            stdout: Some("o".into()),
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        let sent = sent(4, run);
        assert_eq!(sent.id, 4);
        assert!(
            matches!(&sent.run.outcome, Err(TaskError::Unreturnable { message })
                if message.contains("nests deeper")),
            "{:?}",
            sent.run.outcome
        );
        assert_eq!(sent.run.elapsed, Duration::from_millis(3));
        assert_eq!(sent.run.fuel_consumed, Some(9));
        assert_eq!(sent.run.stdout.as_deref(), Some("o"));
    }

    #[test]
    fn a_result_that_can_be_sent_is_sent_as_it_is() {
        let run = failed_run(TaskError::Cancelled);
        assert_eq!(sent(1, run.clone()).run, run);
    }
}
