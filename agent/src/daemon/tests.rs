//! The agent's state logic without root: the record path, flow tracking,
//! control calls and fleet messages, on a plain table instead of kernel
//! maps and a memory sink instead of files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_common::{EventKind, FlowStats};

use super::agent::{Agent, AlertFeed, Fleet, HostResponse};
use super::flows::tests::Table;
use super::flows::{flow_key, FlowTracker};
use crate::config::Config;
use crate::pipeline::decode::fixtures;
use crate::pipeline::proc_cache::ProcessCache;
use crate::pipeline::Pipeline;
use crate::response::engine::{Limits, Responder};
use crate::response::playbook::{self, Mode};
use crate::service::control::{Call, Request, Response};
use crate::sink::kafka::commands::{sign, Verifier};
use crate::sink::kafka::producer::Inbound;
use crate::sink::{Output, Sink, SinkError, Sinks};
use crate::util::clock::Clock;

/// Keeps every line as parsed JSON.
struct Memory(Arc<Mutex<Vec<serde_json::Value>>>);

impl Sink for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn write(&mut self, _out: &Output<'_>, line: &str) -> Result<(), SinkError> {
        let v = serde_json::from_str(line)?;
        self.0.lock().expect("lock").push(v);
        Ok(())
    }
}

struct Test {
    agent: Agent,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
    dir: PathBuf,
}

impl Drop for Test {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Test {
    fn of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .filter(|v| v["kind"] == kind)
            .cloned()
            .collect()
    }
}

const KEY: &str = "fleet-secret";

/// An agent on a scratch state directory; `playbooks` are written there.
fn agent(name: &str, playbooks: &[(&str, &str)], mode: Mode) -> Test {
    let dir = std::env::temp_dir().join(format!("vigil-daemon-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pb = dir.join("playbooks");
    std::fs::create_dir_all(&pb).expect("scratch dir");
    for (file, text) in playbooks {
        std::fs::write(pb.join(file), text).expect("playbook");
    }
    let mut cfg = Config {
        state_dir: dir.clone(),
        ..Config::default()
    };
    cfg.playbooks.dir = pb.clone();
    cfg.response.mode = mode;
    cfg.kafka.hmac_key = KEY.into();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let host: Arc<str> = Arc::from("test-host");
    let agent = Agent {
        pipeline: Pipeline::new(host.clone(), Clock::new(), ProcessCache::new(1024)),
        sinks: Sinks::new(vec![Box::new(Memory(lines.clone()))]),
        kernel: Box::new(Table::default()),
        flows: FlowTracker::new(cfg.flows.clone()),
        engine: crate::detect::config::engine(&cfg.detect),
        response: HostResponse {
            responder: Responder::new(
                playbook::load_dir(Path::new(&pb)).expect("playbooks"),
                mode,
                Limits {
                    max_actions_per_minute: 30,
                    max_concurrent_blocks: 1000,
                },
            ),
            containment: None,
            state_dir: dir.clone(),
            host,
        },
        alerts: AlertFeed::new(),
        fleet: Fleet {
            verifier: Verifier::new(KEY, 300),
            offsets: Default::default(),
        },
        metrics: None,
        probes: Vec::new(),
        metric_ticks: 0,
        cfg,
    };
    Test { agent, lines, dir }
}

const GATED_BLOCK: &str = "version: 1
name: gated_block
description: ask, then block the brute-force source
trigger:
  detectors: [brute_force]
steps:
  - id: ask
    action: require_approval
    timeout: 10m
    on_timeout: deny
  - id: block
    action: block_ip
    target: source
    ttl: 1h
";

/// A control call as root, through the same path the socket uses.
fn call(t: &mut Test, request: Request) -> Response {
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    t.agent.on_call(Call {
        request,
        uid: 0,
        reply,
    });
    answer.try_recv().expect("answered")
}

/// Six wrong passwords from one address: a brute-force alert.
fn brute_force(t: &mut Test) {
    for _ in 0..6 {
        t.agent
            .on_ring_record(&fixtures::auth(300, 7, "root", "198.51.100.7"));
    }
}

#[test]
fn ring_records_are_written_and_bad_ones_counted() {
    let mut t = agent("ring", &[], Mode::DryRun);
    t.agent
        .on_ring_record(&fixtures::exec(100, 1, "/usr/bin/curl", &["curl", "x"]));
    t.agent.on_ring_record(&[0u8; 10]);
    let execs = t.of("process_exec");
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0]["exe"], "/usr/bin/curl");
    assert_eq!(t.lines.lock().expect("lock").len(), 1);
    let s = t.agent.stats();
    assert_eq!(s.decode_errors, 1);
    assert_eq!(s.events["process_exec"], 1);
}

#[test]
fn a_closed_connection_becomes_a_flow_record_with_its_owner() {
    let mut t = agent("close", &[], Mode::DryRun);
    for r in fixtures::sshd_accepts() {
        t.agent.on_ring_record(&r);
    }
    let key = flow_key(
        6,
        "10.0.0.1".parse().expect("ip"),
        22,
        "10.0.0.9".parse().expect("ip"),
        5555,
    );
    let mut table = Table::default();
    table.put(
        key,
        FlowStats {
            n_in: 3,
            bytes_in: 120,
            syn: 1,
            pid: 200,
            ..FlowStats::default()
        },
    );
    t.agent.kernel = Box::new(table);
    let close = fixtures::conn(EventKind::Close, 0, [10, 0, 0, 1], 22, [10, 0, 0, 9], 5555);
    t.agent.on_ring_record(&close);
    assert!(
        t.of("flow").is_empty(),
        "a closed flow waits for its linger"
    );
    t.agent.flush_closed(true);
    let flows = t.of("flow");
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0]["end_reason"], "close");
    assert_eq!(flows[0]["exe"], "/usr/sbin/sshd");
    assert_eq!(flows[0]["bytes_in"], 120);
    assert_eq!(t.agent.stats().flows_emitted, 1);
    // Taken out of the kernel map: a shutdown sweep finds nothing more.
    t.agent.sweep(true);
    assert_eq!(t.of("flow").len(), 1);
}

#[test]
fn an_alert_runs_the_playbooks_and_is_listed_for_the_cli() {
    let pb = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks/brute_force_response.yaml"),
    )
    .expect("shipped playbook");
    let mut t = agent("alert", &[("bf.yaml", &pb)], Mode::DryRun);
    brute_force(&mut t);
    let alerts = t.of("alert");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["detector"], "brute_force");
    let actions = t.of("action");
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["state"], "dry-run");
    assert_eq!(t.of("decision")[0]["decision"], "incident_opened");
    assert_eq!(t.of("notification").len(), 1);
    let resp = call(&mut t, Request::Alerts { follow: false });
    assert!(resp.ok);
    assert_eq!(resp.data[0]["id"], alerts[0]["id"]);
    let resp = call(&mut t, Request::Incidents);
    assert_eq!(resp.data[0]["state"], "done");
    // The incident was saved for the next start.
    let saved = std::fs::read(t.dir.join("response.json")).expect("response.json");
    let saved: serde_json::Value = serde_json::from_slice(&saved).expect("json");
    assert_eq!(saved["incidents"].as_array().map(Vec::len), Some(1));
    let status = call(&mut t, Request::Status);
    assert_eq!(status.data["detectors"]["brute_force"], 1);
    assert_eq!(status.data["stats"]["events"]["auth_attempt"], 6);
}

#[test]
fn an_approval_is_decided_through_the_control_socket() {
    let mut t = agent("approve", &[("gated.yaml", GATED_BLOCK)], Mode::Enforce);
    brute_force(&mut t);
    let resp = call(&mut t, Request::Approvals);
    let id = resp.data[0]["id"]
        .as_str()
        .expect("approval id")
        .to_string();
    let resp = call(
        &mut t,
        Request::Approve {
            id: "apr-nope".into(),
        },
    );
    assert!(!resp.ok && resp.error.contains("apr-nope"), "{resp:?}");
    let resp = call(&mut t, Request::Approve { id: id.clone() });
    assert!(resp.ok, "{resp:?}");
    let decision = &t.of("decision")[2];
    assert_eq!(decision["decision"], "approved");
    assert_eq!(decision["by_uid"], 0);
    // Enforcement is off in this agent: the block fails and is recorded so.
    let block = t.of("action").pop().expect("action");
    assert_eq!(block["state"], "failed");
    assert!(t.agent.response.responder.approvals.is_empty());
}

fn inbound(topic: &str, offset: i64, body: &str, key: Option<&str>) -> Inbound {
    Inbound {
        topic: topic.into(),
        partition: 0,
        offset,
        payload: body.as_bytes().to_vec(),
        hmac: key.map(|k| sign(k.as_bytes(), body.as_bytes()).into_bytes()),
    }
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn fleet_messages_are_verified_recorded_and_their_offsets_saved() {
    let mut t = agent("fleet", &[("gated.yaml", GATED_BLOCK)], Mode::Enforce);
    brute_force(&mut t);
    let approval = t
        .agent
        .response
        .responder
        .approvals
        .keys()
        .next()
        .expect("pending approval")
        .clone();
    let body = |id: &str, mut cmd: serde_json::Value| {
        cmd["id"] = id.into();
        cmd["ts"] = now_s().into();
        cmd.to_string()
    };
    let topic = "defense.commands";
    let deny = body(
        "c1",
        serde_json::json!({"cmd": "deny", "approval": approval}),
    );
    // Unsigned, then forged: refused, nothing decided.
    t.agent.on_inbound(inbound(topic, 0, &deny, None));
    t.agent
        .on_inbound(inbound(topic, 1, &deny, Some("wrong-key")));
    assert_eq!(t.agent.response.responder.approvals.len(), 1);
    // Signed: the approval is denied by that command.
    t.agent.on_inbound(inbound(topic, 2, &deny, Some(KEY)));
    assert!(t.agent.response.responder.approvals.is_empty());
    // The same message again is a replay.
    t.agent.on_inbound(inbound(topic, 3, &deny, Some(KEY)));
    // A signed block with enforcement off is refused with the reason.
    let block = body(
        "c2",
        serde_json::json!({"cmd": "block", "target": "203.0.113.9", "ttl_s": 60}),
    );
    t.agent.on_inbound(inbound(topic, 4, &block, Some(KEY)));
    let results: Vec<(String, String)> = t
        .of("command")
        .iter()
        .map(|c| {
            (
                c["result"].as_str().unwrap_or("").to_string(),
                c["message_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("refused".to_string(), String::new()),
            ("refused".to_string(), String::new()),
            ("executed".to_string(), "c1".to_string()),
            ("refused".to_string(), String::new()),
            ("refused".to_string(), "c2".to_string()),
        ]
    );
    let denied = t
        .of("decision")
        .into_iter()
        .find(|d| d["decision"] == "denied")
        .expect("denied");
    assert_eq!(denied["by_command"], "c1");
    assert!(t.of("command")[4]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("enforcement is disabled")));
    let offsets = std::fs::read(t.dir.join(super::inbound::OFFSETS_FILE)).expect("offsets");
    let offsets: serde_json::Value = serde_json::from_slice(&offsets).expect("json");
    assert_eq!(offsets["defense.commands/0"], 5);
    // Every judged message is in the audit chain.
    let n = crate::enforce::audit::verify(&t.dir.join(crate::enforce::audit::FILE))
        .expect("audit intact")
        .records;
    assert!(n >= 5, "{n}");
}
