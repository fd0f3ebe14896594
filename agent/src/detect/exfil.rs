//! Exfiltration (T1048, T1048.003, T1030, T1041): egress volume per
//! (process, destination /24) in periods against an EWMA baseline with the
//! producer–consumer ratio, an absolute volume threshold, DNS bytes out,
//! and many equal-size transfers the host pushed. T1041 when the
//! destination also beacons.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::beacon::Beaconing;
use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::{Body, Flow};

/// Whether the host pushed this transfer: it opened the connection, or it
/// sent on a connection the peer opened without the peer sending anything.
/// A response a client pulled from a server here (a request in, a file
/// out) has the size the client chose to fetch, so it is no T1030 pattern.
fn pushed(f: &Flow) -> bool {
    f.direction == "outbound" || f.bytes_in == 0
}

/// Sizes of recent pushed transfers kept per (process, destination /24):
/// an `equal_transfers` above this can never be reached.
pub const SIZES_KEPT: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExfilConfig {
    /// Period of the volume baseline (Elastic hunts use hours).
    pub period_s: f64,
    /// EWMA weight of a new period.
    pub alpha: f64,
    /// z-score against the baseline that alerts, with at least `min_bytes`.
    pub z_threshold: f64,
    pub min_bytes: u64,
    /// PCR = (out − in)/(out + in) needed for the baseline rule.
    pub min_pcr: f64,
    /// Absolute egress to one destination within `absolute_window_s` (1 GiB in 8 h).
    pub absolute_bytes: u64,
    pub absolute_window_s: f64,
    /// DNS bytes out per source per minute (Sigma: 300,000).
    pub dns_bytes_per_min: u64,
    /// Equal-size (±1 %) outbound transfers that make a pattern (T1030).
    pub equal_transfers: usize,
    pub equal_min_bytes: u64,
    pub max_keys: usize,
}

impl Default for ExfilConfig {
    fn default() -> Self {
        ExfilConfig {
            period_s: 3600.0,
            alpha: 0.3,
            z_threshold: 4.0,
            min_bytes: 100_000_000,
            min_pcr: 0.5,
            absolute_bytes: 1 << 30,
            absolute_window_s: 8.0 * 3600.0,
            dns_bytes_per_min: 300_000,
            equal_transfers: 10,
            equal_min_bytes: 100_000,
            max_keys: 16_384,
        }
    }
}

#[derive(Default)]
struct Track {
    period_start: f64,
    period_out: u64,
    period_in: u64,
    mean: f64,
    var: f64,
    periods: u32,
    abs_start: f64,
    abs_out: u64,
    sizes: Vec<u64>,
    pid: Option<u32>,
    dst: Option<IpAddr>,
}

pub struct ExfilDetector {
    cfg: ExfilConfig,
    tracks: Bounded<(String, String), Track>,
    dns: Bounded<String, (f64, u64)>,
    beaconing: Beaconing,
}

fn slash24(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

impl ExfilDetector {
    pub fn new(cfg: ExfilConfig, beaconing: Beaconing) -> Self {
        let cap = cfg.max_keys;
        ExfilDetector {
            cfg,
            tracks: Bounded::new(cap),
            dns: Bounded::new(cap),
            beaconing,
        }
    }
}

impl Declared for ExfilDetector {
    const NAME: &'static str = "exfil";
    const TECHNIQUES: &'static [&'static str] = &["T1048", "T1048.003", "T1030", "T1041"];

    fn build(cfg: &DetectConfig, shared: &Shared) -> Self {
        Self::new(cfg.exfil.clone(), shared.beaconing.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for ExfilDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        let Body::Flow(f) = body else { return };
        if f.dst_ip.is_loopback() || f.bytes_out == 0 {
            return;
        }
        let process = super::process_label(f.exe.as_deref(), f.pid);
        let cfg = &self.cfg;
        let beaconing = self
            .beaconing
            .lock()
            .map(|b| b.contains(&f.dst_ip))
            .unwrap_or(false);
        // Built only for a finding: most flows make none.
        let entities = || serde_json::json!({"pid": f.pid, "exe": process, "dst_ip": f.dst_ip, "dst_port": f.dst_port});
        let techniques = |base: &'static str| {
            let mut t = vec!["T1048", base];
            t.dedup();
            if beaconing {
                t.push("T1041");
            }
            t
        };

        // DNS bytes out per source per minute.
        if f.dst_port == 53 {
            let e = self.dns.get_or_insert_with(process.clone(), || (now, 0));
            if now - e.0 > 60.0 {
                *e = (now, 0);
            }
            e.1 += f.bytes_out;
            if e.1 > cfg.dns_bytes_per_min {
                out.push(Finding {
                    detector: Self::NAME,
                    key: format!("{process}|dns"),
                    severity: Severity::High,
                    confidence: 0.8,
                    techniques: techniques("T1048.003"),
                    summary: format!("{process} sent {} bytes of DNS in a minute", e.1),
                    entities: entities(),
                    evidence: serde_json::json!({"dns_bytes_out_per_min": e.1, "threshold": cfg.dns_bytes_per_min}),
                });
            }
        }

        let t = self
            .tracks
            .get_or_insert_with((process.clone(), slash24(&f.dst_ip)), Track::default);
        t.pid = f.pid.or(t.pid);
        t.dst = Some(f.dst_ip);
        // Absolute volume to one destination.
        if now - t.abs_start > cfg.absolute_window_s {
            t.abs_start = now;
            t.abs_out = 0;
        }
        t.abs_out += f.bytes_out;
        if t.abs_out >= cfg.absolute_bytes {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("{process}|{}|abs", slash24(&f.dst_ip)),
                severity: Severity::High,
                confidence: 0.7,
                techniques: techniques("T1048"),
                summary: format!("{process} sent {} bytes to {} within {:.0} s", t.abs_out, f.dst_ip, cfg.absolute_window_s),
                entities: entities(),
                evidence: serde_json::json!({"bytes_out": t.abs_out, "threshold": cfg.absolute_bytes, "window_s": cfg.absolute_window_s}),
            });
        }
        // Equal-size transfers the host chose to send.
        if f.bytes_out >= cfg.equal_min_bytes && pushed(f) {
            t.sizes.push(f.bytes_out);
            if t.sizes.len() > SIZES_KEPT {
                t.sizes.remove(0);
            }
            let same = t
                .sizes
                .iter()
                .filter(|&&s| (s as f64 - f.bytes_out as f64).abs() <= f.bytes_out as f64 * 0.01)
                .count();
            if same >= cfg.equal_transfers {
                out.push(Finding {
                    detector: Self::NAME,
                    key: format!("{process}|{}|equal", slash24(&f.dst_ip)),
                    severity: Severity::Medium,
                    confidence: 0.6,
                    techniques: vec!["T1030"],
                    summary: format!(
                        "{process} made {same} equal-size transfers of ~{} bytes to {}",
                        f.bytes_out, f.dst_ip
                    ),
                    entities: entities(),
                    evidence: serde_json::json!({"equal_transfers": same, "size": f.bytes_out}),
                });
            }
        }
        // Baseline: close the period, compare, then fold it into the EWMA.
        if t.period_start == 0.0 {
            t.period_start = now;
        }
        if now - t.period_start >= cfg.period_s {
            let x = t.period_out as f64;
            let pcr = (t.period_out as f64 - t.period_in as f64)
                / ((t.period_out + t.period_in).max(1) as f64);
            let sd = t.var.sqrt().max(1.0);
            let z = (x - t.mean) / sd;
            if t.periods >= 3
                && z >= cfg.z_threshold
                && t.period_out >= cfg.min_bytes
                && pcr >= cfg.min_pcr
            {
                out.push(Finding {
                    detector: Self::NAME,
                    key: format!("{process}|{}|baseline", slash24(&f.dst_ip)),
                    severity: Severity::High,
                    confidence: 0.75,
                    techniques: techniques("T1048"),
                    summary: format!("{process} egress to {} is {:.1} σ above its baseline", slash24(&f.dst_ip), z),
                    entities: entities(),
                    evidence: serde_json::json!({"bytes_out": t.period_out, "baseline_mean": t.mean, "z": z, "pcr": pcr}),
                });
            }
            let d = x - t.mean;
            t.mean += cfg.alpha * d;
            t.var = (1.0 - cfg.alpha) * (t.var + cfg.alpha * d * d);
            t.periods += 1;
            t.period_start = now;
            t.period_out = 0;
            t.period_in = 0;
        }
        t.period_out += f.bytes_out;
        t.period_in += f.bytes_in;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Flow;

    pub fn flow(dst: &str, port: u16, out: u64, inn: u64) -> Body {
        Body::Flow(Box::new(Flow {
            community_id: String::new(),
            proto: "tcp",
            direction: "outbound",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst_ip: dst.parse().expect("ip"),
            dst_port: port,
            pid: Some(5),
            comm: None,
            exe: Some(std::sync::Arc::from("/usr/bin/rclone")),
            packets_out: 10,
            packets_in: 10,
            bytes_out: out,
            bytes_in: inn,
            duration_ms: 10.0,
            syn: 1,
            rst: 0,
            fin: 1,
            end_reason: "close",
            features: [0.0; 16],
        }))
    }

    /// The same flow seen from a server here: the peer opened it and sent
    /// `inn` bytes of request.
    fn served(dst: &str, port: u16, out: u64, inn: u64) -> Body {
        let Body::Flow(mut f) = flow(dst, port, out, inn) else {
            unreachable!("flow() builds a flow")
        };
        f.direction = "inbound";
        f.exe = Some(std::sync::Arc::from("/usr/sbin/nginx"));
        Body::Flow(f)
    }

    fn equal_findings(d: &mut ExfilDetector, bodies: impl Fn(u32) -> Body) -> Vec<Finding> {
        let mut out = Vec::new();
        for i in 0..12 {
            d.on_record(i as f64, &bodies(i), &mut out);
        }
        out.retain(|f| f.techniques.contains(&"T1030"));
        out
    }

    #[test]
    fn a_file_a_client_pulls_ten_times_is_not_t1030_and_pushed_chunks_are() {
        let mut d = det(ExfilConfig::default());
        // A web server here returning the same 200 kB file to one client.
        let pulled = equal_findings(&mut d, |_| served("198.51.100.40", 443, 200_000, 120));
        assert!(pulled.is_empty(), "{pulled:?}");
        // An upload of equal chunks the host opened.
        let uploaded = equal_findings(&mut d, |_| flow("198.51.100.41", 443, 200_000, 40));
        assert!(!uploaded.is_empty());
        // A process sending equal chunks to peers that connected in and
        // asked for nothing (a bind-style channel) pushes them too.
        let pushed = equal_findings(&mut d, |_| served("198.51.100.42", 9000, 200_000, 0));
        assert!(!pushed.is_empty());
    }

    fn det(cfg: ExfilConfig) -> ExfilDetector {
        ExfilDetector::new(cfg, Default::default())
    }

    #[test]
    fn absolute_volume_fires_and_small_uploads_do_not() {
        let mut d = det(ExfilConfig {
            absolute_bytes: 10_000_000,
            ..Default::default()
        });
        let mut out = Vec::new();
        d.on_record(0.0, &flow("198.51.100.20", 443, 2_000_000, 1000), &mut out);
        assert!(out.is_empty());
        for i in 1..5 {
            d.on_record(
                i as f64,
                &flow("198.51.100.20", 443, 2_000_000, 1000),
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
        assert!(out[0].techniques.contains(&"T1048"));
    }

    #[test]
    fn baseline_spike_with_high_pcr_fires() {
        let mut d = det(ExfilConfig {
            period_s: 10.0,
            min_bytes: 1_000_000,
            ..Default::default()
        });
        let mut out = Vec::new();
        for p in 0..6 {
            d.on_record(
                p as f64 * 10.0,
                &flow("203.0.113.5", 443, 10_000, 50_000),
                &mut out,
            );
        }
        assert!(out.is_empty());
        d.on_record(61.0, &flow("203.0.113.5", 443, 50_000_000, 1000), &mut out);
        d.on_record(72.0, &flow("203.0.113.5", 443, 1000, 1000), &mut out);
        assert!(
            out.iter()
                .any(|f| f.evidence["z"].as_f64().unwrap_or(0.0) >= 4.0),
            "{out:?}"
        );
    }

    #[test]
    fn dns_volume_and_beacon_destination() {
        let beaconing = beaconing_to_resolver();
        let mut d = ExfilDetector::new(ExfilConfig::default(), beaconing);
        let mut out = Vec::new();
        for i in 0..4 {
            d.on_record(i as f64, &flow("192.0.2.53", 53, 100_000, 100), &mut out);
        }
        let f = out
            .iter()
            .find(|f| f.techniques.contains(&"T1048.003"))
            .expect("dns alert");
        assert!(f.techniques.contains(&"T1041"));
    }

    /// Absolute volume, a baseline spike, equal-size transfers, and DNS
    /// volume to a beaconing destination.
    /// The shared beacon set, holding 192.0.2.53.
    fn beaconing_to_resolver() -> Beaconing {
        let beaconing: Beaconing = Default::default();
        beaconing
            .lock()
            .expect("lock")
            .insert("192.0.2.53".parse().expect("ip"));
        beaconing
    }

    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut out = Vec::new();
        let mut d = det(ExfilConfig {
            absolute_bytes: 10_000_000,
            ..Default::default()
        });
        for i in 0..5 {
            d.on_record(
                i as f64,
                &flow("198.51.100.20", 443, 2_000_000, 1000),
                &mut out,
            );
        }
        let mut d = det(ExfilConfig {
            period_s: 10.0,
            min_bytes: 1_000_000,
            ..Default::default()
        });
        for p in 0..6 {
            d.on_record(
                p as f64 * 10.0,
                &flow("203.0.113.5", 443, 10_000, 50_000),
                &mut out,
            );
        }
        d.on_record(61.0, &flow("203.0.113.5", 443, 50_000_000, 1000), &mut out);
        d.on_record(72.0, &flow("203.0.113.5", 443, 1000, 1000), &mut out);
        let mut d = det(ExfilConfig::default());
        for i in 0..10 {
            d.on_record(
                i as f64,
                &flow("198.51.100.30", 443, 200_000, 100),
                &mut out,
            );
        }
        let beaconing = beaconing_to_resolver();
        let mut d = ExfilDetector::new(ExfilConfig::default(), beaconing);
        for i in 0..4 {
            d.on_record(i as f64, &flow("192.0.2.53", 53, 100_000, 100), &mut out);
        }
        for kind in ["abs", "baseline", "equal", "dns"] {
            assert!(
                out.iter().any(|f| f.key.ends_with(kind)),
                "no {kind} finding"
            );
        }
        out
    }
}
