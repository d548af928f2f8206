//! Awaiting a [`TaskFuture`] in async code: [`IntoFuture`] and the [`ResultFuture`] it makes.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{TaskFuture, next_key, outcome_of};
use crate::{TaskError, TaskValue};

/// Awaiting a future yields its outcome, like [`TaskFuture::result`], without blocking a
/// thread: the task's waker is woken when the future is done.
///
/// ```
/// use wasmpool::{promise, TaskValue};
///
/// let (promise, future) = promise();
/// promise.set_result(TaskValue::unit());
/// let outcome = futures::executor::block_on(async { future.await });
/// assert_eq!(outcome, Ok(TaskValue::unit()));
/// ```
impl IntoFuture for TaskFuture {
    type Output = Result<TaskValue, TaskError>;
    type IntoFuture = ResultFuture;

    fn into_future(self) -> ResultFuture {
        ResultFuture {
            future: self,
            key: None,
        }
    }
}

impl IntoFuture for &TaskFuture {
    type Output = Result<TaskValue, TaskError>;
    type IntoFuture = ResultFuture;

    fn into_future(self) -> ResultFuture {
        self.clone().into_future()
    }
}

/// The [`Future`] that `.await`ing a [`TaskFuture`] polls: it resolves to the task's outcome.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ResultFuture {
    future: TaskFuture,
    /// The key of our waker slot in the shared state, once registered.
    key: Option<u64>,
}

impl Future for ResultFuture {
    type Output = Result<TaskValue, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut inner = this.future.lock();
        if inner.state.is_done() {
            // The terminal transition already dropped our waker slot.
            this.key = None;
            return Poll::Ready(outcome_of(&inner));
        }
        let key = *this.key.get_or_insert_with(next_key);
        match inner.wakers.iter_mut().find(|(k, _)| *k == key) {
            Some((_, waker)) => {
                if !waker.will_wake(cx.waker()) {
                    waker.clone_from(cx.waker());
                }
            }
            None => inner.wakers.push((key, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for ResultFuture {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.future.lock().wakers.retain(|(k, _)| *k != key);
        }
    }
}
