//! "Canceling Tasks": `cancel` succeeds only for tasks that have not started. With two
//! workers, the first two tasks start at once and the other eight can be cancelled.
use wasmpool::{Executor, TaskComponent, TaskFuture, ThreadPoolExecutor};

fn done(n: u32, f: &TaskFuture) {
    if f.is_cancelled() {
        println!("{n}: canceled");
    } else if f.is_done() {
        println!("{n}: not canceled");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::builder()
        .workers(2)
        .output(wasmpool::OutputMode::Plain)
        .build()?;
    println!("main: starting");
    let mut tasks = Vec::new();
    for n in (1..=10).rev() {
        println!("main: submitting {n}");
        let f = pool.submit(component.call_wave(&format!("labeled-task({n})"))?)?;
        f.add_done_callback(move |f| done(n, f));
        tasks.push((n, f));
    }
    // Python's two threads happen to pick up the first two tasks before `cancel` runs;
    // waiting for them to start makes that certain.
    for (_, f) in &tasks[..2] {
        f.wait_started(std::time::Duration::from_secs(10))?;
    }
    for (n, f) in tasks.iter().rev() {
        if !f.cancel() {
            println!("main: did not cancel {n}");
        }
    }
    pool.shutdown(true, false);
    Ok(())
}
