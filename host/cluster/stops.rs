//! The stopped tasks a cluster worker knows: cancelled or aborted by their submitters
//! (keys in the queue's stops bucket), skipped when taken and aborted when running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::future::TaskFuture;
use crate::sync::lock;

/// How many stopped tasks a worker remembers before forgetting the oldest hour.
const STOPS_REMEMBERED: usize = 100_000;

/// Keeps the set of stopped tasks current, and aborts the ones running here.
pub(crate) async fn watch_stops(
    stops: async_nats::jetstream::kv::Store,
    stopped: Arc<Mutex<HashMap<String, Instant>>>,
    running: Arc<Mutex<HashMap<String, TaskFuture>>>,
    watching: tokio::sync::oneshot::Sender<()>,
) {
    let mut watching = Some(watching);
    let note = |key: String| {
        {
            let mut stopped = lock(&stopped);
            if stopped.len() >= STOPS_REMEMBERED {
                stopped.retain(|_, seen| seen.elapsed() < Duration::from_secs(3600));
            }
            stopped.insert(key.clone(), Instant::now());
        }
        let future = lock(&running).get(&key).cloned();
        if let Some(future) = future {
            future.abort();
        }
    };
    loop {
        let mut watch = match stops.watch_all().await {
            Ok(w) => w,
            Err(e) => {
                log::warn!("cannot watch stopped tasks, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // The watch sees only stops put from now on: those put before (while no worker
        // watched, or this watch was down) are read once, after it began, so none is missed.
        let keys = match stops.keys().await {
            Ok(keys) => {
                keys.filter_map(|k| async { k.ok() })
                    .collect::<Vec<_>>()
                    .await
            }
            Err(e) => {
                log::warn!("cannot list stopped tasks, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for key in keys {
            note(key);
        }
        if let Some(watching) = watching.take() {
            let _ = watching.send(());
        }
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else {
                break;
            };
            note(entry.key);
        }
    }
}
