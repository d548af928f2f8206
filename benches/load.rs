//! Compile vs cached load of the fixtures component: `Runtime::load_bytes` (cranelift
//! compiles it) against `Runtime::load_precompiled` (deserializes a `.cwasm` made by
//! `TaskComponent::precompiled`). Both include linking and `instantiate_pre`.
//!
//! `cargo bench --bench load` (or `--profile dev` for a quick run).

mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

fn load(c: &mut Criterion) {
    let component = common::fixtures();
    let runtime = component.runtime().clone();
    let bytes = std::fs::read(env!("WASMPOOL_FIXTURES_WASM")).expect("fixtures");
    let precompiled = component.precompiled().expect("serialize");
    let mut group = c.benchmark_group("load-fixtures");
    group.sample_size(10);
    group.bench_function("compile", |b| {
        b.iter(|| runtime.load_bytes(&bytes, "fixtures").expect("load"))
    });
    group.bench_function("precompiled", |b| {
        // SAFETY: the bytes come from `precompiled()` of this very runtime.
        b.iter(|| unsafe { runtime.load_precompiled(&precompiled, "fixtures") }.expect("load"))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = load
}
criterion_main!(benches);
