//! Decode → enrich → record: the synchronous heart of the daemon. It owns
//! the process cache and the connection owner cache and does no I/O except
//! a `/proc/<pid>/exe` lookup for the rare exec by relative path, so the
//! benchmark drives exactly what the daemon runs.

pub mod community_id;
pub mod decode;
pub mod event;
pub mod flow;
pub mod proc_cache;

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use agent_common::{EventKind, FlowKey, FlowStats, FLOW_FIRST_OUT};
use lru::LruCache;

use crate::pipeline::community_id::community_id;
use crate::pipeline::decode::{decode, DecodeError};
use crate::pipeline::event::{tcp_state_name, ConnEvent, ConnKind, Event};
use crate::pipeline::flow::{features, key_addrs, proto_name};
use crate::pipeline::proc_cache::{ProcInfo, ProcessCache};
use crate::record::{self, Body, Record};
use crate::util::clock::Clock;
use crate::util::is_shell;

/// Local and remote endpoint of a socket, the join key between connection
/// events and flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoints {
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
}

/// Whether fd 0 or 1 of a process is a socket (read from /proc at exec).
fn stdio_is_socket(pid: u32) -> bool {
    (0..2).any(|fd| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .map(|p| p.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false)
    })
}

/// Connection owners remembered for flows whose socket the kernel could not
/// attribute (accepted sockets). Bounded like every per-key structure.
const CONN_OWNERS: usize = 65_536;

#[derive(Debug, Default, Clone)]
pub struct PipelineStats {
    pub events: [u64; agent_common::EVENT_KIND_SLOTS as usize],
    pub decode_errors: u64,
    pub flows: u64,
}

pub struct Pipeline {
    host: Arc<str>,
    clock: Clock,
    pub procs: ProcessCache,
    conn_owners: LruCache<Endpoints, u32>,
    pub stats: PipelineStats,
}

/// Why a flow record is being emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEnd {
    Close,
    Idle,
    ActiveTimeout,
    Shutdown,
}

impl FlowEnd {
    fn as_str(self) -> &'static str {
        match self {
            FlowEnd::Close => "close",
            FlowEnd::Idle => "idle",
            FlowEnd::ActiveTimeout => "active_timeout",
            FlowEnd::Shutdown => "shutdown",
        }
    }
}

impl Pipeline {
    pub fn new(host: Arc<str>, clock: Clock, procs: ProcessCache) -> Pipeline {
        Pipeline {
            host,
            clock,
            procs,
            conn_owners: LruCache::new(NonZeroUsize::new(CONN_OWNERS).unwrap_or(NonZeroUsize::MIN)),
            stats: PipelineStats::default(),
        }
    }

    fn record(&self, ktime_ns: u64, body: Body) -> Record {
        let wall_ns = self.clock.wall_ns(ktime_ns);
        Record {
            body,
            ts: crate::util::clock::rfc3339_ns(wall_ns),
            host: self.host.clone(),
            wall_ns,
        }
    }

    /// One ring buffer record in, one output record out.
    pub fn on_bytes(&mut self, data: &[u8]) -> Result<Record, DecodeError> {
        match decode(data) {
            Ok(ev) => Ok(self.on_event(ev)),
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    pub fn on_event(&mut self, ev: Event) -> Record {
        let ktime = ev.ktime_ns();
        let body = match ev {
            Event::Exec(e) => {
                self.stats.events[EventKind::Exec as usize] += 1;
                let exe = if e.filename.starts_with('/') {
                    e.filename.clone()
                } else {
                    std::fs::read_link(format!("/proc/{}/exe", e.pid))
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| e.filename.clone())
                };
                let info = self.procs.on_exec(&e, &exe);
                let parent_exe = self.procs.get(info.ppid).map(|p| p.exe.clone());
                let stdio_socket = is_shell(&exe).then(|| stdio_is_socket(e.pid));
                Body::ProcessExec(record::ProcessExec {
                    stdio_socket,
                    parent_exe,
                    pid: e.pid,
                    ppid: info.ppid,
                    uid: e.uid,
                    gid: e.gid,
                    comm: e.comm,
                    exe,
                    argv: e.argv,
                    argv_truncated: e.argv_truncated,
                    cgroup_id: e.cgroup_id,
                })
            }
            Event::Exit(e) => {
                self.stats.events[EventKind::Exit as usize] += 1;
                let info = self.procs.on_exit(e.pid);
                let signal = e.signal();
                Body::ProcessExit(record::ProcessExit {
                    pid: e.pid,
                    exit_code: if signal.is_some() {
                        None
                    } else {
                        e.exit_status()
                    },
                    signal,
                    comm: e.comm,
                    exe: info.map(|i| i.exe),
                })
            }
            Event::Fork(f) => {
                self.stats.events[EventKind::Fork as usize] += 1;
                self.procs.on_fork(&f);
                Body::ProcessFork(record::ProcessFork {
                    pid: f.child_pid,
                    ppid: f.parent_pid,
                    maybe_thread: f.maybe_thread,
                })
            }
            Event::Conn(c) => self.on_conn(c),
            Event::FileWrite(w) => {
                self.stats.events[EventKind::FileWrite as usize] += 1;
                let path = if w.path.starts_with('/') {
                    w.path
                } else {
                    std::fs::read_link(format!("/proc/{}/cwd", w.pid))
                        .map(|cwd| cwd.join(&w.path).to_string_lossy().into_owned())
                        .unwrap_or(w.path)
                };
                Body::FileWrite(record::FileWrite {
                    pid: w.pid,
                    comm: w.comm,
                    exe: self.procs.get(w.pid).map(|p| p.exe.clone()),
                    path,
                })
            }
            Event::Auth(a) => {
                self.stats.events[EventKind::Auth as usize] += 1;
                let exe = self.procs.get(a.pid).map(|p| p.exe.clone());
                Body::AuthAttempt(record::AuthAttempt {
                    pid: a.pid,
                    comm: a.comm,
                    exe,
                    service: a.service,
                    user: a.user,
                    rhost: a.rhost,
                    result: if a.retval == 0 { "success" } else { "failure" },
                    code: a.retval,
                })
            }
        };
        self.record(ktime, body)
    }

    fn on_conn(&mut self, c: ConnEvent) -> Body {
        let slot = match c.kind {
            ConnKind::Connect => EventKind::Connect,
            ConnKind::Accept => EventKind::Accept,
            ConnKind::Close => EventKind::Close,
            ConnKind::ConnectFailed => EventKind::ConnectFailed,
            ConnKind::Refused => EventKind::Refused,
        };
        self.stats.events[slot as usize] += 1;
        let ends = Endpoints {
            local: (c.src_ip, c.src_port),
            remote: (c.dst_ip, c.dst_port),
        };
        let pid = match c.kind {
            ConnKind::Connect | ConnKind::Accept => {
                if let Some(pid) = c.pid {
                    self.conn_owners.put(ends, pid);
                }
                c.pid
            }
            // Close arrives in softirq: the owner comes from what we saw earlier.
            ConnKind::Close => c.pid.or_else(|| self.conn_owners.pop(&ends)),
            ConnKind::ConnectFailed | ConnKind::Refused => c.pid,
        };
        let info: Option<ProcInfo> = pid.and_then(|p| self.procs.get(p).cloned());
        let comm = if c.comm.is_empty() {
            info.as_ref()
                .map(|i| i.comm.to_string())
                .unwrap_or_default()
        } else {
            c.comm
        };
        let conn = record::Conn {
            pid,
            comm,
            exe: info.map(|i| i.exe),
            uid: c.pid.map(|_| c.uid),
            proto: proto_name(c.proto),
            src_ip: c.src_ip,
            src_port: c.src_port,
            dst_ip: c.dst_ip,
            dst_port: c.dst_port,
            community_id: community_id(0, c.proto, c.src_ip, c.src_port, c.dst_ip, c.dst_port),
            old_state: matches!(c.kind, ConnKind::Close | ConnKind::ConnectFailed)
                .then(|| tcp_state_name(c.old_state)),
        };
        match c.kind {
            ConnKind::Connect => Body::NetConnect(conn),
            ConnKind::Accept => Body::NetAccept(conn),
            ConnKind::Close => Body::NetClose(conn),
            ConnKind::ConnectFailed => Body::NetConnectFailed(conn),
            ConnKind::Refused => Body::NetRefused(conn),
        }
    }

    /// A flow swept from the kernel map, with its features.
    pub fn on_flow(&mut self, key: &FlowKey, s: &FlowStats, end: FlowEnd) -> Record {
        self.stats.flows += 1;
        let (local, remote) = key_addrs(key);
        let ends = Endpoints {
            local: (local, key.local_port),
            remote: (remote, key.remote_port),
        };
        let pid = match s.pid {
            0 => self.conn_owners.get(&ends).copied(),
            p => Some(p),
        };
        let info = pid.and_then(|p| self.procs.get(p).cloned());
        let flow = record::Flow {
            community_id: community_id(
                0,
                key.proto,
                local,
                key.local_port,
                remote,
                key.remote_port,
            ),
            proto: proto_name(key.proto),
            direction: if s.flags & FLOW_FIRST_OUT != 0 {
                "outbound"
            } else {
                "inbound"
            },
            src_ip: local,
            src_port: key.local_port,
            dst_ip: remote,
            dst_port: key.remote_port,
            pid,
            comm: info.as_ref().map(|i| i.comm.clone()),
            exe: info.map(|i| i.exe),
            packets_out: s.n_out,
            packets_in: s.n_in,
            bytes_out: s.bytes_out,
            bytes_in: s.bytes_in,
            duration_ms: s.t_last_ns.saturating_sub(s.t_first_ns) as f64 / 1e6,
            syn: s.syn,
            rst: s.rst,
            fin: s.fin,
            end_reason: end.as_str(),
            features: features(s),
        };
        self.record(s.t_last_ns, Body::Flow(Box::new(flow)))
    }

    pub fn host(&self) -> Arc<str> {
        self.host.clone()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::decode::fixtures;

    fn pipeline() -> Pipeline {
        Pipeline::new(
            Arc::from("test-host"),
            Clock::new(),
            ProcessCache::new(1024),
        )
    }

    fn json(r: &Record) -> serde_json::Value {
        serde_json::to_value(r).expect("serialize")
    }

    #[test]
    fn exec_record_has_the_contract_fields() {
        let mut p = pipeline();
        let r = p
            .on_bytes(&fixtures::exec(
                100,
                1,
                "/usr/bin/curl",
                &["curl", "-s", "x"],
            ))
            .expect("decode");
        let v = json(&r);
        assert_eq!(v["kind"], "process_exec");
        assert_eq!(v["host"], "test-host");
        assert_eq!(v["pid"], 100);
        assert_eq!(v["ppid"], 1);
        assert_eq!(v["exe"], "/usr/bin/curl");
        assert_eq!(v["argv"], serde_json::json!(["curl", "-s", "x"]));
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn connection_owner_enriches_close_and_flow() {
        let mut p = pipeline();
        let [exec, accept] = fixtures::sshd_accepts();
        p.on_bytes(&exec).expect("exec");
        let v = json(&p.on_bytes(&accept).expect("accept"));
        assert_eq!(v["kind"], "net_accept");
        assert_eq!(v["exe"], "/usr/sbin/sshd");
        let key = FlowKey {
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port: 22,
            remote_port: 5555,
            proto: 6,
            ip_version: 4,
            _pad: [0; 2],
        };
        let stats = FlowStats {
            n_in: 2,
            bytes_in: 10,
            ..FlowStats::default()
        };
        let v = json(&p.on_flow(&key, &stats, FlowEnd::Close));
        assert_eq!(v["kind"], "flow");
        assert_eq!(v["pid"], 200);
        assert_eq!(v["direction"], "inbound");
        assert_eq!(v["features"].as_array().map(|a| a.len()), Some(16));
        assert_eq!(v["end_reason"], "close");
    }

    #[test]
    fn bad_records_are_counted() {
        let mut p = pipeline();
        assert!(p.on_bytes(&[0u8; 10]).is_err());
        assert_eq!(p.stats.decode_errors, 1);
    }
}
