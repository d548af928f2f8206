//! The worker process: the loop a program runs when a process pool started it.
//!
//! Three threads:
//! - the main thread reads frames from stdin: components to load and tasks go to the
//!   executor in order; an abort stops the task it names at once;
//! - the executor thread runs one task at a time with [`run_guarded`], exactly as a thread-pool
//!   worker does, and queues each result;
//! - the writer thread writes results and output lines to the channel, flushing whenever it
//!   has nothing more to write.
//!
//! The channel to the pool is the process's original stdout. Before anything else runs, the
//! worker moves it to a private descriptor and points fd 1 at stderr, so nothing printed by
//! accident can corrupt a frame. The lines tasks print reach the pool as OUTPUT frames (see
//! `output.rs`), and the pool prints them on its own stdout/stderr.
//!
//! When the pool closes stdin, the worker finishes the tasks it has and exits with code 0.
//! When the pool's process dies, the worker dies too (`lifeline.rs`). A malformed frame from
//! the pool makes it exit with code 2.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::{ProtocolError, TaskError};
use crate::instance::InstanceSlot;
use crate::output::Destination;
use crate::run::{TaskRun, run_guarded};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::settings::TaskEnv;
use crate::store::TaskControl;
use crate::sync::lock;

use super::framing::{CHANNEL_BUFFER, Frame, frame, hello_frame, read_frame, write_frames};
use super::messages::{Abort, FromWorker, Load, Message, Output, RunTask, TaskResult, ToWorker};

/// Test hook for the crash tests, compiled only with the `test-hooks` feature (which
/// `cargo test` turns on and a release build never has): `exit-after:N`, `abort-after:N`
/// or `garbage-after:N` makes the worker exit with code 0, abort, or write garbage on its
/// channel when its Nth task arrives. The pool removes it from every worker's environment;
/// only a wrapper program started as the worker can set it.
pub(crate) const TEST_HOOK_ENV: &str = "WASMPOOL_WORKER_TEST_HOOK";

/// What the executor thread does, in order.
enum Work {
    Load(Load),
    Run(RunTask<'static>),
}

/// Tasks received and not finished, with their abort switches.
type Controls = Arc<Mutex<HashMap<u64, (Arc<TaskControl>, bool)>>>;

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
    let (out, out_rx) = unbounded::<Frame>();
    let writer = std::thread::Builder::new()
        .name("wasmpool-worker-writer".into())
        .spawn(move || write_frames(channel, &out_rx))
        .map_err(|e| format!("cannot start the writer thread: {e}"))?;
    let _ = out.send(Frame::Whole(hello_frame(std::process::id())));

    let stdin = std::io::stdin();
    let mut input = BufReader::with_capacity(CHANNEL_BUFFER, stdin.lock());
    let setup = match read_frame(&mut input) {
        // The pool went away before it said anything (e.g. a failed build): nothing to do.
        Ok(None) => return finish(&out, writer),
        Ok(Some((kind, payload))) => match ToWorker::decode(kind, &payload) {
            Ok(ToWorker::Setup(setup)) => setup,
            Ok(_) => return Err("the first frame from the pool is not SETUP".into()),
            Err(e) => return Err(e.to_string()),
        },
        Err(e) => return Err(e.to_string()),
    };
    // The lines tasks print go to the pool as OUTPUT frames (fd 1 is stderr now).
    let lines = out.clone();
    let forward = move |stream, line: &[u8]| {
        let output = FromWorker::Output(Output {
            stream,
            line: Cow::Borrowed(line),
        });
        if let Ok(frame) = frame(&output) {
            let _ = lines.send(frame);
        }
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
    loop {
        let (kind, payload) = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        };
        match ToWorker::decode(kind, &payload).map_err(|e| e.to_string())? {
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
                lock(&controls).insert(task.id, (Arc::new(TaskControl::default()), false));
                let _ = work.send(Work::Run(task));
            }
            ToWorker::Abort(Abort { id }) => {
                if let Some((control, aborted)) = lock(&controls).get_mut(&id) {
                    *aborted = true;
                    control.abort();
                }
            }
        }
    }
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

fn finish(out: &Sender<Frame>, writer: std::thread::JoinHandle<()>) -> Result<(), String> {
    let _ = out.send(Frame::Close);
    let _ = writer.join();
    Ok(())
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
fn execute(work: &Receiver<Work>, out: &Sender<Frame>, controls: &Controls, env: &TaskEnv) {
    let mut runtimes: Vec<(RuntimeConfig, Runtime)> = Vec::new();
    let mut components: HashMap<u64, Result<TaskComponent, String>> = HashMap::new();
    let mut instances = InstanceSlot::default();
    for item in crate::spin::iter(work) {
        match item {
            Work::Load(load) => {
                let loaded = load_component(&mut runtimes, &load);
                components.insert(load.id, loaded);
            }
            Work::Run(task) => {
                let id = task.id;
                let (control, aborted) = lock(controls)
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| (Arc::new(TaskControl::default()), false));
                let run = if aborted {
                    failed_run(TaskError::Cancelled)
                } else {
                    match make_call(&components, task) {
                        Ok(call) => run_guarded(&call, env, &control, &mut instances),
                        Err(message) => failed_run(TaskError::ComponentUnavailable { message }),
                    }
                };
                lock(controls).remove(&id);
                if let Ok(frame) = result_frame(id, run) {
                    let _ = out.send(frame);
                }
            }
        }
    }
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

/// The RESULT frame of task `id`. A value that cannot be sent (a resource) becomes a
/// [`TaskError::Unreturnable`] in a run that keeps its report; a frame too large becomes that
/// error with an empty report.
fn result_frame(id: u64, run: TaskRun) -> Result<Frame, ProtocolError> {
    let cannot_return = |e: ProtocolError| TaskError::Unreturnable {
        message: e.to_string(),
    };
    let message = FromWorker::Result(TaskResult { id, run });
    let error = match frame(&message) {
        Ok(frame) => return Ok(frame),
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
    frame(&FromWorker::Result(TaskResult { id, run })).or_else(|e| {
        frame(&FromWorker::Result(TaskResult {
            id,
            run: failed_run(cannot_return(e)),
        }))
    })
}

/// Builds the checked call the task describes: the function by its index, resolved once
/// (its arguments are checked again here). Any error becomes `ComponentUnavailable`.
fn make_call(
    components: &HashMap<u64, Result<TaskComponent, String>>,
    task: RunTask<'static>,
) -> Result<Call, String> {
    let component = match components.get(&task.component) {
        Some(Ok(component)) => component,
        Some(Err(message)) => return Err(message.clone()),
        None => {
            return Err(format!(
                "component {} was never sent to this worker",
                task.component
            ));
        }
    };
    let call = component
        .call_at(task.function, task.args.into_owned())
        .map_err(|e| e.to_string())?
        .with_budget(task.budget);
    Ok(match task.argv {
        Some(argv) => call.with_args(argv.into_owned()),
        None => call,
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

    fn on_task(&self, seen: u64, out: &Sender<Frame>) {
        match *self {
            TestHook::ExitAfter(n) if seen == n => std::process::exit(0),
            TestHook::AbortAfter(n) if seen == n => std::process::abort(),
            TestHook::GarbageAfter(n) if seen == n => {
                let _ = out.send(Frame::Whole(b"\x07\0\0\0\xffgarbage!".to_vec()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Val;

    use super::*;
    use crate::value::TaskValue;

    fn decoded(frame: Frame) -> TaskResult {
        let Frame::Whole(bytes) = frame else {
            panic!("a RESULT is one whole frame");
        };
        let (kind, payload) = read_frame(&mut &bytes[..]).unwrap().unwrap();
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
        let sent = decoded(result_frame(4, run).unwrap());
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
        assert_eq!(decoded(result_frame(1, run.clone()).unwrap()).run, run);
    }
}
