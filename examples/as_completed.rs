//! "Waiting for Tasks in Any Order": `as_completed` yields each future as it finishes.
use wasmpool::{Executor, TaskComponent, ThreadPoolExecutor, as_completed};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::new(5)?;
    println!("main: starting");
    let mut wait_for = Vec::new();
    for n in (1..=5).rev() {
        wait_for.push(pool.submit(component.call_wave(&format!("random-sleep-task({n})"))?)?);
    }
    for f in as_completed(&wait_for, None) {
        println!("main: result: {}", f?.result()?);
    }
    Ok(())
}
