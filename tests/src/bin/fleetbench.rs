//! Fleet fusion through a real broker (tansu), as `cargo xtask bench` runs
//! it (root):
//!
//! 1. alert → fleet-wide block: two signed alerts from two hosts name a new
//!    address; the time from the second alert's acknowledgement by the
//!    broker to the address being in a third host's kernel blocklist (a
//!    real scoped agent) — through fusion's re-key and consensus stages,
//!    `threat.enriched`, and the agent's consumer. 30 rounds, p50/p99.
//! 2. records per second one fusion instance sustains per stage: a backlog
//!    of signed records is produced to the stage's input topic, then the
//!    time until the stage's consumer group has committed to its end.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use vigil::enforce::blocklist::Blocklist;
use vigil::enforce::cidr::Cidr;
use vigil_integration::fleet::FleetNet;
use vigil_integration::kafka::{sign, Broker};
use vigil_integration::*;

const KEY: &str = "fleet-bench-key";

fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: &str, body: &str) {
    let tag = sign(KEY, body.as_bytes());
    let mut r = BaseRecord::to(topic)
        .key(key)
        .payload(body)
        .headers(OwnedHeaders::new().insert(Header {
            key: "hmac-sha256",
            value: Some(tag.as_str()),
        }));
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((_, back)) => {
                r = back;
                p.poll(Duration::from_millis(5));
            }
        }
    }
}

fn alert(id: &str, host: &str, ip: &str) -> String {
    serde_json::json!({
        "kind": "alert", "id": id, "ts": chrono::Utc::now().to_rfc3339(), "host": host,
        "detector": "beacon", "severity": "medium", "confidence": 0.8,
        "techniques": [{"id": "T1071"}], "entities": {"dst_ip": ip}
    })
    .to_string()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Committed offset of `group` on partition 0 of `topic`.
fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    c.committed_offsets(tpl, Duration::from_secs(5))
        .ok()
        .and_then(|t| t.elements().first().map(|e| e.offset()))
        .and_then(|o| o.to_raw())
        .unwrap_or(0)
}

fn fusion(cfg: &Path, stages: &str, log: &Path) -> GroupGuard {
    GroupGuard::spawn(
        Command::new(vigil_bin())
            .args(["fusion", "run", "--stages", stages, "--config"])
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log")),
    )
}

fn wait_log(log: &Path, what: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "fusion never logged {what:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    require_root();
    let net = FleetNet::new("fbn", 242, 1, &[]);
    let broker = Broker::start_at(Some(&net.core), &net.core_ip(), 9092);
    let brokers = broker.addr();
    let dir = TempDir::new("fleetbench");

    // 1. Alert → block on another host.
    let cfg = dir.0.join("fusion.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kafka:\n  brokers: \"{brokers}\"\n  hmac_key: {KEY}\n\
             fusion:\n  mode: enforce\n  tick_s: 1\n  max_decisions_per_minute: 1000\n  \
             group_prefix: fleetbench\n"
        ),
    )
    .expect("config");
    let log = dir.0.join("fusion.log");
    let fusion_all = fusion(&cfg, "rekey,consensus", &log);
    wait_log(&log, "restored 0 keys");
    let pins = Pins::new("fleetbench");
    let adir = TempDir::new("fleetbench-agent");
    let books = adir.0.join("books");
    std::fs::create_dir_all(&books).expect("books");
    let config = format!(
        "host: h3\nscope:\n  netns: self\nstats_interval_s: 10\nenforce:\n  pin_dir: {}\n\
         metrics:\n  listen: \"\"\ncontrol:\n  socket: \"\"\nresponse:\n  mode: enforce\n\
         playbooks:\n  dir: {}\nkafka:\n  brokers: \"{brokers}\"\n  hmac_key: {KEY}\n  \
         max_indicators_per_minute: 1000\n",
        pins.pin_dir,
        books.display()
    );
    let mut agent = Agent::start_in(Some(&net.hosts[0]), &config, adir);
    // The agent's consumer has joined once a first decision reaches it.
    let p = producer(&brokers);
    let blocks = Blocklist::open(Path::new(&pins.pin_dir)).expect("the agent's blocklist");
    let mut lat = Vec::new();
    for round in 0..31u32 {
        let ip = format!("198.51.{}.{}", 100 + round / 250, round % 250 + 1);
        let cidr = Cidr::host(ip.parse::<IpAddr>().expect("ip"));
        send(
            &p,
            "defense.alerts",
            "x1",
            &alert(&format!("a{round}"), "x1", &ip),
        );
        send(
            &p,
            "defense.alerts",
            "x2",
            &alert(&format!("b{round}"), "x2", &ip),
        );
        p.flush(Duration::from_secs(10)).expect("flush");
        let t0 = Instant::now();
        while blocks.get(&cidr).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "round {round}: {ip} never reached the kernel:\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        // The first round also pays for the consumer groups settling.
        if round > 0 {
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "fleet fusion through tansu, one fusion instance, {} rounds:",
        lat.len()
    );
    println!(
        "  alert → block on another host: p50 {:.0} ms, p99 {:.0} ms (min {:.0}, max {:.0})",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[0],
        lat[lat.len() - 1]
    );
    agent.stop();
    drop(fusion_all);

    // 2. Records per second per stage: a backlog, then one instance of the
    // stage alone drains it.
    let n = 20_000u32;
    let stages: [(&str, &str); 4] = [
        ("rekey", "defense.alerts"),
        ("consensus", "fusion.sightings"),
        ("chains", "defense.alerts"),
        ("incidents", "fusion.incident-events"),
    ];
    for (stage, topic) in stages {
        let group_prefix = format!("fleetbench-{stage}");
        let cfg = dir.0.join(format!("{stage}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "kafka:\n  brokers: \"{brokers}\"\n  hmac_key: {KEY}\n\
                 fusion:\n  mode: simulate\n  group_prefix: {group_prefix}\n  \
                 max_decisions_per_minute: 100000\n"
            ),
        )
        .expect("config");
        let start_offset = committed(&brokers, &format!("{group_prefix}.{stage}"), topic);
        let mut end = 0i64;
        {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "fleetbench-wm")
                .create()
                .expect("consumer");
            let before = c
                .fetch_watermarks(topic, 0, Duration::from_secs(5))
                .map(|w| w.1)
                .unwrap_or(0);
            for i in 0..n {
                let ip = format!("203.0.{}.{}", (i / 250) % 250, i % 250 + 1);
                let host = format!("h{}", i % 50);
                let body = match stage {
                    "consensus" => serde_json::json!({"type": "sighting",
                        "indicator": {"type": "ip", "value": ip}, "host": host,
                        "detector": "scan", "confidence": 0.5, "alert": format!("s{i}"),
                        "ts": chrono::Utc::now().timestamp() as f64, "techniques": ["T1046"]})
                    .to_string(),
                    "incidents" => serde_json::json!({"type": "alert", "id": format!("i{i}"),
                        "ts": chrono::Utc::now().to_rfc3339(), "host": host, "detector": "scan",
                        "confidence": 0.5, "techniques": [{"id": "T1046"}], "entities": {}})
                    .to_string(),
                    _ => alert(&format!("{stage}{i}"), &host, &ip),
                };
                let key = if stage == "consensus" {
                    ip.clone()
                } else {
                    host.clone()
                };
                send(&p, topic, &key, &body);
            }
            p.flush(Duration::from_secs(60)).expect("flush");
            end = end.max(before + n as i64);
        }
        let log = dir.0.join(format!("{stage}.log"));
        let t0 = Instant::now();
        let guard = fusion(&cfg, stage, &log);
        // From the first commit on (the group has joined and a batch is
        // through) to the end of the backlog.
        let mut first: Option<(Instant, i64)> = None;
        loop {
            let c = committed(&brokers, &format!("{group_prefix}.{stage}"), topic);
            if first.is_none() && c > start_offset.max(0) {
                first = Some((Instant::now(), c));
            }
            if c >= end {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "{stage} stuck at offset {c} of {end}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let (t1, c1) = first.unwrap_or((t0, 0));
        let secs = t1.elapsed().as_secs_f64().max(1e-3);
        let records = (end - c1).max(1);
        println!(
            "  {stage:<10} {:>8.0} records/s ({records} records in {secs:.1} s; {:.1} s to join and take the first batch)",
            records as f64 / secs,
            (t1 - t0).as_secs_f64()
        );
        drop(guard);
    }
    drop(broker);
}
