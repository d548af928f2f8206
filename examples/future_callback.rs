//! "Future Callbacks": a done-callback runs when the task finishes, whatever the outcome.
use wasmpool::{Executor, TaskComponent, TaskFuture, ThreadPoolExecutor};

fn done(n: u32, f: &TaskFuture) {
    if f.is_cancelled() {
        println!("{n}: canceled");
    } else if f.is_done() {
        match f.result() {
            Ok(value) => println!("{n}: value returned: {value}"),
            Err(error) => println!("{n}: error returned: {error}"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ThreadPoolExecutor::builder()
        .workers(2)
        .output(wasmpool::OutputMode::Plain)
        .build()?;
    println!("main: starting");
    let f = pool.submit(component.call_wave("labeled-task(5)")?)?;
    f.add_done_callback(|f| done(5, f));
    f.result()?;
    Ok(())
}
