//! "Scheduling Individual Tasks": `submit` one task and watch its future's state change.
use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::new(2)?;
    println!("main: starting");
    let f = pool.submit(component.call_wave("sleep-task(5)")?)?;
    println!("main: future: {f:?}");
    println!("main: waiting for results");
    let result = f.result()?;
    println!("main: result: {result}");
    println!("main: future after result: {f:?}");
    Ok(())
}
