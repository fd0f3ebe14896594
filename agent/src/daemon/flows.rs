//! Flow tracking: when a flow in the kernel's map is due (closed and
//! lingered, idle, or past the active timeout), take it out and hand it to
//! the pipeline; and how many flows the kernel evicted before that.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;

use agent_common::{FlowKey, FlowStats, IPPROTO_TCP};
use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData, PerCpuArray};

use crate::config::FlowConfig;
use crate::pipeline::FlowEnd;

/// The kernel state the daemon reads: the flow map and the per-CPU
/// counters beside it. The daemon uses the real maps; tests use a table.
pub trait KernelMaps: Send {
    /// Calls `f` for every live flow until it returns false. A walk of a
    /// map that changes under it starts again from the first key when the
    /// key it stood on is gone (evicted), so it can see a flow twice.
    fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowStats) -> bool);
    /// Removes a flow and returns its final sums.
    fn take_flow(&mut self, key: &FlowKey) -> Option<FlowStats>;
    /// Flows the kernel has created since load.
    fn flows_created(&self) -> u64;
    /// Events the kernel could not reserve ring buffer space for.
    fn reserve_failures(&self) -> u64;
}

/// The loaded programs' maps.
pub struct Kernel {
    pub flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    pub drops: PerCpuArray<MapData, u64>,
    pub created: PerCpuArray<MapData, u64>,
}

impl KernelMaps for Kernel {
    fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowStats) -> bool) {
        // Holding 100,000 flows, a key-by-key walk each second (two system
        // calls per flow) cost ~20 % of a core.
        let mut stopped = false;
        let batched = crate::kernel::mapops::for_each(self.flows.map(), &mut |k, v| {
            stopped = !f(k, v);
            !stopped
        });
        if batched.is_ok() || stopped {
            return;
        }
        for (key, stats) in self.flows.iter().flatten() {
            if !f(&key, &stats) {
                break;
            }
        }
    }

    fn take_flow(&mut self, key: &FlowKey) -> Option<FlowStats> {
        crate::kernel::mapops::take(self.flows.map(), key)
    }

    fn flows_created(&self) -> u64 {
        self.created
            .get(&0, 0)
            .map(|v| v.iter().sum::<u64>())
            .unwrap_or(0)
    }

    fn reserve_failures(&self) -> u64 {
        (0..agent_common::EVENT_KIND_SLOTS)
            .filter_map(|kind| self.drops.get(&kind, 0).ok())
            .map(|values| values.iter().sum::<u64>())
            .sum()
    }
}

/// The kernel's key for a TCP connection seen from this host.
pub fn flow_key(proto: u8, local: IpAddr, lport: u16, remote: IpAddr, rport: u16) -> FlowKey {
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
pub fn flow_due(cfg: &FlowConfig, s: &FlowStats, now_ns: u64) -> Option<FlowEnd> {
    let idle_ns = now_ns.saturating_sub(s.t_last_ns);
    let age_ns = now_ns.saturating_sub(s.t_first_ns);
    // Config values are the operator's: saturate rather than overflow.
    let sec = 1_000_000_000u64;
    if age_ns >= cfg.active_timeout_s.saturating_mul(sec) {
        return Some(FlowEnd::ActiveTimeout);
    }
    let is_tcp_done = s.rst > 0 || s.fin >= 2;
    let idle_limit = if s.syn > 0 || s.fin > 0 || s.rst > 0 {
        if is_tcp_done {
            // Close seen on the wire but no close event (e.g. missed): short wait.
            cfg.close_linger_ms.saturating_mul(1_000_000).max(sec)
        } else {
            cfg.tcp_idle_timeout_s.saturating_mul(sec)
        }
    } else {
        cfg.udp_idle_timeout_s.saturating_mul(sec)
    };
    (idle_ns >= idle_limit).then_some(FlowEnd::Idle)
}

/// Which flows are due, from socket closes and periodic sweeps of the
/// kernel map; the caller emits them.
pub struct FlowTracker {
    cfg: FlowConfig,
    /// Flows whose socket closed, due after the linger.
    pending_close: VecDeque<(u64, FlowKey)>,
    pending_set: HashSet<FlowKey>,
    /// Live flows after the last sweep.
    pub tracked: u64,
    /// Flows the kernel's LRU map evicted before a sweep emitted them (a
    /// lower bound: created − emitted − live, taken at each sweep).
    pub evicted: u64,
    /// Sweeps whose walk was stopped at `max_entries` visits: under a flood
    /// of new keys the LRU evicts the key the walk stands on, the walk
    /// restarts, and without a stop it would revisit the map (time and a
    /// `due` list past the map's size) for as long as the flood lasts.
    pub walks_cut: u64,
}

impl FlowTracker {
    pub fn new(cfg: FlowConfig) -> FlowTracker {
        FlowTracker {
            cfg,
            pending_close: VecDeque::new(),
            pending_set: HashSet::new(),
            tracked: 0,
            evicted: 0,
            walks_cut: 0,
        }
    }

    /// A TCP socket closed: its flow is due after the linger, so trailing
    /// packets still count.
    pub fn on_close(&mut self, now_ns: u64, local: (IpAddr, u16), remote: (IpAddr, u16)) {
        let key = flow_key(IPPROTO_TCP, local.0, local.1, remote.0, remote.1);
        if self.pending_set.insert(key) {
            let due = now_ns.saturating_add(self.cfg.close_linger_ms.saturating_mul(1_000_000));
            self.pending_close.push_back((due, key));
        }
    }

    pub fn has_closes(&self) -> bool {
        !self.pending_close.is_empty()
    }

    /// Closed flows whose linger is over (all of them when `all`).
    pub fn closed_due(&mut self, now_ns: u64, all: bool) -> Vec<FlowKey> {
        let mut out = Vec::new();
        while let Some(&(due, key)) = self.pending_close.front() {
            if !all && due > now_ns {
                break;
            }
            self.pending_close.pop_front();
            self.pending_set.remove(&key);
            out.push(key);
        }
        out
    }

    /// Walks the kernel map: every flow that is due (all of them at
    /// shutdown), and the eviction estimate given `emitted` flows so far.
    pub fn sweep(
        &mut self,
        kernel: &dyn KernelMaps,
        now_ns: u64,
        emitted: u64,
        shutdown: bool,
    ) -> Vec<(FlowKey, FlowEnd)> {
        // Read before walking the map, so flows created during the walk can
        // only lower the estimate, never invent evictions.
        let created = kernel.flows_created();
        let mut due = Vec::new();
        let mut tracked = 0u64;
        // The map never holds more: a visit past this is a walk that
        // restarted. What it did not reach waits for the next sweep.
        let cap = u64::from(self.cfg.max_entries.max(1));
        let mut cut = false;
        kernel.for_each_flow(&mut |key, stats| {
            if tracked == cap {
                cut = true;
                return false;
            }
            tracked += 1;
            let end = if shutdown {
                Some(FlowEnd::Shutdown)
            } else {
                flow_due(&self.cfg, stats, now_ns)
            };
            if let Some(end) = end {
                due.push((*key, end));
            }
            true
        });
        if cut {
            if self.walks_cut == 0 {
                tracing::warn!(
                    "a sweep of the kernel flow map restarted under a flood of new flows and was \
                     stopped at flows.max_entries visits; counted in vigil_flow_sweeps_cut_total"
                );
            }
            self.walks_cut += 1;
        }
        self.tracked = tracked.saturating_sub(due.len() as u64);
        let evicted = created.saturating_sub(emitted + tracked);
        if evicted > self.evicted {
            if self.evicted == 0 {
                tracing::warn!(
                    "the kernel flow map is full and evicting flows before they are emitted \
                     (raise flows.max_entries or lower the timeouts); counted in flows_evicted"
                );
            }
            self.evicted = evicted;
        }
        due
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const S: u64 = 1_000_000_000;

    /// The kernel maps as a plain table.
    #[derive(Default)]
    pub struct Table {
        pub flows: BTreeMap<Vec<u8>, (FlowKey, FlowStats)>,
        pub created: u64,
        pub drops: u64,
    }

    fn raw(k: &FlowKey) -> Vec<u8> {
        let mut v = k.local_addr.to_vec();
        v.extend_from_slice(&k.remote_addr);
        v.extend_from_slice(&k.local_port.to_be_bytes());
        v.extend_from_slice(&k.remote_port.to_be_bytes());
        v.push(k.proto);
        v
    }

    impl Table {
        /// A new flow, as the kernel would create it.
        pub fn put(&mut self, key: FlowKey, stats: FlowStats) {
            self.created += 1;
            self.flows.insert(raw(&key), (key, stats));
        }
    }

    impl KernelMaps for Table {
        fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowStats) -> bool) {
            for (k, s) in self.flows.values() {
                if !f(k, s) {
                    break;
                }
            }
        }
        fn take_flow(&mut self, key: &FlowKey) -> Option<FlowStats> {
            self.flows.remove(&raw(key)).map(|(_, s)| s)
        }
        fn flows_created(&self) -> u64 {
            self.created
        }
        fn reserve_failures(&self) -> u64 {
            self.drops
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

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
    fn huge_timeouts_saturate_instead_of_overflowing() {
        let cfg = FlowConfig {
            active_timeout_s: u64::MAX,
            udp_idle_timeout_s: u64::MAX / 2,
            tcp_idle_timeout_s: u64::MAX,
            close_linger_ms: u64::MAX,
            ..FlowConfig::default()
        };
        let s = FlowStats {
            t_first_ns: 0,
            t_last_ns: 0,
            fin: 2,
            ..FlowStats::default()
        };
        assert_eq!(flow_due(&cfg, &s, u64::MAX - 1), None);
        let mut t = FlowTracker::new(cfg);
        t.on_close(u64::MAX - 5, (ip("10.0.0.1"), 1), (ip("10.0.0.2"), 2));
        assert!(t.has_closes());
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
        let k = flow_key(6, ip("10.0.0.1"), 5, ip("10.0.0.2"), 80);
        assert_eq!(k.ip_version, 4);
        assert_eq!(&k.local_addr[..4], &[10, 0, 0, 1]);
        assert_eq!(k.remote_port, 80);
        let k6 = flow_key(6, ip("10.0.0.1"), 5, ip("::1"), 80);
        assert_eq!(k6.ip_version, 6);
        assert_eq!(&k6.local_addr[10..], &[0xff, 0xff, 10, 0, 0, 1]);
    }

    #[test]
    fn a_close_is_due_once_after_the_linger() {
        let mut t = FlowTracker::new(FlowConfig::default());
        let (l, r) = ((ip("10.0.0.1"), 5000), (ip("10.0.0.2"), 22));
        t.on_close(S, l, r);
        t.on_close(S, l, r);
        assert!(t.closed_due(S + 199_000_000, false).is_empty());
        let due = t.closed_due(S + 200_000_000, false);
        assert_eq!(due, [flow_key(6, l.0, l.1, r.0, r.1)]);
        assert!(!t.has_closes());
    }

    #[test]
    fn sweep_takes_due_flows_and_counts_evictions() {
        let mut kernel = Table::default();
        let fresh = FlowStats {
            t_first_ns: 100 * S,
            t_last_ns: 100 * S,
            n_out: 1,
            ..FlowStats::default()
        };
        let stale = FlowStats {
            t_first_ns: 0,
            t_last_ns: 0,
            ..fresh
        };
        kernel.put(flow_key(17, ip("10.0.0.1"), 1, ip("10.0.0.2"), 53), fresh);
        kernel.put(flow_key(17, ip("10.0.0.1"), 2, ip("10.0.0.2"), 53), stale);
        // Three more the kernel created and evicted before any sweep.
        kernel.created += 3;
        let mut t = FlowTracker::new(FlowConfig::default());
        let due = t.sweep(&kernel, 101 * S, 0, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.local_port, 2);
        assert_eq!(due[0].1, FlowEnd::Idle);
        assert_eq!(t.tracked, 1);
        assert_eq!(t.evicted, 3);
        let all = t.sweep(&kernel, 101 * S, 0, true);
        assert!(all.iter().all(|(_, e)| *e == FlowEnd::Shutdown));
        assert_eq!(all.len(), 2);
    }

    /// A map walk that keeps starting again from the first key, as one does
    /// when a flood evicts the key it stands on (bounded here at 1,000 laps).
    struct Restarting(Table);

    impl KernelMaps for Restarting {
        fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowStats) -> bool) {
            for _ in 0..1_000 {
                for (k, s) in self.0.flows.values() {
                    if !f(k, s) {
                        return;
                    }
                }
            }
        }
        fn take_flow(&mut self, key: &FlowKey) -> Option<FlowStats> {
            self.0.take_flow(key)
        }
        fn flows_created(&self) -> u64 {
            self.0.flows_created()
        }
        fn reserve_failures(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_restarting_walk_stops_at_the_map_size_and_is_counted() {
        let stale = FlowStats {
            n_out: 1,
            ..FlowStats::default()
        };
        let mut table = Table::default();
        for port in 1..=3 {
            table.put(
                flow_key(17, ip("10.0.0.1"), port, ip("10.0.0.2"), 53),
                stale,
            );
        }
        let cfg = FlowConfig {
            max_entries: 3,
            ..FlowConfig::default()
        };
        // A full map walked once is not a cut.
        let mut t = FlowTracker::new(cfg.clone());
        assert_eq!(t.sweep(&table, 101 * S, 0, false).len(), 3);
        assert_eq!(t.walks_cut, 0);
        let kernel = Restarting(table);
        let due = t.sweep(&kernel, 101 * S, 0, false);
        assert_eq!(due.len(), 3, "at most max_entries visits");
        assert_eq!(t.walks_cut, 1);
        assert_eq!(t.tracked, 0);
        t.sweep(&kernel, 101 * S, 0, true);
        assert_eq!(t.walks_cut, 2);
    }
}
