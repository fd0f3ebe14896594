//! The agent's own figures: `agent_stats` records and the Prometheus
//! gauges and counters mirrored from the kernel and the components.

use std::collections::BTreeMap;

use agent_common::EventKind;

use super::agent::Agent;
use crate::record::AgentStats;

/// The record kind each kernel event slot becomes.
fn event_name(kind: EventKind) -> &'static str {
    match kind {
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
        // The pipeline counts a close with its flow as a close.
        EventKind::CloseFlow => "net_close",
    }
}

/// Run time, run count and skipped runs of one loaded kernel program.
pub struct ProgramStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
    /// Runs the kernel skipped (another BPF program was running on the
    /// CPU): events lost before the ring buffer.
    pub recursion_misses: u64,
}

/// The loaded programs' statistics (kernel `bpf_stats`, and the skipped
/// runs the kernel counts regardless).
pub fn program_stats(ebpf: &aya::Ebpf) -> Vec<ProgramStats> {
    use std::os::fd::AsFd;
    ebpf.programs()
        .filter_map(|(name, prog)| {
            let info = prog.info().ok()?;
            let misses = prog
                .fd()
                .ok()
                .and_then(|fd| crate::kernel::stats::prog_info(fd.as_fd()).ok())
                .and_then(|i| i.recursion_misses)
                .unwrap_or(0);
            Some(ProgramStats {
                name: name.to_string(),
                run_time_ns: info.run_time().as_nanos() as u64,
                run_count: info.run_count(),
                recursion_misses: misses,
            })
        })
        .collect()
}

impl Agent {
    pub fn stats(&self) -> AgentStats {
        let mut events: BTreeMap<&'static str, u64> = BTreeMap::new();
        for k in EventKind::ALL {
            *events.entry(event_name(k)).or_default() += self.pipeline.stats.events[k as usize];
        }
        AgentStats {
            events,
            decode_errors: self.pipeline.stats.decode_errors,
            kernel_reserve_failures: self.kernel.reserve_failures(),
            flows_emitted: self.pipeline.stats.flows,
            flows_tracked: self.flows.tracked,
            flows_evicted: self.flows.evicted,
            process_cache_entries: self.pipeline.procs.len(),
            process_cache_evicted: self.pipeline.procs.evicted,
            accepters_evicted: self.pipeline.stats.accepters_evicted,
            listener_lookups: self.pipeline.listeners.lookups,
            listener_lookups_shed: self.pipeline.listeners.shed,
        }
    }

    /// Refreshes the gauges and mirrors the counters kept elsewhere.
    pub fn update_metrics(&mut self, programs: &[ProgramStats]) {
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
            self.kernel.reserve_failures(),
            &m.kernel_reserve_failures,
        );
        m.flows_tracked.set(self.flows.tracked as i64);
        m.mirror("flows_evicted", self.flows.evicted, &m.flows_evicted);
        m.mirror("flow_sweeps_cut", self.flows.walks_cut, &m.flow_sweeps_cut);
        m.process_cache_entries
            .set(self.pipeline.procs.len() as i64);
        for p in programs {
            m.program_up.with_label_values(&[&p.name]).set(1);
            m.mirror_seconds(
                &format!("rt:{}", p.name),
                p.run_time_ns,
                &m.program_run_time.with_label_values(&[&p.name]),
            );
            m.mirror(
                &format!("rc:{}", p.name),
                p.run_count,
                &m.program_run_count.with_label_values(&[&p.name]),
            );
            m.mirror(
                &format!("rm:{}", p.name),
                p.recursion_misses,
                &m.program_recursion_misses.with_label_values(&[&p.name]),
            );
        }
        self.sinks.observe(&m);
        m.mirror(
            "audit_failures",
            crate::enforce::audit::failures(),
            &m.audit_failures,
        );
        m.mirror(
            "state_write_errors",
            crate::util::statefile::write_errors(),
            &m.state_write_errors,
        );
        if let Some(c) = &self.response.containment {
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
            let pc = c.blocks.cache_stats();
            for (event, total) in [
                ("hit", pc.hits),
                ("insert", pc.inserts),
                ("eviction", pc.evictions),
                ("kept", pc.kept),
                ("over_budget", pc.over_budget),
            ] {
                m.mirror(
                    &format!("prefix_cache_{event}"),
                    total,
                    &m.blocklist_prefix_cache.with_label_values(&[event]),
                );
            }
            // Listing walks every entry and isolation asks nft: every 10 s.
            if self.metric_ticks % 10 == 1 {
                m.blocklist_entries.set(c.blocks.list().len() as i64);
                m.isolation_active
                    .set(crate::enforce::isolate::remaining_s().is_some() as i64);
            }
        }
    }
}
