//! How many tasks `map` keeps submitted and not yet printed (with `--as-completed`: not yet
//! finished): its window. The window bounds `map`'s memory, and how long a task that runs
//! again (`--retries`) waits behind the others, so it is only as deep as the tasks need:
//! about [`WORK_AHEAD`] of work per worker at the tasks' mean time, between
//! [`MIN_PER_WORKER`] and [`MAX_PER_WORKER`] tasks.
//!
//! Why [`WORK_AHEAD`]: a process pool hands each worker of short tasks 5 ms of work ahead
//! (`process_pool/pace.rs`) and refills it from the pool's queue; the window must hold that
//! pipeline full and as much again queued behind it while the main loop wakes to refill
//! the window. At a fixed 64 per worker it could not: on 200,000 fresh `math.add` lines
//! (2 workers, `--pool process`, twelve rounds taking turns) `map` ran 58–100k lines/s at
//! 64 and 72–122k at 512, ahead in every round (256: 63–103k in six). The thread pool, which
//! its workers drain directly, showed no difference beyond the noise.

use std::time::Duration;

/// The work the window holds per worker, at the tasks' mean time.
pub const WORK_AHEAD: Duration = Duration::from_millis(10);

/// The window per worker before a task has run, and for tasks of [`WORK_AHEAD`] / 64 or
/// longer.
pub const MIN_PER_WORKER: usize = 64;

/// The window per worker however short the tasks: the deepest pipeline a process pool
/// hands a worker (`process_pool/pace.rs`).
pub const MAX_PER_WORKER: usize = 512;

/// The window for `workers` workers and tasks that take `mean` seconds (`None`: none has
/// run yet).
pub fn window(mean: Option<f64>, workers: usize) -> usize {
    let per_worker = match mean {
        None => MIN_PER_WORKER,
        Some(mean) => {
            let fits = WORK_AHEAD.as_secs_f64() / mean.max(1e-9);
            if fits >= MAX_PER_WORKER as f64 {
                MAX_PER_WORKER
            } else {
                (fits.ceil() as usize).max(MIN_PER_WORKER)
            }
        }
    };
    workers.max(1).saturating_mul(per_worker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_the_work_ahead_of_short_tasks_only() {
        // Nothing ran yet: the floor.
        assert_eq!(window(None, 2), 2 * MIN_PER_WORKER);
        // 17 µs tasks (a fresh `math.add`): 10 ms of them is more than the ceiling.
        assert_eq!(window(Some(17e-6), 2), 2 * MAX_PER_WORKER);
        assert_eq!(window(Some(0.0), 2), 2 * MAX_PER_WORKER);
        // 50 µs tasks: 200 per worker.
        assert_eq!(window(Some(50e-6), 3), 3 * 200);
        // Tasks of a millisecond or more (sleeps, computations): the floor.
        assert_eq!(window(Some(0.002), 2), 2 * MIN_PER_WORKER);
        assert_eq!(window(Some(60.0), 2), 2 * MIN_PER_WORKER);
        // No workers reported: as for one.
        assert_eq!(window(None, 0), MIN_PER_WORKER);
    }
}
