//! Finished tasks on their way from the pool's threads to `map`'s main loop, with one
//! wake-up for many of them.
//!
//! A done callback (on a pool thread) adds its task to a shared list; it wakes the main
//! loop only when the loop is waiting and the list has reached the loop's threshold. A
//! wake-up costs the pool thread a syscall and the loop a context switch: with a threshold
//! of a few dozen short tasks, a busy pool pays one per batch instead of one per task.
//!
//! Invariant (no lost wake-up): the loop stores its threshold, then looks at the list under
//! its lock; a callback adds under the lock, then reads the threshold. Either the loop sees
//! the task, or the callback sees the threshold.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};

/// A finished task: its index and which attempt finished.
pub type Done = (u64, u32);

/// The main loop's end.
pub struct Finished {
    shared: Arc<Shared>,
    wake: Receiver<()>,
    /// The list taken last time, emptied, so its allocation is reused.
    spare: Vec<Done>,
}

/// A pool thread's end: what a done callback holds.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
}

struct Shared {
    list: Mutex<Vec<Done>>,
    /// How many finished tasks wake the loop; `usize::MAX` while it is not waiting.
    threshold: AtomicUsize,
    /// Holds at most one wake-up: a second one while the first is unread adds nothing.
    wake: Sender<()>,
}

impl Finished {
    pub fn new() -> Finished {
        let (wake_tx, wake) = crossbeam_channel::bounded(1);
        Finished {
            shared: Arc::new(Shared {
                list: Mutex::new(Vec::new()),
                threshold: AtomicUsize::new(usize::MAX),
                wake: wake_tx,
            }),
            wake,
            spare: Vec::new(),
        }
    }

    /// What a done callback reports to.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            shared: self.shared.clone(),
        }
    }

    /// Takes every task finished since the last call, oldest first.
    pub fn take(&mut self) -> Vec<Done> {
        let mut list = self
            .shared
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *list, &mut self.spare);
        std::mem::take(&mut self.spare)
    }

    /// Gives back a list returned by [`take`](Self::take), for its allocation.
    pub fn recycle(&mut self, mut list: Vec<Done>) {
        list.clear();
        self.spare = list;
    }

    /// Before the loop waits: from now on, `threshold` finished tasks (at least one) wake
    /// it. Returns `false` when that many are already there (then it should not wait).
    pub fn arm(&self, threshold: usize) -> bool {
        let threshold = threshold.max(1);
        self.shared.threshold.store(threshold, Ordering::SeqCst);
        let ready = self
            .shared
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        ready < threshold
    }

    /// After the loop waited: callbacks stop trying to wake it.
    pub fn disarm(&self) {
        self.shared.threshold.store(usize::MAX, Ordering::SeqCst);
    }

    /// Ready when an armed threshold was reached (possibly spuriously: check the list).
    pub fn wake(&self) -> &Receiver<()> {
        &self.wake
    }
}

impl Reporter {
    /// Reports a finished task (from any thread).
    pub fn report(&self, done: Done) {
        let count = {
            let mut list = self
                .shared
                .list
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            list.push(done);
            list.len()
        };
        if count >= self.shared.threshold.load(Ordering::SeqCst) {
            // Full: a wake-up is already waiting to be read. Disconnected: the map is over.
            let _ = self.shared.wake.try_send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_wakes_the_loop_once_and_only_when_reached() {
        let mut finished = Finished::new();
        let reporter = finished.reporter();
        assert!(finished.arm(3));
        reporter.report((0, 1));
        reporter.report((1, 1));
        assert!(finished.wake().try_recv().is_err(), "2 of 3: no wake-up");
        reporter.report((2, 1));
        reporter.report((3, 1));
        assert!(
            finished.wake().try_recv().is_ok(),
            "the third woke the loop"
        );
        assert!(finished.wake().try_recv().is_err(), "one wake-up for both");
        finished.disarm();
        let taken = finished.take();
        assert_eq!(taken, vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
        finished.recycle(taken);
        assert!(finished.take().is_empty());
    }

    #[test]
    fn arming_below_what_is_already_there_says_do_not_wait() {
        let finished = Finished::new();
        finished.reporter().report((7, 2));
        assert!(!finished.arm(1));
        assert!(finished.arm(2));
        finished.disarm();
        finished.reporter().report((8, 1));
        assert!(
            finished.wake().try_recv().is_err(),
            "a disarmed loop is not woken"
        );
    }

    #[test]
    fn reports_from_many_threads_all_arrive_and_wake_a_waiting_loop() {
        let mut finished = Finished::new();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let reporter = finished.reporter();
                std::thread::spawn(move || {
                    for i in 0..250 {
                        reporter.report((t * 1000 + i, 1));
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        while seen.len() < 1000 {
            if finished.arm(1000 - seen.len()) {
                finished
                    .wake()
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .expect("a wake-up once the threshold is reached");
            }
            finished.disarm();
            seen.extend(finished.take());
        }
        for thread in threads {
            thread.join().expect("reporter thread");
        }
        seen.sort_unstable();
        let expected: Vec<Done> = (0..4u64)
            .flat_map(|t| (0..250).map(move |i| (t * 1000 + i, 1)))
            .collect();
        assert_eq!(seen, expected);
    }
}
