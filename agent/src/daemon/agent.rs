//! The agent's state and the record path through it: ring buffer bytes →
//! pipeline → sinks → detectors → response. One task owns it, so no
//! component needs a lock.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use agent_common::FlowKey;
use prometheus::IntCounter;
use tokio::sync::broadcast;

use super::flows::{FlowTracker, KernelMaps};
use crate::config::Config;
use crate::detect::{Alert, Engine};
use crate::enforce::containment::Containment;
use crate::pipeline::event::{ConnKind, Event};
use crate::pipeline::proc_cache::ProcessCache;
use crate::pipeline::{FlowEnd, Pipeline};
use crate::record::{Body, ProbeRow, Record};
use crate::response::engine::{Executor, Responder};
use crate::response::executor::HostExecutor;
use crate::response::playbook::{self, PlaybookError};
use crate::response::protect::Protection;
use crate::response::record::ResponseRecord;
use crate::service::metrics::Metrics;
use crate::sink::{Output, Sinks};
use crate::util::clock::{monotonic_ns, now_rfc3339};
use crate::util::statefile;

pub use super::inbound::Fleet;

/// Executables hashed for process alerts at most this large.
const HASH_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Adds the SHA-256 of a process alert's executable to its entities, so
/// fusion can recognise the same file on other hosts. The detectors stay
/// pure; this I/O runs only for alerts, which are rare.
fn name_executable(alert: &mut Alert) {
    if alert.detector != "process" || alert.update {
        return;
    }
    let Some(exe) = alert.entities.get("exe").and_then(|e| e.as_str()) else {
        return;
    };
    if let Some(h) = crate::util::file_sha256(std::path::Path::new(exe), HASH_MAX_BYTES) {
        alert.entities["sha256"] = h.into();
    }
}

/// Adds the GUIDs of an alert's process (`entities.pid`) to its entities:
/// the record's own when the alert is about the record's process, else
/// what the process cache holds for that pid now.
fn identify_process(alert: &mut Alert, r: &Record, procs: &ProcessCache) {
    let Some(pid) = alert
        .entities
        .get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
    else {
        return;
    };
    let (guid, parent) = if r.body.pid() == Some(pid) {
        (r.guid.clone(), r.parent_guid.clone())
    } else {
        procs
            .peek(pid)
            .map_or((None, None), |i| (i.guid.clone(), i.parent_guid.clone()))
    };
    let Some(ent) = alert.entities.as_object_mut() else {
        return;
    };
    if let Some(g) = guid {
        ent.insert("guid".into(), g.as_ref().into());
    }
    if let Some(g) = parent {
        ent.insert("parent_guid".into(), g.as_ref().into());
    }
}

/// Alerts kept for `vigil alerts`.
pub const RECENT_ALERTS: usize = 256;
pub const RESPONSE_STATE: &str = "response.json";

/// Wall-clock seconds, the clock approvals' deadlines use.
pub fn wall_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The response engine with what it acts through: the host's containment
/// and audit log, and what it must not touch.
pub struct HostResponse {
    pub responder: Responder,
    pub containment: Option<Containment>,
    pub state_dir: PathBuf,
    pub host: Arc<str>,
    pub protection: Protection,
    /// `response.quarantine_max_bytes`.
    pub quarantine_max_bytes: u64,
    /// The last save failed: retried by housekeeping.
    pub unsaved: bool,
}

impl HostResponse {
    /// Runs `f` with the responder and an executor that changes this host.
    pub fn act<T>(&mut self, f: impl FnOnce(&mut Responder, &mut dyn Executor) -> T) -> T {
        let mut ex = HostExecutor {
            containment: self.containment.as_mut(),
            state_dir: &self.state_dir,
            host: &self.host,
            protection: &mut self.protection,
            quarantine_max_bytes: self.quarantine_max_bytes,
        };
        f(&mut self.responder, &mut ex)
    }

    /// Saves the incidents and approvals when they changed (or when the
    /// last save failed), atomically.
    pub fn save_if_dirty(&mut self) {
        if !self.responder.take_dirty() && !self.unsaved {
            return;
        }
        let path = self.state_dir.join(RESPONSE_STATE);
        match statefile::write_json(&path, &self.responder.save(), statefile::Sync::Full) {
            Ok(()) => self.unsaved = false,
            Err(e) => {
                if !self.unsaved {
                    tracing::warn!("could not save response state ({e}); retrying");
                }
                self.unsaved = true;
            }
        }
    }

    /// Restores incidents and approvals saved by an earlier run; a corrupt
    /// file is moved aside and the responder starts empty.
    pub fn restore(&mut self) {
        let path = self.state_dir.join(RESPONSE_STATE);
        if let Some(saved) = statefile::load_json(&path, |_| Ok(())).found() {
            self.responder.restore(saved);
        }
    }
}

/// The last alerts, and a feed for `vigil alerts --follow`.
pub struct AlertFeed {
    pub recent: VecDeque<Alert>,
    pub feed: broadcast::Sender<Arc<str>>,
}

impl AlertFeed {
    pub fn new() -> AlertFeed {
        AlertFeed {
            recent: VecDeque::new(),
            feed: broadcast::channel(1024).0,
        }
    }

    fn push(&mut self, alert: &Alert, line: Option<String>) {
        if let Some(line) = line {
            let _ = self.feed.send(Arc::from(line));
        }
        if self.recent.len() == RECENT_ALERTS {
            self.recent.pop_front();
        }
        self.recent.push_back(alert.clone());
    }
}

impl Default for AlertFeed {
    fn default() -> Self {
        AlertFeed::new()
    }
}

/// Detector baselines waiting to be written.
#[derive(Default)]
pub struct Baselines {
    /// States whose write failed, retried at the next save.
    pub pending: Vec<(&'static str, Vec<u8>)>,
    /// Wall seconds of the last look for changed states.
    pub last_s: f64,
}

/// Seconds between looks for changed detector states (they change when a
/// model is retrained, at most a few times a day).
pub const BASELINE_EVERY_S: f64 = 10.0;

pub struct Agent {
    pub cfg: Config,
    pub pipeline: Pipeline,
    pub sinks: Sinks,
    pub kernel: Box<dyn KernelMaps>,
    pub flows: FlowTracker,
    pub engine: Option<Engine>,
    pub response: HostResponse,
    pub alerts: AlertFeed,
    pub fleet: Fleet,
    pub metrics: Option<Arc<Metrics>>,
    pub probes: Vec<ProbeRow>,
    pub metric_ticks: u64,
    pub baselines: Baselines,
    /// Resolved `events_total{kind}` children: resolving the label on
    /// every record cost ~3 % of the agent under a connection storm.
    pub event_counters: HashMap<&'static str, IntCounter>,
}

impl Agent {
    /// One ring buffer record: decoded, enriched, written, detected on.
    pub fn on_ring_record(&mut self, data: &[u8]) {
        match crate::pipeline::decode::decode(data) {
            Ok(ev) => {
                if let Event::Conn(c) = &ev {
                    if c.kind == ConnKind::Close {
                        self.flows.on_close(
                            monotonic_ns(),
                            (c.src_ip, c.src_port),
                            (c.dst_ip, c.dst_port),
                        );
                    }
                }
                let (r, flow) = self.pipeline.on_event(ev);
                self.on_record(&r);
                if let Some(flow) = flow {
                    self.on_record(&flow);
                    if let Some(m) = &self.metrics {
                        m.flows_emitted.inc();
                    }
                }
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
    }

    /// A record from the pipeline: out to the sinks, then to the detectors.
    fn on_record(&mut self, r: &Record) {
        self.sinks.emit(Output::Event(r));
        if let Some(m) = &self.metrics {
            let kind = r.body.kind();
            self.event_counters
                .entry(kind)
                .or_insert_with(|| m.events.with_label_values(&[kind]))
                .inc();
        }
        self.detect(r);
    }

    /// Runs the detectors on a record; each alert is written, printed one
    /// readable line on stderr, fed to followers and handed to the playbooks.
    fn detect(&mut self, r: &Record) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let now_s = r.wall_ns as f64 / 1e9;
        for mut alert in engine.on_record(now_s, &r.ts, &r.host, &r.body) {
            name_executable(&mut alert);
            identify_process(&mut alert, r, &self.pipeline.procs);
            // Not eprintln!: it panics when stderr cannot be written (a
            // full disk under a redirected stderr), and an alert line on
            // the terminal is not worth the agent.
            let _ = writeln!(std::io::stderr(), "{}", alert.line());
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
            let line = self.sinks.emit(Output::Alert(&alert));
            self.alerts.push(&alert, line);
            let out = self.response.act(|r, ex| r.on_alert(&alert, wall_s(), ex));
            self.respond(out);
        }
    }

    /// Writes what the response engine or containment did, counts it, and
    /// saves the engine's state when it changed.
    pub fn respond(&mut self, out: Vec<ResponseRecord>) {
        for r in &out {
            if let (Some(m), Some(a)) = (&self.metrics, r.action()) {
                m.actions
                    .with_label_values(&[a.action.as_str(), a.state.as_str()])
                    .inc();
            }
            self.sinks.emit(Output::Response(r));
        }
        self.response.save_if_dirty();
    }

    /// Approval deadlines.
    pub fn respond_tick(&mut self) {
        let out = self.response.act(|r, ex| r.tick(wall_s(), ex));
        self.respond(out);
    }

    /// Re-reads the playbook directory; on any problem the running set stays.
    pub fn reload(&mut self) -> Result<usize, PlaybookError> {
        match playbook::load_dir(&self.cfg.playbooks.dir) {
            Ok(set) => {
                let n = set.len();
                tracing::info!(
                    "reloaded {n} playbooks from {}",
                    self.cfg.playbooks.dir.display()
                );
                self.response.responder.playbooks = set;
                Ok(n)
            }
            Err(e) => {
                tracing::error!("playbook reload refused; keeping the running set:\n{e}");
                Err(e)
            }
        }
    }

    /// Takes a flow out of the kernel map and runs it down the record path.
    fn emit_flow(&mut self, key: &FlowKey, end: FlowEnd) {
        if let Some(stats) = self.kernel.take_flow(key) {
            let r = self.pipeline.on_flow(key, &stats, end);
            self.on_record(&r);
            if let Some(m) = &self.metrics {
                m.flows_emitted.inc();
            }
        }
    }

    /// Emits closed flows whose linger is over (every one when `all`).
    pub fn flush_closed(&mut self, all: bool) {
        for key in self.flows.closed_due(monotonic_ns(), all) {
            self.emit_flow(&key, FlowEnd::Close);
        }
    }

    /// Emits every due flow in the kernel map (every flow at shutdown).
    pub fn sweep(&mut self, shutdown: bool) {
        let due = self.flows.sweep(
            self.kernel.as_ref(),
            monotonic_ns(),
            self.pipeline.stats.flows,
            shutdown,
        );
        for (key, end) in due {
            self.emit_flow(&key, end);
        }
    }

    /// Expires lapsed blocks and attaches XDP to new interfaces.
    pub fn maintain(&mut self) {
        let Some(c) = self.response.containment.as_mut() else {
            return;
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
        self.respond(expired.into_iter().map(ResponseRecord::Action).collect());
    }

    /// Loads the detectors' saved baselines; a file a detector refuses
    /// (unparsable, or failing its checks) is moved aside and that
    /// detector learns afresh.
    pub fn load_baselines(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let dir = self.cfg.state_dir.clone();
        for (name, e) in engine.load_states(|name| std::fs::read(dir.join(name)).ok()) {
            let path = dir.join(name);
            match statefile::move_aside(&path) {
                Ok(to) => tracing::warn!(
                    "ignored saved detector state ({e}); moved it to {} and learning afresh",
                    to.display()
                ),
                Err(m) => tracing::warn!(
                    "ignored saved detector state ({e}; could not move it aside: {m}); learning afresh"
                ),
            }
        }
    }

    /// Writes detector baselines that changed since the last call, and
    /// retries those whose write failed.
    pub fn save_baselines(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        for (name, bytes) in engine.take_states() {
            self.baselines.pending.retain(|(n, _)| *n != name);
            self.baselines.pending.push((name, bytes));
        }
        let dir = &self.cfg.state_dir;
        self.baselines.pending.retain(|(name, bytes)| {
            match statefile::write(&dir.join(name), bytes, statefile::Sync::Full) {
                Ok(()) => {
                    tracing::info!("saved detector baseline {name}");
                    false
                }
                Err(e) => {
                    tracing::warn!("could not save detector baseline ({e}); retrying");
                    true
                }
            }
        });
    }

    /// Periodic saves and summaries: refused fleet messages, Kafka offsets
    /// and executed ids, response state, detector baselines.
    pub fn housekeeping(&mut self) {
        self.save_changed(false);
    }

    /// At shutdown: everything housekeeping would save, now.
    pub fn persist(&mut self) {
        self.save_changed(true);
    }

    fn save_changed(&mut self, shutdown: bool) {
        let now = wall_s();
        self.summarise_refusals(now, shutdown);
        self.save_offsets();
        self.save_seen(now);
        self.response.save_if_dirty();
        if shutdown || now - self.baselines.last_s >= BASELINE_EVERY_S {
            self.baselines.last_s = now;
            self.save_baselines();
        }
    }

    /// This host's addresses and roles, for fusion (`fleet.inventory`).
    pub fn publish_inventory(&mut self) {
        let mut addresses: Vec<std::net::IpAddr> = crate::enforce::guard::own_addresses()
            .into_iter()
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .collect();
        addresses.sort();
        addresses.dedup();
        self.write_agent(Body::Inventory(crate::record::Inventory {
            addresses,
            roles: self.cfg.roles.clone(),
        }));
    }

    /// An agent record (start, stats, stop), flushed at once.
    pub fn write_agent(&mut self, body: Body) {
        let r = Record {
            body,
            guid: None,
            parent_guid: None,
            ts: now_rfc3339(),
            host: self.pipeline.host(),
            wall_ns: 0,
        };
        self.sinks.emit(Output::Event(&r));
        self.sinks.flush();
    }
}
