//! Sigma figures: records per second through every loaded rule of their
//! category, on one core. Rules come from `VIGIL_SIGMA_RULES` (a directory,
//! e.g. a SigmaHQ checkout's `rules/linux`; the project ships none of
//! SigmaHQ's) or else the project's own test rules.

mod common;
use common::pin_to_one_core;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use vigil::detect::sigma::fields::{Category, Users};
use vigil::detect::sigma::SigmaDetector;
use vigil::detect::Detector;
use vigil::record::{Body, Conn, FileWrite, ProcessExec};

/// Command lines of an ordinary busy host (build, package and shell
/// traffic), with a few that SigmaHQ-style rules look for.
const COMMANDS: &[(&str, &str, &str)] = &[
    ("/usr/bin/ls", "ls -la /var/log", "/usr/bin/bash"),
    (
        "/usr/bin/grep",
        "grep -r --include=*.rs fn main src",
        "/usr/bin/bash",
    ),
    ("/usr/bin/git", "git status --porcelain", "/usr/bin/bash"),
    (
        "/usr/bin/python3",
        "python3 -m pip list --format=json",
        "/usr/bin/bash",
    ),
    ("/usr/bin/cat", "cat /proc/meminfo", "/usr/bin/sh"),
    (
        "/usr/bin/sed",
        "sed -n 1,20p /etc/os-release",
        "/usr/bin/bash",
    ),
    ("/usr/bin/awk", "awk {print $1} /tmp/list", "/usr/bin/bash"),
    (
        "/usr/bin/dpkg-query",
        "dpkg-query -W -f=${Status} bash",
        "/usr/bin/apt-get",
    ),
    (
        "/usr/bin/tar",
        "tar czf /var/backups/etc.tgz /etc",
        "/usr/sbin/cron",
    ),
    ("/usr/bin/cc", "cc -O2 -c main.c -o main.o", "/usr/bin/make"),
    ("/usr/bin/sleep", "sleep 5", "/usr/lib/systemd/systemd"),
    (
        "/usr/bin/curl",
        "curl -fsSL https://example.org/install.sh",
        "/usr/bin/bash",
    ),
    (
        "/usr/bin/bash",
        "bash -c echo aGVsbG8= | base64 -d | sh",
        "/usr/sbin/sshd",
    ),
    ("/usr/bin/chmod", "chmod u+s /tmp/x", "/usr/bin/bash"),
    ("/usr/bin/crontab", "crontab /tmp/jobs", "/usr/bin/bash"),
    (
        "/tmp/.x/payload",
        "/tmp/.x/payload --daemon",
        "/usr/bin/bash",
    ),
];

/// The first this many of [`COMMANDS`] match none of the project's rules.
const BENIGN: usize = 12;

fn benign_exec(i: usize) -> Body {
    exec_of(i, i % BENIGN)
}

fn exec(i: usize) -> Body {
    exec_of(i, i % COMMANDS.len())
}

fn exec_of(i: usize, which: usize) -> Body {
    let (exe, cmd, parent) = COMMANDS[which];
    Body::ProcessExec(ProcessExec {
        pid: 10_000 + i as u32,
        ppid: 9_000 + (i % 97) as u32,
        uid: (i % 3) as u32 * 1000,
        gid: 0,
        comm: exe.rsplit('/').next().unwrap_or(exe).to_string(),
        exe: exe.to_string(),
        argv: cmd.split(' ').map(str::to_string).collect(),
        argv_truncated: false,
        cgroup_id: 1,
        stdio_socket: None,
        parent_exe: Some(Arc::from(parent)),
        parent_cmdline: Some(Arc::from(format!("{parent} -c run {i}").as_str())),
        cwd: Some("/home/dev/project".into()),
        auid: Some(1000),
        start_time: Some(i as u64),
        exe_file: None,
        script_file: None,
        file_owner: None,
        exe_arg: None,
    })
}

fn connect(i: usize) -> Body {
    Body::NetConnect(Conn {
        pid: Some(1000 + (i % 50) as u32),
        comm: "curl".into(),
        exe: Some(Arc::from(
            ["/usr/bin/curl", "/usr/bin/python3", "/usr/bin/bash"][i % 3],
        )),
        uid: Some(1000),
        proto: "tcp",
        src_ip: "10.0.0.5".parse().expect("ip"),
        src_port: 40_000 + (i % 20_000) as u16,
        dst_ip: std::net::IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
        dst_port: [443, 80, 22, 4444][i % 4],
        community_id: String::new(),
        old_state: None,
    })
}

fn write(i: usize) -> Body {
    Body::FileWrite(FileWrite {
        pid: 1000 + (i % 50) as u32,
        comm: "curl".into(),
        exe: Some(Arc::from("/usr/bin/curl")),
        path: ["/home/dev/dl.tgz", "/tmp/x", "/var/lib/app/cache"][i % 3].into(),
        file: None,
    })
}

fn measure(d: &mut SigmaDetector, name: &str, make: fn(usize) -> Body) {
    let n = 200_000;
    let records: Vec<Body> = (0..4096).map(make).collect();
    let mut out = Vec::new();
    // Warm up.
    for r in records.iter().take(1000) {
        d.on_record(0.0, r, &mut out);
    }
    out.clear();
    let t = Instant::now();
    let mut fired = 0usize;
    for i in 0..n {
        d.on_record(0.0, black_box(&records[i % records.len()]), &mut out);
        fired += out.len();
        out.clear();
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "sigma {name:<24} {:>4} rules  {:>10.0} records/s  ({:.2} µs each, {fired} matches in {n})",
        d.rules().loaded_in(match name {
            "process_creation" | "process_creation/benign" => Category::ProcessCreation,
            "network_connection" => Category::NetworkConnection,
            _ => Category::FileEvent,
        }),
        n as f64 / s,
        s / n as f64 * 1e6
    );
}

fn main() {
    pin_to_one_core();
    let dir = std::env::var_os("VIGIL_SIGMA_RULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sigma-rules"));
    let t = Instant::now();
    let set = vigil::rules::load(std::slice::from_ref(&dir));
    println!(
        "sigma rules from {}: {} loaded, {} unsupported, {} errors, compiled in {:.0} ms",
        dir.display(),
        set.loaded(),
        set.unsupported.len(),
        set.errors.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let users: Users = [(0, "root".to_string()), (1000, "dev".to_string())]
        .into_iter()
        .collect();
    let mut d = SigmaDetector::new(Arc::new(set), Arc::new(users));
    measure(&mut d, "process_creation/benign", benign_exec);
    measure(&mut d, "process_creation", exec);
    measure(&mut d, "network_connection", connect);
    measure(&mut d, "file_event", write);
}
