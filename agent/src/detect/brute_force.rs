//! Brute force (T1110.001, T1110.003, T1078): PAM results from the libpam
//! uprobe, plus inbound connection rate to sshd for attempts PAM never
//! sees (public keys). Leaky buckets per source (CrowdSec ssh-bf/ssh-slow-bf),
//! distinct users for spraying, and success after failures.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::lru::Bounded;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::Body;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceConfig {
    /// Fast bucket: failures that overflow it (CrowdSec ssh-bf: 5, 10 s leak).
    pub capacity: f64,
    pub leak_s: f64,
    /// Slow bucket (ssh-slow-bf: 10 per 60 s leak).
    pub slow_capacity: f64,
    pub slow_leak_s: f64,
    /// Distinct users from one source that make it spraying.
    pub spray_users: usize,
    /// Failures before a success that make the success suspicious (T1078).
    pub success_after_failures: u64,
    /// Inbound sshd connections per source that overflow (leak 6 s).
    pub conn_capacity: f64,
    pub conn_leak_s: f64,
    /// Sources tracked (LRU).
    pub max_sources: usize,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig {
            capacity: 5.0,
            leak_s: 10.0,
            slow_capacity: 10.0,
            slow_leak_s: 60.0,
            spray_users: 5,
            success_after_failures: 5,
            conn_capacity: 20.0,
            conn_leak_s: 6.0,
            max_sources: 65_536,
        }
    }
}

/// A leaky bucket as CrowdSec runs it: one event leaks out every `leak_s`
/// while the bucket holds any, counted from when it last became non-empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    level: f64,
    next_leak: f64,
}

impl Bucket {
    /// Adds one event and returns how many the bucket holds.
    pub fn pour(&mut self, now: f64, leak_s: f64) -> f64 {
        while self.level > 0.0 && now >= self.next_leak {
            self.level -= 1.0;
            self.next_leak += leak_s;
        }
        if self.level == 0.0 {
            self.next_leak = now + leak_s;
        }
        self.level += 1.0;
        self.level
    }
}

#[derive(Default)]
struct Source {
    fast: Bucket,
    slow: Bucket,
    conns: Bucket,
    failures: u64,
    users: HashSet<String>,
    last_failure: f64,
}

pub struct BruteForceDetector {
    cfg: BruteForceConfig,
    sources: Bounded<String, Source>,
}

impl BruteForceDetector {
    pub fn new(cfg: BruteForceConfig) -> Self {
        let cap = cfg.max_sources;
        BruteForceDetector {
            cfg,
            sources: Bounded::new(cap),
        }
    }

    pub fn tracked(&self) -> usize {
        self.sources.len()
    }
}

fn is_sshd(exe: Option<&str>, comm: &str) -> bool {
    exe.is_some_and(|e| e.ends_with("/sshd")) || comm == "sshd"
}

impl Declared for BruteForceDetector {
    const NAME: &'static str = "brute_force";
    const TECHNIQUES: &'static [&'static str] = &["T1110", "T1110.001", "T1110.003", "T1078"];

    fn build(cfg: &DetectConfig, _shared: &Shared) -> Self {
        Self::new(cfg.brute_force.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for BruteForceDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        match body {
            Body::AuthAttempt(a) => {
                let Some(src) = a.rhost.clone().filter(|h| !h.is_empty()) else {
                    return;
                };
                let user = a.user.clone().unwrap_or_default();
                let service = a.service.clone().unwrap_or_default();
                let cfg = self.cfg.clone();
                let s = self
                    .sources
                    .get_or_insert_with(src.clone(), Source::default);
                let entities = serde_json::json!({
                    "src_ip": src, "user": user, "service": service,
                    "pid": a.pid, "exe": a.exe,
                });
                if a.result == "success" {
                    let recent = now - s.last_failure < cfg.slow_leak_s * cfg.slow_capacity;
                    if s.failures >= cfg.success_after_failures && recent {
                        out.push(Finding {
                            detector: Self::NAME,
                            key: format!("{src}|success"),
                            severity: Severity::High,
                            confidence: 0.9,
                            techniques: vec!["T1078", "T1110"],
                            summary: format!(
                                "login of {user} from {src} succeeded after {} failures",
                                s.failures
                            ),
                            entities,
                            evidence: serde_json::json!({"failures_before_success": s.failures}),
                        });
                    }
                    return;
                }
                s.failures += 1;
                s.last_failure = now;
                if s.users.len() < 256 {
                    s.users.insert(user.clone());
                }
                let fast = s.fast.pour(now, cfg.leak_s);
                let slow = s.slow.pour(now, cfg.slow_leak_s);
                let spraying = s.users.len() >= cfg.spray_users;
                if fast >= cfg.capacity || slow >= cfg.slow_capacity || spraying {
                    let (technique, severity) = if spraying {
                        ("T1110.003", Severity::High)
                    } else {
                        ("T1110.001", Severity::Medium)
                    };
                    out.push(Finding {
                        detector: Self::NAME,
                        key: src.clone(),
                        severity,
                        confidence: if spraying { 0.9 } else { 0.8 },
                        techniques: vec!["T1110", technique],
                        summary: if spraying {
                            format!(
                                "password spraying from {src}: {} users tried",
                                s.users.len()
                            )
                        } else {
                            format!(
                                "password guessing from {src} against {service} ({} failures)",
                                s.failures
                            )
                        },
                        entities,
                        evidence: serde_json::json!({
                            "failures": s.failures, "fast_bucket": fast, "slow_bucket": slow,
                            "distinct_users": s.users.len(),
                            "capacity": cfg.capacity, "leak_s": cfg.leak_s,
                        }),
                    });
                }
            }
            Body::NetAccept(c) if is_sshd(c.exe.as_deref(), &c.comm) || c.src_port == 22 => {
                let src = c.dst_ip.to_string();
                let cfg = self.cfg.clone();
                let s = self
                    .sources
                    .get_or_insert_with(src.clone(), Source::default);
                let level = s.conns.pour(now, cfg.conn_leak_s);
                if level >= cfg.conn_capacity {
                    out.push(Finding {
                        detector: Self::NAME,
                        key: format!("{src}|conns"),
                        severity: Severity::Medium,
                        confidence: 0.6,
                        techniques: vec!["T1110"],
                        summary: format!("{src} opens SSH connections at a brute-force rate"),
                        entities: serde_json::json!({"src_ip": src, "dst_port": c.src_port, "pid": c.pid}),
                        evidence: serde_json::json!({"connection_bucket": level, "capacity": cfg.conn_capacity}),
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AuthAttempt;

    fn auth(src: &str, user: &str, ok: bool) -> Body {
        Body::AuthAttempt(AuthAttempt {
            pid: 10,
            comm: "sshd".into(),
            exe: None,
            service: Some("sshd".into()),
            user: Some(user.into()),
            rhost: Some(src.into()),
            result: if ok { "success" } else { "failure" },
            code: if ok { 0 } else { 7 },
        })
    }

    fn run(d: &mut BruteForceDetector, t: f64, b: &Body) -> Vec<Finding> {
        let mut out = Vec::new();
        d.on_record(t, b, &mut out);
        out
    }

    #[test]
    fn four_failures_do_not_fire_five_do() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        for i in 0..4 {
            assert!(run(&mut d, i as f64, &auth("198.51.100.7", "root", false)).is_empty());
        }
        let f = run(&mut d, 4.0, &auth("198.51.100.7", "root", false));
        assert_eq!(f.len(), 1);
        assert!(f[0].techniques.contains(&"T1110.001"));
        assert_eq!(f[0].entities["src_ip"], "198.51.100.7");
    }

    #[test]
    fn slow_failures_leak_away() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        for i in 0..9 {
            assert!(run(
                &mut d,
                i as f64 * 70.0,
                &auth("198.51.100.8", "root", false)
            )
            .is_empty());
        }
    }

    #[test]
    fn five_users_is_spraying_and_success_after_failures_is_high() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        let mut last = Vec::new();
        for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            last = run(&mut d, i as f64 * 30.0, &auth("203.0.113.9", u, false));
        }
        assert!(last.iter().any(|f| f.techniques.contains(&"T1110.003")));
        let s = run(&mut d, 200.0, &auth("203.0.113.9", "e", true));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].severity, Severity::High);
        assert!(s[0].techniques.contains(&"T1078"));
        // A clean success from elsewhere is quiet.
        assert!(run(&mut d, 201.0, &auth("203.0.113.10", "e", true)).is_empty());
    }

    #[test]
    fn a_flood_of_sources_stays_bounded() {
        let mut d = BruteForceDetector::new(BruteForceConfig {
            max_sources: 1000,
            ..BruteForceConfig::default()
        });
        for i in 0..100_000u32 {
            let ip = std::net::Ipv4Addr::from(i);
            run(&mut d, 0.0, &auth(&ip.to_string(), "x", false));
        }
        assert_eq!(d.tracked(), 1000);
        assert_eq!(d.sources.shed, 99_000);
    }

    fn accept(src: &str) -> Body {
        Body::NetAccept(crate::record::Conn {
            pid: Some(10),
            comm: "sshd".into(),
            exe: Some(std::sync::Arc::from("/usr/sbin/sshd")),
            uid: Some(0),
            proto: "tcp",
            src_ip: "10.0.0.1".parse().expect("ip"),
            src_port: 22,
            dst_ip: src.parse().expect("ip"),
            dst_port: 50000,
            community_id: String::new(),
            old_state: None,
        })
    }

    /// Guessing, spraying, a success after failures and an sshd connection flood.
    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        let mut out = Vec::new();
        for i in 0..5 {
            out.extend(run(&mut d, i as f64, &auth("198.51.100.7", "root", false)));
        }
        for (i, u) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            out.extend(run(&mut d, i as f64 * 30.0, &auth("203.0.113.9", u, false)));
        }
        out.extend(run(&mut d, 200.0, &auth("203.0.113.9", "e", true)));
        let before = out.len();
        for i in 0..20 {
            out.extend(run(&mut d, i as f64 * 0.1, &accept("192.0.2.30")));
        }
        assert!(out.len() > before, "the connection flood fired nothing");
        out
    }
}
