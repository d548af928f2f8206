//! What budgets cost on CPU-bound work: fib(30) under each engine setting, one worker.
//!
//! `cargo bench --bench budgets`. Compare the groups' times: `plain` has neither epoch
//! checks nor fuel; `epoch` is the default (deadlines and abort); `fuel`; and both.
//!
//! `trivial-task` is what a deadline costs per task: batches of `noop()` on one worker,
//! with no deadline and with one, in a fresh instance each and in a kept one (time per
//! task = 1 / thrpt).

mod common;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmpool::{
    Budget, Executor, InstancePolicy, OutputMode, Runtime, RuntimeConfig, ThreadPoolExecutor,
};

fn fib_under_budgets(c: &mut Criterion) {
    let settings = [
        ("plain", RuntimeConfig::default().interruptible(false)),
        ("epoch", RuntimeConfig::default()),
        (
            "fuel",
            RuntimeConfig::default().interruptible(false).fuel(true),
        ),
        ("epoch+fuel", RuntimeConfig::default().fuel(true)),
    ];
    let mut group = c.benchmark_group("fib30");
    group.sample_size(20);
    for (name, config) in settings {
        let fuel = config.fuel;
        let component = Runtime::with_config(config)
            .and_then(|rt| rt.load(env!("WASMPOOL_FIXTURES_WASM")))
            .expect("fixtures load");
        let pool = ThreadPoolExecutor::builder()
            .workers(1)
            .output(OutputMode::Discard)
            .build()
            .expect("pool");
        let mut call = component.call_wave("fib(30)").expect("call");
        if fuel {
            call = call.with_budget(Budget::default().fuel(u64::MAX / 2));
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                pool.submit(call.clone())
                    .expect("submit")
                    .result()
                    .expect("fib")
            })
        });
    }
    group.finish();
}

/// Tasks per batch in `trivial-task`.
const BATCH: usize = 200;

fn trivial_task_with_and_without_deadline(c: &mut Criterion) {
    let component = common::fixtures();
    let noop = component.call_wave("noop()").expect("call");
    let far = Budget::default().timeout(Duration::from_secs(3600));
    let mut group = c.benchmark_group("trivial-task");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for (name, policy, budget) in [
        (
            "fresh/no-deadline",
            InstancePolicy::Fresh,
            Budget::default(),
        ),
        ("fresh/deadline", InstancePolicy::Fresh, far.clone()),
        ("reuse/no-deadline", common::REUSE, Budget::default()),
    ] {
        let pool = common::thread_pool(1, policy);
        let calls = vec![noop.clone().with_budget(budget); BATCH];
        common::run_all(&pool, &calls[..10]); // warm: the worker started, the instance made
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| common::run_all(&pool, &calls))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    fib_under_budgets,
    trivial_task_with_and_without_deadline
);
criterion_main!(benches);
