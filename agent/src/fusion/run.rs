//! `vigil fusion run`: the stages as Kafka consumers, one thread and one
//! consumer group each. A stage restores its state from its changelog for
//! the partitions it is assigned (again after every rebalance), applies the
//! pure stage function to each verified record, produces the outputs and
//! the changed state, and commits its input offsets only after the broker
//! acknowledged all of that: at least once, and the stages are idempotent,
//! so a re-read record changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use serde::{Deserialize, Serialize};

use super::chains::{self, ChainIn, ChainOut, HostChains, Pending};
use super::config::FusionConfig;
use super::consensus::{self, Budget, ConsensusOut, Ctx, Decision, IocState, Sighting};
use super::incidents::{self, IncidentIn, IncidentOut, Incidents};
use super::inventory::{Allowlist, Inventory};
use super::model::{ActionIn, AlertIn, ConnectIn, InventoryIn};
use super::narrative;
use super::stream::{self, In, Out, Signer, Spec, Table};
use super::FusionError;
use crate::config::Config;

/// Values on the sightings topic (keyed by indicator).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToConsensus {
    Sighting(Sighting),
    /// `vigil fusion unblock`: signed, fresh, once.
    Unblock {
        id: String,
        ts: i64,
        indicator: String,
        by: String,
    },
}

/// Values on the single-partition incident-events topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToIncidents {
    Alert(AlertIn),
    Action(ActionIn),
    Decision(Decision),
    Link(chains::Link),
}

/// Counters each stage keeps; logged at shutdown and every minute.
#[derive(Debug, Default)]
pub struct Counters {
    pub records: AtomicU64,
    pub rejected: AtomicU64,
    pub malformed: AtomicU64,
    pub decisions: AtomicU64,
    pub lifts: AtomicU64,
    pub links: AtomicU64,
    pub incidents: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "records {} rejected {} malformed {} decisions {} lifts {} links {} incident updates {}",
            g(&self.records),
            g(&self.rejected),
            g(&self.malformed),
            g(&self.decisions),
            g(&self.lifts),
            g(&self.links),
            g(&self.incidents)
        )
    }
}

/// What every stage thread shares.
#[derive(Clone)]
pub struct Env {
    pub brokers: String,
    pub cfg: Arc<FusionConfig>,
    pub kafka: Arc<crate::config::KafkaConfig>,
    pub signer: Signer,
    pub stop: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
}

pub const STAGES: [&str; 4] = ["rekey", "consensus", "chains", "incidents"];

/// The topics fusion reads and writes, created when missing.
pub fn topic_specs<'a>(env: &'a Env, partitions: i32) -> Vec<Spec<'a>> {
    let t = &env.cfg.topics;
    let k = &env.kafka.topics;
    let p = |name: &'a str, compact: bool| Spec {
        name,
        partitions,
        compact,
    };
    vec![
        p(&k.alerts, false),
        p(&k.actions, false),
        p(&k.events, false),
        p(&k.enriched, true),
        p(&k.inventory, true),
        p(&t.sightings, false),
        p(&t.consensus_changelog, true),
        p(&t.pending_links, false),
        p(&t.chains_changelog, true),
        Spec {
            name: &t.incident_events,
            partitions: 1,
            compact: false,
        },
        p(&t.incidents, true),
    ]
}

fn now_s() -> f64 {
    chrono::Utc::now().timestamp_micros() as f64 / 1e6
}

fn parse<T: serde::de::DeserializeOwned>(i: &In, counters: &Counters) -> Option<T> {
    let v = i.value.as_deref()?;
    match serde_json::from_slice(v) {
        Ok(t) => Some(t),
        Err(_) => {
            Counters::add(&counters.malformed, 1);
            None
        }
    }
}

/// The common loop: poll a batch of verified records, hand each to
/// `on_in`, run `on_tick` when due, flush, then commit.
/// Records handled before the outputs are flushed and the input committed:
/// one broker round trip per batch, so a backlog drains in large ones.
const BATCH: usize = 5_000;
/// A batch closes after this long even when short (latency when idle).
const BATCH_TIME: Duration = Duration::from_millis(100);

/// One stage's handling of its records, its partitions and the clock.
trait Handler {
    /// The partitions assigned changed: restore state for them.
    fn assigned(&mut self, _env: &Env, _parts: &[i32]) -> Result<(), FusionError> {
        Ok(())
    }
    fn record(&mut self, env: &Env, i: &In, out: &mut Out) -> Result<(), FusionError>;
    fn tick(&mut self, _env: &Env, _out: &mut Out) -> Result<(), FusionError> {
        Ok(())
    }
}

fn drive(
    env: &Env,
    c: &BaseConsumer,
    out: &mut Out,
    h: &mut dyn Handler,
) -> Result<(), FusionError> {
    let tick = Duration::from_secs(env.cfg.tick_s.max(1));
    let mut last_tick = Instant::now();
    let mut assigned: Vec<i32> = Vec::new();
    while !env.stop.load(Ordering::Relaxed) {
        let now_assigned: Vec<i32> = c
            .assignment()
            .map(|t| t.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        if now_assigned != assigned {
            assigned = now_assigned;
            h.assigned(env, &assigned)?;
        }
        let mut n = 0;
        let batch_start = Instant::now();
        while n < BATCH && batch_start.elapsed() < BATCH_TIME {
            let Some(r) = c.poll(Duration::from_millis(50)) else {
                if n > 0 {
                    break;
                }
                continue;
            };
            match r {
                Ok(m) => {
                    n += 1;
                    Counters::add(&env.counters.records, 1);
                    match stream::verified(&m, &env.signer) {
                        Ok(i) => h.record(env, &i, out)?,
                        Err(_) => Counters::add(&env.counters.rejected, 1),
                    }
                }
                Err(e) => tracing::debug!("fusion: {e}"),
            }
        }
        let ticked = last_tick.elapsed() >= tick;
        if ticked {
            last_tick = Instant::now();
            h.tick(env, out)?;
        }
        if n > 0 || ticked {
            match out.flush() {
                Ok(()) => {
                    if n > 0 {
                        if let Err(e) = c.commit_consumer_state(CommitMode::Sync) {
                            tracing::warn!("fusion: commit: {e}");
                        }
                    }
                }
                Err(e) => {
                    // Read the batch again from the last commit.
                    tracing::warn!("{e}");
                    seek_to_committed(c)?;
                }
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

fn seek_to_committed(c: &BaseConsumer) -> Result<(), FusionError> {
    let committed = c
        .committed(Duration::from_secs(5))
        .map_err(|e| FusionError::Kafka(e.to_string()))?;
    for e in committed.elements() {
        let off = match e.offset() {
            rdkafka::Offset::Offset(o) => rdkafka::Offset::Offset(o),
            _ => rdkafka::Offset::Beginning,
        };
        let _ = c.seek(e.topic(), e.partition(), off, Duration::from_secs(5));
    }
    Ok(())
}

/// Stage 1: alerts to sightings keyed by indicator; alerts and actions
/// forwarded to the incident events.
struct Rekey;

impl Handler for Rekey {
    fn record(&mut self, env: &Env, i: &In, out: &mut Out) -> Result<(), FusionError> {
        let t = &env.cfg.topics;
        if i.topic == env.kafka.topics.alerts {
            let Some(a) = parse::<AlertIn>(i, &env.counters) else {
                return Ok(());
            };
            for s in consensus::sightings(&a) {
                let key = s.indicator.key();
                out.send_json(&t.sightings, &key, &ToConsensus::Sighting(s))?;
            }
            out.send_json(&t.incident_events, "fleet", &ToIncidents::Alert(a))?;
        } else if let Some(a) = parse::<ActionIn>(i, &env.counters) {
            if matches!(a.kind.as_str(), "action" | "decision") {
                out.send_json(&t.incident_events, "fleet", &ToIncidents::Action(a))?;
            }
        }
        Ok(())
    }
}

/// Keeps the inventory table current from its topic.
struct Fleet {
    table: Table,
    inv: Inventory,
}

impl Fleet {
    fn open(env: &Env) -> Result<Fleet, FusionError> {
        let table = Table::open(&env.brokers, &env.kafka.topics.inventory, None)?;
        let mut f = Fleet {
            table,
            inv: Inventory::default(),
        };
        let mut rejected = 0;
        for (host, (_, v)) in f.table.read_to_end(&env.signer, &mut rejected)? {
            f.apply(&host, v.as_deref());
        }
        Counters::add(&env.counters.rejected, rejected);
        Ok(f)
    }

    fn apply(&mut self, host: &str, v: Option<&[u8]>) {
        let entry = v.and_then(|b| serde_json::from_slice::<InventoryIn>(b).ok());
        if v.is_some() && entry.is_none() {
            return;
        }
        if !self.inv.put(host, entry) {
            tracing::warn!("fusion: fleet.inventory is full; ignored host {host}");
        }
    }

    fn refresh(&mut self, env: &Env) {
        let mut rejected = 0;
        for i in self.table.poll(&env.signer, &mut rejected) {
            self.apply(&i.key, i.value.as_deref());
        }
        Counters::add(&env.counters.rejected, rejected);
    }
}

/// Per-key state restored from a changelog for the assigned partitions.
fn restore<T: serde::de::DeserializeOwned>(
    env: &Env,
    changelog: &str,
    parts: &[i32],
) -> Result<HashMap<String, (i32, T)>, FusionError> {
    let mut out = HashMap::new();
    if parts.is_empty() {
        return Ok(out);
    }
    let table = Table::open(&env.brokers, changelog, Some(parts))?;
    let mut rejected = 0;
    for (k, (p, v)) in table.read_to_end(&env.signer, &mut rejected)? {
        if let Some(v) = v.and_then(|b| serde_json::from_slice(&b).ok()) {
            out.insert(k, (p, v));
        }
    }
    Counters::add(&env.counters.rejected, rejected);
    tracing::info!(
        "fusion: restored {} keys from {changelog} (partitions {parts:?})",
        out.len()
    );
    Ok(out)
}

fn save<T: Serialize>(
    out: &Out,
    changelog: &str,
    key: &str,
    st: Option<&T>,
) -> Result<(), FusionError> {
    match st {
        Some(s) => out.send_json(changelog, key, s),
        None => out.send(changelog, key, None),
    }
}

fn publish(env: &Env, out: &Out, o: ConsensusOut) -> Result<(), FusionError> {
    let enriched = &env.kafka.topics.enriched;
    match o {
        ConsensusOut::Publish(d) => {
            Counters::add(&env.counters.decisions, 1);
            tracing::info!(
                "fusion: {:?} {} for {}s (rule {}, hosts {})",
                d.action,
                d.indicator,
                d.ttl_s,
                d.rule,
                d.hosts.join(",")
            );
            out.send_json(enriched, &d.indicator, &d)?;
            out.send_json(
                &env.cfg.topics.incident_events,
                "fleet",
                &ToIncidents::Decision(d),
            )?;
        }
        ConsensusOut::Lift {
            indicator,
            decision,
            reason,
        } => {
            Counters::add(&env.counters.lifts, 1);
            tracing::info!("fusion: lifted {indicator} ({decision}): {reason}");
            out.send(enriched, &indicator, None)?;
        }
        ConsensusOut::Ignored(_) => {}
        ConsensusOut::RateLimited { indicator, rule } => {
            tracing::warn!("fusion: decision on {indicator} (rule {rule}) held back by max_decisions_per_minute");
        }
    }
    Ok(())
}

/// Stage 2: consensus per indicator.
struct Consensus {
    fleet: Fleet,
    allow: Allowlist,
    version: String,
    budget: Budget,
    states: HashMap<String, (i32, IocState)>,
    /// Unblock ids already honoured (bounded; stale ones are refused by age).
    unblocks: BTreeSet<String>,
}

impl Handler for Consensus {
    fn assigned(&mut self, env: &Env, parts: &[i32]) -> Result<(), FusionError> {
        self.states = restore(env, &env.cfg.topics.consensus_changelog, parts)?;
        Ok(())
    }

    fn record(&mut self, env: &Env, i: &In, out: &mut Out) -> Result<(), FusionError> {
        self.fleet.refresh(env);
        let Some(msg) = parse::<ToConsensus>(i, &env.counters) else {
            return Ok(());
        };
        let now = now_s();
        let max_age = env.kafka.command_max_age_s as f64;
        let prior = self.states.remove(&i.key).map(|(_, s)| s);
        let (st, outs) = match msg {
            ToConsensus::Sighting(s) if s.indicator.key() == i.key => {
                let mut ctx = Ctx {
                    cfg: &env.cfg,
                    rule_version: &self.version,
                    allow: &self.allow,
                    fleet: &self.fleet.inv,
                    budget: &mut self.budget,
                };
                consensus::on_sighting(prior.clone(), &s, now, &mut ctx)
            }
            ToConsensus::Unblock {
                id,
                ts,
                indicator,
                by,
            } if indicator == i.key
                && (now - ts as f64).abs() <= max_age
                && !self.unblocks.contains(&id) =>
            {
                self.unblocks.insert(id.clone());
                if self.unblocks.len() > 65_536 {
                    self.unblocks.pop_first();
                }
                tracing::info!("fusion: unblock of {indicator} by {by} ({id})");
                consensus::on_unblock(prior.clone(), &i.key, now, &env.cfg)
            }
            _ => {
                Counters::add(&env.counters.malformed, 1);
                (prior.clone(), Vec::new())
            }
        };
        for o in outs {
            publish(env, out, o)?;
        }
        if st != prior {
            save(
                out,
                &env.cfg.topics.consensus_changelog,
                &i.key,
                st.as_ref(),
            )?;
        }
        if let Some(st) = st {
            self.states.insert(i.key.clone(), (i.partition, st));
        }
        Ok(())
    }

    fn tick(&mut self, env: &Env, out: &mut Out) -> Result<(), FusionError> {
        let now = now_s();
        let keys: Vec<String> = self.states.keys().cloned().collect();
        for k in keys {
            let Some((p, st)) = self.states.remove(&k) else {
                continue;
            };
            let before = st.clone();
            let (next, outs) = consensus::on_tick(st, &k, now, &env.cfg);
            for o in outs {
                publish(env, out, o)?;
            }
            if next.as_ref() != Some(&before) {
                save(out, &env.cfg.topics.consensus_changelog, &k, next.as_ref())?;
            }
            if let Some(n) = next {
                self.states.insert(k, (p, n));
            }
        }
        Ok(())
    }
}

/// Stage 3: chains per host.
struct Chains {
    fleet: Fleet,
    states: HashMap<String, (i32, HostChains)>,
}

impl Handler for Chains {
    fn assigned(&mut self, env: &Env, parts: &[i32]) -> Result<(), FusionError> {
        self.states = restore(env, &env.cfg.topics.chains_changelog, parts)?;
        Ok(())
    }

    fn record(&mut self, env: &Env, i: &In, out: &mut Out) -> Result<(), FusionError> {
        self.fleet.refresh(env);
        let t = &env.cfg.topics;
        let k = &env.kafka.topics;
        let alert;
        let conn;
        let pending;
        let (host, input) = if i.topic == k.alerts {
            alert = match parse::<AlertIn>(i, &env.counters) {
                Some(a) => a,
                None => return Ok(()),
            };
            (alert.host.clone(), ChainIn::Alert(&alert))
        } else if i.topic == k.events {
            // Only outbound connections matter; other telemetry is skipped
            // before parsing the whole record.
            let is_connect = i
                .value
                .as_deref()
                .is_some_and(|v| v.windows(22).any(|w| w == b"\"kind\":\"net_connect\""));
            if !is_connect {
                return Ok(());
            }
            conn = match parse::<ConnectIn>(i, &env.counters) {
                Some(c) => c,
                None => return Ok(()),
            };
            (conn.host.clone(), ChainIn::Connect(&conn))
        } else {
            pending = match parse::<Pending>(i, &env.counters) {
                Some(p) => p,
                None => return Ok(()),
            };
            (pending.to.clone(), ChainIn::Pending(&pending))
        };
        // The record's key is the host: a record claiming another host than
        // its key is not trusted to change that host's state.
        if host != i.key {
            Counters::add(&env.counters.malformed, 1);
            return Ok(());
        }
        let prior = self.states.remove(&host).map(|(_, s)| s);
        let (st, outs) = chains::on_record(
            prior.clone(),
            &host,
            input,
            now_s(),
            &env.cfg,
            &self.fleet.inv,
        );
        for o in outs {
            match o {
                ChainOut::Link(l) => {
                    Counters::add(&env.counters.links, 1);
                    tracing::info!(
                        "fusion: link {} → {} ({}, {})",
                        l.from,
                        l.to,
                        l.technique,
                        l.how
                    );
                    out.send_json(&t.incident_events, "fleet", &ToIncidents::Link(l))?;
                }
                ChainOut::Pending(p) => out.send_json(&t.pending_links, &p.to.clone(), &p)?,
            }
        }
        if st != prior {
            save(out, &t.chains_changelog, &host, st.as_ref())?;
        }
        if let Some(st) = st {
            self.states.insert(host, (i.partition, st));
        }
        Ok(())
    }
}

/// Stage 4: incident assembly (one partition: one active instance).
struct Assembly {
    st: Incidents,
}

impl Handler for Assembly {
    fn assigned(&mut self, env: &Env, parts: &[i32]) -> Result<(), FusionError> {
        self.st = Incidents::default();
        if parts.is_empty() {
            return Ok(());
        }
        // The published incidents are this stage's state.
        let table = Table::open(&env.brokers, &env.cfg.topics.incidents, None)?;
        let mut rejected = 0;
        for (id, (_, v)) in table.read_to_end(&env.signer, &mut rejected)? {
            if let Some(inc) =
                v.and_then(|b| serde_json::from_slice::<incidents::Incident>(&b).ok())
            {
                self.st.open.insert(id, inc);
            }
        }
        tracing::info!("fusion: restored {} incidents", self.st.open.len());
        Ok(())
    }

    fn record(&mut self, env: &Env, i: &In, out: &mut Out) -> Result<(), FusionError> {
        let Some(ev) = parse::<ToIncidents>(i, &env.counters) else {
            return Ok(());
        };
        let window = env.cfg.incident_window_s;
        let st = &mut self.st;
        let outs = match &ev {
            ToIncidents::Alert(a) => incidents::on_record(st, IncidentIn::Alert(a), window),
            ToIncidents::Action(a) => incidents::on_record(st, IncidentIn::Action(a), window),
            ToIncidents::Decision(d) => incidents::on_record(st, IncidentIn::Decision(d), window),
            ToIncidents::Link(l) => incidents::on_record(st, IncidentIn::Link(l), window),
        };
        let topic = &env.cfg.topics.incidents;
        for o in outs {
            match o {
                IncidentOut::Updated(id) => {
                    if let Some(inc) = st.open.get(&id) {
                        Counters::add(&env.counters.incidents, 1);
                        let view = narrative::View {
                            kind: "incident",
                            incident: inc,
                            analysis: narrative::analyse(inc, env.cfg.hint_min_techniques),
                        };
                        out.send_json(topic, &id, &view)?;
                    }
                }
                IncidentOut::Merged { from, into } => {
                    tracing::info!("fusion: incident {from} merged into {into}");
                    out.send(topic, &from, None)?;
                }
            }
        }
        Ok(())
    }
}

/// One stage on its own consumer group until stopped.
fn stage(env: &Env, name: &str) -> Result<(), FusionError> {
    let t = &env.cfg.topics;
    let k = &env.kafka.topics;
    let (topics, mut h): (Vec<&str>, Box<dyn Handler>) = match name {
        "rekey" => (vec![&k.alerts, &k.actions], Box::new(Rekey)),
        "consensus" => (
            vec![&t.sightings],
            Box::new(Consensus {
                fleet: Fleet::open(env)?,
                allow: Allowlist::new(&env.cfg),
                version: env.cfg.rule_version(),
                budget: Budget::default(),
                states: HashMap::new(),
                unblocks: BTreeSet::new(),
            }),
        ),
        "chains" => (
            vec![&k.alerts, &k.events, &t.pending_links],
            Box::new(Chains {
                fleet: Fleet::open(env)?,
                states: HashMap::new(),
            }),
        ),
        _ => (
            vec![&t.incident_events],
            Box::new(Assembly {
                st: Incidents::default(),
            }),
        ),
    };
    let c = stream::consumer(&env.brokers, &format!("{}.{name}", env.cfg.group_prefix))?;
    c.subscribe(&topics)
        .map_err(|e| FusionError::Kafka(format!("subscribe {topics:?}: {e}")))?;
    let mut out = Out::new(&env.brokers, env.signer.clone())?;
    drive(env, &c, &mut out, h.as_mut())
}

/// Runs the chosen stages until SIGINT or SIGTERM.
pub fn run(cfg: &Config, stages: &[String]) -> Result<(), FusionError> {
    if cfg.kafka.brokers.is_empty() {
        return Err(FusionError::Config(
            "kafka.brokers is empty: fusion needs Kafka".into(),
        ));
    }
    if cfg.kafka.hmac_key.is_empty() {
        return Err(FusionError::Config(
            "kafka.hmac_key is empty: fusion signs every decision and trusts only signed records"
                .into(),
        ));
    }
    if let Some(p) = cfg.fusion.problem() {
        return Err(FusionError::Config(p));
    }
    for s in stages {
        if !STAGES.contains(&s.as_str()) {
            return Err(FusionError::Config(format!(
                "unknown stage {s:?} (stages: {})",
                STAGES.join(", ")
            )));
        }
    }
    let env = Env {
        brokers: cfg.kafka.brokers.clone(),
        cfg: Arc::new(cfg.fusion.clone()),
        kafka: Arc::new(cfg.kafka.clone()),
        signer: Signer::new(&cfg.kafka.hmac_key),
        stop: Arc::new(AtomicBool::new(false)),
        counters: Arc::new(Counters::default()),
    };
    stream::create_topics(&env.brokers, &topic_specs(&env, 1))?;
    tracing::info!(
        "fusion: {:?} mode, stages {}, rules version {}",
        env.cfg.mode,
        stages.join(","),
        env.cfg.rule_version()
    );
    let mut threads = Vec::new();
    for s in stages {
        let e = env.clone();
        let name = s.clone();
        let h = std::thread::Builder::new()
            .name(format!("fusion-{name}"))
            .spawn(move || {
                let r = stage(&e, &name);
                if let Err(err) = &r {
                    tracing::error!("fusion stage {name} stopped: {err}");
                    e.stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| FusionError::Kafka(e.to_string()))?;
        threads.push(h);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FusionError::Kafka(e.to_string()))?;
    let stop = env.stop.clone();
    let counters = env.counters.clone();
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut report = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = report.tick() => tracing::info!("fusion: {}", counters.line()),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { break; }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut first_err = None;
    for h in threads {
        if let Ok(Err(e)) = h.join() {
            first_err.get_or_insert(e);
        }
    }
    tracing::info!("fusion stopped: {}", env.counters.line());
    first_err.map_or(Ok(()), Err)
}

/// `vigil fusion unblock`: a signed request to the consensus stage.
pub fn unblock(cfg: &Config, indicator: &str, by: &str) -> Result<String, FusionError> {
    let ind = super::model::Indicator::parse(indicator).ok_or_else(|| {
        FusionError::Config(format!("{indicator:?} is not an address or sha256:HEX"))
    })?;
    if cfg.kafka.hmac_key.is_empty() {
        return Err(FusionError::Config("kafka.hmac_key is empty".into()));
    }
    let mut out = Out::new(&cfg.kafka.brokers, Signer::new(&cfg.kafka.hmac_key))?;
    let id = crate::util::id::new_id();
    let msg = ToConsensus::Unblock {
        id: id.clone(),
        ts: chrono::Utc::now().timestamp(),
        indicator: ind.key(),
        by: by.to_string(),
    };
    out.send_json(&cfg.fusion.topics.sightings, &ind.key(), &msg)?;
    out.flush()?;
    Ok(id)
}

/// The current incidents (the compacted topic read to its end).
pub fn incidents(cfg: &Config) -> Result<Vec<serde_json::Value>, FusionError> {
    let table = Table::open(&cfg.kafka.brokers, &cfg.fusion.topics.incidents, None)?;
    let mut rejected = 0;
    let all = table.read_to_end(&Signer::new(&cfg.kafka.hmac_key), &mut rejected)?;
    let mut out: Vec<serde_json::Value> = all
        .into_values()
        .filter_map(|(_, v)| v.and_then(|b| serde_json::from_slice(&b).ok()))
        .collect();
    out.sort_by(|a, b| {
        b["updated"]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&a["updated"].as_f64().unwrap_or(0.0))
    });
    Ok(out)
}

/// Tally of decisions on `threat.enriched`, for tests and `status`.
pub fn decisions(cfg: &Config) -> Result<BTreeMap<String, serde_json::Value>, FusionError> {
    let table = Table::open(&cfg.kafka.brokers, &cfg.kafka.topics.enriched, None)?;
    let mut rejected = 0;
    Ok(table
        .read_to_end(&Signer::new(&cfg.kafka.hmac_key), &mut rejected)?
        .into_iter()
        .filter_map(|(k, (_, v))| Some((k, serde_json::from_slice(&v?).ok()?)))
        .collect())
}
