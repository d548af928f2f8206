//! Throughput by worker count: trivial tasks (1000 × `noop()`, fresh instance each) and
//! CPU-bound ones (64 × `fib(25)`) on 1 and 2 workers of a thread pool (and of a process
//! pool, if it builds). 2 workers should take about half the time of 1 on this 2-core machine.
//!
//! `cargo bench --bench scaling` (or `--profile dev` for a quick run).

mod common;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmpool::{Call, InstancePolicy};

fn group(c: &mut Criterion, name: &str, calls: &[Call]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(calls.len() as u64));
    group.sample_size(10);
    for workers in [1, 2] {
        let pool = common::thread_pool(workers, InstancePolicy::Fresh);
        common::run_all(&pool, &calls[..2]);
        group.bench_function(BenchmarkId::new("thread", workers), |b| {
            b.iter(|| common::run_all(&pool, calls))
        });
        if let Some(pool) = common::process_pool(workers, InstancePolicy::Fresh) {
            common::run_all(&pool, &calls[..2]);
            group.bench_function(BenchmarkId::new("process", workers), |b| {
                b.iter(|| common::run_all(&pool, calls))
            });
        }
    }
    group.finish();
}

fn scaling(c: &mut Criterion) {
    let component = common::fixtures();
    group(
        c,
        "trivial-1000",
        &common::calls(&component, "noop()", 1000),
    );
    group(c, "fib25x64", &common::calls(&component, "fib(25)", 64));
    let mut native = c.benchmark_group("fib25-one-call");
    native.bench_function("native", |b| {
        b.iter(|| common::native_fib(std::hint::black_box(25)))
    });
    native.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = scaling
}
criterion_main!(benches);
