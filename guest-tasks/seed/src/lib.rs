//! `seed-tasks`: the guest component for the `seed` world of `wit/tasks`.
//!
//! These are the tasks of the `concurrent.futures` tour in Python Module of the
//! Week, rewritten in Rust and compiled to a WebAssembly component that
//! wasmpool's thread and process pools run. Output goes to the host through
//! WASI stdout, sleeping through WASI clocks.

use std::hash::{BuildHasher, RandomState};
use std::thread::sleep;
use std::time::Duration;

wit_bindgen::generate!({ world: "seed", path: "../../wit/tasks" });

struct SeedTasks;

impl Guest for SeedTasks {
    fn sleep_task(n: u32) -> f64 {
        println!("sleeping {n}");
        sleep(Duration::from_secs_f64(tenth(n)));
        println!("done with {n}");
        tenth(n)
    }

    fn labeled_task(n: u32) -> f64 {
        println!("{n}: sleeping");
        sleep(Duration::from_millis(500));
        println!("{n}: done");
        tenth(n)
    }

    fn random_sleep_task(n: u32) -> (u32, f64) {
        sleep(Duration::from_secs_f64(random_fraction(n)));
        (n, tenth(n))
    }

    fn check_task(n: u32) -> Result<f64, String> {
        println!("{n}: starting");
        if n.is_multiple_of(5) {
            Err(format!("the value {n} is no good"))
        } else {
            Ok(tenth(n))
        }
    }

    fn print_task(n: u32) {
        println!("{n}");
    }

    fn quick_task(n: u32) -> u32 {
        n
    }

    fn noop() {}
}

/// `n / 10` as a float, the result most of the tour's tasks return.
fn tenth(n: u32) -> f64 {
    f64::from(n) / 10.0
}

/// A random number in `[0, 1)`.
///
/// std seeds `RandomState` from WASI's `get-random-u64` (once per instance, then
/// it varies the keys per call), so hashing `n` with a fresh one is random
/// enough for a sleep and needs no extra dependency.
fn random_fraction(n: u32) -> f64 {
    let bits = RandomState::new().hash_one(n);
    // The top 53 bits fill an f64 mantissa exactly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

export!(SeedTasks);
