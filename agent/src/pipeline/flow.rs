//! Flow records and the 16 features of docs/features.md, computed from the
//! kernel's running sums. Pure functions: no I/O, unit-tested against
//! hand-computed values.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{FlowKey, FlowStats};

pub use crate::record::{Features, FEATURE_NAMES};

fn ln1p(x: f64) -> f64 {
    x.ln_1p()
}

/// Sample variance from running sums: (sq − sum²/n)/(n − 1); 0 below two samples.
pub fn variance(n: u64, sum: u64, sq: u64) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let (n, sum, sq) = (n as f64, sum as f64, sq as f64);
    ((sq - sum * sum / n) / (n - 1.0)).max(0.0)
}

pub fn features(s: &FlowStats) -> Features {
    let duration_ms = s.t_last_ns.saturating_sub(s.t_first_ns) as f64 / 1e6;
    let total_bytes = (s.bytes_out + s.bytes_in) as f64;
    let upload_ratio = if total_bytes == 0.0 {
        0.5
    } else {
        s.bytes_out as f64 / total_bytes
    };
    let mean = |bytes: u64, n: u64| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
    let iat_mean = mean(s.iat_sum, s.iat_n);
    let iat_std = variance(s.iat_n, s.iat_sum, s.iat_sq).sqrt();
    let iat_cv = if iat_mean > 0.0 {
        (iat_std / iat_mean).clamp(0.0, 10.0)
    } else {
        0.0
    };
    let burstiness = if iat_std + iat_mean > 0.0 {
        (iat_std - iat_mean) / (iat_std + iat_mean)
    } else {
        0.0
    };
    let packets = (s.n_out + s.n_in) as f64;
    let frac = |x: u64| {
        if packets == 0.0 {
            0.0
        } else {
            x as f64 / packets
        }
    };
    [
        ln1p(duration_ms),
        ln1p(s.n_out as f64),
        ln1p(s.n_in as f64),
        ln1p(s.bytes_out as f64),
        ln1p(s.bytes_in as f64),
        upload_ratio,
        mean(s.bytes_out, s.n_out),
        variance(s.n_out, s.bytes_out, s.sq_out).sqrt(),
        mean(s.bytes_in, s.n_in),
        variance(s.n_in, s.bytes_in, s.sq_in).sqrt(),
        ln1p(iat_mean),
        iat_cv,
        burstiness,
        ln1p(s.iat_max as f64),
        frac(s.syn),
        frac(s.rst),
    ]
}

pub fn key_addrs(k: &FlowKey) -> (IpAddr, IpAddr) {
    let conv = |raw: [u8; 16]| -> IpAddr {
        if k.ip_version == 4 {
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(raw))
        }
    };
    (conv(k.local_addr), conv(k.remote_addr))
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        58 => "icmpv6",
        0 => "fragment",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn variance_from_sums() {
        // samples 2, 4, 6: mean 4, sample variance 4
        approx(variance(3, 12, 4 + 16 + 36), 4.0);
        approx(variance(1, 5, 25), 0.0);
        approx(variance(0, 0, 0), 0.0);
    }

    #[test]
    fn features_match_hand_computation() {
        // 3 packets out of 100, 200, 300 bytes; 1 packet in of 50 bytes;
        // IATs 1000, 3000, 2000 µs; 6 ms long; one SYN.
        let s = FlowStats {
            t_first_ns: 1_000_000,
            t_last_ns: 7_000_000,
            n_out: 3,
            n_in: 1,
            bytes_out: 600,
            bytes_in: 50,
            sq_out: 100 * 100 + 200 * 200 + 300 * 300,
            sq_in: 2500,
            iat_n: 3,
            iat_sum: 6000,
            iat_sq: 1_000_000 + 9_000_000 + 4_000_000,
            iat_max: 3000,
            syn: 1,
            rst: 0,
            fin: 0,
            pid: 0,
            flags: 0,
        };
        let f = features(&s);
        approx(f[0], (1.0f64 + 6.0).ln());
        approx(f[1], 4.0f64.ln());
        approx(f[2], 2.0f64.ln());
        approx(f[3], 601.0f64.ln());
        approx(f[4], 51.0f64.ln());
        approx(f[5], 600.0 / 650.0);
        approx(f[6], 200.0);
        approx(f[7], 100.0); // std of 100,200,300
        approx(f[8], 50.0);
        approx(f[9], 0.0);
        approx(f[10], 2001.0f64.ln());
        approx(f[11], 1000.0 / 2000.0); // std 1000, mean 2000
        approx(f[12], (1000.0 - 2000.0) / 3000.0);
        approx(f[13], 3001.0f64.ln());
        approx(f[14], 0.25);
        approx(f[15], 0.0);
    }

    #[test]
    fn empty_flow_has_neutral_features() {
        let f = features(&FlowStats::default());
        approx(f[5], 0.5);
        assert!(f.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn periodic_flow_has_burstiness_minus_one() {
        let s = FlowStats {
            n_out: 5,
            iat_n: 4,
            iat_sum: 4000,
            iat_sq: 4 * 1_000_000,
            ..FlowStats::default()
        };
        approx(features(&s)[12], -1.0);
    }
}
