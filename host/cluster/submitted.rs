//! What the caller's threads and the connection thread share about submitted tasks
//! ([`Shared`]): encoding calls into task messages, the components' uploads, and the
//! table of tasks not yet done.
//!
//! Invariant: a task is in `Shared::tasks` from `submit` until its future is done; the
//! first result for an id removes it, so a second one (a redelivered task that ran twice)
//! finds nothing and is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::call::Call;
use crate::component::TaskComponent;
use crate::error::SubmitError;
use crate::future::{Promise, TaskFuture, promise};
use crate::output::OutputMode;
use crate::settings::TaskSettings;
use crate::sync::lock;

use super::nats::{Names, sha256_hex};
use super::wire::{self, RemoteCall, TaskMessage};

/// How much of a task's stdout/stderr a worker sends back when the executor forwards
/// output (the rest is dropped, as [`OutputMode::Capture`] drops it).
const FORWARDED_OUTPUT_LIMIT: usize = 1 << 20;

/// A task submitted and not yet done.
pub(crate) struct Pending {
    pub(crate) promise: Promise,
    /// A worker said it began the task.
    pub(crate) started: bool,
    pub(crate) submitted: Instant,
}

/// A component's `.wasm` and its name in the object store.
pub(crate) struct Upload {
    pub(crate) hash: String,
    pub(crate) bytes: Arc<[u8]>,
}

/// What the caller's threads ask of the connection thread.
pub(crate) enum Command {
    Publish {
        body: bytes::Bytes,
        msg_id: String,
        ids: Vec<u64>,
        component: Arc<Upload>,
    },
    /// The future of task `id` was cancelled (or aborted): withdraw it.
    Stop(u64),
    /// Take nothing new; finish when every task is done.
    Shutdown,
}

/// Everything the executor handle and the connection thread share.
pub(crate) struct Shared {
    pub(crate) submitter: String,
    pub(crate) names: Names,
    pub(crate) settings: TaskSettings,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) tasks: Mutex<HashMap<u64, Pending>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) closed: AtomicBool,
    /// The server's largest message, in bytes.
    pub(crate) max_payload: AtomicUsize,
    /// The delivery limit of the queue, as the server has it.
    pub(crate) max_deliver: AtomicU64,
    /// Hashes of the sources seen, by the address of their bytes (kept alive here).
    pub(crate) uploads: Mutex<HashMap<usize, Arc<Upload>>>,
}

impl Shared {
    /// Submits calls of one component as one message (or several, if one would be too
    /// large for the server).
    pub(crate) fn submit_group(
        self: &Arc<Self>,
        calls: &[Call],
    ) -> Result<Vec<TaskFuture>, SubmitError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SubmitError::Shutdown);
        }
        let Some(first) = calls.first() else {
            return Ok(Vec::new());
        };
        let upload = self.upload_of(first.component())?;
        let ids: Vec<u64> = calls
            .iter()
            .map(|_| self.next_id.fetch_add(1, Ordering::Relaxed))
            .collect();
        let body = self.encode(first.component(), &upload, calls, &ids)?;
        let max = self.max_payload.load(Ordering::Relaxed);
        if body.len() > max {
            if calls.len() > 1 {
                let half = calls.len() / 2;
                let mut futures = self.submit_group(&calls[..half])?;
                match self.submit_group(&calls[half..]) {
                    Ok(more) => futures.extend(more),
                    Err(e) => {
                        for f in &futures {
                            f.cancel();
                        }
                        return Err(e);
                    }
                }
                return Ok(futures);
            }
            return Err(SubmitError::Incompatible(format!(
                "the task's message is {} bytes, more than the NATS server's limit of {max} \
                 bytes (max_payload): pass large data through a directory instead",
                body.len()
            )));
        }
        let mut futures = Vec::with_capacity(ids.len());
        {
            let mut tasks = lock(&self.tasks);
            let now = Instant::now();
            for &id in &ids {
                let (promise, future) = promise();
                let commands = self.commands.clone();
                future.add_done_callback(move |f| {
                    if f.is_cancelled() {
                        let _ = commands.send(Command::Stop(id));
                    }
                });
                tasks.insert(
                    id,
                    Pending {
                        promise,
                        started: false,
                        submitted: now,
                    },
                );
                futures.push(future);
            }
        }
        let msg_id = format!("{}-{}", self.submitter, ids[0]);
        let command = Command::Publish {
            body: body.into(),
            msg_id,
            ids,
            component: upload,
        };
        if self.commands.send(command).is_err() {
            return Err(SubmitError::BrokenPool(
                "the connection to the NATS server has ended".into(),
            ));
        }
        Ok(futures)
    }

    fn encode(
        &self,
        component: &TaskComponent,
        upload: &Upload,
        calls: &[Call],
        ids: &[u64],
    ) -> Result<Vec<u8>, SubmitError> {
        let mut settings = self.settings.clone();
        let budget = std::mem::take(&mut settings.budget);
        settings.output = match settings.output {
            OutputMode::Prefixed | OutputMode::Plain => OutputMode::Capture {
                limit: FORWARDED_OUTPUT_LIMIT,
            },
            other => other,
        };
        let message = TaskMessage {
            submitter: self.submitter.clone(),
            component: upload.hash.clone(),
            origin: component.origin().to_string(),
            config: component.runtime().config().clone(),
            settings,
            calls: calls
                .iter()
                .zip(ids)
                .map(|(call, &id)| RemoteCall {
                    id,
                    function: call.function_index(),
                    budget: call.budget().or(&budget),
                    argv: call.argv().map(std::borrow::Cow::Borrowed),
                    args: std::borrow::Cow::Borrowed(call.args()),
                })
                .collect(),
        };
        wire::encode(&message)
            .map_err(|e| SubmitError::Incompatible(format!("cannot send the call: {e}")))
    }

    /// The upload of `component`'s source, hashed on first use.
    fn upload_of(&self, component: &TaskComponent) -> Result<Arc<Upload>, SubmitError> {
        let Some(bytes) = component.source() else {
            return Err(SubmitError::Incompatible(format!(
                "{} was loaded from precompiled code, and a cluster ships the .wasm (workers \
                 compile it themselves): load it from its .wasm, or record it with \
                 TaskComponent::set_source",
                component.origin()
            )));
        };
        let key = Arc::as_ptr(bytes) as *const u8 as usize;
        let mut uploads = lock(&self.uploads);
        if let Some(upload) = uploads.get(&key) {
            return Ok(upload.clone());
        }
        let hash = sha256_hex(bytes);
        let upload = Arc::new(Upload {
            hash,
            bytes: bytes.clone(),
        });
        uploads.insert(key, upload.clone());
        Ok(upload)
    }

    /// The promise of task `id` if it is still waiting, taking it out; `None` if it is not
    /// (done already: this is a duplicate, or the task was cancelled).
    pub(crate) fn take(&self, id: u64) -> Option<Promise> {
        lock(&self.tasks).remove(&id).map(|p| p.promise)
    }
}
