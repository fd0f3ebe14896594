//! Lateral movement (T1021.*, T1210): outbound connections from this host
//! to internal peers on admin ports. A new peer is low severity, fan-out to
//! many peers medium, a sweep of failed admin connections high.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::Body;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LateralConfig {
    pub admin_ports: Vec<u16>,
    /// Seconds after start-up during which peers are learned, not reported.
    pub learn_s: f64,
    pub window_s: f64,
    pub fanout_peers: usize,
    pub failed_sweep_peers: usize,
    pub max_keys: usize,
}

impl Default for LateralConfig {
    fn default() -> Self {
        LateralConfig {
            admin_ports: vec![22, 445, 3389, 5985, 5986, 135, 5900],
            learn_s: 600.0,
            window_s: 600.0,
            fanout_peers: 5,
            failed_sweep_peers: 5,
            max_keys: 16_384,
        }
    }
}

fn internal(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_link_local()
                || v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64
        }
        IpAddr::V6(v) => {
            (v.segments()[0] & 0xfe00) == 0xfc00 || (v.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn technique(port: u16) -> &'static str {
    match port {
        22 => "T1021.004",
        445 | 135 => "T1021.002",
        3389 => "T1021.001",
        5985 | 5986 => "T1021.006",
        5900 => "T1021.005",
        _ => "T1021",
    }
}

#[derive(Default)]
struct Window {
    since: f64,
    peers: HashSet<IpAddr>,
    failed: HashSet<IpAddr>,
}

pub struct LateralDetector {
    cfg: LateralConfig,
    started: Option<f64>,
    known: Bounded<(String, IpAddr, u16), ()>,
    windows: Bounded<String, Window>,
}

impl LateralDetector {
    pub fn new(cfg: LateralConfig) -> Self {
        let cap = cfg.max_keys;
        LateralDetector {
            cfg,
            started: None,
            known: Bounded::new(cap),
            windows: Bounded::new(cap),
        }
    }
}

impl Declared for LateralDetector {
    const NAME: &'static str = "lateral";
    const TECHNIQUES: &'static [&'static str] = &[
        "T1021",
        "T1021.001",
        "T1021.002",
        "T1021.004",
        "T1021.005",
        "T1021.006",
        "T1210",
    ];

    fn build(cfg: &DetectConfig, _shared: &Shared) -> Self {
        Self::new(cfg.lateral.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for LateralDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        let started = *self.started.get_or_insert(now);
        let (c, failed) = match body {
            Body::NetConnect(c) => (c, false),
            Body::NetConnectFailed(c) => (c, true),
            _ => return,
        };
        if !self.cfg.admin_ports.contains(&c.dst_port) || !internal(&c.dst_ip) {
            return;
        }
        let who = c
            .exe
            .as_deref()
            .map(str::to_string)
            .unwrap_or_else(|| c.comm.clone());
        let cfg = &self.cfg;
        // Built only for a finding: most connections make none.
        let entities = || serde_json::json!({"pid": c.pid, "exe": who, "src_ip": c.src_ip, "dst_ip": c.dst_ip, "dst_port": c.dst_port});
        let w = self
            .windows
            .get_or_insert_with(who.clone(), Window::default);
        if now - w.since > cfg.window_s {
            *w = Window {
                since: now,
                ..Window::default()
            };
        }
        if failed {
            if w.failed.len() < 4096 {
                w.failed.insert(c.dst_ip);
            }
            if w.failed.len() >= cfg.failed_sweep_peers {
                out.push(Finding {
                    detector: Self::NAME,
                    key: format!("{who}|sweep"),
                    severity: Severity::High,
                    confidence: 0.8,
                    techniques: vec![technique(c.dst_port), "T1210"],
                    summary: format!("{who} swept {} internal hosts on admin ports with failed connections", w.failed.len()),
                    entities: entities(),
                    evidence: serde_json::json!({"failed_peers": w.failed.len(), "window_s": cfg.window_s}),
                });
            }
            return;
        }
        if w.peers.len() < 4096 {
            w.peers.insert(c.dst_ip);
        }
        let fanout = w.peers.len();
        let key = (who.clone(), c.dst_ip, c.dst_port);
        let new_peer = self.known.get_mut(&key).is_none();
        self.known.put(key, ());
        if fanout >= cfg.fanout_peers {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("{who}|fanout"),
                severity: Severity::Medium,
                confidence: 0.7,
                techniques: vec![technique(c.dst_port)],
                summary: format!("{who} reached {fanout} internal hosts on admin ports"),
                entities: entities(),
                evidence: serde_json::json!({"peers": fanout, "window_s": cfg.window_s}),
            });
        } else if new_peer && now - started >= cfg.learn_s {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("{who}|{}|{}", c.dst_ip, c.dst_port),
                severity: Severity::Low,
                confidence: 0.4,
                techniques: vec![technique(c.dst_port)],
                summary: format!(
                    "{who} connected to a new internal peer {}:{}",
                    c.dst_ip, c.dst_port
                ),
                entities: entities(),
                evidence: serde_json::json!({"new_peer": true}),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Conn;

    fn conn(dst: &str, port: u16, failed: bool) -> Body {
        let c = Conn {
            pid: Some(9),
            comm: "ssh".into(),
            exe: Some(std::sync::Arc::from("/usr/bin/ssh")),
            uid: Some(0),
            proto: "tcp",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst_ip: dst.parse().expect("ip"),
            dst_port: port,
            community_id: String::new(),
            old_state: None,
        };
        if failed {
            Body::NetConnectFailed(c)
        } else {
            Body::NetConnect(c)
        }
    }

    #[test]
    fn fanout_and_sweep_fire_public_and_web_do_not() {
        let mut d = LateralDetector::new(LateralConfig {
            learn_s: 0.0,
            ..Default::default()
        });
        let mut out = Vec::new();
        d.on_record(0.0, &conn("8.8.8.8", 22, false), &mut out);
        d.on_record(0.0, &conn("10.0.0.9", 443, false), &mut out);
        assert!(out.is_empty());
        for i in 2..7 {
            d.on_record(i as f64, &conn(&format!("10.0.0.{i}"), 22, false), &mut out);
        }
        assert!(out
            .iter()
            .any(|f| f.severity == Severity::Medium && f.techniques == vec!["T1021.004"]));
        out.clear();
        for i in 10..15 {
            d.on_record(20.0, &conn(&format!("10.0.1.{i}"), 445, true), &mut out);
        }
        assert!(out
            .iter()
            .any(|f| f.severity == Severity::High && f.techniques.contains(&"T1210")));
    }

    /// A new peer on every admin port (one configured beyond the defaults),
    /// fan-out, and a sweep of failed connections.
    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut cfg = LateralConfig {
            learn_s: 0.0,
            ..Default::default()
        };
        cfg.admin_ports.push(2222);
        let mut d = LateralDetector::new(cfg);
        let mut out = Vec::new();
        for (i, port) in [22, 445, 135, 3389, 5985, 5986, 5900, 2222]
            .iter()
            .enumerate()
        {
            d.on_record(
                i as f64,
                &conn(&format!("10.0.0.{}", i + 2), *port, false),
                &mut out,
            );
        }
        for i in 10..15 {
            d.on_record(20.0, &conn(&format!("10.0.1.{i}"), 445, true), &mut out);
        }
        for sev in [Severity::Low, Severity::Medium, Severity::High] {
            assert!(out.iter().any(|f| f.severity == sev), "no {sev:?} finding");
        }
        out
    }
}
