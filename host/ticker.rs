//! The epoch ticker: one thread per runtime that advances the engine's epoch every
//! [`TICK`] while at least one task runs. Running tasks check their deadline and abort
//! flag at each tick (the epoch callback in `store.rs`), so no task needs a thread of its own.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::sync::lock;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while tasks run: the granularity of deadlines and aborts.
pub(crate) const TICK: Duration = Duration::from_millis(1);

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
    /// Tasks running now. The thread sleeps (no ticks) while this is 0.
    running: usize,
    /// The thread waits on `wake` (no task ran at its last look). Only then does a task that
    /// starts wake it: a notify is a system call, and between ticks the thread looks again
    /// by itself, so tasks that follow one another pay none.
    idle: bool,
    stop: bool,
}

impl Ticker {
    /// Starts the ticker thread for `engine`.
    pub(crate) fn start(engine: Engine) -> std::io::Result<Ticker> {
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("wasmpool-epoch".into())
            .spawn(move || tick(&thread_shared, &engine))?;
        Ok(Ticker { shared })
    }

    /// Marks one task as running until the guard is dropped.
    pub(crate) fn running(&self) -> RunningGuard<'_> {
        let mut state = lock(&self.shared.state);
        state.running += 1;
        if state.idle {
            state.idle = false;
            self.shared.wake.notify_one();
        }
        RunningGuard { ticker: self }
    }
}

fn tick(shared: &Shared, engine: &Engine) {
    loop {
        {
            let mut state = lock(&shared.state);
            while state.running == 0 && !state.stop {
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

/// While alive, the ticker ticks.
pub(crate) struct RunningGuard<'a> {
    ticker: &'a Ticker,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        lock(&self.ticker.shared.state).running -= 1;
    }
}
