//! How many ready tasks `map` submits as one batch. A batch runs on one worker, in order:
//! it saves a queue operation and a wake-up (a message to a worker process) per task, and
//! costs a task behind a slow one in its batch the wait. So only tasks known to be short
//! are batched, about [`BATCH_TIME`] of work at a time.

use std::time::Duration;

/// The work one batch stands for, at the tasks' mean time.
pub const BATCH_TIME: Duration = Duration::from_millis(1);

/// The most tasks in one batch.
pub const MAX_BATCH: usize = 32;

/// How many of `ready` tasks go in one batch, for `workers` workers and tasks that take
/// `mean` seconds: one while no task has run, then what one worker runs in about
/// [`BATCH_TIME`], no more than an even share of `ready` per worker, and at most
/// [`MAX_BATCH`]. Tasks slower than [`BATCH_TIME`] go one by one.
pub fn batch_size(mean: Option<f64>, ready: usize, workers: usize) -> usize {
    let Some(mean) = mean else {
        return 1;
    };
    let fits = BATCH_TIME.as_secs_f64() / mean.max(1e-9);
    let fits = if fits >= MAX_BATCH as f64 {
        MAX_BATCH
    } else {
        fits as usize
    };
    fits.min(ready.div_ceil(workers.max(1))).clamp(1, MAX_BATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_of_short_tasks_only_and_spread_over_the_workers() {
        // Nothing ran yet: one by one.
        assert_eq!(batch_size(None, 100, 2), 1);
        // Tasks of 10 µs: as many as the cap allows, but every worker gets a share.
        assert_eq!(batch_size(Some(10e-6), 1000, 2), MAX_BATCH);
        assert_eq!(batch_size(Some(10e-6), 10, 2), 5);
        assert_eq!(batch_size(Some(10e-6), 1, 2), 1);
        // Tasks of 250 µs: about BATCH_TIME of work per batch.
        assert_eq!(batch_size(Some(250e-6), 1000, 2), 4);
        // Tasks slower than BATCH_TIME (a sleep, a long computation): alone.
        assert_eq!(batch_size(Some(0.002), 1000, 2), 1);
        assert_eq!(batch_size(Some(60.0), 1000, 2), 1);
    }
}
