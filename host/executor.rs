//! What every executor offers: the [`Executor`] trait, and `map` built on `submit`.

use std::collections::VecDeque;
use std::sync::OnceLock;

use crate::call::Call;
use crate::error::{SubmitError, TaskError};
use crate::future::{Promise, TaskFuture, promise};
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
    /// A [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) goes further, as CPython's
    /// does: a chunk's calls of one function (same budget and argv) run as one task, one
    /// message each way and one future, and are cancelled, aborted or lost together. The
    /// map still yields each call's own outcome; their futures exist only if
    /// [`Map::in_flight`] asks for them, and they have no report (a pool that captures
    /// output keeps one task per call, each with its report).
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
        map_in_batches(self, calls, chunksize)
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

/// [`Executor::map_chunked`] as every executor has it: each chunk submitted with
/// [`submit_batch`](Executor::submit_batch) (each call with `submit` when `chunksize` is 1).
pub(crate) fn map_in_batches<E, I>(
    executor: &E,
    calls: I,
    chunksize: usize,
) -> Result<Map<'_>, SubmitError>
where
    E: Executor,
    I: IntoIterator<Item = Call>,
{
    let mut pending = VecDeque::new();
    let mut calls = calls.into_iter();
    while let Some(call) = calls.next() {
        let submitted = if chunksize <= 1 {
            executor
                .submit(call)
                .map(|f| pending.push_back(Pending::Call(f)))
        } else {
            let chunk = std::iter::once(call).chain(calls.by_ref().take(chunksize - 1));
            executor
                .submit_batch(chunk.collect())
                .map(|futures| pending.extend(futures.into_iter().map(Pending::Call)))
        };
        if let Err(e) = submitted {
            drop(Map::new(executor, pending));
            return Err(e);
        }
    }
    Ok(Map::new(executor, pending))
}

/// The iterator [`Executor::map`] and [`Executor::map_buffered`] return: task outcomes in
/// input order. Dropping it cancels what has not started.
pub struct Map<'a> {
    executor: &'a dyn Executor,
    pending: VecDeque<Pending>,
    source: Option<Box<dyn Iterator<Item = Call> + Send + 'a>>,
    buffer: usize,
}

/// What a [`Map`] waits for: one call's future, or a chunk's.
pub(crate) enum Pending {
    Call(TaskFuture),
    Chunk(Chunk),
}

/// A chunk of calls that a process pool runs as one task (`map_chunked`): its future's value
/// holds every call's outcome ([`TaskValue::chunk`]). Its calls have futures of their own
/// only if [`Map::in_flight`] asks for them.
pub(crate) struct Chunk {
    future: TaskFuture,
    /// How many of its calls have been yielded.
    yielded: usize,
    /// How many calls it runs.
    calls: usize,
    /// Its outcomes not yielded yet, once it has finished.
    outcomes: Option<std::vec::IntoIter<Result<TaskValue, TaskError>>>,
    /// The futures of its calls from the `yielded`-th on, once `in_flight` made them: from
    /// then on the map yields their outcomes (one of them may have been cancelled).
    views: OnceLock<(usize, Vec<TaskFuture>)>,
}

impl Pending {
    /// What waits for `future`, the future of a task that runs `calls` calls: a chunk's
    /// when there are more than one.
    pub(crate) fn of(future: TaskFuture, calls: usize) -> Pending {
        if calls <= 1 {
            return Pending::Call(future);
        }
        Pending::Chunk(Chunk {
            future,
            yielded: 0,
            calls,
            outcomes: None,
            views: OnceLock::new(),
        })
    }

    /// The calls not yielded yet.
    fn calls(&self) -> usize {
        match self {
            Pending::Call(_) => 1,
            Pending::Chunk(chunk) => chunk.calls - chunk.yielded,
        }
    }

    /// The outcome of its next call not yielded, waiting for it, and whether that call was
    /// its last.
    fn next_outcome(&mut self) -> (Result<TaskValue, TaskError>, bool) {
        match self {
            Pending::Call(future) => (future.result(), true),
            Pending::Chunk(chunk) => {
                let outcome = chunk.next_outcome();
                (outcome, chunk.yielded == chunk.calls)
            }
        }
    }

    /// Cancels what has not started.
    fn cancel(&self) {
        match self {
            Pending::Call(future) => {
                future.cancel();
            }
            Pending::Chunk(chunk) => {
                chunk.future.cancel();
            }
        }
    }
}

impl Chunk {
    /// The outcome of the next call not yielded, waiting for the chunk if need be.
    fn next_outcome(&mut self) -> Result<TaskValue, TaskError> {
        let index = self.yielded;
        self.yielded += 1;
        if let Some((first, views)) = self.views.get() {
            return views[index - first].result();
        }
        if self.outcomes.is_none() {
            self.outcomes = Some(chunk_outcomes(self.future.result(), self.calls).into_iter());
        }
        self.outcomes
            .as_mut()
            .and_then(Iterator::next)
            .unwrap_or(Err(TaskError::Cancelled))
    }

    /// The futures of the calls not yielded yet, made on first use: each is resolved with
    /// its call's outcome when the chunk finishes. Cancelling one is honoured (the map
    /// yields it cancelled), but the chunk runs as a whole: its calls start together and
    /// are cancelled together, when the map is dropped before the chunk starts.
    fn views(&self) -> &[TaskFuture] {
        let (_, views) = self.views.get_or_init(|| {
            let first = self.yielded;
            let (promises, futures): (Vec<Promise>, Vec<TaskFuture>) =
                (first..self.calls).map(|_| promise()).unzip();
            let calls = self.calls;
            self.future.add_done_callback(move |chunk| {
                if chunk.is_cancelled() {
                    for promise in promises {
                        promise.future().cancel();
                    }
                    return;
                }
                let outcomes = chunk_outcomes(chunk.result(), calls)
                    .into_iter()
                    .skip(first);
                for (promise, outcome) in promises.into_iter().zip(outcomes) {
                    promise.complete(outcome);
                }
            });
            (first, futures)
        });
        views
    }
}

/// Each call's outcome from a chunk's (of `calls` calls): its value's outcomes, or the
/// chunk's error for each call (a broken pool, a cancelled or aborted chunk). The pool
/// refuses an answer of another shape (`transitions::answer_mismatch`); should one get
/// here all the same, each call fails rather than a call going unanswered.
fn chunk_outcomes(
    outcome: Result<TaskValue, TaskError>,
    calls: usize,
) -> Vec<Result<TaskValue, TaskError>> {
    match outcome.map(TaskValue::into_chunk) {
        Ok(Some(outcomes)) if outcomes.len() == calls => outcomes,
        Ok(_) => {
            let error = TaskError::BrokenPool {
                reason: format!(
                    "a chunk of {calls} calls was answered with a value of another shape"
                ),
            };
            vec![Err(error); calls]
        }
        Err(error) => vec![Err(error); calls],
    }
}

impl std::fmt::Debug for Map<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field(
                "in_flight",
                &self.pending.iter().map(Pending::calls).sum::<usize>(),
            )
            .field("more_input", &self.source.is_some())
            .finish()
    }
}

impl<'a> Map<'a> {
    /// A map over what `executor` was handed already.
    pub(crate) fn new(executor: &'a dyn Executor, pending: VecDeque<Pending>) -> Map<'a> {
        Map {
            executor,
            pending,
            source: None,
            buffer: usize::MAX,
        }
    }

    /// The futures submitted and not yet yielded, in input order. A call of a chunk that a
    /// process pool runs as one task (`map_chunked`) gets its future here, made on first
    /// use; it is resolved when the whole chunk is done, and is never seen running.
    pub fn in_flight(&self) -> impl Iterator<Item = &TaskFuture> {
        self.pending.iter().flat_map(|pending| match pending {
            Pending::Call(future) => std::slice::from_ref(future),
            Pending::Chunk(chunk) => chunk.views(),
        })
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
            self.pending.push_back(Pending::Call(future));
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
        let (outcome, last) = self.pending.front_mut()?.next_outcome();
        if last {
            self.pending.pop_front();
        }
        Some(outcome)
    }
}

impl Drop for Map<'_> {
    fn drop(&mut self) {
        for pending in &self.pending {
            pending.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::Val;

    #[test]
    fn a_chunk_answered_wrongly_fails_each_of_its_calls() {
        let two = TaskValue::chunk(vec![Ok(TaskValue::unit()), Err(TaskError::Cancelled)]);
        assert_eq!(
            chunk_outcomes(Ok(two.clone()), 2),
            [Ok(TaskValue::unit()), Err(TaskError::Cancelled)]
        );
        for outcome in [Ok(two), Ok(TaskValue::from(Val::U8(7)))] {
            let outcomes = chunk_outcomes(outcome, 3);
            assert_eq!(outcomes.len(), 3);
            for outcome in outcomes {
                let error = outcome.unwrap_err();
                assert!(
                    matches!(&error, TaskError::BrokenPool { reason } if reason.contains("a chunk of 3 calls")),
                    "{error}"
                );
            }
        }
        let lost = TaskError::BrokenPool {
            reason: "lost".into(),
        };
        assert_eq!(
            chunk_outcomes(Err(lost.clone()), 2),
            [Err(lost.clone()), Err(lost)]
        );
    }
}
