//! "Using map() with a Basic Thread Pool": `map` returns results in input order, whatever
//! order the tasks finish in.
use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor, Val};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::new(2)?;
    println!("main: starting");
    let calls = (1..=5)
        .rev()
        .map(|n| component.call("sleep-task", [Val::U32(n)]))
        .collect::<Result<Vec<_>, _>>()?;
    let results = pool.map(calls)?;
    println!("main: unprocessed results {results:?}");
    println!("main: waiting for real results");
    let real = results
        .map(|r| r.map(|v| v.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    println!("main: results: [{}]", real.join(", "));
    Ok(())
}
