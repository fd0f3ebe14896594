//! Suspicious process behaviour (T1059.004, T1620, T1564.001, T1204):
//! execution from world-writable or hidden paths or from memory, a shell
//! spawned by a network service, and a shell wired to a socket.
//!
//! Build trees, CI runners and package builds run their own binaries from
//! /tmp every day, so an exec from a world-writable directory alone is
//! `info` evidence; it is an alert only with a second signal (see
//! [`ProcessDetector::second_signals`]).

use serde::{Deserialize, Serialize};

use super::config::DetectConfig;
use super::registry::{Declared, Shared};
use super::{Detector, Finding, Severity};
use crate::record::{Body, FileId, ProcessExec};

/// Processes remembered for the ancestry check, and listeners.
const LINEAGE: usize = 16_384;
const LISTENERS: usize = 4_096;

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
    /// The path it was opened by, for people (and to confirm a script,
    /// whose identity at exec comes from a stat without a generation).
    path: String,
    /// The inode's generation: an inode number freed and reused by another
    /// file has another one.
    generation: Option<u32>,
    /// Where the writer last connected to: most likely where the file came from.
    remote: Option<std::net::IpAddr>,
}

pub struct ProcessDetector {
    cfg: ProcessConfig,
    /// Files written, by (device, inode): renames keep it, another file
    /// at the same path is another key.
    written: super::lru::Bounded<(u64, u64), Written>,
    /// Last outbound destination per pid, so process alerts can name the
    /// address a response should cut (download source, shell peer).
    remotes: super::lru::Bounded<u32, std::net::IpAddr>,
    /// pid → (parent pid, executable), from execs and forks.
    lineage: super::lru::Bounded<u32, (u32, String)>,
    /// Processes that accepted a connection: network services by behaviour.
    listeners: super::lru::Bounded<u32, ()>,
}

impl ProcessDetector {
    pub fn new(cfg: ProcessConfig) -> Self {
        ProcessDetector {
            cfg,
            written: super::lru::Bounded::new(4096),
            remotes: super::lru::Bounded::new(8192),
            lineage: super::lru::Bounded::new(LINEAGE),
            listeners: super::lru::Bounded::new(LISTENERS),
        }
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn entities(e: &ProcessExec) -> serde_json::Value {
    serde_json::json!({"pid": e.pid, "start_time": e.start_time, "ppid": e.ppid, "exe": e.exe, "parent_exe": e.parent_exe, "uid": e.uid, "argv": e.argv})
}

impl ProcessDetector {
    /// The write this exec runs, if any: the mapped executable by its full
    /// identity, or a `#!` script by (dev, inode) and the path it was
    /// written by (its stat has no generation).
    fn written_file(&mut self, e: &ProcessExec) -> Option<&Written> {
        let key = |f: &FileId| (f.dev, f.ino);
        let mapped = e.exe_file.as_ref().and_then(|f| {
            self.written
                .get_mut(&key(f))
                .filter(|w| w.generation == f.generation)
                .map(|_| key(f))
        });
        let script = e.script_file.as_ref().and_then(|f| {
            self.written
                .get_mut(&key(f))
                .filter(|w| w.path == e.exe)
                .map(|_| key(f))
        });
        let k = mapped.or(script)?;
        self.written.get_mut(&k).map(|w| &*w)
    }
}

impl ProcessDetector {
    /// Whether `pid` is a network service: by name, or it accepted a
    /// connection.
    fn is_service(&mut self, pid: u32, exe: Option<&str>) -> bool {
        exe.is_some_and(|x| self.cfg.network_services.iter().any(|s| base(x) == s))
            || self.listeners.get_mut(&pid).is_some()
    }

    /// What makes an exec from a world-writable directory more than a
    /// build: the file came from a network-facing writer, another user owns
    /// it, the parent or grandparent is a network service (two hops: a
    /// webshell's `sh -c`, not a CI runner's build three levels down), the
    /// name is hidden, or the file was deleted after start.
    fn second_signals(
        &mut self,
        e: &ProcessExec,
        net_written: bool,
        hidden: bool,
    ) -> Vec<&'static str> {
        let mut signals = Vec::new();
        if net_written {
            signals.push("network_writer");
        }
        if let Some(owner) = e.file_owner {
            if owner.uid != e.uid {
                signals.push("other_owner");
            }
            if owner.links == 0 {
                signals.push("deleted");
            }
        }
        let grand = self.lineage.get_mut(&e.ppid).map(|(gp, _)| *gp);
        let grand_exe = grand.and_then(|gp| self.lineage.get_mut(&gp).map(|(_, x)| x.clone()));
        if self.is_service(e.ppid, e.parent_exe.as_deref())
            || grand.is_some_and(|gp| gp != 0 && self.is_service(gp, grand_exe.as_deref()))
        {
            signals.push("network_service_ancestry");
        }
        if hidden {
            signals.push("hidden");
        }
        signals
    }
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
        if let Body::NetAccept(c) = body {
            if let Some(pid) = c.pid {
                self.listeners.put(pid, ());
            }
            return;
        }
        if let Body::ProcessFork(f) = body {
            if !f.maybe_thread {
                let exe = self.lineage.get_mut(&f.ppid).map(|(_, x)| x.clone());
                self.lineage.put(f.pid, (f.ppid, exe.unwrap_or_default()));
            }
            return;
        }
        if let Body::FileWrite(w) = body {
            // Without the kernel's identity of the file there is nothing
            // an exec can be matched against: a path can name anything.
            let Some(file) = w.file else { return };
            let writer = w
                .exe
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| w.comm.clone());
            self.written.put(
                (file.dev, file.ino),
                Written {
                    pid: w.pid,
                    writer,
                    at: now,
                    path: w.path.clone(),
                    generation: file.generation,
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
        let written = self.written_file(e);
        let net_written = written.is_some();
        if let Some(w) = written {
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
                evidence: serde_json::json!({"writer": w.writer, "writer_pid": w.pid, "written_path": w.path, "written_s_before_exec": now - w.at, "writer_remote": w.remote}),
            });
        }
        // A hidden executable, or a hidden directory inside a world-writable
        // one (dot-directories in home directories are everyday tooling).
        let hidden_file = base(&e.exe).starts_with('.');
        let hidden_in_tmp = self.cfg.suspicious_dirs.iter().any(|d| {
            e.exe
                .strip_prefix(d.as_str())
                .is_some_and(|rest| rest.split('/').any(|c| c.starts_with('.') && c.len() > 1))
        });
        let tmp_dir = self
            .cfg
            .suspicious_dirs
            .iter()
            .find(|d| e.exe.starts_with(d.as_str()))
            .cloned();
        let signals = match tmp_dir {
            Some(_) => self.second_signals(e, net_written, hidden_file || hidden_in_tmp),
            None => Vec::new(),
        };
        self.lineage.put(e.pid, (e.ppid, e.exe.clone()));
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
        // From memory: a memfd or an unlinked file. A descriptor path alone
        // is not enough: systemd-executor is run by fexecve.
        if e.exe.starts_with("/memfd:") || e.exe.contains("(deleted)") {
            push(
                "memfd",
                Severity::High,
                0.9,
                vec!["T1620"],
                format!("process {} runs from memory ({})", e.pid, e.exe),
                serde_json::json!({"exe": e.exe}),
            );
        } else if let Some((dir, signals)) = tmp_dir.map(|d| (d, signals)) {
            let (key, severity, confidence, summary) = if signals.is_empty() {
                let s = format!(
                    "{} executed from {dir} (no second signal: evidence only)",
                    e.exe
                );
                ("tmpexec-info", Severity::Info, 0.3, s)
            } else {
                let s = format!("{} executed from {dir} ({})", e.exe, signals.join(", "));
                ("tmpexec", Severity::Medium, 0.7, s)
            };
            push(
                key,
                severity,
                confidence,
                vec!["T1059", "T1204"],
                summary,
                serde_json::json!({"exe": e.exe, "dir": dir, "signals": signals, "file_owner": e.file_owner.map(|o| serde_json::json!({"uid": o.uid, "links": o.links}))}),
            );
        }
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
    use crate::record::FileOwner;

    fn exec(exe: &str, parent: Option<&str>, socket: Option<bool>) -> Body {
        exec_of(exe, parent, socket, Some(OTHER), None)
    }

    fn exec_of(
        exe: &str,
        parent: Option<&str>,
        socket: Option<bool>,
        exe_file: Option<FileId>,
        script_file: Option<FileId>,
    ) -> Body {
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
            start_time: Some(1234),
            parent_cmdline: None,
            cwd: None,
            auid: None,
            exe_file,
            script_file,
            file_owner: None,
            exe_arg: None,
        })
    }

    /// The file curl writes: /srv/app/update on device 8:1, inode 77.
    const UPDATE: FileId = FileId {
        dev: 2049,
        ino: 77,
        generation: Some(5),
    };
    /// Any other file.
    const OTHER: FileId = FileId {
        dev: 2049,
        ino: 99,
        generation: Some(1),
    };

    /// An exec of the file curl wrote, under any path.
    fn exec_update(exe: &str) -> Body {
        exec_of(exe, Some("/usr/bin/bash"), None, Some(UPDATE), None)
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
        d.on_record(2.0, &exec_update("/srv/app/update"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].techniques, vec!["T1204.002"]);
        assert_eq!(out[0].entities["dst_ip"], "203.0.113.7");
        assert_eq!(out[0].entities["start_time"], 1234);
        out.clear();
        // Renamed, it is still the file that was written.
        d.on_record(2.5, &exec_update("/srv/app/renamed"), &mut out);
        assert_eq!(out.len(), 1, "a rename hid the file");
        out.clear();
        d.on_record(
            3.0,
            &exec("/srv/app/other", Some("/usr/bin/bash"), None),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn only_the_written_inode_matches_not_its_path_or_a_reused_number() {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        d.on_record(1.0, &curl_writes_update(), &mut out);
        // Another file now at that path (root replaced it): not the write.
        d.on_record(2.0, &exec("/srv/app/update", None, None), &mut out);
        // The inode number freed and reused by another file.
        let reused = FileId {
            generation: Some(6),
            ..UPDATE
        };
        d.on_record(
            3.0,
            &exec_of("/srv/app/new", None, None, Some(reused), None),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        // A write whose file the kernel could not identify counts for nothing.
        let mut blind = curl_writes_update();
        if let Body::FileWrite(w) = &mut blind {
            w.file = None;
            w.path = "/srv/app/blind".into();
        }
        d.on_record(4.0, &blind, &mut out);
        d.on_record(5.0, &exec("/srv/app/blind", None, None), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_written_script_matches_by_inode_and_path() {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        d.on_record(1.0, &curl_writes_update(), &mut out);
        let script = FileId {
            generation: None,
            ..UPDATE
        };
        // The kernel maps the interpreter; the script is stat'ed.
        let run_script =
            |exe: &str| exec_of(exe, Some("/usr/bin/bash"), None, Some(OTHER), Some(script));
        d.on_record(2.0, &run_script("/srv/app/elsewhere"), &mut out);
        assert!(
            out.is_empty(),
            "a stat without generation needs the path too"
        );
        d.on_record(3.0, &run_script("/srv/app/update"), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].techniques, vec!["T1204.002"]);
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

    fn tmp_exec(pid: u32, ppid: u32, exe: &str, owner: Option<FileOwner>) -> Body {
        let Body::ProcessExec(mut e) = exec_of(exe, None, None, Some(OTHER), None) else {
            unreachable!("exec_of builds an exec")
        };
        e.pid = pid;
        e.ppid = ppid;
        e.file_owner = owner;
        Body::ProcessExec(e)
    }

    fn severities(d: &mut ProcessDetector, b: Body) -> Vec<(Severity, serde_json::Value)> {
        let mut out = Vec::new();
        d.on_record(1.0, &b, &mut out);
        out.into_iter()
            .filter(|f| f.key.starts_with("tmpexec"))
            .map(|f| (f.severity, f.evidence["signals"].clone()))
            .collect()
    }

    const MINE: Option<FileOwner> = Some(FileOwner { uid: 33, links: 1 });

    #[test]
    fn a_build_under_tmp_is_evidence_and_a_second_signal_makes_it_an_alert() {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        // cargo (pid 50, under a shell) runs its build script from /tmp.
        d.on_record(
            0.0,
            &exec_of("/usr/bin/bash", None, None, None, None),
            &mut Vec::new(),
        );
        let build = "/tmp/b/target/debug/build/x-1/build-script-build";
        assert_eq!(
            severities(&mut d, tmp_exec(60, 50, build, MINE)),
            [(Severity::Info, serde_json::json!([]))]
        );
        // Gone before the stat: still only evidence.
        assert_eq!(
            severities(&mut d, tmp_exec(61, 50, build, None))[0].0,
            Severity::Info
        );
        // Owned by another user (root running a user's planted file).
        let theirs = Some(FileOwner {
            uid: 1000,
            links: 1,
        });
        assert_eq!(
            severities(&mut d, tmp_exec(62, 50, "/tmp/x", theirs)),
            [(Severity::Medium, serde_json::json!(["other_owner"]))]
        );
        // Deleted once started.
        let gone = Some(FileOwner { uid: 33, links: 0 });
        assert_eq!(
            severities(&mut d, tmp_exec(63, 50, "/tmp/x", gone)),
            [(Severity::Medium, serde_json::json!(["deleted"]))]
        );
        // Hidden.
        assert_eq!(
            severities(&mut d, tmp_exec(64, 50, "/var/tmp/.cache/x", MINE)),
            [(Severity::Medium, serde_json::json!(["hidden"]))]
        );
    }

    #[test]
    fn a_network_service_two_hops_up_is_a_second_signal_three_is_not() {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        // A python web server (pid 10) that accepted a connection forks a
        // shell (20) that runs /tmp/x: a webshell's chain.
        let accept = |pid| {
            Body::NetAccept(crate::record::Conn {
                pid: Some(pid),
                comm: "python3".into(),
                exe: None,
                uid: Some(33),
                proto: "tcp",
                src_ip: "10.0.0.1".parse().expect("ip"),
                src_port: 8000,
                dst_ip: "10.0.0.9".parse().expect("ip"),
                dst_port: 5000,
                community_id: String::new(),
                old_state: None,
            })
        };
        d.on_record(0.0, &tmp_exec(10, 1, "/usr/bin/python3.11", None), &mut out);
        d.on_record(0.0, &accept(10), &mut out);
        let fork = |pid, ppid| {
            Body::ProcessFork(crate::record::ProcessFork {
                pid,
                ppid,
                maybe_thread: false,
            })
        };
        d.on_record(0.0, &fork(20, 10), &mut out);
        d.on_record(0.0, &tmp_exec(20, 10, "/usr/bin/dash", None), &mut out);
        assert_eq!(
            severities(&mut d, tmp_exec(30, 20, "/tmp/x", MINE)),
            [(
                Severity::Medium,
                serde_json::json!(["network_service_ancestry"])
            )]
        );
        // nginx by name as the parent.
        let Body::ProcessExec(mut e) = tmp_exec(31, 99, "/tmp/y", MINE) else {
            unreachable!()
        };
        e.parent_exe = Some(std::sync::Arc::from("/usr/sbin/nginx"));
        assert_eq!(
            severities(&mut d, Body::ProcessExec(e))[0].0,
            Severity::Medium
        );
        // A build three levels below the service (CI runner → sh → cargo →
        // build script) is the runner's work, not a webshell.
        d.on_record(0.0, &fork(40, 20), &mut out);
        d.on_record(0.0, &tmp_exec(40, 20, "/usr/bin/cargo", None), &mut out);
        assert_eq!(
            severities(&mut d, tmp_exec(41, 40, "/tmp/b/build-script-build", MINE))[0].0,
            Severity::Info
        );
        // The written-by-a-network-process signal is the T1204.002 rule's.
        d.on_record(1.0, &curl_writes_update(), &mut out);
        let Body::ProcessExec(mut e) = tmp_exec(42, 40, "/tmp/update", MINE) else {
            unreachable!()
        };
        e.exe_file = Some(UPDATE);
        assert_eq!(
            severities(&mut d, Body::ProcessExec(e)),
            [(Severity::Medium, serde_json::json!(["network_writer"]))]
        );
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
            file: Some(UPDATE),
        })
    }

    pub(super) fn fire_every_finding() -> Vec<Finding> {
        let mut d = ProcessDetector::new(ProcessConfig::default());
        let mut out = Vec::new();
        d.on_record(1.0, &curl_writes_update(), &mut out);
        for b in [
            exec_update("/srv/app/update"),
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
