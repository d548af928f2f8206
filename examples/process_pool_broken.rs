//! The broken pool: when a worker process dies abruptly, the pool is broken; the tasks it
//! had, and every task after, fail with a broken-pool error that says which worker died
//! and how.
use wasmpool::{Executor, OutputMode, ProcessPoolExecutor, TaskComponent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    wasmpool::serve_worker_if_requested();
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ProcessPoolExecutor::builder()
        .workers(2)
        .output(OutputMode::Discard)
        .build()?;

    println!("getting the pid for one worker");
    let f1 = pool.submit(component.call_wave("quick-task(1)")?)?;
    f1.result()?;
    let pid = f1.report().map(|r| r.pid).unwrap_or_default();

    println!("killing process {pid}");
    let target = rustix::process::Pid::from_raw(i32::try_from(pid)?).ok_or("no pid")?;
    rustix::process::kill_process(target, rustix::process::Signal::KILL)?;

    println!("submitting another task");
    // A second-long task: even if it went to the other worker, the pool breaks first.
    let outcome = pool
        .submit(component.call_wave("sleep-task(10)")?)
        .map_err(|e| e.to_string())
        .and_then(|f2| f2.result().map_err(|e| e.to_string()));
    match outcome {
        Ok(value) => println!("unexpected: the task returned {value}"),
        Err(e) => println!("could not start new tasks: {e}"),
    }
    Ok(())
}
