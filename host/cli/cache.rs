//! Loading a component for `run`, `map` and `inspect`, through a cache of compiled code.
//!
//! Compiling a component with cranelift takes tens of milliseconds to seconds; loading its
//! compiled form takes well under one. So the compiled code ([`TaskComponent::precompiled`])
//! is kept in a cache directory, one file per entry:
//!
//! - the entry's name is the SHA-256 of everything the compiled code depends on: the
//!   component's bytes, wasmtime's exact version, the target, and the engine settings
//!   ([`RuntimeConfig`]);
//! - its content is a magic line, the SHA-256 of the payload, and the payload (wasmtime's
//!   serialized component). A payload whose checksum does not match is never loaded;
//! - it is written to a temporary file in the cache directory and renamed into place, so a
//!   reader sees a whole entry or none;
//! - an entry that cannot be used (bad checksum, or refused by wasmtime's own check of its
//!   version and settings) is compiled again and replaced.
//!
//! A cache that cannot be written is not an error: the run goes on, with a warning.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmpool::{Runtime, RuntimeConfig, TaskComponent};
use wasmtime::{Engine, Precompiled};

use super::args::LoadArgs;

/// First bytes of every cache entry (the format's version is in it).
const ENTRY_MAGIC: &[u8; 16] = b"wasmpool-cache1\n";

/// Loads the component `args` names into a runtime with `config`, using the cache unless
/// `--no-cache`. Errors name the file and say why it cannot be loaded.
pub fn load(
    args: &LoadArgs,
    config: RuntimeConfig,
    verbose: bool,
) -> anyhow::Result<TaskComponent> {
    let path = &args.component;
    let origin = path.display().to_string();
    let runtime = Runtime::with_config(config).context("cannot start the wasm engine")?;
    let bytes = wasmpool::read_component_file(path)?;

    match Engine::detect_precompiled(&bytes) {
        Some(Precompiled::Component) if args.allow_precompiled => {
            // SAFETY: the user vouched for this file with --allow-precompiled: that it is
            // the unaltered output of `wasmpool compile` (wasmtime's `serialize`). wasmtime
            // itself checks its header, version and engine settings before using it.
            return unsafe { runtime.load_precompiled(&bytes, &origin) }.map_err(
                |e| match fuel_hint(&runtime, &e) {
                    Some(hint) => anyhow::anyhow!("{e} (note: {hint})"),
                    None => e.into(),
                },
            );
        }
        Some(Precompiled::Component) => bail!(
            "{origin} is a precompiled component (.cwasm); pass --allow-precompiled to run \
             it (only for files made by `wasmpool compile` that you trust)"
        ),
        Some(Precompiled::Module) => bail!(
            "{origin} is a precompiled core module, not a component; build a component \
             (e.g. for wasm32-wasip2) instead"
        ),
        None => {}
    }

    load_cached(
        &runtime,
        &bytes,
        &origin,
        cache_dir(args).as_deref(),
        verbose,
    )
}

/// Loads the `.wasm` `bytes` into `runtime` through the cache in `dir` (none: compile and
/// keep nothing). The component keeps `bytes` as its source, so it can run on a cluster.
pub fn load_cached(
    runtime: &Runtime,
    bytes: &[u8],
    origin: &str,
    dir: Option<&Path>,
    verbose: bool,
) -> anyhow::Result<TaskComponent> {
    let Some(dir) = dir else {
        return Ok(runtime.load_bytes(bytes, origin)?);
    };
    let entry = dir.join(format!("{}.cwasm", entry_name(bytes, runtime.config())));
    match read_entry(&entry) {
        Ok(Some(payload)) => {
            let started = Instant::now();
            // SAFETY: `payload` passed the entry's checksum, so it is byte for byte what
            // `store` wrote: the output of `TaskComponent::precompiled` (wasmtime's
            // `serialize`) of a runtime with the same settings, wasmtime release and target
            // (all of them are part of the entry's name). Someone able to forge an entry and
            // its checksum can write to the user's own files and could as well replace this
            // program. wasmtime checks the header, version and settings once more.
            match unsafe { runtime.load_precompiled(&payload, origin) } {
                Ok(component) => {
                    if verbose {
                        eprintln!(
                            "wasmpool: cache hit: loaded {} in {:.1?}",
                            entry.display(),
                            started.elapsed()
                        );
                    }
                    // The entry is named by these bytes' hash: they are its source.
                    component.set_source(bytes.into());
                    return Ok(component);
                }
                Err(e) => eprintln!(
                    "wasmpool: cache entry {} is unusable ({e}); compiling again",
                    entry.display()
                ),
            }
        }
        Ok(None) => {}
        Err(reason) => eprintln!(
            "wasmpool: cache entry {} is unusable ({reason}); compiling again",
            entry.display()
        ),
    }

    let started = Instant::now();
    let component = runtime.load_bytes(bytes, origin)?;
    let compiled_in = started.elapsed();
    match component.precompiled() {
        Ok(payload) => match store(dir, &entry, &payload) {
            Ok(()) if verbose => eprintln!(
                "wasmpool: cache miss: compiled {origin} in {compiled_in:.1?}, stored {}",
                entry.display()
            ),
            Ok(()) => {}
            Err(e) => eprintln!(
                "wasmpool: warning: cannot write the compilation cache in {} ({e:#}); \
                 use --cache-dir DIR or --no-cache",
                dir.display()
            ),
        },
        Err(e) => eprintln!("wasmpool: warning: not caching {origin}: {e}"),
    }
    Ok(component)
}

/// A hint for a precompiled component that `runtime` refused because its fuel setting
/// differs; `None` when it was refused for another reason.
fn fuel_hint(runtime: &Runtime, error: &wasmpool::LoadError) -> Option<&'static str> {
    // wasmtime 48 names the setting so ("Module was compiled with[out] fuel support but it
    // is[ not] enabled for the host"); the tests pin it.
    if !error.to_string().contains("fuel support") {
        return None;
    }
    Some(if runtime.config().fuel {
        "--fuel needs a component compiled with `wasmpool compile --fuel-metering`"
    } else {
        "without --fuel, a component compiled without --fuel-metering is needed"
    })
}

/// The cache directory: `--cache-dir`, `$XDG_CACHE_HOME/wasmpool`, `~/.cache/wasmpool`;
/// `None` with `--no-cache` or when there is no home to put it in.
pub fn cache_dir(args: &LoadArgs) -> Option<PathBuf> {
    cache_dir_of(args.cache_dir.as_deref(), args.no_cache)
}

/// [`cache_dir`] from the flags' values (`worker` has the same two flags).
pub fn cache_dir_of(cache_dir: Option<&Path>, no_cache: bool) -> Option<PathBuf> {
    if no_cache {
        return None;
    }
    if let Some(dir) = cache_dir {
        return Some(dir.to_path_buf());
    }
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return Some(xdg.join("wasmpool"));
    }
    absolute("HOME").map(|home| home.join(".cache").join("wasmpool"))
}

/// The entry's file name: the hex SHA-256 of everything the compiled code depends on.
pub fn entry_name(component: &[u8], config: &RuntimeConfig) -> String {
    let mut key = Sha256::new();
    key.update(b"wasmpool compilation cache, format 1\n");
    key.update(format!("wasmtime {}\n", wasmtime_environ::VERSION));
    key.update(format!(
        "target {}-{}\n",
        std::env::consts::ARCH,
        std::env::consts::OS
    ));
    // The instance pool's size is not in the compiled code (wasmtime's compatibility check
    // looks at the engine's tunables and features, never at the pool's slot count): one
    // entry serves every `--workers`.
    let mut keyed = config.clone();
    if let Some(pooling) = &mut keyed.pooling {
        pooling.instances = 0;
    }
    key.update(format!("config {keyed:?}\n"));
    key.update(Sha256::digest(component));
    hex(&key.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The payload of the entry at `path`: `Ok(None)` if there is none, `Err` if it is damaged.
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>, String> {
    // A regular file of bounded size only: an entry replaced by a FIFO or a link to a
    // device is unusable, not a hang or an endless read.
    let mut bytes = match wasmpool::read_component_file(path) {
        Ok(bytes) => bytes,
        Err(wasmpool::LoadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let header = ENTRY_MAGIC.len() + 32;
    if bytes.len() < header || bytes[..ENTRY_MAGIC.len()] != ENTRY_MAGIC[..] {
        return Err("not a wasmpool cache entry".into());
    }
    let payload = bytes.split_off(header);
    if Sha256::digest(&payload)[..] != bytes[ENTRY_MAGIC.len()..] {
        return Err("checksum mismatch".into());
    }
    Ok(Some(payload))
}

/// Writes the entry: temporary file in `dir`, then rename over `entry`.
fn store(dir: &Path, entry: &Path, payload: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = tempfile::Builder::new()
        .prefix(".entry-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(ENTRY_MAGIC)?;
    file.write_all(&Sha256::digest(payload))?;
    file.write_all(payload)?;
    file.as_file().sync_all()?;
    file.persist(entry)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (for `wasmpool compile -o`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".wasmpool-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_bytes_and_settings() {
        let config = RuntimeConfig::default();
        let mut fuel = RuntimeConfig::default();
        fuel.fuel = true;
        let a = entry_name(b"one", &config);
        assert_eq!(a, entry_name(b"one", &config));
        assert_ne!(a, entry_name(b"two", &config));
        assert_ne!(a, entry_name(b"one", &fuel));
        assert_eq!(a.len(), 64);
        let mut small_pool = RuntimeConfig::default();
        small_pool.pooling = Some(wasmpool::PoolingConfig::default().instances(4));
        assert_eq!(a, entry_name(b"one", &small_pool));
        let mut no_pool = RuntimeConfig::default();
        no_pool.pooling = None;
        assert_ne!(a, entry_name(b"one", &no_pool));
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().expect("temp dir");
        let entry = dir.path().join("e.cwasm");
        assert_eq!(read_entry(&entry), Ok(None));
        store(dir.path(), &entry, b"payload").expect("stored");
        assert_eq!(read_entry(&entry), Ok(Some(b"payload".to_vec())));
        let mut bytes = std::fs::read(&entry).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, &bytes).expect("write");
        assert!(read_entry(&entry).is_err());
        std::fs::write(&entry, b"junk").expect("write");
        assert!(read_entry(&entry).is_err());
    }
}
