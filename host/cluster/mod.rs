//! Scale-out: the same [`Executor`](crate::Executor) across machines, carried by NATS
//! JetStream. A [`ClusterExecutor`] publishes tasks to a queue; [`ClusterWorker`]s
//! (`wasmpool worker --nats URL`) on any machine take them, run them on a local thread or
//! process pool, and publish the results back.
//!
//! ## Message flow
//!
//! ```text
//!  submitter (ClusterExecutor)              NATS JetStream                      worker (ClusterWorker)
//!  ───────────────────────────              ──────────────                      ──────────────────────
//!  component .wasm ── put once by SHA-256 ─► object store wasmpool-components ─► get, check hash, compile once
//!  submit(call) ── publish, Nats-Msg-Id ──► stream WASMPOOL_<q>_TASKS ──────────► pull (consumer "workers")
//!                                           (work queue, file storage)            │ STARTED (core NATS)
//!  future Running ◄──────────────────────── wasmpool.<q>.started.<submitter> ◄───┤ progress acks while it runs
//!                                                                                 │ local pool runs the calls
//!  future done, first result wins ◄──────── stream WASMPOOL_<q>_RESULTS ◄─────────┤ publish results, then ack
//!  cancel()/abort() ── put key ───────────► KV wasmpool-<q>-stops ──── watch ────► skip, or abort if running
//!  "worker lost" after MaxDeliver ◄──────── $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.workers
//! ```
//!
//! ## Delivery semantics
//!
//! - **At-least-once delivery, one outcome.** Each task has an id; a task can run twice
//!   (its worker died after storing the result and before acking), but its future resolves
//!   once: the submitter keeps the first result and drops any later one.
//! - **A worker that dies** stops sending progress acks; after the queue's `AckWait` (10 s
//!   by default) the server hands its tasks to another worker. A long task keeps its claim
//!   with progress acks (every third of `AckWait`), so `AckWait` need not exceed the
//!   longest task. A process-pool worker that loses a local worker process hands the task
//!   back at once.
//! - **Deterministic failures are final**: a trap, the guest's `err`, a timeout, fuel or
//!   memory exhausted, a refused request — reported and acked, never retried by the
//!   engine (use `map --retries` or your own loop for that).
//! - **Poison**: a task handed out `MaxDeliver` times (3 by default) whose every worker was
//!   lost fails with [`TaskError::BrokenPool`](crate::TaskError::BrokenPool), "worker lost:
//!   the task was handed out 3 times ...", and the other tasks carry on. A task held by a
//!   worker that dies counts a delivery even if another task killed it.
//! - **No worker**: tasks wait in the stream (it is durable) and their futures stay
//!   pending; [`ClusterBuilder::queue_timeout`] fails and withdraws the ones no worker
//!   began in time.
//! - **Server restart** (file storage): nothing queued is lost; clients reconnect by
//!   themselves, publishes are retried for a minute, under the same `Nats-Msg-Id`, so a
//!   retry is not queued twice.
//! - **Cancel** succeeds while the submitter has not heard that a worker began the task;
//!   the task is withdrawn (a worker that takes it skips it, one that already runs it
//!   aborts it). **Abort** stops it wherever it runs.
//! - **Batches**: [`submit_batch`](crate::Executor::submit_batch) and `map_chunked` send
//!   the calls of one component as one message (one ack); results come back grouped as
//!   they finish.
//!
//! ## What a worker allows
//!
//! The submitter asks (budget, directories, environment, network: the executor's
//! settings); the worker's [`WorkerLimits`] decide. A task that asks for more fails with
//! [`TaskError::Refused`](crate::TaskError::Refused); budget fields it leaves unset get the
//! worker's maximum. A submitter cannot grant itself the worker's file system.
//!
//! ## Output
//!
//! Workers capture each task's stdout and stderr (up to 1 MiB each) and send them with
//! the result; the submitter prints them (prefixed with `host/worker-N: `) or keeps them in
//! the report, as its [`OutputMode`](crate::OutputMode) says.
//!
//! ## Files
//!
//! - `client.rs`: [`ClusterExecutor`] and its builder, the submitter.
//! - `submitted.rs`: encoding calls into task messages; the table of tasks not yet done.
//! - `connection.rs`: the submitter's connection: publishing, and settling the futures.
//! - `worker.rs`: [`ClusterWorker`] and its builder.
//! - `serving.rs`: a worker taking task messages and running their calls on local pools.
//! - `components.rs`: fetching, checking and compiling components on a worker.
//! - `stops.rs`: the cancelled and aborted tasks a worker knows.
//! - `results.rs`: publishing results and acking (or handing back) task messages.
//! - `limits.rs`: [`WorkerLimits`], what a worker allows.
//! - `nats.rs`: connecting ([`NatsOptions`]), the queue's names, creating its parts.
//! - `wire.rs`: the message bodies, in the process pool's encoding.

mod client;
mod components;
mod connection;
mod limits;
mod nats;
mod results;
mod serving;
mod stops;
mod submitted;
mod wire;
mod worker;

pub use client::{ClusterBuilder, ClusterExecutor};
pub use components::ComponentLoader;
pub use limits::WorkerLimits;
pub use nats::NatsOptions;
pub use serving::{WorkerPool, WorkerSummary};
pub use wire::CLUSTER_VERSION;
pub use worker::{ClusterWorker, ClusterWorkerBuilder, StopHandle};
