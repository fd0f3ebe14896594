//! The Kafka reporter: every record bound for Kafka is appended to the
//! durable spool first and produced from there in sequence order; the
//! spool's watermark advances only on the broker's acknowledgement. A
//! broker outage or an agent crash therefore loses nothing that reached the
//! spool: what was unacknowledged is produced again (at least once; record
//! ids let consumers drop duplicates). A record the spool could not take
//! (disk full) waits in a bounded in-memory backlog and is appended again
//! at the next pump, in order.

use std::collections::BTreeSet;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::spool::{Class, Spool, SpoolConfig, SpoolError};
use crate::config::KafkaConfig;
use crate::sink::backlog::Backlog;
use crate::sink::format::Format;

/// Bytes of records kept in memory while the spool cannot take them.
pub const BACKLOG_BYTES: usize = 16 << 20;

/// Spooled records handed to librdkafka and not yet acknowledged.
const MAX_IN_FLIGHT: usize = 10_000;
const READ_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka producer for {brokers}: {reason}")]
    Client { brokers: String, reason: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

struct Delivery {
    seq: u64,
    error: Option<String>,
}

struct Ctx {
    tx: Mutex<Sender<Delivery>>,
}

/// The delivery opaque of records produced around the spool.
const NOT_SPOOLED: usize = usize::MAX;

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, seq: usize) {
        // Not a spool record (the inventory): nothing to acknowledge.
        if seq == NOT_SPOOLED {
            return;
        }
        let error = match result {
            Ok(_) => None,
            Err((e, _)) => Some(e.to_string()),
        };
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(Delivery {
                seq: seq as u64,
                error,
            });
        }
    }
}

/// Counters the metrics and `agent_stats` read.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReportStats {
    pub delivered: u64,
    pub delivery_errors: u64,
    /// Telemetry over `kafka.telemetry.max_per_second`.
    pub shed_rate: u64,
    pub producer_restarts: u64,
    pub last_error: String,
}

pub struct Reporter {
    producer: ThreadedProducer<Ctx>,
    cfg: KafkaConfig,
    host: String,
    pub spool: Spool,
    rx: Receiver<Delivery>,
    tx: Sender<Delivery>,
    next_send: u64,
    in_flight: usize,
    done: BTreeSet<u64>,
    paused_until: Option<Instant>,
    /// A delivery failed and none has succeeded since (the broker is
    /// likely unreachable): one record at a time goes out as a probe,
    /// rather than MAX_IN_FLIGHT copies in librdkafka that all time out
    /// together and are produced again.
    probing: bool,
    tokens: f64,
    refilled: Instant,
    flow_acc: f64,
    /// Records the spool refused with an I/O error, oldest first.
    backlog: Backlog<(Class, String)>,
    pub stats: ReportStats,
    /// What this reporter publishes; not native only for the SIEM's copy.
    format: Format,
}

fn producer(cfg: &KafkaConfig, tx: &Sender<Delivery>) -> Result<ThreadedProducer<Ctx>, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("client.id", "vigil")
        .create_with_context(Ctx {
            tx: Mutex::new(tx.clone()),
        })
        .map_err(|e| KafkaError::Client {
            brokers: cfg.brokers.clone(),
            reason: e.to_string(),
        })
}

/// Adds `"id"` to a JSON object line that has none, so every message can
/// be de-duplicated by consumers.
pub fn with_id(line: &str) -> String {
    if line.starts_with("{\"id\":") || line.contains(",\"id\":\"") || !line.starts_with('{') {
        return line.to_string();
    }
    let id = crate::util::id::new_id();
    if line == "{}" {
        return format!("{{\"id\":\"{id}\"}}");
    }
    format!("{{\"id\":\"{id}\",{}", &line[1..])
}

impl Reporter {
    pub fn new(
        cfg: &KafkaConfig,
        host: &str,
        spool_dir: &std::path::Path,
    ) -> Result<Reporter, KafkaError> {
        let spool = Spool::open(
            spool_dir,
            SpoolConfig {
                max_bytes: cfg.spool.max_bytes,
                segment_bytes: cfg.spool.segment_bytes,
                telemetry_share: cfg.spool.telemetry_share,
            },
        )?;
        let (tx, rx) = channel();
        let producer = producer(cfg, &tx)?;
        if spool.pending() > 0 {
            tracing::info!(
                "kafka: {} records from the spool will be produced again",
                spool.pending()
            );
        }
        Ok(Reporter {
            producer,
            next_send: spool.acked() + 1,
            cfg: cfg.clone(),
            host: host.to_string(),
            spool,
            rx,
            tx,
            in_flight: 0,
            done: BTreeSet::new(),
            paused_until: None,
            probing: false,
            tokens: cfg.telemetry.max_per_second as f64,
            refilled: Instant::now(),
            flow_acc: 0.0,
            backlog: Backlog::new(BACKLOG_BYTES, |(_, l)| l.len()),
            stats: ReportStats::default(),
            format: Format::Native,
        })
    }

    /// Publishes records in `format` to `<topic>.<format>` for the events,
    /// alerts and actions topics, from its own spool; records the format
    /// has no mapping for, and the inventory, are not published.
    pub fn formatted(
        cfg: &KafkaConfig,
        host: &str,
        spool_dir: &std::path::Path,
        format: Format,
    ) -> Result<Reporter, KafkaError> {
        let mut cfg = cfg.clone();
        for t in [
            &mut cfg.topics.events,
            &mut cfg.topics.alerts,
            &mut cfg.topics.actions,
        ] {
            *t = format!("{t}.{}", format.as_str());
        }
        let mut r = Reporter::new(&cfg, host, spool_dir)?;
        r.format = format;
        Ok(r)
    }

    /// Appends what waits in the backlog, oldest first; stops at the first
    /// I/O error (the rest waits for the next pump).
    fn drain_backlog(&mut self) -> Result<(), KafkaError> {
        while let Some((class, line)) = self.backlog.front() {
            match self.spool.append(*class, line.as_bytes()) {
                Ok(_) | Err(SpoolError::TooLarge(_)) => {
                    self.backlog.pop_front();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether records of `kind` go to Kafka at all (so callers can skip
    /// serialising those that do not).
    pub fn wants(&self, kind: &str) -> bool {
        if kind == "inventory" {
            return self.format == Format::Native;
        }
        class_of(kind) != Class::Telemetry || self.cfg.telemetry.kinds.iter().any(|k| k == kind)
    }

    /// Queues one output line; telemetry may be filtered, sampled or shed.
    pub fn submit(&mut self, kind: &str, line: &str) -> Result<(), KafkaError> {
        let class = class_of(kind);
        if class == Class::Telemetry {
            if !self.cfg.telemetry.kinds.iter().any(|k| k == kind) {
                return Ok(());
            }
            if kind == "flow" {
                self.flow_acc += self.cfg.telemetry.flow_sample;
                if self.flow_acc < 1.0 {
                    return Ok(());
                }
                self.flow_acc -= 1.0;
            }
            let now = Instant::now();
            let rate = self.cfg.telemetry.max_per_second as f64;
            self.tokens =
                (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
            self.refilled = now;
            if self.tokens < 1.0 {
                self.stats.shed_rate += 1;
                return Ok(());
            }
            self.tokens -= 1.0;
        }
        // A formatted record has its ids where its format puts them.
        let line = match self.format {
            Format::Native => with_id(line),
            _ => line.to_string(),
        };
        // Behind a backlog, a record queues so the order holds.
        if !self.backlog.is_empty() {
            self.backlog.push((class, line), false);
            return self.drain_backlog();
        }
        match self.spool.append(class, line.as_bytes()) {
            Ok(_) => Ok(()),
            Err(e @ SpoolError::TooLarge(_)) => Err(e.into()),
            Err(e) => {
                self.backlog.push((class, line), false);
                Err(e.into())
            }
        }
    }

    fn topic(&self, class: Class) -> &str {
        match class {
            Class::Telemetry => &self.cfg.topics.events,
            Class::Alert => &self.cfg.topics.alerts,
            Class::Action => &self.cfg.topics.actions,
        }
    }

    /// Retries the backlog, then reads delivery reports and produces what
    /// the spool holds next.
    pub fn pump(&mut self) -> Result<(), KafkaError> {
        let retried = self.drain_backlog();
        self.produce()?;
        retried
    }

    fn produce(&mut self) -> Result<(), KafkaError> {
        while let Ok(d) = self.rx.try_recv() {
            self.in_flight = self.in_flight.saturating_sub(1);
            match d.error {
                None => {
                    self.stats.delivered += 1;
                    self.done.insert(d.seq);
                    self.probing = false;
                }
                Some(e) => {
                    self.stats.delivery_errors += 1;
                    self.probing = true;
                    if self.stats.delivery_errors.is_power_of_two() {
                        tracing::warn!(
                            "kafka delivery failed ({e}); records stay in the spool ({} errors so far)",
                            self.stats.delivery_errors
                        );
                    }
                    self.stats.last_error = e;
                    self.next_send = self.next_send.min(d.seq);
                    self.paused_until = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
        let mut w = self.spool.acked();
        while self.done.remove(&(w + 1)) {
            w += 1;
        }
        // Acknowledgements for records already below the watermark.
        while self.done.first().is_some_and(|s| *s <= w) {
            self.done.pop_first();
        }
        self.spool.set_acked(w)?;
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            // An idempotent producer can hit a fatal error when the broker
            // lost its state (e.g. restarted empty): start a fresh one and
            // produce everything unacknowledged again.
            tracing::warn!("kafka producer fatal error {code:?}: {reason}; recreating it");
            self.producer = producer(&self.cfg, &self.tx)?;
            self.stats.producer_restarts += 1;
            self.in_flight = 0;
            self.done.clear();
            self.next_send = self.spool.acked() + 1;
        }
        if let Some(t) = self.paused_until {
            if Instant::now() < t {
                return Ok(());
            }
            self.paused_until = None;
        }
        self.next_send = self.next_send.max(self.spool.acked() + 1);
        let limit = if self.probing { 1 } else { MAX_IN_FLIGHT };
        'fill: while self.in_flight < limit && self.next_send < self.spool.next_seq() {
            let room = READ_BATCH.min(limit - self.in_flight);
            let batch = self.spool.read(self.next_send, room)?;
            let Some(first) = batch.first() else { break };
            // Sequence numbers skipped by a damaged segment are gone.
            self.next_send = self.next_send.max(first.0);
            for (seq, class, payload) in batch {
                let formatted_id;
                let id = match self.format {
                    Format::Native => record_id(&payload),
                    f => {
                        formatted_id = f.id_in(&payload).unwrap_or_default();
                        formatted_id.as_bytes()
                    }
                };
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: "id",
                    value: Some(id),
                });
                // Signed, so fusion trusts only what an agent of this fleet
                // produced (a writer without the key cannot pose as one).
                let tag = (!self.cfg.hmac_key.is_empty())
                    .then(|| super::commands::sign(self.cfg.hmac_key.as_bytes(), &payload));
                if let Some(tag) = &tag {
                    headers = headers.insert(Header {
                        key: super::commands::HMAC_HEADER,
                        value: Some(tag.as_bytes()),
                    });
                }
                let record = BaseRecord::with_opaque_to(self.topic(class), seq as usize)
                    .key(self.host.as_str())
                    .payload(&payload)
                    .headers(headers);
                match self.producer.send(record) {
                    Ok(()) => {
                        self.in_flight += 1;
                        self.next_send = seq + 1;
                    }
                    Err((e, _)) => {
                        // Queue full: librdkafka is behind; try again next pump.
                        tracing::debug!("kafka produce deferred: {e}");
                        break 'fill;
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes this host's entry on the compacted inventory topic (key:
    /// host), signed. Not spooled: it is state, published again at every
    /// start and periodically, so a lost one is replaced by the next.
    pub fn publish_inventory(&mut self, topic: &str, entry: &serde_json::Value) {
        let body = entry.to_string();
        let mut headers = OwnedHeaders::new();
        let tag = (!self.cfg.hmac_key.is_empty())
            .then(|| super::commands::sign(self.cfg.hmac_key.as_bytes(), body.as_bytes()));
        if let Some(tag) = &tag {
            headers = headers.insert(Header {
                key: super::commands::HMAC_HEADER,
                value: Some(tag.as_bytes()),
            });
        }
        let record = BaseRecord::with_opaque_to(topic, NOT_SPOOLED)
            .key(self.host.as_str())
            .payload(body.as_bytes())
            .headers(headers);
        if let Err((e, _)) = self.producer.send(record) {
            tracing::debug!("kafka: inventory not sent this time: {e}");
        }
    }

    /// At shutdown: give in-flight records a moment, then save the watermark.
    pub fn close(&mut self, wait: Duration) {
        let _ = self.producer.flush(wait);
        let _ = self.pump();
        let _ = self.spool.close();
    }
}

/// The record's top-level `id` without parsing the whole line: every line
/// the agent spools has `"id":"` as its first or second key (`with_id` puts
/// it first when missing), and JSON escaping keeps string contents from
/// containing that byte sequence.
fn record_id(payload: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"id\":\"";
    let Some(start) = payload.windows(KEY.len()).position(|w| w == KEY) else {
        return b"";
    };
    let rest = &payload[start + KEY.len()..];
    let end = rest.iter().position(|&b| b == b'"').unwrap_or(rest.len());
    &rest[..end]
}

/// Which spool class and topic a record kind belongs to.
pub fn class_of(kind: &str) -> Class {
    match kind {
        "alert" => Class::Alert,
        "action" | "decision" | "notification" | "command" | "command_summary" => Class::Action,
        _ => Class::Telemetry,
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.spool.close();
    }
}

/// A message from the broker for the daemon.
pub struct Inbound {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: Vec<u8>,
    pub hmac: Option<Vec<u8>>,
    /// A record with no value: on a compacted topic, "this key is gone".
    pub tombstone: bool,
    /// A tombstone's signed issue time (header `ts`).
    pub ts_header: Option<i64>,
    /// Bytes of a message over [`MAX_INBOUND_BYTES`]: its body and headers
    /// were dropped on arrival and it is refused by size.
    pub too_large: Option<usize>,
}

/// Largest fleet message (body and headers) kept for the daemon. Commands
/// and decisions are a few hundred bytes; without this, anyone who can
/// write to the topics could queue 256 messages of librdkafka's 1 MB each
/// in the agent's channel.
pub const MAX_INBOUND_BYTES: usize = 64 * 1024;

impl Inbound {
    pub fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Inbound {
        use rdkafka::message::Headers;
        let size = m.payload_len()
            + m.key().map_or(0, <[u8]>::len)
            + m.headers().map_or(0, |h| {
                h.iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                    .sum()
            });
        if size > MAX_INBOUND_BYTES {
            return Inbound {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: String::new(),
                payload: Vec::new(),
                hmac: None,
                tombstone: false,
                ts_header: None,
                too_large: Some(size),
            };
        }
        let header = |name: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value.map(<[u8]>::to_vec))
            })
        };
        Inbound {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            hmac: header(super::commands::HMAC_HEADER),
            tombstone: m.payload().is_none(),
            ts_header: header(super::commands::TS_HEADER)
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.trim().parse().ok()),
            too_large: None,
        }
    }
}

impl crate::sink::Sink for Reporter {
    fn name(&self) -> &'static str {
        match self.format {
            Format::Native => "kafka",
            Format::Ocsf => "kafka-ocsf",
            Format::Ecs => "kafka-ecs",
        }
    }

    fn wants(&self, kind: &str) -> bool {
        Reporter::wants(self, kind)
    }

    fn write(
        &mut self,
        out: &crate::sink::Output<'_>,
        line: &str,
    ) -> Result<(), crate::sink::SinkError> {
        if self.format != Format::Native {
            return match self.format.render_with_id(out) {
                Some((l, _)) => Ok(self.submit(out.kind(), &l)?),
                None => Ok(()),
            };
        }
        if out.kind() == "inventory" {
            let topic = self.cfg.topics.inventory.clone();
            let entry: serde_json::Value = serde_json::from_str(line)?;
            self.publish_inventory(&topic, &entry);
            return Ok(());
        }
        Ok(self.submit(out.kind(), line)?)
    }

    fn tick(&mut self) -> Result<(), crate::sink::SinkError> {
        Ok(self.pump()?)
    }

    fn close(&mut self) {
        // What is not acknowledged now stays spooled for the next start.
        Reporter::close(self, Duration::from_secs(2));
    }

    fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "brokers": self.cfg.brokers,
            "format": self.format.as_str(),
            "topics": [&self.cfg.topics.events, &self.cfg.topics.alerts, &self.cfg.topics.actions],
            "spool_records": self.spool.pending(),
            "spool_bytes": self.spool.bytes(),
            "spool": self.spool.stats,
            "delivered": self.stats.delivered,
            "delivery_errors": self.stats.delivery_errors,
            "telemetry_shed": self.stats.shed_rate,
            "producer_restarts": self.stats.producer_restarts,
            "last_error": self.stats.last_error,
            "backlog_records": self.backlog.len(),
            "backlog_bytes": self.backlog.bytes(),
            "backlog_shed": self.backlog.shed,
        })
    }

    fn observe(&self, m: &crate::service::metrics::Metrics) {
        // The metrics describe the native reporter; a formatted copy's
        // counters are in `vigil status`.
        if self.format != Format::Native {
            return;
        }
        m.spool_bytes.set(self.spool.bytes() as i64);
        m.spool_records.set(self.spool.pending() as i64);
        m.mirror("kafka_ok", self.stats.delivered, &m.kafka_delivered);
        m.mirror(
            "kafka_err",
            self.stats.delivery_errors,
            &m.kafka_delivery_errors,
        );
        m.mirror("kafka_shed", self.stats.shed_rate, &m.kafka_telemetry_shed);
        crate::sink::observe_backlog(m, "kafka", self.backlog.shed, self.backlog.bytes());
        let s = self.spool.stats;
        m.mirror(
            "spool_shed_t",
            s.shed_telemetry,
            &m.spool_shed.with_label_values(&["telemetry"]),
        );
        m.mirror(
            "spool_shed_a",
            s.shed_alerts_actions,
            &m.spool_shed.with_label_values(&["alert_action"]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_added_once() {
        let l = with_id(r#"{"kind":"flow","bytes":3}"#);
        assert!(l.starts_with(r#"{"id":""#), "{l}");
        assert!(l.ends_with(r#""kind":"flow","bytes":3}"#));
        assert_eq!(with_id(&l), l);
        let a = r#"{"kind":"alert","id":"x"}"#;
        assert_eq!(with_id(a), a);
    }

    #[test]
    fn record_ids_are_read_without_parsing() {
        assert_eq!(record_id(br#"{"id":"a-1","kind":"flow"}"#), b"a-1");
        assert_eq!(record_id(br#"{"kind":"alert","id":"x9","n":1}"#), b"x9");
        // An "id" inside a string value is escaped, so it is not taken.
        assert_eq!(
            record_id(br#"{"kind":"process_exec","argv":["\"id\":\"no\""],"id":"yes"}"#),
            b"yes"
        );
        assert_eq!(record_id(b"{}"), b"");
    }

    #[test]
    fn a_record_the_spool_refused_is_appended_again_in_order() {
        let dir = std::env::temp_dir().join(format!("vigil-reporter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            ..KafkaConfig::default()
        };
        let mut r = Reporter::new(&cfg, "h", &dir).expect("reporter");
        r.spool.fail_after = Some(3);
        assert!(r.submit("alert", r#"{"id":"a1"}"#).is_err());
        assert_eq!(r.backlog.len(), 1);
        // The next record queues behind it; both land, a1 first.
        r.submit("alert", r#"{"id":"a2"}"#).expect("retried");
        assert!(r.backlog.is_empty());
        let got: Vec<Vec<u8>> = r
            .spool
            .read(1, 10)
            .expect("read")
            .into_iter()
            .map(|x| x.2)
            .collect();
        assert_eq!(got, [&br#"{"id":"a1"}"#[..], br#"{"id":"a2"}"#]);
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_formatted_copy_has_its_own_topics_and_spool_and_no_inventory() {
        let dir = std::env::temp_dir().join(format!("vigil-reporter-ocsf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            ..KafkaConfig::default()
        };
        let mut r = Reporter::formatted(&cfg, "h", &dir, Format::Ocsf).expect("reporter");
        assert_eq!(r.topic(Class::Alert), "defense.alerts.ocsf");
        assert_eq!(r.topic(Class::Telemetry), "security.events.ocsf");
        assert_eq!(r.topic(Class::Action), "defense.actions.ocsf");
        assert!(!crate::sink::Sink::wants(&r, "inventory"));
        assert_eq!(crate::sink::Sink::name(&r), "kafka-ocsf");
        let samples = crate::sink::format::samples::samples();
        let out = crate::sink::Output::Alert(&samples.alert);
        let native = out.to_json().expect("json");
        crate::sink::Sink::write(&mut r, &out, &native).expect("write");
        let got = r.spool.read(1, 10).expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, Class::Alert);
        let v: serde_json::Value = serde_json::from_slice(&got[0].2).expect("json");
        assert_eq!(v["class_uid"], 2004);
        assert!(v.get("id").is_none(), "no id added outside the format: {v}");
        assert_eq!(
            Format::Ocsf.id_in(&got[0].2).as_deref(),
            Some(samples.alert.id.as_str()),
            "the alert's id is its metadata.uid"
        );
        let exec = crate::sink::Output::Event(&samples.events[1]);
        let (line, id) = Format::Ecs.render_with_id(&exec).expect("mapped");
        assert_eq!(
            Format::Ecs.id_in(line.as_bytes()),
            Some(id),
            "telemetry gets an id"
        );
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn with_the_broker_unreachable_one_record_at_a_time_is_in_flight() {
        let dir = std::env::temp_dir().join(format!("vigil-reporter-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Nothing listens on port 9: every record times out.
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            message_timeout_ms: 300,
            ..KafkaConfig::default()
        };
        let mut r = Reporter::new(&cfg, "h", &dir).expect("reporter");
        for i in 0..50 {
            r.submit("agent_stats", &format!(r#"{{"id":"s{i}"}}"#))
                .expect("spooled");
        }
        r.pump().expect("pump");
        assert_eq!(r.in_flight, 50, "all go out while nothing failed");
        // Bounded wait for the timeouts (300 ms each) and the 1 s pause.
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(50));
            r.pump().expect("pump");
            if r.stats.delivery_errors >= 50 && r.paused_until.is_none() {
                break;
            }
        }
        assert!(r.stats.delivery_errors >= 50, "{:?}", r.stats);
        assert!(r.probing);
        assert_eq!(r.in_flight, 1, "one probe, not 50 copies");
        assert_eq!(r.spool.pending(), 50, "nothing lost");
        drop(r);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kinds_map_to_classes() {
        assert_eq!(class_of("alert"), Class::Alert);
        assert_eq!(class_of("decision"), Class::Action);
        assert_eq!(class_of("flow"), Class::Telemetry);
    }
}
