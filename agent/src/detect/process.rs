//! Suspicious process behaviour (T1059.004, T1620, T1564.001, T1204):
//! execution from world-writable or hidden paths or from memory, a shell
//! spawned by a network service, and a shell wired to a socket.

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::{Body, ProcessExec};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Directories no legitimate binary runs from.
    pub suspicious_dirs: Vec<String>,
    /// Executables of network services whose shells are suspicious.
    pub network_services: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            suspicious_dirs: vec!["/tmp/".into(), "/var/tmp/".into(), "/dev/shm/".into()],
            network_services: [
                "nginx",
                "apache2",
                "httpd",
                "lighttpd",
                "php-fpm",
                "mysqld",
                "mariadbd",
                "postgres",
                "redis-server",
                "mongod",
                "tomcat",
                "java",
                "node",
                "caddy",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// Who wrote a file, remembered until it is executed (or evicted).
struct Written {
    pid: u32,
    writer: String,
    at: f64,
    /// Where the writer last connected to: most likely where the file came from.
    remote: Option<std::net::IpAddr>,
}

pub struct ProcessDetector {
    cfg: ProcessConfig,
    written: super::lru::Bounded<String, Written>,
    /// Last outbound destination per pid, so process alerts can name the
    /// address a response should cut (download source, shell peer).
    remotes: super::lru::Bounded<u32, std::net::IpAddr>,
}

impl ProcessDetector {
    pub fn new(cfg: ProcessConfig) -> Self {
        ProcessDetector {
            cfg,
            written: super::lru::Bounded::new(4096),
            remotes: super::lru::Bounded::new(8192),
        }
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn entities(e: &ProcessExec) -> serde_json::Value {
    serde_json::json!({"pid": e.pid, "ppid": e.ppid, "exe": e.exe, "parent_exe": e.parent_exe, "uid": e.uid, "argv": e.argv})
}

/// The entities plus `dst_ip`, the address a response would cut.
fn entities_to(e: &ProcessExec, remote: Option<std::net::IpAddr>) -> serde_json::Value {
    let mut ent = entities(e);
    if let Some(ip) = remote {
        ent["dst_ip"] = ip.to_string().into();
    }
    ent
}

impl Declared for ProcessDetector {
    const NAME: &'static str = "process";
    const TECHNIQUES: &'static [&'static str] = &[
        "T1204.002",
        "T1059.004",
        "T1620",
        "T1059",
        "T1204",
        "T1564.001",
    ];

    fn build(cfg: &DetectConfig, _shared: &Shared) -> Self {
        Self::new(cfg.process.clone())
    }

    #[cfg(test)]
    fn fire_every_finding() -> Vec<Finding> {
        tests::fire_every_finding()
    }
}

impl Detector for ProcessDetector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn techniques(&self) -> &'static [&'static str] {
        Self::TECHNIQUES
    }

    fn on_record(&mut self, now: f64, body: &Body, out: &mut Vec<Finding>) {
        if let Body::NetConnect(c) = body {
            if let Some(pid) = c.pid {
                self.remotes.put(pid, c.dst_ip);
            }
            return;
        }
        if let Body::FileWrite(w) = body {
            let writer = w
                .exe
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| w.comm.clone());
            self.written.put(
                w.path.clone(),
                Written {
                    pid: w.pid,
                    writer,
                    at: now,
                    remote: self.remotes.get_mut(&w.pid).copied(),
                },
            );
            return;
        }
        let Body::ProcessExec(e) = body else { return };
        // The shell's (or its parent's) peer, for the reverse-shell rule.
        let peer = self
            .remotes
            .get_mut(&e.pid)
            .copied()
            .or_else(|| self.remotes.get_mut(&e.ppid).copied());
        // A file a network-facing process wrote, now executed (T1204.002).
        if let Some(w) = self.written.get_mut(&e.exe) {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("netexec|{}", e.exe),
                severity: Severity::High,
                confidence: 0.85,
                techniques: vec!["T1204.002"],
                summary: format!(
                    "{} was written by network-facing {} (pid {}) and then executed",
                    e.exe, w.writer, w.pid
                ),
                entities: entities_to(e, w.remote),
                evidence: serde_json::json!({"writer": w.writer, "writer_pid": w.pid, "written_s_before_exec": now - w.at, "writer_remote": w.remote}),
            });
        }
        let shell = crate::util::is_shell(&e.exe);
        if shell && e.stdio_socket == Some(true) {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("revshell|{}", e.exe),
                severity: Severity::Critical,
                confidence: 0.95,
                techniques: vec!["T1059.004"],
                summary: format!(
                    "reverse shell: {} (pid {}) has a socket for stdin/stdout",
                    e.exe, e.pid
                ),
                entities: entities_to(e, peer),
                evidence: serde_json::json!({"stdio_socket": true}),
            });
        }
        let mut push = |key: &str,
                        severity,
                        confidence,
                        techniques: Vec<&'static str>,
                        summary: String,
                        evidence| {
            out.push(Finding {
                detector: Self::NAME,
                key: format!("{key}|{}", e.exe),
                severity,
                confidence,
                techniques,
                summary,
                entities: entities(e),
                evidence,
            })
        };
        if e.exe.starts_with("/memfd:") || e.exe.contains("(deleted)") {
            push(
                "memfd",
                Severity::High,
                0.9,
                vec!["T1620"],
                format!("process {} runs from memory ({})", e.pid, e.exe),
                serde_json::json!({"exe": e.exe}),
            );
        } else if let Some(dir) = self
            .cfg
            .suspicious_dirs
            .iter()
            .find(|d| e.exe.starts_with(d.as_str()))
        {
            push(
                "tmpexec",
                Severity::Medium,
                0.7,
                vec!["T1059", "T1204"],
                format!("{} executed from {dir}", e.exe),
                serde_json::json!({"exe": e.exe, "dir": dir}),
            );
        }
        // A hidden executable, or a hidden directory inside a world-writable
        // one (dot-directories in home directories are everyday tooling).
        let hidden_file = base(&e.exe).starts_with('.');
        let hidden_in_tmp = self.cfg.suspicious_dirs.iter().any(|d| {
            e.exe
                .strip_prefix(d.as_str())
                .is_some_and(|rest| rest.split('/').any(|c| c.starts_with('.') && c.len() > 1))
        });
        if hidden_file || hidden_in_tmp {
            push(
                "hidden",
                Severity::Medium,
                0.7,
                vec!["T1564.001"],
                format!("{} executed from a hidden path", e.exe),
                serde_json::json!({"exe": e.exe}),
            );
        }
        if shell {
            if let Some(parent) = e.parent_exe.as_deref() {
                if self.cfg.network_services.iter().any(|s| base(parent) == s) {
                    push(
                        "svcshell",
                        Severity::High,
                        0.85,
                        vec!["T1059.004"],
                        format!("network service {parent} spawned the shell {}", e.exe),
                        serde_json::json!({"parent_exe": parent}),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(exe: &str, parent: Option<&str>, socket: Option<bool>) -> Body {
        Body::ProcessExec(ProcessExec {
            pid: 100,
            ppid: 10,
            uid: 33,
            gid: 33,
            comm: base(exe).to_string(),
            exe: exe.to_string(),
            argv: vec![exe.to_string()],
            argv_truncated: false,
            cgroup_id: 1,
            stdio_socket: socket,
            parent_exe: parent.map(std::sync::Arc::from),
        })
    }

    fn run(b: Body) -> Vec<Finding> {
        let mut out = Vec::new();
        ProcessDetector::new(ProcessConfig::default()).on_record(0.0, &b, &mut out);
        out
    }

    #[test]
    fn a_file_written_by_a_network_process_then_run_fires() {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        // The writer's connection names where the file most likely came from.
        d.on_record(
            0.5,
            &Body::NetConnect(crate::record::Conn {
                pid: Some(5),
                comm: "curl".into(),
                exe: None,
                uid: Some(0),
                proto: "tcp",
                src_ip: "10.0.0.1".parse().unwrap(),
                src_port: 40000,
                dst_ip: "203.0.113.7".parse().unwrap(),
                dst_port: 80,
                community_id: String::new(),
                old_state: None,
            }),
            &mut out,
        );
        d.on_record(1.0, &curl_writes_update(), &mut out);
        assert!(out.is_empty());
        d.on_record(
            2.0,
            &exec("/srv/app/update", Some("/usr/bin/bash"), None),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].techniques, vec!["T1204.002"]);
        assert_eq!(out[0].entities["dst_ip"], "203.0.113.7");
        out.clear();
        d.on_record(
            3.0,
            &exec("/srv/app/other", Some("/usr/bin/bash"), None),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn each_behaviour_fires_and_normal_exec_does_not() {
        assert!(run(exec("/usr/bin/ls", Some("/usr/bin/bash"), None)).is_empty());
        assert!(run(exec("/usr/bin/bash", Some("/usr/sbin/sshd"), Some(false))).is_empty());
        assert_eq!(
            run(exec("/tmp/x", None, None))[0].techniques,
            vec!["T1059", "T1204"]
        );
        assert_eq!(run(exec("/dev/shm/.k", None, None)).len(), 2);
        assert!(run(exec("/root/.pyenv/shims/python3", None, None)).is_empty());
        assert_eq!(
            run(exec("/home/u/.x", None, None))[0].techniques,
            vec!["T1564.001"]
        );
        assert_eq!(
            run(exec("/memfd:payload (deleted)", None, None))[0].techniques,
            vec!["T1620"]
        );
        let rs = run(exec("/usr/bin/bash", None, Some(true)));
        assert_eq!(rs[0].severity, Severity::Critical);
        let svc = run(exec("/bin/sh", Some("/usr/sbin/nginx"), Some(false)));
        assert_eq!(svc[0].techniques, vec!["T1059.004"]);
    }

    /// A downloaded file run, a reverse shell, a service's shell, and exec
    /// from a world-writable dir, a hidden path and memory.
    /// curl (pid 5) writes /srv/app/update.
    fn curl_writes_update() -> Body {
        Body::FileWrite(crate::record::FileWrite {
            pid: 5,
            comm: "curl".into(),
            exe: Some(std::sync::Arc::from("/usr/bin/curl")),
            path: "/srv/app/update".into(),
        })
    }

    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        d.on_record(1.0, &curl_writes_update(), &mut out);
        for b in [
            exec("/srv/app/update", Some("/usr/bin/bash"), None),
            exec("/usr/bin/bash", None, Some(true)),
            exec("/bin/sh", Some("/usr/sbin/nginx"), Some(false)),
            exec("/tmp/x", None, None),
            exec("/home/u/.x", None, None),
            exec("/memfd:payload (deleted)", None, None),
        ] {
            d.on_record(2.0, &b, &mut out);
        }
        for kind in [
            "netexec", "revshell", "svcshell", "tmpexec", "hidden", "memfd",
        ] {
            assert!(
                out.iter().any(|f| f.key.starts_with(kind)),
                "no {kind} finding"
            );
        }
        out
    }
}
