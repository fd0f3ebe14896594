//! The agent's memory and CPU with Kafka on, 100,000 live flows and a flood
//! of new keys (`cargo xtask bench`, root). Two cases, one agent each:
//! - broker up: tansu on loopback, records produced and acknowledged;
//! - broker up with `--inbound` (256) unsigned 900 KiB messages waiting on
//!   `defense.commands`: what anyone who can write to the topic can make
//!   the agent's consumer read (it refuses them; they must not pile up);
//! - broker down: `kafka.brokers` names a port nobody listens on, so every
//!   record stays in the spool (which must grow on disk, not in memory).
//!
//! The agent runs its default configuration except: state and output in a
//! scratch directory, /metrics on a private port, enforcement off (it would
//! attach XDP to this host's interfaces), and Kafka on with an HMAC key (so
//! each record is signed, as in a fleet).
//!
//! Load, all from a network namespace to addresses of another (a veth pair):
//! - live flows: one UDP socket sends a datagram to each of 100,000
//!   destinations (4 addresses x 25,000 closed ports) every 10 s, so every
//!   flow stays live under the default 30 s UDP idle timeout;
//! - a flood of new keys after the flows are tracked: UDP datagrams from a
//!   fresh socket every 1,000 keys (new 5-tuples) at `--rate` keys/s, plus
//!   short TCP connections at `--tcp-rate`/s, for `--seconds`.
//!
//! Every second: the agent's VmRSS and VmHWM, its CPU time (utime + stime)
//! and `vigil_flows_tracked`. At the end: what it shed and counted (from its
//! /metrics) and the records Kafka holds, counted through the broker.
//! Exits non-zero if the flows were never tracked, if Kafka received nothing
//! in the broker-up case, or if the agent's peak RSS reached the budget.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use vigil_integration::kafka::Broker;
use vigil_integration::*;

/// The budget: 128 MiB.
const BUDGET_KIB: u64 = 128 * 1024;
const LIVE_FLOWS: u32 = 100_000;
const LIVE_ADDRS: u32 = 4;
const LIVE_PORT0: u16 = 10_000;
/// Every live flow gets a datagram this often (default UDP idle timeout 30 s).
const REFRESH: Duration = Duration::from_secs(10);
const FLOOD_PORT0: u16 = 40_000;
const KEYS_PER_SOCKET: u32 = 1_000;
const TCP_PORT: u16 = 5_300;
const HOLD_S: u64 = 20;
const TAIL_S: u64 = 10;
const SUBNET: u8 = 244;
const METRICS: &str = "127.0.0.1:19187";
const BROKER_PORT: u16 = 19_197;
/// Nothing listens here: the broker-down case.
const DEAD_BROKER: &str = "127.0.0.1:19199";
const HMAC_KEY: &str = "memload-fleet-key";
/// Size of each message of the inbound case (under librdkafka's 1 MB
/// default message.max.bytes, so any producer can send it).
const INBOUND_BYTES: usize = 900 * 1024;

struct Args {
    rate: u32,
    tcp_rate: u32,
    seconds: u64,
    up: bool,
    down: bool,
    inbound: usize,
}

fn args() -> Args {
    let mut a = Args {
        rate: 10_000,
        tcp_rate: 1_000,
        seconds: 60,
        up: true,
        down: true,
        inbound: 256,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--rate" => a.rate = num().max(1) as u32,
            "--tcp-rate" => a.tcp_rate = num().max(1) as u32,
            "--seconds" => a.seconds = num(),
            "--no-down" => a.down = false,
            "--no-up" => a.up = false,
            "--inbound" => a.inbound = num() as usize,
            _ => panic!(
                "usage: memload [--rate NEW_UDP_KEYS_PER_S] [--tcp-rate CONNS_PER_S] \
                 [--seconds FLOOD_S] [--no-up] [--no-down] [--inbound MESSAGES (0: no such case)]"
            ),
        }
    }
    a
}

/// Moves the calling thread (only) into network namespace `ns`.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns on a valid namespace fd; affects this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}");
}

fn ip(host: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, SUBNET, 0, host as u8)
}

/// Sleeps until `start + sent / rate` (pacing a sender to `rate` per second).
fn pace(start: Instant, sent: u64, rate: f64) {
    let due = start + Duration::from_secs_f64(sent as f64 / rate);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Load threads; stopped and joined on drop (on failure too).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    live_sent: Arc<AtomicU64>,
    flood_keys: Arc<AtomicU64>,
    tcp_conns: Arc<AtomicU64>,
}

impl Load {
    fn new() -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            live_sent: Arc::default(),
            flood_keys: Arc::default(),
            tcp_conns: Arc::default(),
        }
    }

    /// One datagram to each live destination every REFRESH, until stopped.
    fn live(&mut self, ns: String) {
        let (stop, sent) = (self.stop.clone(), self.live_sent.clone());
        self.threads.push(std::thread::spawn(move || {
            enter(&ns);
            let s = UdpSocket::bind((ip(1), 0)).expect("bind");
            let per_addr = LIVE_FLOWS / LIVE_ADDRS;
            let rate = LIVE_FLOWS as f64 / REFRESH.as_secs_f64();
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = (n % LIVE_FLOWS as u64) as u32;
                let dst =
                    SocketAddrV4::new(ip(2 + i / per_addr), LIVE_PORT0 + (i % per_addr) as u16);
                let _ = s.send_to(&[0u8; 16], dst);
                n += 1;
                if n.is_multiple_of(500) {
                    sent.store(n, Ordering::Relaxed);
                    pace(start, n, rate);
                }
            }
        }));
    }

    /// New UDP keys at `rate`/s for `secs`: a fresh socket (source port)
    /// every KEYS_PER_SOCKET destinations.
    fn flood(&mut self, ns: String, rate: u32, secs: u64) {
        let (stop, keys) = (self.stop.clone(), self.flood_keys.clone());
        self.threads.push(std::thread::spawn(move || {
            enter(&ns);
            let start = Instant::now();
            let end = start + Duration::from_secs(secs);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let s = UdpSocket::bind((ip(1), 0)).expect("bind");
                for p in 0..KEYS_PER_SOCKET {
                    let dst = SocketAddrV4::new(ip(2 + LIVE_ADDRS), FLOOD_PORT0 + p as u16);
                    let _ = s.send_to(&[0u8; 16], dst);
                    n += 1;
                    if n.is_multiple_of(100) {
                        pace(start, n, rate as f64);
                    }
                }
                keys.store(n, Ordering::Relaxed);
            }
        }));
    }

    /// Short TCP connections at `rate`/s for `secs`: the server closes
    /// first (its side keeps the TIME_WAIT), the client reads the close.
    fn tcp(&mut self, ns_server: String, ns_client: String, rate: u32, secs: u64) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            enter(&ns_server);
            let l = TcpListener::bind((ip(2), TCP_PORT)).expect("bind");
            l.set_nonblocking(true).expect("nonblocking");
            tx.send(()).expect("ready");
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }));
        rx.recv().expect("server up");
        let (stop, conns) = (self.stop.clone(), self.tcp_conns.clone());
        self.threads.push(std::thread::spawn(move || {
            enter(&ns_client);
            let start = Instant::now();
            let end = start + Duration::from_secs(secs);
            let mut n = 0u64;
            let mut buf = [0u8; 1];
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok(mut c) = TcpStream::connect((ip(2), TCP_PORT)) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                    let _ = c.read(&mut buf);
                    n += 1;
                    conns.store(n, Ordering::Relaxed);
                }
                pace(start, n, rate as f64);
            }
        }));
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The agent's /metrics text; empty if it does not answer (the sampler
/// must not die with it).
fn metrics() -> String {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(METRICS) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Sum of every series of `name` (all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Fill,
    Hold,
    Flood,
    Tail,
}

#[derive(Clone, Copy)]
struct Sample {
    t: f64,
    phase: Phase,
    rss: u64,
    cpu: f64,
    tracked: f64,
}

/// Samples the agent every second into `out` until `stop`.
fn sampler(
    pid: u32,
    phase: Arc<Mutex<Phase>>,
    out: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut tick = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let s = Sample {
                t: start.elapsed().as_secs_f64(),
                phase: phase.lock().map(|p| *p).unwrap_or(Phase::Idle),
                rss: status_kib(pid, "VmRSS:"),
                cpu: cpu_seconds(pid),
                tracked: metric(&metrics(), "vigil_flows_tracked").unwrap_or(0.0),
            };
            if let Ok(mut v) = out.lock() {
                v.push(s);
            }
            tick += 1;
            pace(start, tick, 1.0);
        }
    })
}

/// Records on `topic` partition 0, read through the broker from the
/// beginning until 3 s pass with nothing new: (count, count by kind).
fn count_topic(brokers: &str, topic: &str) -> (u64, BTreeMap<String, u64>) {
    let c = vigil_integration::kafka::consumer_from_start(brokers, topic, "vigil-memload");
    let (mut n, mut kinds) = (0u64, BTreeMap::new());
    let start = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(3) && start.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            last = Instant::now();
            n += 1;
            let p = m.payload().unwrap_or_default();
            let kind = serde_json::from_slice::<serde_json::Value>(p)
                .ok()
                .and_then(|v| v["kind"].as_str().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    (n, kinds)
}

struct CaseResult {
    over_budget: bool,
    kafka_records: u64,
}

fn mean_cpu_pct(samples: &[Sample], phase: Phase) -> f64 {
    let s: Vec<&Sample> = samples.iter().filter(|s| s.phase == phase).collect();
    match (s.first(), s.last()) {
        (Some(a), Some(b)) if b.t > a.t => (b.cpu - a.cpu) / (b.t - a.t) * 100.0,
        _ => 0.0,
    }
}

fn rss_range(samples: &[Sample], phase: Phase) -> (u64, u64) {
    let v: Vec<u64> = samples
        .iter()
        .filter(|s| s.phase == phase)
        .map(|s| s.rss)
        .collect();
    (
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    )
}

fn tracked_range(samples: &[Sample], phase: Phase) -> (f64, f64) {
    let v: Vec<f64> = samples
        .iter()
        .filter(|s| s.phase == phase)
        .map(|s| s.tracked)
        .collect();
    (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    )
}

/// Puts `n` unsigned messages of INBOUND_BYTES on the commands topic: what
/// a writer without the fleet key can do, read by the agent from the start.
fn fill_commands(brokers: &str, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let body = format!(
        "{{\"action\":\"block\",\"ip\":\"10.{SUBNET}.9.9\",\"pad\":\"{}\"}}",
        "x".repeat(INBOUND_BYTES)
    );
    for _ in 0..n {
        loop {
            match p.send(BaseRecord::<(), str>::to("defense.commands").payload(&body)) {
                Ok(()) => break,
                Err((e, _)) => {
                    p.poll(Duration::from_millis(100));
                    assert!(
                        matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "produce: {e}"
                    );
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

fn run_case(a: &Args, pair: &NetPair, broker: Option<&Broker>, inbound: usize) -> CaseResult {
    let brokers = broker.map_or(DEAD_BROKER.to_string(), Broker::addr);
    let label = match (broker, inbound) {
        (None, _) => "broker DOWN".to_string(),
        (Some(_), 0) => "broker up".to_string(),
        (Some(_), n) => format!(
            "broker up, {n} unsigned {} KiB messages waiting on defense.commands",
            INBOUND_BYTES / 1024
        ),
    };
    if inbound > 0 {
        fill_commands(&brokers, inbound);
    }
    let mut agent = Agent::start_with(&format!(
        "enforce:\n  enabled: false\nmetrics:\n  listen: \"{METRICS}\"\n\
         kafka:\n  brokers: \"{brokers}\"\n  hmac_key: {HMAC_KEY}\n"
    ));
    let pid = agent.pid().expect("agent pid");
    let phase = Arc::new(Mutex::new(Phase::Idle));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sampler(pid, phase.clone(), samples.clone(), stop.clone());
    let set = |p: Phase| {
        if let Ok(mut g) = phase.lock() {
            *g = p;
        }
    };
    std::thread::sleep(Duration::from_secs(3));
    let hwm_start = status_kib(pid, "VmHWM:");
    let m0 = metrics();
    let mut load = Load::new();
    set(Phase::Fill);
    load.live(pair.a.clone());
    // Every live destination gets its first datagram within REFRESH; the
    // agent's sweep then reports them (bounded wait).
    let t_fill = Instant::now();
    let mut tracked = 0.0;
    while t_fill.elapsed() < REFRESH * 6 {
        tracked = metric(&metrics(), "vigil_flows_tracked").unwrap_or(0.0);
        if tracked >= LIVE_FLOWS as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        tracked >= LIVE_FLOWS as f64,
        "{label}: only {tracked} flows tracked after {:?}",
        t_fill.elapsed()
    );
    set(Phase::Hold);
    std::thread::sleep(Duration::from_secs(HOLD_S));
    set(Phase::Flood);
    load.flood(pair.a.clone(), a.rate, a.seconds);
    load.tcp(pair.b.clone(), pair.a.clone(), a.tcp_rate, a.seconds);
    std::thread::sleep(Duration::from_secs(a.seconds));
    set(Phase::Tail);
    std::thread::sleep(Duration::from_secs(TAIL_S));
    let m1 = metrics();
    let live_sent = load.live_sent.load(Ordering::Relaxed);
    let flood_keys = load.flood_keys.load(Ordering::Relaxed);
    let tcp_conns = load.tcp_conns.load(Ordering::Relaxed);
    drop(load);
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let hwm = status_kib(pid, "VmHWM:");
    // Heap and anonymous maps against mapped files (the program, libraries).
    let (anon, file) = (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"));
    let stopped = agent.stop();
    let samples = samples.lock().map(|v| v.clone()).unwrap_or_default();
    let kafka = broker.map(|b| {
        (
            count_topic(&b.addr(), "security.events"),
            count_topic(&b.addr(), "defense.alerts").0,
        )
    });

    let d = |name: &str| total(&m1, name) - total(&m0, name);
    let idle = samples
        .iter()
        .filter(|s| s.phase == Phase::Idle)
        .map(|s| s.rss)
        .max()
        .unwrap_or(0);
    let (hold_lo, hold_hi) = rss_range(&samples, Phase::Hold);
    let (flood_lo, flood_hi) = rss_range(&samples, Phase::Flood);
    let (tail_lo, tail_hi) = rss_range(&samples, Phase::Tail);
    let (_, hold_tracked) = tracked_range(&samples, Phase::Hold);
    let (flood_tr_lo, flood_tr_hi) = tracked_range(&samples, Phase::Flood);
    let mib = |k: u64| k as f64 / 1024.0;
    println!("  case: Kafka on, {label} ({brokers})");
    println!(
        "    load: {LIVE_FLOWS} live UDP flows ({live_sent} datagrams), flood {flood_keys} new UDP \
         keys + {tcp_conns} TCP connections in {} s",
        a.seconds
    );
    println!(
        "    RSS: idle {:.1} MiB; 100k flows held {:.1}–{:.1}; flood {:.1}–{:.1}; after {:.1}–{:.1}; \
         peak VmHWM {:.1} MiB (budget {:.0}) {} ({:.1} of it reached at start-up)",
        mib(idle),
        mib(hold_lo),
        mib(hold_hi),
        mib(flood_lo),
        mib(flood_hi),
        mib(tail_lo),
        mib(tail_hi),
        mib(hwm),
        mib(BUDGET_KIB),
        if hwm < BUDGET_KIB { "✔" } else { "✘" },
        mib(hwm_start)
    );
    println!(
        "    RSS at the end: anonymous {:.1} MiB, file-backed {:.1} MiB",
        mib(anon),
        mib(file)
    );
    println!(
        "    CPU (utime+stime, % of one core): fill {:.1}, hold {:.1}, flood {:.1}, after {:.1}",
        mean_cpu_pct(&samples, Phase::Fill),
        mean_cpu_pct(&samples, Phase::Hold),
        mean_cpu_pct(&samples, Phase::Flood),
        mean_cpu_pct(&samples, Phase::Tail)
    );
    println!(
        "    kernel flow map (vigil_flows_tracked): held {hold_tracked:.0}, during flood \
         {flood_tr_lo:.0}–{flood_tr_hi:.0}"
    );
    println!(
        "    agent counted: flows emitted {:.0}, evicted by the kernel LRU {:.0}, map sweeps cut \
         {:.0}, ring reserve failures {:.0}, decode errors {:.0}, alerts {:.0}, fleet messages \
         refused {:.0}",
        d("vigil_flows_emitted_total"),
        d("vigil_flows_evicted_total"),
        d("vigil_flow_sweeps_cut_total"),
        d("vigil_kernel_reserve_failures_total"),
        d("vigil_decode_errors_total"),
        d("vigil_alerts_total"),
        total(&m1, "vigil_command_refusals_total"),
    );
    println!(
        "    Kafka side: delivered {:.0}, delivery errors {:.0}, telemetry shed over the rate cap \
         {:.0}, spool shed {:.0}, spool at the end {:.0} records / {:.1} MiB, outputs' retry \
         backlog shed {:.0}",
        d("vigil_kafka_delivered_total"),
        d("vigil_kafka_delivery_errors_total"),
        d("vigil_kafka_telemetry_shed_total"),
        d("vigil_spool_shed_total"),
        total(&m1, "vigil_spool_records"),
        total(&m1, "vigil_spool_bytes") / 1048576.0,
        d("vigil_output_shed_total"),
    );
    if let Some(((events, kinds), alerts)) = &kafka {
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "    on the broker: security.events {events} records ({}), defense.alerts {alerts}",
            kinds.join(", ")
        );
    }
    if !stopped {
        println!(
            "    the agent did not stop cleanly on SIGTERM:\n{}",
            agent.stderr()
        );
    }
    let timeline: Vec<String> = samples
        .iter()
        .step_by(5)
        .map(|s| {
            format!(
                "{:.0}s {:?} {:.1} ({:.0}k)",
                s.t,
                s.phase,
                mib(s.rss),
                s.tracked / 1e3
            )
        })
        .collect();
    println!(
        "    every 5 s: RSS MiB (flows tracked): {}",
        timeline.join(", ")
    );
    CaseResult {
        over_budget: hwm >= BUDGET_KIB,
        kafka_records: kafka.map_or(0, |((n, _), _)| n),
    }
}

fn main() {
    require_root();
    let a = args();
    let pair = NetPair::new("mem", SUBNET);
    // The live and flood destinations: more addresses in namespace b.
    for host in 3..=2 + LIVE_ADDRS {
        let cidr = format!("{}/24", ip(host));
        run(
            "ip",
            &[
                "-n",
                &pair.b,
                "addr",
                "add",
                &cidr,
                "dev",
                &format!("vg{SUBNET}b"),
            ],
        );
    }
    println!(
        "agent memory and CPU, Kafka on: {LIVE_FLOWS} live UDP flows (refreshed every {} s), then \
         {} new UDP keys/s + {} TCP connections/s for {} s",
        REFRESH.as_secs(),
        a.rate,
        a.tcp_rate,
        a.seconds
    );
    let mut broker = Broker::start(BROKER_PORT);
    let up = a.up.then(|| run_case(&a, &pair, Some(&broker), 0));
    let inbound = (a.inbound > 0).then(|| {
        // Empty again (memory storage), topics recreated.
        broker.restart();
        run_case(&a, &pair, Some(&broker), a.inbound)
    });
    drop(broker);
    let down = a.down.then(|| run_case(&a, &pair, None, 0));
    let mut failed = Vec::new();
    if up.as_ref().is_some_and(|u| u.kafka_records == 0) {
        failed.push("Kafka received no records with the broker up");
    }
    if [up.as_ref(), inbound.as_ref(), down.as_ref()]
        .iter()
        .flatten()
        .any(|c| c.over_budget)
    {
        failed.push("the agent's peak RSS reached the 128 MiB budget");
    }
    drop(pair);
    if !failed.is_empty() {
        eprintln!("memload: {}", failed.join("; "));
        std::process::exit(1);
    }
}
