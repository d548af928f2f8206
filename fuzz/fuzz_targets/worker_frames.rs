//! Frames from a hostile or broken worker, as the pool's reader decodes them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wasmpool::fuzzing::worker_stream(data);
});
