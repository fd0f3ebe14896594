//! The real agent writing OCSF and ECS: a real exec, a real TCP connection
//! on loopback and a real reverse-shell alert with its (dry-run) playbook
//! action, and every line the agent wrote meanwhile, validated by the same
//! registry tools as the golden tests (ocsf-emitter 0.3.0, the
//! @elastic/ecs 8.11.5 field set; `cargo xtask setup --test-tools` installs
//! them under target/tools). Also: the process GUID of this test process
//! is the same under both agents (one boot). Run as root with
//! `--test-threads=1`.

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::kafka::{self, Broker};
use vigil_integration::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the format's validator over a file; panics with its report when
/// any line fails; returns how many lines passed.
fn validate(format: &str, path: &Path) -> usize {
    assert!(path.exists(), "nothing to validate at {}", path.display());
    let root = root();
    let out = match format {
        "ocsf" => Command::new(root.join("target/tools/ocsf-venv/bin/python3"))
            .arg(root.join("tools/ocsf_validate.py"))
            .arg(path)
            .output(),
        _ => Command::new("node")
            .arg(root.join("tools/ecs_validate.js"))
            .arg(root.join("target/tools/ecs/node_modules/@elastic/ecs"))
            .arg(path)
            .output(),
    }
    .unwrap_or_else(|e| {
        panic!("cannot run the {format} validator (cargo xtask setup --test-tools): {e}")
    });
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{format} lines the agent wrote are not valid:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report.lines().filter(|l| l.starts_with("ok")).count()
}

/// A playbook answering the reverse shell; the agent's default response
/// mode is dry-run, so its step is recorded, not done.
const PLAYBOOK: &str = "\
version: 1
name: revshell_kill
description: kill a shell whose stdin is a socket
trigger:
  detectors: [process]
  techniques: [T1059.004]
  min_severity: high
steps:
  - id: kill
    action: kill_process
";

/// A uniquely named exec, a loopback connection from this process, and a
/// shell whose stdin is that connection (the process detector's reverse
/// shell).
fn trigger(probe: &Path, listener: &TcpListener, port: u16) {
    let status = Command::new(probe).status().expect("run the probe");
    assert!(status.success());
    let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (_peer, _) = listener.accept().expect("accept");
    let mut shell = Command::new("/bin/sh")
        .args(["-c", "sleep 0.3"])
        .stdin(Stdio::from(OwnedFd::from(conn)))
        .spawn()
        .expect("shell");
    assert!(shell.wait().expect("wait shell").success());
}

type Pred<'a> = (&'static str, &'a dyn Fn(&Value, &str, u16) -> bool);

/// Starts the agent in `format`, and until a line matching each of `want`
/// has appeared: execs a uniquely named binary, connects on loopback and
/// runs a shell whose stdin is that connection. Validates every line the
/// agent wrote; returns the matching lines in `want`'s order.
fn run(format: &str, want: &[Pred<'_>]) -> Vec<Value> {
    let books = TempDir::new("format-books");
    std::fs::write(books.0.join("revshell.yaml"), PLAYBOOK).expect("playbook");
    let config = format!("{TEST_CONFIG}playbooks:\n  dir: {}\n", books.0.display());
    let mut agent = Agent::start_format(&config, format);
    let dir = TempDir::new("format-exec");
    let unique = dir
        .0
        .join(format!("vigil-{format}-probe-{}", std::process::id()));
    std::fs::copy("/bin/true", &unique).expect("copy true");
    let path = unique.to_string_lossy().into_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let found = loop {
        trigger(&unique, &listener, port);
        let lines: Vec<Value> = agent
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let found: Vec<Option<Value>> = want
            .iter()
            .map(|(_, p)| lines.iter().find(|v| p(v, &path, port)).cloned())
            .collect();
        if found.iter().all(Option::is_some) {
            break found.into_iter().flatten().collect::<Vec<_>>();
        }
        let missing: Vec<&str> = want
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|((n, _), _)| *n)
            .collect();
        assert!(
            start.elapsed() < PATIENCE,
            "{format}: no {missing:?} within {PATIENCE:?} (probe {path}, port {port}):\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        agent.stop(),
        "agent did not stop cleanly:\n{}",
        agent.stderr()
    );
    let n = validate(format, &agent.output);
    eprintln!("{format}: {n} lines the agent wrote are valid");
    assert!(n >= want.len(), "{format}: only {n} lines validated");
    found
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a GUID string, got {v}"))
        .to_string()
}

#[test]
fn the_real_agent_writes_valid_ocsf_and_ecs_with_stable_process_guids() {
    let ocsf = run(
        "ocsf",
        &[
            ("exec", &|v, path, _| {
                v["class_uid"] == 1007 && v["activity_id"] == 1 && v["process"]["path"] == path
            }),
            ("connect", &|v, _, port| {
                v["class_uid"] == 4001
                    && v["activity_id"] == 1
                    && v["dst_endpoint"]["port"] == port
                    && v["connection_info"]["direction_id"] == 2
            }),
            ("alert", &|v, _, _| {
                v["class_uid"] == 2004
                    && v["finding_info"]["attacks"][0]["sub_technique"]["uid"] == "T1059.004"
            }),
            ("action", &|v, _, _| {
                v["class_uid"] == 7001 && v["activity_id"] == 2 && v["status_code"] == "dry-run"
            }),
        ],
    );
    let ecs = run(
        "ecs",
        &[
            ("exec", &|v, path, _| {
                v["event"]["action"] == "process_exec" && v["process"]["executable"] == path
            }),
            ("connect", &|v, _, port| {
                v["event"]["action"] == "net_connect" && v["destination"]["port"] == port
            }),
            ("alert", &|v, _, _| {
                v["event"]["kind"] == "alert"
                    && v["threat"]["technique"]["subtechnique"]["id"][0] == "T1059.004"
            }),
            ("action", &|v, _, _| {
                v["event"]["dataset"] == "vigil.action" && v["labels"]["state"] == "dry-run"
            }),
        ],
    );
    // [exec, connect, alert, action]: the probe's parent and the
    // connecting process are this test process.
    let ocsf_ids = (
        text(&ocsf[0]["process"]["uid"]),
        text(&ocsf[0]["process"]["parent_process"]["uid"]),
        text(&ocsf[1]["actor"]["process"]["uid"]),
    );
    let ecs_ids = (
        text(&ecs[0]["process"]["entity_id"]),
        text(&ecs[0]["process"]["parent"]["entity_id"]),
        text(&ecs[1]["process"]["entity_id"]),
    );
    for (name, (child, parent, connector)) in [("ocsf", &ocsf_ids), ("ecs", &ecs_ids)] {
        assert_eq!(parent, connector, "{name}");
        assert_ne!(child, parent, "{name}");
    }
    // The alert names the shell by GUID, and its parent is this process.
    assert_eq!(
        text(&ocsf[2]["evidences"][0]["process"]["parent_process"]["uid"]),
        ocsf_ids.1
    );
    assert_eq!(text(&ecs[2]["process"]["parent"]["entity_id"]), ecs_ids.1);
    // Another agent, the same boot: this process keeps its GUID; the two
    // probes (two processes) do not share one.
    assert_eq!(ocsf_ids.1, ecs_ids.1);
    assert_ne!(ocsf_ids.0, ecs_ids.0);
}

/// With `kafka.format: ocsf` the native topics keep native records (what
/// fusion reads) and the OCSF copy arrives, valid, on `<topic>.ocsf`.
#[test]
fn kafka_format_publishes_an_ocsf_copy_beside_the_native_topics() {
    let broker = Broker::start(19196);
    for t in [
        "security.events.ocsf",
        "defense.alerts.ocsf",
        "defense.actions.ocsf",
    ] {
        kafka::create_topic(&broker.addr(), t);
    }
    let books = TempDir::new("kformat-books");
    std::fs::write(books.0.join("revshell.yaml"), PLAYBOOK).expect("playbook");
    let config = format!(
        "{TEST_CONFIG}playbooks:\n  dir: {}\nkafka:\n  brokers: \"{}\"\n  hmac_key: k\n  format: ocsf\n",
        books.0.display(),
        broker.addr()
    );
    let mut agent = Agent::start_with(&config);
    let dir = TempDir::new("kformat-exec");
    let unique = dir
        .0
        .join(format!("vigil-kformat-probe-{}", std::process::id()));
    std::fs::copy("/bin/true", &unique).expect("copy true");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let alert = loop {
        trigger(&unique, &listener, port);
        if let Some(a) = agent
            .records()
            .into_iter()
            .find(|r| r["kind"] == "alert" && r["detector"] == "process")
        {
            break a;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no reverse shell alert:\n{}",
            agent.stderr()
        );
    };
    let id = alert["id"].as_str().expect("alert id").to_string();
    let read_until = |topic: &str, done: &dyn Fn(&[kafka::Msg]) -> bool| {
        let start = Instant::now();
        loop {
            let msgs = kafka::read_all(&broker.addr(), topic, Duration::from_secs(1));
            if done(&msgs) {
                return msgs;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{topic}: {:?}",
                msgs.iter().map(|m| &m.body).collect::<Vec<_>>()
            );
        }
    };
    // The same alert, native on defense.alerts and OCSF on its copy.
    let native = read_until("defense.alerts", &|m| {
        m.iter().any(|m| m.body["id"] == id.as_str())
    });
    assert!(native.iter().all(|m| m.body["kind"] == "alert"));
    let ocsf_alerts = read_until("defense.alerts.ocsf", &|m| {
        m.iter()
            .any(|m| m.body["finding_info"]["uid"] == id.as_str())
    });
    for m in &ocsf_alerts {
        assert!(!m.key.is_empty());
        let uid = m.body["metadata"]["uid"].as_str();
        assert_eq!(uid, Some(m.id_header.as_str()), "{}", m.body);
    }
    let actions = read_until("defense.actions.ocsf", &|m| {
        m.iter().any(|m| m.body["class_uid"] == 7001)
    });
    let events = read_until("security.events.ocsf", &|m| {
        m.iter().any(|m| m.body["class_uid"] == 1007)
            && m.iter().any(|m| m.body["class_uid"] == 4001)
    });
    let native_events = read_until("security.events", &|m| {
        m.iter().any(|m| m.body["kind"] == "agent_start")
    });
    assert!(native_events.iter().all(|m| m.body["kind"].is_string()));
    assert!(
        agent.stop(),
        "agent did not stop cleanly:\n{}",
        agent.stderr()
    );
    let copy: Vec<String> = [ocsf_alerts, actions, events]
        .iter()
        .flatten()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .collect();
    let path = dir.0.join("kafka-ocsf.jsonl");
    std::fs::write(&path, copy.join("\n") + "\n").expect("write copy");
    let n = validate("ocsf", &path);
    eprintln!("kafka ocsf copy: {n} messages valid");
    assert_eq!(n, copy.len());
}
