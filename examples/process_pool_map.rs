//! "Process Pools": the same API as the thread pool, on worker processes. Each task's report
//! names the process that ran it; the two workers are reused for all five tasks.
//!
//! This program is its own worker program: a process pool starts the running program again
//! as its workers (like Python's *spawn*), and the first line of `main` turns such a copy
//! into a worker. (The `wasmpool` binary serves too: `.worker_program(path)`.)
use wasmpool::{Executor, ProcessPoolExecutor, TaskComponent, Val};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    wasmpool::serve_worker_if_requested();
    let component = TaskComponent::from_file(env!("WASMPOOL_SEED_WASM"))?;
    let pool = ProcessPoolExecutor::new(2)?;
    let futures = (1..=5)
        .rev()
        .map(|n| {
            pool.submit(component.call("quick-task", [Val::U32(n)])?)
                .map_err(Into::into)
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    for f in futures {
        let n = f.result()?;
        let pid = f.report().map(|r| r.pid).unwrap_or_default();
        println!("ran task {n} in process {pid}");
    }
    Ok(())
}
