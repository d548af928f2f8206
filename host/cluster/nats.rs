//! What submitters and workers share about the server: how to connect ([`NatsOptions`]),
//! the names of a queue's streams, consumer, buckets and subjects ([`Names`]), and creating
//! them when they are missing ([`ensure_queue`]).

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, object_store, stream};

use crate::error::BuildError;

/// How to reach and authenticate to the NATS server: passed through to async-nats as given,
/// never logged.
///
/// ```
/// let options = wasmpool::cluster::NatsOptions::default()
///     .credentials_file("/etc/wasmpool/worker.creds")
///     .require_tls(true);
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct NatsOptions {
    credentials_file: Option<PathBuf>,
    token: Option<String>,
    user_password: Option<(String, String)>,
    root_certificates: Option<PathBuf>,
    client_certificate: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs: only whether each is set.
        f.debug_struct("NatsOptions")
            .field("credentials_file", &self.credentials_file)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field(
                "user_password",
                &self.user_password.as_ref().map(|_| "<set>"),
            )
            .field("root_certificates", &self.root_certificates)
            .field("client_certificate", &self.client_certificate)
            .field("require_tls", &self.require_tls)
            .finish()
    }
}

impl NatsOptions {
    /// Authenticates with a `.creds` file (JWT and NKey seed).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.credentials_file = Some(path.into());
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Authenticates with a user name and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.user_password = Some((user.into(), password.into()));
        self
    }

    /// Trusts the CA certificates in this PEM file for the server's TLS certificate.
    pub fn root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.root_certificates = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM) to the server.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Refuses a connection without TLS.
    pub fn require_tls(mut self, on: bool) -> Self {
        self.require_tls = on;
        self
    }

    /// Connects to `url` as `name`. The client reconnects by itself for as long as it lives
    /// (a server restart is a pause, not an error).
    pub(crate) async fn connect(
        &self,
        url: &str,
        name: &str,
    ) -> Result<async_nats::Client, BuildError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(10))
            .max_reconnects(None);
        if let Some(path) = &self.credentials_file {
            options = options.credentials_file(path).await.map_err(|e| {
                BuildError::Cluster(format!(
                    "cannot read the credentials file {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = &self.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &self.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &self.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options = options.require_tls(self.require_tls);
        options.connect(url).await.map_err(|e| {
            BuildError::Cluster(format!("cannot connect to the NATS server at {url}: {e}"))
        })
    }
}

/// How long a JetStream request may take: in a cluster, creating a replicated stream or
/// electing its leader after a server died takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The JetStream context of `client`, with [`REQUEST_TIMEOUT`].
pub(crate) fn jetstream_context(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(REQUEST_TIMEOUT);
    js
}

/// The names of one queue's parts on the server. Queue names are letters, digits, `-` and
/// `_` (they become parts of subjects and stream names).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) queue: String,
}

/// The object store bucket every queue shares: components by SHA-256.
pub(crate) const COMPONENTS_BUCKET: &str = "wasmpool-components";
/// The one durable consumer all workers of a queue pull from.
pub(crate) const WORKERS_CONSUMER: &str = "workers";

impl Names {
    pub(crate) fn new(queue: &str) -> Result<Names, BuildError> {
        let valid = !queue.is_empty()
            && queue.len() <= 64
            && queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(BuildError::Invalid(format!(
                "queue name {queue:?}: use 1 to 64 letters, digits, '-' or '_'"
            )));
        }
        Ok(Names {
            queue: queue.to_string(),
        })
    }

    /// The work-queue stream of tasks.
    pub(crate) fn task_stream(&self) -> String {
        format!("WASMPOOL_{}_TASKS", self.queue)
    }

    /// The stream of results (every submitter's subject).
    pub(crate) fn result_stream(&self) -> String {
        format!("WASMPOOL_{}_RESULTS", self.queue)
    }

    pub(crate) fn task_subject(&self) -> String {
        format!("wasmpool.{}.tasks", self.queue)
    }

    /// Where the results for `submitter` go.
    pub(crate) fn result_subject(&self, submitter: &str) -> String {
        format!("wasmpool.{}.results.{submitter}", self.queue)
    }

    /// Where workers say which of `submitter`'s tasks they began (core NATS, not stored).
    pub(crate) fn started_subject(&self, submitter: &str) -> String {
        format!("wasmpool.{}.started.{submitter}", self.queue)
    }

    /// The key-value bucket of stopped tasks (cancelled or aborted), key `submitter.id`.
    pub(crate) fn stops_bucket(&self) -> String {
        format!("wasmpool-{}-stops", self.queue)
    }

    /// The server's advisory when a task reached the delivery limit.
    pub(crate) fn max_deliveries_advisory(&self) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{WORKERS_CONSUMER}",
            self.task_stream()
        )
    }
}

/// The key of a stopped task in the stops bucket.
pub(crate) fn stop_key(submitter: &str, id: u64) -> String {
    format!("{submitter}.{id}")
}

/// How a queue is set up on the server the first time someone uses it (later users find
/// it as it is: the first submitter or worker decides).
#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    /// How long a worker may hold a task without a sign of life (it sends progress acks
    /// every third of this while the task runs).
    pub(crate) ack_wait: Duration,
    /// How many times a task is handed out before it counts as poison.
    pub(crate) max_deliver: i64,
    /// Copies of each stream in a JetStream cluster.
    pub(crate) replicas: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let replicas = std::env::var("WASMPOOL_NATS_REPLICAS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        QueueConfig {
            ack_wait: Duration::from_secs(10),
            max_deliver: 3,
            replicas,
        }
    }
}

/// What [`ensure_queue`] found or made.
pub(crate) struct Queue {
    pub(crate) tasks: stream::Stream,
    pub(crate) results: stream::Stream,
    pub(crate) components: object_store::ObjectStore,
    pub(crate) stops: kv::Store,
    /// The consumer's delivery limit as the server has it.
    pub(crate) max_deliver: i64,
    pub(crate) ack_wait: Duration,
}

fn cluster_error(what: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Cluster(format!("{what}: {e}"))
}

/// Finds the queue's streams, consumer and buckets, creating what is missing. In a
/// JetStream cluster, clients creating the same stream at once can see a request time
/// out while the servers agree; it is tried three times.
pub(crate) async fn ensure_queue(
    js: &jetstream::Context,
    names: &Names,
    config: &QueueConfig,
) -> Result<Queue, BuildError> {
    let mut attempt = 1;
    loop {
        match try_ensure_queue(js, names, config).await {
            Err(BuildError::Cluster(e)) if attempt < 3 && e.contains("timed out") => {
                log::warn!("setting up the queue: {e}; trying again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn try_ensure_queue(
    js: &jetstream::Context,
    names: &Names,
    config: &QueueConfig,
) -> Result<Queue, BuildError> {
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: names.task_stream(),
            subjects: vec![names.task_subject()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| cluster_error("cannot create the task stream", e))?;
    let results = js
        .get_or_create_stream(stream::Config {
            name: names.result_stream(),
            subjects: vec![format!("wasmpool.{}.results.*", names.queue)],
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(24 * 3600),
            ..Default::default()
        })
        .await
        .map_err(|e| cluster_error("cannot create the result stream", e))?;
    let consumer: consumer::PullConsumer = tasks
        .get_or_create_consumer(
            WORKERS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(WORKERS_CONSUMER.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| cluster_error("cannot create the workers' consumer", e))?;
    let consumer_config = consumer.cached_info().config.clone();
    let components = match js.get_object_store(COMPONENTS_BUCKET).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: COMPONENTS_BUCKET.to_string(),
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| cluster_error("cannot create the component store", e))?,
    };
    let stops = match js.get_key_value(names.stops_bucket()).await {
        Ok(store) => store,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: names.stops_bucket(),
                max_age: Duration::from_secs(24 * 3600),
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                cluster_error(
                    "cannot create the stops bucket (key-value; it needs nats-server 2.10 or newer)",
                    e,
                )
            })?,
    };
    Ok(Queue {
        tasks,
        results,
        components,
        stops,
        max_deliver: consumer_config.max_deliver,
        ack_wait: consumer_config.ack_wait,
    })
}

/// The lower-case hex SHA-256 of `bytes`: a component's name in the object store.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A random id for a submitter or worker: 16 hex digits from the process's hash seed, time
/// and pid (unique enough to keep submitters' subjects apart; not a secret).
pub(crate) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// This machine's name, for reports (`/proc/sys/kernel/hostname`, else `HOSTNAME`, else
/// "localhost").
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
