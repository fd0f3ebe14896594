//! Fleet fusion end to end: three agents, each scoped to its own network
//! namespace (a fleet of hosts on one kernel), a real Kafka-protocol broker
//! and `vigil fusion run`. A beacon seen by hosts 1 and 2 becomes a block in
//! host 3's kernel; a brute force from host 1 against host 2 and a hop from
//! host 2 to host 3 become one incident 1→2→3; a fusion instance killed
//! mid-run is replaced by another that rebuilds its state from the
//! changelogs and decides nothing twice.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::fleet::FleetNet;
use vigil_integration::kafka::{read_all, Broker};
use vigil_integration::*;

const KEY: &str = "fleet-test-key";

/// A scoped agent for host `name` of the fleet.
fn agent_config(name: &str, brokers: &str, pins: &Pins, books: &Path, dir: &TempDir) -> String {
    format!(
        "host: {name}\nscope:\n  netns: self\nstats_interval_s: 1\n\
         flows:\n  sweep_interval_ms: 200\n  udp_idle_timeout_s: 1\n  close_linger_ms: 100\n\
         enforce:\n  pin_dir: {}\n  maintenance_interval_s: 1\n\
         metrics:\n  listen: \"\"\ncontrol:\n  socket: {}\n\
         response:\n  mode: enforce\nplaybooks:\n  dir: {}\n\
         kafka:\n  brokers: \"{brokers}\"\n  hmac_key: {KEY}\n\
         detect:\n  update_interval_s: 1\n  beacon:\n    window_s: 20\n    min_connections: 8\n    \
         scoring_period_s: 2\n  lateral:\n    learn_s: 0\n",
        pins.pin_dir,
        dir.0.join("vigil.sock").display(),
        books.display(),
    )
}

/// `vigil fusion run` in the test's namespace, in enforce mode.
struct Fusion {
    _child: GroupGuard,
    log: std::path::PathBuf,
}

fn fusion_config(dir: &TempDir, brokers: &str) -> std::path::PathBuf {
    let cfg = dir.0.join("fusion.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kafka:\n  brokers: \"{brokers}\"\n  hmac_key: {KEY}\n\
             fusion:\n  mode: enforce\n  tick_s: 1\n  group_prefix: vigil-fusion-test\n"
        ),
    )
    .expect("fusion config");
    cfg
}

impl Fusion {
    fn start(dir: &TempDir, cfg: &Path, n: u32) -> Fusion {
        let log = dir.0.join(format!("fusion-{n}.log"));
        let child = GroupGuard::spawn(
            Command::new(vigil_bin())
                .args(["fusion", "run", "--config"])
                .arg(cfg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("fusion log")),
        );
        Fusion { _child: child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a line of the log containing `what`.
    fn wait_for(&self, what: &str) {
        let start = Instant::now();
        while !self.log().contains(what) {
            assert!(
                start.elapsed() < PATIENCE * 3,
                "fusion never logged {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// RFC 3339 → Unix ns.
fn ns_of(ts: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts.as_str().unwrap_or(""))
        .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn one_hosts_detection_protects_every_host_and_incidents_span_hosts() {
    require_root();
    let net = FleetNet::new("fus", 241, 3, &["c2"]);
    let broker = Broker::start_at(Some(&net.core), &net.core_ip(), 9092);
    let brokers = broker.addr();
    let dir = TempDir::new("fusion");
    let cfg = fusion_config(&dir, &brokers);
    // The first instance creates every topic it and the agents need.
    let fusion = Fusion::start(&dir, &cfg, 1);
    fusion.wait_for("restored 0 incidents");

    let books = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    let names = ["h1", "h2", "h3"];
    let pins: Vec<Pins> = names
        .iter()
        .map(|n| Pins::new(&format!("fus-{n}")))
        .collect();
    let mut agents: Vec<Agent> = names
        .iter()
        .zip(&net.hosts)
        .zip(&pins)
        .map(|((name, ns), pins)| {
            let d = TempDir::new(&format!("fus-{name}"));
            let config = agent_config(name, &brokers, pins, &books, &d);
            Agent::start_in(Some(ns), &config, d)
        })
        .collect();
    // Each agent sees its own namespace only, and says so.
    for a in &mut agents {
        let start = a.wait_for("agent_start", |_| true);
        let flows = start["probes"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|r| r["name"] == "flows" && r["state"] == "attached")
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(flows["tier"], 2, "scoped flows use TC: {start}");
    }

    // A beacon from hosts 1 and 2 to the same outside address; host 3
    // keeps connecting to it and notes when that stops working.
    let c2 = net.other_ip(0);
    let _server = GroupGuard::spawn(
        netpeer_in(&net.others[0], &["serve", "0.0.0.0:8080"]).stdout(Stdio::null()),
    );
    assert!(
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            port_open_from(&net.hosts[2], &format!("{c2}:8080"))
        }),
        "the C2 stand-in does not answer"
    );
    let mut watch = netpeer_in(
        &net.hosts[2],
        &["block-watch", &format!("{c2}:8080"), "20", "120"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("block-watch");
    read_json_line(&mut watch);
    let beacons: Vec<std::process::Child> = net.hosts[..2]
        .iter()
        .map(|ns| {
            netpeer_in(ns, &["beacon", &format!("{c2}:8080"), "500", "20", "48"])
                .stdout(Stdio::null())
                .spawn()
                .expect("beacon")
        })
        .collect();
    let beacon_alert = |a: &mut Agent| {
        let c2 = c2.clone();
        a.wait_for("alert", move |r| {
            r["detector"] == "beacon" && r["entities"]["dst_ip"] == c2.as_str()
        })
    };
    let seen: Vec<Value> = agents[..2].iter_mut().map(beacon_alert).collect();
    let second_alert_ns = seen.iter().map(|a| ns_of(&a["ts"])).max().unwrap_or(0);
    let blocked = read_json_line(&mut watch);
    let _ = watch.wait();
    for mut b in beacons {
        let _ = b.kill();
        let _ = b.wait();
    }
    let blocked_at = blocked["blocked_at_ns"]
        .as_i64()
        .unwrap_or_else(|| panic!("host 3 never lost the C2: {blocked}\n{}", fusion.log()));
    let latency_ms = (blocked_at - second_alert_ns) as f64 / 1e6;
    println!("fleet block: host 3 blocked {latency_ms:.0} ms after the second host's alert");
    // Host 3 itself never saw the beacon: the block came from the fleet.
    assert!(!agents[2]
        .records()
        .iter()
        .any(|r| r["kind"] == "alert" && r["detector"] == "beacon"));
    let cmd = agents[2].wait_for("command", |r| {
        r["topic"] == "threat.enriched" && r["result"] == "executed"
    });
    assert!(
        cmd["message_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{cmd}"
    );

    // Fusion dies mid-run; another instance takes over from the changelogs.
    drop(fusion);
    let fusion = Fusion::start(&dir, &cfg, 2);
    fusion.wait_for("restored");

    // A brute force from host 1 against host 2's sshd, then host 2 hops to
    // host 3's SSH port.
    let _sshd = Sshd::start_in(&net.hosts[1], &net.host_ip(2), &net.hosts[0]);
    let words = TempDir::new("fus-words");
    let wrong: Vec<String> = (0..12).map(|i| format!("wrong-{i}")).collect();
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    hydra(&net.hosts[0], &net.host_ip(2), &wrong, &words.0);
    let h1 = net.host_ip(1);
    agents[1].wait_for("alert", move |r| {
        r["detector"] == "brute_force" && r["entities"]["src_ip"] == h1.as_str()
    });
    let _ssh3 = GroupGuard::spawn(
        netpeer_in(&net.hosts[2], &["serve", "0.0.0.0:22"]).stdout(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(300));
    let h3 = net.host_ip(3);
    for _ in 0..3 {
        let _ = port_open_from(&net.hosts[1], &format!("{h3}:22"));
    }
    agents[1].wait_for("alert", move |r| {
        r["detector"] == "lateral" && r["entities"]["dst_ip"] == h3.as_str()
    });

    // One incident links 1→2→3.
    let start = Instant::now();
    let incident = loop {
        let incidents: Vec<Value> = read_all(&brokers, "fusion.incidents", Duration::from_secs(2))
            .into_iter()
            .map(|m| m.body)
            .filter(|b| b["kind"] == "incident")
            .collect();
        let found = incidents.into_iter().rev().find(|i| {
            let edges: BTreeSet<(String, String)> = i["edges"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .map(|e| {
                            (
                                e["from"].as_str().unwrap_or("").to_string(),
                                e["to"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            edges.contains(&("h1".into(), "h2".into()))
                && edges.contains(&("h2".into(), "h3".into()))
        });
        if let Some(i) = found {
            break i;
        }
        assert!(
            start.elapsed() < PATIENCE * 2,
            "no incident links h1→h2→h3:\n{}",
            fusion.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let hosts: Vec<&str> = incident["hosts"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(hosts, ["h1", "h2", "h3"], "{incident}");
    assert!(
        incident["analysis"]["narrative"]
            .as_str()
            .is_some_and(|n| n.contains("h1 → h2") && n.contains("h2 → h3")),
        "{incident}"
    );
    // The fleet decision on the C2 joined the same incident (hosts 1, 2).
    assert!(
        incident["indicators"]
            .as_array()
            .is_some_and(|i| i.iter().any(|d| d["indicator"] == c2.as_str())),
        "{incident}"
    );
    // `vigil fusion show` prints the same narrative.
    let id = incident["id"].as_str().unwrap_or_default();
    let shown = Command::new(vigil_bin())
        .args(["fusion", "show", id, "--config"])
        .arg(&cfg)
        .output()
        .expect("fusion show");
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("h2 → h3"),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );

    // Nothing was decided twice: one decision for the C2 on the compacted
    // topic, every decision id once.
    let decisions: Vec<Value> = read_all(&brokers, "threat.enriched", Duration::from_secs(3))
        .into_iter()
        .map(|m| m.body)
        .filter(|b| !b.is_null())
        .collect();
    let for_c2 = decisions
        .iter()
        .filter(|d| d["indicator"] == c2.as_str())
        .count();
    assert_eq!(for_c2, 1, "{decisions:?}");
    let ids: BTreeSet<&str> = decisions.iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids.len(), decisions.len(), "{decisions:?}");
    // The fleet's own hosts were never decided on.
    for n in 1..=3 {
        let ip = net.host_ip(n);
        assert!(
            !decisions.iter().any(|d| d["indicator"] == ip.as_str()),
            "{decisions:?}"
        );
    }

    // An operator lifts the decision: fusion publishes a signed tombstone
    // and host 3's agent takes the block out of its kernel.
    let out = Command::new(vigil_bin())
        .args(["fusion", "unblock", &c2, "--config"])
        .arg(&cfg)
        .output()
        .expect("fusion unblock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agents[2].wait_for("command", |r| {
        r["topic"] == "threat.enriched"
            && r["result"] == "executed"
            && r["message_id"]
                .as_str()
                .is_some_and(|m| m.starts_with("lift:"))
    });
    assert!(
        (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            port_open_from(&net.hosts[2], &format!("{c2}:8080"))
        }),
        "host 3 still cannot reach the address after the unblock"
    );
    drop(fusion);
    for a in &mut agents {
        a.stop();
    }
    drop(broker);
}
