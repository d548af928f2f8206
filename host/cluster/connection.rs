//! The submitter's connection thread: publishing tasks (retried while the server is
//! away), and settling futures from started notices, results and the server's
//! max-deliveries advisories.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::error::{BuildError, TaskError};
use crate::output::{HostStream, OutputMode, write_host};
use crate::sync::lock;

use super::nats::{NatsOptions, Queue, QueueConfig, ensure_queue, stop_key};
use super::submitted::{Command, Pending, Shared, Upload};
use super::wire::{self, ResultMessage, StartedMessage};

/// Publishes awaiting the server's ack at once (more stalls the client).
const PUBLISH_WINDOW: usize = 512;
/// How long a publish is retried while the server is away (a restart) before its tasks fail.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(60);

/// The connection thread's state.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    client: async_nats::Client,
    js: jetstream::Context,
    queue: Queue,
    results: consumer::PullConsumer,
    /// Components known to be in the object store.
    uploaded: HashSet<String>,
    /// The stream sequence of each published message whose tasks may still be waiting.
    sequences: HashMap<u64, Vec<u64>>,
}

/// Connects to `url`, finds or creates the queue, and this submitter's result consumer.
pub(crate) async fn connect(
    url: &str,
    nats: &NatsOptions,
    queue_config: &QueueConfig,
    shared: &Arc<Shared>,
) -> Result<Connection, BuildError> {
    let name = format!("wasmpool submitter {}", shared.submitter);
    let client = nats.connect(url, &name).await?;
    shared
        .max_payload
        .store(client.server_info().max_payload, Ordering::Relaxed);
    let js = super::nats::jetstream_context(&client);
    let queue = ensure_queue(&js, &shared.names, queue_config).await?;
    shared
        .max_deliver
        .store(queue.max_deliver.max(0) as u64, Ordering::Relaxed);
    let consumer_name = format!("submitter-{}", shared.submitter);
    let results = queue
        .results
        .get_or_create_consumer(
            &consumer_name,
            consumer::pull::Config {
                durable_name: Some(consumer_name.clone()),
                filter_subject: shared.names.result_subject(&shared.submitter),
                ack_policy: consumer::AckPolicy::Explicit,
                // A submitter that vanished without shutting down leaves no consumer behind.
                inactive_threshold: Duration::from_secs(600),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BuildError::Cluster(format!("cannot create the result consumer: {e}")))?;
    Ok(Connection {
        shared: shared.clone(),
        client,
        js,
        queue,
        results,
        uploaded: HashSet::new(),
        sequences: HashMap::new(),
    })
}

/// How a publish ended: the tasks it carried, and the stream sequence or why it failed.
type Published = (Vec<u64>, Result<u64, String>);

impl Connection {
    /// Serves until shut down and every task is done.
    pub(crate) async fn serve(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let names = self.shared.names.clone();
        let mut results = match self.results.messages().await {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot read results: {e}")),
        };
        let mut started = match self
            .client
            .subscribe(names.started_subject(&self.shared.submitter))
            .await
        {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot subscribe to started notices: {e}")),
        };
        let mut advisories = match self.client.subscribe(names.max_deliveries_advisory()).await {
            Ok(s) => s,
            Err(e) => return self.fail_all(format!("cannot subscribe to advisories: {e}")),
        };
        let window = Arc::new(Semaphore::new(PUBLISH_WINDOW));
        let mut publishes: JoinSet<Published> = JoinSet::new();
        let mut chores = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut open = true;
        loop {
            if !open && publishes.is_empty() && lock(&self.shared.tasks).is_empty() {
                break;
            }
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(Command::Publish { body, msg_id, ids, component }) => {
                        if let Err(e) = self.ensure_uploaded(&component).await {
                            self.fail(&ids, TaskError::ComponentUnavailable { message: e });
                            continue;
                        }
                        let Ok(permit) = window.clone().acquire_owned().await else {
                            continue;
                        };
                        let js = self.js.clone();
                        let subject = names.task_subject();
                        publishes.spawn(async move {
                            let outcome = publish(&js, subject, msg_id, body).await;
                            drop(permit);
                            (ids, outcome)
                        });
                    }
                    Some(Command::Stop(id)) => {
                        lock(&self.shared.tasks).remove(&id);
                        let stops = self.queue.stops.clone();
                        let key = stop_key(&self.shared.submitter, id);
                        chores.spawn(async move {
                            if let Err(e) = stops.put(key, bytes::Bytes::from_static(b"stop")).await {
                                log::warn!("cannot withdraw a cancelled task: {e}");
                            }
                        });
                    }
                    Some(Command::Shutdown) | None => open = false,
                },
                Some(message) = results.next() => match message {
                    Ok(message) => {
                        self.on_results(&message.payload);
                        if let Err(e) = message.ack().await {
                            log::warn!("cannot ack a result: {e}");
                        }
                    }
                    Err(e) => log::debug!("result consumer: {e}"),
                },
                Some(message) = started.next() => self.on_started(&message.payload),
                Some(message) = advisories.next() => self.on_max_deliveries(&message.payload, &mut chores),
                Some(done) = publishes.join_next() => match done {
                    Ok((ids, Ok(sequence))) => {
                        self.sequences.insert(sequence, ids);
                    }
                    Ok((ids, Err(e))) => self.fail(&ids, TaskError::BrokenPool {
                        reason: format!("the NATS server did not take the task: {e}"),
                    }),
                    Err(e) => log::error!("a publish panicked: {e}"),
                },
                Some(_) = chores.join_next() => {}
                _ = tick.tick() => self.on_tick(&mut chores),
            }
        }
        while chores.join_next().await.is_some() {}
        let consumer_name = format!("submitter-{}", self.shared.submitter);
        if let Err(e) = self.queue.results.delete_consumer(&consumer_name).await {
            log::debug!("cannot delete the result consumer: {e}");
        }
        let _ = self.client.flush().await;
    }

    async fn ensure_uploaded(&mut self, upload: &Upload) -> Result<(), String> {
        if self.uploaded.contains(&upload.hash) {
            return Ok(());
        }
        if self.queue.components.info(&upload.hash).await.is_err() {
            let mut bytes: &[u8] = &upload.bytes;
            self.queue
                .components
                .put(upload.hash.as_str(), &mut bytes)
                .await
                .map_err(|e| format!("cannot put the component in the object store: {e}"))?;
        }
        self.uploaded.insert(upload.hash.clone());
        Ok(())
    }

    fn fail(&self, ids: &[u64], error: TaskError) {
        for &id in ids {
            if let Some(promise) = self.shared.take(id) {
                promise.set_error(error.clone());
            }
        }
    }

    /// The connection cannot serve: every waiting task fails (no future is left hanging).
    fn fail_all(&self, reason: String) {
        log::error!("{reason}");
        let waiting: Vec<Pending> = lock(&self.shared.tasks).drain().map(|(_, p)| p).collect();
        for pending in waiting {
            pending.promise.set_error(TaskError::BrokenPool {
                reason: reason.clone(),
            });
        }
    }

    fn on_results(&self, body: &[u8]) {
        let message: ResultMessage = match wire::decode(body) {
            Ok(m) => m,
            Err(e) => {
                log::warn!("dropped a result message that does not decode: {e}");
                return;
            }
        };
        for result in message.results {
            // A second result for the same task (it was delivered twice) finds nothing here.
            let Some(promise) = self.shared.take(result.id) else {
                continue;
            };
            let worker: Arc<str> = Arc::from(result.worker);
            let mut run = result.run;
            if matches!(
                self.shared.settings.output,
                OutputMode::Prefixed | OutputMode::Plain
            ) {
                let prefix = match self.shared.settings.output {
                    OutputMode::Prefixed => format!("{}/{worker}: ", message.host),
                    _ => String::new(),
                };
                forward(&prefix, HostStream::Stdout, run.stdout.take());
                forward(&prefix, HostStream::Stderr, run.stderr.take());
            }
            let (outcome, recorded) =
                run.into_parts(&worker, result.pid, Some(message.host.clone()));
            promise.complete_with_run_report(outcome, recorded);
        }
    }

    fn on_started(&self, body: &[u8]) {
        let Ok(message) = wire::decode::<StartedMessage>(body) else {
            return;
        };
        let mut tasks = lock(&self.shared.tasks);
        for id in message.ids {
            if let Some(pending) = tasks.get_mut(&id)
                && !pending.started
            {
                pending.started = true;
                pending.promise.set_running_or_notify_cancel();
            }
        }
    }

    /// A message reached the delivery limit: each worker that took it was lost.
    fn on_max_deliveries(&mut self, body: &[u8], chores: &mut JoinSet<()>) {
        let Ok(advisory) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let Some(sequence) = advisory.get("stream_seq").and_then(|s| s.as_u64()) else {
            return;
        };
        let Some(ids) = self.sequences.remove(&sequence) else {
            return;
        };
        let deliveries = advisory
            .get("deliveries")
            .and_then(|d| d.as_u64())
            .unwrap_or_else(|| self.shared.max_deliver.load(Ordering::Relaxed));
        self.fail(
            &ids,
            TaskError::BrokenPool {
                reason: format!(
                    "worker lost: the task was handed out {deliveries} times (the queue's \
                     limit) and each worker that took it was lost before it finished"
                ),
            },
        );
        let tasks = self.queue.tasks.clone();
        chores.spawn(async move {
            let _ = tasks.delete_message(sequence).await;
        });
    }

    /// Queue time-outs, and forgetting the sequences of messages whose tasks are all done.
    fn on_tick(&mut self, chores: &mut JoinSet<()>) {
        if let Some(limit) = self.shared.queue_timeout {
            let expired: Vec<u64> = lock(&self.shared.tasks)
                .iter()
                .filter(|(_, p)| !p.started && p.submitted.elapsed() >= limit)
                .map(|(&id, _)| id)
                .collect();
            for &id in &expired {
                let stops = self.queue.stops.clone();
                let key = stop_key(&self.shared.submitter, id);
                chores.spawn(async move {
                    let _ = stops.put(key, bytes::Bytes::from_static(b"stop")).await;
                });
            }
            self.fail(&expired, TaskError::QueueTimeout { limit });
        }
        let tasks = lock(&self.shared.tasks);
        self.sequences
            .retain(|_, ids| ids.iter().any(|id| tasks.contains_key(id)));
    }
}

/// Writes captured output to this process's stream, each line after `prefix`.
fn forward(prefix: &str, stream: HostStream, text: Option<String>) {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return;
    };
    let mut out = String::with_capacity(text.len() + prefix.len());
    for line in text.split_inclusive('\n') {
        out.push_str(prefix);
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push('\n');
        }
    }
    write_host(stream, out.as_bytes());
}

/// Publishes one task message, retrying while the server is away; the server drops a
/// repeat of the same `msg_id` (its duplicate window), so a retry never queues it twice.
async fn publish(
    js: &jetstream::Context,
    subject: String,
    msg_id: String,
    body: bytes::Bytes,
) -> Result<u64, String> {
    let deadline = Instant::now() + PUBLISH_PATIENCE;
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        let error = match js
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
        {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        log::debug!("publish failed, retrying: {error}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
