//! Cost of writing telemetry records as native JSON lines: per record kind,
//! the serialisation alone (`Output::to_json`) and the whole sink path
//! (`Sinks::emit` into a JSON lines sink writing to /dev/null-like
//! `io::sink`, so its batching and backlog are in). The records are the
//! ones a short-connection storm makes: connects, accepts, closes and flows
//! with every field set, and an exec with its argv. Times are CPU time of
//! the measuring thread (the machine may be shared), best of five passes.
//! Reports figures; never fails on time.

mod common;
use common::thread_cpu_s;

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use vigil::pipeline::community_id::community_id;
use vigil::pipeline::guid::Guids;
use vigil::record::{self, Body, FileId, Record};
use vigil::sink::jsonl::JsonLines;
use vigil::sink::{Output, Sinks};

/// Records serialised per pass and kind.
const N: usize = 200_000;
const PASSES: usize = 5;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn guids() -> Guids {
    Guids::new("5f0c6e1a-8d2b-4c47-9a51-3e7d2b9c0f14")
}

fn rec(body: Body, process: bool) -> Record {
    Record {
        body,
        guid: process.then(|| guids().guid(23_456, 18_234_567)),
        parent_guid: process.then(|| guids().guid(23_400, 18_200_000)),
        ts: "2026-12-01T10:00:00.123456Z".into(),
        host: Arc::from("web-1.prod.example.internal"),
        wall_ns: 1_796_119_200_123_456_000,
    }
}

fn conn(local: u16, old_state: Option<&'static str>) -> record::Conn {
    let (src, dst) = (ip("10.20.30.140"), ip("10.20.31.251"));
    record::Conn {
        pid: Some(23_456),
        comm: "curl".into(),
        exe: Some(Arc::from("/usr/bin/curl")),
        uid: Some(1000),
        proto: "tcp",
        src_ip: src,
        src_port: local,
        dst_ip: dst,
        dst_port: 8443,
        community_id: community_id(0, 6, src, local, dst, 8443),
        old_state,
    }
}

fn flow() -> record::Flow {
    let (src, dst) = (ip("10.20.30.140"), ip("10.20.31.251"));
    record::Flow {
        community_id: community_id(0, 6, src, 51_234, dst, 8443),
        proto: "tcp",
        direction: "outbound",
        src_ip: src,
        src_port: 51_234,
        dst_ip: dst,
        dst_port: 8443,
        pid: Some(23_456),
        comm: Some(Arc::from("curl")),
        exe: Some(Arc::from("/usr/bin/curl")),
        packets_out: 7,
        packets_in: 6,
        bytes_out: 913,
        bytes_in: 4_211,
        duration_ms: 1.873_214,
        syn: 1,
        rst: 0,
        fin: 2,
        end_reason: "close",
        // What the pipeline computes for such a flow: mostly non-integers.
        features: [
            1.873_214,
            7.0,
            6.0,
            913.0,
            4_211.0,
            0.178_161_592_505_854_8,
            130.428_571_428_571_43,
            171.327_804_186_930_68,
            701.833_333_333_333_4,
            512.094_771_313_457,
            0.156_101_166_666_666_66,
            0.873_011_914_284_215,
            -0.067_822_153_044_839_1,
            0.612_007,
            0.076_923_076_923_076_92,
            0.0,
        ],
    }
}

fn exec() -> record::ProcessExec {
    record::ProcessExec {
        pid: 23_456,
        ppid: 23_400,
        uid: 1000,
        gid: 1000,
        comm: "curl".into(),
        exe: "/usr/bin/curl".into(),
        argv: [
            "curl",
            "-s",
            "-H",
            "Accept: application/json",
            "https://api.example.internal:8443/v1/items?page=2",
        ]
        .map(String::from)
        .to_vec(),
        argv_truncated: false,
        cgroup_id: 7_321,
        stdio_socket: None,
        parent_exe: Some(Arc::from("/usr/bin/bash")),
        parent_cmdline: Some(Arc::from("/bin/bash /opt/app/poll.sh")),
        cwd: Some("/opt/app".into()),
        auid: Some(1000),
        start_time: Some(18_234_567),
        exe_file: Some(FileId {
            dev: 2049,
            ino: 1_311_042,
            generation: Some(3_771_234_567),
        }),
        script_file: None,
        file_owner: None,
        exe_arg: None,
    }
}

/// Best CPU ns per call of `f` over `PASSES` passes of `N` calls.
fn ns_per(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..PASSES {
        let t = thread_cpu_s();
        for _ in 0..N {
            f();
        }
        best = best.min(thread_cpu_s() - t);
    }
    best / N as f64 * 1e9
}

fn main() {
    let cases: Vec<(&str, Vec<Record>)> = vec![
        (
            "net_connect",
            vec![rec(Body::NetConnect(conn(51_234, None)), true)],
        ),
        (
            "net_accept",
            vec![rec(Body::NetAccept(conn(51_234, None)), true)],
        ),
        (
            "net_close",
            vec![rec(Body::NetClose(conn(51_234, Some("established"))), true)],
        ),
        ("flow", vec![rec(Body::Flow(Box::new(flow())), true)]),
        ("process_exec", vec![rec(Body::ProcessExec(exec()), true)]),
        (
            // One storm connection's six records, both ends seen.
            "connection (6)",
            vec![
                rec(Body::NetConnect(conn(51_234, None)), true),
                rec(Body::NetAccept(conn(8443, None)), true),
                rec(Body::NetClose(conn(51_234, Some("established"))), true),
                rec(Body::NetClose(conn(8443, Some("close_wait"))), true),
                rec(Body::Flow(Box::new(flow())), true),
                rec(Body::Flow(Box::new(flow())), true),
            ],
        ),
    ];
    println!("native JSON output cost (CPU ns per record, best of {PASSES} x {N})");
    println!(
        "  {:<16} {:>8} {:>10} {:>8}",
        "kind", "bytes", "to_json", "emit"
    );
    for (name, recs) in &cases {
        let bytes: usize = recs
            .iter()
            .map(|r| Output::Event(r).to_json().map_or(0, |l| l.len()))
            .sum();
        let per = recs.len() as f64;
        let mut i = 0;
        let to_json = ns_per(|| {
            black_box(Output::Event(&recs[i % recs.len()]).to_json().ok());
            i += 1;
        });
        let mut sinks = Sinks::new(vec![Box::new(JsonLines::from_writer(Box::new(
            std::io::sink(),
        )))]);
        let emit = ns_per(|| {
            black_box(sinks.emit(Output::Event(&recs[i % recs.len()])));
            i += 1;
        });
        println!(
            "  {:<16} {:>8.0} {:>10.0} {:>8.0}",
            name,
            bytes as f64 / per,
            to_json,
            emit
        );
    }
    // Not serialisation, but paid per record before it: the pipeline
    // formats `ts` into a new String for every record.
    let mut wall_ns = 1_796_119_200_123_456_000i64;
    let ts = ns_per(|| {
        black_box(vigil::util::clock::rfc3339_ns(wall_ns));
        wall_ns += 1_000;
    });
    println!("  (ts string, util::clock::rfc3339_ns: {ts:.0} ns per record)");
}
