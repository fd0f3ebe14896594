//! Throughput of the userspace pipeline on one core, fed from recorded wire
//! bytes: decode + enrich (what the daemon does per ring buffer record), and
//! separately decode + enrich + JSON serialization, native and translated
//! to OCSF and ECS (sink/format). Also flow feature records, the
//! short-connection storm (`hostcost`'s load: per connection a connect, an
//! accept and two closes carrying their flows, six output records) timed
//! in CPU time of this thread, and the process RSS after it all. Reports
//! figures; never fails on time.

mod common;
use common::{pin_to_one_core, thread_cpu_s};

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use agent_common::{EventKind, FlowKey, FlowStats};
use vigil::pipeline::decode::{decode, fixtures};
use vigil::pipeline::proc_cache::ProcessCache;
use vigil::pipeline::{FlowEnd, Pipeline};
use vigil::sink::format::Format;
use vigil::sink::jsonl::JsonLines;
use vigil::sink::{Output, Sinks};
use vigil::util::clock::Clock;

/// A realistic mix: for every exec, its fork and exit, and a connect/accept/close set.
fn recorded_stream(n_procs: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n_procs {
        let pid = 10_000 + (i % 30_000);
        out.push(fixtures::fork(1000, pid));
        out.push(fixtures::exec(
            pid,
            1000,
            "/usr/bin/curl",
            &["curl", "-s", "https://example.invalid/api/v1/items?page=2"],
        ));
        let port = 30_000 + (i % 30_000) as u16;
        out.push(fixtures::conn(
            EventKind::Connect,
            pid,
            [10, 0, 0, 5],
            port,
            [10, 0, 1, 9],
            443,
        ));
        out.push(fixtures::conn(
            EventKind::Accept,
            77,
            [10, 0, 0, 5],
            22,
            [10, 9, 9, 9],
            port,
        ));
        out.push(fixtures::conn(
            EventKind::Close,
            0,
            [10, 0, 0, 5],
            port,
            [10, 0, 1, 9],
            443,
        ));
        out.push(fixtures::exit(pid, 0));
    }
    out
}

/// Short TCP connections between a client (pid 500) and a server (pid 600)
/// as the kernel reports them: connect, accept, and each side's close with
/// its flow (owner unknown in softirq, so taken from the connect/accept).
fn short_connections(n: u32) -> Vec<Vec<u8>> {
    let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut out = vec![
        fixtures::exec(500, 1, "/usr/bin/hostcost-client", &["client"]),
        fixtures::exec(600, 1, "/usr/bin/hostcost-server", &["server"]),
    ];
    for i in 0..n {
        let port = 20_000 + (i % 40_000) as u16;
        out.push(fixtures::conn(
            EventKind::Connect,
            500,
            client,
            port,
            server,
            8080,
        ));
        out.push(fixtures::conn(
            EventKind::Accept,
            600,
            server,
            8080,
            client,
            port,
        ));
        out.push(fixtures::close_flow(client, port, server, 8080, 5, 300));
        out.push(fixtures::close_flow(server, 8080, client, port, 5, 300));
    }
    out
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        Arc::from("bench-host"),
        Clock::new(),
        ProcessCache::new(65_536),
    )
}

/// The short-connection storm through `on_event`, as the daemon runs it:
/// (best CPU seconds of three passes, output records per pass).
fn storm(conns: u32) -> (f64, u64) {
    let storm = short_connections(conns);
    let mut best = f64::MAX;
    let mut records = 0u64;
    for _ in 0..3 {
        let mut p = pipeline();
        records = 0;
        let t = thread_cpu_s();
        for rec in &storm {
            if let Ok(ev) = decode(rec) {
                let (r, flow) = p.on_event(ev);
                records += 1 + u64::from(flow.is_some());
                black_box((r, flow));
            }
        }
        best = best.min(thread_cpu_s() - t);
    }
    (best, records)
}

fn print_storm(conns: u32, (cpu_s, records): (f64, u64)) {
    println!(
        "  short-conn storm:     {:>12.0} conns/s  ({:.0} ns CPU/conn, {:.0} ns CPU/output record, {} records)",
        conns as f64 / cpu_s,
        cpu_s / conns as f64 * 1e9,
        cpu_s / records as f64 * 1e9,
        records
    );
}

/// CPU ns per record timestamp: the pipeline's `rfc3339_ns`, and chrono's
/// formatter it replaced (same bytes), over a day of µs-spaced times.
fn timestamps() -> (f64, f64) {
    const N: i64 = 1_000_000;
    let base = 1_764_600_000_000_000_000i64;
    let time = |f: &dyn Fn(i64) -> String| {
        let t = thread_cpu_s();
        for i in 0..N {
            black_box(f(black_box(base + i * 86_399_999)));
        }
        (thread_cpu_s() - t) / N as f64 * 1e9
    };
    let ours = time(&vigil::util::clock::rfc3339_ns);
    let chrono = time(&|ns| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    });
    (ours, chrono)
}

fn main() {
    pin_to_one_core();
    let conns = 100_000u32;
    // Only the storm, e.g. to profile it: `VIGIL_BENCH_STORM_ONLY=1`.
    if std::env::var_os("VIGIL_BENCH_STORM_ONLY").is_some() {
        print_storm(conns, storm(conns));
        return;
    }
    let stream = recorded_stream(200_000);
    let n = stream.len() as f64;

    // Warm-up, then the measured passes; report the best of three.
    let mut best_enrich = f64::MAX;
    let mut best_json = f64::MAX;
    let mut best_formats = [f64::MAX; 2];
    for _ in 0..3 {
        let mut p = pipeline();
        let t = Instant::now();
        for rec in &stream {
            black_box(p.on_bytes(rec).ok());
        }
        best_enrich = best_enrich.min(t.elapsed().as_secs_f64());

        let mut p = pipeline();
        let mut sinks = Sinks::new(vec![Box::new(JsonLines::from_writer(Box::new(
            std::io::sink(),
        )))]);
        let t = Instant::now();
        for rec in &stream {
            if let Ok(r) = p.on_bytes(rec) {
                black_box(sinks.emit(Output::Event(&r)));
            }
        }
        best_json = best_json.min(t.elapsed().as_secs_f64());

        for (best, format) in best_formats.iter_mut().zip([Format::Ocsf, Format::Ecs]) {
            let mut p = pipeline();
            let out = JsonLines::from_writer(Box::new(std::io::sink())).with_format(format);
            let mut sinks = Sinks::new(vec![Box::new(out)]);
            let t = Instant::now();
            for rec in &stream {
                if let Ok(r) = p.on_bytes(rec) {
                    black_box(sinks.emit(Output::Event(&r)));
                }
            }
            *best = best.min(t.elapsed().as_secs_f64());
        }
    }

    // Flow records with features, keys spread over 100,000 flows.
    let mut p = pipeline();
    let flows = 100_000u32;
    let t = Instant::now();
    for i in 0..flows {
        let mut k = FlowKey {
            local_addr: [0; 16],
            remote_addr: [0; 16],
            local_port: 40_000,
            remote_port: 443,
            proto: 6,
            ip_version: 4,
            _pad: [0; 2],
        };
        k.local_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.remote_addr[..4].copy_from_slice(&i.to_be_bytes());
        let s = FlowStats {
            t_first_ns: 1,
            t_last_ns: 1_000_000_000,
            n_out: 10,
            n_in: 12,
            bytes_out: 1_000,
            bytes_in: 50_000,
            sq_out: 200_000,
            sq_in: 300_000_000,
            iat_n: 21,
            iat_sum: 1_000_000,
            iat_sq: 90_000_000_000,
            iat_max: 400_000,
            syn: 2,
            ..FlowStats::default()
        };
        black_box(p.on_flow(&k, &s, FlowEnd::Idle));
    }
    let flow_secs = t.elapsed().as_secs_f64();

    let storm = storm(conns);

    println!(
        "pipeline benchmark (one core, {} recorded events)",
        stream.len()
    );
    println!(
        "  decode+enrich:        {:>12.0} events/s  ({:.0} ns/event)",
        n / best_enrich,
        best_enrich / n * 1e9
    );
    println!(
        "  decode+enrich+json:   {:>12.0} events/s  ({:.0} ns/event)",
        n / best_json,
        best_json / n * 1e9
    );
    for (best, name) in best_formats.iter().zip(["ocsf", "ecs "]) {
        println!(
            "  decode+enrich+{name}:   {:>12.0} events/s  ({:.0} ns/event)",
            n / best,
            best / n * 1e9
        );
    }
    println!(
        "  flow records+features:{:>12.0} flows/s",
        flows as f64 / flow_secs
    );
    print_storm(conns, storm);
    let (ours, chrono) = timestamps();
    println!("  record ts (rfc3339_ns): {ours:>10.0} ns CPU  (chrono's formatter: {chrono:.0} ns)");
    println!(
        "  bench process RSS:    {:>12} KiB (includes the recorded input itself)",
        rss_kib()
    );
}
