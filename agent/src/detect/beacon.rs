//! C2 beaconing (T1071, T1573, T1571): RITA v5's score ([`super::rita`]),
//! streamed over several windows at once. Per (process, destination, port)
//! a bounded ring of (start, bytes) is kept; each window (15 min, 1 h and
//! RITA's day by default) is scored once it holds enough connections, at
//! most once per its scoring period. A beacon that starts now is found in
//! the short window within minutes instead of a day later, and a slow one
//! in the long window; a candidate must also pass the regularity gate.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::rita::{regularity, score, Score};
use super::{Detector, Finding, Severity};
use crate::record::Body;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// Seconds of history scored by the longest window (RITA: a day).
    pub window_s: f64,
    /// Shorter windows scored alongside it, each with RITA's constants in
    /// bars of 1/24 of it; any not shorter than `window_s` is ignored.
    pub short_windows_s: Vec<f64>,
    /// Connections needed in a window before it is scored (RITA: 4).
    pub min_connections: usize,
    /// Seconds between two scorings of a candidate in the longest window;
    /// a shorter window is scored proportionally more often.
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
            short_windows_s: vec![900.0, 3_600.0],
            min_connections: 4,
            scoring_period_s: 300.0,
            threshold: 0.70,
            history: 512,
            max_keys: 16_384,
        }
    }
}

/// Windows scored at once, at most this many (shortest first).
const MAX_WINDOWS: usize = 4;

/// The windows to score: the short ones that are shorter than the longest
/// (finite, positive, distinct), then the longest.
fn windows(cfg: &BeaconConfig) -> Vec<f64> {
    let mut w: Vec<f64> = cfg
        .short_windows_s
        .iter()
        .copied()
        .filter(|w| w.is_finite() && *w > 0.0 && *w < cfg.window_s)
        .collect();
    w.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    w.dedup();
    w.truncate(MAX_WINDOWS - 1);
    w.push(cfg.window_s);
    w
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
    /// When each window was last scored.
    last_scored: [f64; MAX_WINDOWS],
    pid: Option<u32>,
}

/// Destinations currently beaconing, shared with the exfiltration detector (T1041).
pub type Beaconing = Arc<Mutex<HashSet<IpAddr>>>;

pub struct BeaconDetector {
    cfg: BeaconConfig,
    windows: Vec<f64>,
    tracks: Bounded<Key, Track>,
    pub beaconing: Beaconing,
}

impl BeaconDetector {
    pub fn new(cfg: BeaconConfig, beaconing: Beaconing) -> Self {
        let cap = cfg.max_keys;
        BeaconDetector {
            windows: windows(&cfg),
            cfg,
            tracks: Bounded::new(cap),
            beaconing,
        }
    }
}

/// One window's verdict.
struct Scored {
    window_s: f64,
    connections: usize,
    score: Score,
    spread: Option<(f64, f64)>,
    /// A longer window's intervals are irregular.
    contradicted: bool,
}

impl Scored {
    fn regular(&self) -> bool {
        !self.contradicted && self.spread.is_some_and(|(s, allowed)| s <= allowed)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "window_s": self.window_s, "connections": self.connections,
            "score": self.score.score, "interval_spread": self.spread.map(|s| s.0),
            "spread_allowed": self.spread.map(|s| s.1), "contradicted": self.contradicted,
        })
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
        let t = self.tracks.get_or_insert_with(key, || Track {
            conns: VecDeque::new(),
            last_scored: [f64::MIN; MAX_WINDOWS],
            pid: None,
        });
        t.pid = f.pid.or(t.pid);
        t.conns.push_back((start, bytes));
        while t.conns.len() > history {
            t.conns.pop_front();
        }
        let longest = self.cfg.window_s;
        while t.conns.front().is_some_and(|c| c.0 < now_s - longest) {
            t.conns.pop_front();
        }
        let due: Vec<usize> = (0..self.windows.len())
            .filter(|&i| {
                let period = self.cfg.scoring_period_s * self.windows[i] / longest;
                now_s - t.last_scored[i] >= period
            })
            .collect();
        if due.is_empty() {
            return;
        }
        // Every window's regularity, so a short window's chance regularity
        // is overruled by a longer window that holds the same connections
        // and more: a beacon stays regular as the window grows, random
        // arrivals do not.
        let in_window = |w: f64| -> Vec<(f64, f64)> {
            t.conns
                .iter()
                .copied()
                .filter(|c| c.0 >= now_s - w)
                .collect()
        };
        // Each window's connections once: its spread and its score use the same.
        let per_window: Vec<Vec<(f64, f64)>> = self.windows.iter().map(|&w| in_window(w)).collect();
        let spreads: Vec<Option<(f64, f64)>> = per_window
            .iter()
            .map(|conns| regularity(&conns.iter().map(|c| c.0).collect::<Vec<_>>()))
            .collect();
        let mut scored = Vec::new();
        for i in due {
            let w = self.windows[i];
            let conns = &per_window[i];
            if conns.len() < self.cfg.min_connections {
                continue;
            }
            t.last_scored[i] = now_s;
            let contradicted = spreads[i + 1..]
                .iter()
                .any(|s| s.is_some_and(|(spread, allowed)| spread > allowed));
            scored.push(Scored {
                window_s: w,
                connections: conns.len(),
                score: score(conns, now_s - w, w),
                spread: spreads[i],
                contradicted,
            });
        }
        let Some(best) = scored
            .iter()
            .filter(|s| s.score.score >= self.cfg.threshold && s.regular())
            .max_by(|a, b| {
                a.score
                    .score
                    .partial_cmp(&b.score.score)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        else {
            return;
        };
        if let Ok(mut b) = self.beaconing.lock() {
            b.insert(f.dst_ip);
        }
        // Web ports map to web protocols (TLS ports also to T1573), DNS to
        // T1071.004, anything else to a non-standard port (T1571).
        let mut techniques = vec!["T1071"];
        match f.dst_port {
            80 | 8080 => techniques.push("T1071.001"),
            443 | 8443 => techniques.extend(["T1071.001", "T1573"]),
            53 => techniques.push("T1071.004"),
            _ => techniques.push("T1571"),
        }
        let s = best.score;
        let severity = if s.score >= 0.9 {
            Severity::High
        } else {
            Severity::Medium
        };
        out.push(Finding {
            detector: Self::NAME,
            key: format!("{}|{}|{}", process, f.dst_ip, f.dst_port),
            severity,
            confidence: s.score,
            techniques,
            summary: format!(
                "{} beacons to {}:{} ({} connections in {:.0} s, score {:.3})",
                process, f.dst_ip, f.dst_port, best.connections, best.window_s, s.score
            ),
            entities: serde_json::json!({"pid": t.pid, "exe": process, "dst_ip": f.dst_ip, "dst_port": f.dst_port}),
            evidence: serde_json::json!({
                "score": s.score, "ts_score": s.ts, "ds_score": s.ds,
                "dur_score": s.dur, "hist_score": s.hist,
                "connections": best.connections, "window_s": best.window_s,
                "interval_spread": best.spread.map(|x| x.0),
                "windows": scored.iter().map(Scored::json).collect::<Vec<_>>(),
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rita::tests::lcg;

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

    /// A flow record of `bytes` to the test destination, from pid 5.
    fn flow_of(bytes: u64) -> Body {
        let Body::Flow(mut f) = flow(8443) else {
            unreachable!("flow() builds a flow")
        };
        f.bytes_out = bytes;
        f.bytes_in = 0;
        Body::Flow(f)
    }

    /// Connection starts with period `period_s` and uniform ±`jitter`
    /// (a fraction of the period), from a random phase, up to `horizon_s`.
    fn jittered(period_s: f64, jitter: f64, horizon_s: f64, seed: &mut u64) -> Vec<f64> {
        let mut t = lcg(seed) * period_s;
        let mut out = Vec::new();
        while t < horizon_s {
            out.push(t);
            t += period_s * (1.0 + 2.0 * jitter * (lcg(seed) - 0.5));
        }
        out
    }

    /// Poisson arrivals with mean gap `mean_s`, up to `horizon_s`.
    fn poisson(mean_s: f64, horizon_s: f64, seed: &mut u64) -> Vec<f64> {
        let mut t = 0.0;
        let mut out = Vec::new();
        loop {
            t += -mean_s * (1.0 - lcg(seed)).ln();
            if t >= horizon_s {
                return out;
            }
            out.push(t);
        }
    }

    /// Feeds one flow per start (each lasting 50 ms) to a detector with the
    /// default windows; the simulated time of the first finding, if any.
    fn first_alert(starts: &[f64], bytes: u64) -> Option<f64> {
        first_finding(BeaconConfig::default(), starts, bytes).map(|(t, _)| t)
    }

    fn first_finding(cfg: BeaconConfig, starts: &[f64], bytes: u64) -> Option<(f64, Finding)> {
        let mut d = BeaconDetector::new(cfg, Beaconing::default());
        let mut out = Vec::new();
        let mut f = flow_of(bytes);
        if let Body::Flow(x) = &mut f {
            x.duration_ms = 50.0;
        }
        for &t in starts {
            d.on_record(t + 0.05, &f, &mut out);
            if let Some(first) = out.pop() {
                return Some((t + 0.05, first));
            }
        }
        None
    }

    #[test]
    fn a_60_s_beacon_with_20_percent_jitter_is_found_within_15_minutes() {
        for seed in 1..=5 {
            let mut s = seed;
            let starts = jittered(60.0, 0.2, 86_400.0, &mut s);
            let at = first_alert(&starts, 512).expect("never found");
            let after = at - starts[0];
            assert!(
                after <= 900.0,
                "seed {seed}: found {after:.0} s after it began"
            );
        }
    }

    #[test]
    fn fixed_size_downloads_at_random_times_are_not_beacons() {
        for mean in [20.0, 60.0, 300.0] {
            for seed in 1..=3 {
                let mut s = seed;
                let starts = poisson(mean, 86_400.0, &mut s);
                let alert = first_finding(BeaconConfig::default(), &starts, 200_000);
                assert!(alert.is_none(), "mean gap {mean} s, seed {seed}: {alert:?}");
            }
        }
    }

    #[test]
    fn windows_are_the_short_ones_then_the_longest() {
        let cfg = BeaconConfig {
            window_s: 3_600.0,
            short_windows_s: vec![900.0, f64::NAN, 7_200.0, -1.0, 900.0, 60.0, 120.0, 300.0],
            ..BeaconConfig::default()
        };
        assert_eq!(windows(&cfg), [60.0, 120.0, 300.0, 3_600.0]);
        assert_eq!(
            windows(&BeaconConfig::default()),
            [900.0, 3_600.0, 86_400.0]
        );
    }

    /// Simulated minutes to the first alert (median of five seeds) per
    /// period and jitter, with the default config, and at ±20 % with only
    /// RITA's day window (before the short windows).
    fn time_to_detect_table() -> String {
        let day_only = BeaconConfig {
            short_windows_s: Vec::new(),
            ..BeaconConfig::default()
        };
        let mut t = String::from(
            "| period | jitter ±0 % | ±20 % | ±50 % | ±20 %, day window only |\n|---|---|---|---|---|\n",
        );
        for period in [10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0] {
            t += &format!("| {period:.0} s |");
            for (jitter, cfg) in [
                (0.0, BeaconConfig::default()),
                (0.2, BeaconConfig::default()),
                (0.5, BeaconConfig::default()),
                (0.2, day_only.clone()),
            ] {
                let mut found: Vec<f64> = (1..=5u64)
                    .filter_map(|seed| {
                        let mut s = seed;
                        let starts = jittered(period, jitter, 86_400.0, &mut s);
                        first_finding(cfg.clone(), &starts, 512)
                            .map(|(at, _)| (at - starts[0]) / 60.0)
                    })
                    .collect();
                found.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                t += &match found.len() {
                    0 => " not in 24 h |".to_string(),
                    n if n < 5 => format!(" {:.0} min ({n} of 5 seeds) |", found[n / 2]),
                    _ => format!(" {:.0} min |", found[2]),
                };
            }
            t += "\n";
        }
        t
    }

    const START: &str = "<!-- beacon-ttd:start -->\n";
    const END: &str = "<!-- beacon-ttd:end -->";

    /// The time-to-detect table in docs/detectors.md is what this module
    /// measures; `VIGIL_BLESS=1` rewrites it.
    #[test]
    fn beacon_time_to_detect_table_in_docs_is_generated() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/detectors.md");
        let doc = std::fs::read_to_string(&path).expect("docs/detectors.md");
        let start = doc.find(START).expect("beacon-ttd:start marker") + START.len();
        let end = doc[start..].find(END).expect("beacon-ttd:end marker") + start;
        let want = time_to_detect_table();
        if doc[start..end] == want {
            return;
        }
        if std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1") {
            let updated = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("rewrite docs/detectors.md");
            return;
        }
        panic!(
            "docs/detectors.md: the beacon time-to-detect table differs from what \
             agent/src/detect/beacon.rs measures.\n\
             Regenerate it with: VIGIL_BLESS=1 cargo test -p vigil --lib beacon_time_to_detect\n\
             --- in the doc\n{}--- measured\n{want}",
            &doc[start..end]
        );
    }
}
