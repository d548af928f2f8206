//! What every executor offers: the [`Executor`] trait, and `map` built on `submit`.

use std::collections::VecDeque;

use crate::call::Call;
use crate::error::{SubmitError, TaskError};
use crate::future::TaskFuture;
use crate::value::TaskValue;

/// An executor runs calls as tasks and hands back futures: the interface shared by
/// [`ThreadPoolExecutor`](crate::ThreadPoolExecutor) and the other pools, so code written
/// against one works with another.
pub trait Executor: Send + Sync {
    /// Schedules `call` and returns its future. Fails at once when the executor was shut
    /// down or its pool is broken; never blocks on the task.
    fn submit(&self, call: Call) -> Result<TaskFuture, SubmitError>;

    /// Schedules `calls` as one unit of work: one worker runs them one after another
    /// (Python's `chunksize`). Each call still gets its own future, resolved as soon as its
    /// own task is done, and can be cancelled until the batch starts. A batch costs one
    /// queue operation and one worker wake-up (one write to a worker process) instead of
    /// one per call, which is what makes tiny tasks cheap; the price is that the calls of
    /// a batch do not spread over several workers.
    ///
    /// The default submits each call on its own. If a submit fails, the calls already
    /// submitted are cancelled and the error returned.
    fn submit_batch(&self, calls: Vec<Call>) -> Result<Vec<TaskFuture>, SubmitError> {
        let mut futures = Vec::with_capacity(calls.len());
        for call in calls {
            match self.submit(call) {
                Ok(f) => futures.push(f),
                Err(e) => return Err(cancel_all(&futures, e)),
            }
        }
        Ok(futures)
    }

    /// Stops accepting work. With `cancel_futures`, cancels every task that has not
    /// started; with `wait`, blocks until the running and queued tasks are done and the
    /// workers have exited. Calling it again is harmless.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Stops now: refuses new work, cancels the tasks not started, and aborts the running
    /// ones (their futures are cancelled at once). The local pools then wait for their
    /// workers to exit (a process pool kills the workers that do not stop within
    /// [`STOP_GRACE`](crate::STOP_GRACE) and reaps every one); a cluster executor asks the remote workers to stop
    /// the tasks and does not wait for them.
    ///
    /// The default, for an executor that cannot abort tasks, is `shutdown(false, true)`.
    fn shutdown_now(&self) {
        self.shutdown(false, true);
    }

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
        self.map_chunked(calls, 1)
    }

    /// Like [`Executor::map`], with the calls submitted in batches of `chunksize` (see
    /// [`submit_batch`](Executor::submit_batch)): `Executor.map(fn, iterable, chunksize=n)`.
    /// Worth it for many tiny tasks; a `chunksize` of 1 is `map`.
    ///
    /// ```no_run
    /// use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};
    /// let component = TaskComponent::from_file("fixture_tasks.wasm")?;
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// let calls = (0..10_000).map(|n| component.call_wave(&format!("add({n}, 1)")));
    /// let calls: Vec<_> = calls.collect::<Result<_, _>>()?;
    /// let sum: i64 = pool
    ///     .map_chunked(calls, 256)?
    ///     .map(|r| r.map(|v| v.as_i64().unwrap_or_default()))
    ///     .sum::<Result<_, _>>()?;
    /// assert_eq!(sum, (1..=10_000).sum::<i64>());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn map_chunked<I>(&self, calls: I, chunksize: usize) -> Result<Map<'_>, SubmitError>
    where
        I: IntoIterator<Item = Call>,
        Self: Sized,
    {
        let mut pending = VecDeque::new();
        let mut calls = calls.into_iter();
        while let Some(call) = calls.next() {
            let submitted = if chunksize <= 1 {
                self.submit(call).map(|f| pending.push_back(f))
            } else {
                let chunk = std::iter::once(call).chain(calls.by_ref().take(chunksize - 1));
                self.submit_batch(chunk.collect())
                    .map(|futures| pending.extend(futures))
            };
            if let Err(e) = submitted {
                return Err(cancel_all(pending.iter(), e));
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
    /// its input, as `TaskError::from(submit_error)` makes it: [`TaskError::BrokenPool`],
    /// [`TaskError::Cancelled`] (shut down) or [`TaskError::Incompatible`].
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
                .unwrap_or_else(|e| TaskFuture::failed(e.into()));
            self.pending.push_back(future);
        }
    }
}

/// Cancels `futures` (the ones submitted before a submit failed) and passes `error` on.
fn cancel_all<'a>(
    futures: impl IntoIterator<Item = &'a TaskFuture>,
    error: SubmitError,
) -> SubmitError {
    for future in futures {
        future.cancel();
    }
    error
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
