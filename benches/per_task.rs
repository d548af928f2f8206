//! Per-task cost by pool and instance policy: 1000 trivial tasks (`noop()`) through two
//! workers, submitted all at once and then collected. Criterion reports time per batch and
//! tasks/s (`thrpt`); per-task cost = 1 / thrpt.
//!
//! `cargo bench --bench per_task` (optimised), or `cargo bench --profile dev --bench
//! per_task` for a quick run (dependencies, wasmtime included, are optimised in dev too).
//! `raw-wasmtime` is the same work without a pool (one thread, new store + instantiate +
//! call + drop), on the same engine.

mod common;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmpool::{Call, InstancePolicy, PoolingConfig};

const BATCH: usize = 1000;

/// A named way of running a batch of calls, and the batch.
type Runner = (&'static str, Box<dyn Fn(&[Call])>, Vec<Call>);

fn per_task(c: &mut Criterion) {
    let pooled = common::fixtures();
    let on_demand = common::fixtures_with(None);
    let mut group = c.benchmark_group("per-task-2-workers");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);

    let mut pools: Vec<Runner> = Vec::new();
    for (name, policy, component) in [
        ("thread/fresh/pooling", InstancePolicy::Fresh, &pooled),
        ("thread/fresh/on-demand", InstancePolicy::Fresh, &on_demand),
        ("thread/reuse", common::REUSE, &pooled),
    ] {
        let pool = common::thread_pool(2, policy);
        pools.push((
            name,
            Box::new(move |calls| common::run_all(&pool, calls)),
            common::calls(component, "noop()", BATCH),
        ));
    }
    for (name, policy) in [
        ("process/fresh", InstancePolicy::Fresh),
        ("process/reuse", common::REUSE),
    ] {
        if let Some(pool) = common::process_pool(2, policy) {
            pools.push((
                name,
                Box::new(move |calls| common::run_all(&pool, calls)),
                common::calls(&pooled, "noop()", BATCH),
            ));
        }
    }
    for (name, run, calls) in &pools {
        run(&calls[..10]); // warm: workers started, component loaded
        group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| run(calls)));
    }

    let raw = Arc::new(common::Raw::new(pooled.runtime()));
    group.bench_function(BenchmarkId::from_parameter("raw-wasmtime/1-thread"), |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                raw.fresh_noop();
            }
        })
    });
    group.bench_function(BenchmarkId::from_parameter("raw-wasmtime/2-threads"), |b| {
        b.iter(|| raw.fresh_rate(2, BATCH / 2))
    });
    let raw_on_demand = Arc::new(common::Raw::new(on_demand.runtime()));
    group.bench_function(
        BenchmarkId::from_parameter("raw-wasmtime/2-threads/on-demand"),
        |b| b.iter(|| raw_on_demand.fresh_rate(2, BATCH / 2)),
    );
    // How much memory kept resident matters (pagemap scan resets only dirty pages).
    for keep in [0usize, 64 << 10, 1 << 20, 4 << 20] {
        let component = common::fixtures_with(Some(
            PoolingConfig::default()
                .memory_keep_resident(keep)
                .table_keep_resident(keep),
        ));
        let pool = common::thread_pool(2, InstancePolicy::Fresh);
        let calls = common::calls(&component, "noop()", BATCH);
        common::run_all(&pool, &calls[..10]);
        group.bench_function(BenchmarkId::new("thread/fresh/keep-resident", keep), |b| {
            b.iter(|| common::run_all(&pool, &calls))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = per_task
}
criterion_main!(benches);
