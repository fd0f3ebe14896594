//! Wiring: builds every component from the config, in the order that lets
//! start-up fail before anything is attached where it can (bad playbooks,
//! taken metrics port), and reports what attached.

use std::sync::Arc;
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::agent::{Agent, AlertFeed, Baselines, Fleet, HostResponse};
use super::flows::{FlowTracker, Kernel};
use super::inbound::OFFSETS_FILE;
use super::schedule::{Job, Schedule};
use super::DaemonError;
use crate::config::Config;
use crate::enforce::containment::Containment;
use crate::kernel::loader;
use crate::pipeline::proc_cache::ProcessCache;
use crate::pipeline::Pipeline;
use crate::record::{AgentStart, Body, ProbeRow};
use crate::response::engine::{Limits, Responder};
use crate::response::playbook;
use crate::response::protect::Protection;
use crate::service::control::Call;
use crate::service::metrics::Metrics;
use crate::sink::format::Format;
use crate::sink::jsonl::{JsonLines, Rotation};
use crate::sink::kafka::consumer;
use crate::sink::kafka::producer::{Inbound, Reporter};
use crate::sink::{Sink, Sinks};
use crate::util::clock::Clock;

/// Everything `serve` drives besides the agent itself.
pub struct Running {
    pub ebpf: aya::Ebpf,
    pub ring: AsyncFd<RingBuf<MapData>>,
    /// `AGENT_BUSY`: tells the kernel when wake-ups are not needed.
    pub busy: aya::maps::Array<MapData, u64>,
    pub calls: mpsc::Receiver<Call>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub schedule: Schedule,
    /// Kept so the tasks and the consumer thread live as long as the loop.
    pub _tasks: Vec<JoinHandle<()>>,
    pub _consumer: Option<std::thread::JoinHandle<()>>,
    /// Holds `bpf_stats` on while the agent runs (`metrics.bpf_stats`).
    pub _bpf_stats: Option<std::os::fd::OwnedFd>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
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

/// The enforcement programs, when enabled, and their probe rows.
fn containment(
    cfg: &Config,
    host: &str,
    probes: &mut Vec<ProbeRow>,
) -> Result<Option<Containment>, DaemonError> {
    if !cfg.enforce.enabled {
        return Ok(None);
    }
    let (c, report) = Containment::open(cfg, host)?;
    probes.extend(crate::kernel::probes::blocklist_rows(&report));
    if report.restored > 0 {
        tracing::info!(
            "restored {} blocks from the state directory",
            report.restored
        );
    }
    Ok(Some(c))
}

/// Binds the metrics port before serving, so a taken port fails start-up
/// with a clear line.
/// The metrics registry, the task serving it and, with
/// `metrics.bpf_stats`, the descriptor holding run-time accounting on.
type Served = (Arc<Metrics>, JoinHandle<()>, Option<std::os::fd::OwnedFd>);

fn metrics(cfg: &Config) -> Result<Option<Served>, DaemonError> {
    if cfg.metrics.listen.is_empty() {
        return Ok(None);
    }
    let m = Metrics::new()?;
    // Per-program run time needs the kernel's bpf_stats, which costs every
    // program on the host a little: only on request, and only while we run.
    let stats = match cfg.metrics.bpf_stats {
        false => None,
        true => match crate::kernel::stats::enable_run_time() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!("bpf_stats not enabled ({e}): program run time will read 0");
                None
            }
        },
    };
    let listener = std::net::TcpListener::bind(&cfg.metrics.listen).map_err(|source| {
        crate::service::metrics::MetricsError::Bind {
            addr: cfg.metrics.listen.clone(),
            source,
        }
    })?;
    drop(listener);
    let addr = cfg.metrics.listen.clone();
    let served = m.clone();
    let limits = cfg.metrics.limits();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::service::metrics::serve(addr, served, limits).await {
            tracing::error!("{e}");
        }
    });
    Ok(Some((m, task, stats)))
}

/// Loads and attaches everything; returns the agent and what drives it.
pub async fn start(cfg: Config) -> Result<(Agent, Running), DaemonError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DaemonError::NotRoot);
    }
    private_files(&cfg)?;
    // A bad playbook stops start-up before anything is attached.
    let playbooks = playbook::load_dir(&cfg.playbooks.dir)?;
    // So do bad Sigma rules.
    let sigma = super::sigma::load_at_start(&cfg)?;
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
    let ring: RingBuf<MapData> = take(&mut loaded.ebpf, agent_common::maps::EVENTS)?;
    let busy = take(&mut loaded.ebpf, agent_common::maps::AGENT_BUSY)?;
    let kernel = Kernel {
        flows: take(&mut loaded.ebpf, agent_common::maps::FLOWS)?,
        drops: take(&mut loaded.ebpf, agent_common::maps::EVENT_DROPS)?,
        created: take(&mut loaded.ebpf, agent_common::maps::FLOWS_CREATED)?,
    };
    let rotation = Rotation {
        max_bytes: cfg.output_max_bytes,
        keep: cfg.output_keep,
    };
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(
        JsonLines::open(cfg.output_path().as_deref(), rotation)?.with_format(cfg.format),
    )];
    let host: Arc<str> = if cfg.host.is_empty() {
        Arc::from(hostname())
    } else {
        Arc::from(cfg.host.as_str())
    };
    let mut probes = std::mem::take(&mut loaded.probes);
    let containment = containment(&cfg, &host, &mut probes)?;
    let mut procs = ProcessCache::new(cfg.process_cache.max_entries);
    let seeded = procs.seed_from_proc();

    let (inbound_tx, inbound) = mpsc::channel::<Inbound>(256);
    let consumer = if cfg.kafka.brokers.is_empty() {
        drop(inbound_tx);
        None
    } else {
        sinks.push(Box::new(Reporter::new(
            &cfg.kafka,
            &host,
            &cfg.state_dir.join("spool"),
        )?));
        if cfg.kafka.format != Format::Native {
            // Fusion and the agents read native records: the topics they
            // read keep them, and the SIEM's copy goes to its own topics.
            let f = cfg.kafka.format;
            sinks.push(Box::new(Reporter::formatted(
                &cfg.kafka,
                &host,
                &cfg.state_dir.join(format!("spool-{}", f.as_str())),
                f,
            )?));
            tracing::info!(
                "kafka: {} copies to {}.{}, {}.{}, {}.{}",
                f.as_str(),
                cfg.kafka.topics.events,
                f.as_str(),
                cfg.kafka.topics.alerts,
                f.as_str(),
                cfg.kafka.topics.actions,
                f.as_str()
            );
        }
        tracing::info!("kafka: reporting to {}", cfg.kafka.brokers);
        let topics = vec![
            cfg.kafka.topics.commands.clone(),
            cfg.kafka.topics.enriched.clone(),
        ];
        Some(consumer::spawn(
            cfg.kafka.brokers.clone(),
            topics,
            vec![cfg.kafka.topics.enriched.clone()],
            cfg.state_dir.join(OFFSETS_FILE),
            inbound_tx,
        )?)
    };
    let responder = Responder::new(
        playbooks,
        cfg.response.mode,
        Limits {
            max_actions_per_minute: cfg.response.max_actions_per_minute,
            max_concurrent_blocks: cfg.response.max_concurrent_blocks,
            max_pending_approvals: cfg.response.max_pending_approvals,
        },
    );
    tracing::info!(
        "{} playbooks loaded from {} (response mode {:?})",
        responder.playbooks.len(),
        cfg.playbooks.dir.display(),
        cfg.response.mode
    );
    let mut pipeline = Pipeline::new(host.clone(), Clock::new(), procs);
    pipeline.set_auth_services(cfg.detect.brute_force.services.clone());
    pipeline.set_watched_dirs(cfg.detect.process.suspicious_dirs.clone());
    let mut agent = Agent {
        pipeline,
        sinks: Sinks::new(sinks),
        kernel: Box::new(kernel),
        flows: FlowTracker::new(cfg.flows.clone()),
        engine: crate::detect::config::engine(&cfg.detect),
        response: HostResponse {
            responder,
            containment,
            state_dir: cfg.state_dir.clone(),
            host,
            protection: Protection::new(cfg.response.protected_prefixes.clone()),
            quarantine_max_bytes: cfg.response.quarantine_max_bytes,
            unsaved: false,
        },
        alerts: AlertFeed::new(),
        fleet: Fleet::new(&cfg),
        metrics: None,
        probes: probes.clone(),
        metric_ticks: 0,
        baselines: Baselines::default(),
        event_counters: Default::default(),
        cfg,
    };
    agent.response.restore();
    // Approvals whose deadline passed while the agent was down are expired
    // now, not decided by their on_timeout on a stale alert.
    let expired = agent
        .response
        .act(|r, ex| r.expire_stale(super::agent::wall_s(), ex));
    agent.respond(expired);
    agent.restore_fleet();

    let mut tasks = Vec::new();
    let mut bpf_stats = None;
    if let Some((m, task, stats)) = metrics(&agent.cfg)? {
        agent.metrics = Some(m);
        tasks.push(task);
        bpf_stats = stats;
    }
    let (call_tx, calls) = mpsc::channel(64);
    if !agent.cfg.control.socket.as_os_str().is_empty() {
        let listener = crate::service::control::bind(&agent.cfg.control.socket)?;
        let feed = agent.alerts.feed.clone();
        let gate = crate::service::accept::Gate::new(
            "control",
            agent.cfg.control.limits(),
            agent.metrics.clone(),
        );
        tasks.push(tokio::spawn(crate::service::control::serve(
            listener, call_tx, feed, gate,
        )));
    }
    agent.load_baselines();
    if let Some((set, users)) = sigma {
        agent.install_sigma(set, users);
    }
    let sigma_rules = agent.sigma_counts();
    agent.write_agent(Body::AgentStart(AgentStart {
        sigma_rules,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        probes,
        processes_seeded: seeded,
    }));
    crate::service::notify::notify("READY=1\nSTATUS=kernel programs attached");
    let format = agent.cfg.format.as_str();
    match agent.cfg.output_path() {
        Some(p) => tracing::info!(
            "vigil running; writing {format} JSON lines to {}",
            p.display()
        ),
        None => tracing::info!("vigil running; writing {format} JSON lines to stdout"),
    }

    let schedule = schedule(&agent);
    // SAFETY: the ring buffer owns its fd and outlives the registration
    // (both live in `Running` until the daemon returns).
    let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| DaemonError::Io(e.into()))?;
    Ok((
        agent,
        Running {
            ebpf: loaded.ebpf,
            ring,
            busy,
            calls,
            inbound,
            schedule,
            _tasks: tasks,
            _consumer: consumer,
            _bpf_stats: bpf_stats,
        },
    ))
}

/// The periodic jobs this configuration needs.
fn schedule(agent: &Agent) -> Schedule {
    let cfg = &agent.cfg;
    let now = Instant::now();
    let zero = Duration::ZERO;
    let mut s = Schedule::new();
    s.every(Job::Closes, Duration::from_millis(50), zero, now);
    s.every(
        Job::Sweep,
        Duration::from_millis(cfg.flows.sweep_interval_ms),
        zero,
        now,
    );
    s.every(Job::Approvals, Duration::from_secs(1), zero, now);
    if cfg.stats_interval_s > 0 {
        let every = Duration::from_secs(cfg.stats_interval_s);
        s.every(Job::Stats, every, every, now);
    }
    if let Some(every) = crate::service::notify::watchdog_interval() {
        // Fed from the loop, so only a turning pipeline feeds it.
        s.every(Job::Watchdog, every, zero, now);
    }
    if agent.metrics.is_some() {
        s.every(Job::Metrics, Duration::from_secs(1), zero, now);
    }
    if agent.response.containment.is_some() {
        let every = Duration::from_secs(cfg.enforce.maintenance_interval_s.max(1));
        s.every(Job::Maintain, every, zero, now);
    }
    if !cfg.kafka.brokers.is_empty() {
        s.every(Job::Outputs, Duration::from_millis(20), zero, now);
    }
    s.every(Job::Housekeeping, Duration::from_secs(1), zero, now);
    if !cfg.kafka.brokers.is_empty() {
        // Addresses change rarely; the compacted topic keeps the last.
        s.every(Job::Inventory, Duration::from_secs(300), zero, now);
    }
    s
}

/// Outside systemd (which sets `StateDirectoryMode=0700` for the unit),
/// the agent makes its own files private: umask 077 for everything it
/// creates, and a state directory of mode 0700.
fn private_files(cfg: &Config) -> Result<(), DaemonError> {
    let under_systemd =
        std::env::var_os("INVOCATION_ID").is_some() || std::env::var_os("NOTIFY_SOCKET").is_some();
    if under_systemd {
        return Ok(());
    }
    // SAFETY: umask has no preconditions; it only changes this process's mask.
    unsafe { libc::umask(0o077) };
    crate::util::statefile::private_dir(&cfg.state_dir)?;
    Ok(())
}
