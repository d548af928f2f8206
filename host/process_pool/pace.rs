//! How many tasks each worker is handed ahead: its pipeline depth.
//!
//! A worker that finishes a task starts the next one handed to it at once; if none is
//! there, it idles until the pool's next frame arrives: a result's trip to the pool, the
//! pool's dispatch, and the frame's trip back, two wake-ups of threads that compete with the
//! workers for the same cores (tens to hundreds of µs on a loaded machine). A depth of 2
//! hides that trip only for tasks longer than it; a trivial task (3 µs reused, 26 µs fresh)
//! left its worker idle most of the time.
//!
//! So by default the depth follows the tasks: enough tasks handed ahead to keep the worker
//! busy for [`AHEAD`], from the mean time recent tasks took in the workers, between
//! [`MIN_DEPTH`] and [`MAX_DEPTH`]. Long tasks keep the depth at 2 (as before, and as
//! CPython hands one extra task per pool); short ones raise it. Handed tasks count as
//! running (they can no longer be cancelled), so what the depth costs is bounded in time:
//! about [`AHEAD`] of expected work per worker. A builder's `pipeline_depth(n)` fixes the
//! depth instead. [`AHEAD`] was 250 µs: 1 ms cuts the wake-ups per task on both sides by
//! more than half (unchunked fresh tasks on 2 workers, six rounds of 20,000: 25–35k context
//! switches against 61–105k, and 8–60% more tasks/s in six interleaved runs).
//!
//! It is 5 ms now, because a refill crosses four threads: the worker's writer, the pool's
//! reader, the pool's writer, the worker's reader. While every core runs an executor, each
//! of them, once woken, may wait out the running thread's time slice before it runs (Linux's
//! EEVDF scheduler lets the running thread finish its slice, 0.75 ms × (1 + log2 CPUs)),
//! so a refill asked for at half of 1 ms came late about once a refill: on 2 workers and
//! 240,000 unchunked fresh tasks, each worker ran dry ~2,400 times, idle for 0.67–0.80 s of
//! a ~3 s run. Half of 2 ms: ~800 times (0.22–0.32 s); half of 5 ms: ~310 (0.13–0.15 s);
//! half of 10 ms: ~95, no less idle time. The price: up to 5 ms of work per worker that
//! can no longer be cancelled (a batch's is 2 ms), against CPython's one task per pool.
//!
//! An adaptive pipeline is refilled when it is half empty, and then to the full depth at
//! once: the frames of several tasks travel in one write and are read in one read, where
//! topping up task by task costs two system calls and a wake-up per task on each side.
//!
//! A batch (`submit_batch`, `map_chunked`) is handed whole, so a worker refilled at half
//! depth would get its next batch only when the one it runs is nearly done: a trip that
//! took 250–350 µs on a busy two-core machine against 64 µs of tiny tasks left, and the
//! worker idled 40% of the time. So a batch of short tasks is handed as soon as the worker
//! is down to as many tasks as the batch holds (one batch running, the next one queued
//! behind it, as CPython keeps a chunk queued per pool), while the batch's expected work is
//! within [`BATCH_AHEAD`].
//!
//! Invariant: an adaptive depth is within `MIN_DEPTH..=MAX_DEPTH`, and is `MIN_DEPTH` until
//! a task has been measured.

use std::time::Duration;

/// The work each worker should have handed ahead of the task it is running.
pub(crate) const AHEAD: Duration = Duration::from_millis(5);
/// The adaptive depth's floor: one task running, one waiting.
pub(crate) const MIN_DEPTH: usize = 2;
/// The adaptive depth's ceiling, however short the tasks.
pub(crate) const MAX_DEPTH: usize = 512;
/// The most expected work of a batch that may wait in a worker behind the tasks it runs.
pub(crate) const BATCH_AHEAD: Duration = Duration::from_millis(2);
/// How much each measured task moves the mean (an exponential moving average): recent
/// tasks count most, and one long task lowers the depth at once.
const WEIGHT: f64 = 1.0 / 8.0;

/// A pool's pipeline depth: fixed by its builder, or following the tasks.
#[derive(Debug, Clone)]
pub(crate) enum Pace {
    Fixed(usize),
    /// The mean seconds a task took in a worker, once one has been measured.
    Adaptive {
        mean: Option<f64>,
    },
}

impl Pace {
    /// A depth that follows the tasks, starting at [`MIN_DEPTH`].
    pub(crate) fn adaptive() -> Pace {
        Pace::Adaptive { mean: None }
    }

    /// Takes in the times `count` tasks took in a worker, `total` together.
    pub(crate) fn record(&mut self, total: Duration, count: usize) {
        let Pace::Adaptive { mean } = self else {
            return;
        };
        if count == 0 {
            return;
        }
        let sample = total.as_secs_f64() / count as f64;
        // `count` updates of WEIGHT each, folded into one.
        let keep = (1.0 - WEIGHT).powi(i32::try_from(count).unwrap_or(i32::MAX));
        *mean = Some(match *mean {
            Some(m) => m * keep + sample * (1.0 - keep),
            None => sample,
        });
    }

    /// How many tasks a worker may have in flight.
    pub(crate) fn depth(&self) -> usize {
        match *self {
            Pace::Fixed(n) => n,
            Pace::Adaptive { mean: None } => MIN_DEPTH,
            Pace::Adaptive { mean: Some(mean) } => {
                let ahead = AHEAD.as_secs_f64() / mean.max(f64::MIN_POSITIVE);
                // One running, plus those that cover AHEAD.
                let wanted = 1.0 + ahead.ceil();
                if wanted >= MAX_DEPTH as f64 {
                    MAX_DEPTH
                } else {
                    (wanted as usize).max(MIN_DEPTH)
                }
            }
        }
    }

    /// How few tasks in flight a worker is down to before it is handed more, given `depth`:
    /// then it is filled up to `depth` at once, so that an adaptive pipeline's frames travel
    /// several to a write (a fixed depth is topped up task by task, as set).
    pub(crate) fn refill_at(&self, depth: usize) -> usize {
        match self {
            Pace::Fixed(_) => depth.saturating_sub(1),
            Pace::Adaptive { .. } => depth / 2,
        }
    }

    /// How few tasks in flight a worker is down to before the next batch, of `len` tasks,
    /// is handed to it: [`refill_at`](Self::refill_at), or `len` when the batch's expected
    /// work is within [`BATCH_AHEAD`] (adaptive pace only: a fixed depth is as set).
    pub(crate) fn refill_before(&self, depth: usize, len: usize) -> usize {
        let refill_at = self.refill_at(depth);
        match *self {
            Pace::Adaptive { mean: Some(mean) }
                if len as f64 * mean <= BATCH_AHEAD.as_secs_f64() =>
            {
                refill_at.max(len)
            }
            _ => refill_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn starts_at_the_floor_and_follows_short_tasks() {
        let mut pace = Pace::adaptive();
        assert_eq!(pace.depth(), MIN_DEPTH);
        pace.record(micros(25), 1);
        // 5 ms ahead of 25 µs tasks: 200 waiting, 1 running.
        assert_eq!(pace.depth(), 201);
        pace.record(micros(3 * 256), 256);
        assert_eq!(pace.depth(), MAX_DEPTH);
        pace.record(Duration::ZERO, 10);
        assert_eq!(pace.depth(), MAX_DEPTH);
    }

    #[test]
    fn one_long_task_brings_the_depth_down_at_once() {
        let mut pace = Pace::adaptive();
        pace.record(micros(2 * 1000), 1000);
        assert_eq!(pace.depth(), MAX_DEPTH);
        pace.record(Duration::from_millis(100), 1);
        // The mean is now above 12 ms: one task beyond the running one covers AHEAD.
        assert_eq!(pace.depth(), MIN_DEPTH);
    }

    #[test]
    fn a_fixed_depth_stays_fixed() {
        let mut pace = Pace::Fixed(1);
        pace.record(micros(1), 100);
        assert_eq!(pace.depth(), 1);
        assert_eq!(Pace::Fixed(500).depth(), 500);
    }

    #[test]
    fn an_adaptive_pipeline_is_refilled_at_half_depth() {
        let adaptive = Pace::adaptive();
        assert_eq!(adaptive.refill_at(2), 1);
        assert_eq!(adaptive.refill_at(11), 5);
        assert_eq!(adaptive.refill_at(MAX_DEPTH), MAX_DEPTH / 2);
        assert_eq!(adaptive.refill_at(1), 0);
        assert_eq!(Pace::Fixed(3).refill_at(3), 2);
        assert_eq!(Pace::Fixed(1).refill_at(1), 0);
    }

    #[test]
    fn a_batch_of_short_tasks_is_handed_while_the_one_before_it_runs() {
        let mut pace = Pace::adaptive();
        // Nothing measured yet: the half-depth mark.
        assert_eq!(pace.refill_before(2, 256), 1);
        // 2 µs tasks: 256 of them are 512 µs of work, within BATCH_AHEAD.
        pace.record(micros(2 * 64), 64);
        assert_eq!(pace.refill_before(MAX_DEPTH, 256), 256);
        // A single task (`submit`) keeps the half-depth mark.
        assert_eq!(pace.refill_before(MAX_DEPTH, 1), MAX_DEPTH / 2);
        // 1 ms tasks: a batch of 256 is far beyond BATCH_AHEAD, two of them are within.
        let mut slow = Pace::adaptive();
        slow.record(Duration::from_millis(64), 64);
        assert_eq!(slow.refill_before(MIN_DEPTH, 256), 1);
        assert_eq!(slow.refill_before(MIN_DEPTH, 2), 2);
        // A fixed depth is as set.
        assert_eq!(Pace::Fixed(4).refill_before(4, 256), 3);
    }

    #[test]
    fn nothing_measured_changes_nothing() {
        let mut pace = Pace::adaptive();
        pace.record(micros(5), 0);
        assert_eq!(pace.depth(), MIN_DEPTH);
    }
}
