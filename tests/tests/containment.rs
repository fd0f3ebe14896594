//! Containment in the real kernel: XDP/cgroup blocklist, expiry without the
//! agent, restarts, nftables isolation, the guard and pid-safe kill. The
//! "host" is its own network namespace, so nothing here touches the
//! machine's real interfaces or ruleset. Run as root, one test at a time.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::*;

fn setup(tag: &str, s: u8) -> (Topology, Agent, PathBuf, Pins) {
    let topo = Topology::new(tag, s);
    let pins = Pins::new(tag);
    let config = format!(
        "stats_interval_s: 1\nmetrics:\n  listen: \"\"\nenforce:\n  pin_dir: {}\n  maintenance_interval_s: 1\n  \
         management_cidrs: [\"10.{s}.3.0/24\", \"fd00:{s}:3::/64\"]\n",
        pins.pin_dir
    );
    let agent = Agent::start_in(Some(&topo.h), &config, TempDir::new(tag));
    let cfg = agent.dir.0.join("vigil.yaml");
    (topo, agent, cfg, pins)
}

fn action(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no action record ({e}): {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn tcp(topo: &Topology, from: &str, to: &str, src: Option<&str>) -> bool {
    let mut args = vec!["tcp-probe", to, "700"];
    if let Some(s) = src {
        args.push(s);
    }
    topo.netpeer_ok(from, &args)
}

fn udp(topo: &Topology, from: &str, to: &str) -> bool {
    topo.netpeer_ok(from, &["udp-probe", to, "700"])
}

#[test]
fn blocked_attacker_loses_tcp_and_udp_while_a_peer_keeps_both_v4_cidr_and_v6() {
    let (topo, mut agent, cfg, _pins) = setup("blk", 221);
    let start = agent.wait_for("agent_start", |_| true);
    let probes = start["probes"].as_array().expect("probes").clone();
    assert!(
        probes
            .iter()
            .any(|p| p["name"] == "blocklist_in" && p["state"] == "attached"),
        "{probes:?}"
    );
    let _srv4 = topo.spawn(&topo.h, &["serve", "0.0.0.0:7100"]);
    let _srv6 = topo.spawn(&topo.h, &["serve", "[::]:7101"]);
    let (a, b) = (&topo.peers[0], &topo.peers[1]);
    let h1 = format!("{}:7100", topo.host_ip(1));
    let h2 = format!("{}:7100", topo.host_ip(2));
    assert!(
        tcp(&topo, a, &h1, None) && udp(&topo, a, &h1),
        "baseline: attacker reaches host"
    );

    let out = topo.vigil(&cfg, &["blocks", "add", &topo.peer_ip(1), "--ttl", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let act = action(&out);
    assert_eq!(
        (
            act["kind"].as_str(),
            act["action"].as_str(),
            act["state"].as_str()
        ),
        (Some("action"), Some("block"), Some("applied"))
    );
    assert_eq!(act["ttl_s"], 60);
    assert!(act["id"].as_str().is_some_and(|i| !i.is_empty()));

    assert!(
        !tcp(&topo, a, &h1, None),
        "blocked attacker still opens TCP"
    );
    assert!(
        !udp(&topo, a, &h1),
        "blocked attacker still gets UDP through"
    );
    assert!(
        tcp(&topo, b, &h2, None) && udp(&topo, b, &h2),
        "the other peer was cut off"
    );
    // The attacker's second address is not covered by a single-address block.
    assert!(tcp(&topo, a, &h1, Some(&format!("10.{}.1.3", topo.s))));

    let list = topo.vigil(&cfg, &["blocks", "list", "--json"]);
    let v: Value = serde_json::from_slice(&list.stdout).expect("list json");
    let entry = v["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|e| e["target"] == topo.peer_ip(1).as_str())
        .cloned()
        .expect("entry listed");
    assert!(entry["packets"].as_u64().unwrap_or(0) >= 2, "{entry}");
    assert!(v["dropped"]["in_packets"].as_u64().unwrap_or(0) >= 2, "{v}");

    // Unblock, then a CIDR block covers both attacker addresses (a /31: the
    // /24 would cover the host's own address, which the guard refuses).
    assert!(topo
        .vigil(&cfg, &["blocks", "remove", &topo.peer_ip(1)])
        .status
        .success());
    assert!(tcp(&topo, a, &h1, None), "unblock did not restore access");
    let cidr = format!("10.{}.1.2/31", topo.s);
    assert!(topo
        .vigil(&cfg, &["blocks", "add", &cidr, "--ttl", "60s"])
        .status
        .success());
    assert!(!tcp(&topo, a, &h1, None));
    assert!(!tcp(&topo, a, &h1, Some(&format!("10.{}.1.3", topo.s))));
    assert!(tcp(&topo, b, &h2, None));
    // Drops through the prefix are counted on the prefix entry.
    let v: Value = serde_json::from_slice(&topo.vigil(&cfg, &["blocks", "list", "--json"]).stdout)
        .expect("json");
    let entry = v["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|e| e["target"] == cidr.as_str())
        .cloned()
        .expect("cidr listed");
    assert!(entry["packets"].as_u64().unwrap_or(0) >= 2, "{entry}");
    assert!(topo
        .vigil(&cfg, &["blocks", "remove", &cidr])
        .status
        .success());
    assert!(
        tcp(&topo, a, &h1, None),
        "removing the prefix did not restore access"
    );

    // IPv6.
    let h1v6 = format!("[fd00:{}:1::1]:7101", topo.s);
    let h2v6 = format!("[fd00:{}:2::1]:7101", topo.s);
    assert!(tcp(&topo, a, &h1v6, None), "baseline v6");
    let a6 = format!("fd00:{}:1::2", topo.s);
    assert!(topo
        .vigil(&cfg, &["blocks", "add", &a6, "--ttl", "60s"])
        .status
        .success());
    assert!(
        !tcp(&topo, a, &h1v6, None) && !udp(&topo, a, &h1v6),
        "v6 block ineffective"
    );
    assert!(tcp(&topo, b, &h2v6, None), "v6 peer cut off");
    assert!(agent.stop());
}

#[test]
fn egress_block_stops_the_host_reaching_a_destination() {
    let (topo, mut agent, cfg, _pins) = setup("egr", 222);
    let b = &topo.peers[1];
    let _srv = topo.spawn(b, &["serve", "0.0.0.0:7200"]);
    let dst = format!("{}:7200", topo.peer_ip(2));
    assert!(tcp(&topo, &topo.h, &dst, None), "baseline");
    let out = topo.vigil(
        &cfg,
        &[
            "blocks",
            "add",
            &topo.peer_ip(2),
            "--ttl",
            "60s",
            "--direction",
            "out",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !tcp(&topo, &topo.h, &dst, None),
        "host still reaches the blocked destination"
    );
    assert!(!udp(&topo, &topo.h, &dst));
    let list: Value =
        serde_json::from_slice(&topo.vigil(&cfg, &["blocks", "list", "--json"]).stdout)
            .expect("json");
    assert!(
        list["dropped"]["out_packets"].as_u64().unwrap_or(0) >= 1,
        "{list}"
    );
    assert!(topo
        .vigil(&cfg, &["blocks", "remove", &topo.peer_ip(2)])
        .status
        .success());
    assert!(tcp(&topo, &topo.h, &dst, None));
    agent.wait_for("agent_stats", |_| true);
    assert!(agent.stop());
}

#[test]
fn a_short_block_lapses_by_itself_after_the_agent_is_killed() {
    let (topo, mut agent, cfg, _pins) = setup("ttl", 223);
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7300"]);
    let a = &topo.peers[0];
    let h1 = format!("{}:7300", topo.host_ip(1));
    assert!(topo
        .vigil(&cfg, &["blocks", "add", &topo.peer_ip(1), "--ttl", "3s"])
        .status
        .success());
    agent.kill9();
    assert!(
        !tcp(&topo, a, &h1, None),
        "block not in force with the agent dead"
    );
    let start = Instant::now();
    let mut back = false;
    while start.elapsed() < PATIENCE {
        if tcp(&topo, a, &h1, None) {
            back = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(back, "the block never lapsed without the agent");
}

#[test]
fn restarting_the_agent_keeps_blocks_in_force_without_a_gap() {
    let (topo, agent, cfg, _pins) = setup("rst", 224);
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7400"]);
    let a = topo.peers[0].clone();
    let h1 = format!("{}:7400", topo.host_ip(1));
    assert!(topo
        .vigil(&cfg, &["blocks", "add", &topo.peer_ip(1), "--ttl", "120s"])
        .status
        .success());

    // The attacker probes without pause across the restart.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, a2, h2) = (stop.clone(), a.clone(), h1.clone());
    let netpeer_path = netpeer();
    let prober = std::thread::spawn(move || {
        let (mut tries, mut through) = (0u32, 0u32);
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) && tries < 200 {
            let ok = Command::new("ip")
                .args(["netns", "exec", &a2])
                .arg(&netpeer_path)
                .args(["udp-probe", &h2, "150"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            tries += 1;
            through += ok as u32;
        }
        (tries, through)
    });
    let dir = agent.into_dir(); // SIGTERM: the agent stops
    let mut agent = Agent::start_in(
        Some(&topo.h),
        &std::fs::read_to_string(&cfg)
            .expect("cfg")
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n"),
        dir,
    );
    agent.wait_for("agent_start", |_| true);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, through) = prober.join().expect("prober");
    assert!(tries >= 3, "prober ran only {tries} times");
    assert_eq!(
        through, 0,
        "{through} of {tries} probes got through during the restart"
    );
    assert!(!tcp(&topo, &a, &h1, None));
    assert!(agent.stop());
}

#[test]
fn isolation_keeps_management_cuts_the_rest_and_unisolation_restores_the_ruleset_exactly() {
    let (topo, mut agent, cfg, _pins) = setup("iso", 225);
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7500"]);
    let (a, m) = (&topo.peers[0], &topo.peers[2]);
    let h1 = format!("{}:7500", topo.host_ip(1));
    let h3 = format!("{}:7500", topo.host_ip(3));
    let before = topo.in_host("nft", &["list", "ruleset"]).stdout;

    // An SSH-like management session, established before isolation.
    let mut session = netpeer_in(m, &["tcp-hold", &h3, "12", "250"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("session");
    read_json_line(&mut session);

    let out = topo.vigil(&cfg, &["isolate", "--ttl", "60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(action(&out)["action"], "isolate");
    assert!(
        !tcp(&topo, a, &h1, None),
        "isolated host still reachable from the attacker"
    );
    assert!(
        tcp(&topo, m, &h3, None),
        "management cannot open new sessions"
    );
    let status: Value =
        serde_json::from_slice(&topo.vigil(&cfg, &["enforce-status"]).stdout).expect("status json");
    assert_eq!(status["isolated"], true, "{status}");
    assert!(
        status["isolation_remaining_s"]
            .as_u64()
            .is_some_and(|s| s <= 60 && s > 0),
        "{status}"
    );
    let held = read_json_line(&mut session);
    let _ = session.wait();
    assert_eq!(
        held["ok"], held["rounds"],
        "the management session was disturbed: {held}"
    );

    let out = topo.vigil(&cfg, &["unisolate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = topo.in_host("nft", &["list", "ruleset"]).stdout;
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );
    assert!(
        tcp(&topo, a, &h1, None),
        "unisolation did not restore access"
    );
    assert!(agent.stop());
}

#[test]
fn the_guard_refuses_loopback_the_gateway_and_management() {
    let (topo, mut agent, cfg, _pins) = setup("grd", 226);
    run(
        "ip",
        &[
            "-n",
            &topo.h,
            "route",
            "add",
            "default",
            "via",
            &topo.peer_ip(2),
        ],
    );
    for (target, why) in [
        ("127.0.0.1".to_string(), "loopback"),
        ("::1".to_string(), "loopback"),
        (topo.peer_ip(2), "gateway"),
        (format!("10.{}.3.9", topo.s), "management"),
        (format!("10.{}.0.0/16", topo.s), ""),
        (topo.host_ip(1), "this host"),
    ] {
        let out = topo.vigil(&cfg, &["blocks", "add", &target, "--ttl", "60s"]);
        assert!(!out.status.success(), "{target} was blocked");
        let act = action(&out);
        assert_eq!(act["state"], "refused", "{act}");
        assert!(
            act["detail"].as_str().unwrap_or("").contains(why),
            "{target}: {act}"
        );
    }
    let list: Value =
        serde_json::from_slice(&topo.vigil(&cfg, &["blocks", "list", "--json"]).stdout)
            .expect("json");
    assert_eq!(
        list["blocks"].as_array().map(|b| b.len()),
        Some(0),
        "{list}"
    );
    assert!(agent.stop());
}

fn spawn_sleep() -> std::process::Child {
    Command::new("sleep").arg("30").spawn().expect("sleep")
}

#[test]
fn killing_a_reused_pid_does_nothing_harmful() {
    require_root();
    // The original process, and its start time while it lived.
    let mut first = spawn_sleep();
    let pid = first.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let start: u64 = stat[stat.rfind(')').expect(")") + 1..]
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .expect("starttime");
    first.kill().expect("kill");
    first.wait().expect("wait");

    // Make the kernel hand the same pid to an innocent process. Start times
    // have clock-tick (10 ms) resolution, and a real pid reuse takes a full
    // wrap of the pid space, so let at least one tick pass first.
    std::thread::sleep(Duration::from_millis(30));
    let mut innocent = None;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let c = spawn_sleep();
        if c.id() == pid {
            innocent = Some(c);
            break;
        }
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut innocent = ChildGuard(innocent.expect("could not reuse the pid in 50 tries"));
    let dir = TempDir::new("kill");
    let cfg = dir.0.join("c.yaml");
    std::fs::write(&cfg, format!("state_dir: {}\n", dir.0.display())).expect("cfg");
    let vigil = |args: &[&str]| {
        Command::new(vigil_bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run vigil")
    };
    let (pid_s, start_s) = (pid.to_string(), start.to_string());
    let kill_old = || vigil(&["kill", &pid_s, "--start-time", &start_s]);
    let out = kill_old();
    assert!(!out.status.success());
    let act = action(&out);
    assert_eq!(act["state"], "refused", "{act}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        innocent.0.try_wait().expect("try_wait").is_none(),
        "the innocent process was killed"
    );
    let log = std::fs::read_to_string(dir.0.join("audit.jsonl")).expect("audit log");
    assert!(log.contains("\"refused\""));
    let verify = vigil(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // A second record, then tamper with the first: the chain names the line.
    let again = kill_old();
    assert!(!again.status.success());
    let log = std::fs::read_to_string(dir.0.join("audit.jsonl")).expect("audit log");
    let tampered = log.replacen("refused", "applied", 1);
    std::fs::write(dir.0.join("audit.jsonl"), tampered).expect("tamper");
    let bad = vigil(&["audit", "verify"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn interfaces_that_appear_later_get_the_blocklist_too() {
    let (topo, mut agent, cfg, _pins) = setup("late", 227);
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7600"]);
    // A fourth neighbour, cabled after the agent started.
    let late = format!("vg-late-x{}", std::process::id());
    run("ip", &["netns", "add", &late]);
    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            delete_netns(&self.0);
        }
    }
    let _late_guard = Ns(late.clone());
    run(
        "ip",
        &[
            "link", "add", "vg227h9", "type", "veth", "peer", "name", "vg227p9",
        ],
    );
    run("ip", &["link", "set", "vg227h9", "netns", &topo.h]);
    run("ip", &["link", "set", "vg227p9", "netns", &late]);
    run(
        "ip",
        &[
            "-n",
            &topo.h,
            "addr",
            "add",
            "10.227.9.1/24",
            "dev",
            "vg227h9",
        ],
    );
    run(
        "ip",
        &[
            "-n",
            &late,
            "addr",
            "add",
            "10.227.9.2/24",
            "dev",
            "vg227p9",
        ],
    );
    run("ip", &["-n", &topo.h, "link", "set", "vg227h9", "up"]);
    run("ip", &["-n", &late, "link", "set", "vg227p9", "up"]);
    run("ip", &["-n", &late, "link", "set", "lo", "up"]);

    // The daemon's rescan (every second here) attaches XDP to it.
    let start = Instant::now();
    loop {
        let link = topo.in_host("ip", &["link", "show", "vg227h9"]);
        if String::from_utf8_lossy(&link.stdout).contains("prog/xdp") {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "XDP never attached to the new interface"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dst = "10.227.9.1:7600";
    assert!(tcp(&topo, &late, dst, None), "baseline on the new link");
    assert!(topo
        .vigil(&cfg, &["blocks", "add", "10.227.9.2", "--ttl", "60s"])
        .status
        .success());
    assert!(!tcp(&topo, &late, dst, None), "new interface not protected");
    assert!(agent.stop());
}

/// Datagrams from the host's namespace to `to` that arrive in namespace `ns`.
fn udp_arrivals(topo: &Topology, ns: &str, to: &str) -> u64 {
    let bind = format!("{}:7701", to);
    let mut counter = topo.spawn_raw(ns, &["udp-count", &bind, "1500"]);
    read_json_line(&mut counter);
    let _ = netpeer_in(&topo.h, &["udp-flood", &bind, "20000", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let done = read_json_line(&mut counter);
    let _ = counter.wait();
    done["received"].as_u64().expect("received")
}

/// The reproduction: a /25 blocking both directions, then a
/// narrower /26 inbound-only inside it. The /26 must not hide the /25's
/// outbound block: the host's datagrams to an address in both never leave.
#[test]
fn a_narrower_inbound_block_does_not_hide_a_broader_outbound_one() {
    let (topo, mut agent, cfg, _pins) = setup("shd", 228);
    let b = &topo.peers[1];
    // A second address on the peer, inside 10.228.2.128/25 (the /24 would
    // cover the host's own address, which the guard refuses).
    run(
        "ip",
        &["-n", b, "addr", "add", "10.228.2.130/24", "dev", "vg228p2"],
    );
    let dst = "10.228.2.130";
    assert_eq!(udp_arrivals(&topo, b, dst), 5, "baseline: datagrams arrive");

    let add = |args: &[&str]| {
        let out = topo.vigil(&cfg, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        action(&out)
    };
    add(&["blocks", "add", "10.228.2.128/25", "--ttl", "60s"]);
    assert_eq!(udp_arrivals(&topo, b, dst), 0, "the /25 alone leaks");
    let narrow = add(&[
        "blocks",
        "add",
        "10.228.2.128/26",
        "--ttl",
        "60s",
        "--direction",
        "in",
    ]);
    assert_eq!(narrow["detail"], "in", "{narrow}");
    assert_eq!(
        udp_arrivals(&topo, b, dst),
        0,
        "the inbound-only /26 hid the /25's outbound block"
    );
    // Inbound stays blocked by both, and `blocks list` shows both entries.
    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7700"]);
    let h2 = format!("{}:7700", topo.host_ip(2));
    assert!(!topo.netpeer_ok(b, &["udp-probe", &h2, "700", dst]));
    let list: Value =
        serde_json::from_slice(&topo.vigil(&cfg, &["blocks", "list", "--json"]).stdout)
            .expect("json");
    let targets: Vec<&str> = list["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert_eq!(targets, ["10.228.2.128/25", "10.228.2.128/26"], "{list}");
    // A shorter, outbound-only request on the /25 does not weaken it.
    let renewed = add(&[
        "blocks",
        "add",
        "10.228.2.128/25",
        "--ttl",
        "5s",
        "--direction",
        "out",
    ]);
    let detail = renewed["detail"].as_str().unwrap_or("");
    assert!(
        detail.starts_with("in+out") && detail.contains("never weakens"),
        "{renewed}"
    );
    let list: Value =
        serde_json::from_slice(&topo.vigil(&cfg, &["blocks", "list", "--json"]).stdout)
            .expect("json");
    let wide = &list["blocks"][0];
    assert_eq!(wide["direction"], "in+out", "{list}");
    assert!(wide["ttl_remaining_s"].as_u64().unwrap_or(0) > 30, "{list}");
    // Removing the /26 removes exactly it; the /25 still blocks.
    assert!(topo
        .vigil(&cfg, &["blocks", "remove", "10.228.2.128/26"])
        .status
        .success());
    assert_eq!(udp_arrivals(&topo, b, dst), 0);
    assert!(topo
        .vigil(&cfg, &["blocks", "remove", "10.228.2.128/25"])
        .status
        .success());
    assert_eq!(
        udp_arrivals(&topo, b, dst),
        5,
        "unblocking restored nothing"
    );
    assert!(agent.stop());
}
