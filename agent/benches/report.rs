//! Reporting throughput (`cargo xtask bench`): the spool's append (unsynced
//! telemetry, synced alerts) and replay rates, and records per second
//! through spool + idempotent producer to a local tansu broker with every
//! acknowledgement awaited. The broker part runs when target/tools/tansu
//! exists (`cargo xtask setup --test-tools` unpacks it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil::config::KafkaConfig;
use vigil::sink::kafka::producer::Reporter;
use vigil::sink::kafka::spool::{Class, Spool, SpoolConfig};

fn flow_line(i: u64) -> String {
    format!(
        "{{\"kind\":\"flow\",\"ts\":\"2026-11-25T20:00:00.000000Z\",\"host\":\"bench\",\"proto\":\"tcp\",\
         \"src_ip\":\"10.0.0.1\",\"src_port\":{},\"dst_ip\":\"10.0.0.2\",\"dst_port\":443,\
         \"bytes_out\":1234,\"bytes_in\":56789,\"packets_out\":12,\"packets_in\":40,\"community_id\":\"1:abcdefghijklmnopqrstuvwxyz0=\"}}",
        i % 65536
    )
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vigil-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn spool_bench() {
    let cfg = SpoolConfig {
        max_bytes: 4 << 30,
        segment_bytes: 4 << 20,
        telemetry_share: 1.0,
    };
    let d = scratch("spool");
    let mut s = Spool::open(&d, cfg).expect("spool");
    let n = 300_000u64;
    let lines: Vec<String> = (0..n).map(flow_line).collect();
    let t = Instant::now();
    for l in &lines {
        s.append(Class::Telemetry, l.as_bytes()).expect("append");
    }
    let w = t.elapsed();
    let bytes = s.bytes();
    let synced = 2_000u64;
    let t = Instant::now();
    for l in lines.iter().take(synced as usize) {
        s.append(Class::Alert, l.as_bytes()).expect("append");
    }
    let ws = t.elapsed();
    drop(s);
    let t = Instant::now();
    let mut s = Spool::open(&d, cfg).expect("reopen");
    let opened = t.elapsed();
    let t = Instant::now();
    let mut next = 1;
    let mut read = 0u64;
    loop {
        let batch = s.read(next, 512).expect("read");
        let Some(last) = batch.last() else { break };
        next = last.0 + 1;
        read += batch.len() as u64;
    }
    let r = t.elapsed();
    assert_eq!(read, n + synced);
    println!(
        "spool (records of {} bytes, {:.1} MB on disk)",
        lines[0].len(),
        bytes as f64 / 1e6
    );
    println!(
        "  append telemetry (unsynced)   {:>10.0} records/s",
        n as f64 / w.as_secs_f64()
    );
    println!(
        "  append alert (fdatasync each) {:>10.0} records/s",
        synced as f64 / ws.as_secs_f64()
    );
    println!(
        "  open + validate (CRC scan)    {:>10.0} records/s",
        read as f64 / opened.as_secs_f64()
    );
    println!(
        "  replay read                   {:>10.0} records/s",
        read as f64 / r.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn tansu() -> Option<PathBuf> {
    let p = std::env::var_os("VIGIL_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/tansu"));
    p.exists().then_some(p)
}

struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kafka_bench(bin: &Path) {
    let url = "tcp://127.0.0.1:19299";
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu");
    let _broker = Broker(child);
    let start = Instant::now();
    while std::net::TcpStream::connect("127.0.0.1:19299").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for t in ["security.events", "defense.alerts", "defense.actions"] {
        let _ = Command::new(bin)
            .args(["topic", "create", t, "--partitions", "1", "--broker", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let mut cfg = KafkaConfig {
        brokers: "127.0.0.1:19299".into(),
        ..KafkaConfig::default()
    };
    cfg.telemetry.max_per_second = u64::MAX / 4;
    cfg.spool.max_bytes = 4 << 30;
    let d = scratch("kafka");
    let mut r = Reporter::new(&cfg, "bench", &d).expect("reporter");
    // Warm-up: metadata and producer id.
    r.submit("flow", &flow_line(0)).expect("submit");
    while r.spool.pending() > 0 {
        r.pump().expect("pump");
        std::thread::sleep(Duration::from_millis(5));
    }
    for (label, kind, n) in [
        ("telemetry", "flow", 200_000u64),
        ("alerts (synced spool)", "alert", 5_000),
    ] {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                if kind == "alert" {
                    format!("{{\"kind\":\"alert\",\"id\":\"b-{i}\",\"detector\":\"scan\",\"summary\":\"bench\"}}")
                } else {
                    flow_line(i)
                }
            })
            .collect();
        let t = Instant::now();
        let deadline = t + Duration::from_secs(120);
        for (i, l) in lines.iter().enumerate() {
            r.submit(kind, l).expect("submit");
            if i % 1000 == 0 {
                r.pump().expect("pump");
            }
        }
        while r.spool.pending() > 0 && Instant::now() < deadline {
            r.pump().expect("pump");
            std::thread::sleep(Duration::from_millis(1));
        }
        let e = t.elapsed();
        assert_eq!(r.spool.pending(), 0, "not all acknowledged: {:?}", r.stats);
        println!(
            "kafka to local tansu, {label:<22} {:>9.0} records/s acknowledged ({n} records, {:.2} s, {} delivery errors)",
            n as f64 / e.as_secs_f64(),
            e.as_secs_f64(),
            r.stats.delivery_errors
        );
    }
    drop(r);
    let _ = std::fs::remove_dir_all(&d);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful.
    spool_bench();
    match tansu() {
        Some(bin) => kafka_bench(&bin),
        None => {
            println!("kafka: skipped (no target/tools/tansu; run cargo xtask setup --test-tools)")
        }
    }
}
