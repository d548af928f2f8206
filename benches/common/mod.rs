//! What the bench binaries share: the fixture component, pools built the same way
//! everywhere, and the raw-wasmtime baseline (new store + instantiate + call + drop, on the
//! same engine as wasmpool's runtime, without any pool around it).

#![allow(dead_code)] // each bench binary uses a part of this

pub mod ir_record;

use std::future::Future as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmpool::{
    Call, Executor, InstancePolicy, OutputMode, PoolingConfig, ProcessPoolExecutor, Runtime,
    RuntimeConfig, TaskComponent, ThreadPoolExecutor,
};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, InstancePre, Linker, TypedFunc};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The chunk size of every chunked measurement: Python's `map(..., chunksize=256)`, which
/// the comparison runs on its side too.
pub const CHUNK: usize = 256;

/// Fresh instances live for one task; `Reuse` keeps one per worker for this many tasks.
pub const REUSE: InstancePolicy = InstancePolicy::Reuse {
    max_tasks: usize::MAX,
};

/// `n` with a comma between thousands: `184,311`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The fixtures component (`noop`, `fib`, ...) on the default runtime (pooling on).
pub fn fixtures() -> TaskComponent {
    TaskComponent::from_file(env!("WASMPOOL_FIXTURES_WASM")).expect("the fixtures load")
}

/// The fixtures component on a runtime with the given pooling setting.
pub fn fixtures_with(pooling: Option<PoolingConfig>) -> TaskComponent {
    Runtime::with_pooling(RuntimeConfig::default(), pooling)
        .and_then(|rt| rt.load(env!("WASMPOOL_FIXTURES_WASM")))
        .expect("the fixtures load")
}

pub fn thread_pool(workers: usize, policy: InstancePolicy) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .workers(workers)
        .output(OutputMode::Discard)
        .instance_policy(policy)
        .build()
        .expect("thread pool")
}

/// [`thread_pool`] whose callers help: `result()` runs a task no worker has taken yet.
pub fn helping_thread_pool(workers: usize, policy: InstancePolicy) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .workers(workers)
        .output(OutputMode::Discard)
        .instance_policy(policy)
        .caller_helps(true)
        .build()
        .expect("thread pool")
}

/// A process pool whose workers are this crate's `wasmpool` binary; `None` when it cannot
/// be built (the process pool is still being finished).
pub fn process_pool(workers: usize, policy: InstancePolicy) -> Option<ProcessPoolExecutor> {
    ProcessPoolExecutor::builder()
        .workers(workers)
        .worker_program(env!("CARGO_BIN_EXE_wasmpool"))
        .output(OutputMode::Discard)
        .instance_policy(policy)
        .build()
        .map_err(|e| eprintln!("no process pool: {e}"))
        .ok()
}

/// Submits every call, then waits for every result (as `concurrent.futures` users do).
pub fn run_all<E: Executor + ?Sized>(pool: &E, calls: &[Call]) {
    let futures: Vec<_> = calls
        .iter()
        .map(|c| pool.submit(c.clone()).expect("submit"))
        .collect();
    for f in futures {
        f.result().expect("the task succeeds");
    }
}

/// Like [`run_all`], through `map_chunked` (Python's `map(..., chunksize=n)`).
pub fn map_chunked_all<E: Executor>(pool: &E, calls: &[Call], chunksize: usize) {
    for outcome in pool
        .map_chunked(calls.to_vec(), chunksize)
        .expect("map_chunked")
    {
        outcome.expect("the task succeeds");
    }
}

/// One submit→result round trip.
pub fn round_trip<E: Executor + ?Sized>(pool: &E, call: &Call) {
    pool.submit(call.clone())
        .expect("submit")
        .result()
        .expect("the task succeeds");
}

/// `n` copies of `text` (a WAVE call) on `component`.
pub fn calls(component: &TaskComponent, text: &str, n: usize) -> Vec<Call> {
    let call = component.call_wave(text).expect("call");
    vec![call; n]
}

/// The raw-wasmtime baseline: the fixtures linked against WASI on `runtime`'s engine, with
/// what any pool on this approach must pay per task and nothing more: a store with a WASI
/// context and wasmpool's own memory limiter, instantiation from an `InstancePre`, and a call through an
/// export index resolved once (wasmpool resolves its exports once too).
pub struct Raw {
    pre: InstancePre<RawState>,
    /// The same component linked against WASI's async bindings, as wasmpool links it: its
    /// calls go through `call_async` (a fiber per call), which is what lets a deadline cut
    /// a WASI wait short.
    pre_async: InstancePre<RawState>,
    noop: ComponentExportIndex,
    fib: ComponentExportIndex,
}

pub struct RawState {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: wasmpool::MemoryLimiter,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl Raw {
    pub fn new(runtime: &Runtime) -> Raw {
        let engine = runtime.engine();
        let bytes = std::fs::read(env!("WASMPOOL_FIXTURES_WASM")).expect("fixtures");
        let component = wasmtime::component::Component::new(engine, bytes).expect("compile");
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link WASI");
        let pre = linker.instantiate_pre(&component).expect("pre");
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link WASI (async)");
        let pre_async = linker.instantiate_pre(&component).expect("pre (async)");
        let index = |name: &str| {
            component
                .get_export_index(None, name)
                .unwrap_or_else(|| panic!("the fixtures export `{name}`"))
        };
        Raw {
            noop: index("noop"),
            fib: index("fib"),
            pre,
            pre_async,
        }
    }

    fn store(&self) -> Store<RawState> {
        let mut store = Store::new(
            self.pre.engine(),
            RawState {
                ctx: WasiCtxBuilder::new().build(),
                table: ResourceTable::new(),
                limiter: wasmpool::MemoryLimiter::new(wasmpool::DEFAULT_MAX_MEMORY),
            },
        );
        store.limiter(|state| &mut state.limiter);
        // The engine checks epochs (wasmpool's default); never let them stop this loop.
        store.set_epoch_deadline(u64::MAX / 2);
        store
    }

    /// One task the way wasmpool runs a fresh one: new store, instantiate, call, drop.
    pub fn fresh_noop(&self) {
        let mut store = self.store();
        let instance = self.pre.instantiate(&mut store).expect("instantiate");
        let f: TypedFunc<(), ()> = instance
            .get_typed_func(&mut store, self.noop)
            .expect("noop");
        f.call(&mut store, ()).expect("call");
    }

    /// `n` fresh-instance tasks on each of `threads` threads; tasks per second.
    pub fn fresh_rate(self: &Arc<Self>, threads: usize, n: usize) -> f64 {
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..n {
                        self.fresh_noop();
                    }
                });
            }
        });
        (threads * n) as f64 / started.elapsed().as_secs_f64()
    }

    /// `n` calls of `noop` on one instance per thread; calls per second.
    pub fn reused_rate(self: &Arc<Self>, threads: usize, n: usize) -> f64 {
        calls_rate(threads, n, || self.kept_sync())
    }

    /// A kept instance of the sync-linked component and its `noop`: each call is a plain
    /// typed call, the cheapest wasmtime offers.
    pub fn kept_sync(&self) -> impl FnMut() + use<> {
        let mut store = self.store();
        let instance = self.pre.instantiate(&mut store).expect("instantiate");
        let f: TypedFunc<(), ()> = instance
            .get_typed_func(&mut store, self.noop)
            .expect("noop");
        move || f.call(&mut store, ()).expect("call")
    }

    /// A kept instance of the async-linked component and its `noop`: each call is what a
    /// wasmpool worker's call costs inside wasmtime (`Func::call_async` with `Val`s on a
    /// fiber, polled once with a no-op waker, as `invoke.rs` does).
    pub fn kept_async(&self) -> impl FnMut() + use<> {
        let mut store = self.store();
        let instance = futures::executor::block_on(self.pre_async.instantiate_async(&mut store))
            .expect("instantiate");
        let f = instance.get_func(&mut store, self.noop).expect("noop");
        move || {
            let mut call = std::pin::pin!(f.call_async(&mut store, &[], &mut []));
            let first = call
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            let done = match first {
                std::task::Poll::Ready(done) => done,
                std::task::Poll::Pending => futures::executor::block_on(call),
            };
            done.expect("call");
        }
    }

    /// `n` calls of `noop` on one kept instance per thread, each thread calling through the
    /// async path ([`Raw::kept_async`]); calls per second.
    pub fn reused_async_rate(self: &Arc<Self>, threads: usize, n: usize) -> f64 {
        calls_rate(threads, n, || self.kept_async())
    }

    /// `fib(n)` on a fresh instance, once; how long the call alone took.
    pub fn fib_call(&self, n: u32) -> Duration {
        let mut store = self.store();
        let instance = self.pre.instantiate(&mut store).expect("instantiate");
        let f: TypedFunc<(u32,), (u64,)> =
            instance.get_typed_func(&mut store, self.fib).expect("fib");
        let started = Instant::now();
        f.call(&mut store, (n,)).expect("fib");
        started.elapsed()
    }
}

/// `n` calls on each of `threads` threads, each thread calling what `kept` made for it;
/// calls per second.
fn calls_rate<C: FnMut()>(threads: usize, n: usize, kept: impl Fn() -> C + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut call = kept();
                (0..n).for_each(|_| call());
            });
        }
    });
    (threads * n) as f64 / started.elapsed().as_secs_f64()
}

/// The same fib as the guest's (`guest-tasks/fixtures`), natively, for the wasm/native
/// ratio: the guest hides only its argument from the optimiser, and so does the caller here.
pub fn native_fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        native_fib(n - 1) + native_fib(n - 2)
    }
}

/// Criterion with short warm-up and measurement: these benches run on a shared 2-core
/// machine, where longer runs mostly measure the neighbours.
pub fn short_runs() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
}
