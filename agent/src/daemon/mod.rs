//! `vigil run`: load, attach, then one task that reads the ring buffer,
//! sweeps the flow map and writes records until SIGINT or SIGTERM. Single
//! task, so the process cache and output need no locks.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agent_common::{maps, EventKind, FlowKey, FlowStats, IPPROTO_TCP};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::detect::Engine;
use crate::enforce::containment::Containment;
use crate::kernel::loader::{self, LoaderError};
use crate::pipeline::event::{ConnKind, Event};
use crate::pipeline::proc_cache::ProcessCache;
use crate::pipeline::{FlowEnd, Pipeline};
use crate::record::{AgentStart, AgentStats, Body, ProbeRow, Record};
use crate::response::engine::{By, Limits, Responder};
use crate::response::executor::HostExecutor;
use crate::response::playbook::{self, Decision, PlaybookError};
use crate::response::record::ResponseRecord;
use crate::service::metrics::Metrics;
use crate::sink::jsonl::Sink;
use crate::sink::kafka::commands::{Command, Verifier};
use crate::sink::kafka::consumer::{self, Offsets};
use crate::sink::kafka::producer::{Inbound, Reporter};
use crate::sink::SinkError;
use crate::util::clock::{monotonic_ns, now_rfc3339, Clock};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("vigil run must be started as root (it loads eBPF programs): run it with sudo")]
    NotRoot,
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Output(#[from] SinkError),
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceError),
    #[error(transparent)]
    Metrics(#[from] crate::service::metrics::MetricsError),
    #[error("refusing to start with bad playbooks:\n{0}")]
    Playbooks(#[from] PlaybookError),
    #[error(transparent)]
    Control(#[from] crate::service::control::ControlError),
    #[error(transparent)]
    Kafka(#[from] crate::sink::kafka::producer::KafkaError),
    #[error("kernel map {name} unusable: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn flow_key(proto: u8, local: IpAddr, lport: u16, remote: IpAddr, rport: u16) -> FlowKey {
    let (l, r, v) = match (local, remote) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mut l = [0u8; 16];
            let mut r = [0u8; 16];
            l[..4].copy_from_slice(&a.octets());
            r[..4].copy_from_slice(&b.octets());
            (l, r, 4)
        }
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(x) => x.to_ipv6_mapped().octets(),
                IpAddr::V6(x) => x.octets(),
            };
            (v6(a), v6(b), 6)
        }
    };
    FlowKey {
        local_addr: l,
        remote_addr: r,
        local_port: lport,
        remote_port: rport,
        proto,
        ip_version: v,
        _pad: [0; 2],
    }
}

/// Decides whether a swept flow is due, and why.
pub fn flow_due(cfg: &crate::config::FlowConfig, s: &FlowStats, now_ns: u64) -> Option<FlowEnd> {
    let idle_ns = now_ns.saturating_sub(s.t_last_ns);
    let age_ns = now_ns.saturating_sub(s.t_first_ns);
    let sec = 1_000_000_000u64;
    if age_ns >= cfg.active_timeout_s * sec {
        return Some(FlowEnd::ActiveTimeout);
    }
    let is_tcp_done = s.rst > 0 || s.fin >= 2;
    let idle_limit = if s.syn > 0 || s.fin > 0 || s.rst > 0 {
        if is_tcp_done {
            // Close seen on the wire but no close event (e.g. missed): short wait.
            (cfg.close_linger_ms * 1_000_000).max(sec)
        } else {
            cfg.tcp_idle_timeout_s * sec
        }
    } else {
        cfg.udp_idle_timeout_s * sec
    };
    (idle_ns >= idle_limit).then_some(FlowEnd::Idle)
}

struct Maps {
    flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    drops: PerCpuArray<MapData, u64>,
    created: PerCpuArray<MapData, u64>,
}

impl Maps {
    fn flows_created(&self) -> u64 {
        self.created
            .get(&0, 0)
            .map(|v| v.iter().sum::<u64>())
            .unwrap_or(0)
    }

    fn kernel_drops(&self) -> u64 {
        let mut total = 0;
        for kind in 0..agent_common::EVENT_KIND_SLOTS {
            if let Ok(values) = self.drops.get(&kind, 0) {
                total += values.iter().sum::<u64>();
            }
        }
        total
    }
}

struct State {
    cfg: Config,
    pipeline: Pipeline,
    sink: Sink,
    maps: Maps,
    /// Flows whose socket closed, emitted after the linger.
    pending_close: VecDeque<(u64, FlowKey)>,
    pending_set: HashSet<FlowKey>,
    flows_tracked: u64,
    flows_evicted: u64,
    containment: Option<Containment>,
    engine: Option<Engine>,
    metrics: Option<Arc<Metrics>>,
    metric_ticks: u64,
    responder: Responder,
    /// The last alerts, for `vigil alerts`.
    recent_alerts: VecDeque<serde_json::Value>,
    alert_feed: tokio::sync::broadcast::Sender<Arc<str>>,
    probes: Vec<ProbeRow>,
    reporter: Option<Reporter>,
    verifier: Verifier,
    offsets: Offsets,
}

const RECENT_ALERTS: usize = 256;
const RESPONSE_STATE: &str = "response.json";
const OFFSETS_FILE: &str = "kafka-offsets.json";

/// Wall-clock seconds, the clock approvals' deadlines use.
fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn responder_for(cfg: &Config, playbooks: Vec<playbook::Playbook>) -> Responder {
    Responder::new(
        playbooks,
        cfg.response.mode,
        Limits {
            max_actions_per_minute: cfg.response.max_actions_per_minute,
            max_concurrent_blocks: cfg.response.max_concurrent_blocks,
        },
    )
}

impl State {
    fn on_ring_record(&mut self, data: &[u8]) -> Result<(), DaemonError> {
        match crate::pipeline::decode::decode(data) {
            Ok(ev) => {
                if let Event::Conn(c) = &ev {
                    if c.kind == ConnKind::Close {
                        let key = flow_key(IPPROTO_TCP, c.src_ip, c.src_port, c.dst_ip, c.dst_port);
                        if self.pending_set.insert(key) {
                            let due = monotonic_ns() + self.cfg.flows.close_linger_ms * 1_000_000;
                            self.pending_close.push_back((due, key));
                        }
                    }
                }
                let r = self.pipeline.on_event(ev);
                self.out_record(&r)?;
                if let Some(m) = &self.metrics {
                    m.events.with_label_values(&[r.body.kind()]).inc();
                }
                self.detect(&r)?;
            }
            Err(e) => {
                self.pipeline.stats.decode_errors += 1;
                // One line per bad record kind would flood; the count is in agent_stats.
                if self.pipeline.stats.decode_errors.is_power_of_two() {
                    tracing::warn!(
                        "dropped a malformed kernel record: {e} ({} so far)",
                        self.pipeline.stats.decode_errors
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs the detectors on a record; alerts go to the output and, one
    /// readable line each, to stderr.
    fn detect(&mut self, r: &Record) -> Result<(), DaemonError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        let now_s = r.wall_ns as f64 / 1e9;
        for alert in engine.on_record(now_s, &r.ts, &r.host, &r.body) {
            eprintln!("{}", alert.line());
            if let Some(m) = &self.metrics {
                for t in &alert.techniques {
                    m.alerts.with_label_values(&[alert.detector, t.id]).inc();
                }
                let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
                if r.wall_ns > 0 && now_ns > r.wall_ns {
                    m.pipeline_latency
                        .observe((now_ns - r.wall_ns) as f64 / 1e9);
                }
            }
            let line = serde_json::to_string(&alert).unwrap_or_default();
            self.out_line("alert", &line)?;
            let _ = self.alert_feed.send(Arc::from(line.as_str()));
            if self.recent_alerts.len() == RECENT_ALERTS {
                self.recent_alerts.pop_front();
            }
            self.recent_alerts
                .push_back(serde_json::to_value(&alert).unwrap_or_default());
            let host = self.pipeline.host();
            let mut ex = HostExecutor {
                containment: self.containment.as_mut(),
                state_dir: &self.cfg.state_dir,
                host: &host,
            };
            let out = self.responder.on_alert(&alert, wall_s(), &mut ex);
            self.write_response(out)?;
        }
        Ok(())
    }

    /// Writes a record to the JSON lines output and, when enabled, Kafka.
    fn out_record(&mut self, r: &Record) -> Result<(), DaemonError> {
        let kind = r.body.kind();
        match self.reporter.as_mut() {
            // Serialise once for both destinations.
            Some(rep) if rep.wants(kind) => {
                let line = serde_json::to_string(r).unwrap_or_default();
                self.sink.write_line(&line)?;
                rep.submit(kind, &line)?;
            }
            _ => self.sink.write(r)?,
        }
        Ok(())
    }

    fn out_line(&mut self, kind: &str, line: &str) -> Result<(), DaemonError> {
        self.sink.write_line(line)?;
        if let Some(rep) = self.reporter.as_mut() {
            rep.submit(kind, line)?;
        }
        Ok(())
    }

    /// Produces from the spool and mirrors its figures into the metrics.
    fn pump(&mut self) -> Result<(), DaemonError> {
        let Some(rep) = self.reporter.as_mut() else {
            return Ok(());
        };
        if let Err(e) = rep.pump() {
            tracing::warn!("kafka: {e}");
        }
        if let Some(m) = &self.metrics {
            m.spool_bytes.set(rep.spool.bytes() as i64);
            m.spool_records.set(rep.spool.pending() as i64);
            m.mirror("kafka_ok", rep.stats.delivered, &m.kafka_delivered);
            m.mirror(
                "kafka_err",
                rep.stats.delivery_errors,
                &m.kafka_delivery_errors,
            );
            m.mirror("kafka_shed", rep.stats.shed_rate, &m.kafka_telemetry_shed);
            let s = rep.spool.stats;
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
        Ok(())
    }

    /// A `defense.commands` or `threat.enriched` message: verified, executed
    /// or refused, recorded either way, and its offset saved.
    fn on_inbound(&mut self, m: Inbound) -> Result<(), DaemonError> {
        let now = wall_s();
        let host = self.pipeline.host();
        let is_command = m.topic == self.cfg.kafka.topics.commands;
        let (message_id, outcome): (String, Result<Vec<ResponseRecord>, String>) = if is_command {
            match self
                .verifier
                .command(&m.payload, m.hmac.as_deref(), &host, now as i64)
            {
                Ok(None) => (String::new(), Ok(Vec::new())),
                Ok(Some(env)) => {
                    let id = env.id.clone();
                    (id.clone(), self.execute(env.command, &id, now))
                }
                Err(e) => (String::new(), Err(e.to_string())),
            }
        } else {
            match self
                .verifier
                .indicator(&m.payload, m.hmac.as_deref(), now as i64)
            {
                Ok(ioc) => {
                    let id = ioc.id.clone();
                    let ttl = ioc.ttl_s;
                    let what = Command::Block {
                        target: ioc.indicator,
                        ttl_s: ttl,
                    };
                    (id.clone(), self.execute(what, &id, now))
                }
                Err(e) => (String::new(), Err(e.to_string())),
            }
        };
        let ignored = matches!(&outcome, Ok(v) if v.is_empty()) && message_id.is_empty();
        if !ignored {
            let (result, detail, records) = match outcome {
                Ok(records) => ("executed", String::new(), records),
                Err(e) => {
                    tracing::warn!(
                        "refused a {} message (partition {} offset {}): {e}",
                        m.topic,
                        m.partition,
                        m.offset
                    );
                    ("refused", e, Vec::new())
                }
            };
            let rec = serde_json::json!({
                "kind": "command",
                "id": crate::util::id::new_id(),
                "ts": now_rfc3339(),
                "host": &*host,
                "topic": m.topic,
                "partition": m.partition,
                "offset": m.offset,
                "message_id": message_id,
                "result": result,
                "detail": detail,
            });
            if let Err(e) = crate::enforce::audit::append(&self.cfg.state_dir, &rec) {
                tracing::warn!("could not append to the audit log: {e}");
            }
            if let Some(mm) = &self.metrics {
                mm.commands
                    .with_label_values(&[m.topic.as_str(), result])
                    .inc();
            }
            self.out_line("command", &rec.to_string())?;
            self.write_response(records)?;
        }
        self.offsets
            .insert(format!("{}/{}", m.topic, m.partition), m.offset + 1);
        consumer::save_offsets(&self.cfg.state_dir.join(OFFSETS_FILE), &self.offsets);
        self.sink.flush()?;
        Ok(())
    }

    /// Runs a verified command; its records come back for the output.
    fn execute(&mut self, cmd: Command, id: &str, now: f64) -> Result<Vec<ResponseRecord>, String> {
        use crate::enforce::actions::ActionState;
        let host = self.pipeline.host();
        let action = |mut a: crate::enforce::actions::Action| {
            a.command = Some(id.to_string());
            match a.state {
                ActionState::Applied | ActionState::Noop => Ok(vec![ResponseRecord::Action(a)]),
                _ => Err(format!("{} {}: {}", a.action, a.state, a.detail)),
            }
        };
        match cmd {
            Command::Block { target, ttl_s } => {
                let cidr: crate::enforce::cidr::Cidr =
                    target.parse().map_err(|e| format!("{e}"))?;
                if ttl_s == 0 {
                    return Err("ttl_s must be positive".into());
                }
                let c = self
                    .containment
                    .as_mut()
                    .ok_or("enforcement is disabled on this host")?;
                action(c.block(
                    &cidr,
                    ttl_s,
                    agent_common::enforce::BLOCK_INGRESS | agent_common::enforce::BLOCK_EGRESS,
                ))
            }
            Command::Unblock { target } => {
                let cidr: crate::enforce::cidr::Cidr =
                    target.parse().map_err(|e| format!("{e}"))?;
                let c = self
                    .containment
                    .as_mut()
                    .ok_or("enforcement is disabled on this host")?;
                action(c.unblock(&cidr))
            }
            Command::Approve { approval } => {
                self.decide_by(&approval, Decision::Approve, id, now, &host)
            }
            Command::Deny { approval } => self.decide_by(&approval, Decision::Deny, id, now, &host),
        }
    }

    fn decide_by(
        &mut self,
        approval: &str,
        d: Decision,
        id: &str,
        now: f64,
        host: &str,
    ) -> Result<Vec<ResponseRecord>, String> {
        let mut ex = HostExecutor {
            containment: self.containment.as_mut(),
            state_dir: &self.cfg.state_dir,
            host,
        };
        self.responder
            .decide(approval, d, By::Command(id.to_string()), now, &mut ex)
            .map_err(|e| e.to_string())
    }

    /// Writes what the responder did to the output and the metrics, and
    /// saves its state when it changed.
    fn write_response(&mut self, out: Vec<ResponseRecord>) -> Result<(), DaemonError> {
        for r in &out {
            if let (Some(m), Some(a)) = (&self.metrics, r.action()) {
                m.actions
                    .with_label_values(&[a.action.as_str(), a.state.as_str()])
                    .inc();
            }
            self.out_line(r.kind(), &r.to_line())?;
        }
        if self.responder.take_dirty() {
            let path = self.cfg.state_dir.join(RESPONSE_STATE);
            let tmp = path.with_extension("json.tmp");
            let body = serde_json::to_vec(&self.responder.save()).unwrap_or_default();
            if let Err(e) = std::fs::write(&tmp, body).and_then(|_| std::fs::rename(&tmp, &path)) {
                tracing::warn!("could not save response state to {}: {e}", path.display());
            }
        }
        Ok(())
    }

    fn respond_tick(&mut self) -> Result<(), DaemonError> {
        let host = self.pipeline.host();
        let mut ex = HostExecutor {
            containment: self.containment.as_mut(),
            state_dir: &self.cfg.state_dir,
            host: &host,
        };
        let out = self.responder.tick(wall_s(), &mut ex);
        self.write_response(out)
    }

    /// Re-reads the playbook directory; on any problem the running set stays.
    fn reload(&mut self) -> Result<usize, PlaybookError> {
        match playbook::load_dir(&self.cfg.playbooks.dir) {
            Ok(set) => {
                let n = set.len();
                tracing::info!(
                    "reloaded {n} playbooks from {}",
                    self.cfg.playbooks.dir.display()
                );
                self.responder.playbooks = set;
                Ok(n)
            }
            Err(e) => {
                tracing::error!("playbook reload refused; keeping the running set:\n{e}");
                Err(e)
            }
        }
    }

    fn status(&mut self) -> serde_json::Value {
        let blocks: Vec<serde_json::Value> = self
            .containment
            .as_ref()
            .map(|c| {
                let now = monotonic_ns();
                c.blocks
                    .list()
                    .into_iter()
                    .filter(|e| e.expires_ns > now)
                    .map(|e| {
                        serde_json::json!({
                            "target": e.target.to_string(),
                            "ttl_s": (e.expires_ns - now) / 1_000_000_000,
                            "packets": e.packets,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let playbooks: Vec<serde_json::Value> = self
            .responder
            .playbooks
            .iter()
            .map(|p| {
                let mode = match p.mode {
                    Some(playbook::Mode::DryRun) => "dry-run",
                    Some(playbook::Mode::Enforce) => "enforce",
                    None => "inherit",
                };
                serde_json::json!({"name": p.name, "mode": mode, "file": p.file, "steps": p.steps.len()})
            })
            .collect();
        let detectors = self
            .engine
            .as_ref()
            .map(|e| serde_json::to_value(&e.alerts_by_detector).unwrap_or_default())
            .unwrap_or_default();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "probes": self.probes,
            "stats": self.stats(),
            "detectors": detectors,
            "blocks": blocks,
            "isolation_remaining_s": crate::enforce::isolate::remaining_s(),
            "approvals": self.responder.approvals.values().collect::<Vec<_>>(),
            "response_mode": self.cfg.response.mode,
            "playbooks": playbooks,
            "incidents": self.responder.incidents.len(),
            "rate_limited": self.responder.rate_limited,
            "incidents_evicted": self.responder.incidents_evicted,
            "kafka": self.reporter.as_ref().map(|r| serde_json::json!({
                "brokers": self.cfg.kafka.brokers,
                "spool_records": r.spool.pending(),
                "spool_bytes": r.spool.bytes(),
                "spool": r.spool.stats,
                "delivered": r.stats.delivered,
                "delivery_errors": r.stats.delivery_errors,
                "telemetry_shed": r.stats.shed_rate,
                "producer_restarts": r.stats.producer_restarts,
                "last_error": r.stats.last_error,
            })),
        })
    }

    fn decide(
        &mut self,
        id: &str,
        d: Decision,
        uid: u32,
        now: f64,
        out: &mut Vec<ResponseRecord>,
    ) -> crate::service::control::Response {
        let host = self.pipeline.host();
        let mut ex = HostExecutor {
            containment: self.containment.as_mut(),
            state_dir: &self.cfg.state_dir,
            host: &host,
        };
        match self.responder.decide(id, d, By::Uid(uid), now, &mut ex) {
            Ok(o) => {
                let r = crate::service::control::Response::ok(
                    serde_json::to_value(&o).unwrap_or_default(),
                );
                *out = o;
                r
            }
            Err(e) => crate::service::control::Response::err(e),
        }
    }

    fn on_call(&mut self, call: crate::service::control::Call) -> Result<(), DaemonError> {
        use crate::service::control::{Request, Response};
        let host = self.pipeline.host();
        let now = wall_s();
        let mut out = Vec::new();
        let resp = match call.request {
            Request::Status => Response::ok(self.status()),
            Request::Alerts { .. } => Response::ok(serde_json::Value::Array(
                self.recent_alerts.iter().cloned().collect(),
            )),
            Request::Approvals => Response::ok(
                serde_json::to_value(self.responder.approvals.values().collect::<Vec<_>>())
                    .unwrap_or_default(),
            ),
            Request::Incidents => Response::ok(
                serde_json::to_value(self.responder.save().incidents).unwrap_or_default(),
            ),
            Request::Approve { id } | Request::Deny { id }
                if !self.responder.approvals.contains_key(&id) =>
            {
                Response::err(crate::response::engine::ResponseError::NoApproval(id))
            }
            Request::Approve { id } => self.decide(&id, Decision::Approve, call.uid, now, &mut out),
            Request::Deny { id } => self.decide(&id, Decision::Deny, call.uid, now, &mut out),
            Request::Rollback { incident } => {
                let mut ex = HostExecutor {
                    containment: self.containment.as_mut(),
                    state_dir: &self.cfg.state_dir,
                    host: &host,
                };
                match self
                    .responder
                    .rollback(&incident, By::Uid(call.uid), &mut ex)
                {
                    Ok(o) => {
                        let r = Response::ok(serde_json::to_value(&o).unwrap_or_default());
                        out = o;
                        r
                    }
                    Err(e) => Response::err(e),
                }
            }
            Request::Reload => match self.reload() {
                Ok(n) => Response::ok(serde_json::json!({"playbooks": n})),
                Err(e) => {
                    Response::err(format!("reload refused, the running playbooks stay:\n{e}"))
                }
            },
        };
        let _ = call.reply.send(resp);
        self.write_response(out)?;
        self.sink.flush()?;
        Ok(())
    }

    fn emit_flow(&mut self, key: &FlowKey, end: FlowEnd) -> Result<(), DaemonError> {
        if let Ok(stats) = self.maps.flows.get(key, 0) {
            let _ = self.maps.flows.remove(key);
            let r = self.pipeline.on_flow(key, &stats, end);
            self.out_record(&r)?;
            if let Some(m) = &self.metrics {
                m.events.with_label_values(&["flow"]).inc();
                m.flows_emitted.inc();
            }
            self.detect(&r)?;
        }
        Ok(())
    }

    fn flush_closed(&mut self, all: bool) -> Result<(), DaemonError> {
        let now = monotonic_ns();
        while let Some(&(due, key)) = self.pending_close.front() {
            if !all && due > now {
                break;
            }
            self.pending_close.pop_front();
            self.pending_set.remove(&key);
            self.emit_flow(&key, FlowEnd::Close)?;
        }
        Ok(())
    }

    fn sweep(&mut self, shutdown: bool) -> Result<(), DaemonError> {
        let now = monotonic_ns();
        // Read before walking the map, so flows created during the walk can
        // only lower the estimate, never invent evictions.
        let created = self.maps.flows_created();
        let mut due = Vec::new();
        let mut tracked = 0u64;
        for item in self.maps.flows.iter() {
            let Ok((key, stats)) = item else { continue };
            tracked += 1;
            let end = if shutdown {
                Some(FlowEnd::Shutdown)
            } else {
                flow_due(&self.cfg.flows, &stats, now)
            };
            if let Some(end) = end {
                due.push((key, end));
            }
        }
        self.flows_tracked = tracked.saturating_sub(due.len() as u64);
        let evicted = created.saturating_sub(self.pipeline.stats.flows + tracked);
        if evicted > self.flows_evicted {
            if self.flows_evicted == 0 {
                tracing::warn!(
                    "the kernel flow map is full and evicting flows before they are emitted \
                     (raise flows.max_entries or lower the timeouts); counted in flows_evicted"
                );
            }
            self.flows_evicted = evicted;
        }
        for (key, end) in due {
            self.emit_flow(&key, end)?;
        }
        Ok(())
    }

    fn stats(&self) -> AgentStats {
        let mut events = BTreeMap::new();
        for kind in EventKind::ALL {
            let name = match kind {
                EventKind::Exec => "process_exec",
                EventKind::Exit => "process_exit",
                EventKind::Fork => "process_fork",
                EventKind::Connect => "net_connect",
                EventKind::Accept => "net_accept",
                EventKind::Close => "net_close",
                EventKind::ConnectFailed => "net_connect_failed",
                EventKind::Auth => "auth_attempt",
                EventKind::Refused => "net_refused",
                EventKind::FileWrite => "file_write",
            };
            events.insert(name, self.pipeline.stats.events[kind as usize]);
        }
        AgentStats {
            events,
            decode_errors: self.pipeline.stats.decode_errors,
            kernel_reserve_failures: self.maps.kernel_drops(),
            flows_emitted: self.pipeline.stats.flows,
            flows_tracked: self.flows_tracked,
            flows_evicted: self.flows_evicted,
            process_cache_entries: self.pipeline.procs.len(),
            process_cache_evicted: self.pipeline.procs.evicted,
        }
    }

    /// Expires lapsed blocks and attaches XDP to new interfaces.
    fn maintain(&mut self) -> Result<(), DaemonError> {
        let Some(c) = self.containment.as_mut() else {
            return Ok(());
        };
        let expired = c.expire();
        for a in c.rescan_interfaces() {
            tracing::info!(
                "xdp blocklist on new interface {}: {} {}",
                a.interface,
                a.mode,
                a.detail
            );
        }
        for a in expired {
            if let Some(m) = &self.metrics {
                m.actions
                    .with_label_values(&[a.action.as_str(), a.state.as_str()])
                    .inc();
            }
            self.out_line("action", &a.to_line())?;
        }
        Ok(())
    }

    /// Refreshes the gauges and mirrors the kernel-kept counters.
    fn update_metrics(&mut self, ebpf: &aya::Ebpf) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        self.metric_ticks += 1;
        m.mirror(
            "decode_errors",
            self.pipeline.stats.decode_errors,
            &m.decode_errors,
        );
        m.mirror(
            "reserve_failures",
            self.maps.kernel_drops(),
            &m.kernel_reserve_failures,
        );
        m.flows_tracked.set(self.flows_tracked as i64);
        m.mirror("flows_evicted", self.flows_evicted, &m.flows_evicted);
        m.process_cache_entries
            .set(self.pipeline.procs.len() as i64);
        for (name, prog) in ebpf.programs() {
            if let Ok(info) = prog.info() {
                m.program_up.with_label_values(&[name]).set(1);
                let t = info.run_time().as_nanos() as u64;
                m.mirror_seconds(
                    &format!("rt:{name}"),
                    t,
                    &m.program_run_time.with_label_values(&[name]),
                );
                m.mirror(
                    &format!("rc:{name}"),
                    info.run_count(),
                    &m.program_run_count.with_label_values(&[name]),
                );
            }
        }
        if let Some(c) = &self.containment {
            let t = c.blocks.totals();
            m.mirror(
                "drop_in",
                t.in_packets,
                &m.blocklist_dropped_packets.with_label_values(&["in"]),
            );
            m.mirror(
                "drop_out",
                t.out_packets,
                &m.blocklist_dropped_packets.with_label_values(&["out"]),
            );
            // Listing walks every entry and isolation asks nft: every 10 s.
            if self.metric_ticks % 10 == 1 {
                m.blocklist_entries.set(c.blocks.list().len() as i64);
                m.isolation_active
                    .set(crate::enforce::isolate::remaining_s().is_some() as i64);
            }
        }
    }

    fn write_agent(&mut self, body: Body) -> Result<(), DaemonError> {
        let r = Record {
            body,
            ts: now_rfc3339(),
            host: self.pipeline.host(),
            wall_ns: 0,
        };
        self.out_record(&r)?;
        self.sink.flush()?;
        Ok(())
    }
}

fn take<T>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<T, DaemonError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DaemonError::Map {
        name,
        reason: "missing from the object".to_string(),
    })?;
    T::try_from(map).map_err(|e| DaemonError::Map {
        name,
        reason: e.to_string(),
    })
}

pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::NotRoot);
    }
    // A bad playbook stops start-up before anything is attached.
    let playbooks = playbook::load_dir(&cfg.playbooks.dir)?;
    let mut loaded = loader::load(&cfg)?;
    for p in &loaded.probes {
        tracing::info!(
            "probe {:<14} {:<45} tier {} {} {}",
            p.name,
            p.hook,
            p.tier,
            p.state,
            p.detail
        );
    }
    let ring: RingBuf<MapData> = take(&mut loaded.ebpf, maps::EVENTS)?;
    let maps = Maps {
        flows: take(&mut loaded.ebpf, maps::FLOWS)?,
        drops: take(&mut loaded.ebpf, maps::EVENT_DROPS)?,
        created: take(&mut loaded.ebpf, maps::FLOWS_CREATED)?,
    };
    let sink = Sink::open(cfg.output_path().as_deref())?;
    let host: Arc<str> = if cfg.host.is_empty() {
        Arc::from(hostname())
    } else {
        Arc::from(cfg.host.as_str())
    };
    let mut probes = std::mem::take(&mut loaded.probes);
    let containment = if cfg.enforce.enabled {
        let (c, report) = Containment::open(&cfg, &host)?;
        for x in &report.xdp {
            let state = if x.mode == "failed" {
                "failed"
            } else {
                "attached"
            };
            probes.push(ProbeRow {
                name: "blocklist_in".to_string(),
                hook: format!("xdp/{}", x.interface),
                tier: if x.mode == "generic" { 2 } else { 1 },
                state: state.to_string(),
                detail: x.mode.clone() + if x.detail.is_empty() { "" } else { ": " } + &x.detail,
            });
        }
        probes.push(ProbeRow {
            name: "blocklist_out".to_string(),
            hook: format!("cgroup_skb/egress {}", c.cgroup().unwrap_or("?")),
            tier: 1,
            state: if report.egress.starts_with("failed") {
                "failed"
            } else {
                "attached"
            }
            .to_string(),
            detail: report.egress.clone(),
        });
        if report.restored > 0 {
            tracing::info!(
                "restored {} blocks from the state directory",
                report.restored
            );
        }
        Some(c)
    } else {
        None
    };
    let mut procs = ProcessCache::new(cfg.process_cache.max_entries);
    let seeded = procs.seed_from_proc();
    let mut st = State {
        pipeline: Pipeline::new(host, Clock::new(), procs),
        sink,
        maps,
        pending_close: VecDeque::new(),
        pending_set: HashSet::new(),
        flows_tracked: 0,
        flows_evicted: 0,
        containment,
        engine: crate::detect::config::engine(&cfg.detect),
        metrics: None,
        metric_ticks: 0,
        responder: responder_for(&cfg, playbooks),
        recent_alerts: VecDeque::new(),
        alert_feed: tokio::sync::broadcast::channel(1024).0,
        probes: probes.clone(),
        reporter: None,
        verifier: Verifier::new(&cfg.kafka.hmac_key, cfg.kafka.command_max_age_s),
        offsets: consumer::load_offsets(&cfg.state_dir.join(OFFSETS_FILE)),
        cfg,
    };
    let (inbound_tx, mut inbound_rx) = tokio::sync::mpsc::channel::<Inbound>(256);
    let _consumer = if st.cfg.kafka.brokers.is_empty() {
        drop(inbound_tx);
        None
    } else {
        let host = st.pipeline.host();
        st.reporter = Some(Reporter::new(
            &st.cfg.kafka,
            &host,
            &st.cfg.state_dir.join("spool"),
        )?);
        tracing::info!("kafka: reporting to {}", st.cfg.kafka.brokers);
        let topics = vec![
            st.cfg.kafka.topics.commands.clone(),
            st.cfg.kafka.topics.enriched.clone(),
        ];
        Some(consumer::spawn(
            st.cfg.kafka.brokers.clone(),
            topics,
            st.cfg.state_dir.join(OFFSETS_FILE),
            inbound_tx,
        )?)
    };
    tracing::info!(
        "{} playbooks loaded from {} (response mode {:?})",
        st.responder.playbooks.len(),
        st.cfg.playbooks.dir.display(),
        st.cfg.response.mode
    );
    match std::fs::read(st.cfg.state_dir.join(RESPONSE_STATE)) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(saved) => st.responder.restore(saved),
            Err(e) => tracing::warn!("ignored unreadable {RESPONSE_STATE} ({e})"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not read {RESPONSE_STATE}: {e}"),
    }
    let (call_tx, mut call_rx) = tokio::sync::mpsc::channel(64);
    let _control_task = if st.cfg.control.socket.as_os_str().is_empty() {
        None
    } else {
        let listener = crate::service::control::bind(&st.cfg.control.socket)?;
        let feed = st.alert_feed.clone();
        Some(tokio::spawn(crate::service::control::serve(
            listener, call_tx, feed,
        )))
    };
    let _metrics_task = if st.cfg.metrics.listen.is_empty() {
        None
    } else {
        let m = Metrics::new()?;
        // Per-program run time needs the kernel's bpf_stats switch.
        if let Err(e) = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1") {
            tracing::warn!("bpf_stats not enabled ({e}): program run time will read 0");
        }
        // Bind before serving so a taken port fails start-up with a clear line.
        let listener = std::net::TcpListener::bind(&st.cfg.metrics.listen).map_err(|source| {
            crate::service::metrics::MetricsError::Bind {
                addr: st.cfg.metrics.listen.clone(),
                source,
            }
        })?;
        drop(listener);
        st.metrics = Some(m.clone());
        let addr = st.cfg.metrics.listen.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = crate::service::metrics::serve(addr, m).await {
                tracing::error!("{e}");
            }
        }))
    };
    if let Some(engine) = st.engine.as_mut() {
        let dir = st.cfg.state_dir.clone();
        for e in engine.load_states(|name| std::fs::read(dir.join(name)).ok()) {
            tracing::warn!("ignored saved detector state ({e}); learning afresh");
        }
    }
    st.write_agent(Body::AgentStart(AgentStart {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        probes,
        processes_seeded: seeded,
    }))?;
    crate::service::notify::notify("READY=1\nSTATUS=kernel programs attached");
    match st.cfg.output_path() {
        Some(p) => tracing::info!("vigil running; writing JSON lines to {}", p.display()),
        None => tracing::info!("vigil running; writing JSON lines to stdout"),
    }

    // SAFETY: the ring buffer owns its fd and outlives the registration
    // (both live in `ring` until the end of this function).
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| DaemonError::Io(e.into()))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut respond = tokio::time::interval(Duration::from_secs(1));
    let mut pump = tokio::time::interval(Duration::from_millis(20));
    let mut sweep = tokio::time::interval(Duration::from_millis(st.cfg.flows.sweep_interval_ms));
    let mut closes = tokio::time::interval(Duration::from_millis(50));
    let stats_every = Duration::from_secs(st.cfg.stats_interval_s.max(1));
    let mut stats =
        tokio::time::interval_at(tokio::time::Instant::now() + stats_every, stats_every);
    let stats_on = st.cfg.stats_interval_s > 0;
    let mut maintain = tokio::time::interval(Duration::from_secs(
        st.cfg.enforce.maintenance_interval_s.max(1),
    ));

    let mut metrics_tick = tokio::time::interval(Duration::from_secs(1));
    // The watchdog is fed from this loop, so only a turning pipeline feeds it.
    let watchdog_every = crate::service::notify::watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    loop {
        if let Some(m) = &st.metrics {
            m.beat();
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    st.on_ring_record(&item)?;
                }
                guard.clear_ready();
                st.sink.flush()?;
            }
            _ = closes.tick() => {
                if !st.pending_close.is_empty() {
                    st.flush_closed(false)?;
                    st.sink.flush()?;
                }
            }
            _ = sweep.tick() => {
                st.sweep(false)?;
                st.sink.flush()?;
            }
            _ = stats.tick(), if stats_on => {
                let s = st.stats();
                st.write_agent(Body::AgentStats(s))?;
            }
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                crate::service::notify::notify("WATCHDOG=1");
            }
            _ = metrics_tick.tick(), if st.metrics.is_some() => {
                st.update_metrics(&loaded.ebpf);
            }
            _ = maintain.tick(), if st.containment.is_some() => {
                st.maintain()?;
                st.sink.flush()?;
            }
            _ = respond.tick(), if !st.responder.approvals.is_empty() => {
                st.respond_tick()?;
                st.sink.flush()?;
            }
            Some(call) = call_rx.recv() => st.on_call(call)?,
            _ = pump.tick(), if st.reporter.is_some() => st.pump()?,
            Some(m) = inbound_rx.recv() => st.on_inbound(m)?,
            _ = sighup.recv() => {
                let _ = st.reload();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    crate::service::notify::notify("STOPPING=1");
    // Drain what the kernel already queued, then emit every live flow.
    let rb = ring.get_mut();
    while let Some(item) = rb.next() {
        let data = item.to_vec();
        drop(item);
        st.on_ring_record(&data)?;
    }
    st.flush_closed(true)?;
    st.sweep(true)?;
    let s = st.stats();
    st.write_agent(Body::AgentStop(s))?;
    if !st.cfg.control.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&st.cfg.control.socket);
    }
    if let Some(rep) = st.reporter.as_mut() {
        // What is not acknowledged now stays spooled for the next start.
        rep.close(Duration::from_secs(2));
    }
    tracing::info!("vigil stopped; programs detached");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FlowConfig;

    const S: u64 = 1_000_000_000;

    #[test]
    fn udp_flow_is_due_after_idle_timeout() {
        let cfg = FlowConfig::default();
        let s = FlowStats {
            t_first_ns: 100 * S,
            t_last_ns: 100 * S,
            n_out: 1,
            ..FlowStats::default()
        };
        assert_eq!(flow_due(&cfg, &s, 129 * S), None);
        assert_eq!(flow_due(&cfg, &s, 130 * S), Some(FlowEnd::Idle));
    }

    #[test]
    fn long_flow_hits_active_timeout() {
        let cfg = FlowConfig::default();
        let s = FlowStats {
            t_first_ns: 0,
            t_last_ns: 119 * S,
            syn: 1,
            ..FlowStats::default()
        };
        assert_eq!(flow_due(&cfg, &s, 120 * S), Some(FlowEnd::ActiveTimeout));
    }

    #[test]
    fn tcp_with_fins_both_ways_goes_soon() {
        let cfg = FlowConfig::default();
        let s = FlowStats {
            t_first_ns: 10 * S,
            t_last_ns: 10 * S,
            syn: 2,
            fin: 2,
            ..FlowStats::default()
        };
        assert_eq!(flow_due(&cfg, &s, 11 * S), Some(FlowEnd::Idle));
        let open = FlowStats { fin: 0, ..s };
        assert_eq!(flow_due(&cfg, &open, 11 * S), None);
    }

    #[test]
    fn close_key_matches_kernel_orientation() {
        let k = flow_key(
            6,
            "10.0.0.1".parse().unwrap(),
            5,
            "10.0.0.2".parse().unwrap(),
            80,
        );
        assert_eq!(k.ip_version, 4);
        assert_eq!(&k.local_addr[..4], &[10, 0, 0, 1]);
        assert_eq!(k.remote_port, 80);
    }
}
