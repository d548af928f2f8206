//! What budgets cost on CPU-bound work: fib(30) under each engine setting, one worker.
//!
//! `cargo bench --bench budgets`. Compare the groups' times: `plain` has neither epoch
//! checks nor fuel; `epoch` is the default (deadlines and abort); `fuel`; and both.

use criterion::{Criterion, criterion_group, criterion_main};
use wasmpool::{Budget, Executor, OutputMode, Runtime, RuntimeConfig, ThreadPoolExecutor};

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

criterion_group!(benches, fib_under_budgets);
criterion_main!(benches);
