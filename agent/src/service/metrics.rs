//! Prometheus metrics on a loopback port (`metrics.listen`): `/metrics` in
//! the text format and `/healthz`, 200 while the pipeline loop is turning.
//! Counters the kernel keeps (reserve failures, drops, program run time)
//! are mirrored by adding the delta since the last poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    #[error("metrics.listen {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct Metrics {
    registry: Registry,
    pub events: IntCounterVec,
    pub decode_errors: IntCounter,
    pub kernel_reserve_failures: IntCounter,
    pub flows_emitted: IntCounter,
    pub flows_tracked: IntGauge,
    pub flows_evicted: IntCounter,
    pub flow_sweeps_cut: IntCounter,
    pub process_cache_entries: IntGauge,
    pub alerts: IntCounterVec,
    pub actions: IntCounterVec,
    pub blocklist_entries: IntGauge,
    pub blocklist_dropped_packets: IntCounterVec,
    pub blocklist_prefix_cache: IntCounterVec,
    pub isolation_active: IntGauge,
    pub pipeline_latency: Histogram,
    pub program_run_time: CounterVec,
    pub program_run_count: IntCounterVec,
    pub program_recursion_misses: IntCounterVec,
    pub program_up: IntGaugeVec,
    pub spool_bytes: IntGauge,
    pub spool_records: IntGauge,
    pub spool_shed: IntCounterVec,
    pub kafka_delivered: IntCounter,
    pub kafka_delivery_errors: IntCounter,
    pub kafka_telemetry_shed: IntCounter,
    pub commands: IntCounterVec,
    pub endpoint_connections: IntGaugeVec,
    pub endpoint_refused: IntCounterVec,
    pub endpoint_timeouts: IntCounterVec,
    pub endpoint_accept_errors: IntCounterVec,
    pub command_refusals: IntCounterVec,
    pub output_errors: IntCounterVec,
    pub output_shed: IntCounterVec,
    pub output_pending_bytes: IntGaugeVec,
    /// Sigma rules in the running set, by state (`loaded`, `skipped`).
    pub sigma_rules: IntGaugeVec,
    pub audit_failures: IntCounter,
    pub state_write_errors: IntCounter,
    /// Last seen kernel totals, to turn them into counter increments.
    last: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Monotonic seconds of the pipeline loop's last turn (for /healthz).
    pub heartbeat: AtomicU64,
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        let r = Registry::new_custom(Some("vigil".into()), None)?;
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                r.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "pipeline_latency_seconds",
                "Time from the kernel event to the alert it raised.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )?;
        r.register(Box::new(latency.clone()))?;
        let up = IntGaugeVec::new(
            Opts::new("program_attached", "1 for each attached kernel program."),
            &["program"],
        )?;
        r.register(Box::new(up.clone()))?;
        let endpoint_connections = IntGaugeVec::new(
            Opts::new(
                "endpoint_connections",
                "Connections being served, by endpoint (metrics, control).",
            ),
            &["endpoint"],
        )?;
        r.register(Box::new(endpoint_connections.clone()))?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "output_pending_bytes",
                "Bytes an output holds because writing them failed (retried).",
            ),
            &["output"],
        )?;
        r.register(Box::new(pending.clone()))?;
        let sigma_rules = IntGaugeVec::new(
            Opts::new(
                "sigma_rules",
                "Sigma rules of the running set: loaded, or skipped (unsupported or in error).",
            ),
            &["state"],
        )?;
        r.register(Box::new(sigma_rules.clone()))?;
        Ok(Arc::new(Metrics {
            sigma_rules,
            events: counter_vec("events_total", "Records produced, by kind.", &["kind"])?,
            decode_errors: counter("decode_errors_total", "Malformed kernel records dropped.")?,
            kernel_reserve_failures: counter(
                "kernel_reserve_failures_total",
                "Events the kernel could not queue (ring buffer full).",
            )?,
            flows_emitted: counter("flows_emitted_total", "Flow records emitted.")?,
            flows_evicted: counter(
                "flows_evicted_total",
                "Flows the kernel LRU map evicted before they were emitted (lower bound).",
            )?,
            flow_sweeps_cut: counter(
                "flow_sweeps_cut_total",
                "Flow map sweeps stopped at flows.max_entries visits (the walk restarted under a flood).",
            )?,
            flows_tracked: gauge(
                "flows_tracked",
                "Flows live in the kernel map at the last sweep.",
            )?,
            process_cache_entries: gauge("process_cache_entries", "Processes in the cache.")?,
            alerts: counter_vec(
                "alerts_total",
                "Alerts raised, by detector and technique.",
                &["detector", "technique"],
            )?,
            actions: counter_vec(
                "actions_total",
                "Enforcement actions by type and state.",
                &["action", "state"],
            )?,
            blocklist_entries: gauge("blocklist_entries", "Entries in the kernel blocklist.")?,
            blocklist_dropped_packets: counter_vec(
                "blocklist_dropped_packets_total",
                "Packets dropped by the blocklist, by direction.",
                &["direction"],
            )?,
            blocklist_prefix_cache: counter_vec(
                "blocklist_prefix_cache_total",
                "The kernel's per-CPU cache of sources dropped through a prefix: \
                 hit, insert, eviction, kept (a collision turned away), over_budget.",
                &["event"],
            )?,
            isolation_active: gauge("isolation_active", "1 while the host is isolated.")?,
            pipeline_latency: latency,
            program_run_time: {
                let c = CounterVec::new(
                    Opts::new(
                        "program_run_time_seconds_total",
                        "Kernel run time per program (bpf_stats).",
                    ),
                    &["program"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            program_run_count: counter_vec(
                "program_runs_total",
                "Kernel runs per program (bpf_stats).",
                &["program"],
            )?,
            program_recursion_misses: counter_vec(
                "program_recursion_misses_total",
                "Runs the kernel skipped per program because a BPF program was already \
                 running on the CPU: events lost before the ring buffer.",
                &["program"],
            )?,
            program_up: up,
            spool_bytes: gauge("spool_bytes", "Bytes in the Kafka spool on disk.")?,
            spool_records: gauge(
                "spool_records",
                "Records in the spool not yet acknowledged by Kafka.",
            )?,
            spool_shed: counter_vec(
                "spool_shed_total",
                "Records refused because the spool was full, by class.",
                &["class"],
            )?,
            kafka_delivered: counter("kafka_delivered_total", "Records Kafka acknowledged.")?,
            kafka_delivery_errors: counter(
                "kafka_delivery_errors_total",
                "Kafka delivery failures (the records stay spooled and are produced again).",
            )?,
            kafka_telemetry_shed: counter(
                "kafka_telemetry_shed_total",
                "Telemetry records over kafka.telemetry.max_per_second, not sent.",
            )?,
            commands: counter_vec(
                "commands_total",
                "defense.commands and threat.enriched messages, by topic and result.",
                &["topic", "result"],
            )?,
            endpoint_connections,
            endpoint_refused: counter_vec(
                "endpoint_refused_total",
                "Connections closed at once because max_connections were being served.",
                &["endpoint"],
            )?,
            endpoint_timeouts: counter_vec(
                "endpoint_timeouts_total",
                "Connections cut because a read or write took longer than the timeout.",
                &["endpoint"],
            )?,
            endpoint_accept_errors: counter_vec(
                "endpoint_accept_errors_total",
                "Failed accepts (e.g. out of file descriptors), each followed by a backoff.",
                &["endpoint"],
            )?,
            command_refusals: counter_vec(
                "command_refusals_total",
                "Fleet messages refused before acting, by topic and reason (recorded or summarised).",
                &["topic", "reason"],
            )?,
            output_errors: counter_vec(
                "output_errors_total",
                "Failed writes to an output (records stay queued and are retried).",
                &["output"],
            )?,
            output_shed: counter_vec(
                "output_shed_total",
                "Records an output dropped from its retry backlog (oldest first) to stay bounded.",
                &["output"],
            )?,
            output_pending_bytes: pending,
            audit_failures: counter(
                "audit_failures_total",
                "Audit log appends that failed (the action record says audited: false).",
            )?,
            state_write_errors: counter(
                "state_write_errors_total",
                "State file writes that failed (blocks, response state, offsets, baselines; retried).",
            )?,
            last: Default::default(),
            heartbeat: AtomicU64::new(crate::util::clock::monotonic_ns() / 1_000_000_000),
            registry: r,
        }))
    }

    /// Adds the growth of a kernel-kept total to a counter.
    pub fn mirror(&self, key: &str, total: u64, counter: &IntCounter) {
        if let Ok(mut last) = self.last.lock() {
            let prev = last.insert(key.to_string(), total).unwrap_or(0);
            counter.inc_by(total.saturating_sub(prev));
        }
    }

    /// As [`mirror`](Self::mirror), for a total kept in nanoseconds and
    /// exposed in seconds.
    pub fn mirror_seconds(&self, key: &str, total_ns: u64, counter: &prometheus::Counter) {
        if let Ok(mut last) = self.last.lock() {
            let prev = last.insert(key.to_string(), total_ns).unwrap_or(0);
            counter.inc_by(total_ns.saturating_sub(prev) as f64 / 1e9);
        }
    }

    pub fn beat(&self) {
        self.heartbeat.store(
            crate::util::clock::monotonic_ns() / 1_000_000_000,
            Ordering::Relaxed,
        );
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    fn healthy(&self) -> bool {
        let now = crate::util::clock::monotonic_ns() / 1_000_000_000;
        now.saturating_sub(self.heartbeat.load(Ordering::Relaxed)) <= 10
    }
}

/// Serves /metrics and /healthz until the task is dropped, at most
/// `limits.max_connections` at once, each read and write bounded by
/// `limits.io_timeout` (the request head as a whole: one byte a second
/// does not keep a connection alive).
pub async fn serve(
    addr: String,
    metrics: Arc<Metrics>,
    limits: super::accept::Limits,
) -> Result<(), MetricsError> {
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!("metrics on http://{addr}/metrics");
    let gate = super::accept::Gate::new("metrics", limits, Some(metrics.clone()));
    let busy =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy\n";
    let g = gate.clone();
    super::accept::accept_loop(gate, listener, busy, move |sock, slot| {
        let (m, g) = (metrics.clone(), g.clone());
        async move {
            let _slot = slot;
            if let Err(e) = answer(sock, &m, &g).await {
                tracing::debug!("metrics connection: {e}");
            }
        }
    })
    .await;
    Ok(())
}

/// Reads one request head and writes the answer.
async fn answer(
    mut sock: tokio::net::TcpStream,
    m: &Metrics,
    gate: &super::accept::Gate,
) -> Result<(), super::accept::AcceptError> {
    // Read the request head, which may arrive in several segments.
    let mut req = Vec::with_capacity(1024);
    let read_head = async {
        let mut buf = [0u8; 512];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
            match sock.read(&mut buf).await? {
                0 => break,
                n => req.extend_from_slice(&buf[..n]),
            }
        }
        Ok(())
    };
    gate.io(read_head).await?;
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", m.render()),
        "/healthz" if m.healthy() => ("200 OK", "text/plain", "ok\n".to_string()),
        "/healthz" => (
            "503 Service Unavailable",
            "text/plain",
            "pipeline stalled\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    gate.io(sock.write_all(head.as_bytes())).await?;
    gate.io(sock.write_all(body.as_bytes())).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dashboard_only_queries_series_we_export() {
        let m = Metrics::new().expect("metrics");
        // Touch the labelled families so they render.
        m.events.with_label_values(&["process_exec"]).inc();
        m.alerts.with_label_values(&["scan", "T1046"]).inc();
        m.actions.with_label_values(&["expire", "expired"]).inc();
        m.blocklist_dropped_packets.with_label_values(&["in"]).inc();
        m.program_run_time
            .with_label_values(&["vigil_exec"])
            .inc_by(1.0);
        m.program_run_count.with_label_values(&["vigil_exec"]).inc();
        m.pipeline_latency.observe(0.001);
        m.spool_shed.with_label_values(&["telemetry"]).inc();
        m.commands
            .with_label_values(&["defense.commands", "refused"])
            .inc();
        let exposed = m.render();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/grafana/vigil-dashboard.json");
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
        let mut n = 0;
        for panel in dash["panels"].as_array().expect("panels") {
            for t in panel["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.starts_with("vigil_") {
                        assert!(
                            exposed.contains(word),
                            "dashboard queries {word}, which is not exported"
                        );
                        n += 1;
                    }
                }
            }
        }
        assert!(n >= 8, "{n}");
    }
}
