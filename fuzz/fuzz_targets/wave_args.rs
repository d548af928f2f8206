//! WAVE argument text against the fixture component's parameter types (first byte picks the function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wasmpool::fuzzing::wave_args(data);
});
