//! Brute force (T1110.001, T1110.003, T1078): PAM results from the libpam
//! uprobe, plus inbound connection rate to sshd for attempts PAM never
//! sees (public keys). Leaky buckets per source (CrowdSec ssh-bf/ssh-slow-bf),
//! distinct users for spraying, and success after failures.
//!
//! A PAM result names a remote source only when the pipeline verified it
//! (`trusted`: a configured service as root, rhost = a peer it accepted).
//! Anyone may call libpam with any rhost, so every other result is kept
//! per local uid, in keys no address can take, and its alerts name the
//! uid and carry no address a playbook could block.

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
    /// Executables whose PAM results may name a remote address: checked
    /// by exact path, and only when running as root with rhost equal to a
    /// peer the process (or its parent) accepted.
    pub services: Vec<String>,
}

/// sshd's privileged per-connection process: re-executed `sshd` up to
/// OpenSSH 9.7, `sshd-session` from 9.8.
pub fn default_services() -> Vec<String> {
    vec![
        "/usr/sbin/sshd".to_string(),
        "/usr/lib/openssh/sshd-session".to_string(),
    ]
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
            services: default_services(),
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

/// Confidence of alerts whose source is only a local uid: below the
/// shipped brute-force playbook's `min_confidence` (0.6), so they are seen
/// but open no blocking incident.
pub const UNVERIFIED_CONFIDENCE: f64 = 0.5;

/// An accepted connection to the SSH service: on the privileged port 22
/// (only root binds it), or by a configured service executable running as
/// root. A process name or an exe merely called `sshd` does not count: any
/// user can start one, and its peers would then be counted and blocked.
fn is_ssh_accept(c: &crate::record::Conn, services: &[String]) -> bool {
    c.src_port == 22
        || (c.uid == Some(0)
            && c.exe
                .as_deref()
                .is_some_and(|e| services.iter().any(|s| s == e)))
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
                let claimed = a.rhost.clone().filter(|h| !h.is_empty());
                // Who is behind the attempts: a verified remote peer, else
                // the local uid that called libpam. The keys cannot meet:
                // an address never starts with "uid:".
                let (key, who, verified) = match a.peer.filter(|_| a.trusted) {
                    Some(peer) => (peer.to_string(), peer.to_string(), true),
                    // Results without any rhost (sudo, su, login on a tty)
                    // are not what this detector counts.
                    None if claimed.is_none() => return,
                    None => (
                        format!("uid:{}", a.uid),
                        format!("local uid {} (pid {})", a.uid, a.pid),
                        false,
                    ),
                };
                let user = a.user.clone().unwrap_or_default();
                let service = a.service.clone().unwrap_or_default();
                let cfg = &self.cfg;
                let s = self
                    .sources
                    .get_or_insert_with(key.clone(), Source::default);
                let entities = if verified {
                    serde_json::json!({
                        "src_ip": key, "user": user, "service": service,
                        "pid": a.pid, "exe": a.exe,
                    })
                } else {
                    // Nothing to block: the address is whatever the caller said.
                    serde_json::json!({
                        "uid": a.uid, "user": user, "service": service,
                        "pid": a.pid, "exe": a.exe,
                    })
                };
                // An unverified source is certain only as far as the uid.
                let confidence = |c: f64| {
                    if verified {
                        c
                    } else {
                        c.min(UNVERIFIED_CONFIDENCE)
                    }
                };
                let provenance = |mut v: serde_json::Value| {
                    v["rhost_verified"] = verified.into();
                    if !verified {
                        v["rhost_claimed"] = claimed.clone().into();
                    }
                    v
                };
                if a.result == "success" {
                    let recent = now - s.last_failure < cfg.slow_leak_s * cfg.slow_capacity;
                    if s.failures >= cfg.success_after_failures && recent {
                        out.push(Finding {
                            detector: Self::NAME,
                            key: format!("{key}|success"),
                            severity: Severity::High,
                            confidence: confidence(0.9),
                            techniques: vec!["T1078", "T1110"],
                            summary: format!(
                                "login of {user} from {who} succeeded after {} failures",
                                s.failures
                            ),
                            entities,
                            evidence: provenance(
                                serde_json::json!({"failures_before_success": s.failures}),
                            ),
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
                        key: key.clone(),
                        severity,
                        confidence: confidence(if spraying { 0.9 } else { 0.8 }),
                        techniques: vec!["T1110", technique],
                        summary: if spraying {
                            format!(
                                "password spraying from {who}: {} users tried",
                                s.users.len()
                            )
                        } else {
                            format!(
                                "password guessing from {who} against {service} ({} failures)",
                                s.failures
                            )
                        },
                        entities,
                        evidence: provenance(serde_json::json!({
                            "failures": s.failures, "fast_bucket": fast, "slow_bucket": slow,
                            "distinct_users": s.users.len(),
                            "capacity": cfg.capacity, "leak_s": cfg.leak_s,
                        })),
                    });
                }
            }
            Body::NetAccept(c) if is_ssh_accept(c, &self.cfg.services) => {
                let src = c.dst_ip.to_string();
                let cfg = &self.cfg;
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

    /// A PAM result from sshd whose rhost the pipeline verified.
    fn auth(src: &str, user: &str, ok: bool) -> Body {
        Body::AuthAttempt(AuthAttempt {
            pid: 10,
            uid: 0,
            comm: "sshd".into(),
            exe: None,
            service: Some("sshd".into()),
            user: Some(user.into()),
            rhost: Some(src.into()),
            result: if ok { "success" } else { "failure" },
            code: if ok { 0 } else { 7 },
            trusted: true,
            peer: src.parse().ok(),
        })
    }

    /// A PAM result from a process the pipeline could not vouch for: `uid`
    /// called libpam itself and set rhost to whatever it liked.
    fn forged(uid: u32, rhost: &str, user: &str, ok: bool) -> Body {
        Body::AuthAttempt(AuthAttempt {
            pid: 4242,
            uid,
            comm: "python3".into(),
            exe: Some(std::sync::Arc::from("/usr/bin/python3.11")),
            service: Some("sshd".into()),
            user: Some(user.into()),
            rhost: Some(rhost.into()),
            result: if ok { "success" } else { "failure" },
            code: if ok { 0 } else { 7 },
            trusted: false,
            peer: None,
        })
    }

    #[test]
    fn forged_rhosts_alert_on_the_local_uid_and_name_no_address() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        let mut out = Vec::new();
        for i in 0..6 {
            out.extend(run(
                &mut d,
                i as f64,
                &forged(1000, "198.51.100.7", "root", false),
            ));
        }
        // The fifth failure fires (the engine folds the repeats).
        assert_eq!(out.len(), 2, "{out:?}");
        let f = &out[0];
        assert!(f.techniques.contains(&"T1110.001"));
        assert_eq!(f.key, "uid:1000");
        assert_eq!(f.entities["uid"], 1000);
        assert!(f.entities.get("src_ip").is_none(), "{}", f.entities);
        assert!(f.entities.get("dst_ip").is_none(), "{}", f.entities);
        assert!(!f.entities.to_string().contains("198.51.100.7"));
        assert_eq!(f.evidence["rhost_claimed"], "198.51.100.7");
        assert!(f.confidence < 0.6, "below the shipped playbook's trigger");
        assert!(f.summary.contains("local uid 1000"), "{}", f.summary);
    }

    #[test]
    fn forged_failures_neither_fill_nor_pre_empt_a_real_sources_bucket() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        // A local user claims the address of a real peer, many times.
        for i in 0..50 {
            run(
                &mut d,
                i as f64,
                &forged(1000, "203.0.113.5", "root", false),
            );
        }
        // That peer's one real failure, then a real success, are quiet.
        assert!(run(&mut d, 60.0, &auth("203.0.113.5", "root", false)).is_empty());
        assert!(run(&mut d, 61.0, &auth("203.0.113.5", "root", true)).is_empty());
        // And the real peer's own guessing still fires under its address.
        let mut out = Vec::new();
        for i in 0..5 {
            out.extend(run(
                &mut d,
                70.0 + i as f64,
                &auth("203.0.113.5", "x", false),
            ));
        }
        assert!(out.iter().any(|f| f.entities["src_ip"] == "203.0.113.5"));
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

    #[test]
    fn a_listener_merely_named_sshd_is_not_the_ssh_service() {
        let mut d = BruteForceDetector::new(BruteForceConfig::default());
        let fake = |src: &str, exe: &str, uid: u32| {
            let Body::NetAccept(mut c) = accept(src) else {
                unreachable!()
            };
            c.src_port = 2222;
            c.exe = Some(std::sync::Arc::from(exe));
            c.uid = Some(uid);
            Body::NetAccept(c)
        };
        let mut out = Vec::new();
        for i in 0..100 {
            out.extend(run(
                &mut d,
                i as f64 * 0.01,
                &fake("198.51.100.9", "/tmp/x/sshd", 1000),
            ));
            out.extend(run(
                &mut d,
                i as f64 * 0.01,
                &fake("198.51.100.9", "/usr/sbin/sshd", 1000),
            ));
        }
        assert!(out.is_empty(), "{out:?}");
        for i in 0..100 {
            out.extend(run(
                &mut d,
                i as f64 * 0.01,
                &fake("198.51.100.9", "/usr/sbin/sshd", 0),
            ));
        }
        assert!(
            !out.is_empty(),
            "root's configured sshd on another port counts"
        );
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
        for i in 0..6 {
            out.extend(run(
                &mut d,
                i as f64,
                &forged(1000, "198.51.100.9", "root", false),
            ));
        }
        let before = out.len();
        for i in 0..20 {
            out.extend(run(&mut d, i as f64 * 0.1, &accept("192.0.2.30")));
        }
        assert!(out.len() > before, "the connection flood fired nothing");
        out
    }
}
