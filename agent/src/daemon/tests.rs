//! The agent's state logic without root: the record path, flow tracking,
//! control calls and fleet messages, on a plain table instead of kernel
//! maps and a memory sink instead of files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use agent_common::{EventKind, FlowStats};

use super::agent::{Agent, AlertFeed, Baselines, Fleet, HostResponse};
use super::flows::tests::Table;
use super::flows::{flow_key, FlowTracker};
use super::inbound::SUMMARY_EVERY_S;
use crate::config::Config;
use crate::pipeline::decode::fixtures;
use crate::pipeline::proc_cache::ProcessCache;
use crate::pipeline::Pipeline;
use crate::response::engine::{Limits, Responder};
use crate::response::playbook::{self, Mode};
use crate::response::protect::Protection;
use crate::service::control::{Call, Request, Response};
use crate::sink::kafka::commands::sign;
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
    agent_with(name, playbooks, mode, |_| {})
}

/// As [`agent`], with the config changed by `tune` first.
fn agent_with(
    name: &str,
    playbooks: &[(&str, &str)],
    mode: Mode,
    tune: impl FnOnce(&mut Config),
) -> Test {
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
    tune(&mut cfg);
    let lines = Arc::new(Mutex::new(Vec::new()));
    Test {
        agent: build(cfg, lines.clone()),
        lines,
        dir,
    }
}

/// The agent as `start` wires it (without the kernel), restoring what an
/// earlier run saved in the state directory.
fn build(cfg: Config, lines: Arc<Mutex<Vec<serde_json::Value>>>) -> Agent {
    let host: Arc<str> = Arc::from("test-host");
    let mut agent = Agent {
        pipeline: Pipeline::new(host.clone(), Clock::new(), ProcessCache::new(1024)),
        sinks: Sinks::new(vec![Box::new(Memory(lines))]),
        kernel: Box::new(Table::default()),
        flows: FlowTracker::new(cfg.flows.clone()),
        engine: crate::detect::config::engine(&cfg.detect),
        response: HostResponse {
            responder: Responder::new(
                playbook::load_dir(&cfg.playbooks.dir).expect("playbooks"),
                cfg.response.mode,
                Limits {
                    max_actions_per_minute: 30,
                    max_concurrent_blocks: 1000,
                    max_pending_approvals: 256,
                },
            ),
            containment: None,
            state_dir: cfg.state_dir.clone(),
            host,
            protection: Protection::new(cfg.response.protected_prefixes.clone()),
            quarantine_max_bytes: 1 << 20,
            unsaved: false,
        },
        alerts: AlertFeed::new(),
        fleet: Fleet::new(&cfg),
        metrics: None,
        probes: Vec::new(),
        metric_ticks: 0,
        baselines: Baselines::default(),
        event_counters: Default::default(),
        cfg,
    };
    agent.response.restore();
    agent.restore_fleet();
    agent.load_baselines();
    agent
}

/// Stops `t` as shutdown does and starts a new agent on its state
/// directory (its outputs start empty).
fn restart(mut t: Test) -> Test {
    t.agent.persist();
    let dir = std::mem::take(&mut t.dir);
    let cfg = t.agent.cfg.clone();
    drop(t);
    let lines = Arc::new(Mutex::new(Vec::new()));
    Test {
        agent: build(cfg, lines.clone()),
        lines,
        dir,
    }
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

/// Six wrong passwords from one address sshd accepted: a brute-force alert.
fn brute_force(t: &mut Test) {
    for r in fixtures::sshd_session([198, 51, 100, 7]) {
        t.agent.on_ring_record(&r);
    }
    for _ in 0..6 {
        t.agent
            .on_ring_record(&fixtures::auth(300, 7, "root", "198.51.100.7"));
    }
}

#[test]
fn alerts_name_their_process_and_its_parent_by_guid() {
    let mut t = agent("guid", &[], Mode::DryRun);
    t.agent
        .on_ring_record(&fixtures::exec(300, 1, "/bin/bash", &["bash"]));
    t.agent.on_ring_record(&fixtures::fork(300, 301));
    t.agent
        .on_ring_record(&fixtures::exec(301, 300, "/memfd:x (deleted)", &["x"]));
    let execs = t.of("process_exec");
    let alert = t.of("alert").pop().expect("a memfd alert");
    assert!(execs[1]["guid"].is_string(), "{}", execs[1]);
    assert_eq!(alert["entities"]["pid"], 301);
    assert_eq!(alert["entities"]["guid"], execs[1]["guid"]);
    assert_eq!(alert["entities"]["parent_guid"], execs[0]["guid"]);
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
fn a_close_carrying_its_flow_is_emitted_at_once_with_its_owner() {
    let mut t = agent("closeflow", &[], Mode::DryRun);
    for r in fixtures::sshd_accepts() {
        t.agent.on_ring_record(&r);
    }
    t.agent.on_ring_record(&fixtures::close_flow(
        [10, 0, 0, 1],
        22,
        [10, 0, 0, 9],
        5555,
        4,
        900,
    ));
    assert_eq!(t.of("net_close").len(), 1);
    let flows = t.of("flow");
    assert_eq!(flows.len(), 1, "no linger: the kernel already took it");
    assert_eq!(flows[0]["end_reason"], "close");
    assert_eq!(flows[0]["direction"], "inbound");
    assert_eq!(flows[0]["exe"], "/usr/sbin/sshd");
    assert_eq!(flows[0]["bytes_in"], 900);
    assert!(!t.agent.flows.has_closes(), "nothing left to look up");
    assert_eq!(t.agent.stats().flows_emitted, 1);
    assert_eq!(t.agent.stats().events["net_close"], 1);
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
        key: String::new(),
        payload: body.as_bytes().to_vec(),
        hmac: key.map(|k| sign(k.as_bytes(), body.as_bytes()).into_bytes()),
        tombstone: false,
        ts_header: None,
        too_large: None,
    }
}

/// A tombstone on `threat.enriched` for `indicator`, issued at `ts` and
/// signed with `key`.
fn lift(offset: i64, indicator: &str, ts: i64, key: &str) -> Inbound {
    let body = crate::sink::kafka::commands::tombstone_body(indicator, ts);
    Inbound {
        topic: "threat.enriched".into(),
        partition: 0,
        offset,
        key: indicator.into(),
        payload: Vec::new(),
        hmac: Some(sign(key.as_bytes(), &body).into_bytes()),
        tombstone: true,
        ts_header: Some(ts),
        too_large: None,
    }
}

#[test]
fn fleet_decisions_are_taken_once_simulated_ones_only_recorded_and_lifts_checked() {
    let mut t = agent("decisions", &[], Mode::Enforce);
    let topic = "threat.enriched";
    let decision = |id: &str, ip: &str, ts: i64, ttl: u64, action: &str| {
        serde_json::json!({"id": id, "ts": ts, "indicator": ip, "ttl_s": ttl, "action": action})
            .to_string()
    };
    let now = now_s();
    // Simulated: recorded, nothing enforced.
    let sim = decision("d1", "203.0.113.9", now, 3600, "would_block");
    t.agent.on_inbound(inbound(topic, 0, &sim, Some(KEY)));
    // Read again (a restart re-reads the compacted topic): passed over.
    t.agent.on_inbound(inbound(topic, 1, &sim, Some(KEY)));
    // Lapsed already: passed over without a record.
    let old = decision("d0", "198.51.100.1", now - 7200, 3600, "block");
    t.agent.on_inbound(inbound(topic, 2, &old, Some(KEY)));
    // A block: this agent (enforce mode) has enforcement off, so it is
    // refused, with why.
    let blk = decision("d2", "198.51.100.2", now, 3600, "block");
    t.agent.on_inbound(inbound(topic, 3, &blk, Some(KEY)));
    // An executable's hash has nothing to block in the network.
    let sha = decision(
        "d3",
        &format!("sha256:{}", "ab".repeat(32)),
        now,
        3600,
        "block",
    );
    t.agent.on_inbound(inbound(topic, 4, &sha, Some(KEY)));
    // Unsigned: counted, not recorded.
    t.agent.on_inbound(inbound(topic, 5, &blk, None));
    let cmds: Vec<(String, String)> = t
        .of("command")
        .iter()
        .map(|c| {
            (
                c["message_id"].as_str().unwrap_or("").to_string(),
                c["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        cmds,
        [
            ("d1".to_string(), "simulated".to_string()),
            ("d2".to_string(), "refused".to_string())
        ]
    );
    assert!(t.agent.fleet.applied.contains_key("203.0.113.9"));
    // A forged lift, and one older than the decision, change nothing.
    t.agent
        .on_inbound(lift(6, "203.0.113.9", now + 1, "wrong-key"));
    t.agent.on_inbound(lift(7, "203.0.113.9", now - 1, KEY));
    assert!(t.agent.fleet.applied.contains_key("203.0.113.9"));
    // A fresh signed lift takes it out.
    t.agent.on_inbound(lift(8, "203.0.113.9", now + 1, KEY));
    assert!(!t.agent.fleet.applied.contains_key("203.0.113.9"));
    assert_eq!(
        t.of("command").last().expect("lift")["message_id"],
        "lift:d1"
    );
    // The applied decisions survive a restart.
    let saved = std::fs::read(t.dir.join(super::decisions::APPLIED_FILE)).expect("saved");
    let saved: serde_json::Value = serde_json::from_slice(&saved).expect("json");
    assert!(saved.as_object().is_some_and(|o| o.is_empty()), "{saved}");
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
    // Unsigned and forged messages get no record each; the signed ones do.
    assert_eq!(
        results,
        [
            ("executed".to_string(), "c1".to_string()),
            ("refused".to_string(), "c1".to_string()),
            ("refused".to_string(), "c2".to_string()),
        ]
    );
    let denied = t
        .of("decision")
        .into_iter()
        .find(|d| d["decision"] == "denied")
        .expect("denied");
    assert_eq!(denied["by_command"], "c1");
    assert!(t.of("command")[1]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("replay")));
    assert!(t.of("command")[2]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("enforcement is disabled")));
    // The first unauthenticated message is summarised at once, the next
    // one with the following summary.
    let summaries = t.of("command_summary");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0]["refused"], 1);
    assert_eq!(summaries[0]["counts"][0]["reason"], "unsigned");
    t.agent
        .summarise_refusals(super::agent::wall_s() + SUMMARY_EVERY_S, false);
    let summaries = t.of("command_summary");
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert_eq!(summaries[1]["counts"][0]["reason"], "forged");
    let offsets = std::fs::read(t.dir.join(super::inbound::OFFSETS_FILE)).expect("offsets");
    let offsets: serde_json::Value = serde_json::from_slice(&offsets).expect("json");
    assert_eq!(offsets["defense.commands/0"], 5);
    // Every judged message and every summary is in the audit chain.
    let n = crate::enforce::audit::verify(&t.dir.join(crate::enforce::audit::FILE))
        .expect("audit intact")
        .records;
    assert!(n >= 5, "{n}");
}

/// Lines of the audit log.
fn audit_lines(t: &Test) -> usize {
    std::fs::read_to_string(t.dir.join(crate::enforce::audit::FILE))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_flood_of_junk_is_counted_and_summarised_not_recorded_one_by_one() {
    let mut t = agent("junk", &[], Mode::Enforce);
    let topic = "defense.commands";
    let body = format!(
        r#"{{"id":"j","ts":{},"cmd":"unblock","target":"203.0.113.9"}}"#,
        now_s()
    );
    for i in 0..3000 {
        let m = match i % 3 {
            0 => inbound(topic, i, &body, None),
            1 => inbound(topic, i, &body, Some("wrong-key")),
            _ => inbound("threat.enriched", i, "{not json", Some(KEY)),
        };
        t.agent.on_inbound(m);
    }
    assert!(t.of("command").is_empty(), "junk was recorded one by one");
    assert_eq!(t.of("command_summary").len(), 1);
    assert!(
        audit_lines(&t) <= 1,
        "the audit log grew with the junk: {} lines",
        audit_lines(&t)
    );
    // A minute later, one more summary carries the rest, by reason.
    t.agent
        .summarise_refusals(super::agent::wall_s() + SUMMARY_EVERY_S, false);
    let summaries = t.of("command_summary");
    assert_eq!(summaries.len(), 2);
    let total: u64 = summaries
        .iter()
        .map(|s| s["refused"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 3000);
    let reasons: Vec<&str> = summaries[1]["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(|c| c["reason"].as_str())
        .collect();
    for r in ["unsigned", "forged", "malformed"] {
        assert!(reasons.contains(&r), "{reasons:?}");
    }
    assert_eq!(audit_lines(&t), 2);
    // The offsets of junk are saved by housekeeping, not one sync each.
    assert!(!t.dir.join(super::inbound::OFFSETS_FILE).exists());
    t.agent.housekeeping();
    let offsets = std::fs::read(t.dir.join(super::inbound::OFFSETS_FILE)).expect("offsets");
    let offsets: serde_json::Value = serde_json::from_slice(&offsets).expect("json");
    assert_eq!(offsets["defense.commands/0"], 2999);
}

fn signed(id: &str, cmd: serde_json::Value) -> String {
    let mut cmd = cmd;
    cmd["id"] = id.into();
    cmd["ts"] = now_s().into();
    cmd.to_string()
}

#[test]
fn a_replay_is_refused_after_a_restart() {
    let mut t = agent("replay", &[], Mode::Enforce);
    let topic = "defense.commands";
    let cmd = signed(
        "c-restart",
        serde_json::json!({"cmd": "unblock", "target": "203.0.113.9"}),
    );
    t.agent.on_inbound(inbound(topic, 0, &cmd, Some(KEY)));
    let first = t.of("command");
    assert_eq!(first.len(), 1);
    assert!(
        !first[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("replay")),
        "{first:?}"
    );
    let mut t = restart(t);
    t.agent.on_inbound(inbound(topic, 1, &cmd, Some(KEY)));
    let again = t.of("command");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["result"], "refused");
    assert!(
        again[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("replay")),
        "a replay after a restart was not refused: {again:?}"
    );
    // Ids older than the age limit are not kept: they fail the age check.
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(t.dir.join(super::inbound::SEEN_FILE)).expect("seen ids"),
    )
    .expect("json");
    assert!(saved["ids"]["c-restart"].is_i64(), "{saved}");
    let mut v = crate::sink::kafka::commands::Verifier::new(KEY, 300);
    v.restore_seen(
        serde_json::from_value(saved).expect("seen ids"),
        now_s() + 301,
    );
    assert_eq!(v.seen_len(), 0);
}

#[test]
fn fleet_blocks_broader_or_longer_than_the_caps_are_refused() {
    let mut t = agent("caps", &[], Mode::Enforce);
    let topic = "defense.commands";
    for (i, (id, target, ttl)) in [
        ("wide", "128.0.0.0/1", 60u64),
        ("wide6", "2000::/3", 60),
        ("long", "203.0.113.9", u64::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let cmd = signed(
            id,
            serde_json::json!({"cmd": "block", "target": target, "ttl_s": ttl}),
        );
        t.agent
            .on_inbound(inbound(topic, i as i64, &cmd, Some(KEY)));
    }
    let ioc = format!(
        r#"{{"id":"ioc-wide","ts":{},"indicator":"10.0.0.0/8","ttl_s":60}}"#,
        now_s()
    );
    t.agent
        .on_inbound(inbound("threat.enriched", 0, &ioc, Some(KEY)));
    let details: Vec<String> = t
        .of("command")
        .iter()
        .map(|c| c["detail"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(details.len(), 4);
    assert!(details[0].contains("broader than /16"), "{details:?}");
    assert!(details[1].contains("broader than /32"), "{details:?}");
    assert!(details[2].contains("max_ttl_s"), "{details:?}");
    assert!(details[3].contains("broader than /16"), "{details:?}");
}

#[test]
fn commands_have_their_own_rate_budget() {
    let mut t = agent_with("budget", &[], Mode::Enforce, |c| {
        c.kafka.max_commands_per_minute = 3;
    });
    let topic = "defense.commands";
    for i in 0..8 {
        let cmd = signed(
            &format!("r{i}"),
            serde_json::json!({"cmd": "unblock", "target": "203.0.113.9"}),
        );
        t.agent.on_inbound(inbound(topic, i, &cmd, Some(KEY)));
    }
    let cmds = t.of("command");
    let limited = |c: &&serde_json::Value| {
        c["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_commands_per_minute"))
    };
    // Three ran (and failed: no enforcement here), three were refused one
    // by one, the last two only counted.
    assert_eq!(cmds.len(), 6, "{cmds:?}");
    assert_eq!(cmds.iter().filter(limited).count(), 3);
    assert!(cmds[..3].iter().all(|c| !limited(&c)));
    t.agent
        .summarise_refusals(super::agent::wall_s() + SUMMARY_EVERY_S, false);
    let summary = t.of("command_summary");
    assert!(summary
        .iter()
        .all(|s| s["counts"][0]["reason"] == "rate_limited"));
    let counted: u64 = summary
        .iter()
        .map(|s| s["refused"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, 2);
    // A rate-limited id was never executed: it may run once there is room.
    assert!(t
        .agent
        .fleet
        .verifier
        .check_fresh("r5", now_s(), now_s())
        .is_ok());
}

/// The anomaly alerts `x` raises in `t`'s detectors.
fn anomaly_scores(t: &mut Test, x: [f64; 16], now: f64) -> Vec<f64> {
    let host: Arc<str> = Arc::from("test-host");
    t.agent
        .engine
        .as_mut()
        .expect("detectors")
        .on_record(
            now,
            "t",
            &host,
            &crate::detect::anomaly::flow_with_features(x),
        )
        .iter()
        .filter(|a| a.detector == "anomaly")
        .filter_map(|a| a.evidence["score"].as_f64())
        .collect()
}

#[test]
fn a_restarted_agent_reloads_the_trained_baseline() {
    use crate::detect::iforest::planted;
    let mut t = agent_with("baseline", &[], Mode::DryRun, |c| {
        c.detect.anomaly.learn_flows = 400;
        c.detect.anomaly.n_trees = 30;
    });
    let (data, _) = planted(400, 0, 16, 11);
    let row = |i: usize| {
        let mut x = [0.0; 16];
        for (j, v) in x.iter_mut().enumerate() {
            *v = data[[i, j]];
        }
        x
    };
    for i in 0..400 {
        assert!(anomaly_scores(&mut t, row(i), i as f64).is_empty());
    }
    let mut odd = row(0);
    for v in odd.iter_mut() {
        *v += 9.0;
    }
    let before = anomaly_scores(&mut t, odd, 500.0);
    assert_eq!(
        before.len(),
        1,
        "the trained model does not flag the outlier"
    );
    // Saved by housekeeping (and at shutdown), atomically.
    t.agent.housekeeping();
    let path = t.dir.join(crate::detect::anomaly::STATE_FILE);
    assert!(path.exists(), "the baseline was not written");
    let mut t = restart(t);
    let after = anomaly_scores(&mut t, odd, 501.0);
    assert_eq!(after, before, "the restarted agent scores differently");
    // A corrupt baseline is moved aside and the detector learns afresh.
    std::fs::write(&path, b"{\"forest\": 1}").expect("corrupt");
    let mut t = restart(t);
    assert!(!path.exists());
    assert!(std::fs::read_dir(&t.dir).expect("ls").flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with("iforest.json.corrupt-")));
    assert!(
        anomaly_scores(&mut t, odd, 502.0).is_empty(),
        "learning afresh, nothing is scored yet"
    );
}

#[test]
fn a_corrupt_response_state_is_moved_aside_and_the_agent_starts_empty() {
    let t = agent("corrupt-response", &[], Mode::DryRun);
    let path = t.dir.join(super::agent::RESPONSE_STATE);
    std::fs::write(&path, b"{\"incidents\": [").expect("corrupt");
    let mut t = restart(t);
    assert!(!path.exists(), "the corrupt file was left in place");
    assert!(std::fs::read_dir(&t.dir).expect("ls").flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with("response.json.corrupt-")));
    let resp = call(&mut t, Request::Incidents);
    assert!(resp.ok && resp.data.as_array().is_some_and(Vec::is_empty));
}

#[test]
fn a_dry_run_agent_only_records_the_fleets_decisions() {
    let mut t = agent("decisions-dry", &[], Mode::DryRun);
    let d = serde_json::json!({"id": "d9", "ts": now_s(), "indicator": "198.51.100.9",
        "ttl_s": 600, "action": "block"})
    .to_string();
    t.agent
        .on_inbound(inbound("threat.enriched", 0, &d, Some(KEY)));
    let c = t.of("command").pop().expect("recorded");
    assert_eq!(c["result"], "simulated");
    assert!(
        c["detail"].as_str().is_some_and(|d| d.contains("dry-run")),
        "{c}"
    );
    assert!(t.of("action").is_empty());
}

#[test]
fn an_oversized_fleet_message_is_refused_unread_and_read_past() {
    let mut t = agent("oversized", &[], Mode::Enforce);
    // What the consumer hands on for a message over the limit: no body.
    let mut m = inbound("defense.commands", 0, "", None);
    m.too_large = Some(900 * 1024);
    t.agent.on_inbound(m);
    let summaries = t.of("command_summary");
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0]["counts"][0]["reason"], "too_large");
    assert!(t.of("command").is_empty());
    assert_eq!(
        t.agent.fleet.offsets.get("defense.commands/0").copied(),
        Some(1)
    );
}
