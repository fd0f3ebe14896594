//! A real Kafka-protocol broker (tansu, in memory) on loopback, and plain
//! rdkafka clients to read what the agent produced and to send it signed
//! commands. Reads use explicit partition assignment: no group join delay.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use sha2::Sha256;

use crate::GroupGuard;

/// The tansu binary `cargo xtask setup --test-tools` unpacks.
pub fn tansu_bin() -> PathBuf {
    match std::env::var_os("VIGIL_TANSU") {
        Some(p) => PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/tansu"),
    }
}

pub struct Broker {
    pub port: u16,
    /// Address it listens on and advertises.
    pub host: String,
    /// Network namespace it runs in (the test's own when `None`).
    pub netns: Option<String>,
    child: Option<GroupGuard>,
}

impl Broker {
    /// Starts tansu on 127.0.0.1:`port` and waits until it answers metadata.
    pub fn start(port: u16) -> Broker {
        Broker::start_at(None, "127.0.0.1", port)
    }

    /// Starts tansu in network namespace `netns` on `host:port`.
    pub fn start_at(netns: Option<&str>, host: &str, port: u16) -> Broker {
        let mut b = Broker {
            port,
            host: host.to_string(),
            netns: netns.map(str::to_string),
            child: None,
        };
        b.restart();
        b
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again (empty: the storage is memory).
    pub fn restart(&mut self) {
        self.child = None;
        let url = format!("tcp://{}", self.addr());
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "tansu not found at {} (run cargo xtask setup --test-tools)",
            bin.display()
        );
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        self.child = Some(GroupGuard::spawn(
            cmd.args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        ));
        let start = Instant::now();
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(start.elapsed() < crate::PATIENCE, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        for t in [
            "security.events",
            "defense.alerts",
            "defense.actions",
            "defense.commands",
            "threat.enriched",
        ] {
            create_topic(&self.addr(), t);
        }
    }
}

/// Creates a one-partition topic (a fresh in-memory broker has none).
pub fn create_topic(brokers: &str, topic: &str) {
    let bin = tansu_bin();
    let _ = Command::new(bin)
        .args(["topic", "create", topic, "--partitions", "1"])
        .args(["--broker", &format!("tcp://{brokers}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub key: String,
    pub id_header: String,
    pub body: Value,
    pub raw: Vec<u8>,
}

/// A consumer of `topic`'s partition 0 from its first record, committing
/// nothing.
pub fn consumer_from_start(brokers: &str, topic: &str, group: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    c.assign(&tpl).expect("assign");
    c
}

/// Everything on `topic` from the beginning, reading until `quiet` passes
/// with nothing new (bounded by PATIENCE).
pub fn read_all(brokers: &str, topic: &str, quiet: Duration) -> Vec<Msg> {
    let c = consumer_from_start(brokers, topic, "vigil-tests");
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < quiet && start.elapsed() < crate::PATIENCE {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            last = Instant::now();
            let raw = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
            let id_header = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value))
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push(Msg {
                key: m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                id_header,
                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                raw,
            });
        }
    }
    out
}

pub fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Produces one message, optionally with an `hmac-sha256` header.
pub fn produce(brokers: &str, topic: &str, body: &str, hmac: Option<&str>) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let mut r = BaseRecord::<(), str>::to(topic).payload(body);
    if let Some(h) = hmac {
        r = r.headers(OwnedHeaders::new().insert(Header {
            key: "hmac-sha256",
            value: Some(h),
        }));
    }
    p.send(r).map_err(|(e, _)| e).expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
