//! Harness for the root-only integration tests: start the real agent, read
//! its JSON lines, and build throw-away network namespaces joined by veth.
//! Everything created here is removed on drop, on failure too.

pub mod fleet;
pub mod kafka;
pub mod sshd;
pub use sshd::{hydra, port_open, port_open_from, Sshd, PASSWORD, USER};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound on waiting for something the kernel should report. It bounds
/// a hang, it does not judge speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("integration tests must run as root (they load eBPF programs): use sudo");
    }
}

pub fn vigil_bin() -> PathBuf {
    match std::env::var_os("VIGIL_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            root.join("target/release/vigil")
        }
    }
}

/// The `netpeer` helper, which cargo builds next to the test binaries
/// (`target/<profile>/netpeer`, tests run from `target/<profile>/deps`).
pub fn netpeer() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    // Benchmark binaries live next to netpeer, not in deps/.
    let sibling = exe.parent().map(|d| d.join("netpeer"));
    if let Some(p) = sibling.filter(|p| p.exists()) {
        return p;
    }
    let p = profile_dir.join("netpeer");
    assert!(p.exists(), "netpeer helper not built at {}", p.display());
    p
}

/// Deletes a network namespace, quietly (it may already be gone).
pub fn delete_netns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// `netpeer ARGS` inside network namespace `ns`.
pub fn netpeer_in(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(netpeer()).args(args);
    c
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("vigil-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The agent running as a child process, writing JSON lines to a file.
pub struct Agent {
    child: Option<Child>,
    pub output: PathBuf,
    pub dir: TempDir,
}

pub const TEST_CONFIG: &str = "\
stats_interval_s: 1
flows:
  sweep_interval_ms: 200
  udp_idle_timeout_s: 1
  close_linger_ms: 100
enforce:
  enabled: false
metrics:
  listen: \"\"
";

impl Agent {
    pub fn start() -> Agent {
        Agent::start_with(TEST_CONFIG)
    }

    pub fn start_with(config: &str) -> Agent {
        Agent::start_in(None, config, TempDir::new("agent"))
    }

    /// Starts the agent inside network namespace `netns` (only the network
    /// namespace: bpffs and cgroups stay the host's), keeping its state in `dir`.
    pub fn start_in(netns: Option<&str>, config: &str, dir: TempDir) -> Agent {
        Agent::start_env(netns, config, dir, &[])
    }

    /// Starts the agent with extra environment variables and arguments;
    /// does not wait for it.
    pub fn spawn(
        netns: Option<&str>,
        config: &str,
        dir: TempDir,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Agent {
        require_root();
        let cfg = dir.0.join("vigil.yaml");
        std::fs::write(&cfg, format!("state_dir: {}\n{config}", dir.0.display()))
            .expect("write config");
        let output = dir.0.join("events.jsonl");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(vigil_bin());
                c
            }
            None => Command::new(vigil_bin()),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(&output)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("stderr.log")).expect("stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", vigil_bin().display()));
        Agent {
            child: Some(child),
            output,
            dir,
        }
    }

    /// As [`Agent::start_env`]: the agent is ready when it wrote `agent_start`.
    pub fn start_env(
        netns: Option<&str>,
        config: &str,
        dir: TempDir,
        env: &[(&str, &str)],
    ) -> Agent {
        let mut agent = Agent::spawn(netns, config, dir, env, &[]);
        agent.wait_for("agent_start", |_| true);
        agent
    }

    /// The agent writing `format` (`ocsf`, `ecs`): it has no `agent_start`
    /// record then, so it is ready when it says so on stderr.
    pub fn start_format(config: &str, format: &str) -> Agent {
        let agent = Agent::spawn(
            None,
            config,
            TempDir::new("format"),
            &[],
            &["--format", format],
        );
        let start = Instant::now();
        while !agent.stderr().contains("vigil running") {
            assert!(
                start.elapsed() < PATIENCE,
                "the agent did not start within {PATIENCE:?}:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// Lines of the output, parsed (any format).
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn records(&self) -> Vec<Value> {
        let Ok(f) = std::fs::File::open(&self.output) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    /// Waits for a record of `kind` matching `pred`, panicking with context
    /// if it does not appear.
    pub fn wait_for(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .records()
                .into_iter()
                .find(|r| r["kind"] == kind && pred(r))
            {
                return r;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "agent exited ({status}) before {kind} appeared:\n{}",
                        self.stderr()
                    );
                }
            }
            if start.elapsed() > PATIENCE {
                let kinds: Vec<String> = self
                    .records()
                    .iter()
                    .map(|r| r["kind"].to_string())
                    .collect();
                panic!(
                    "no matching {kind} record within {PATIENCE:?}; saw {} records ({:?}…)\nstderr:\n{}",
                    kinds.len(),
                    &kinds[..kinds.len().min(20)],
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash would; nothing is cleaned up by the agent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Takes the state directory (to hand to a restarted agent).
    pub fn into_dir(mut self) -> TempDir {
        self.stop();
        std::mem::replace(&mut self.dir, TempDir(PathBuf::new()))
    }

    /// SIGTERM and wait; returns the exit status success.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Two network namespaces joined by a veth pair: `a` at `10.X.0.1` and
/// `fd00:X::1`, `b` at `10.X.0.2` and `fd00:X::2`.
pub struct NetPair {
    pub a: String,
    pub b: String,
    pub subnet: u8,
}

impl NetPair {
    pub fn new(tag: &str, subnet: u8) -> NetPair {
        let pair = NetPair {
            a: format!("vg-{tag}-a"),
            b: format!("vg-{tag}-b"),
            subnet,
        };
        pair.cleanup();
        let (a, b) = (pair.a.as_str(), pair.b.as_str());
        run("ip", &["netns", "add", a]);
        run("ip", &["netns", "add", b]);
        let va = format!("vg{subnet}a");
        let vb = format!("vg{subnet}b");
        run(
            "ip",
            &["link", "add", &va, "type", "veth", "peer", "name", &vb],
        );
        run("ip", &["link", "set", &va, "netns", a]);
        run("ip", &["link", "set", &vb, "netns", b]);
        for (ns, dev, host) in [(a, &va, 1), (b, &vb, 2)] {
            let v4 = format!("10.{subnet}.0.{host}/24");
            let v6 = format!("fd00:{subnet}::{host}/64");
            run("ip", &["-n", ns, "addr", "add", &v4, "dev", dev]);
            run("ip", &["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"]);
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    pub fn ip_a(&self) -> String {
        format!("10.{}.0.1", self.subnet)
    }

    pub fn ip_b(&self) -> String {
        format!("10.{}.0.2", self.subnet)
    }

    pub fn ip6_b(&self) -> String {
        format!("fd00:{}::2", self.subnet)
    }

    /// Starts `netpeer` in namespace `ns` and returns it with stdout piped.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        netpeer_in(ns, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn netpeer")
    }

    fn cleanup(&self) {
        delete_netns(&self.a);
        delete_netns(&self.b);
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Reads the next JSON line a child prints.
pub fn read_json_line(child: &mut Child) -> Value {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut line = String::new();
    let mut byte = [0u8; 1];
    while std::io::Read::read(stdout, &mut byte)
        .map(|n| n == 1)
        .unwrap_or(false)
    {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0] as char);
    }
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad peer output {line:?}: {e}"))
}

/// A host namespace `h` with three neighbours on their own veth links:
/// attacker `a` (10.S.1.2 and .3, fd00:S:1::2), peer `b` (10.S.2.2,
/// fd00:S:2::2) and management `m` (10.S.3.2). The host side is `.1`.
pub struct Topology {
    pub h: String,
    pub peers: Vec<String>,
    pub s: u8,
}

impl Topology {
    pub fn new(tag: &str, s: u8) -> Topology {
        let t = Topology {
            h: format!("vg-{tag}-h"),
            peers: ["a", "b", "m"]
                .iter()
                .map(|p| format!("vg-{tag}-{p}"))
                .collect(),
            s,
        };
        t.cleanup();
        run("ip", &["netns", "add", &t.h]);
        run("ip", &["-n", &t.h, "link", "set", "lo", "up"]);
        for (i, ns) in t.peers.iter().enumerate() {
            let n = i + 1;
            run("ip", &["netns", "add", ns]);
            let (hv, pv) = (format!("vg{s}h{n}"), format!("vg{s}p{n}"));
            run(
                "ip",
                &["link", "add", &hv, "type", "veth", "peer", "name", &pv],
            );
            run("ip", &["link", "set", &hv, "netns", &t.h]);
            run("ip", &["link", "set", &pv, "netns", ns]);
            for (space, dev, host) in [(t.h.as_str(), &hv, 1), (ns.as_str(), &pv, 2)] {
                run(
                    "ip",
                    &[
                        "-n",
                        space,
                        "addr",
                        "add",
                        &format!("10.{s}.{n}.{host}/24"),
                        "dev",
                        dev,
                    ],
                );
                run(
                    "ip",
                    &[
                        "-n",
                        space,
                        "addr",
                        "add",
                        &format!("fd00:{s}:{n}::{host}/64"),
                        "dev",
                        dev,
                        "nodad",
                    ],
                );
                run("ip", &["-n", space, "link", "set", dev, "up"]);
                run("ip", &["-n", space, "link", "set", "lo", "up"]);
            }
        }
        let a = &t.peers[0];
        run(
            "ip",
            &[
                "-n",
                a,
                "addr",
                "add",
                &format!("10.{s}.1.3/24"),
                "dev",
                &format!("vg{s}p1"),
            ],
        );
        t
    }

    pub fn host_ip(&self, n: u8) -> String {
        format!("10.{}.{n}.1", self.s)
    }

    pub fn peer_ip(&self, n: u8) -> String {
        format!("10.{}.{n}.2", self.s)
    }

    /// Runs netpeer in namespace `ns`, waiting for its exit status.
    pub fn netpeer_ok(&self, ns: &str, args: &[&str]) -> bool {
        netpeer_in(ns, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts a long-running netpeer; killed when the returned guard drops.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> ChildGuard {
        let mut c = netpeer_in(ns, args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn netpeer");
        read_json_line(&mut c);
        ChildGuard(c)
    }

    /// Starts netpeer with its stdout piped, without waiting for anything.
    pub fn spawn_raw(&self, ns: &str, args: &[&str]) -> Child {
        netpeer_in(ns, args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn netpeer")
    }

    /// `vigil ARGS --config CFG` inside the host namespace.
    pub fn vigil(&self, config: &Path, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.h))
            .arg(vigil_bin())
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .expect("run vigil")
    }

    pub fn in_host(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.h, cmd])
            .args(args)
            .output()
            .expect("run in host namespace")
    }

    fn cleanup(&self) {
        for ns in std::iter::once(&self.h).chain(self.peers.iter()) {
            delete_netns(ns);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub struct ChildGuard(pub Child);

/// A child in its own process group, killed with all it forked on drop
/// (hydra's tasks, sshd's per-connection processes).
pub struct GroupGuard(pub Child);

impl GroupGuard {
    pub fn spawn(cmd: &mut Command) -> GroupGuard {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        GroupGuard(child)
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pinned enforcement state for one test (its own bpffs directory):
/// detached and removed on drop, on failure too.
pub struct Pins {
    pub pin_dir: String,
    scratch: PathBuf,
}

impl Pins {
    pub fn new(tag: &str) -> Pins {
        let pin_dir = format!("/sys/fs/bpf/vigil-test-{tag}-{}", std::process::id());
        let scratch = std::env::temp_dir().join(format!("vigil-pins-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("pins scratch dir");
        std::fs::write(
            scratch.join("detach.yaml"),
            format!("enforce:\n  pin_dir: {pin_dir}\n"),
        )
        .expect("write detach config");
        Pins { pin_dir, scratch }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Command::new(vigil_bin())
            .arg("enforce-detach")
            .arg("--config")
            .arg(self.scratch.join("detach.yaml"))
            .output();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A plain HTTP/1.0 GET, the request head sent in two pieces on purpose:
/// the server must wait for the whole head.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.write_all(b"GET ").expect("send");
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.write_all(format!("{path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one exact series line in Prometheus text.
/// utime + stime of `pid` in seconds (0 once it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / hz
}

/// One `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`, …); 0 when
/// absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A SYN scan of ports 1-200 from namespace `ns` (the scan detector's
/// real-tool trigger); panics with nmap's stderr if it fails.
pub fn nmap_scan(ns: &str, target: &str) {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nmap", "-sS", "-n", "-Pn", "-T4", "-p", "1-200", target,
        ])
        .output()
        .expect("nmap");
    assert!(
        out.status.success(),
        "nmap from {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a playbook into `dir` that blocks the source of every scan alert
/// for 5 minutes.
pub fn scan_block_playbook(dir: &Path) {
    std::fs::write(
        dir.join("scan_block.yaml"),
        "# Test playbook — ATT&CK T1046 Network Service Discovery\nversion: 1\nname: scan_block\n\
         trigger:\n  detectors: [scan]\n  techniques: [T1046]\nsteps:\n  - action: block_ip\n    target: source\n    ttl: 5m\n",
    )
    .expect("write playbook");
}

/// Whether `vigil blocks list` shows a live block whose target starts with `ip`.
pub fn blocked(cfg: &Path, ip: &str) -> bool {
    let out = Command::new(vigil_bin())
        .args(["blocks", "list", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("blocks list");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["blocks"].as_array().is_some_and(|l| {
        l.iter().any(|e| {
            e["target"].as_str().is_some_and(|t| t.starts_with(ip)) && e["expired"] == false
        })
    })
}

/// `vigil audit verify` against the config's state directory must pass.
pub fn assert_audit_intact(config: &Path) {
    let out = Command::new(vigil_bin())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topology {
    /// A download: peer `b` serves the file `payload` once on port `port`
    /// and netpeer (a network-facing process) in the host namespace fetches
    /// it into `target`, mode 0755. Returns the serving address.
    pub fn download(&self, port: u16, payload: &str, target: &str) -> String {
        let addr = format!("{}:{port}", self.peer_ip(2));
        let mut srv = self.spawn_raw(&self.peers[1], &["send-file", &addr, payload]);
        read_json_line(&mut srv);
        let out = netpeer_in(&self.h, &["fetch", &addr, target])
            .output()
            .expect("fetch");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = srv.wait();
        addr
    }
}

/// The playbooks shipped in the repository.
pub fn shipped_playbooks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks")
}

/// `vigil ARGS --config CFG --json`, parsed; panics with stderr on failure.
pub fn vigil_json(cfg: &Path, args: &[&str]) -> Value {
    let out = Command::new(vigil_bin())
        .args(args)
        .arg("--json")
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run vigil");
    assert!(
        out.status.success(),
        "vigil {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vigil {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Whether an alert carries a technique id starting with `prefix`.
pub fn has_technique(alert: &Value, prefix: &str) -> bool {
    alert["techniques"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
    })
}

/// A small real web server (Python's standard library) for `python3 SCRIPT
/// PORT DIR`: GET serves files from DIR, PUT takes a body; prints one ready
/// line. `socketserver.TCPServer` binds without the resolver lookup
/// `http.server.HTTPServer` makes; `threaded` serves clients at once.
pub fn web_server_script(threaded: bool) -> String {
    let server = if threaded {
        "class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):\n    allow_reuse_address = True\n    daemon_threads = True\n"
    } else {
        "class Server(socketserver.TCPServer):\n    allow_reuse_address = True\n"
    };
    format!(
        r#"
import http.server, json, os, socketserver, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=sys.argv[2], **k)
    def do_PUT(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
{server}server = Server(("0.0.0.0", int(sys.argv[1])), Handler)
print(json.dumps({{"ready": True, "pid": os.getpid()}}), flush=True)
server.serve_forever()
"#
    )
}
