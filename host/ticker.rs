//! The epoch ticker: one thread per runtime that advances the engine's epoch every
//! [`TICK`] while a task that needs it runs. Running tasks check their deadline and abort
//! flag at each tick (the epoch callback in `store.rs`), so no task needs a thread of its own.
//!
//! Only a task with a deadline wakes the ticker when it starts. Waking a parked thread is a
//! system call, and on a quiet machine the woken thread often takes the waker's core for a
//! moment: ~12 µs added to a task of ~3 µs on an idle pool (the fixture's `noop()`). A task
//! without a deadline needs ticks only once it is aborted, so an abort ([`kick_all`]) wakes
//! every ticker that has tasks running, and each ticks until none of its tasks runs.
//!
//! Invariant: while an aborted task runs guest code, its runtime's ticker ticks. The abort
//! sets the task's flag, then kicks under each ticker's lock. A kick that finds no task
//! running came before the task's [`Ticker::running`] (the same lock), so the flag was set
//! before the task's guest code starts, and the check that precedes every guest call
//! (`invoke::until_stopped`) stops it there.

use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};

use crate::sync::lock;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while tasks run: the granularity of deadlines and aborts.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Every live ticker, for [`kick_all`].
static TICKERS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Owns the ticker thread; stops it when dropped.
pub(crate) struct Ticker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Tasks running now.
    running: usize,
    /// Of those, the ones with a deadline. The thread ticks while this is above 0 ...
    timed: usize,
    /// ... or, once a task was aborted, while any task runs.
    kicked: bool,
    /// The thread waits on `wake` (nothing needed ticks at its last look). Only then does a
    /// task that starts wake it: between ticks the thread looks again by itself, so tasks
    /// that follow one another pay no system call.
    idle: bool,
    stop: bool,
}

impl State {
    fn needs_ticks(&self) -> bool {
        self.timed > 0 || (self.kicked && self.running > 0)
    }
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("wasmpool-epoch".into())
            .spawn(move || tick(&thread_shared, &engine))?;
        let mut tickers = lock(&TICKERS);
        tickers.retain(|t| t.strong_count() > 0);
        tickers.push(Arc::downgrade(&shared));
        Ok(Ticker { shared })
    }

    /// Counts a task as running until the guard drops; one with a deadline (`timed`) wakes
    /// the thread if it sleeps. Called before the task's instance is made or used.
    pub(crate) fn running(&self, timed: bool) -> RunningGuard<'_> {
        let mut state = lock(&self.shared.state);
        state.running += 1;
        if timed {
            state.timed += 1;
        }
        if state.idle && state.needs_ticks() {
            state.idle = false;
            self.shared.wake.notify_one();
        }
        RunningGuard {
            ticker: self,
            timed,
        }
    }
}

/// Makes every ticker with tasks running tick until none runs: called by an abort, after it
/// set the task's flag (see the module's invariant).
pub(crate) fn kick_all() {
    let tickers: Vec<Arc<Shared>> = lock(&TICKERS).iter().filter_map(Weak::upgrade).collect();
    for shared in tickers {
        let mut state = lock(&shared.state);
        if state.running > 0 {
            state.kicked = true;
            if state.idle {
                state.idle = false;
                shared.wake.notify_one();
            }
        }
    }
}

/// The ticker thread: sleeps while nothing needs ticks, otherwise advances the epoch every
/// [`TICK`], until the [`Ticker`] is dropped.
fn tick(shared: &Shared, engine: &Engine) {
    loop {
        {
            let mut state = lock(&shared.state);
            while !state.needs_ticks() && !state.stop {
                // A kick lasts while tasks run; the next one needs a kick of its own.
                if state.running == 0 {
                    state.kicked = false;
                }
                state.idle = true;
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.idle = false;
            if state.stop {
                return;
            }
        }
        std::thread::sleep(TICK);
        engine.increment_epoch();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
    }
}

/// Counts one running task for its [`Ticker`] while alive.
pub(crate) struct RunningGuard<'a> {
    ticker: &'a Ticker,
    timed: bool,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.ticker.shared.state);
        state.running -= 1;
        if self.timed {
            state.timed -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn ticker() -> Ticker {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("an engine");
        Ticker::start(engine).expect("the ticker thread")
    }

    /// Waits, yielding, until `ready` holds of the ticker's state (false after 10 s).
    fn until(ticker: &Ticker, ready: impl Fn(&State) -> bool) -> bool {
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if ready(&lock(&ticker.shared.state)) {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn ticks_are_needed_for_a_timed_task_or_for_any_once_kicked() {
        let state = |running, timed, kicked| State {
            running,
            timed,
            kicked,
            ..State::default()
        };
        assert!(!state(0, 0, false).needs_ticks());
        assert!(!state(3, 0, false).needs_ticks(), "untimed tasks alone");
        assert!(state(3, 1, false).needs_ticks());
        assert!(state(1, 0, true).needs_ticks(), "kicked while a task runs");
        assert!(
            !state(0, 0, true).needs_ticks(),
            "a kick ends with the tasks"
        );
    }

    #[test]
    fn a_timed_task_wakes_the_ticker_and_it_sleeps_again_once_the_task_ends() {
        let ticker = ticker();
        assert!(until(&ticker, |s| s.idle));
        let task = ticker.running(true);
        assert!(!lock(&ticker.shared.state).idle, "the task woke the thread");
        drop(task);
        assert!(until(&ticker, |s| s.idle && s.running == 0 && s.timed == 0));
    }

    #[test]
    fn a_kick_wakes_the_ticker_for_a_running_task_until_it_ends() {
        let ticker = ticker();
        assert!(until(&ticker, |s| s.idle));
        let task = ticker.running(false);
        kick_all();
        {
            let state = lock(&ticker.shared.state);
            assert!(state.kicked && !state.idle, "kicked and woken");
        }
        drop(task);
        // The kick lasted while the task ran: the thread sleeps again, and the next task
        // would need a kick of its own.
        assert!(until(&ticker, |s| s.idle && !s.kicked));
    }
}
