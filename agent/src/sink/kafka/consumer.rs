//! Reads `defense.commands` and `threat.enriched` on a thread of its own
//! (librdkafka's consumer API blocks) and hands each message to the
//! daemon's loop, which verifies and executes it. Partitions are assigned
//! explicitly (no group join delay) and read from the offsets the daemon
//! saved, or from the beginning the first time: old messages are refused
//! as stale by their timestamp, so none is executed twice or late.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::producer::Inbound;

/// librdkafka's prefetch queue (KiB) and the most one fetch asks for.
const PREFETCH_KIB: &str = "2048";
const FETCH_MAX_BYTES: &str = "2097152";

/// Next offset to read, per "topic/partition".
pub type Offsets = BTreeMap<String, i64>;

/// The offsets the daemon saved (atomically, see `util::statefile`); the
/// daemon moved a corrupt file aside at start, so anything unreadable here
/// means none.
pub fn load_offsets(path: &Path) -> Offsets {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Assigns every partition of `topics`, from the saved offsets, except the
/// `replay` topics, read from the start at every start (a compacted topic
/// of decisions in force: a new or restarted agent must hold them all).
fn assign(
    c: &BaseConsumer,
    topics: &[String],
    replay: &[String],
    offsets: &Offsets,
) -> Result<usize, String> {
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = c
            .fetch_metadata(Some(t), Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        for mt in md.topics() {
            if mt.error().is_some() {
                continue;
            }
            for p in mt.partitions() {
                let key = format!("{t}/{}", p.id());
                let off = offsets
                    .get(&key)
                    .filter(|_| !replay.contains(t))
                    .map(|o| Offset::Offset(*o))
                    .unwrap_or(Offset::Beginning);
                tpl.add_partition_offset(t, p.id(), off)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let n = tpl.count();
    if n == 0 {
        return Err("no partitions yet".into());
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    Ok(n)
}

/// Starts the consumer thread; it stops when the daemon drops the receiver.
pub fn spawn(
    brokers: String,
    topics: Vec<String>,
    replay: Vec<String>,
    offsets_path: PathBuf,
    tx: mpsc::Sender<Inbound>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("vigil-kafka-in".into())
        .spawn(move || run(brokers, topics, replay, offsets_path, tx))
}

fn run(
    brokers: String,
    topics: Vec<String>,
    replay: Vec<String>,
    offsets_path: PathBuf,
    tx: mpsc::Sender<Inbound>,
) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "vigil-agent")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka prefetches up to 64 MiB by default: whoever can write
        // to these topics would decide that much of the agent's memory.
        // Fleet messages are small; a fetch still returns one message
        // larger than this, so the consumer always makes progress.
        .set("queued.max.messages.kbytes", PREFETCH_KIB)
        .set("fetch.max.bytes", FETCH_MAX_BYTES)
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("kafka consumer for {brokers}: {e}; commands and indicators are off");
            return;
        }
    };
    let mut warned = false;
    // Topics may not exist yet: keep asking, quietly after the first line.
    loop {
        if tx.is_closed() {
            return;
        }
        match assign(&consumer, &topics, &replay, &load_offsets(&offsets_path)) {
            Ok(n) => {
                tracing::info!("kafka: reading {} on {n} partitions", topics.join(", "));
                break;
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "kafka: cannot read {} yet ({e}); retrying",
                        topics.join(", ")
                    );
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    loop {
        if tx.is_closed() {
            return;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) if tx.blocking_send(Inbound::from_message(&m)).is_err() => return,
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::debug!("kafka consumer: {e}"),
            None => {}
        }
    }
}
