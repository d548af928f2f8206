//! `wasmpool worker --nats URL`: serves a cluster queue until SIGTERM or Ctrl-C (the
//! library's `ClusterWorker`), compiling components through the same cache as `run` and
//! `map`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use wasmpool::cluster::{ClusterWorker, ComponentLoader, WorkerLimits, WorkerPool};
use wasmpool::{LoadError, Runtime};

use super::args::{PoolKind, WorkerArgs};
use super::cache;
use super::pool_settings::nats_options;

/// Runs `wasmpool worker`.
pub fn worker(args: &WorkerArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let Some(url) = args.cluster.nats.as_deref() else {
        bail!("worker needs --nats URL: the NATS JetStream server to take tasks from");
    };
    let limits = limits(args)?;
    let pool = match args.pool {
        PoolKind::Thread => WorkerPool::Thread,
        PoolKind::Process => WorkerPool::Process { program: None },
    };
    let cache_dir = cache::cache_dir_of(args.cache_dir.as_deref(), args.no_cache);
    let loader: ComponentLoader = Arc::new(move |runtime: &Runtime, bytes: &[u8], origin: &str| {
        cache::load_cached(runtime, bytes, origin, cache_dir.as_deref(), verbose).map_err(|e| {
            LoadError::Invalid {
                origin: origin.to_string(),
                message: format!("{e:#}"),
            }
        })
    });
    let mut builder = ClusterWorker::builder(url)
        .queue(&args.cluster.queue)
        .nats_options(nats_options(&args.cluster))
        .pool(pool)
        .limits(limits)
        .loader(loader);
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(name) = &args.name {
        builder = builder.host_name(name);
    }
    let worker = builder.start().with_context(|| format!("--nats {url}"))?;
    let stop = worker.stop_handle();
    ctrlc::set_handler(move || stop.stop()).context("cannot install the signal handler")?;
    eprintln!(
        "wasmpool worker: ready: queue {} on {url}, {} pool{}",
        args.cluster.queue,
        match args.pool {
            PoolKind::Thread => "thread",
            PoolKind::Process => "process",
        },
        args.workers.map(|n| format!(" of {n}")).unwrap_or_default()
    );
    let summary = worker.join()?;
    eprintln!(
        "wasmpool worker: stopped: {} task(s) run, {} handed back",
        summary.tasks, summary.handed_back
    );
    Ok(ExitCode::SUCCESS)
}

/// What the `--allow-*` and `--max-*` flags allow.
fn limits(args: &WorkerArgs) -> anyhow::Result<WorkerLimits> {
    let mut limits = WorkerLimits::default();
    if let Some(t) = args.max_timeout {
        limits = limits.max_timeout(t);
    }
    if let Some(f) = args.max_fuel {
        limits = limits.max_fuel(f);
    }
    if let Some(m) = args.max_memory {
        limits = limits.max_memory(m);
    }
    for (dirs, writable, flag) in [
        (&args.allow_dir, false, "--allow-dir"),
        (&args.allow_dir_rw, true, "--allow-dir-rw"),
    ] {
        for dir in dirs {
            let meta =
                std::fs::metadata(dir).with_context(|| format!("{flag} {}", dir.display()))?;
            if !meta.is_dir() {
                bail!("{flag} {}: not a directory", dir.display());
            }
            limits = limits.allow_dir(dir, writable);
        }
    }
    for key in &args.allow_env {
        limits = limits.allow_env(key);
    }
    Ok(limits.allow_network(args.allow_network))
}
