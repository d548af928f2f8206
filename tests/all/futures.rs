//! Ported from CPython's Lib/test/test_concurrent_futures/test_future.py (behaviour, rewritten
//! for wasmpool).
//!
//! CPython builds futures in each state by poking `_state`; here a [`promise`] is driven into
//! the state instead. Threads that complete a future are started before the waiter blocks and
//! complete it once told to (or simply afterwards); nothing sleeps to synchronise.
//!
//! The fixtures at the top are shared with `wait.rs` and `as_completed.rs`.

use std::future::{IntoFuture, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use ::futures::executor::block_on;
use wasmpool::{
    FutureState, Promise, TaskError, TaskErrorKind, TaskFuture, TaskValue, WaitTimeout, promise,
};
use wasmtime::component::Val;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A short timeout, for waits on futures that are never completed.
pub(crate) const SHORT: Duration = Duration::from_millis(50);

/// A generous bound for anything that must happen; only reached if a wake-up is lost.
const GENEROUS: Duration = Duration::from_secs(30);

/// A `u32` task value.
pub(crate) fn value(n: u32) -> TaskValue {
    TaskValue::from(Val::U32(n))
}

/// A trap, the usual task error.
pub(crate) fn trap() -> TaskError {
    TaskError::Trap {
        trap: "wasm `unreachable` instruction executed".into(),
        panic: None,
        backtrace: String::new(),
    }
}

/// A running future (CPython's RUNNING_FUTURE); keep the promise alive while it should run.
pub(crate) fn running() -> (Promise, TaskFuture) {
    let (p, f) = promise();
    assert!(p.set_running_or_notify_cancel());
    (p, f)
}

/// A future cancelled while pending (CPython's CANCELLED_FUTURE and
/// CANCELLED_AND_NOTIFIED_FUTURE, which are one state here).
pub(crate) fn cancelled() -> TaskFuture {
    let (p, f) = promise();
    assert!(f.cancel());
    assert!(!p.set_running_or_notify_cancel());
    f
}

/// A future that finished with `value(42)` (CPython's SUCCESSFUL_FUTURE).
pub(crate) fn succeeded() -> TaskFuture {
    let (p, f) = promise();
    p.set_result(value(42));
    f
}

/// A future that finished with a trap (CPython's EXCEPTION_FUTURE).
pub(crate) fn failed() -> TaskFuture {
    let (p, f) = promise();
    p.set_error(trap());
    f
}

/// The ids of some futures, to compare lists of futures.
pub(crate) fn ids<'a>(futures: impl IntoIterator<Item = &'a TaskFuture>) -> Vec<u64> {
    futures.into_iter().map(TaskFuture::id).collect()
}

/// Runs `f` on its own thread and returns what it returns (or re-raises its panic). Fails the
/// test instead of hanging forever if `f` does not return within a generous bound.
pub(crate) fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(GENEROUS) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("still blocked after {GENEROUS:?}: a lost wake-up")
        }
    }
}

/// A logger that keeps error records, to check what wasmpool logs. It is the logger of the
/// whole test binary: [`logged_about`] installs it once, and no other test may install one
/// (the `log` crate takes a single logger per process; if another one got there first, the
/// log checks fail loudly instead of being skipped). Tests run in parallel, so each one
/// looks only at the records that name its own future (`#id`, unique in the process).
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Error
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            lines.push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// Installs the capturing logger, once per test binary; panics if another logger was
/// installed instead.
fn capture_logs() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        log::set_logger(&CAPTURE).map_err(|e| e.to_string())?;
        if log::max_level() < log::LevelFilter::Error {
            log::set_max_level(log::LevelFilter::Error);
        }
        Ok(())
    });
    if let Err(e) = installed {
        panic!("the capturing logger is not the test binary's logger ({e}): install no other");
    }
    assert!(
        log::max_level() >= log::LevelFilter::Error,
        "error records are filtered out (max level {})",
        log::max_level()
    );
}

/// The error lines logged so far that mention `future` (by its `#id`).
fn logged_about(future: &TaskFuture) -> Vec<String> {
    capture_logs();
    let tag = format!("#{} ", future.id());
    let lines = CAPTURE.0.lock().unwrap_or_else(PoisonError::into_inner);
    lines.iter().filter(|l| l.contains(&tag)).cloned().collect()
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl CountingWaker {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// States, repr, cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn handles_are_send_sync_and_share_one_id() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<TaskFuture>();
    send::<Promise>();
    send::<wasmpool::ResultFuture>();
    send::<wasmpool::AsCompleted>();

    let (p, f) = promise();
    let (_p2, f2) = promise();
    assert_eq!(f.clone().id(), f.id());
    assert_eq!(p.future().id(), f.id());
    assert_ne!(f.id(), f2.id());
}

#[test]
fn repr_in_each_state() {
    let (_pending_promise, pending) = promise();
    let (_running_promise, running) = running();
    let cancelled = cancelled();
    let returned = succeeded();
    let raised = failed();
    let repr = |f: &TaskFuture, rest: &str| format!("TaskFuture(#{} state={rest})", f.id());

    assert_eq!(format!("{pending:?}"), repr(&pending, "pending"));
    assert_eq!(format!("{running:?}"), repr(&running, "running"));
    assert_eq!(format!("{cancelled:?}"), repr(&cancelled, "cancelled"));
    assert_eq!(
        format!("{returned:?}"),
        repr(&returned, "finished returned u32")
    );
    assert_eq!(format!("{raised:?}"), repr(&raised, "finished raised trap"));
}

#[test]
fn repr_names_the_component_type_or_error_kind() {
    let cases = [
        (TaskValue::unit(), "nothing"),
        (TaskValue::from(Val::Float64(0.5)), "f64"),
        (TaskValue::from(Val::S32(-1)), "s32"),
        (TaskValue::from(Val::Bool(true)), "bool"),
        (TaskValue::from(Val::Char('x')), "char"),
        (TaskValue::from(Val::String("hi".into())), "string"),
        (TaskValue::from(Val::List(vec![])), "list"),
        (TaskValue::from(Val::Tuple(vec![Val::U8(1)])), "tuple"),
        (
            TaskValue::from(Val::Record(vec![("a".into(), Val::U8(1))])),
            "record",
        ),
        (TaskValue::from(Val::Option(None)), "option"),
        (TaskValue::from(Val::Result(Ok(None))), "result"),
        (TaskValue::from(Val::Variant("v".into(), None)), "variant"),
        (TaskValue::from(Val::Enum("e".into())), "enum"),
        (TaskValue::from(Val::Flags(vec![])), "flags"),
    ];
    for (v, name) in cases {
        let (p, f) = promise();
        p.set_result(v);
        assert_eq!(
            format!("{f:?}"),
            format!("TaskFuture(#{} state=finished returned {name})", f.id())
        );
    }

    let errors = [
        TaskError::Failed {
            message: "no".into(),
            value: "\"no\"".into(),
        },
        TaskError::Timeout {
            limit: Duration::from_secs(1),
        },
        TaskError::OutOfFuel { limit: 10 },
        TaskError::Start {
            message: "no".into(),
        },
    ];
    for e in errors {
        let kind = e.kind();
        let (p, f) = promise();
        p.set_error(e);
        assert_eq!(
            format!("{f:?}"),
            format!("TaskFuture(#{} state=finished raised {kind})", f.id())
        );
    }

    let (p, f) = promise();
    drop(p);
    assert_eq!(
        format!("{f:?}"),
        format!("TaskFuture(#{} state=finished raised broken-pool)", f.id())
    );
}

#[test]
fn state_display_names() {
    assert_eq!(FutureState::Pending.to_string(), "pending");
    assert_eq!(FutureState::Running.to_string(), "running");
    assert_eq!(FutureState::Finished.to_string(), "finished");
    assert_eq!(FutureState::Cancelled.to_string(), "cancelled");
}

#[test]
fn cancel_in_each_state() {
    let (pending_promise, pending) = promise();
    assert!(pending.cancel());
    assert_eq!(pending.state(), FutureState::Cancelled);
    assert!(pending_promise.is_cancelled());

    let (running_promise, running) = running();
    assert!(!running.cancel());
    assert_eq!(running.state(), FutureState::Running);
    assert!(!running_promise.is_cancelled());

    // Cancelling again still says "cancelled".
    let cancelled = cancelled();
    assert!(cancelled.cancel());
    assert_eq!(cancelled.state(), FutureState::Cancelled);

    let raised = failed();
    assert!(!raised.cancel());
    assert_eq!(raised.state(), FutureState::Finished);

    let returned = succeeded();
    assert!(!returned.cancel());
    assert_eq!(returned.state(), FutureState::Finished);
}

#[test]
fn predicates_in_each_state() {
    let (_pp, pending) = promise();
    let (_rp, running) = running();
    // (future, cancelled, running, done)
    let table = [
        (pending, false, false, false),
        (running, false, true, false),
        (cancelled(), true, false, true),
        (failed(), false, false, true),
        (succeeded(), false, false, true),
    ];
    for (f, is_cancelled, is_running, is_done) in table {
        assert_eq!(f.is_cancelled(), is_cancelled, "{f:?}");
        assert_eq!(f.is_running(), is_running, "{f:?}");
        assert_eq!(f.is_done(), is_done, "{f:?}");
        assert_eq!(f.state().is_done(), is_done, "{f:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// result() and error()
// ---------------------------------------------------------------------------------------------

#[test]
fn result_timeout_in_each_state() {
    let (_pp, pending) = promise();
    let (_rp, running) = running();
    for zero_or_short in [Duration::ZERO, SHORT] {
        assert_eq!(
            pending.result_timeout(zero_or_short),
            Err(WaitTimeout(zero_or_short))
        );
        assert_eq!(
            running.result_timeout(zero_or_short),
            Err(WaitTimeout(zero_or_short))
        );
    }
    // The wait timing out does not touch the task.
    assert_eq!(pending.state(), FutureState::Pending);
    assert_eq!(running.state(), FutureState::Running);

    assert_eq!(
        cancelled().result_timeout(Duration::ZERO),
        Ok(Err(TaskError::Cancelled))
    );
    assert_eq!(failed().result_timeout(Duration::ZERO), Ok(Err(trap())));
    assert_eq!(
        succeeded().result_timeout(Duration::ZERO),
        Ok(Ok(value(42)))
    );
}

#[test]
fn error_timeout_in_each_state() {
    let (_pp, pending) = promise();
    let (_rp, running) = running();
    assert_eq!(
        pending.error_timeout(Duration::ZERO),
        Err(WaitTimeout(Duration::ZERO))
    );
    assert_eq!(running.error_timeout(SHORT), Err(WaitTimeout(SHORT)));
    assert_eq!(
        cancelled().error_timeout(Duration::ZERO),
        Ok(Some(TaskError::Cancelled))
    );
    assert_eq!(failed().error_timeout(Duration::ZERO), Ok(Some(trap())));
    assert_eq!(succeeded().error_timeout(Duration::ZERO), Ok(None));
}

#[test]
fn result_and_error_of_done_futures() {
    assert_eq!(succeeded().result(), Ok(value(42)));
    assert_eq!(succeeded().error(), None);
    assert_eq!(failed().result(), Err(trap()));
    assert_eq!(
        failed().error().map(|e| e.kind()),
        Some(TaskErrorKind::Trap)
    );
    assert_eq!(cancelled().result(), Err(TaskError::Cancelled));
    assert_eq!(cancelled().error(), Some(TaskError::Cancelled));
    // Asking again gives the same answer.
    let f = succeeded();
    assert_eq!(f.result(), f.result());
}

/// Spawns a thread that, once told, runs `complete`; returns the "go" sender and the handle.
fn on_signal(
    complete: impl FnOnce() + Send + 'static,
) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (go_tx, go_rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        go_rx.recv().expect("the test went away");
        complete();
    });
    (go_tx, handle)
}

#[test]
fn result_waits_for_a_value_set_by_another_thread() {
    let (p, f) = running();
    let (go, helper) = on_signal(move || p.set_result(value(42)));
    let outcome = within(move || {
        go.send(()).unwrap();
        f.result()
    });
    assert_eq!(outcome, Ok(value(42)));
    helper.join().unwrap();
}

#[test]
fn result_timeout_gets_a_value_set_by_another_thread() {
    let (p, f) = running();
    let (go, helper) = on_signal(move || p.set_result(value(7)));
    go.send(()).unwrap();
    assert_eq!(f.result_timeout(GENEROUS), Ok(Ok(value(7))));
    helper.join().unwrap();
}

#[test]
fn result_waits_for_a_cancel_from_another_thread() {
    let (_p, f) = promise();
    let canceller = f.clone();
    let (go, helper) = on_signal(move || assert!(canceller.cancel()));
    let outcome = within(move || {
        go.send(()).unwrap();
        f.result_timeout(GENEROUS)
    });
    assert_eq!(outcome, Ok(Err(TaskError::Cancelled)));
    helper.join().unwrap();
}

#[test]
fn error_waits_for_an_error_set_by_another_thread() {
    let (p, f) = running();
    let (go, helper) = on_signal(move || p.set_error(trap()));
    let outcome = within(move || {
        go.send(()).unwrap();
        f.error()
    });
    assert_eq!(outcome, Some(trap()));
    helper.join().unwrap();
}

#[test]
fn many_threads_blocked_on_result_are_all_woken() {
    const THREADS: usize = 8;
    let (p, f) = running();
    let ready = Arc::new(Barrier::new(THREADS + 1));
    let waiters: Vec<_> = (0..THREADS)
        .map(|_| {
            let (f, ready) = (f.clone(), ready.clone());
            thread::spawn(move || {
                ready.wait();
                f.result()
            })
        })
        .collect();
    ready.wait();
    p.set_result(value(3));
    within(move || {
        for w in waiters {
            assert_eq!(w.join().unwrap(), Ok(value(3)));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The producer side
// ---------------------------------------------------------------------------------------------

#[test]
fn set_running_or_notify_cancel() {
    let (p, f) = promise();
    assert!(p.set_running_or_notify_cancel());
    assert_eq!(f.state(), FutureState::Running);

    let (p, f) = promise();
    assert!(f.cancel());
    assert!(p.is_cancelled());
    assert!(!p.set_running_or_notify_cancel());
    assert_eq!(f.state(), FutureState::Cancelled);
}

#[test]
fn set_running_twice_is_refused_and_logged() {
    capture_logs();
    let (p, f) = running();
    assert!(!p.set_running_or_notify_cancel());
    assert_eq!(f.state(), FutureState::Running);
    let lines = logged_about(&f);
    assert!(
        lines.iter().any(|l| l.contains("unexpected state running")),
        "nothing logged about {f:?}: {lines:?}"
    );
    p.set_result(value(1));
    assert_eq!(f.result(), Ok(value(1)));
}

#[test]
fn complete_from_pending_or_running() {
    let (p, f) = promise();
    p.complete(Ok(value(1)));
    assert_eq!(f.state(), FutureState::Finished);
    assert_eq!(f.result(), Ok(value(1)));

    let (p, f) = running();
    p.complete(Err(trap()));
    assert_eq!(f.state(), FutureState::Finished);
    assert_eq!(f.result(), Err(trap()));
}

#[test]
fn completing_a_cancelled_future_drops_the_outcome() {
    let (p, f) = promise();
    assert!(f.cancel());
    p.set_result(value(1));
    assert_eq!(f.state(), FutureState::Cancelled);
    assert_eq!(f.result(), Err(TaskError::Cancelled));
}

#[test]
fn dropped_promise_resolves_with_broken_pool() {
    let broken = TaskError::BrokenPool {
        reason: "the executor dropped the task before it finished".into(),
    };

    let (p, f) = promise();
    drop(p);
    assert_eq!(f.state(), FutureState::Finished);
    assert_eq!(f.result(), Err(broken.clone()));

    let (p, f) = running();
    drop(p);
    assert_eq!(f.result(), Err(broken.clone()));

    // A thread already waiting is woken by the drop.
    let (p, f) = running();
    let (go, helper) = on_signal(move || drop(p));
    let outcome = within(move || {
        go.send(()).unwrap();
        f.result()
    });
    assert_eq!(outcome, Err(broken));
    helper.join().unwrap();

    // ... but a future that is done already stays as it is.
    let (p, f) = promise();
    assert!(f.cancel());
    drop(p);
    assert_eq!(f.result(), Err(TaskError::Cancelled));
}

// ---------------------------------------------------------------------------------------------
// Done callbacks
// ---------------------------------------------------------------------------------------------

/// Makes callbacks that record what they saw (the state and the result) under a tag.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Recorder {
    fn callback(&self, tag: &'static str) -> impl FnOnce(&TaskFuture) + Send + 'static {
        let seen = self.0.clone();
        move |f: &TaskFuture| {
            let line = format!("{tag}: {} {:?}", f.state(), f.result());
            seen.lock().unwrap().push(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn done_callback_with_result() {
    let seen = Recorder::default();
    let (p, f) = promise();
    f.add_done_callback(seen.callback("a"));
    assert!(seen.lines().is_empty());
    p.set_result(value(5));
    assert_eq!(
        seen.lines(),
        [format!("a: finished {:?}", Ok::<_, TaskError>(value(5)))]
    );
}

#[test]
fn done_callback_with_error() {
    let (p, f) = promise();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |f| tx.send(f.error()).unwrap());
    p.set_error(trap());
    assert_eq!(rx.try_recv(), Ok(Some(trap())));
}

#[test]
fn done_callback_with_cancel() {
    let (_p, f) = promise();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |f| tx.send(f.is_cancelled()).unwrap());
    assert!(f.cancel());
    assert_eq!(rx.try_recv(), Ok(true));
}

#[test]
fn done_callback_already_done_runs_immediately() {
    for (f, expected) in [
        (succeeded(), "finished Ok"),
        (failed(), "finished Err(Trap"),
        (cancelled(), "cancelled Err(Cancelled)"),
    ] {
        let seen = Recorder::default();
        f.add_done_callback(seen.callback("now"));
        let seen = seen.lines();
        assert_eq!(seen.len(), 1, "{f:?}");
        assert!(seen[0].starts_with(&format!("now: {expected}")), "{seen:?}");
    }
}

#[test]
fn done_callbacks_run_once_in_order() {
    let seen = Recorder::default();
    let (p, f) = promise();
    for tag in ["first", "second", "third"] {
        f.add_done_callback(seen.callback(tag));
    }
    assert!(f.cancel());
    assert!(f.cancel()); // cancelling again runs nothing again
    p.set_result(value(1)); // nor does completing the cancelled future
    let tags: Vec<_> = seen
        .lines()
        .iter()
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(tags, ["first", "second", "third"]);
}

#[test]
fn done_callback_of_a_dropped_promise_runs_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (p, f) = promise();
    let counter = calls.clone();
    f.add_done_callback(move |f| {
        assert_eq!(f.error().map(|e| e.kind()), Some(TaskErrorKind::BrokenPool));
        counter.fetch_add(1, Ordering::SeqCst);
    });
    drop(p);
    assert!(!f.cancel());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn done_callback_runs_in_the_completing_thread_without_locks_held() {
    let (p, f) = running();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(move |f| {
        // Calling back into the future must not deadlock: no lock is held.
        let outcome = f.result();
        let state = f.state();
        // Neither must adding another callback, which now runs right away.
        let (tx2, rx2) = mpsc::channel();
        f.add_done_callback(move |_| tx2.send(()).unwrap());
        let nested_ran = rx2.try_recv().is_ok();
        tx.send((
            thread::current().id(),
            state,
            outcome,
            nested_ran,
            format!("{f:?}"),
        ))
        .unwrap();
    });
    let completer = thread::spawn(move || {
        p.set_result(value(9));
        thread::current().id()
    });
    let completer_id = within(move || completer.join().unwrap());
    let (ran_in, state, outcome, nested_ran, repr) = rx
        .try_recv()
        .expect("the callback ran before set_result returned");
    assert_eq!(ran_in, completer_id);
    assert_eq!(state, FutureState::Finished);
    assert_eq!(outcome, Ok(value(9)));
    assert!(nested_ran);
    assert!(repr.ends_with("state=finished returned u32)"), "{repr}");
}

#[test]
fn panicking_done_callback_is_caught_and_logged() {
    capture_logs();
    let seen = Recorder::default();
    let (p, f) = running();
    f.add_done_callback(|_| panic!("doh!"));
    f.add_done_callback(seen.callback("after the panic"));

    // The panic does not reach the completing thread ...
    let completer = thread::spawn(move || p.set_result(value(5)));
    within(move || completer.join()).expect("set_result panicked");
    // ... the other callbacks still ran ...
    assert_eq!(seen.lines().len(), 1);
    // ... and the future is fine (nothing poisoned).
    assert_eq!(f.result(), Ok(value(5)));
    assert_eq!(f.state(), FutureState::Finished);
    assert!(!f.cancel());
    assert!(format!("{f:?}").ends_with("state=finished returned u32)"));

    // A panicking callback on a future that is done already is caught in the caller's thread.
    f.add_done_callback(|_| panic!("doh again!"));
    f.add_done_callback(seen.callback("still fine"));
    assert_eq!(seen.lines().len(), 2);

    let lines = logged_about(&f);
    for message in ["doh!", "doh again!"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("done callback") && l.ends_with(message)),
            "{message:?} not logged for {f:?}: {lines:?}"
        );
    }
}

#[test]
fn panicking_done_callback_on_cancel_is_caught() {
    let (p, f) = promise();
    let (tx, rx) = mpsc::channel();
    f.add_done_callback(|_| panic!("doh!"));
    f.add_done_callback(move |f| tx.send(f.is_cancelled()).unwrap());
    assert!(f.cancel());
    assert_eq!(rx.try_recv(), Ok(true));
    assert!(!p.set_running_or_notify_cancel());
}

// ---------------------------------------------------------------------------------------------
// .await
// ---------------------------------------------------------------------------------------------

#[test]
fn await_a_done_future() {
    let f = succeeded();
    assert_eq!(block_on(async { (&f).await }), Ok(value(42)));
    assert_eq!(block_on(f.into_future()), Ok(value(42)));
    assert_eq!(
        block_on(cancelled().into_future()),
        Err(TaskError::Cancelled)
    );
    assert_eq!(block_on(failed().into_future()), Err(trap()));
}

/// Awaits `f` on `block_on`, telling `started` once the first poll has returned `Pending`.
/// Returns the outcome and whether that happened.
fn await_and_tell(
    f: TaskFuture,
    started: mpsc::Sender<()>,
) -> (Result<TaskValue, TaskError>, bool) {
    let mut awaiting = f.into_future();
    let mut told = false;
    let outcome = block_on(poll_fn(|cx| {
        let poll = Pin::new(&mut awaiting).poll(cx);
        if poll.is_pending() && !told {
            told = true;
            started.send(()).unwrap();
        }
        poll
    }));
    (outcome, told)
}

#[test]
fn await_a_future_completed_from_another_thread() {
    let (p, f) = running();
    let (go, helper) = on_signal(move || p.set_result(value(7)));
    let (outcome, was_pending) = within(move || await_and_tell(f, go));
    assert!(was_pending, "the await did not have to wait");
    assert_eq!(outcome, Ok(value(7)));
    helper.join().unwrap();
}

#[test]
fn await_a_future_cancelled_from_another_thread() {
    let (_p, f) = promise();
    let canceller = f.clone();
    let (go, helper) = on_signal(move || assert!(canceller.cancel()));
    let (outcome, was_pending) = within(move || await_and_tell(f, go));
    assert!(was_pending);
    assert_eq!(outcome, Err(TaskError::Cancelled));
    helper.join().unwrap();
}

#[test]
fn await_wakes_the_latest_waker_only() {
    let (p, f) = running();
    let mut awaiting = f.into_future();
    let (first, second) = (
        Arc::new(CountingWaker::default()),
        Arc::new(CountingWaker::default()),
    );
    for w in [&first, &second, &second] {
        let waker = Waker::from(w.clone());
        assert!(
            Pin::new(&mut awaiting)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    p.set_result(value(1));
    assert_eq!((first.wakes(), second.wakes()), (0, 1));
    let waker = Waker::from(second.clone());
    let ready = Pin::new(&mut awaiting).poll(&mut Context::from_waker(&waker));
    assert_eq!(ready, Poll::Ready(Ok(value(1))));
}

#[test]
fn dropped_await_is_not_woken() {
    let (p, f) = running();
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(counter.clone());
    let mut awaiting = f.clone().into_future();
    assert!(
        Pin::new(&mut awaiting)
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    drop(awaiting);
    p.set_result(value(1));
    assert_eq!(counter.wakes(), 0);
    assert_eq!(f.result(), Ok(value(1)));
}

/// An executor that refuses every call with the given error.
struct Refusing(wasmpool::SubmitError);

impl wasmpool::Executor for Refusing {
    fn submit(&self, _call: wasmpool::Call) -> Result<TaskFuture, wasmpool::SubmitError> {
        Err(self.0.clone())
    }

    fn shutdown(&self, _wait: bool, _cancel_futures: bool) {}
}

#[test]
fn a_lazy_map_yields_each_refused_submit_as_its_task_error() {
    use wasmpool::{Executor, SubmitError, TaskErrorKind};
    let calls = || (0..2).map(|_| crate::common::call(crate::common::fixtures(), "add(1, 2)"));
    let cases = [
        (
            SubmitError::Incompatible("too large".into()),
            TaskErrorKind::Incompatible,
        ),
        (
            SubmitError::BrokenPool("worker-1 died".into()),
            TaskErrorKind::BrokenPool,
        ),
        (SubmitError::Shutdown, TaskErrorKind::Cancelled),
    ];
    for (refusal, kind) in cases {
        let pool = Refusing(refusal.clone());
        let results: Vec<_> = pool.map_buffered(calls(), 1).collect();
        assert_eq!(results.len(), 2);
        for result in results {
            let error = result.unwrap_err();
            assert_eq!(error.kind(), kind, "{refusal:?}");
            assert_eq!(error, TaskError::from(refusal.clone()));
        }
    }
    let error = TaskError::from(SubmitError::Incompatible("too large".into()));
    assert_eq!(error.to_string(), "the task was not submitted: too large");
    assert_eq!(error.kind().as_str(), "incompatible");
}
