//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature).
//!
//! Each function takes arbitrary bytes, drives one parser of untrusted input the way the
//! library does, and panics only when an invariant breaks; any error the input earns is
//! returned as a normal value and ignored by the fuzzer. Not a public API.

use std::sync::OnceLock;

use wasmtime::component::{Val, wasm_wave};

use crate::TaskComponent;
#[cfg(unix)]
use crate::process_pool::protocol::{
    FromWorker, ToWorker, decode_from_worker, decode_to_worker, read_frame, read_hello,
    result_frame, task_frame,
};

/// Bytes a worker could write to the pool: a greeting, then frames, each decoded the way the
/// pool's reader thread does. A decoded RESULT must re-encode, and its re-encoding must decode
/// to the same bytes again (the encoding is canonical).
#[cfg(unix)]
pub fn worker_stream(data: &[u8]) {
    let mut input = data;
    // Whatever the greeting's verdict, the frames after it are read on, as a reader would
    // if it did not stop.
    let _ = read_hello(&mut input);
    while let Ok(Some((kind, payload))) = read_frame(&mut input) {
        if let Ok(FromWorker::Result(id, run)) = decode_from_worker(kind, &payload) {
            let frame = result_frame(id, &run).expect("a decoded result re-encodes");
            let (kind2, payload2) = read_frame(&mut &frame[..])
                .expect("a re-encoded result is one frame")
                .expect("a re-encoded result is not empty");
            let Ok(FromWorker::Result(id2, run2)) = decode_from_worker(kind2, &payload2) else {
                panic!("a re-encoded result does not decode");
            };
            let again = result_frame(id2, &run2).expect("a decoded result re-encodes");
            assert_eq!(frame, again, "the result encoding is not canonical");
        }
    }
}

/// Bytes a parent could write to a worker's stdin: frames decoded the way the worker's loop
/// does. A decoded TASK must re-encode to a frame that decodes again.
#[cfg(unix)]
pub fn parent_stream(data: &[u8]) {
    let mut input = data;
    while let Ok(Some((kind, payload))) = read_frame(&mut input) {
        if let Ok(ToWorker::Task(task)) = decode_to_worker(kind, &payload) {
            let frame = task_frame(
                task.id,
                task.component,
                task.function,
                &task.budget,
                task.argv.as_deref(),
                &task.args,
            )
            .expect("a decoded task re-encodes");
            let (kind2, payload2) = read_frame(&mut &frame[..])
                .expect("a re-encoded task is one frame")
                .expect("a re-encoded task is not empty");
            assert!(
                matches!(decode_to_worker(kind2, &payload2), Ok(ToWorker::Task(_))),
                "a re-encoded task does not decode"
            );
        }
    }
}

/// The fixture component (every WIT type the tests use), compiled once per fuzzing process.
fn fixtures() -> &'static TaskComponent {
    static FIXTURES: OnceLock<TaskComponent> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        TaskComponent::from_bytes(include_bytes!(env!("WASMPOOL_FIXTURES_WASM")))
            .expect("the fixture component loads")
    })
}

/// WAVE arguments for one of the fixture component's functions (the first byte picks it),
/// parsed and type-checked as `Call` does for `wasmpool map`. Arguments that parse must
/// have the parameters' types and must survive printing and parsing again unchanged.
pub fn wave_args(data: &[u8]) {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let component = fixtures();
    let functions = component.functions();
    let function = &functions[usize::from(pick) % functions.len()];
    let name = function.name();
    let Ok(call) = component.call_wave_args(name, text) else {
        return;
    };
    let types: Vec<_> = function.params().map(|(_, ty)| ty).collect();
    assert_eq!(call.args().len(), types.len(), "arity of {name}({text})");
    for (arg, ty) in call.args().iter().zip(&types) {
        if let Err(e) = crate::types::check_val(arg, ty) {
            panic!("{name}({text}) parsed to an ill-typed argument: {e}");
        }
    }
    let printed = print_args(call.args());
    let reparsed = component
        .call_wave_args(name, &printed)
        .unwrap_or_else(|e| panic!("{name}({text}) printed as ({printed}), which fails: {e}"));
    assert_eq!(
        printed,
        print_args(reparsed.args()),
        "{name}({text}) does not survive printing and parsing"
    );
}

fn print_args(args: &[Val]) -> String {
    let printed: Vec<String> = args
        .iter()
        .map(|v| wasm_wave::to_string(v).expect("a parsed value prints"))
        .collect();
    printed.join(", ")
}

/// Arbitrary bytes as a component file: loading gives a component or a
/// [`LoadError`](crate::LoadError), never a panic.
pub fn load_component(data: &[u8]) {
    if let Ok(component) = TaskComponent::from_bytes(data) {
        // Whatever loaded must describe itself without panicking.
        for f in component.functions() {
            let _ = f.signature();
        }
        let _ = component.imports();
    }
}
