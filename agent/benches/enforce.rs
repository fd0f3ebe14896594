//! Containment figures (root only): per-packet cost of the XDP blocklist
//! with 100,000 CIDR entries against a bare XDP_DROP program, both through
//! BPF_PROG_TEST_RUN; time from a block request to the first dropped
//! packet of a live flow; and restore time of 100,000 saved entries.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};
use vigil::enforce::attach::{detach_all, Enforcer};
use vigil::enforce::blocklist::Blocklist;
use vigil::enforce::cidr::Cidr;
use vigil::enforce::state::{self, SavedBlock};
use vigil::enforce::testrun::{test_run, udp_frame};
use vigil::util::clock::monotonic_ns;

const ENTRIES: u32 = 100_000;

fn udp_packet(src: [u8; 4]) -> Vec<u8> {
    udp_frame(IpAddr::from(src), IpAddr::from([192, 0, 2, 1])).expect("same family")
}

/// 100,000 distinct prefixes of mixed length in 20.0.0.0/8 and 21.0.0.0/8.
fn prefixes() -> Vec<Cidr> {
    (0..ENTRIES)
        .map(|i| {
            let len = [24u8, 28, 20, 30, 26][(i % 5) as usize];
            let base = 0x1400_0000u32 + i * 256;
            Cidr {
                addr: IpAddr::from(base.to_be_bytes()),
                len,
            }
        })
        .collect()
}

fn sh(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd).args(args).stderr(Stdio::null()).status();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("enforcement benchmark skipped: it loads programs into the kernel and needs root");
        return;
    }
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/vigil-bench-{}", std::process::id()));
    let result = std::panic::catch_unwind(|| run(&pin_dir));
    let _ = detach_all(&pin_dir);
    sh("ip", &["netns", "del", "vg-bench-h"]);
    sh("ip", &["netns", "del", "vg-bench-a"]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn run(pin_dir: &Path) {
    let mut enforcer = Enforcer::load(pin_dir).expect("load enforcement object");
    let mut list = Blocklist::open(pin_dir).expect("open maps");
    let far = monotonic_ns() + 3_600_000_000_000;
    let t = Instant::now();
    for c in prefixes() {
        list.insert(&c, far, BLOCK_INGRESS | BLOCK_EGRESS)
            .expect("insert");
    }
    let fill = t.elapsed();
    let single: Cidr = "30.1.2.3".parse().expect("cidr");
    list.insert(&single, far, BLOCK_INGRESS)
        .expect("insert single");
    // A narrower outbound-only entry inside the listed 20.0.10.0/24: an
    // inbound packet from it walks past it to the /24 (two lookups).
    let narrow: Cidr = "20.0.10.0/28".parse().expect("cidr");
    list.insert(&narrow, far, BLOCK_EGRESS)
        .expect("insert narrow");

    let xdp = enforcer
        .program_fd(agent_common::enforce::PROG_XDP)
        .expect("xdp fd");
    let bare = enforcer.program_fd("vigil_xdp_bare_drop").expect("bare fd");
    let repeat = 1_000_000;
    let mut rows = Vec::new();
    for (label, fd, src) in [
        ("bare XDP_DROP", bare, [10, 1, 2, 3]),
        (
            "blocklist, source not listed (exact miss + LPM miss)",
            xdp,
            [10, 1, 2, 3],
        ),
        (
            "blocklist, not listed but next to listed prefixes",
            xdp,
            [21, 200, 0, 1],
        ),
        (
            "blocklist, source in a listed prefix (LPM hit, drop)",
            xdp,
            [20, 0, 5, 7],
        ),
        (
            "blocklist, source listed as one address (hash hit, drop)",
            xdp,
            [30, 1, 2, 3],
        ),
        (
            "blocklist, prefix under a narrower other-direction entry",
            xdp,
            [20, 0, 10, 7],
        ),
    ] {
        let pkt = udp_packet(src);
        let mut best = u32::MAX;
        let mut verdict = 0;
        for _ in 0..5 {
            let run = test_run(fd, &pkt, repeat).expect("BPF_PROG_TEST_RUN");
            best = best.min(run.ns_per_run);
            verdict = run.retval;
        }
        rows.push((label, best, verdict));
    }
    let bare_ns = rows[0].1.max(1) as f64;
    println!(
        "enforcement benchmark ({ENTRIES} CIDR entries in the LPM trie, filled in {fill:.2?})"
    );
    println!("  per-packet cost via BPF_PROG_TEST_RUN, {repeat} runs, best of 5:");
    for (label, ns, verdict) in &rows {
        let v = if *verdict == 1 { "DROP" } else { "PASS" };
        println!(
            "    {label:<58} {ns:>4} ns  ({v}, {:.1}x bare)",
            *ns as f64 / bare_ns
        );
    }

    latency(pin_dir, &mut enforcer, &mut list);

    // Restore: 100,000 saved entries into empty maps.
    let saved: Vec<SavedBlock> = prefixes()
        .into_iter()
        .map(|c| SavedBlock {
            target: c,
            expires_unix_ms: u64::MAX / 2,
            flags: BLOCK_INGRESS,
        })
        .collect();
    let state_file =
        std::env::temp_dir().join(format!("vigil-bench-blocks-{}.json", std::process::id()));
    state::save(&state_file, &saved).expect("save");
    drop(list);
    drop(enforcer);
    detach_all(pin_dir).expect("detach");
    let _fresh = Enforcer::load(pin_dir).expect("reload");
    let mut list = Blocklist::open(pin_dir).expect("reopen");
    let t = Instant::now();
    let loaded = state::load(&state_file).found().expect("load state");
    let n = state::restore(&mut list, &loaded).expect("restore");
    let restore = t.elapsed();
    let _ = std::fs::remove_file(&state_file);
    println!("  restore of {n} entries from the state directory: {restore:.3?} (target < 1 s)");
}

/// Block request to first dropped packet of a live 10,000 pps flow.
fn latency(pin_dir: &Path, enforcer: &mut Enforcer, list: &mut Blocklist) {
    let (h, a) = ("vg-bench-h", "vg-bench-a");
    sh("ip", &["netns", "del", h]);
    sh("ip", &["netns", "del", a]);
    for args in [
        vec!["netns", "add", h],
        vec!["netns", "add", a],
        vec![
            "link", "add", "vgbh", "type", "veth", "peer", "name", "vgba",
        ],
        vec!["link", "set", "vgbh", "netns", h],
        vec!["link", "set", "vgba", "netns", a],
        vec!["-n", h, "addr", "add", "10.229.0.1/24", "dev", "vgbh"],
        vec!["-n", a, "addr", "add", "10.229.0.2/24", "dev", "vgba"],
        vec!["-n", h, "link", "set", "vgbh", "up"],
        vec!["-n", a, "link", "set", "vgba", "up"],
    ] {
        sh("ip", &args);
    }
    // Attach XDP inside the host namespace, then come back.
    let own = std::fs::File::open("/proc/self/ns/net").expect("own netns");
    let target = std::fs::File::open(format!("/run/netns/{h}")).expect("bench netns");
    use std::os::fd::AsRawFd;
    // SAFETY: setns on valid namespace fds; this thread only.
    unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    let attached = enforcer.attach_interfaces(&[], "auto");
    // SAFETY: as above, back to where we started.
    unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) };
    let netpeer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/netpeer");
    if !netpeer.exists() {
        println!("  block-to-first-drop: skipped (build target/release/netpeer first: cargo xtask bench does)");
        return;
    }
    let mut flood: Child = Command::new("ip")
        .args(["netns", "exec", a])
        .arg(&netpeer)
        .args(["udp-flood", "10.229.0.1:9", "100", "400000"])
        .spawn()
        .expect("flood");
    std::thread::sleep(Duration::from_millis(300));
    let target: Cidr = "10.229.0.2".parse().expect("cidr");
    let mut samples = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        list.insert(&target, monotonic_ns() + 60_000_000_000, BLOCK_INGRESS)
            .expect("insert");
        let mut ok = false;
        while t.elapsed() < Duration::from_secs(1) {
            if list.get(&target).is_some_and(|v| v.packets > 0) {
                ok = true;
                break;
            }
            // Leave the other core to the sender: a spinning poller would
            // delay the very packets it waits for.
            std::thread::sleep(Duration::from_micros(20));
        }
        let us = t.elapsed().as_secs_f64() * 1e6;
        list.remove(&target);
        if ok {
            samples.push(us);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = flood.kill();
    let _ = flood.wait();
    samples.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
    let mode = attached.first().map(|x| x.mode.clone()).unwrap_or_default();
    if samples.is_empty() {
        println!("  block-to-first-drop: no drop observed (xdp {mode})");
        return;
    }
    println!(
        "  block request to first dropped packet (10,000 pps flow, xdp {mode}, {} runs): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    let _ = pin_dir;
}
