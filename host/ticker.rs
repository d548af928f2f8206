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
        if state.running == 1 {
            self.shared.wake.notify_one();
        }
        RunningGuard { ticker: self }
    }
}

fn tick(shared: &Shared, engine: &Engine) {
    loop {
        {
            let state = shared
                .wake
                .wait_while(lock(&shared.state), |s| s.running == 0 && !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
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
