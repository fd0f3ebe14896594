//! `vigil audit verify` on a damaged or forged audit log.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vigil-fuzz-audit-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let path = dir.join("audit.jsonl");
    if std::fs::write(&path, data).is_ok() {
        let _ = vigil::enforce::audit::verify(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
});
