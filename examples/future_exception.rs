//! "Exceptions in Tasks": a guest's `err(..)` is the error of its future, seen by both
//! `error()` and `result()`.
use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::builder()
        .workers(2)
        .output(wasmpool::OutputMode::Plain)
        .build()?;
    println!("main: starting");
    let f = pool.submit(component.call_wave("check-task(5)")?)?;
    if let Some(error) = f.error() {
        println!("main: error: {error}");
    }
    if let Err(e) = f.result() {
        println!("main: saw error \"{e}\" when accessing result");
    }
    Ok(())
}
