//! `vigil run`: start → serve → shutdown. `start` wires the components,
//! `serve` is one task that hands each source (ring buffer, timer, control
//! calls, fleet messages, signals) to the agent until SIGINT or SIGTERM,
//! `shutdown` drains and emits what is left. Single task, so the
//! components need no locks.

pub mod agent;
pub mod control;
pub mod flows;
pub mod inbound;
pub mod schedule;
pub mod start;
pub mod telemetry;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::record::Body;
use crate::service::notify::notify;
use agent::Agent;
use schedule::Job;
use start::Running;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("vigil run must be started as root (it loads eBPF programs): run it with sudo")]
    NotRoot,
    #[error(transparent)]
    Loader(#[from] crate::kernel::loader::LoaderError),
    #[error(transparent)]
    Output(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Enforce(#[from] crate::enforce::EnforceError),
    #[error(transparent)]
    Metrics(#[from] crate::service::metrics::MetricsError),
    #[error("refusing to start with bad playbooks:\n{0}")]
    Playbooks(#[from] crate::response::playbook::PlaybookError),
    #[error(transparent)]
    Control(#[from] crate::service::control::ControlError),
    #[error(transparent)]
    Kafka(#[from] crate::sink::kafka::producer::KafkaError),
    #[error("kernel map {name} unusable: {reason}")]
    Map { name: &'static str, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    let (mut agent, mut running) = start::start(cfg).await?;
    serve(&mut agent, &mut running).await?;
    shutdown(&mut agent, &mut running);
    Ok(())
}

async fn serve(agent: &mut Agent, run: &mut Running) -> Result<(), DaemonError> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    loop {
        if let Some(m) = &agent.metrics {
            m.beat();
        }
        tokio::select! {
            guard = run.ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    agent.on_ring_record(&item);
                }
                guard.clear_ready();
                agent.sinks.flush();
            }
            _ = tokio::time::sleep_until(run.schedule.next()) => {
                for job in run.schedule.due(tokio::time::Instant::now()) {
                    run_job(agent, &run.ebpf, job);
                }
            }
            Some(call) = run.calls.recv() => agent.on_call(call),
            Some(m) = run.inbound.recv() => agent.on_inbound(m),
            _ = sighup.recv() => {
                let _ = agent.reload();
            }
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}

fn run_job(agent: &mut Agent, ebpf: &aya::Ebpf, job: Job) {
    match job {
        Job::Closes if agent.flows.has_closes() => {
            agent.flush_closed(false);
            agent.sinks.flush();
        }
        Job::Closes => {}
        Job::Sweep => {
            agent.sweep(false);
            agent.sinks.flush();
        }
        Job::Stats => {
            let s = agent.stats();
            agent.write_agent(Body::AgentStats(s));
        }
        Job::Watchdog => notify("WATCHDOG=1"),
        Job::Metrics => agent.update_metrics(&telemetry::program_stats(ebpf)),
        Job::Maintain => {
            agent.maintain();
            agent.sinks.flush();
        }
        Job::Approvals if !agent.response.responder.approvals.is_empty() => {
            agent.respond_tick();
            agent.sinks.flush();
        }
        Job::Approvals => {}
        Job::Outputs => agent.sinks.tick(),
        Job::Housekeeping => {
            agent.housekeeping();
            agent.sinks.flush();
        }
    }
}

/// Drains what the kernel already queued, emits every live flow, and
/// hands the sinks what they hold.
fn shutdown(agent: &mut Agent, run: &mut Running) {
    notify("STOPPING=1");
    let rb = run.ring.get_mut();
    while let Some(item) = rb.next() {
        let data = item.to_vec();
        drop(item);
        agent.on_ring_record(&data);
    }
    agent.flush_closed(true);
    agent.sweep(true);
    agent.persist();
    let s = agent.stats();
    agent.write_agent(Body::AgentStop(s));
    if !agent.cfg.control.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&agent.cfg.control.socket);
    }
    agent.sinks.close();
    tracing::info!("vigil stopped; programs detached");
}

#[cfg(test)]
mod tests;
