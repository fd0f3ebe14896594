//! What Vigil costs the host (`cargo xtask bench`, root), five workloads
//! without the agent and with it, in one run, several rounds alternating
//! which goes first:
//! - an exec storm: fork + exec + wait of /bin/true from two threads, bounded;
//! - iperf3 TCP throughput between two network namespaces over a veth pair;
//! - a short-connection load: connect, read the server's close, from two
//!   threads in one namespace to a server in the other, bounded;
//! - a small-packet flood: 18-byte UDP payloads (64-byte frames), unpaced,
//!   from one namespace to a receiver in the other, bounded;
//! - a syscall loop: 1-byte reads of /dev/zero from one thread, bounded
//!   (the per-syscall cost the agent's syscall tracepoints put on every
//!   process).
//!
//! For every run, the host's busy CPU (all CPUs, /proc/stat) per
//! operation: the CPU the agent adds to each exec, connection, packet or
//! syscall, steadier than the throughput of a round-trip-bound load.
//!
//! With the agent: its CPU time and RSS during each workload, per-program
//! kernel cost (`bpf_stats` run_time_ns / run_cnt, read from the agent's own
//! /metrics) and events lost in the kernel (ring buffer reserve failures,
//! and program runs the kernel skipped because another BPF program was
//! running on the CPU; the agent reports both).
//!
//! The agent runs its default configuration except: state and output in a
//! scratch directory, /metrics on a private port, and enforcement off (it
//! would attach XDP to this host's interfaces and leave pinned links).
//! The with/without rounds run with `bpf_stats` off, as in the default
//! configuration (accounting adds ~67 ns to every program run); one more
//! pass with the agent and `bpf_stats` on gives the per-program figures.
//!
//! Beside them, for the exec storm and the short connections, two floors
//! that say what any tracer pays to see the same events on this machine
//! (bpftrace, when installed): the two tracepoints alone with counts kept
//! in the kernel, and bpftrace printing one line per exec and per closed
//! connection end (a tcplife-like record, no packet accounting).
//!
//! `VIGIL_HOSTCOST_ROUNDS` (default 5) and `VIGIL_HOSTCOST_WORKLOADS`
//! (comma list of exec, iperf, connect, flood, syscall; default all) narrow a run;
//! `VIGIL_HOSTCOST_CONFIG` adds YAML to the agent's configuration;
//! `VIGIL_HOSTCOST_FLOORS=0` leaves the floors out.
//!
//! `VIGIL_HOSTCOST_ONE_END=1` puts the iperf3 server in a cgroup of its
//! own and attaches the agent's flow programs to that cgroup only
//! (`flows.cgroup_path`), so one end of the transfer is accounted, as on a
//! server whose peer is another machine; the default run accounts both
//! ends, which are both on this host. Meant with
//! `VIGIL_HOSTCOST_WORKLOADS=iperf` (the other loads' flows are then not
//! accounted) and a `VIGIL_HOSTCOST_CONFIG` without a `flows:` key.
//!
//! First, the idle agent's wake-ups: context switches of all its threads
//! over 5 s with nothing happening, each a wake-up of a CPU for the agent.
//!
//! `VIGIL_HOSTCOST_NOISE=1` runs every workload a second time without the
//! agent in each round, right after the first, and reports that A/A change
//! beside the agent's: what a median moves on this machine with nothing
//! changed, so a difference smaller than it is not read as a cost.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_integration::*;

const ROUNDS: usize = 5;
const THREADS: usize = 2;
const EXECS_PER_THREAD: usize = 2_000;
const CONNECTS_PER_THREAD: usize = 15_000;
const IPERF_SECONDS: &str = "4";
const METRICS: &str = "127.0.0.1:19184";
const NS_SERVER: &str = "vg-hc-a";
const NS_CLIENT: &str = "vg-hc-b";
const SERVER_IP: &str = "10.231.0.1";
const CONNECT_PORT: u16 = 5202;
const FLOOD_PORT: u16 = 5203;
const FLOOD_PACKETS: usize = 300_000;
const SYSCALLS: usize = 5_000_000;
/// Programs each workload runs (those that ran are printed).
const PROGRAMS: &[&str] = &[
    "vigil_exec",
    "vigil_fork_btf",
    "vigil_fork_tp",
    "vigil_exit",
    "vigil_file_opened",
    "vigil_file_write",
    "vigil_sock_create",
    "vigil_sock_release",
    "vigil_sock_state_btf",
    "vigil_sock_state",
    "vigil_flow_cg_in",
    "vigil_flow_cg_out",
    "vigil_tcp_reset",
];

#[derive(Clone, Copy)]
enum Workload {
    Exec,
    Iperf,
    Connect,
    Flood,
    Syscall,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::Exec,
        Workload::Iperf,
        Workload::Connect,
        Workload::Flood,
        Workload::Syscall,
    ];

    fn key(self) -> &'static str {
        match self {
            Workload::Exec => "exec",
            Workload::Iperf => "iperf",
            Workload::Connect => "connect",
            Workload::Flood => "flood",
            Workload::Syscall => "syscall",
        }
    }

    /// The workloads `VIGIL_HOSTCOST_WORKLOADS` names, all by default.
    fn selected() -> Vec<Workload> {
        let Ok(list) = std::env::var("VIGIL_HOSTCOST_WORKLOADS") else {
            return Workload::ALL.to_vec();
        };
        let picked: Vec<Workload> = Workload::ALL
            .into_iter()
            .filter(|w| list.split(',').any(|k| k.trim() == w.key()))
            .collect();
        assert!(
            !picked.is_empty(),
            "VIGIL_HOSTCOST_WORKLOADS={list}: none of exec, iperf, connect, flood, syscall"
        );
        picked
    }

    fn name(self) -> &'static str {
        match self {
            Workload::Exec => "exec storm (execs/s)",
            Workload::Iperf => "iperf3 TCP (Gbit/s)",
            Workload::Connect => "short connections (conn/s)",
            Workload::Flood => "64-byte UDP flood (kpps)",
            Workload::Syscall => "1-byte reads (M syscalls/s)",
        }
    }

    /// The figure and the host's busy CPU per operation (all CPUs, from
    /// /proc/stat): on a load bounded by round trips rather than by CPU,
    /// the extra CPU each operation costs is the steadier figure.
    fn measure(self) -> Run {
        let b0 = host_busy_seconds();
        let t0 = Instant::now();
        let figure = self.run();
        let cores = (host_busy_seconds() - b0) / t0.elapsed().as_secs_f64();
        Run {
            figure,
            cpu_per_op: cores / figure * self.per_op_scale(),
        }
    }

    /// Scales busy cores per figure unit to [`Workload::per_op_unit`].
    fn per_op_scale(self) -> f64 {
        match self {
            Workload::Exec | Workload::Connect => 1e6,
            Workload::Iperf => 1e3,
            Workload::Flood => 1e6,
            Workload::Syscall => 1e3,
        }
    }

    fn per_op_unit(self) -> &'static str {
        match self {
            Workload::Exec => "µs CPU/exec",
            Workload::Iperf => "ms CPU/Gbit",
            Workload::Connect => "µs CPU/conn",
            Workload::Flood => "ns CPU/packet",
            Workload::Syscall => "ns CPU/syscall",
        }
    }

    fn run(self) -> f64 {
        match self {
            Workload::Exec => exec_storm(),
            Workload::Iperf => iperf(),
            Workload::Connect => connect_storm(),
            Workload::Flood => udp_flood(),
            Workload::Syscall => syscall_loop(),
        }
    }
}

/// One workload run: its figure, and the host CPU per operation.
#[derive(Clone, Copy)]
struct Run {
    figure: f64,
    cpu_per_op: f64,
}

/// Busy CPU-seconds of the whole host since boot (every CPU, /proc/stat).
fn host_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: f64 = f
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    busy / unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// Two namespaces joined by a veth pair, removed on drop (on failure too).
struct Namespaces;

impl Namespaces {
    fn new() -> Namespaces {
        Namespaces::remove();
        for args in [
            vec!["netns", "add", NS_SERVER],
            vec!["netns", "add", NS_CLIENT],
            vec![
                "link", "add", "vghca", "type", "veth", "peer", "name", "vghcb",
            ],
            vec!["link", "set", "vghca", "netns", NS_SERVER],
            vec!["link", "set", "vghcb", "netns", NS_CLIENT],
            vec![
                "-n",
                NS_SERVER,
                "addr",
                "add",
                "10.231.0.1/24",
                "dev",
                "vghca",
            ],
            vec![
                "-n",
                NS_CLIENT,
                "addr",
                "add",
                "10.231.0.2/24",
                "dev",
                "vghcb",
            ],
            vec!["-n", NS_SERVER, "link", "set", "vghca", "up"],
            vec!["-n", NS_CLIENT, "link", "set", "vghcb", "up"],
            vec!["-n", NS_SERVER, "link", "set", "lo", "up"],
            vec!["-n", NS_CLIENT, "link", "set", "lo", "up"],
        ] {
            let out = run("ip", &args);
            assert!(out.status.success(), "ip {args:?} failed");
        }
        // The client opens tens of thousands of connections per run.
        let _ = run(
            "ip",
            &[
                "netns",
                "exec",
                NS_CLIENT,
                "sysctl",
                "-qw",
                "net.ipv4.tcp_tw_reuse=1",
            ],
        );
        Namespaces
    }

    fn remove() {
        delete_netns(NS_SERVER);
        delete_netns(NS_CLIENT);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        Namespaces::remove();
    }
}

/// Moves the calling thread (only) into namespace `ns`.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd; affects this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}");
}

/// Fork + exec + wait of /bin/true, `THREADS` at a time: execs per second.
fn exec_storm() -> f64 {
    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..EXECS_PER_THREAD {
                    let ok = Command::new("/bin/true")
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false);
                    assert!(ok, "/bin/true failed");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("storm thread");
    }
    (THREADS * EXECS_PER_THREAD) as f64 / start.elapsed().as_secs_f64()
}

/// 1-byte reads of /dev/zero from one thread (one core: the figure is
/// the syscall's own cost, not the scheduler's): what every syscall of
/// every process pays while the agent runs (syscall tracepoints move all
/// of them to the kernel's slow path), millions per second.
fn syscall_loop() -> f64 {
    let mut f = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let mut b = [0u8; 1];
    let start = Instant::now();
    for _ in 0..SYSCALLS {
        let n = f.read(&mut b).expect("read /dev/zero");
        assert_eq!(n, 1);
    }
    SYSCALLS as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// The cgroup the iperf3 server runs in under `VIGIL_HOSTCOST_ONE_END=1`,
/// made by [`OneEnd::new`].
static ONE_END: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn one_end() -> Option<&'static str> {
    ONE_END.get().map(String::as_str)
}

/// Makes the one-end cgroup when asked for, and removes it (empty once
/// the servers are gone) on drop.
struct OneEnd;

impl OneEnd {
    fn new() -> OneEnd {
        if std::env::var("VIGIL_HOSTCOST_ONE_END").as_deref() == Ok("1") {
            // The mount the agent's loader attaches to by default.
            let root = vigil::kernel::loader::cgroup2_root()
                .expect("VIGIL_HOSTCOST_ONE_END needs a cgroup v2 mount");
            let cg = format!("{root}/vigil-hostcost-server");
            match std::fs::create_dir(&cg) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("cannot make {cg}: {e}"),
            }
            let _ = ONE_END.set(cg);
        }
        OneEnd
    }
}

impl Drop for OneEnd {
    fn drop(&mut self) {
        if let Some(cg) = one_end() {
            let _ = std::fs::remove_dir(cg);
        }
    }
}

/// iperf3 from the client namespace to a one-off server: Gbit/s received.
/// A run that fails (the server not up yet, a stale one) is retried with a
/// fresh server, at most 10 times.
fn iperf() -> f64 {
    let mut last = String::new();
    for _ in 0..10 {
        let serve = format!("exec ip netns exec {NS_SERVER} iperf3 -s -1 -B {SERVER_IP}");
        // Into the cgroup before it listens (accepted sockets take the
        // listener's cgroup), and before `ip netns exec`, whose fresh /sys
        // has no cgroup mount.
        let script = match one_end() {
            Some(_) => format!("echo $$ > \"$1/cgroup.procs\" && {serve}"),
            None => serve,
        };
        let mut server = Command::new("sh")
            .args(["-c", &script, "sh", one_end().unwrap_or("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server (apt-get install iperf3; cargo xtask bench does)");
        std::thread::sleep(Duration::from_millis(300));
        let out = Command::new("ip")
            .args(["netns", "exec", NS_CLIENT, "iperf3", "-c", SERVER_IP])
            .args(["-t", IPERF_SECONDS, "-J"])
            .output()
            .expect("iperf3 client");
        let _ = server.kill();
        let _ = server.wait();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
        last = v["error"].as_str().unwrap_or("no JSON").to_string();
    }
    panic!("iperf3 failed 10 times, last: {last}");
}

/// Connect, wait for the server's close, from `THREADS` client threads:
/// connections per second. The server closes first, so the TIME_WAIT
/// sockets stay on its side and the client's ports are free again.
fn connect_storm() -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            enter(NS_SERVER);
            let l = TcpListener::bind((SERVER_IP, CONNECT_PORT)).expect("bind");
            ready_tx.send(()).expect("ready");
            for s in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                drop(s);
            }
        })
    };
    ready_rx.recv().expect("server up");
    let start = Instant::now();
    let clients: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                enter(NS_CLIENT);
                let mut buf = [0u8; 1];
                for _ in 0..CONNECTS_PER_THREAD {
                    let mut s = TcpStream::connect((SERVER_IP, CONNECT_PORT)).expect("connect");
                    let _ = s.read(&mut buf);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let rate = (THREADS * CONNECTS_PER_THREAD) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    // One more connection wakes the accept loop so it sees the flag.
    let waker = std::thread::spawn(|| {
        enter(NS_CLIENT);
        let _ = TcpStream::connect((SERVER_IP, CONNECT_PORT));
    });
    let _ = waker.join();
    server.join().expect("server thread");
    rate
}

/// Unpaced 18-byte datagrams from the client namespace: thousands of
/// packets per second sent (the sender's CPU also runs the egress flow
/// program, the receiver's the ingress one).
fn udp_flood() -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            enter(NS_SERVER);
            let s = std::net::UdpSocket::bind((SERVER_IP, FLOOD_PORT)).expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 64];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if s.recv(&mut buf).is_ok() {
                    n += 1;
                }
            }
            n
        })
    };
    ready_rx.recv().expect("receiver up");
    let sender = std::thread::spawn(|| {
        enter(NS_CLIENT);
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.connect((SERVER_IP, FLOOD_PORT)).expect("connect");
        let start = Instant::now();
        for _ in 0..FLOOD_PACKETS {
            let _ = s.send(&[0u8; 18]);
        }
        start.elapsed().as_secs_f64()
    });
    let secs = sender.join().expect("sender");
    stop.store(true, Ordering::Relaxed);
    let _received = receiver.join().expect("receiver");
    FLOOD_PACKETS as f64 / secs / 1e3
}

fn metrics() -> String {
    http_get(METRICS, "/metrics").1
}

fn series(text: &str, name: &str, program: &str) -> f64 {
    metric(text, &format!("{name}{{program=\"{program}\"}}")).unwrap_or(0.0)
}

/// Lets the agent's metrics job run after now (it refreshes the program
/// counters once a second).
fn settle() {
    std::thread::sleep(Duration::from_millis(2_500));
}

struct WithAgent {
    run: Run,
    cpu_pct: f64,
    rss_mb: f64,
    /// (program, runs, ns per run, runs skipped) during the workload.
    programs: Vec<(String, f64, f64, f64)>,
    /// Events lost in the kernel: (ring reserve failures, skipped runs).
    lost: (f64, f64),
}

/// Every workload once with one agent; its peak RSS over the round.
fn with_agent(workloads: &[Workload]) -> (Vec<WithAgent>, f64) {
    // VIGIL_HOSTCOST_CONFIG: more YAML for the agent, to take one part
    // out when finding what a loss is made of.
    let mut extra = std::env::var("VIGIL_HOSTCOST_CONFIG").unwrap_or_default();
    if !extra.is_empty() && !extra.ends_with('\n') {
        extra.push('\n');
    }
    if let Some(cg) = one_end() {
        extra.push_str(&format!("flows:\n  attach: cgroup\n  cgroup_path: {cg}\n"));
    }
    let mut agent = Agent::start_with(&format!(
        "enforce:\n  enabled: false\nmetrics:\n  listen: \"{METRICS}\"\n{extra}"
    ));
    let pid = agent.pid().expect("agent pid");
    settle();
    let mut out = Vec::new();
    for &w in workloads {
        let m0 = metrics();
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let run = w.measure();
        let secs = t0.elapsed().as_secs_f64();
        let c1 = cpu_seconds(pid);
        let rss_mb = status_kib(pid, "VmRSS:") as f64 / 1024.0;
        settle();
        let m1 = metrics();
        let all: Vec<(String, f64, f64, f64)> = PROGRAMS
            .iter()
            .map(|p| {
                let runs = series(&m1, "vigil_program_runs_total", p)
                    - series(&m0, "vigil_program_runs_total", p);
                let s = series(&m1, "vigil_program_run_time_seconds_total", p)
                    - series(&m0, "vigil_program_run_time_seconds_total", p);
                let ns = if runs > 0.0 { s * 1e9 / runs } else { 0.0 };
                let skipped = series(&m1, "vigil_program_recursion_misses_total", p)
                    - series(&m0, "vigil_program_recursion_misses_total", p);
                (p.to_string(), runs, ns, skipped)
            })
            .collect();
        // Lost in the kernel: reserve failures, and runs skipped because
        // another BPF program was running on the CPU (any program, also
        // one that ran no time in the workload).
        let skipped: f64 = all.iter().map(|p| p.3).sum();
        let programs = all.into_iter().filter(|p| p.1 > 0.0).collect();
        let reserve = metric(&m1, "vigil_kernel_reserve_failures_total").unwrap_or(0.0)
            - metric(&m0, "vigil_kernel_reserve_failures_total").unwrap_or(0.0);
        out.push(WithAgent {
            run,
            cpu_pct: (c1 - c0) / secs * 100.0,
            rss_mb,
            programs,
            lost: (reserve, skipped),
        });
    }
    let hwm_mb = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    assert!(agent.stop(), "agent did not stop cleanly");
    (out, hwm_mb)
}

/// Context switches of every thread of `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("voluntary_ctxt") || l.starts_with("nonvoluntary_ctxt"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// The idle agent's wake-ups per second.
fn idle_wakeups() -> f64 {
    let mut agent = Agent::start_with(&format!(
        "enforce:\n  enabled: false\nmetrics:\n  listen: \"{METRICS}\"\n"
    ));
    let pid = agent.pid().expect("agent pid");
    // Past start-up (the /proc walk, the first sweeps and reads).
    std::thread::sleep(Duration::from_secs(8));
    let secs = 5.0;
    let c0 = context_switches(pid);
    std::thread::sleep(Duration::from_secs_f64(secs));
    // A thread that ends meanwhile takes its count with it.
    let n = context_switches(pid).saturating_sub(c0);
    assert!(agent.stop(), "agent did not stop cleanly");
    n as f64 / secs
}

/// Hooks only: what seeing every exec and connection end costs before any
/// record leaves the kernel.
const FLOOR_COUNT: &str = "tracepoint:sched:sched_process_exec { @exec = count(); }
tracepoint:sock:inet_sock_set_state /args->newstate == 7 && args->protocol == 6/ { @close = count(); }";

/// A minimal tracer: one line per exec and per TCP connection end.
const FLOOR_PRINT: &str = "tracepoint:sched:sched_process_exec { printf(\"exec %d %d %s\\n\", pid, uid, str(args->filename)); }
tracepoint:sock:inet_sock_set_state /args->newstate == 7 && args->protocol == 6/ {
  printf(\"close %d %s %d %s %d %d\\n\", pid, ntop(args->family, args->saddr), args->sport,
         ntop(args->family, args->daddr), args->dport, args->oldstate); }";

/// One bpftrace run, stopped (SIGINT, then killed) on drop.
struct Floor {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Floor {
    /// Started and attached, or why not.
    fn start(script: &str) -> Result<Floor, String> {
        let out = std::env::temp_dir().join(format!("vigil-hostcost-floor-{}", std::process::id()));
        let mut child = Command::new("bpftrace")
            .arg("-B")
            .arg("full")
            .arg("-o")
            .arg(&out)
            .arg("-e")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("bpftrace: {e}"))?;
        // `-o` gets "Attaching N probes..." once the probes are in.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("Attaching") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("bpftrace exited ({status}) before attaching"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("bpftrace did not attach within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Floor { child, out })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.out);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

/// The workload under one floor tracer, and the tracer's CPU.
fn with_floor(w: Workload, script: &str) -> Result<(Run, f64), String> {
    let floor = Floor::start(script)?;
    let c0 = cpu_seconds(floor.pid());
    let t0 = Instant::now();
    let run = w.measure();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(floor.pid()) - c0) / secs * 100.0;
    drop(floor);
    Ok((run, cpu))
}

/// "median (min .. max)" of `v`.
fn spread(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{:+.2} ({:+.2} .. {:+.2})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    )
}

fn main() {
    require_root();
    let workloads = Workload::selected();
    let rounds: usize = std::env::var("VIGIL_HOSTCOST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS);
    let _ns = Namespaces::new();
    let _one_end = OneEnd::new();
    if let Some(cg) = one_end() {
        println!("  one end accounted: the iperf3 server in {cg}, the flow programs on it only");
    }
    let names: Vec<&str> = workloads.iter().map(|w| w.key()).collect();
    println!(
        "host cost: without and with the agent (default configuration, bpf_stats off), \
         {rounds} rounds of {names:?}: exec storm ({THREADS} threads x {EXECS_PER_THREAD} \
         fork+exec of /bin/true), iperf3 TCP between two namespaces ({IPERF_SECONDS} s), short \
         connections ({THREADS} threads x {CONNECTS_PER_THREAD}), 64-byte UDP flood \
         ({FLOOD_PACKETS} packets), 1-byte reads (one thread x {SYSCALLS})"
    );
    println!(
        "  idle agent: {:.0} wake-ups/s (context switches of all its threads over 5 s)",
        idle_wakeups()
    );
    let mut changes: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    let floors = [
        (
            "floor: the tracepoints alone, counts in the kernel",
            FLOOR_COUNT,
        ),
        (
            "floor: bpftrace, one line per exec / connection end",
            FLOOR_PRINT,
        ),
    ];
    let mut added_cpu: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    let mut floor_changes: Vec<Vec<Vec<(f64, f64)>>> =
        vec![vec![Vec::new(); floors.len()]; workloads.len()];
    let mut floor_skipped: Option<String> = (std::env::var("VIGIL_HOSTCOST_FLOORS").as_deref()
        == Ok("0"))
    .then(|| "VIGIL_HOSTCOST_FLOORS=0".to_string());
    let noise = std::env::var("VIGIL_HOSTCOST_NOISE").as_deref() == Ok("1");
    let mut aa_changes: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    let mut aa_added: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    for round in 1..=rounds {
        // Alternate which goes first: the machine's state drifts.
        let bare_all = || workloads.iter().map(|w| w.measure()).collect::<Vec<Run>>();
        let again = || if noise { Some(bare_all()) } else { None };
        let (bare, bare2, (with, hwm)) = if round % 2 == 1 {
            let bare = bare_all();
            let bare2 = again();
            (bare, bare2, with_agent(&workloads))
        } else {
            let with = with_agent(&workloads);
            let bare = bare_all();
            (bare, again(), with)
        };
        println!("  round {round} (agent peak RSS {hwm:.1} MB):");
        if let Some(bare2) = &bare2 {
            for (i, ((w, b), b2)) in workloads.iter().zip(&bare).zip(bare2).enumerate() {
                let change = (b2.figure / b.figure - 1.0) * 100.0;
                let added = b2.cpu_per_op - b.cpu_per_op;
                aa_changes[i].push(change);
                aa_added[i].push(added);
                println!(
                    "    {:<28} without {:>9.2}  without again {:>9.2} ({change:+.1} %); host CPU \
                     ({added:+.2} {})",
                    w.name(),
                    b.figure,
                    b2.figure,
                    w.per_op_unit()
                );
            }
        }
        for (i, ((w, b), a)) in workloads.iter().zip(bare).zip(&with).enumerate() {
            let change = (a.run.figure / b.figure - 1.0) * 100.0;
            let added = a.run.cpu_per_op - b.cpu_per_op;
            changes[i].push(change);
            added_cpu[i].push(added);
            println!(
                "    {:<28} without {:>9.2}  with {:>9.2} ({change:+.1} %); host CPU {:.2} -> \
                 {:.2} {} ({added:+.2}); agent CPU {:.1} % of one core, RSS {:.1} MB, events \
                 lost {} (ring full {}, runs skipped {})",
                w.name(),
                b.figure,
                a.run.figure,
                b.cpu_per_op,
                a.run.cpu_per_op,
                w.per_op_unit(),
                a.cpu_pct,
                a.rss_mb,
                a.lost.0 + a.lost.1,
                a.lost.0,
                a.lost.1
            );
            if !matches!(w, Workload::Exec | Workload::Connect) || floor_skipped.is_some() {
                continue;
            }
            for (f, (label, script)) in floors.iter().enumerate() {
                match with_floor(*w, script) {
                    Ok((run, cpu)) => {
                        let change = (run.figure / b.figure - 1.0) * 100.0;
                        let added = run.cpu_per_op - b.cpu_per_op;
                        floor_changes[i][f].push((change, added));
                        println!(
                            "      {label}: {:.2} ({change:+.1} %); host CPU {:.2} {} \
                             ({added:+.2}); tracer CPU {cpu:.1} % of one core",
                            run.figure,
                            run.cpu_per_op,
                            w.per_op_unit()
                        );
                    }
                    Err(e) => {
                        println!("      floors skipped: {e}");
                        floor_skipped = Some(e);
                        break;
                    }
                }
            }
        }
    }
    println!(
        "  median over {rounds} rounds (min .. max): change in the figure; host CPU added per \
         operation"
    );
    for (i, w) in workloads.iter().enumerate() {
        println!(
            "    {:<28} {} %; {} {}",
            w.name(),
            spread(&mut changes[i]),
            spread(&mut added_cpu[i]),
            w.per_op_unit()
        );
        if noise {
            println!(
                "    {:<28} noise, without vs without again: {} %; {} {}",
                w.name(),
                spread(&mut aa_changes[i]),
                spread(&mut aa_added[i]),
                w.per_op_unit()
            );
        }
    }
    for (w, per_floor) in workloads.iter().zip(floor_changes) {
        for ((label, _), runs) in floors.iter().zip(per_floor) {
            if runs.is_empty() {
                continue;
            }
            let (mut c, mut a): (Vec<f64>, Vec<f64>) = runs.into_iter().unzip();
            println!(
                "    {:<28} {label}: {} %; {} {}",
                w.name(),
                spread(&mut c),
                spread(&mut a),
                w.per_op_unit()
            );
        }
    }
    // Per-program cost needs the kernel's accounting, which itself costs.
    let _stats = vigil::kernel::stats::enable_run_time().expect("BPF_ENABLE_STATS");
    let (with, _) = with_agent(&workloads);
    println!("  per-program kernel cost (one more pass, bpf_stats on; ns include the accounting):");
    for (w, a) in workloads.iter().zip(&with) {
        println!(
            "    {}: {:.2} with the agent and accounting",
            w.name(),
            a.run.figure
        );
        for (p, runs, ns, skipped) in &a.programs {
            println!("      {p:<18} {runs:>9.0} runs  {ns:>7.0} ns/run  {skipped:>4.0} skipped");
        }
    }
}
