//! Detection figures: records per second through all detectors together
//! on one core, Isolation Forest training time on 16,384 vectors and its
//! scoring throughput and AUC (compared with scikit-learn by `cargo xtask
//! bench`, which runs xtask/bench/iforest_sklearn.py on the CSV written here).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use vigil::detect::config::{engine, DetectConfig};
use vigil::detect::iforest::{auc, planted_with_shift, IsolationForest};
use vigil::record::{AuthAttempt, Body, Conn, Flow, ProcessExec};

fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET on index 0 stays in bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

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

fn main() {
    pin_to_one_core();
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

    // 1 % outliers shifted 2 σ along a third of the features: hard enough
    // that the AUC says something.
    let (data, labels) = planted_with_shift(16_384 - 164, 164, 16, 11, 2.0);
    let t = Instant::now();
    let forest = IsolationForest::fit(data.view(), 100, 256, 0);
    let fit = t.elapsed();
    let t = Instant::now();
    let scores = forest.score_all(data.view());
    let score_s = t.elapsed().as_secs_f64();
    let aucs: Vec<f64> = (0..5)
        .map(|seed| {
            let f = IsolationForest::fit(data.view(), 100, 256, seed);
            auc(&f.score_all(data.view()), &labels)
        })
        .collect();
    println!(
        "  isolation forest (ours): fit on {} vectors {:.3} s, scoring {:.0} vectors/s, AUC {:.4} (seed 0), mean of seeds 0-4 {:.4} [{:.4}, {:.4}]",
        data.nrows(),
        fit.as_secs_f64(),
        data.nrows() as f64 / score_s,
        auc(&scores, &labels),
        aucs.iter().sum::<f64>() / aucs.len() as f64,
        aucs.iter().cloned().fold(f64::MAX, f64::min),
        aucs.iter().cloned().fold(f64::MIN, f64::max),
    );
    // The same data for the scikit-learn comparison.
    let path = std::env::temp_dir().join("vigil-iforest-bench.csv");
    let mut csv = String::new();
    for (i, row) in data.rows().into_iter().enumerate() {
        let cols: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        csv.push_str(&cols.join(","));
        csv.push_str(if labels[i] { ",1\n" } else { ",0\n" });
    }
    if std::fs::write(&path, csv).is_ok() {
        println!("  dataset for the side-by-side: {}", path.display());
    }
}
