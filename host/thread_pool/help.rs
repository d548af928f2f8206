//! Callers that help ([`ThreadPoolBuilder::caller_helps`](super::ThreadPoolBuilder::caller_helps)):
//! a thread that waits in [`TaskFuture::result`] for a task that no worker has taken yet
//! runs the task itself, as .NET's `Task.Wait` inlines a task that has not started. On an
//! idle pool this saves the two thread wake-ups of a round trip (the worker's, then the
//! caller's), each tens of µs on a busy or virtual machine.
//!
//! A helpable task's promise and call wait in a [`Claim`], shared by the queue and the
//! future: whoever takes them first, a worker or a waiting caller, runs the task; the other
//! finds the claim empty and moves on. Invariant: a task runs at most once, and a claim
//! that is never taken keeps its promise, which the pool then cancels or drops (resolving
//! the future either way).
//!
//! Callers run their tasks in a fresh instance, as workers do, and share one spare (see
//! `instance.rs`): the worker that found a claim taken makes the next one once it has had
//! nothing to do for a spin, so the next round trip on an idle pool pays neither a wake-up
//! nor an instantiation.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, PoisonError, TryLockError, Weak};
use std::thread::ThreadId;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::future::{Promise, RunHere, TaskFuture};
use crate::instance::InstanceSlot;
use crate::settings::TaskEnv;
use crate::store::TaskControl;
use crate::sync::lock;

use super::{Broken, run_taken};

/// A task's promise and call, until a worker or a waiting caller takes them.
pub(super) struct Claim {
    slot: Mutex<Option<(Promise, Call)>>,
    control: Arc<TaskControl>,
    /// The pool's helpers: weak, so that a future kept after its pool is gone does not keep
    /// the callers' spare instance alive.
    helpers: Weak<Helpers>,
    /// The call's component, for the callers' next spare once a caller took the task.
    component: TaskComponent,
}

impl Claim {
    pub(super) fn new(
        promise: Promise,
        call: Call,
        control: Arc<TaskControl>,
        helpers: Weak<Helpers>,
    ) -> Claim {
        Claim {
            component: call.component().clone(),
            slot: Mutex::new(Some((promise, call))),
            control,
            helpers,
        }
    }

    /// Called by a worker that found the claim taken and has nothing else to do: makes the
    /// callers' next spare.
    pub(super) fn after_caller_took_it(&self) {
        if let Some(helpers) = self.helpers.upgrade() {
            helpers.prepare_spare(&self.component);
        }
    }

    /// The promise and call, if nobody took them before.
    pub(super) fn take(&self) -> Option<(Promise, Call)> {
        lock(&self.slot).take()
    }
}

impl RunHere for Claim {
    fn run_here(&self) {
        // The pool is there while a claim holds its task: dropping the executor waits for
        // the queue. Were it gone, the promise is dropped, which resolves the future.
        if let Some((promise, call)) = self.take()
            && let Some(helpers) = self.helpers.upgrade()
        {
            helpers.run(promise, &call, &self.control);
        }
    }
}

/// What the callers that help share with their pool.
pub(super) struct Helpers {
    /// The caller's identity in reports and output prefixes (`{prefix}-caller`), and the
    /// pool's task settings.
    pub(super) env: TaskEnv,
    pub(super) cancelling: Arc<AtomicBool>,
    pub(super) broken: Broken,
    /// The tasks callers are running, with their threads: `shutdown_now` aborts them, and
    /// `shutdown(wait)` waits until there are none (but the calling thread's own: a done
    /// callback of a helped task may shut the pool down).
    running: Mutex<Vec<(ThreadId, TaskFuture)>>,
    idle: Condvar,
    /// The callers' spare instance, made by an idle worker.
    spare: Mutex<InstanceSlot>,
}

impl Helpers {
    pub(super) fn new(env: TaskEnv, cancelling: Arc<AtomicBool>, broken: Broken) -> Helpers {
        Helpers {
            env,
            cancelling,
            broken,
            running: Mutex::new(Vec::new()),
            idle: Condvar::new(),
            spare: Mutex::new(InstanceSlot::default()),
        }
    }

    /// Makes the callers' spare of `component` (a worker's spare time).
    fn prepare_spare(&self, component: &TaskComponent) {
        lock(&self.spare).prepare_spare(component, &self.env);
    }

    /// The callers' spare, unless a worker is making it right now (then none: a caller
    /// never waits for one).
    fn take_spare(&self) -> InstanceSlot {
        match self.spare.try_lock() {
            Ok(mut slot) => std::mem::take(&mut *slot),
            Err(TryLockError::Poisoned(poisoned)) => std::mem::take(&mut *poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => InstanceSlot::default(),
        }
    }

    /// Runs the task on this thread, in a fresh instance (the callers' spare if it fits),
    /// registered for `shutdown_now` and `shutdown(wait)` meanwhile (see [`run_taken`]).
    fn run(&self, promise: Promise, call: &Call, control: &Arc<TaskControl>) {
        let future = promise.future();
        lock(&self.running).push((std::thread::current().id(), future.clone()));
        let mut spare = self.take_spare();
        run_taken(
            promise,
            call,
            control,
            &self.env,
            &mut spare,
            &self.cancelling,
            &self.broken,
        );
        self.give_back(spare);
        let mut running = lock(&self.running);
        if let Some(i) = running.iter().position(|(_, f)| f.id() == future.id()) {
            running.swap_remove(i);
        }
        self.idle.notify_all();
    }

    /// Leaves the instance the caller's task used where the next spare is made: the worker
    /// that makes it tears that instance down, off this caller's round trip. (Should another
    /// caller hold that slot right now, or have left an instance there, this one is torn
    /// down here.)
    fn give_back(&self, used: InstanceSlot) {
        if let Ok(mut slot) = self.spare.try_lock() {
            slot.adopt_spent(used);
        }
    }

    /// Aborts every task a caller is running.
    pub(super) fn abort_all(&self) {
        let running: Vec<TaskFuture> = lock(&self.running).iter().map(|(_, f)| f.clone()).collect();
        for future in running {
            future.abort();
        }
    }

    /// Blocks until no caller but this thread runs a task.
    pub(super) fn wait_idle(&self) {
        let me = std::thread::current().id();
        let mut running = lock(&self.running);
        while running.iter().any(|(thread, _)| *thread != me) {
            running = self
                .idle
                .wait(running)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
