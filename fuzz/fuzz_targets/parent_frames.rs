//! Frames from a hostile parent, as a worker decodes them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wasmpool::fuzzing::parent_stream(data);
});
