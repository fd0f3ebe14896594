//! Detection figures: records per second through all detectors together
//! on one core, the CPU time per record of `hostcost`'s short-connection
//! storm (connect, accept, two closes, two flows per connection) through
//! the engine, learning and then trained, Isolation Forest training time on 16,384 vectors, its
//! scoring throughput and its AUC on three data shapes over seeds 0–4
//! (0 to VIGIL_FOREST_SEEDS − 1 when set)
//! (compared with scikit-learn by `cargo xtask bench`, which runs
//! xtask/bench/iforest_sklearn.py on the CSVs and the JSON written here).

mod common;
use common::{pin_to_one_core, thread_cpu_s};

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use agent_common::EventKind;
use vigil::detect::config::{engine, DetectConfig};
use vigil::detect::iforest::{auc, clustered, correlated, planted_with_shift, IsolationForest};
use vigil::pipeline::decode::{decode, fixtures};
use vigil::pipeline::proc_cache::ProcessCache;
use vigil::pipeline::Pipeline;
use vigil::record::{AuthAttempt, Body, Conn, Flow, ProcessExec, Record};
use vigil::util::clock::Clock;

fn conn(i: u32, failed: bool) -> Body {
    let c = Conn {
        pid: Some(1000 + i % 50),
        comm: "curl".into(),
        exe: Some(Arc::from("/usr/bin/curl")),
        uid: Some(1000),
        proto: "tcp",
        src_ip: "10.0.0.5".parse().expect("ip"),
        src_port: 40_000 + (i % 20_000) as u16,
        dst_ip: std::net::IpAddr::from([10, 1, (i >> 8) as u8, i as u8]),
        dst_port: [443, 80, 22, 5432][(i % 4) as usize],
        community_id: String::new(),
        old_state: None,
    };
    if failed {
        Body::NetConnectFailed(c)
    } else {
        Body::NetConnect(c)
    }
}

fn flow(i: u32) -> Body {
    let mut features = [0.0; 16];
    for (j, f) in features.iter_mut().enumerate() {
        *f = ((i as usize * 31 + j * 7) % 97) as f64 / 10.0;
    }
    Body::Flow(Box::new(Flow {
        community_id: String::new(),
        proto: "tcp",
        direction: "outbound",
        src_ip: "10.0.0.5".parse().expect("ip"),
        src_port: 40_000,
        dst_ip: std::net::IpAddr::from([93, 184, (i >> 8) as u8 & 7, i as u8]),
        dst_port: 443,
        pid: Some(1000 + i % 50),
        comm: None,
        exe: Some(Arc::from("/usr/bin/curl")),
        packets_out: 10,
        packets_in: 12,
        bytes_out: 900 + (i % 500) as u64,
        bytes_in: 50_000,
        duration_ms: 120.0,
        syn: 1,
        rst: 0,
        fin: 2,
        end_reason: "close",
        features,
    }))
}

fn stream(n: u32) -> Vec<Body> {
    (0..n)
        .map(|i| match i % 8 {
            0 => Body::ProcessExec(ProcessExec {
                pid: 1000 + i,
                ppid: 1,
                uid: 0,
                gid: 0,
                comm: "curl".into(),
                exe: "/usr/bin/curl".into(),
                argv: vec!["curl".into()],
                argv_truncated: false,
                cgroup_id: 1,
                stdio_socket: None,
                parent_exe: Some(Arc::from("/usr/bin/bash")),
                start_time: Some(1000 + i as u64),
                parent_cmdline: None,
                cwd: None,
                auid: None,
                exe_file: None,
                script_file: None,
                file_owner: None,
                exe_arg: None,
            }),
            1 | 2 => conn(i, false),
            3 => conn(i, true),
            4 => {
                // sshd's verified peer: the per-address path, as in production.
                let rhost = format!("198.51.{}.{}", (i >> 8) & 255, i & 255);
                Body::AuthAttempt(AuthAttempt {
                    pid: 77,
                    uid: 0,
                    comm: "sshd".into(),
                    exe: None,
                    service: Some("sshd".into()),
                    user: Some("root".into()),
                    peer: rhost.parse().ok(),
                    trusted: true,
                    rhost: Some(rhost),
                    result: "failure",
                    code: 7,
                })
            }
            _ => flow(i),
        })
        .collect()
}

/// The records the pipeline makes of `n` short TCP connections between a
/// client and a server, with flows of varying size (so the forest learns
/// a spread, not one point), one connection per 50 µs.
fn storm_records(n: u32) -> Vec<Record> {
    let mut p = Pipeline::new(Arc::from("bench"), Clock::new(), ProcessCache::new(1024));
    let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let mut out = Vec::new();
    for rec in [
        fixtures::exec(500, 1, "/usr/bin/hostcost-client", &["client"]),
        fixtures::exec(600, 1, "/usr/bin/hostcost-server", &["server"]),
    ] {
        out.extend(p.on_bytes(&rec).ok());
    }
    for i in 0..n {
        let port = 20_000 + (i % 40_000) as u16;
        let (packets, bytes) = (3 + u64::from(i % 7), 100 + u64::from(i % 13) * 300);
        for rec in [
            fixtures::conn(EventKind::Connect, 500, client, port, server, 8080),
            fixtures::conn(EventKind::Accept, 600, server, 8080, client, port),
            fixtures::close_flow(client, port, server, 8080, packets, bytes),
            fixtures::close_flow(server, 8080, client, port, packets, bytes),
        ] {
            if let Ok(ev) = decode(&rec) {
                let (r, flow) = p.on_event(ev);
                out.push(r);
                out.extend(flow);
            }
        }
    }
    out
}

/// The storm through the engine with the default configuration: CPU ns
/// per record while the forest learns (its training included), and once
/// trained; best of three.
fn storm() {
    let conns = 50_000;
    let records = storm_records(conns);
    let host: Arc<str> = Arc::from("bench");
    let (mut learning, mut trained) = (f64::MAX, f64::MAX);
    let mut alerts = 0;
    for _ in 0..3 {
        let mut e = engine(&DetectConfig::default()).expect("engine");
        let (first, rest) = records.split_at(records.len() / 2);
        alerts = 0;
        // 10 µs between records, on one clock across both halves.
        let mut run = |part: &[Record], from: usize| {
            let t = thread_cpu_s();
            for (i, r) in part.iter().enumerate() {
                let now = (from + i) as f64 * 1e-5;
                alerts += black_box(e.on_record(now, &r.ts, &host, &r.body)).len();
            }
            (thread_cpu_s() - t) / part.len() as f64 * 1e9
        };
        learning = learning.min(run(first, 0));
        trained = trained.min(run(rest, first.len()));
    }
    println!(
        "  short-conn storm, {} records ({conns} connections): {learning:.0} ns CPU/record while learning (training included), {trained:.0} trained ({alerts} alerts)",
        records.len()
    );
}

fn main() {
    pin_to_one_core();
    // Only the storm, e.g. to profile it: `VIGIL_BENCH_STORM_ONLY=1`.
    if std::env::var_os("VIGIL_BENCH_STORM_ONLY").is_some() {
        storm();
        return;
    }
    let records = stream(400_000);
    let host: Arc<str> = Arc::from("bench");
    let mut best = f64::MAX;
    let mut alerts = 0;
    for _ in 0..3 {
        let mut cfg = DetectConfig::default();
        cfg.anomaly.learn_flows = 4096;
        let mut e = engine(&cfg).expect("engine");
        let t = Instant::now();
        alerts = 0;
        for (i, b) in records.iter().enumerate() {
            alerts += black_box(e.on_record(i as f64 * 0.001, "t", &host, b)).len();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("detection benchmark (one core)");
    println!(
        "  all detectors, {} records (exec, connects, failed connects, PAM failures, flows): {:.0} records/s ({} alerts)",
        records.len(),
        records.len() as f64 / best,
        alerts
    );

    // Kernel events only (no swept flow records), the per-event path.
    let events: Vec<&Body> = records
        .iter()
        .filter(|b| !matches!(b, Body::Flow(_)))
        .collect();
    let mut e = engine(&DetectConfig::default()).expect("engine");
    let t = Instant::now();
    for (i, b) in events.iter().enumerate() {
        black_box(e.on_record(i as f64 * 0.001, "t", &host, b));
    }
    println!(
        "  all detectors, {} kernel events only (no flow records): {:.0} events/s",
        events.len(),
        events.len() as f64 / t.elapsed().as_secs_f64()
    );

    // Each detector alone on the same stream, to show where the time goes.
    {
        use vigil::detect::Detector;
        let cfg = DetectConfig::default();
        let beaconing = vigil::detect::beacon::Beaconing::default();
        let mut anomaly = vigil::detect::anomaly::AnomalyDetector::new(cfg.anomaly.clone());
        let dets: Vec<(&str, Box<dyn Detector>)> = vec![
            (
                "brute_force",
                Box::new(vigil::detect::brute_force::BruteForceDetector::new(
                    cfg.brute_force.clone(),
                )),
            ),
            (
                "scan",
                Box::new(vigil::detect::scan::ScanDetector::new(cfg.scan.clone())),
            ),
            (
                "beacon",
                Box::new(vigil::detect::beacon::BeaconDetector::new(
                    cfg.beacon.clone(),
                    beaconing.clone(),
                )),
            ),
            (
                "exfil",
                Box::new(vigil::detect::exfil::ExfilDetector::new(
                    cfg.exfil.clone(),
                    beaconing,
                )),
            ),
            (
                "lateral",
                Box::new(vigil::detect::lateral::LateralDetector::new(
                    cfg.lateral.clone(),
                )),
            ),
            (
                "process",
                Box::new(vigil::detect::process::ProcessDetector::new(
                    cfg.process.clone(),
                )),
            ),
        ];
        // A trained anomaly detector, so every flow is scored.
        let mut out = Vec::new();
        for (i, b) in records
            .iter()
            .filter(|b| matches!(b, Body::Flow(_)))
            .take(4096)
            .enumerate()
        {
            anomaly.on_record(i as f64, b, &mut out);
        }
        let mut all = dets;
        all.push(("anomaly (trained)", Box::new(anomaly)));
        for (name, mut d) in all {
            let mut out = Vec::new();
            let t = Instant::now();
            for (i, b) in records.iter().enumerate() {
                d.on_record(i as f64 * 0.001, b, &mut out);
                out.clear();
            }
            println!(
                "    {name:<18} {:>10.0} records/s",
                records.len() as f64 / t.elapsed().as_secs_f64()
            );
        }
    }

    storm();
    forest();
}

/// The forest's figures, printed and written as JSON (with one CSV per
/// data shape) for the side-by-side with scikit-learn.
fn forest() {
    const N: usize = 16_384;
    const K: usize = 164;
    let dir = std::env::temp_dir();
    let shapes = [
        // 1 % outliers shifted 2 σ along a third of the features: hard
        // enough that the AUC says something.
        ("planted", planted_with_shift(N - K, K, 16, 11, 2.0)),
        ("correlated", correlated(N - K, K, 16, 12)),
        ("clustered", clustered(N - K, K, 16, 13)),
    ];
    // Seeds 0..VIGIL_FOREST_SEEDS (5 by default) on both sides.
    let seeds: u64 = std::env::var("VIGIL_FOREST_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5);
    let mut json = serde_json::Map::new();
    json.insert("seeds".into(), seeds.into());
    for (name, (data, labels)) in &shapes {
        let aucs: Vec<f64> = (0..seeds)
            .map(|seed| {
                let f = IsolationForest::fit(data.view(), 100, 256, seed);
                auc(&f.score_all(data.view()), labels)
            })
            .collect();
        let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
        let (lo, hi) = (
            aucs.iter().cloned().fold(f64::MAX, f64::min),
            aucs.iter().cloned().fold(f64::MIN, f64::max),
        );
        println!(
            "  isolation forest (ours) AUC, {name}, seeds 0-{}: {mean:.4} [{lo:.4}, {hi:.4}]",
            seeds - 1
        );
        json.insert(
            name.to_string(),
            serde_json::json!({"auc_mean": mean, "auc_min": lo, "auc_max": hi}),
        );
        let mut csv = String::new();
        for (i, row) in data.rows().into_iter().enumerate() {
            let cols: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
            csv.push_str(&cols.join(","));
            csv.push_str(if labels[i] { ",1\n" } else { ",0\n" });
        }
        let _ = std::fs::write(dir.join(format!("vigil-iforest-{name}.csv")), csv);
    }

    let data = &shapes[0].1 .0;
    let (t, c) = (Instant::now(), thread_cpu_s());
    let forest = IsolationForest::fit(data.view(), 100, 256, 0);
    let (fit_wall, fit_cpu) = (t.elapsed().as_secs_f64(), thread_cpu_s() - c);
    let rows: Vec<f64> = data.iter().copied().collect();
    black_box(forest.score_rows(&rows));
    // Best of five runs over the 16,384 vectors: batch, and one at a time
    // as the agent scores a flow (without its early exit).
    let best = |f: &dyn Fn() -> f64| {
        (0..5)
            .map(|_| {
                let (t, c) = (Instant::now(), thread_cpu_s());
                black_box(f());
                (t.elapsed().as_secs_f64(), thread_cpu_s() - c)
            })
            .fold((f64::MAX, f64::MAX), |a, b| (a.0.min(b.0), a.1.min(b.1)))
    };
    let n = data.nrows() as f64;
    let batch = best(&|| forest.score_rows(&rows).iter().sum());
    let single = best(&|| {
        rows.chunks_exact(16)
            .map(|x| forest.score_at_least(x, 0.0).unwrap_or(0.0))
            .sum()
    });
    println!(
        "  isolation forest (ours): fit on {N} vectors {fit_cpu:.3} s CPU ({fit_wall:.3} s wall); scoring {:.0} vectors per CPU second in batches ({:.0} wall), {:.0} one at a time ({:.0} wall)",
        n / batch.1,
        n / batch.0,
        n / single.1,
        n / single.0,
    );
    json.insert(
        "speed".into(),
        serde_json::json!({
            "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall,
            "batch_per_cpu_s": n / batch.1, "batch_per_wall_s": n / batch.0,
            "single_per_cpu_s": n / single.1, "single_per_wall_s": n / single.0,
        }),
    );
    let path = dir.join("vigil-iforest-ours.json");
    if std::fs::write(&path, serde_json::Value::Object(json).to_string()).is_ok() {
        println!(
            "  figures and data sets for the side-by-side: {}",
            path.display()
        );
    }
}
