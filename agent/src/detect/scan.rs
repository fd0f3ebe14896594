//! Network service discovery (T1046), after Zeek's scan.zeek: failed TCP
//! connections per scanner, inbound (our resets to closed ports) and
//! outbound (our SYNs refused or unanswered). ≥ 15 ports on one host or
//! ≥ 25 hosts on one port within the window.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::Body;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    pub window_s: f64,
    pub port_threshold: usize,
    pub host_threshold: usize,
    /// Scanners tracked (LRU).
    pub max_scanners: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            window_s: 300.0,
            port_threshold: 15,
            host_threshold: 25,
            max_scanners: 16_384,
        }
    }
}

/// Per scanner: targets and ports seen in the current window (bounded).
#[derive(Default)]
struct Scanner {
    since: f64,
    ports_by_host: HashMap<IpAddr, HashSet<u16>>,
    hosts_by_port: HashMap<u16, HashSet<IpAddr>>,
}

const MAX_SET: usize = 4096;

pub struct ScanDetector {
    cfg: ScanConfig,
    scanners: Bounded<(IpAddr, &'static str), Scanner>,
}

impl ScanDetector {
    pub fn new(cfg: ScanConfig) -> Self {
        let cap = cfg.max_scanners;
        ScanDetector {
            cfg,
            scanners: Bounded::new(cap),
        }
    }
}

impl Declared for ScanDetector {
    const NAME: &'static str = "scan";
    const TECHNIQUES: &'static [&'static str] = &["T1046"];

    fn build(cfg: &DetectConfig, _shared: &Shared) -> Self {
        Self::new(cfg.scan.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for ScanDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        // (scanner, target, port, direction)
        let (scanner, target, port, dir) = match body {
            Body::NetRefused(c) => (c.dst_ip, c.src_ip, c.src_port, "inbound"),
            Body::NetConnectFailed(c) => (c.src_ip, c.dst_ip, c.dst_port, "outbound"),
            _ => return,
        };
        let cfg = &self.cfg;
        let s = self
            .scanners
            .get_or_insert_with((scanner, dir), Scanner::default);
        if now - s.since > cfg.window_s {
            *s = Scanner {
                since: now,
                ..Scanner::default()
            };
        }
        let ports = s.ports_by_host.entry(target).or_default();
        if ports.len() < MAX_SET {
            ports.insert(port);
        }
        let n_ports = ports.len();
        let hosts = s.hosts_by_port.entry(port).or_default();
        if hosts.len() < MAX_SET {
            hosts.insert(target);
        }
        let n_hosts = hosts.len();
        let (what, severity) = if n_ports >= cfg.port_threshold {
            (format!("{n_ports} ports on {target}"), Severity::Medium)
        } else if n_hosts >= cfg.host_threshold {
            (format!("{n_hosts} hosts on port {port}"), Severity::High)
        } else {
            return;
        };
        let summary = if dir == "inbound" {
            format!("{scanner} scanned this host: failed connections to {what}")
        } else {
            format!("this host scans: failed connections to {what}")
        };
        out.push(Finding {
            detector: Self::NAME,
            key: format!("{scanner}|{dir}"),
            severity,
            confidence: 0.85,
            techniques: vec!["T1046"],
            summary,
            entities: serde_json::json!({"src_ip": scanner, "dst_ip": target, "direction": dir}),
            evidence: serde_json::json!({
                "ports_on_host": n_ports, "hosts_on_port": n_hosts,
                "window_s": cfg.window_s,
                "port_threshold": cfg.port_threshold, "host_threshold": cfg.host_threshold,
            }),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Conn;

    fn refused(scanner: &str, port: u16) -> Body {
        Body::NetRefused(Conn {
            pid: None,
            comm: String::new(),
            exe: None,
            uid: None,
            proto: "tcp",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: port,
            dst_ip: scanner.parse().expect("ip"),
            dst_port: 40000,
            community_id: String::new(),
            old_state: None,
        })
    }

    #[test]
    fn fourteen_ports_quiet_fifteen_fire() {
        let mut d = ScanDetector::new(ScanConfig::default());
        let mut out = Vec::new();
        for p in 0..14 {
            d.on_record(p as f64, &refused("192.0.2.66", 1000 + p), &mut out);
        }
        assert!(out.is_empty());
        d.on_record(15.0, &refused("192.0.2.66", 2000), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].techniques, vec!["T1046"]);
        assert_eq!(out[0].entities["src_ip"], "192.0.2.66");
    }

    #[test]
    fn the_window_forgets() {
        let mut d = ScanDetector::new(ScanConfig::default());
        let mut out = Vec::new();
        for p in 0..30 {
            d.on_record(p as f64 * 400.0, &refused("192.0.2.67", 1000 + p), &mut out);
        }
        assert!(out.is_empty());
    }

    fn connect_failed(target: &str, port: u16) -> Body {
        Body::NetConnectFailed(Conn {
            pid: Some(7),
            comm: "nmap".into(),
            exe: None,
            uid: Some(0),
            proto: "tcp",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst_ip: target.parse().expect("ip"),
            dst_port: port,
            community_id: String::new(),
            old_state: None,
        })
    }

    /// Many ports on one host (inbound) and one port on many hosts (outbound).
    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut d = ScanDetector::new(ScanConfig::default());
        let mut out = Vec::new();
        for p in 0..15 {
            d.on_record(p as f64, &refused("192.0.2.66", 1000 + p), &mut out);
        }
        for h in 1..=25 {
            d.on_record(
                h as f64,
                &connect_failed(&format!("10.9.0.{h}"), 22),
                &mut out,
            );
        }
        assert!(out.iter().any(|f| f.severity == Severity::High), "{out:?}");
        out
    }
}
