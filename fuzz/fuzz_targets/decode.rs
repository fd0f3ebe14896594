//! Ring buffer bytes as the kernel (or a corrupted map) might hand them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vigil::pipeline::decode::decode(data);
});
