//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature), and
//! the generator of their seed corpora (`fuzz/seeds/<target>/`).
//!
//! Each entry point takes arbitrary bytes, drives one parser of untrusted input the way the
//! library does, and panics only when an invariant breaks; any error the input earns is
//! ignored. Each also says how far the input got (which checks it reached), so that the
//! seed replay in `tests/all/fuzz_seeds.rs` fails if the seeds stop exercising the checks.
//! Not a public API.

use std::sync::OnceLock;

use crate::TaskComponent;

#[cfg(unix)]
mod frame_seeds;
#[cfg(unix)]
mod frames;
mod wave;

#[cfg(unix)]
pub use frames::{Reached, parent_stream, worker_stream};
pub use wave::wave_args;

/// One seed input of one fuzz target, as [`seed_corpora`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The fuzz target (its name in `fuzz/Cargo.toml`, and its directory in `fuzz/seeds/`).
    pub target: &'static str,
    /// The file name of the seed in that directory.
    pub name: String,
    /// The seed's contents.
    pub bytes: Vec<u8>,
}

/// Every seed of every fuzz target, made with the library's own encoders (the worker
/// protocol's frame encoders, and WAVE text aimed at the fixture component's functions by
/// name). `fuzz/seeds/` holds exactly these files; `tests/all/fuzz_seeds.rs` checks that
/// and writes them when `WASMPOOL_WRITE_SEEDS=1`.
pub fn seed_corpora() -> Vec<Seed> {
    let mut seeds = Vec::new();
    #[cfg(unix)]
    {
        seeds.extend(frame_seeds::worker_seeds());
        seeds.extend(frame_seeds::parent_seeds());
    }
    seeds.extend(wave::wave_seeds());
    seeds.extend(component_seeds());
    seeds
}

/// The fixture component (every WIT type the tests use), compiled once per fuzzing process.
fn fixtures() -> &'static TaskComponent {
    static FIXTURES: OnceLock<TaskComponent> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        TaskComponent::from_bytes(include_bytes!(env!("WASMPOOL_FIXTURES_WASM")))
            .expect("the fixture component loads")
    })
}

/// Arbitrary bytes as a component file: loading gives a component or a
/// [`LoadError`](crate::LoadError), never a panic. Returns whether the bytes loaded.
pub fn load_component(data: &[u8]) -> bool {
    let Ok(component) = TaskComponent::from_bytes(data) else {
        return false;
    };
    // Whatever loaded must describe itself without panicking.
    for f in component.functions() {
        let _ = f.signature();
    }
    let _ = component.imports();
    true
}

/// Seeds of `load_component`: the smallest component, and a core module (which is not one).
fn component_seeds() -> Vec<Seed> {
    let seed = |name: &str, bytes: &[u8]| Seed {
        target: "load_component",
        name: name.to_string(),
        bytes: bytes.to_vec(),
    };
    vec![
        seed("empty-component", b"\0asm\x0d\0\x01\0"),
        seed("core-module", b"\0asm\x01\0\0\0"),
    ]
}
