//! Our records as Elastic Common Schema 8.11 documents: `event.kind` is
//! `alert` for alerts and `event` otherwise, `event.category`/`type` from
//! ECS's allowed values, `process.entity_id` and `process.parent.entity_id`
//! our process GUIDs, `threat.*` the ATT&CK techniques, and the initiator
//! of a connection its `source`.

use serde_json::{json, Map, Value};

use super::{basename, entity_str, entity_u64, Output, PRODUCT, VERSION};
use crate::detect::{Alert, Severity};
use crate::enforce::actions::{Action, ActionState, Verb};
use crate::record::{AuthAttempt, Body, Conn, FileWrite, Flow, ProcessExec, Record};
use crate::response::record::ResponseRecord;

pub const ECS_VERSION: &str = "8.11.0";

/// `out` as an ECS document; None for kinds we send no ECS document for.
pub fn translate(out: &Output<'_>) -> Option<Value> {
    match out {
        Output::Event(r) => event(r),
        Output::Alert(a) => Some(alert(a)),
        Output::Response(ResponseRecord::Action(a)) => Some(action(a)),
        Output::Response(_) | Output::Command(_) | Output::Summary(_) => None,
    }
}

/// The fields every document has.
fn base(
    ts: &str,
    host: &str,
    kind: &str,
    action: &str,
    category: &[&str],
    typ: &[&str],
) -> Map<String, Value> {
    let v = json!({
        "@timestamp": ts,
        "ecs": {"version": ECS_VERSION},
        "host": {"name": host, "hostname": host, "os": {"type": "linux", "family": "linux"}},
        "agent": {"name": PRODUCT, "type": "vigil", "version": VERSION},
        "event": {
            "kind": kind,
            "category": category,
            "type": typ,
            "action": action,
            "module": "vigil",
            "dataset": format!("vigil.{action}"),
        },
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

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
        p.insert("entity_id".into(), g.into());
    }
    let exe = exe.filter(|e| !e.is_empty());
    match (comm.filter(|c| !c.is_empty()), exe) {
        (Some(c), _) => {
            p.insert("name".into(), c.into());
        }
        (None, Some(e)) => {
            p.insert("name".into(), basename(e).into());
        }
        (None, None) => {}
    }
    if let Some(e) = exe {
        p.insert("executable".into(), e.into());
    }
    p
}

fn with_parent(
    mut p: Map<String, Value>,
    ppid: Option<u32>,
    guid: Option<&str>,
    exe: Option<&str>,
) -> Value {
    let par = process(ppid.filter(|&p| p != 0), guid, None, exe);
    if !par.is_empty() {
        p.insert("parent".into(), Value::Object(par));
    }
    Value::Object(p)
}

fn event(r: &Record) -> Option<Value> {
    let guid = r.guid.as_deref();
    let parent_guid = r.parent_guid.as_deref();
    let kind = r.body.kind();
    Some(Value::Object(match &r.body {
        Body::ProcessExec(e) => exec(r, e),
        Body::ProcessFork(f) => {
            let mut m = base(&r.ts, &r.host, "event", kind, &["process"], &["start"]);
            let p = process(Some(f.pid), guid, None, None);
            m.insert(
                "process".into(),
                with_parent(p, Some(f.ppid), parent_guid, None),
            );
            m
        }
        Body::ProcessExit(e) => {
            let mut m = base(&r.ts, &r.host, "event", kind, &["process"], &["end"]);
            let mut p = process(Some(e.pid), guid, Some(&e.comm), e.exe.as_deref());
            if let Some(code) = e.exit_code {
                p.insert("exit_code".into(), code.into());
            }
            m.insert("process".into(), with_parent(p, None, parent_guid, None));
            if let Some(sig) = e.signal {
                m.insert("message".into(), format!("killed by signal {sig}").into());
            }
            m
        }
        Body::NetConnect(c) => conn(r, c, &["connection", "start"], Some(false), None),
        Body::NetAccept(c) => conn(r, c, &["connection", "start"], Some(true), None),
        Body::NetClose(c) => conn(r, c, &["connection", "end"], None, None),
        Body::NetConnectFailed(c) => conn(r, c, &["connection"], Some(false), Some("failure")),
        Body::NetRefused(c) => conn(r, c, &["connection", "denied"], Some(true), Some("failure")),
        Body::AuthAttempt(a) => auth(r, a),
        Body::FileWrite(w) => file_write(r, w),
        Body::Flow(f) => flow(r, f),
        Body::AgentStart(_) | Body::AgentStats(_) | Body::AgentStop(_) | Body::Inventory(_) => {
            return None
        }
    }))
}

fn exec(r: &Record, e: &ProcessExec) -> Map<String, Value> {
    let mut m = base(
        &r.ts,
        &r.host,
        "event",
        "process_exec",
        &["process"],
        &["start"],
    );
    let mut p = process(Some(e.pid), r.guid.as_deref(), Some(&e.comm), Some(&e.exe));
    p.insert("args".into(), json!(e.argv));
    p.insert("args_count".into(), e.argv.len().into());
    p.insert("command_line".into(), e.argv.join(" ").into());
    if let Some(cwd) = &e.cwd {
        p.insert("working_directory".into(), cwd.as_str().into());
    }
    // The kernel reports the real ids.
    p.insert("real_user".into(), json!({"id": e.uid.to_string()}));
    p.insert("real_group".into(), json!({"id": e.gid.to_string()}));
    let mut p = with_parent(
        p,
        Some(e.ppid),
        r.parent_guid.as_deref(),
        e.parent_exe.as_deref(),
    );
    if let (Some(cl), Some(Value::Object(par))) = (&e.parent_cmdline, p.get_mut("parent")) {
        par.insert("command_line".into(), cl.as_ref().into());
    }
    m.insert("process".into(), p);
    m.insert("user".into(), json!({"id": e.uid.to_string()}));
    let mut file = json!({"path": &e.exe, "name": basename(&e.exe)});
    if let Some(id) = &e.exe_file {
        file["inode"] = id.ino.to_string().into();
        file["device"] = id.dev.to_string().into();
    }
    m.insert("file".into(), file);
    m
}

fn ip_type(ip: &std::net::IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ipv4"
    } else {
        "ipv6"
    }
}

/// Network fields; `inbound` None when the direction is unknown (then the
/// local end is `source`).
fn network(
    m: &mut Map<String, Value>,
    local: (std::net::IpAddr, u16),
    remote: (std::net::IpAddr, u16),
    proto: &str,
    community_id: &str,
    inbound: Option<bool>,
) {
    let ep = |(ip, port): (std::net::IpAddr, u16)| json!({"ip": ip.to_string(), "port": port});
    let (src, dst) = if inbound == Some(true) {
        (remote, local)
    } else {
        (local, remote)
    };
    m.insert("source".into(), ep(src));
    m.insert("destination".into(), ep(dst));
    let mut net = json!({
        "transport": proto,
        "type": ip_type(&local.0),
        "community_id": community_id,
    });
    match inbound {
        Some(true) => net["direction"] = "ingress".into(),
        Some(false) => net["direction"] = "egress".into(),
        None => {}
    }
    m.insert("network".into(), net);
    m.insert(
        "related".into(),
        json!({"ip": [local.0.to_string(), remote.0.to_string()]}),
    );
}

fn conn(
    r: &Record,
    c: &Conn,
    typ: &[&str],
    inbound: Option<bool>,
    outcome: Option<&str>,
) -> Map<String, Value> {
    let mut m = base(&r.ts, &r.host, "event", r.body.kind(), &["network"], typ);
    if let Some(o) = outcome {
        m["event"]["outcome"] = o.into();
    }
    network(
        &mut m,
        (c.src_ip, c.src_port),
        (c.dst_ip, c.dst_port),
        c.proto,
        &c.community_id,
        inbound,
    );
    let p = process(c.pid, r.guid.as_deref(), Some(&c.comm), c.exe.as_deref());
    if !p.is_empty() {
        m.insert(
            "process".into(),
            with_parent(p, None, r.parent_guid.as_deref(), None),
        );
    }
    if let Some(uid) = c.uid {
        m.insert("user".into(), json!({"id": uid.to_string()}));
    }
    if let Some(state) = c.old_state {
        m.insert("message".into(), format!("left {state}").into());
    }
    m
}

fn flow(r: &Record, f: &Flow) -> Map<String, Value> {
    let mut m = base(
        &r.ts,
        &r.host,
        "event",
        "flow",
        &["network"],
        &["connection", "end"],
    );
    let inbound = f.direction != "outbound";
    network(
        &mut m,
        (f.src_ip, f.src_port),
        (f.dst_ip, f.dst_port),
        f.proto,
        &f.community_id,
        Some(inbound),
    );
    // source/destination hold the initiator and the responder.
    let (sb, sp, db, dp) = if inbound {
        (f.bytes_in, f.packets_in, f.bytes_out, f.packets_out)
    } else {
        (f.bytes_out, f.packets_out, f.bytes_in, f.packets_in)
    };
    m["source"]["bytes"] = sb.into();
    m["source"]["packets"] = sp.into();
    m["destination"]["bytes"] = db.into();
    m["destination"]["packets"] = dp.into();
    m["network"]["bytes"] = (sb + db).into();
    m["network"]["packets"] = (sp + dp).into();
    let duration_ns = (f.duration_ms.max(0.0) * 1e6) as i64;
    m["event"]["duration"] = duration_ns.into();
    m["event"]["reason"] = f.end_reason.into();
    let start_ns = r.wall_ns - duration_ns;
    m["event"]["start"] = crate::util::clock::rfc3339_ns(start_ns).into();
    m["event"]["end"] = r.ts.as_str().into();
    if f.pid.is_some() || f.exe.is_some() {
        let p = process(
            f.pid,
            r.guid.as_deref(),
            f.comm.as_deref(),
            f.exe.as_deref(),
        );
        m.insert(
            "process".into(),
            with_parent(p, None, r.parent_guid.as_deref(), None),
        );
    }
    m
}

fn auth(r: &Record, a: &AuthAttempt) -> Map<String, Value> {
    let mut m = base(
        &r.ts,
        &r.host,
        "event",
        "auth_attempt",
        &["authentication"],
        &["start"],
    );
    m["event"]["outcome"] = if a.result == "success" {
        "success"
    } else {
        "failure"
    }
    .into();
    m["event"]["code"] = a.code.to_string().into();
    if let Some(user) = &a.user {
        m.insert("user".into(), json!({"name": user}));
    }
    if let Some(service) = &a.service {
        m.insert("service".into(), json!({"name": service}));
    }
    // Only a trusted attempt's remote address is believed (record.rs).
    if let Some(peer) = a.peer {
        m.insert("source".into(), json!({"ip": peer.to_string()}));
        m.insert("related".into(), json!({"ip": [peer.to_string()]}));
    } else if let Some(rhost) = a.rhost.as_deref().filter(|h| !h.is_empty()) {
        m.insert("labels".into(), json!({"rhost_unverified": rhost}));
    }
    let mut p = process(
        Some(a.pid),
        r.guid.as_deref(),
        Some(&a.comm),
        a.exe.as_deref(),
    );
    p.insert("real_user".into(), json!({"id": a.uid.to_string()}));
    m.insert(
        "process".into(),
        with_parent(p, None, r.parent_guid.as_deref(), None),
    );
    m
}

fn file_write(r: &Record, w: &FileWrite) -> Map<String, Value> {
    let mut m = base(
        &r.ts,
        &r.host,
        "event",
        "file_write",
        &["file"],
        &["change"],
    );
    let dir = w
        .path
        .rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d });
    let mut file = json!({"path": &w.path, "name": basename(&w.path), "type": "file"});
    if let Some(d) = dir {
        file["directory"] = d.into();
    }
    if let Some(id) = &w.file {
        file["inode"] = id.ino.to_string().into();
        file["device"] = id.dev.to_string().into();
    }
    m.insert("file".into(), file);
    let p = process(
        Some(w.pid),
        r.guid.as_deref(),
        Some(&w.comm),
        w.exe.as_deref(),
    );
    m.insert(
        "process".into(),
        with_parent(p, None, r.parent_guid.as_deref(), None),
    );
    m
}

fn severity(s: Severity) -> (u32, &'static str) {
    match s {
        Severity::Info => (1, "info"),
        Severity::Low => (21, "low"),
        Severity::Medium => (47, "medium"),
        Severity::High => (73, "high"),
        Severity::Critical => (99, "critical"),
    }
}

fn alert(a: &Alert) -> Value {
    let mut m = base(
        &a.ts,
        &a.host,
        "alert",
        "alert",
        &["intrusion_detection"],
        &["info"],
    );
    let (sev, sev_name) = severity(a.severity);
    m["event"]["id"] = a.id.as_str().into();
    m["event"]["severity"] = sev.into();
    m["event"]["risk_score"] = ((a.confidence * 100.0).round()).into();
    m["event"]["created"] = a.first_seen.as_str().into();
    m["event"]["reason"] = a.summary.as_str().into();
    m.insert("message".into(), a.summary.as_str().into());
    m.insert(
        "rule".into(),
        json!({"name": a.detector, "ruleset": "vigil", "description": &a.summary}),
    );
    m.insert(
        "labels".into(),
        json!({"severity": sev_name, "count": a.count.to_string()}),
    );
    let mut tech_ids = Vec::new();
    let mut tech_names = Vec::new();
    let mut sub_ids = Vec::new();
    let mut sub_names = Vec::new();
    let mut tactic_ids = Vec::new();
    let mut tactic_names = Vec::new();
    for t in &a.techniques {
        match t.id.split_once('.') {
            Some((parent, _)) => {
                sub_ids.push(t.id);
                sub_names.push(t.name);
                tech_ids.push(parent);
                tech_names.push(
                    crate::detect::attack::find(parent)
                        .map(|p| p.name)
                        .unwrap_or(""),
                );
            }
            None => {
                tech_ids.push(t.id);
                tech_names.push(t.name);
            }
        }
        if let Some((id, name)) = super::tactic(t.tactic) {
            tactic_ids.push(id);
            tactic_names.push(name);
        }
    }
    let mut technique = json!({"id": tech_ids, "name": tech_names});
    if !sub_ids.is_empty() {
        technique["subtechnique"] = json!({"id": sub_ids, "name": sub_names});
    }
    m.insert(
        "threat".into(),
        json!({
            "framework": "MITRE ATT&CK",
            "technique": technique,
            "tactic": {"id": tactic_ids, "name": tactic_names},
        }),
    );
    let e = &a.entities;
    let pid = entity_u64(e, "pid").and_then(|p| u32::try_from(p).ok());
    let mut p = process(pid, entity_str(e, "guid"), None, entity_str(e, "exe"));
    if let Some(argv) = e.get("argv").and_then(|v| v.as_array()) {
        let args: Vec<&str> = argv.iter().filter_map(|a| a.as_str()).collect();
        p.insert("command_line".into(), args.join(" ").into());
        p.insert("args".into(), json!(args));
    }
    if !p.is_empty() {
        let ppid = entity_u64(e, "ppid").and_then(|p| u32::try_from(p).ok());
        m.insert(
            "process".into(),
            with_parent(
                p,
                ppid,
                entity_str(e, "parent_guid"),
                entity_str(e, "parent_exe"),
            ),
        );
    }
    let mut related = Vec::new();
    for (key, field) in [("src_ip", "source"), ("dst_ip", "destination")] {
        if let Some(ip) = entity_str(e, key).filter(|s| s.parse::<std::net::IpAddr>().is_ok()) {
            let mut ep = json!({"ip": ip});
            if key == "dst_ip" {
                if let Some(port) = entity_u64(e, "dst_port") {
                    ep["port"] = port.into();
                }
            }
            m.insert(field.into(), ep);
            related.push(ip);
        }
    }
    if !related.is_empty() {
        m.insert("related".into(), json!({"ip": related}));
    }
    if let (Some(h), Some(p)) = (entity_str(e, "sha256"), m.get_mut("process")) {
        p["hash"] = json!({"sha256": h});
    }
    Value::Object(m)
}

fn action(a: &Action) -> Value {
    let typ: &[&str] = match a.action {
        Verb::Block | Verb::Isolate | Verb::Kill | Verb::Freeze | Verb::Quarantine => &["denied"],
        Verb::Unblock | Verb::Unisolate | Verb::Restore | Verb::Expire => &["allowed"],
        Verb::Step(_) => &["info"],
    };
    let mut m = base(
        &a.ts,
        &a.host,
        "event",
        a.action.as_str(),
        &["intrusion_detection"],
        typ,
    );
    m["event"]["dataset"] = "vigil.action".into();
    m["event"]["id"] = a.id.as_str().into();
    m["event"]["outcome"] = match a.state {
        ActionState::Applied | ActionState::Noop | ActionState::Expired => "success",
        ActionState::Failed | ActionState::Refused => "failure",
        ActionState::DryRun | ActionState::RateLimited => "unknown",
    }
    .into();
    let mut labels = json!({"target": &a.target, "state": a.state.as_str()});
    if let Some(ttl) = a.ttl_s {
        labels["ttl_s"] = ttl.to_string().into();
    }
    if let Some(inc) = &a.incident {
        labels["incident"] = inc.as_str().into();
    }
    m.insert("labels".into(), labels);
    let mut msg = format!("{} {}", a.action, a.target);
    if !a.detail.is_empty() {
        msg.push_str(&format!(": {}", a.detail));
    }
    m.insert("message".into(), msg.into());
    if a.target.parse::<std::net::IpAddr>().is_ok() {
        m.insert("related".into(), json!({"ip": [&a.target]}));
    } else if let Ok(pid) = a.target.parse::<u32>() {
        m.insert("process".into(), json!({"pid": pid}));
    } else if a.target.starts_with('/') {
        m.insert(
            "file".into(),
            json!({"path": &a.target, "name": basename(&a.target)}),
        );
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::format::samples;

    fn by_kind(kind: &str) -> Value {
        samples::translated(kind, translate)
    }

    #[test]
    fn exec_has_entity_ids() {
        let v = by_kind("process_exec");
        assert_eq!(v["process"]["entity_id"], &*samples::guid());
        assert_eq!(
            v["process"]["parent"]["entity_id"],
            &*samples::parent_guid()
        );
        assert_eq!(v["event"]["kind"], "event");
        assert_eq!(v["event"]["category"][0], "process");
        assert_eq!(v["@timestamp"], "2026-12-01T10:00:00.101000000Z");
        assert_eq!(v["ecs"]["version"], "8.11.0");
    }

    #[test]
    fn alert_is_an_alert_with_threat_fields() {
        let v = by_kind("alert");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["threat"]["framework"], "MITRE ATT&CK");
        assert_eq!(v["threat"]["technique"]["id"][0], "T1059");
        assert_eq!(
            v["threat"]["technique"]["subtechnique"]["id"][0],
            "T1059.004"
        );
        assert_eq!(v["threat"]["tactic"]["id"][0], "TA0002");
        assert_eq!(v["process"]["entity_id"], &*samples::guid());
        assert_eq!(v["destination"]["ip"], "203.0.113.7");
    }

    #[test]
    fn connections_carry_community_id_and_the_initiator_as_source() {
        let v = by_kind("net_accept");
        assert_eq!(v["source"]["ip"], "198.51.100.23");
        assert_eq!(v["network"]["direction"], "ingress");
        assert!(v["network"]["community_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("1:")));
        let v = by_kind("flow");
        assert_eq!(v["source"]["bytes"], 2_310);
        assert_eq!(v["network"]["bytes"], 3_332);
    }
}
