//! A playbook file: any text must give a playbook or located problems.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vigil::response::playbook::parse(text, std::path::Path::new("fuzz.yaml"));
    }
});
