//! The process pool next to the thread pool, in one run: throughput of trivial tasks on two
//! workers (batches of submits, then every result), and the submit→result round trip of
//! one task on an idle pool.
//!
//! `cargo bench --bench process_pool` (add `-- --measurement-time 5` for a quicker run).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wasmpool::{
    Call, Executor, OutputMode, ProcessPoolExecutor, TaskComponent, ThreadPoolExecutor, Val,
};

const BATCH: u64 = 1000;

fn seed() -> TaskComponent {
    TaskComponent::from_file(env!("WASMPOOL_SEED_WASM")).expect("the seed component loads")
}

/// A thread pool and a process pool (default pipeline depth), two workers each.
fn pools() -> [(&'static str, Box<dyn Pool>); 2] {
    let threads = ThreadPoolExecutor::builder()
        .workers(2)
        .output(OutputMode::Discard)
        .build()
        .expect("thread pool");
    [
        ("thread", Box::new(threads)),
        ("process", Box::new(process_pool(None))),
    ]
}

fn process_pool(depth: Option<usize>) -> ProcessPoolExecutor {
    let builder = ProcessPoolExecutor::builder()
        .workers(2)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(OutputMode::Discard);
    match depth {
        Some(depth) => builder.pipeline_depth(depth),
        None => builder,
    }
    .build()
    .expect("process pool")
}

/// The part of [`Executor`] the bench needs, object-safe.
trait Pool {
    fn run(&self, calls: &[Call]);
}

impl<E: Executor> Pool for E {
    fn run(&self, calls: &[Call]) {
        let futures: Vec<_> = calls
            .iter()
            .map(|c| self.submit(c.clone()).expect("submit"))
            .collect();
        for f in futures {
            f.result().expect("the task succeeds");
        }
    }
}

fn throughput(c: &mut Criterion) {
    let component = seed();
    let calls: Vec<Call> = (0..BATCH)
        .map(|n| {
            component
                .call("quick-task", [Val::U32(n as u32)])
                .expect("call")
        })
        .collect();
    let mut group = c.benchmark_group("trivial-tasks-2-workers");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    for (name, pool) in pools() {
        pool.run(&calls[..10]); // warm: components loaded, workers started
        group.bench_function(BenchmarkId::new("pool", name), |b| {
            b.iter(|| pool.run(&calls))
        });
    }
    // How much the pipeline depth matters (handed tasks count as running).
    for depth in [1, 4, 8] {
        let pool = process_pool(Some(depth));
        pool.run(&calls[..10]);
        group.bench_function(BenchmarkId::new("process-depth", depth), |b| {
            b.iter(|| pool.run(&calls))
        });
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let component = seed();
    let call = [component.call("quick-task", [Val::U32(7)]).expect("call")];
    let mut group = c.benchmark_group("submit-result-round-trip");
    for (name, pool) in pools() {
        pool.run(&call);
        group.bench_function(BenchmarkId::new("pool", name), |b| {
            b.iter(|| pool.run(&call))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = throughput, round_trip
}
criterion_main!(benches);
