//! Kafka plumbing for the fusion stages: signed produce (tombstones too),
//! verified consume, reading a compacted table from the start, creating
//! topics. Stages never see a message whose signature does not hold.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sha2::Sha256;

use super::FusionError;
use crate::sink::kafka::commands::{sign, HMAC_HEADER};

pub use crate::sink::kafka::commands::TS_HEADER;

/// Signs and verifies with the fleet key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: &str) -> Signer {
        Signer {
            key: key.as_bytes().to_vec(),
        }
    }

    pub fn sign(&self, body: &[u8]) -> String {
        sign(&self.key, body)
    }

    /// What a tombstone's signature covers: its key and issue time.
    pub fn tombstone_body(key: &str, ts: i64) -> Vec<u8> {
        crate::sink::kafka::commands::tombstone_body(key, ts)
    }

    /// Constant-time check of a hex tag over `body`.
    pub fn verify(&self, body: &[u8], tag: &[u8]) -> bool {
        let Some(raw) = std::str::from_utf8(tag).ok().and_then(|t| hex(t.trim())) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&raw).is_ok()
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A consumed message whose signature held.
#[derive(Debug, Clone)]
pub struct In {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    /// `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// A tombstone's signed issue time.
    pub ts: Option<i64>,
}

fn header<'a>(m: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
}

/// Why a message was dropped before any stage saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Unsigned,
    Forged,
}

/// Checks a message's signature; tombstones sign their key and time.
pub fn verified(m: &BorrowedMessage<'_>, signer: &Signer) -> Result<In, Rejected> {
    let tag = header(m, HMAC_HEADER).ok_or(Rejected::Unsigned)?;
    let key = m
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    let (value, ts) = match m.payload() {
        Some(p) => {
            if !signer.verify(p, tag) {
                return Err(Rejected::Forged);
            }
            (Some(p.to_vec()), None)
        }
        None => {
            let ts: i64 = header(m, TS_HEADER)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .ok_or(Rejected::Unsigned)?;
            if !signer.verify(&Signer::tombstone_body(&key, ts), tag) {
                return Err(Rejected::Forged);
            }
            (None, Some(ts))
        }
    };
    Ok(In {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key,
        value,
        ts,
    })
}

struct Ctx {
    failures: Arc<AtomicU64>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("fusion: a produce failed: {e}");
        }
    }
}

/// A signing producer. `flush` reports whether everything since the last
/// flush was acknowledged, so a stage commits its input only then.
pub struct Out {
    producer: ThreadedProducer<Ctx>,
    failures: Arc<AtomicU64>,
    seen_failures: u64,
    signer: Signer,
}

impl Out {
    pub fn new(brokers: &str, signer: Signer) -> Result<Out, FusionError> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("client.id", "vigil-fusion")
            .create_with_context(Ctx {
                failures: failures.clone(),
            })
            .map_err(|e| FusionError::Kafka(format!("producer for {brokers}: {e}")))?;
        Ok(Out {
            producer,
            failures,
            seen_failures: 0,
            signer,
        })
    }

    /// Produces `value` (or a tombstone when `None`) signed, keyed `key`.
    pub fn send(&self, topic: &str, key: &str, value: Option<&[u8]>) -> Result<(), FusionError> {
        let now = chrono::Utc::now().timestamp();
        let (tag, ts) = match value {
            Some(v) => (self.signer.sign(v), None),
            None => (
                self.signer.sign(&Signer::tombstone_body(key, now)),
                Some(now.to_string()),
            ),
        };
        let mut headers = OwnedHeaders::new().insert(Header {
            key: HMAC_HEADER,
            value: Some(tag.as_bytes()),
        });
        if let Some(ts) = &ts {
            headers = headers.insert(Header {
                key: TS_HEADER,
                value: Some(ts.as_bytes()),
            });
        }
        let mut record: BaseRecord<'_, str, [u8], ()> =
            BaseRecord::to(topic).key(key).headers(headers);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let mut record = record;
        // A full local queue: wait for room rather than drop a decision.
        for _ in 0..100 {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((e, r)) => {
                    record = r;
                    tracing::debug!("fusion: produce deferred: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        Err(FusionError::Kafka(format!(
            "producer queue full for {topic}"
        )))
    }

    pub fn send_json<T: serde::Serialize>(
        &self,
        topic: &str,
        key: &str,
        v: &T,
    ) -> Result<(), FusionError> {
        let body = serde_json::to_vec(v).map_err(|e| FusionError::Kafka(e.to_string()))?;
        self.send(topic, key, Some(&body))
    }

    /// Waits for every outstanding delivery; an error when any failed.
    pub fn flush(&mut self) -> Result<(), FusionError> {
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| FusionError::Kafka(format!("flush: {e}")))?;
        let f = self.failures.load(Ordering::Relaxed);
        if f > self.seen_failures {
            self.seen_failures = f;
            return Err(FusionError::Kafka(
                "deliveries failed; input is read again".into(),
            ));
        }
        Ok(())
    }
}

pub fn consumer(brokers: &str, group: &str) -> Result<BaseConsumer, FusionError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // Short timeouts: a dead instance's partitions move on quickly.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "30000")
        .set("client.id", "vigil-fusion")
        .create()
        .map_err(|e| FusionError::Kafka(format!("consumer for {brokers}: {e}")))
}

/// Partitions of `topic` (0 when the broker does not know it yet).
pub fn partitions(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>, FusionError> {
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| FusionError::Kafka(format!("metadata for {topic}: {e}")))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Last value per key (`None`: a tombstone), with the partition it came from.
pub type Latest = BTreeMap<String, (i32, Option<Vec<u8>>)>;

/// A reader of a whole topic (every partition, from the start), for
/// global tables (inventory) and for restoring state from a changelog.
pub struct Table {
    c: BaseConsumer,
    topic: String,
}

impl Table {
    pub fn open(brokers: &str, topic: &str, only: Option<&[i32]>) -> Result<Table, FusionError> {
        let c = consumer(brokers, "vigil-fusion-tables")?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions(&c, topic)? {
            if only.is_none_or(|o| o.contains(&p)) {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .map_err(|e| FusionError::Kafka(e.to_string()))?;
            }
        }
        c.assign(&tpl)
            .map_err(|e| FusionError::Kafka(format!("assign {topic}: {e}")))?;
        Ok(Table {
            c,
            topic: topic.to_string(),
        })
    }

    /// What arrived since the last call, without waiting.
    pub fn poll(&self, signer: &Signer, rejected: &mut u64) -> Vec<In> {
        let mut out = Vec::new();
        while let Some(r) = self.c.poll(Duration::ZERO) {
            match r {
                Ok(m) => match verified(&m, signer) {
                    Ok(i) => out.push(i),
                    Err(_) => *rejected += 1,
                },
                Err(e) => tracing::debug!("fusion: reading {}: {e}", self.topic),
            }
            if out.len() >= 10_000 {
                break;
            }
        }
        out
    }

    /// Everything up to the current end (the high watermark of each
    /// partition at the time of the call), last value per key.
    pub fn read_to_end(&self, signer: &Signer, rejected: &mut u64) -> Result<Latest, FusionError> {
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let assigned = self
            .c
            .assignment()
            .map_err(|e| FusionError::Kafka(e.to_string()))?;
        for e in assigned.elements() {
            let (_, high) = self
                .c
                .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(5))
                .map_err(|e| FusionError::Kafka(format!("watermarks of {}: {e}", self.topic)))?;
            if high > 0 {
                ends.insert(e.partition(), high);
            }
        }
        let mut table = BTreeMap::new();
        let started = Instant::now();
        // Past the reported ends, read on until the topic is quiet: a broker
        // may report the end early (tansu 0.6 reports the last batch's base
        // offset + 1, not the last record's), and a record missed here would
        // be a decision made twice.
        loop {
            if started.elapsed() > Duration::from_secs(120) {
                return Err(FusionError::Kafka(format!(
                    "reading {} to its end took too long",
                    self.topic
                )));
            }
            let wait = if ends.is_empty() { 300 } else { 200 };
            let Some(r) = self.c.poll(Duration::from_millis(wait)) else {
                if ends.is_empty() {
                    break;
                }
                continue;
            };
            let m = match r {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("fusion: reading {}: {e}", self.topic);
                    continue;
                }
            };
            let (p, o) = (m.partition(), m.offset());
            match verified(&m, signer) {
                Ok(i) => {
                    table.insert(i.key, (p, i.value));
                }
                Err(_) => *rejected += 1,
            }
            if ends.get(&p).is_some_and(|end| o + 1 >= *end) {
                ends.remove(&p);
            }
        }
        Ok(table)
    }
}

/// A topic fusion needs, with its partition count and whether it is compacted.
pub struct Spec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub compact: bool,
}

/// Creates missing topics; existing ones are left as they are.
pub fn create_topics(brokers: &str, specs: &[Spec<'_>]) -> Result<(), FusionError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| FusionError::Kafka(format!("admin client for {brokers}: {e}")))?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(s.name, s.partitions, TopicReplication::Fixed(1));
            if s.compact {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FusionError::Kafka(e.to_string()))?;
    let results = rt
        .block_on(admin.create_topics(
            topics.iter(),
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .map_err(|e| FusionError::Kafka(format!("creating topics: {e}")))?;
    for r in results {
        if let Err((name, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                tracing::warn!("fusion: topic {name}: {code:?}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_hold_only_for_the_signed_bytes() {
        let s = Signer::new("fleet-secret");
        let tag = s.sign(b"body");
        assert!(s.verify(b"body", tag.as_bytes()));
        assert!(!s.verify(b"bodY", tag.as_bytes()));
        assert!(!Signer::new("other").verify(b"body", tag.as_bytes()));
        assert!(!s.verify(b"body", b"zz"));
        let t = Signer::tombstone_body("203.0.113.9", 5);
        assert!(s.verify(&t, s.sign(&t).as_bytes()));
        assert!(!s.verify(
            &Signer::tombstone_body("203.0.113.9", 6),
            s.sign(&t).as_bytes()
        ));
    }
}
