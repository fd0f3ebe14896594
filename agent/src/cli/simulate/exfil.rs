//! How much the exfiltration rows send, from the exfil detector's config
//! the agent loaded: just over the absolute-volume threshold in one upload
//! (T1048), and `equal_transfers` pushed chunks of one size (T1030). Pure:
//! the traffic itself is in `standin`.

use vigil::detect::exfil::{ExfilConfig, SIZES_KEPT};

/// The most simulate sends for one row. The shipped threshold (1 GiB)
/// fits: generated zeros over the stand-in veth cost about a second of
/// CPU; a higher threshold is reported as skipped rather than sent.
pub const MAX_BYTES: u64 = 2 << 30;

/// Sent beyond the threshold, so payload counting cannot fall short of it.
const MARGIN: u64 = 1 << 20;

/// Bytes of the bulk upload, or why the row is skipped.
pub fn bulk_bytes(cfg: &ExfilConfig) -> Result<u64, String> {
    let bytes = cfg.absolute_bytes.saturating_add(MARGIN);
    if bytes > MAX_BYTES {
        return Err(format!(
            "needs {bytes} bytes to one destination (detect.exfil.absolute_bytes + 1 MiB); \
             simulate sends at most {MAX_BYTES} bytes per row"
        ));
    }
    Ok(bytes)
}

/// Equal-size pushed transfers: how many, and the size of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunks {
    pub count: usize,
    pub size: u64,
}

/// The chunks for the T1030 rule, or why the row is skipped. Every chunk
/// has exactly the same size (the flow counts TCP payload), 10 % over
/// `equal_min_bytes`.
pub fn chunks(cfg: &ExfilConfig) -> Result<Chunks, String> {
    let count = cfg.equal_transfers.max(1);
    if count > SIZES_KEPT {
        return Err(format!(
            "needs {count} equal transfers (detect.exfil.equal_transfers), \
             but the detector keeps only the last {SIZES_KEPT} sizes per destination, so it cannot raise T1030"
        ));
    }
    let size = cfg
        .equal_min_bytes
        .saturating_add(cfg.equal_min_bytes / 10)
        .max(4096);
    let total = size.saturating_mul(count as u64);
    if total > MAX_BYTES {
        return Err(format!(
            "needs {count} transfers of {size} bytes (detect.exfil.equal_transfers × equal_min_bytes + 10 %); \
             simulate sends at most {MAX_BYTES} bytes per row"
        ));
    }
    Ok(Chunks { count, size })
}

/// Why an upload that ran out of time is skipped: what it needs, what it
/// managed, and the `--timeout-s` that would fit at that rate.
pub fn too_slow(needed: u64, sent: u64, seconds: f64) -> String {
    let rate = sent as f64 / seconds.max(1e-3);
    let fits = if rate > 0.0 {
        format!(
            "; at that rate --timeout-s {} would fit",
            (needed as f64 / rate * 1.2).ceil() as u64
        )
    } else {
        String::new()
    };
    format!(
        "needs {needed} bytes in one upload; only {sent} were sent in {seconds:.1} s ({:.0} MB/s){fits}",
        rate / 1e6
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_thresholds_fit_and_the_sizes_cross_them() {
        let cfg = ExfilConfig::default();
        let bytes = bulk_bytes(&cfg).expect("1 GiB fits");
        assert!(bytes > cfg.absolute_bytes && bytes <= MAX_BYTES);
        let c = chunks(&cfg).expect("chunks fit");
        assert_eq!(c.count, cfg.equal_transfers);
        assert_eq!(c.size, 110_000);
        assert!(c.size >= cfg.equal_min_bytes);
    }

    #[test]
    fn what_cannot_be_sent_or_seen_is_skipped_with_the_reason() {
        let cfg = ExfilConfig {
            absolute_bytes: 8 << 30,
            ..Default::default()
        };
        let why = bulk_bytes(&cfg).expect_err("8 GiB is over the cap");
        assert!(why.starts_with("needs 8590983168 bytes"), "{why}");
        // Saturates rather than wrapping round to a small upload.
        let cfg = ExfilConfig {
            absolute_bytes: u64::MAX,
            ..Default::default()
        };
        assert!(bulk_bytes(&cfg).is_err());
        let cfg = ExfilConfig {
            equal_transfers: SIZES_KEPT + 1,
            ..Default::default()
        };
        let why = chunks(&cfg).expect_err("more than the detector keeps");
        assert!(why.contains("keeps only the last 64"), "{why}");
        let cfg = ExfilConfig {
            equal_min_bytes: 1 << 30,
            ..Default::default()
        };
        assert!(chunks(&cfg).is_err());
        // A zero minimum still sends chunks the flow can count.
        let cfg = ExfilConfig {
            equal_min_bytes: 0,
            equal_transfers: 0,
            ..Default::default()
        };
        assert_eq!(
            chunks(&cfg),
            Ok(Chunks {
                count: 1,
                size: 4096
            })
        );
    }

    #[test]
    fn a_slow_upload_says_what_timeout_would_fit() {
        let why = too_slow(1_000_000_000, 100_000_000, 10.0);
        assert!(
            why.starts_with("needs 1000000000 bytes in one upload; only 100000000 were sent in 10.0 s (10 MB/s)"),
            "{why}"
        );
        assert!(why.ends_with("--timeout-s 120 would fit"), "{why}");
        assert!(!too_slow(10, 0, 0.0).contains("would fit"));
    }
}
