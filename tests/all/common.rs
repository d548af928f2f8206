//! Shared helpers: the bundled components, loaded once per test binary.

use std::sync::OnceLock;
use std::time::Duration;

use wasmpool::{Call, TaskComponent, TaskFuture};

/// Generous bound for anything that must happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(30);

pub fn seed() -> &'static TaskComponent {
    static C: OnceLock<TaskComponent> = OnceLock::new();
    C.get_or_init(|| TaskComponent::from_file(env!("WASMPOOL_SEED_WASM")).expect("seed loads"))
}

pub fn fixtures() -> &'static TaskComponent {
    static C: OnceLock<TaskComponent> = OnceLock::new();
    C.get_or_init(|| {
        TaskComponent::from_file(env!("WASMPOOL_FIXTURES_WASM")).expect("fixtures load")
    })
}

/// A checked call of a bundled component, written in WAVE.
pub fn call(component: &TaskComponent, wave: &str) -> Call {
    component
        .call_wave(wave)
        .unwrap_or_else(|e| panic!("{wave}: {e}"))
}

/// Blocks until `future` has left the pending state (bounded by SOON).
pub fn until_started(future: &TaskFuture) {
    future
        .wait_started(SOON)
        .unwrap_or_else(|_| panic!("task never started: {future:?}"));
}

/// A pool that is dropped only if the test passed. Were an abort to leave a guest asleep,
/// dropping the pool would wait out the sleep and turn the failure into a ten-minute hang;
/// a failing test leaks the pool instead.
pub struct DropUnlessFailed<P>(pub Option<P>);

impl<P> std::ops::Deref for DropUnlessFailed<P> {
    type Target = P;
    fn deref(&self) -> &P {
        self.0.as_ref().expect("the pool is there until dropped")
    }
}

impl<P> Drop for DropUnlessFailed<P> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::mem::forget(self.0.take());
        }
    }
}
