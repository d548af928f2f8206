//! The components a cluster worker runs: fetched from the object store by SHA-256,
//! checked, compiled once per runtime configuration (through the worker's loader) and kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt;

use crate::component::TaskComponent;
use crate::error::LoadError;
use crate::runtime::{Runtime, RuntimeConfig};

use super::nats::sha256_hex;
use super::wire::TaskMessage;

/// Compiles a component's `.wasm` for a worker: `(runtime, bytes, origin)`. The default
/// is [`Runtime::load_bytes`]; the command line plugs in its compilation cache.
pub type ComponentLoader =
    Arc<dyn Fn(&Runtime, &[u8], &str) -> Result<TaskComponent, LoadError> + Send + Sync>;

/// The largest component a worker fetches from the object store.
const MAX_COMPONENT: u64 = 512 << 20;

/// The components (and runtimes) a worker has compiled.
pub(crate) struct Components {
    loader: ComponentLoader,
    /// Every component is compiled with fuel metering (the worker limits fuel).
    force_fuel: bool,
    runtimes: Vec<(RuntimeConfig, Runtime)>,
    loaded: HashMap<(String, bool), TaskComponent>,
}

impl Components {
    pub(crate) fn new(loader: ComponentLoader, force_fuel: bool) -> Components {
        Components {
            loader,
            force_fuel,
            runtimes: Vec::new(),
            loaded: HashMap::new(),
        }
    }

    /// The component a message names: from memory, or fetched, checked and compiled.
    pub(crate) async fn get(
        &mut self,
        store: &ObjectStore,
        task: &TaskMessage<'_>,
    ) -> Result<TaskComponent, String> {
        let mut config = task.config.clone();
        config.fuel |= self.force_fuel;
        // The instance pool reserves this machine's memory: the worker's decision, never a
        // submitter's. Instances come from the operating system on demand: a worker runs a
        // local pool per task settings, and the instances their threads keep (reused, or
        // spare) are bounded by no fixed pool size. The price: a fresh instance costs about
        // ten times what a pooled one does (`benches/RESULTS.md`, the cluster's rows).
        config.pooling = None;
        let key = (task.component.clone(), config.fuel);
        if let Some(c) = self.loaded.get(&key) {
            return Ok(c.clone());
        }
        let hash = &task.component;
        let info = store
            .info(hash)
            .await
            .map_err(|e| format!("component {hash} is not in the object store: {e}"))?;
        if info.size as u64 > MAX_COMPONENT {
            return Err(format!(
                "component {hash} is {} bytes, more than this worker takes ({MAX_COMPONENT})",
                info.size
            ));
        }
        // Another upload of the same component can purge the chunks being read (a `put` of
        // an existing name purges the old chunks): a read that stalls is tried again, and
        // after a few tries the task fails instead of holding its claim forever.
        let mut bytes = Vec::new();
        let mut failure = String::new();
        for _ in 0..FETCH_ATTEMPTS {
            match fetch(store, hash, info.size).await {
                Ok(fetched) if &sha256_hex(&fetched) == hash => {
                    bytes = fetched;
                    failure.clear();
                    break;
                }
                Ok(fetched) => {
                    failure = format!(
                        "the object store's component {hash} has the SHA-256 {}: refused",
                        sha256_hex(&fetched)
                    );
                }
                Err(e) => failure = format!("cannot fetch component {hash}: {e}"),
            }
        }
        if !failure.is_empty() {
            return Err(failure);
        }
        let runtime = self.runtime(&config).map_err(|e| e.to_string())?;
        let loader = self.loader.clone();
        let origin = task.origin.clone();
        let component = tokio::task::spawn_blocking(move || loader(&runtime, &bytes, &origin))
            .await
            .map_err(|e| format!("compiling the component failed: {e}"))?
            .map_err(|e| e.to_string())?;
        self.loaded.insert(key, component.clone());
        Ok(component)
    }

    fn runtime(&mut self, config: &RuntimeConfig) -> Result<Runtime, LoadError> {
        if let Some((_, r)) = self.runtimes.iter().find(|(c, _)| c == config) {
            return Ok(r.clone());
        }
        let runtime = Runtime::with_config(config.clone())?;
        self.runtimes.push((config.clone(), runtime.clone()));
        Ok(runtime)
    }
}

/// How many times a worker tries to fetch a component.
const FETCH_ATTEMPTS: usize = 3;
/// How long a component's read may make no progress before it is given up.
const FETCH_STALL: Duration = Duration::from_secs(5);

/// Reads component `hash` from the object store; a read that makes no progress for
/// `FETCH_STALL` fails.
async fn fetch(store: &ObjectStore, hash: &str, size: usize) -> Result<Vec<u8>, String> {
    let mut object = store.get(hash).await.map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(size);
    loop {
        match tokio::time::timeout(FETCH_STALL, object.read_buf(&mut bytes)).await {
            Ok(Ok(0)) => return Ok(bytes),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no data for {FETCH_STALL:?} after {} of {size} bytes (its chunks are gone?)",
                    bytes.len()
                ));
            }
        }
    }
}
