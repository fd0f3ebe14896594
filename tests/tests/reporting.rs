//! Kafka against a real Kafka-protocol broker (tansu) on loopback: alerts
//! and actions from real detections arrive on their topics and survive a
//! broker outage plus an agent SIGKILL through the durable spool; signed
//! commands and indicators act, unsigned or forged ones change nothing.
//!
//! The agent runs in the host's own network namespace here (the broker is
//! on its loopback); attacks still come from namespaces, and the kernel
//! hooks see every namespace. XDP is limited to `lo` so nothing touches
//! the machine's real interfaces; the cgroup egress blocklist is global but
//! only ever holds the tests' 10.x addresses.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::kafka::{self, Broker};
use vigil_integration::*;

const KEY: &str = "fleet-test-key";

/// Telemetry on Kafka is limited to the agent's own start and stop: the
/// agent watches the whole host, and on a busy machine other processes'
/// records would keep the spool from ever draining; these tests are about
/// alerts, actions and commands.
fn config(
    s: u8,
    broker: &Broker,
    pins: &Pins,
    playbooks: &Path,
    metrics: &str,
    socket: &str,
) -> String {
    format!(
        "stats_interval_s: 1\nflows:\n  sweep_interval_ms: 200\n  close_linger_ms: 100\n\
         metrics:\n  listen: \"{metrics}\"\ncontrol:\n  socket: \"{socket}\"\ndetect:\n  update_interval_s: 1\n\
         enforce:\n  pin_dir: {}\n  interfaces: [lo]\n  maintenance_interval_s: 1\n  management_cidrs: [\"10.{s}.3.0/24\"]\n\
         response:\n  mode: enforce\nplaybooks:\n  dir: {}\n\
         kafka:\n  brokers: \"{}\"\n  hmac_key: {KEY}\n  message_timeout_ms: 4000\n\
         \x20 telemetry:\n    kinds: [agent_start, agent_stop]\n",
        pins.pin_dir,
        playbooks.display(),
        broker.addr()
    )
}

fn alert_ids(agent: &Agent) -> Vec<String> {
    agent
        .records()
        .iter()
        .filter(|r| r["kind"] == "alert" && r["update"] == false)
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect()
}

fn spool_segments(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("spool"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Every message of a topic is intact JSON whose id matches its header.
fn check_intact(msgs: &[kafka::Msg]) {
    for m in msgs {
        assert!(
            m.body.is_object(),
            "corrupted message: {:?}",
            String::from_utf8_lossy(&m.raw)
        );
        assert_eq!(
            m.body["id"].as_str(),
            Some(m.id_header.as_str()),
            "{:?}",
            m.body
        );
        assert!(!m.key.is_empty());
    }
}

#[test]
fn alerts_and_actions_survive_a_broker_outage_and_an_agent_sigkill() {
    let s = 241;
    let topo = Topology::new("kfo", s);
    let pins = Pins::new("kfo");
    let mut broker = Broker::start(19192);
    let books = TempDir::new("kfo-books");
    scan_block_playbook(&books.0);
    let cfg = config(s, &broker, &pins, &books.0, "", "");
    let mut agent = Agent::start_in(None, &cfg, TempDir::new("kfo"));

    // Broker up: a scan, its alert and the playbook's block arrive.
    nmap_scan(&topo.peers[0], &topo.host_ip(1));
    let a1 = agent.wait_for("alert", |r| {
        r["detector"] == "scan" && r["entities"]["src_ip"] == topo.peer_ip(1).as_str()
    });
    agent.wait_for("action", |r| {
        r["action"] == "block" && r["state"] == "applied"
    });
    let start = Instant::now();
    let mut first_alerts = Vec::new();
    while start.elapsed() < PATIENCE {
        first_alerts = kafka::read_all(&broker.addr(), "defense.alerts", Duration::from_secs(1));
        if first_alerts.iter().any(|m| m.body["id"] == a1["id"]) {
            break;
        }
    }
    assert!(
        first_alerts.iter().any(|m| m.body["id"] == a1["id"]),
        "alert {} not on defense.alerts",
        a1["id"]
    );
    let actions = kafka::read_all(&broker.addr(), "defense.actions", Duration::from_secs(1));
    assert!(
        actions
            .iter()
            .any(|m| m.body["kind"] == "action" && m.body["action"] == "block"),
        "no block action on defense.actions: {:?}",
        actions.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    let events = kafka::read_all(&broker.addr(), "security.events", Duration::from_secs(1));
    assert!(events.iter().any(|m| m.body["kind"] == "agent_start"));
    check_intact(&first_alerts);
    check_intact(&actions);

    // Broker down: alerts keep coming and are spooled.
    broker.stop();
    nmap_scan(&topo.peers[1], &topo.host_ip(2));
    nmap_scan(&topo.peers[2], &topo.host_ip(3));
    for n in [2u8, 3] {
        let ip = topo.peer_ip(n);
        agent.wait_for("alert", |r| {
            r["detector"] == "scan" && r["entities"]["src_ip"] == ip.as_str()
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        spool_segments(&agent.dir.0) > 0,
        "nothing spooled while the broker was down"
    );

    // Crash in the middle of the outage, restart, then the broker returns.
    agent.kill9();
    let dir = agent.into_dir();
    let mut agent = Agent::start_in(None, &cfg, dir);
    broker.restart();
    let raised = alert_ids(&agent);
    assert!(raised.len() >= 3, "{raised:?}");
    let start = Instant::now();
    let mut missing: Vec<String> = raised.clone();
    let mut second = Vec::new();
    while start.elapsed() < PATIENCE * 2 && !missing.is_empty() {
        second = kafka::read_all(&broker.addr(), "defense.alerts", Duration::from_secs(1));
        missing.retain(|id| {
            !first_alerts
                .iter()
                .chain(second.iter())
                .any(|m| m.body["id"] == id.as_str())
        });
    }
    let missing_records: Vec<Value> = agent
        .records()
        .into_iter()
        .filter(|r| {
            r["id"]
                .as_str()
                .is_some_and(|i| missing.iter().any(|m| m == i))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "alerts never delivered: {missing:?}\n{missing_records:#?}\n{}",
        agent.stderr()
    );
    check_intact(&second);
    let actions = kafka::read_all(&broker.addr(), "defense.actions", Duration::from_secs(1));
    check_intact(&actions);
    assert!(
        actions
            .iter()
            .filter(|m| m.body["action"] == "block")
            .count()
            >= 2,
        "blocks raised during the outage did not arrive"
    );
    let start = Instant::now();
    while spool_segments(&agent.dir.0) > 0 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        spool_segments(&agent.dir.0),
        0,
        "spool not empty after replay: {:?} acked {:?}\n{}",
        std::fs::read_dir(agent.dir.0.join("spool"))
            .map(|rd| rd
                .flatten()
                .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect::<Vec<_>>())
            .unwrap_or_default(),
        std::fs::read_to_string(agent.dir.0.join("spool/acked")).unwrap_or_default(),
        agent.stderr()
    );
    assert!(agent.stop());
}

fn command_record(agent: &mut Agent, n: usize) -> Value {
    let start = Instant::now();
    loop {
        let cmds: Vec<Value> = agent
            .records()
            .into_iter()
            .filter(|r| r["kind"] == "command")
            .collect();
        if cmds.len() >= n {
            return cmds[n - 1].clone();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "only {} command records",
            cmds.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn only_signed_commands_and_indicators_act_and_the_guard_still_holds() {
    let s = 242;
    let topo = Topology::new("kfc", s);
    let pins = Pins::new("kfc");
    let broker = Broker::start(19193);
    let books = TempDir::new("kfc-books");
    let metrics_addr = "127.0.0.1:19194";
    let dir = TempDir::new("kfc");
    let socket = dir.0.join("vigil.sock").display().to_string();
    let cfg_text = config(s, &broker, &pins, &books.0, metrics_addr, &socket);
    let mut agent = Agent::start_in(None, &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    let victim = topo.peer_ip(2);
    let now = kafka::unix_now();
    let body =
        format!(r#"{{"id":"cmd-1","ts":{now},"cmd":"block","target":"{victim}","ttl_s":120}}"#);

    // Unsigned, then forged: refused, nothing blocked, and counted into a
    // summary instead of a record each.
    kafka::produce(&broker.addr(), "defense.commands", &body, None);
    let summary = agent.wait_for("command_summary", |_| true);
    assert_eq!(summary["counts"][0]["reason"], "unsigned", "{summary}");
    let forged = kafka::sign("not-the-key", body.as_bytes());
    kafka::produce(&broker.addr(), "defense.commands", &body, Some(&forged));
    let start = Instant::now();
    loop {
        let (_, text) = http_get(metrics_addr, "/metrics");
        let series = "vigil_command_refusals_total{reason=\"forged\",topic=\"defense.commands\"}";
        if metric(&text, series) == Some(1.0) {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no forged refusal counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !blocked(&cfg, &victim),
        "an unauthenticated command blocked"
    );
    assert!(
        agent.records().iter().all(|r| r["kind"] != "command"),
        "junk was recorded one by one"
    );

    // Signed: blocked, and traffic from this host to the peer stops.
    let srv = format!("{victim}:7600");
    let _server = topo.spawn(&topo.peers[1], &["serve", "0.0.0.0:7600"]);
    assert!(topo.netpeer_ok(&topo.h, &["tcp-probe", &srv, "700"]));
    let sent = Instant::now();
    kafka::produce(
        &broker.addr(),
        "defense.commands",
        &body,
        Some(&kafka::sign(KEY, body.as_bytes())),
    );
    while !blocked(&cfg, &victim) {
        assert!(
            sent.elapsed() < PATIENCE,
            "signed block never landed: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("signed block command in force after {:?}", sent.elapsed());
    let r = command_record(&mut agent, 1);
    assert_eq!(r["result"], "executed", "{r}");
    assert!(
        !topo.netpeer_ok(&topo.h, &["tcp-probe", &srv, "700"]),
        "blocked peer still reachable"
    );
    // The same signed message again is a replay.
    kafka::produce(
        &broker.addr(),
        "defense.commands",
        &body,
        Some(&kafka::sign(KEY, body.as_bytes())),
    );
    let r = command_record(&mut agent, 2);
    assert!(
        r["detail"].as_str().is_some_and(|d| d.contains("replay")),
        "{r}"
    );

    // Indicators: one lands in the kernel blocklist, a never-block one is refused.
    let ioc_ip = "10.242.1.3";
    let ioc = format!(
        r#"{{"id":"ioc-1","ts":{now},"indicator":"{ioc_ip}","ttl_s":300,"source":"test"}}"#
    );
    kafka::produce(
        &broker.addr(),
        "threat.enriched",
        &ioc,
        Some(&kafka::sign(KEY, ioc.as_bytes())),
    );
    let r = command_record(&mut agent, 3);
    assert_eq!(r["result"], "executed", "{r}");
    assert!(blocked(&cfg, ioc_ip));
    let mgmt = topo.peer_ip(3);
    let bad = format!(r#"{{"id":"ioc-2","ts":{now},"indicator":"{mgmt}","ttl_s":300}}"#);
    kafka::produce(
        &broker.addr(),
        "threat.enriched",
        &bad,
        Some(&kafka::sign(KEY, bad.as_bytes())),
    );
    let r = command_record(&mut agent, 4);
    assert_eq!(r["result"], "refused", "{r}");
    assert!(
        r["detail"].as_str().is_some_and(|d| d.contains("refused")),
        "{r}"
    );
    assert!(!blocked(&cfg, &mgmt), "a never-block address was blocked");
    // Half the Internet, signed: refused by the breadth cap.
    let wide = format!(
        r#"{{"id":"cmd-wide","ts":{now},"cmd":"block","target":"128.0.0.0/1","ttl_s":60}}"#
    );
    kafka::produce(
        &broker.addr(),
        "defense.commands",
        &wide,
        Some(&kafka::sign(KEY, wide.as_bytes())),
    );
    let r = command_record(&mut agent, 5);
    assert!(
        r["result"] == "refused"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("broader than /16")),
        "{r}"
    );
    assert!(!blocked(&cfg, "128.0.0.0"), "128.0.0.0/1 was blocked");
    // Action records on defense.actions carry the audit chain position.
    let start = Instant::now();
    loop {
        let actions = kafka::read_all(&broker.addr(), "defense.actions", Duration::from_secs(1));
        let audited: Vec<&Value> = actions
            .iter()
            .map(|m| &m.body)
            .filter(|b| b["kind"] == "action" && b["command"] == "cmd-1")
            .collect();
        if let Some(a) = audited.first() {
            assert!(
                a["audited"] == true
                    && a["audit_seq"].is_u64()
                    && a["audit_hash"].as_str().is_some_and(|h| h.len() == 64),
                "{a}"
            );
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the block action never reached Kafka"
        );
    }

    // The metrics agree with the JSON lines, and Kafka saw deliveries.
    let (status, text) = http_get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    let records = agent.records();
    for (topic, result) in [
        ("defense.commands", "refused"),
        ("defense.commands", "executed"),
        ("threat.enriched", "refused"),
        ("threat.enriched", "executed"),
    ] {
        let jsonl = records
            .iter()
            .filter(|r| r["kind"] == "command" && r["topic"] == topic && r["result"] == result)
            .count();
        let series = format!("vigil_commands_total{{result=\"{result}\",topic=\"{topic}\"}}");
        let m = metric(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert_eq!(m as usize, jsonl, "{series}");
        assert!(jsonl > 0, "{series}");
    }
    assert!(
        metric(&text, "vigil_kafka_delivered_total").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(metric(&text, "vigil_spool_records").is_some(), "{text}");
    let out = Command::new(vigil_bin())
        .args(["status", "--json", "--config"])
        .arg(&cfg)
        .output()
        .expect("status");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        status["kafka"]["delivered"].as_u64().is_some_and(|d| d > 0)
            && status["kafka"]["brokers"] == broker.addr().as_str(),
        "{status}"
    );
    assert_audit_intact(&cfg);

    // Restarted, the agent still refuses the executed command as a replay.
    assert!(agent.stop());
    let mut agent = Agent::start_in(None, &cfg_text, agent.into_dir());
    kafka::produce(
        &broker.addr(),
        "defense.commands",
        &body,
        Some(&kafka::sign(KEY, body.as_bytes())),
    );
    let r = command_record(&mut agent, 6);
    assert!(
        r["message_id"] == "cmd-1" && r["detail"].as_str().is_some_and(|d| d.contains("replay")),
        "a replay after a restart was not refused: {r}"
    );
    assert!(agent.stop());
}
