//! What every executor offers: the [`Executor`] trait, and `map` built on `submit`.

use std::collections::VecDeque;

use crate::call::Call;
use crate::error::{SubmitError, TaskError};
use crate::future::{TaskFuture, promise};
use crate::value::TaskValue;

/// An executor runs calls as tasks and hands back futures: the interface shared by
/// [`ThreadPoolExecutor`](crate::ThreadPoolExecutor) and the other pools, so code written
/// against one works with another.
pub trait Executor: Send + Sync {
    /// Schedules `call` and returns its future. Fails at once when the executor was shut
    /// down or its pool is broken; never blocks on the task.
    fn submit(&self, call: Call) -> Result<TaskFuture, SubmitError>;

    /// Stops accepting work. With `cancel_futures`, cancels every task that has not
    /// started; with `wait`, blocks until the running and queued tasks are done and the
    /// workers have exited. Calling it again is harmless.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Submits every call now, and returns an iterator of their outcomes in input order,
    /// as `concurrent.futures.Executor.map` does. The iterator blocks on each task in turn;
    /// dropping it cancels the tasks that have not started.
    ///
    /// If a submit fails, the calls already submitted are cancelled and the error returned.
    fn map<I>(&self, calls: I) -> Result<Map<'_>, SubmitError>
    where
        I: IntoIterator<Item = Call>,
        Self: Sized,
    {
        let mut pending = VecDeque::new();
        for call in calls {
            match self.submit(call) {
                Ok(f) => pending.push_back(f),
                Err(e) => {
                    pending.iter().for_each(|f: &TaskFuture| {
                        f.cancel();
                    });
                    return Err(e);
                }
            }
        }
        Ok(Map {
            executor: self,
            pending,
            source: None,
            buffer: usize::MAX,
        })
    }

    /// Like [`Executor::map`], but lazy: at most `buffer` tasks are in flight (submitted and
    /// not yet yielded), so a huge or endless input never sits in memory. Each yielded
    /// result makes room for the next submit. A submit that fails yields that error for
    /// its input (a [`TaskError::BrokenPool`] or [`TaskError::Cancelled`]).
    fn map_buffered<'a, I>(&'a self, calls: I, buffer: usize) -> Map<'a>
    where
        I: IntoIterator<Item = Call>,
        I::IntoIter: Send + 'a,
        Self: Sized,
    {
        Map {
            executor: self,
            pending: VecDeque::new(),
            source: Some(Box::new(calls.into_iter())),
            buffer: buffer.max(1),
        }
    }
}

/// The iterator [`Executor::map`] and [`Executor::map_buffered`] return: task outcomes in
/// input order. Dropping it cancels what has not started.
pub struct Map<'a> {
    executor: &'a dyn Executor,
    pending: VecDeque<TaskFuture>,
    source: Option<Box<dyn Iterator<Item = Call> + Send + 'a>>,
    buffer: usize,
}

impl std::fmt::Debug for Map<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.pending.len())
            .field("more_input", &self.source.is_some())
            .finish()
    }
}

impl Map<'_> {
    /// The futures submitted and not yet yielded, in input order.
    pub fn in_flight(&self) -> impl Iterator<Item = &TaskFuture> {
        self.pending.iter()
    }

    fn refill(&mut self) {
        let Some(source) = &mut self.source else {
            return;
        };
        while self.pending.len() < self.buffer {
            let Some(call) = source.next() else {
                self.source = None;
                return;
            };
            let future = self
                .executor
                .submit(call)
                .unwrap_or_else(|e| failed_future(submit_failure(e)));
            self.pending.push_back(future);
        }
    }
}

fn submit_failure(e: SubmitError) -> TaskError {
    match e {
        SubmitError::BrokenPool(reason) => TaskError::BrokenPool { reason },
        _ => TaskError::Cancelled,
    }
}

/// A future that is already resolved with `error`.
fn failed_future(error: TaskError) -> TaskFuture {
    let (promise, future) = promise();
    promise.set_error(error);
    future
}

impl Iterator for Map<'_> {
    type Item = Result<TaskValue, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.refill();
        let future = self.pending.pop_front()?;
        Some(future.result())
    }
}

impl Drop for Map<'_> {
    fn drop(&mut self) {
        for future in &self.pending {
            future.cancel();
        }
    }
}
