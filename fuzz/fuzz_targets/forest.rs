//! Saved detector state (the isolation forest baseline and any other
//! detector's file) as read from the state directory at start, then used:
//! a model that loads must also score without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil::detect::anomaly::Model;

fuzz_target!(|data: &[u8]| {
    if let Some(mut engine) =
        vigil::detect::config::engine(&vigil::detect::config::DetectConfig::default())
    {
        let _ = engine.load_states(|_| Some(data.to_vec()));
    }
    // What the anomaly detector accepts at load, scored as it would be.
    if let Ok(m) = serde_json::from_slice::<Model>(data) {
        let n = m.forest.features();
        if n == 16 && m.medians.len() == 16 && m.mads.len() == 16 {
            let _ = m.forest.score_at_least(&m.medians, 0.0);
            let _ = m.forest.score_at_least(&[0.0; 16], 0.0);
        }
    }
});
