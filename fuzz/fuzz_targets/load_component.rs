//! Arbitrary bytes loaded as a component file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wasmpool::fuzzing::load_component(data);
});
