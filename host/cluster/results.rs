//! A cluster worker's results: published grouped per submitter, then the task messages
//! acked (or handed back) once every call of them is settled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::TaskError;
use crate::run::TaskRun;
use crate::sync::lock;

use super::nats::Names;
use super::wire::{self, RemoteResult, ResultMessage};

/// One held task message.
pub(crate) struct Held {
    pub(crate) message: jetstream::Message,
    pub(crate) submitter: String,
    /// Calls not yet settled (reported, skipped, or lost).
    pub(crate) remaining: AtomicUsize,
    /// A call's local worker was lost: hand the message back instead of acking it.
    pub(crate) lost: AtomicBool,
    pub(crate) done: AtomicBool,
    /// The worker's slot this message takes, given back as soon as it is acked.
    pub(crate) slot: Mutex<Option<OwnedSemaphorePermit>>,
}

/// A settled call of a held message: its result, or `None` (skipped, or lost).
pub(crate) struct Settled {
    pub(crate) held: Arc<Held>,
    pub(crate) result: Option<RemoteResult>,
}

/// What the reporter did.
#[derive(Default)]
pub(crate) struct Reported {
    pub(crate) tasks: u64,
    pub(crate) handed_back: u64,
}

/// Publishes settled calls' results, grouped per submitter (as many as are ready at
/// once in one message), then acks (or hands back) each message whose calls are all
/// settled.
pub(crate) async fn report(
    js: jetstream::Context,
    names: Names,
    host: String,
    max_payload: usize,
    mut settled: mpsc::UnboundedReceiver<Settled>,
) -> Reported {
    let mut reported = Reported::default();
    let mut ready = Vec::new();
    while settled.recv_many(&mut ready, 4096).await > 0 {
        let mut by_submitter: HashMap<&str, Vec<RemoteResult>> = HashMap::new();
        let mut finished = Vec::new();
        for s in &ready {
            if let Some(result) = &s.result {
                by_submitter
                    .entry(&s.held.submitter)
                    .or_default()
                    .push(result.clone());
            }
            if s.held.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                finished.push(s.held.clone());
            }
        }
        let mut stored = true;
        for (submitter, results) in by_submitter {
            reported.tasks += results.len() as u64;
            for body in result_bodies(&host, results, max_payload) {
                if let Err(e) = publish_result(&js, names.result_subject(submitter), body).await {
                    log::error!("cannot store results, handing their tasks back: {e}");
                    stored = false;
                }
            }
        }
        for held in finished {
            held.done.store(true, Ordering::SeqCst);
            let kind = if stored && !held.lost.load(Ordering::SeqCst) {
                AckKind::Ack
            } else {
                reported.handed_back += 1;
                AckKind::Nak(None)
            };
            if let Err(e) = held.message.ack_with(kind).await {
                log::warn!("cannot ack a task message: {e}");
            }
            lock(&held.slot).take();
        }
        ready.clear();
    }
    reported
}

/// Publishes a result body and waits until the server stored it, retrying while the
/// server is away.
async fn publish_result(
    js: &jetstream::Context,
    subject: String,
    body: bytes::Bytes,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let error = match js.publish(subject.clone(), body.clone()).await {
            Ok(ack) => match ack.await {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The bodies that carry `results`, each within `max_payload`; a single result too large
/// to send becomes [`TaskError::Unreturnable`].
fn result_bodies(host: &str, results: Vec<RemoteResult>, max_payload: usize) -> Vec<bytes::Bytes> {
    let message = ResultMessage {
        host: host.to_string(),
        results,
    };
    match wire::encode(&message) {
        Ok(body) if body.len() <= max_payload => return vec![body.into()],
        Ok(_) | Err(_) => {}
    }
    let mut results = message.results;
    if results.len() > 1 {
        let rest = results.split_off(results.len() / 2);
        let mut bodies = result_bodies(host, results, max_payload);
        bodies.extend(result_bodies(host, rest, max_payload));
        return bodies;
    }
    let Some(mut result) = results.pop() else {
        return Vec::new();
    };
    let size = wire::encode(&ResultMessage {
        host: host.to_string(),
        results: vec![result.clone()],
    })
    .map(|b| b.len());
    let message = match size {
        Ok(n) => format!(
            "the result is {n} bytes, more than the NATS server's limit of {max_payload} bytes"
        ),
        Err(e) => e.to_string(),
    };
    result.run = TaskRun::failed(TaskError::Unreturnable { message }, result.run.elapsed);
    wire::encode(&ResultMessage {
        host: host.to_string(),
        results: vec![result],
    })
    .map(|b| vec![b.into()])
    .unwrap_or_default()
}
