//! The producer's side of a future: [`promise()`] makes a pending [`TaskFuture`] and the
//! [`Promise`] an executor completes it with.

use std::fmt;

use super::{FutureState, TaskFuture};
use crate::report::RunReport;
use crate::{TaskError, TaskReport, TaskValue};

/// Creates a new pending future and the [`Promise`] that completes it.
///
/// This is the producer side, for executor implementations and tests (Python exposes
/// `set_running_or_notify_cancel` and `set_result` on the future for the same purpose).
///
/// ```
/// use wasmpool::{promise, TaskError};
///
/// let (promise, future) = promise();
/// assert!(future.cancel()); // not started yet, so it can be cancelled
/// assert!(!promise.set_running_or_notify_cancel()); // the executor skips the task
/// assert_eq!(future.result(), Err(TaskError::Cancelled));
/// ```
pub fn promise() -> (Promise, TaskFuture) {
    let future = TaskFuture::new();
    (
        Promise {
            future: future.clone(),
        },
        future,
    )
}

impl TaskFuture {
    /// A future that is already finished with `error`: what an executor hands back for a
    /// call it could not even queue (for example, `map` over a pool that broke meanwhile).
    ///
    /// ```
    /// use wasmpool::{TaskError, TaskFuture};
    ///
    /// let future = TaskFuture::failed(TaskError::Cancelled);
    /// assert!(future.is_done());
    /// assert_eq!(future.result(), Err(TaskError::Cancelled));
    /// ```
    pub fn failed(error: TaskError) -> TaskFuture {
        let (promise, future) = promise();
        promise.set_error(error);
        future
    }
}

/// The producer's side of a [`TaskFuture`]: the executor marks it running, then completes it.
///
/// There is one `Promise` per future. A `Promise` dropped without completing resolves its
/// future with [`TaskError::BrokenPool`], so that no future is ever left hanging.
pub struct Promise {
    future: TaskFuture,
}

impl Promise {
    /// The future this promise completes.
    pub fn future(&self) -> TaskFuture {
        self.future.clone()
    }

    /// Call before running the task. Moves a pending future to running and returns `true`;
    /// returns `false` if the future was cancelled, and the task must then not run (whoever
    /// waited on the future was notified when it was cancelled).
    ///
    /// Calling it on a running or finished future is a bug in the executor: it returns `false`
    /// and logs an error.
    pub fn set_running_or_notify_cancel(&self) -> bool {
        let mut inner = self.future.lock();
        match inner.state {
            FutureState::Pending => {
                inner.state = FutureState::Running;
                let sleepers = inner.sleepers > 0;
                drop(inner);
                // `wait_started` waits on the same condition variable.
                if sleepers {
                    self.future.shared.done.notify_all();
                }
                true
            }
            FutureState::Cancelled => false,
            state @ (FutureState::Running | FutureState::Finished) => {
                drop(inner);
                log::error!(
                    "set_running_or_notify_cancel called on future #{} in unexpected state {state}",
                    self.future.id()
                );
                false
            }
        }
    }

    /// Whether the future was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.future.is_cancelled()
    }

    /// Completes the future (from pending or running) with the task's outcome: it becomes
    /// finished, everything waiting on it wakes up, and the done callbacks run in this thread.
    /// If the future was cancelled meanwhile, the outcome is dropped.
    pub fn complete(self, outcome: Result<TaskValue, TaskError>) {
        let inner = self.future.lock();
        if !inner.state.is_done() {
            self.future
                .finish(inner, FutureState::Finished, Some(outcome));
        }
    }

    /// Like [`complete`](Self::complete), and records how the task ran: the report is in
    /// place before anyone waiting on the future wakes up.
    pub fn complete_with_report(self, outcome: Result<TaskValue, TaskError>, report: TaskReport) {
        self.complete_with_run_report(outcome, RunReport::from(report));
    }

    /// [`complete_with_report`](Self::complete_with_report) with the report as the pools
    /// record it (the worker's name shared).
    pub(crate) fn complete_with_run_report(
        self,
        outcome: Result<TaskValue, TaskError>,
        report: RunReport,
    ) {
        self.future.extras().report = Some(report);
        self.complete(outcome);
    }

    /// Completes the future with a value; see [`complete`](Self::complete).
    pub fn set_result(self, value: TaskValue) {
        self.complete(Ok(value));
    }

    /// Completes the future with an error; see [`complete`](Self::complete).
    pub fn set_error(self, error: TaskError) {
        self.complete(Err(error));
    }
}

impl fmt::Debug for Promise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Promise").field(&self.future).finish()
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        let inner = self.future.lock();
        if !inner.state.is_done() {
            let error = TaskError::BrokenPool {
                reason: "the executor dropped the task before it finished".into(),
            };
            self.future
                .finish(inner, FutureState::Finished, Some(Err(error)));
        }
    }
}
