//! Fresh instances against reuse on a heavy guest: the Python component of
//! `tests/python-guest` (CPython inside, ~18 MB; `sh tests/python-guest/build.sh` builds
//! it), at `$WASMPOOL_PYTHON_GUEST`. A fresh instance per task starts an interpreter for
//! every task; `InstancePolicy::Reuse` starts one per worker. Without the variable the rows
//! are skipped, with a note.

use std::time::Instant;

use wasmpool::{InstancePolicy, TaskComponent};

use crate::{Row, Unit, common};

/// The workload of the rate rows.
pub const WORKLOAD: &str =
    "heavy guest (CPython component, ~18 MB): N × add(i, 1), library thread pool of 2";
/// The workload of the compile row.
const COMPILE: &str = "heavy guest: compiling the CPython component once (cranelift)";

/// Tasks per measurement with a fresh instance each, and with reused instances (divided by
/// 4 with `--quick`).
const FRESH: usize = 400;
const REUSED: usize = 20_000;

const FRESH_RUNNER: &str = "wasmpool thread pool, fresh instance per task";

/// The rows: the compile time, then the rate with fresh instances and with reuse (best of
/// three after a warm-up, as every rate row); none when `WASMPOOL_PYTHON_GUEST` is unset.
pub fn rows(quick: bool) -> Vec<Row> {
    let Some(path) = std::env::var_os("WASMPOOL_PYTHON_GUEST").filter(|p| !p.is_empty()) else {
        eprintln!(
            "the heavy-guest rows are skipped: set WASMPOOL_PYTHON_GUEST to the component \
             that `sh tests/python-guest/build.sh` builds"
        );
        return Vec::new();
    };
    let scale = if quick { 4 } else { 1 };
    eprintln!("heavy guest: compiling {} ...", path.display());
    let started = Instant::now();
    let component =
        TaskComponent::from_file(&path).unwrap_or_else(|e| panic!("WASMPOOL_PYTHON_GUEST: {e}"));
    let compile = started.elapsed().as_secs_f64();
    let adds = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| {
                component
                    .call_wave(&format!("add({i}, 1)"))
                    .expect("add(i, 1) fits the guest")
            })
            .collect()
    };
    let mut rows = vec![crate::row(
        COMPILE,
        "TaskComponent::from_file",
        compile,
        Unit::Seconds,
    )];
    eprintln!("{WORKLOAD} ...");
    let pool = common::thread_pool(2, InstancePolicy::Fresh);
    rows.push(crate::rate_row(
        WORKLOAD,
        FRESH_RUNNER,
        &pool,
        &adds(FRESH / scale),
        &[],
    ));
    drop(pool);
    let pool = common::thread_pool(2, common::REUSE);
    rows.push(crate::rate_row(
        WORKLOAD,
        "wasmpool thread pool, InstancePolicy::Reuse",
        &pool,
        &adds(REUSED / scale),
        &[FRESH_RUNNER],
    ));
    rows
}
