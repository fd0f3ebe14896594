//! The Kafka spool opened on a damaged segment (and acked file): opening
//! repairs or skips, reading returns what is intact, appending still works.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil::sink::kafka::spool::{Class, Spool, SpoolConfig};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("vigil-fuzz-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    // First byte: the acked sequence; the rest: the first segment.
    let (acked, seg) = data.split_first().map_or((0, data), |(a, r)| (*a, r));
    let _ = std::fs::write(dir.join("acked"), acked.to_string());
    let _ = std::fs::write(dir.join(format!("{:020}.seg", 1)), seg);
    let cfg = SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
        telemetry_share: 0.8,
    };
    if let Ok(mut sp) = Spool::open(&dir, cfg) {
        let mut from = 0;
        for _ in 0..64 {
            match sp.read(from, 64) {
                Ok(batch) if !batch.is_empty() => {
                    from = batch.last().map_or(from, |r| r.0 + 1);
                }
                _ => break,
            }
        }
        let _ = sp.append(Class::Alert, b"{\"kind\":\"alert\"}");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
