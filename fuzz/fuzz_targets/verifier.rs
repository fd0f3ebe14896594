//! Kafka `defense.commands` and `threat.enriched` messages. The first
//! byte picks the header: none, the rest of a garbage header, or a valid
//! HMAC of the body (so the JSON, age and replay checks are reached too).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil::sink::kafka::commands::{sign, Verifier};

const KEY: &str = "fuzz-key";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (body, header): (&[u8], Option<Vec<u8>>) = match mode % 3 {
        0 => (rest, None),
        1 => {
            let cut = rest.len() / 2;
            (&rest[cut..], Some(rest[..cut].to_vec()))
        }
        _ => (rest, Some(sign(KEY.as_bytes(), rest).into_bytes())),
    };
    let mut v = Verifier::new(KEY, 300);
    let now = 1_000;
    let _ = v.command(body, header.as_deref(), "fuzz-host", now);
    // The same message again: a replay, whatever the first answer was.
    let _ = v.command(body, header.as_deref(), "fuzz-host", now);
    let _ = v.indicator(body, header.as_deref(), now);
});
