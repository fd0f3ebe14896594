//! A real OpenSSH server with PAM password authentication and hydra
//! against it, shared by the detection and response tests and the
//! response benchmark.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{run, GroupGuard, TempDir, Topology};

/// A real OpenSSH server with PAM password auth in the host namespace,
/// and a throw-away local user. Both removed on drop.
pub struct Sshd {
    _child: GroupGuard,
    _dir: TempDir,
    /// sshd's own log (INFO: every failed password), for fail2ban; empty
    /// when sshd logs to syslog instead.
    pub log: PathBuf,
}

pub const USER: &str = "vigiltest";
pub const PASSWORD: &str = "Corr3ct-Horse-Battery";

impl Sshd {
    pub fn start(topo: &Topology) -> Sshd {
        let ready_from = topo.peers[0].clone();
        Sshd::start_in(&topo.h, &topo.host_ip(1), &ready_from)
    }

    /// sshd in namespace `ns`, ready once `from` (another namespace) can
    /// connect to `ip`:2222.
    pub fn start_in(ns: &str, ip: &str, from: &str) -> Sshd {
        Sshd::spawn(ns, ip, from, true)
    }

    /// Like `start`, but sshd logs through syslog(3) (`/dev/log`), as a
    /// packaged sshd does, for tools that read a syslog file.
    pub fn start_syslog(topo: &Topology) -> Sshd {
        let from = topo.peers[0].clone();
        Sshd::spawn(&topo.h, &topo.host_ip(1), &from, false)
    }

    fn spawn(ns: &str, ip: &str, from: &str, own_log: bool) -> Sshd {
        let dir = TempDir::new("sshd");
        let key = dir.0.join("host_ed25519");
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &key.to_string_lossy(),
            ],
        );
        let _ = Command::new("useradd")
            .args(["-M", "-s", "/bin/sh", USER])
            .stderr(Stdio::null())
            .status();
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
            .expect("write");
        assert!(chpasswd.wait().expect("chpasswd").success());
        std::fs::create_dir_all("/run/sshd").expect("privsep dir");
        let cfg = dir.0.join("sshd_config");
        let log = dir.0.join("sshd.log");
        std::fs::write(
            &cfg,
            format!(
                "Port 2222\nListenAddress 0.0.0.0\nHostKey {}\nUsePAM yes\nPasswordAuthentication yes\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin no\nPidFile {}/sshd.pid\n\
                 MaxAuthTries 100\nMaxStartups 100\nLogLevel INFO\nUseDNS no\n",
                key.display(),
                dir.0.display()
            ),
        )
        .expect("sshd_config");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "/usr/sbin/sshd", "-D"]);
        if own_log {
            cmd.arg("-E").arg(&log);
        }
        let child = GroupGuard::spawn(
            cmd.arg("-f")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // Wait until it listens.
        let dst = format!("{ip}:2222");
        for _ in 0..100 {
            if port_open_from(from, &dst) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Sshd {
            _child: child,
            _dir: dir,
            log: if own_log { log } else { PathBuf::new() },
        }
    }
}

/// sshd answers with its banner, not an echo: any TCP connect counts.
pub fn port_open(topo: &Topology, dst: &str) -> bool {
    port_open_from(&topo.peers[0], dst)
}

/// Whether a TCP connect from namespace `ns` to `dst` (ip:port) completes
/// within 3 s (a dropped SYN would otherwise retry for minutes).
pub fn port_open_from(ns: &str, dst: &str) -> bool {
    let (ip, port) = dst.rsplit_once(':').unwrap_or((dst, ""));
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{ip}/{port}"),
        ])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(USER)
            .stderr(Stdio::null())
            .status();
    }
}

/// hydra from namespace `ns` against the host's address on that link.
pub fn hydra(ns: &str, host_ip: &str, words: &[&str], dir: &Path) -> String {
    let list = dir.join(format!("words-{ns}.txt"));
    std::fs::write(&list, words.join("\n") + "\n").expect("wordlist");
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "hydra", "-I", "-t", "4", "-l", USER, "-P",
        ])
        .arg(&list)
        .arg(format!("ssh://{host_ip}:2222"))
        .output()
        .expect("hydra");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
