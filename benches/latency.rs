//! Submit→result round trip of one trivial task (`noop()`) on an idle pool of 2 workers,
//! thread and process pools, fresh instance and instance reuse. Criterion's `time` is the
//! round trip (its median is the target's number).
//!
//! `cargo bench --bench latency` (or `--profile dev` for a quick run).

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use wasmpool::InstancePolicy;

fn latency(c: &mut Criterion) {
    let component = common::fixtures();
    let call = component.call_wave("noop()").expect("call");
    let mut group = c.benchmark_group("round-trip-idle");
    for (name, policy) in [("fresh", InstancePolicy::Fresh), ("reuse", common::REUSE)] {
        let pool = common::thread_pool(2, policy);
        common::round_trip(&pool, &call);
        group.bench_function(BenchmarkId::new("thread", name), |b| {
            b.iter(|| common::round_trip(&pool, &call))
        });
        if let Some(pool) = common::process_pool(2, policy) {
            common::round_trip(&pool, &call);
            group.bench_function(BenchmarkId::new("process", name), |b| {
                b.iter(|| common::round_trip(&pool, &call))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::short_runs();
    targets = latency
}
criterion_main!(benches);
