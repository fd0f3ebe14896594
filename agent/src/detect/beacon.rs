//! C2 beaconing (T1071, T1573, T1571): RITA v5's score, streamed. Per
//! (process, destination, port) a bounded ring of (start, bytes) is kept;
//! candidates with enough connections in the window are scored at most
//! once per scoring period. Score = round₃(¼·(ts + ds + dur + hist)).

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::Body;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// Seconds of history scored (RITA: a day).
    pub window_s: f64,
    /// Connections needed in the window before scoring (RITA: 4).
    pub min_connections: usize,
    /// Seconds between two scorings of the same candidate.
    pub scoring_period_s: f64,
    /// Report at or above this score; high severity at or above 0.90.
    pub threshold: f64,
    /// Connections remembered per candidate.
    pub history: usize,
    /// Candidates tracked (LRU).
    pub max_keys: usize,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            window_s: 86_400.0,
            min_connections: 4,
            scoring_period_s: 300.0,
            threshold: 0.70,
            history: 512,
            max_keys: 16_384,
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Quartiles as RITA computes them: medians of the lower and upper halves,
/// leaving out the middle element when n is odd.
pub fn quartiles(sorted: &[f64]) -> (f64, f64, f64) {
    let n = sorted.len();
    let half = n / 2;
    let lower = &sorted[..half];
    let upper = &sorted[n - half..];
    (median(lower), median(sorted), median(upper))
}

/// Skew and MAD score of a series (timestamps' deltas or sizes).
/// `small_median_default` is the score when the median is below 1.
pub fn skew_mad_score(values: &[f64], small_median_default: f64) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return 0.0;
    }
    let (q1, q2, q3) = quartiles(&v);
    let skew = if q3 - q1 >= 10.0 && q2 != q1 && q2 != q3 {
        (q1 + q3 - 2.0 * q2) / (q3 - q1)
    } else {
        0.0
    };
    let skew_score = 1.0 - skew.abs();
    let mut dev: Vec<f64> = v.iter().map(|x| (x - q2).abs()).collect();
    dev.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let mad = median(&dev);
    let mad_score = if q2 >= 1.0 {
        ((q2 - mad) / q2).max(0.0)
    } else {
        small_median_default
    };
    round3((skew_score + mad_score) / 2.0)
}

/// Timestamp score: intervals between sorted starts, zeros dropped, ≥ 3 left.
pub fn ts_score(starts: &[f64]) -> f64 {
    let mut s = starts.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let deltas: Vec<f64> = s
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0)
        .collect();
    if deltas.len() < 3 {
        return 0.0;
    }
    skew_mad_score(&deltas, 1.0)
}

/// Data size score: the same statistics on bytes per connection.
pub fn ds_score(sizes: &[f64]) -> f64 {
    skew_mad_score(sizes, 0.0)
}

/// Histogram score over 24 bars of the span: max(1 − CV (0 if CV > 1), bimodal fit).
pub fn hist_score(starts: &[f64], window_start: f64, window_len: f64) -> (f64, [u32; 24]) {
    let mut bars = [0u32; 24];
    for &t in starts {
        let i = (((t - window_start) / window_len) * 24.0).floor();
        let i = i.clamp(0.0, 23.0) as usize;
        bars[i] += 1;
    }
    let n = 24.0;
    let mean = bars.iter().map(|&b| b as f64).sum::<f64>() / n;
    if mean == 0.0 {
        return (0.0, bars);
    }
    let var = bars.iter().map(|&b| (b as f64 - mean).powi(2)).sum::<f64>() / n;
    let cv = var.sqrt() / mean;
    let cv_score = if cv > 1.0 { 0.0 } else { 1.0 - cv };
    // Bimodal fit: share of bars whose height is one of the two most common
    // non-zero heights (one outlier bar forgiven); needs ≥ 11 non-empty bars.
    let nonzero: Vec<u32> = bars.iter().copied().filter(|&b| b > 0).collect();
    let bimodal = if nonzero.len() >= 11 {
        let mut freq: std::collections::BTreeMap<u32, u32> = Default::default();
        for h in &nonzero {
            *freq.entry(*h).or_default() += 1;
        }
        let mut counts: Vec<u32> = freq.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u32 = counts.iter().take(2).sum();
        (top as f64 / (nonzero.len() as f64 - 1.0)).min(1.0)
    } else {
        0.0
    };
    (round3(cv_score.max(bimodal)), bars)
}

/// Duration score when ≥ 6 bars are non-empty: max(coverage of the window,
/// longest run of consecutive non-empty bars / 12), capped at 1.
pub fn dur_score(starts: &[f64], bars: &[u32; 24], window_len: f64) -> f64 {
    let nonempty = bars.iter().filter(|&&b| b > 0).count();
    if nonempty < 6 || starts.is_empty() {
        return 0.0;
    }
    let (lo, hi) = starts
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let coverage = ((hi - lo) / window_len).clamp(0.0, 1.0);
    let (mut run, mut best) = (0, 0);
    for &b in bars {
        run = if b > 0 { run + 1 } else { 0 };
        best = best.max(run);
    }
    round3(coverage.max(best as f64 / 12.0).min(1.0))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub score: f64,
    pub ts: f64,
    pub ds: f64,
    pub dur: f64,
    pub hist: f64,
}

pub fn score(conns: &[(f64, f64)], window_start: f64, window_len: f64) -> Score {
    let starts: Vec<f64> = conns.iter().map(|c| c.0).collect();
    let sizes: Vec<f64> = conns.iter().map(|c| c.1).collect();
    let ts = ts_score(&starts);
    let ds = ds_score(&sizes);
    let (hist, bars) = hist_score(&starts, window_start, window_len);
    let dur = dur_score(&starts, &bars, window_len);
    Score {
        score: round3(0.25 * (ts + ds + dur + hist)),
        ts,
        ds,
        dur,
        hist,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    process: String,
    dst: IpAddr,
    port: u16,
    proto: &'static str,
}

struct Track {
    conns: VecDeque<(f64, f64)>,
    last_scored: f64,
    pid: Option<u32>,
}

/// Destinations currently beaconing, shared with the exfiltration detector (T1041).
pub type Beaconing = Arc<Mutex<HashSet<IpAddr>>>;

pub struct BeaconDetector {
    cfg: BeaconConfig,
    tracks: Bounded<Key, Track>,
    pub beaconing: Beaconing,
}

impl BeaconDetector {
    pub fn new(cfg: BeaconConfig, beaconing: Beaconing) -> Self {
        let cap = cfg.max_keys;
        BeaconDetector {
            cfg,
            tracks: Bounded::new(cap),
            beaconing,
        }
    }
}

impl Declared for BeaconDetector {
    const NAME: &'static str = "beacon";
    const TECHNIQUES: &'static [&'static str] =
        &["T1071", "T1071.001", "T1071.004", "T1573", "T1571"];

    fn build(cfg: &DetectConfig, shared: &Shared) -> Self {
        Self::new(cfg.beacon.clone(), shared.beaconing.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for BeaconDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now_s: f64, body: &Body, out: &mut Vec<Finding>) {
        let Body::Flow(f) = body else { return };
        if f.direction != "outbound" || f.dst_ip.is_loopback() {
            return;
        }
        let process = super::process_label(f.exe.as_deref(), f.pid);
        let key = Key {
            process: process.clone(),
            dst: f.dst_ip,
            port: f.dst_port,
            proto: f.proto,
        };
        let start = now_s - f.duration_ms / 1000.0;
        let bytes = (f.bytes_out + f.bytes_in) as f64;
        let history = self.cfg.history;
        let t = self.tracks.get_or_insert_with(key.clone(), || Track {
            conns: VecDeque::new(),
            last_scored: f64::MIN,
            pid: None,
        });
        t.pid = f.pid.or(t.pid);
        t.conns.push_back((start, bytes));
        while t.conns.len() > history {
            t.conns.pop_front();
        }
        let window_start = now_s - self.cfg.window_s;
        while t.conns.front().is_some_and(|c| c.0 < window_start) {
            t.conns.pop_front();
        }
        if t.conns.len() < self.cfg.min_connections
            || now_s - t.last_scored < self.cfg.scoring_period_s
        {
            return;
        }
        t.last_scored = now_s;
        let conns: Vec<(f64, f64)> = t.conns.iter().copied().collect();
        let s = score(&conns, window_start, self.cfg.window_s);
        if s.score < self.cfg.threshold {
            return;
        }
        if let Ok(mut b) = self.beaconing.lock() {
            b.insert(key.dst);
        }
        // Web ports map to web protocols (TLS ports also to T1573), DNS to
        // T1071.004, anything else to a non-standard port (T1571).
        let mut techniques = vec!["T1071"];
        match key.port {
            80 | 8080 => techniques.push("T1071.001"),
            443 | 8443 => techniques.extend(["T1071.001", "T1573"]),
            53 => techniques.push("T1071.004"),
            _ => techniques.push("T1571"),
        }
        let severity = if s.score >= 0.9 {
            Severity::High
        } else {
            Severity::Medium
        };
        out.push(Finding {
            detector: Self::NAME,
            key: format!("{}|{}|{}", key.process, key.dst, key.port),
            severity,
            confidence: s.score,
            techniques,
            summary: format!(
                "{} beacons to {}:{} ({} connections, score {:.3})",
                process,
                key.dst,
                key.port,
                conns.len(),
                s.score
            ),
            entities: serde_json::json!({"pid": t.pid, "exe": process, "dst_ip": key.dst, "dst_port": key.port}),
            evidence: serde_json::json!({
                "score": s.score, "ts_score": s.ts, "ds_score": s.ds,
                "dur_score": s.dur, "hist_score": s.hist,
                "connections": conns.len(), "window_s": self.cfg.window_s,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ritas_data_size_vectors() {
        let v: Vec<f64> = (1..=10).map(|x| x as f64).collect();
        assert_eq!(ds_score(&v), 0.773);
        let v = [98.0, 99.0, 99.0, 100.0, 100.0, 100.0, 101.0, 101.0, 102.0];
        assert_eq!(ds_score(&v), 0.995);
        assert_eq!(ds_score(&[0.0; 10]), 0.5);
    }

    /// Deterministic pseudo-random numbers in [0, 1).
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn jittered_beacon_scores_high() {
        // 60 s period, ±20 % uniform jitter, over a day.
        let mut seed = 7;
        let mut t = 0.0;
        let mut conns = Vec::new();
        while t < 86_400.0 {
            conns.push((t, 512.0));
            t += 60.0 * (1.0 + 0.4 * (lcg(&mut seed) - 0.5));
        }
        let s = score(&conns, 0.0, 86_400.0);
        assert!(s.score >= 0.70, "{s:?}");
    }

    #[test]
    fn irregular_browsing_does_not() {
        // Bursty human browsing: clusters of requests at random times, varied sizes.
        let mut seed = 42;
        let mut conns = Vec::new();
        for _ in 0..25 {
            let base = lcg(&mut seed) * 86_400.0;
            for k in 0..(1 + (lcg(&mut seed) * 6.0) as usize) {
                conns.push((
                    base + k as f64 * lcg(&mut seed) * 30.0,
                    200.0 + lcg(&mut seed) * 90_000.0,
                ));
            }
        }
        let s = score(&conns, 0.0, 86_400.0);
        assert!(s.score < 0.70, "{s:?}");
    }

    #[test]
    fn quartiles_leave_out_the_middle() {
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0, 5.0]), (1.5, 3.0, 4.5));
        assert_eq!(quartiles(&[1.0, 2.0, 3.0, 4.0]), (1.5, 2.5, 3.5));
    }

    fn flow(port: u16) -> Body {
        Body::Flow(Box::new(crate::record::Flow {
            community_id: String::new(),
            proto: "tcp",
            direction: "outbound",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst_ip: "203.0.113.80".parse().expect("ip"),
            dst_port: port,
            pid: Some(5),
            comm: None,
            exe: Some(std::sync::Arc::from("/tmp/implant")),
            packets_out: 3,
            packets_in: 3,
            bytes_out: 300,
            bytes_in: 212,
            duration_ms: 10.0,
            syn: 1,
            rst: 0,
            fin: 2,
            end_reason: "close",
            features: [0.0; 16],
        }))
    }

    /// A strict 30 s beacon over an hour-long window to a web port, a TLS
    /// port, DNS and a non-standard port.
    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let cfg = BeaconConfig {
            window_s: 3600.0,
            ..BeaconConfig::default()
        };
        let mut d = BeaconDetector::new(cfg, Beaconing::default());
        let mut out = Vec::new();
        for port in [80, 443, 53, 4444] {
            let before = out.len();
            for i in 0..120 {
                d.on_record(i as f64 * 30.0, &flow(port), &mut out);
            }
            assert!(out.len() > before, "no beacon on port {port}");
        }
        out
    }
}
