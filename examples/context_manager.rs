//! "Context Manager": dropping the executor waits for every task it was given, like
//! leaving a `with` block.
use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    {
        let pool = ThreadPoolExecutor::builder()
            .workers(2)
            .output(wasmpool::OutputMode::Plain)
            .build()?;
        println!("main: starting");
        for n in 1..=4 {
            pool.submit(component.call_wave(&format!("print-task({n})"))?)?;
        }
    } // the pool is dropped here: every task has run
    println!("main: done");
    Ok(())
}
