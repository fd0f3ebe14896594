//! Decode → enrich → record: the synchronous heart of the daemon. It owns
//! the process cache, the connection owner cache and the peers each process
//! accepted (to judge what PAM was told), and does no I/O except a
//! `/proc/<pid>/exe` lookup for the rare exec by relative path, a stat of
//! a `#!` script and a `/proc/<pid>/cwd` readlink at each exec, so the benchmark drives exactly what the
//! daemon runs.

pub mod community_id;
pub mod decode;
pub mod event;
pub mod flow;
pub mod guid;
pub mod listeners;
pub mod proc_cache;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use agent_common::{EventKind, FlowKey, FlowStats, FLOW_FIRST_OUT};
use lru::LruCache;

use crate::pipeline::community_id::{self as cid, community_id, Digest20};
use crate::pipeline::decode::{decode, DecodeError};
use crate::pipeline::event::{tcp_state_name, AuthEvent, ConnEvent, ConnKind, Event, ExecEvent};
use crate::pipeline::flow::{features, key_addrs, proto_name};
use crate::pipeline::listeners::Listeners;
use crate::pipeline::proc_cache::{ProcInfo, ProcessCache};
use crate::record::{self, Body, FileId, FileOwner, Record};
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

/// The working directory of a process that just exec'd, read from /proc
/// (a process already gone has none to give).
fn read_cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Connection owners remembered for flows whose socket the kernel could not
/// attribute (accepted sockets). Bounded like every per-key structure.
const CONN_OWNERS: usize = 65_536;

/// Who owns a connection and which side opened it, from its connect or
/// accept record; kept until the connection's flow is emitted at close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ConnOwner {
    pid: u32,
    /// The peer opened it (accept), so the host serves it.
    accepted: bool,
    /// The protocol and tuple hash of the connect or accept record, so its
    /// close and flow (same endpoints) need not hash it again.
    proto: u8,
    digest: Digest20,
}

impl ConnOwner {
    /// The tuple hash, when this owner was recorded for `proto` (the
    /// endpoints are the lookup key, so the rest of the tuple is the same).
    fn digest_for(&self, proto: u8) -> Option<Digest20> {
        (self.proto == proto).then_some(self.digest)
    }
}
/// Processes whose accepted peers are remembered (listeners: few), and
/// the most recent distinct peers kept per process.
const ACCEPTERS: usize = 4_096;
const PEERS_PER_ACCEPTER: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct PipelineStats {
    pub events: [u64; agent_common::EVENT_KIND_SLOTS as usize],
    pub decode_errors: u64,
    pub flows: u64,
    /// Listening processes whose accepted peers were forgotten to stay
    /// within [`ACCEPTERS`] (their sessions' PAM results are then untrusted).
    pub accepters_evicted: u64,
}

pub struct Pipeline {
    host: Arc<str>,
    clock: Clock,
    pub procs: ProcessCache,
    conn_owners: LruCache<Endpoints, ConnOwner>,
    /// Peers each process accepted, newest first.
    accepted: LruCache<u32, VecDeque<IpAddr>>,
    /// Owners of listeners older than the agent, read from /proc.
    pub listeners: Listeners,
    /// Executables whose root PAM calls may name a remote address
    /// (`detect.brute_force.services`).
    auth_services: Vec<String>,
    /// Directories whose execs get the executed file's owner and link
    /// count (`detect.process.suspicious_dirs`).
    watched_dirs: Vec<String>,
    pub stats: PipelineStats,
}

/// An address as text, as PAM_RHOST carries it; IPv4-mapped IPv6 is IPv4,
/// as the kernel's addresses are decoded.
fn parse_rhost(rhost: &str) -> Option<IpAddr> {
    let ip: IpAddr = rhost.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// For a `#!` script, the identity of the script (the kernel's exec
/// identity is its interpreter's). The kernel rewrites such an exec's argv
/// to `interpreter [arg] script …`, so only then is the path stat'ed.
fn script_file(e: &ExecEvent) -> Option<FileId> {
    if !e.argv.iter().skip(1).take(2).any(|a| *a == e.filename) {
        return None;
    }
    // A relative path is relative to the directory the exec ran in.
    let path = if e.filename.starts_with('/') {
        std::path::PathBuf::from(&e.filename)
    } else {
        std::path::Path::new(&format!("/proc/{}/cwd", e.pid)).join(&e.filename)
    };
    let md = std::fs::metadata(path).ok()?;
    let id = FileId {
        dev: md.dev(),
        ino: md.ino(),
        generation: None,
    };
    let same = e
        .exe_file
        .is_some_and(|m| (m.dev, m.ino) == (id.dev, id.ino));
    (!same).then_some(id)
}

/// Whether an exec path names a descriptor, as `fexecve` and
/// `execveat(fd, "", AT_EMPTY_PATH)` (`/dev/fd/N`) or a script doing
/// `execv("/proc/self/fd/N")` hand over.
pub fn is_fd_path(path: &str) -> bool {
    path.starts_with("/dev/fd/") || (path.starts_with("/proc/") && path.contains("/fd/"))
}

/// What an exec runs, named as `/proc/PID/exe` names it. The path handed to
/// execve is that, unless it names a descriptor or is relative: then the
/// kernel's own name for the file decides — a memfd (`memfd:NAME`, no
/// links) is `/memfd:NAME (deleted)` — else `/proc/PID/exe` while the
/// process lives, else an unlinked file's name with ` (deleted)`.
fn exe_path(e: &ExecEvent) -> String {
    let by_fd = is_fd_path(&e.filename);
    if e.filename.starts_with('/') && !by_fd {
        return e.filename.clone();
    }
    let unlinked = match (e.exe_links, e.exe_name.as_deref()) {
        (Some(0), Some(name)) if !name.is_empty() => Some(name),
        _ => None,
    };
    if let Some(name) = unlinked.filter(|n| n.starts_with("memfd:")) {
        return format!("/{name} (deleted)");
    }
    // /proc/PID/exe names what the process runs now, which is not what
    // this exec ran if it has exec'ed again since (systemd-executor runs
    // the service): only a link to the file the kernel saw is believed.
    let link = std::fs::read_link(format!("/proc/{}/exe", e.pid)).ok();
    let same_file = |p: &std::path::Path| match (e.exe_file, std::fs::metadata(p)) {
        (Some(f), Ok(md)) => (f.dev, f.ino) == (md.dev(), md.ino()),
        (None, _) => true,
        // Unlinked since: its name has " (deleted)" and no longer stats.
        (Some(_), Err(_)) => e.exe_links == Some(0),
    };
    match (link, unlinked) {
        (Some(l), _) if same_file(&l) => l.to_string_lossy().into_owned(),
        (_, Some(name)) if by_fd => format!("{name} (deleted)"),
        _ => e.filename.clone(),
    }
}

/// Owner and link count of the file an exec from a watched directory runs:
/// the script for a `#!` script (its stat names it), else the mapped file
/// through `/proc/PID/exe`, which follows it even once unlinked.
fn file_owner(e: &ExecEvent, exe: &str, script: Option<&FileId>) -> Option<FileOwner> {
    let md = if script.is_some() {
        std::fs::metadata(if exe.starts_with('/') {
            std::path::PathBuf::from(exe)
        } else {
            std::path::Path::new(&format!("/proc/{}/cwd", e.pid)).join(exe)
        })
    } else {
        std::fs::metadata(format!("/proc/{}/exe", e.pid))
    }
    .ok()?;
    Some(FileOwner {
        uid: md.uid(),
        links: md.nlink(),
    })
}

/// Whether a close's tuple is its flow's, in either direction (the
/// community id does not depend on it), so the flow can take the close's
/// id instead of hashing it again. The kernel fills both from one socket;
/// this checks rather than trusts that.
fn same_tuple(c: &ConnEvent, key: &FlowKey) -> bool {
    let (local, remote) = key_addrs(key);
    let flow = ((local, key.local_port), (remote, key.remote_port));
    let ends = ((c.src_ip, c.src_port), (c.dst_ip, c.dst_port));
    c.proto == key.proto && (ends == flow || ends == (flow.1, flow.0))
}

/// The community id a connection record carries.
fn conn_community_id(body: &Body) -> Option<String> {
    match body {
        Body::NetConnect(c)
        | Body::NetAccept(c)
        | Body::NetClose(c)
        | Body::NetConnectFailed(c)
        | Body::NetRefused(c) => Some(c.community_id.clone()),
        _ => None,
    }
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
            accepted: LruCache::new(NonZeroUsize::new(ACCEPTERS).unwrap_or(NonZeroUsize::MIN)),
            listeners: Listeners::default(),
            auth_services: crate::detect::brute_force::default_services(),
            watched_dirs: crate::detect::process::ProcessConfig::default().suspicious_dirs,
            stats: PipelineStats::default(),
        }
    }

    /// Sets the executables whose root PAM calls may name a remote address.
    pub fn set_auth_services(&mut self, services: Vec<String>) {
        self.auth_services = services;
    }

    /// Sets the directories whose execs are stat'ed for their file's owner.
    pub fn set_watched_dirs(&mut self, dirs: Vec<String>) {
        self.watched_dirs = dirs;
    }

    /// Remembers that `pid` accepted a connection from `peer`.
    fn note_accept(&mut self, pid: u32, peer: IpAddr) {
        if let Some(peers) = self.accepted.get_mut(&pid) {
            // Already the newest (a client reconnecting): nothing moves.
            if peers.front() == Some(&peer) {
                return;
            }
            peers.retain(|p| *p != peer);
            peers.push_front(peer);
            peers.truncate(PEERS_PER_ACCEPTER);
            return;
        }
        if let Some((old, _)) = self.accepted.push(pid, VecDeque::from([peer])) {
            if old != pid {
                self.stats.accepters_evicted += 1;
            }
        }
    }

    fn accepted_from(&self, pid: u32, peer: IpAddr) -> bool {
        self.accepted
            .peek(&pid)
            .is_some_and(|peers| peers.contains(&peer))
    }

    /// Whether an authentication result's rhost can be believed: a
    /// configured service, as root, whose rhost is a peer it or its parent
    /// (sshd's listener) accepted. Returns that peer.
    fn verified_peer(&mut self, a: &AuthEvent, exe: Option<&str>) -> Option<IpAddr> {
        let exe = exe?;
        if a.uid != 0 || !self.auth_services.iter().any(|s| s == exe) {
            return None;
        }
        let peer = parse_rhost(a.rhost.as_deref()?)?;
        let ppid = self.procs.get(a.pid).map(|p| p.ppid);
        let accepted = self.accepted_from(a.pid, peer)
            || ppid.is_some_and(|pp| pp != 0 && self.accepted_from(pp, peer));
        accepted.then_some(peer)
    }

    /// The record, with the GUIDs of the process it is about as the cache
    /// knows it after this event (an exec's new image, a fork's child).
    fn record(&self, ktime_ns: u64, body: Body) -> Record {
        let wall_ns = self.clock.wall_ns(ktime_ns);
        let info = body.pid().and_then(|p| self.procs.peek(p));
        Record {
            guid: info.and_then(|i| i.guid.clone()),
            parent_guid: info.and_then(|i| i.parent_guid.clone()),
            body,
            ts: crate::util::clock::rfc3339_ns(wall_ns),
            host: self.host.clone(),
            wall_ns,
        }
    }

    /// One ring buffer record in, its first output record out (a closed
    /// flow's flow record is left out: the daemon uses `on_event`).
    pub fn on_bytes(&mut self, data: &[u8]) -> Result<Record, DecodeError> {
        match decode(data) {
            Ok(ev) => Ok(self.on_event(ev).0),
            Err(e) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    /// One kernel event in, its output record out; a close that carries
    /// its flow gives the close, then the flow.
    pub fn on_event(&mut self, ev: Event) -> (Record, Option<Record>) {
        if let Event::CloseFlow(c) = ev {
            let c = *c;
            let ktime = c.conn.ktime_ns;
            let same = same_tuple(&c.conn, &c.key);
            let body = self.on_conn(c.conn, ktime);
            let known_id = same.then(|| conn_community_id(&body)).flatten();
            let close = self.record(ktime, body);
            let flow = self.flow_record(&c.key, &c.stats, FlowEnd::Close, known_id);
            return (close, Some(flow));
        }
        (self.on_single(ev), None)
    }

    fn on_single(&mut self, ev: Event) -> Record {
        let ktime = ev.ktime_ns();
        let body = match ev {
            Event::Exec(e) => {
                self.stats.events[EventKind::Exec as usize] += 1;
                let exe = exe_path(&e);
                let exe_arg = (exe != e.filename).then(|| e.filename.clone());
                let start_time = e.start_boottime_ns.map(crate::util::ns_to_clock_ticks);
                let info = self.procs.on_exec(&e, &exe, start_time);
                let (parent_exe, parent_cmdline) = match self.procs.get(info.ppid) {
                    Some(p) => (Some(p.exe.clone()), Some(p.cmdline.clone())),
                    None => (None, None),
                };
                let stdio_socket = is_shell(&exe).then(|| stdio_is_socket(e.pid));
                let script_file = script_file(&e);
                let file_owner = self
                    .watched_dirs
                    .iter()
                    .any(|d| exe.starts_with(d.as_str()))
                    .then(|| file_owner(&e, &exe, script_file.as_ref()))
                    .flatten();
                Body::ProcessExec(record::ProcessExec {
                    stdio_socket,
                    parent_exe,
                    parent_cmdline,
                    cwd: read_cwd(e.pid),
                    auid: e.auid,
                    start_time,
                    exe_file: e.exe_file,
                    script_file,
                    file_owner,
                    exe_arg,
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
            Event::Conn(c) => self.on_conn(c, ktime),
            // Split off by `on_event`.
            Event::CloseFlow(c) => self.on_conn(c.conn, ktime),
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
                    file: w.file,
                })
            }
            Event::Auth(a) => {
                self.stats.events[EventKind::Auth as usize] += 1;
                let exe = self.procs.get(a.pid).map(|p| p.exe.clone());
                let peer = self.verified_peer(&a, exe.as_deref());
                Body::AuthAttempt(record::AuthAttempt {
                    pid: a.pid,
                    uid: a.uid,
                    trusted: peer.is_some(),
                    peer,
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

    fn on_conn(&mut self, c: ConnEvent, ktime_ns: u64) -> Body {
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
        // An accept the kernel could not attribute: the listener is older
        // than the agent, so its owner comes from /proc.
        let resolved = match (c.kind, c.pid) {
            (ConnKind::Accept, None) if c.proto == agent_common::IPPROTO_TCP => {
                self.listeners.owner(c.src_port, ktime_ns)
            }
            _ => None,
        };
        // A close's connect or accept hashed this tuple already.
        let known = match c.kind {
            ConnKind::Close => self.conn_owners.peek(&ends).copied(),
            _ => None,
        };
        let digest = known
            .and_then(|o| o.digest_for(c.proto))
            .unwrap_or_else(|| cid::digest(0, c.proto, c.src_ip, c.src_port, c.dst_ip, c.dst_port));
        let pid = match c.kind {
            ConnKind::Connect | ConnKind::Accept => {
                if let Some(pid) = c.pid.or(resolved) {
                    let accepted = c.kind == ConnKind::Accept;
                    let owner = ConnOwner {
                        pid,
                        accepted,
                        proto: c.proto,
                        digest,
                    };
                    self.conn_owners.put(ends, owner);
                    if accepted {
                        self.note_accept(pid, c.dst_ip);
                    }
                }
                c.pid.or(resolved)
            }
            // Close arrives in softirq: the owner comes from what we saw
            // earlier. It stays for the flow, emitted after the close linger
            // (an accepted socket's flow has no owner in the kernel).
            ConnKind::Close => c.pid.or(known.map(|o| o.pid)),
            ConnKind::ConnectFailed | ConnKind::Refused => c.pid,
        };
        // Borrowed: the record keeps only the executable (and, when the
        // kernel had none, the command name).
        let info: Option<&ProcInfo> = pid.and_then(|p| self.procs.get(p));
        let comm = match (c.comm.is_empty(), info) {
            (false, _) => c.comm,
            (true, Some(i)) => i.comm.to_string(),
            (true, None) => String::new(),
        };
        let conn = record::Conn {
            pid,
            comm,
            exe: info.map(|i| i.exe.clone()),
            uid: c.pid.map(|_| c.uid),
            proto: proto_name(c.proto),
            src_ip: c.src_ip,
            src_port: c.src_port,
            dst_ip: c.dst_ip,
            dst_port: c.dst_port,
            community_id: cid::encode(&digest),
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
        self.flow_record(key, s, end, None)
    }

    /// [`Self::on_flow`], given the community id when the caller already
    /// hashed this flow's tuple (a close and the flow it carries).
    fn flow_record(
        &mut self,
        key: &FlowKey,
        s: &FlowStats,
        end: FlowEnd,
        known_id: Option<String>,
    ) -> Record {
        self.stats.flows += 1;
        let (local, remote) = key_addrs(key);
        let ends = Endpoints {
            local: (local, key.local_port),
            remote: (remote, key.remote_port),
        };
        // A closed connection's owner is needed no more; a flow cut by the
        // active or idle timeout may go on, so its owner is kept.
        let owner = match end {
            FlowEnd::Close | FlowEnd::Shutdown => self.conn_owners.pop(&ends),
            FlowEnd::Idle | FlowEnd::ActiveTimeout => self.conn_owners.get(&ends).copied(),
        };
        let pid = match s.pid {
            0 => owner.map(|o| o.pid),
            p => Some(p),
        };
        // Which side opened it: the connect or accept record knows; the
        // first packet seen is a guess when the flow began before the agent.
        let inbound = match owner {
            Some(o) => o.accepted,
            None => s.flags & FLOW_FIRST_OUT == 0,
        };
        let info = pid.and_then(|p| self.procs.get(p));
        let flow = record::Flow {
            community_id: match (known_id, owner.and_then(|o| o.digest_for(key.proto))) {
                (Some(id), _) => id,
                (None, Some(digest)) => cid::encode(&digest),
                (None, None) => {
                    community_id(0, key.proto, local, key.local_port, remote, key.remote_port)
                }
            },
            proto: proto_name(key.proto),
            direction: if inbound { "inbound" } else { "outbound" },
            src_ip: local,
            src_port: key.local_port,
            dst_ip: remote,
            dst_port: key.remote_port,
            pid,
            comm: info.map(|i| i.comm.clone()),
            exe: info.map(|i| i.exe.clone()),
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
fn flow_key_v4(local: [u8; 4], lport: u16, remote: [u8; 4], rport: u16) -> FlowKey {
    let mut local_addr = [0u8; 16];
    let mut remote_addr = [0u8; 16];
    local_addr[..4].copy_from_slice(&local);
    remote_addr[..4].copy_from_slice(&remote);
    FlowKey {
        local_addr,
        remote_addr,
        local_port: lport,
        remote_port: rport,
        proto: 6,
        ip_version: 4,
        _pad: [0; 2],
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

    /// An accepted socket's owner is known only from the accept record; its
    /// close (softirq, no owner) comes before the flow, which is emitted
    /// after the linger and must still name the server.
    #[test]
    fn an_accepted_connection_keeps_its_owner_past_the_close() {
        let mut p = pipeline();
        let [exec, accept] = fixtures::sshd_accepts();
        p.on_bytes(&exec).expect("exec");
        p.on_bytes(&accept).expect("accept");
        let close = fixtures::conn(EventKind::Close, 0, [10, 0, 0, 1], 22, [10, 0, 0, 9], 5555);
        let v = json(&p.on_bytes(&close).expect("close"));
        assert_eq!(
            (v["kind"].clone(), v["pid"].clone()),
            ("net_close".into(), 200.into())
        );
        let key = super::flow_key_v4([10, 0, 0, 1], 22, [10, 0, 0, 9], 5555);
        // The first packet the kernel saw left the host (the agent started
        // mid-connection): the accept record still says who opened it.
        let stats = FlowStats {
            n_out: 3,
            bytes_out: 300_000,
            n_in: 1,
            bytes_in: 80,
            flags: FLOW_FIRST_OUT,
            ..FlowStats::default()
        };
        let v = json(&p.on_flow(&key, &stats, FlowEnd::Close));
        assert_eq!(v["pid"], 200, "{v}");
        assert_eq!(v["exe"], "/usr/sbin/sshd", "{v}");
        assert_eq!(v["direction"], "inbound", "{v}");
        // Emitted at close, the owner is forgotten: a later flow on the same
        // endpoints (a new connection reusing the port) is not credited to it.
        let v = json(&p.on_flow(&key, &stats, FlowEnd::Close));
        assert!(v["pid"].is_null(), "{v}");
        assert_eq!(v["direction"], "outbound", "{v}");
    }

    #[test]
    fn a_flow_cut_by_a_timeout_keeps_its_owner_for_the_rest() {
        let mut p = pipeline();
        let [exec, accept] = fixtures::sshd_accepts();
        p.on_bytes(&exec).expect("exec");
        p.on_bytes(&accept).expect("accept");
        let key = super::flow_key_v4([10, 0, 0, 1], 22, [10, 0, 0, 9], 5555);
        let stats = FlowStats::default();
        for end in [FlowEnd::ActiveTimeout, FlowEnd::Idle, FlowEnd::Shutdown] {
            let v = json(&p.on_flow(&key, &stats, end));
            assert_eq!(v["pid"], 200, "{end:?}: {v}");
        }
    }

    fn auth_json(p: &mut Pipeline, bytes: &[u8]) -> serde_json::Value {
        let v = json(&p.on_bytes(bytes).expect("auth"));
        assert_eq!(v["kind"], "auth_attempt");
        v
    }

    #[test]
    fn sshds_rhost_is_trusted_when_its_listener_accepted_that_peer() {
        let mut p = pipeline();
        for r in fixtures::sshd_session([198, 51, 100, 7]) {
            p.on_bytes(&r).expect("setup");
        }
        let v = auth_json(&mut p, &fixtures::auth(300, 7, "root", "198.51.100.7"));
        assert_eq!(v["trusted"], true, "{v}");
        assert_eq!(v["peer"], "198.51.100.7");
        assert_eq!(v["uid"], 0);
        // The listener itself calling PAM (sshd without privilege separation).
        let v = auth_json(&mut p, &fixtures::auth(200, 7, "root", "198.51.100.7"));
        assert_eq!(v["trusted"], true, "{v}");
        // IPv4-mapped text names the same peer.
        let v = auth_json(
            &mut p,
            &fixtures::auth(300, 7, "root", "::ffff:198.51.100.7"),
        );
        assert_eq!(v["trusted"], true, "{v}");
    }

    #[test]
    fn a_rhost_nobody_accepted_or_a_caller_that_is_not_the_service_is_untrusted() {
        let mut p = pipeline();
        for r in fixtures::sshd_session([198, 51, 100, 7]) {
            p.on_bytes(&r).expect("setup");
        }
        // sshd naming an address it never accepted, or a name.
        for rhost in ["203.0.113.9", "attacker.example", ""] {
            let v = auth_json(&mut p, &fixtures::auth(300, 7, "root", rhost));
            assert_eq!(v["trusted"], false, "{rhost}: {v}");
            assert!(v["peer"].is_null());
        }
        // A local user's python calling libpam, claiming the accepted peer.
        p.on_bytes(&fixtures::exec_as(
            400,
            1,
            1000,
            "/usr/bin/python3.11",
            &["python3"],
            None,
        ))
        .expect("exec");
        let v = auth_json(
            &mut p,
            &fixtures::auth_as(400, 1000, 7, "root", "198.51.100.7"),
        );
        assert_eq!(
            (v["trusted"].clone(), v["uid"].clone()),
            (false.into(), 1000.into())
        );
        // Even as root, an executable outside `services` is not sshd.
        p.on_bytes(&fixtures::exec_as(
            401,
            200,
            0,
            "/usr/bin/python3.11",
            &["python3"],
            None,
        ))
        .expect("exec");
        let v = auth_json(&mut p, &fixtures::auth(401, 7, "root", "198.51.100.7"));
        assert_eq!(v["trusted"], false, "{v}");
        // And sshd's own path run by a user is not root.
        p.on_bytes(&fixtures::exec_as(
            402,
            200,
            1000,
            "/usr/sbin/sshd",
            &["sshd"],
            None,
        ))
        .expect("exec");
        let v = auth_json(
            &mut p,
            &fixtures::auth_as(402, 1000, 7, "root", "198.51.100.7"),
        );
        assert_eq!(v["trusted"], false, "{v}");
        // Services come from the config.
        p.set_auth_services(vec!["/usr/bin/python3.11".into()]);
        let v = auth_json(&mut p, &fixtures::auth(401, 7, "root", "198.51.100.7"));
        assert_eq!(v["trusted"], true, "{v}");
    }

    #[test]
    fn accepted_peers_are_bounded_per_process_and_in_processes() {
        let mut p = pipeline();
        for i in 0..(PEERS_PER_ACCEPTER as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            p.note_accept(200, IpAddr::V4(ip));
        }
        assert_eq!(
            p.accepted.peek(&200).map(|v| v.len()),
            Some(PEERS_PER_ACCEPTER)
        );
        assert!(
            !p.accepted_from(200, "10.0.0.0".parse().expect("ip")),
            "oldest kept"
        );
        for pid in 0..(ACCEPTERS as u32 + 5) {
            p.note_accept(1000 + pid, "10.9.9.9".parse().expect("ip"));
        }
        assert_eq!(p.accepted.len(), ACCEPTERS);
        assert_eq!(p.stats.accepters_evicted, 6);
    }

    #[test]
    fn exec_and_write_records_carry_identities_and_start_time() {
        let mut p = pipeline();
        let id = agent_common::FileId {
            ino: 77,
            dev: (8 << 20) | 1,
            generation: 5,
        };
        let v = json(
            &p.on_bytes(&fixtures::exec_as(100, 1, 0, "/srv/x", &["x"], Some(id)))
                .expect("exec"),
        );
        // Kernel 8:1 is stat's 0x801; 12.34 s + 1 s after boot.
        assert_eq!(
            v["exe_file"],
            serde_json::json!({"dev": 0x801, "ino": 77, "generation": 5})
        );
        assert_eq!(
            v["start_time"],
            crate::util::ns_to_clock_ticks(12_340_000_000 + 100 * 10_000_000)
        );
        assert!(v.get("script_file").is_none(), "{v}");
        assert_eq!(
            p.procs.get(100).and_then(|i| i.start_time),
            v["start_time"].as_u64()
        );
        let v = json(
            &p.on_bytes(&fixtures::file_write(100, "/srv/y", Some(id)))
                .expect("write"),
        );
        assert_eq!(v["kind"], "file_write");
        assert_eq!(v["file"]["ino"], 77);
        let v = json(
            &p.on_bytes(&fixtures::file_write(100, "/srv/z", None))
                .expect("write"),
        );
        assert!(v["file"].is_null(), "{v}");
    }

    #[test]
    fn records_name_their_process_by_guid_from_fork_to_exit() {
        let mut p = pipeline();
        let shell = json(
            &p.on_bytes(&fixtures::exec(300, 1, "/bin/sh", &["sh"]))
                .expect("exec"),
        );
        let shell_guid = shell["guid"].as_str().expect("guid").to_string();
        let fork = json(&p.on_bytes(&fixtures::fork(300, 301)).expect("fork"));
        let child = fork["guid"].as_str().expect("child guid").to_string();
        assert_ne!(child, shell_guid);
        assert_eq!(fork["parent_guid"], shell_guid.as_str());
        // The fixtures' fork start time is the exec fixture's for that pid,
        // as the kernel's start_boottime is the same before and after exec.
        let exec = json(
            &p.on_bytes(&fixtures::exec(301, 300, "/usr/bin/nc", &["nc"]))
                .expect("exec"),
        );
        let conn = json(
            &p.on_bytes(&fixtures::conn(
                EventKind::Connect,
                301,
                [10, 0, 0, 1],
                5555,
                [10, 0, 0, 2],
                80,
            ))
            .expect("connect"),
        );
        let exit = json(&p.on_bytes(&fixtures::exit(301, 0)).expect("exit"));
        for v in [&exec, &conn, &exit] {
            assert_eq!(v["parent_guid"], shell_guid.as_str(), "{v}");
        }
        assert_eq!(conn["guid"], exec["guid"]);
        assert_eq!(exit["guid"], exec["guid"]);
        assert_eq!(exec["guid"], child.as_str(), "exec keeps the fork's GUID");
        let unknown = json(
            &p.on_bytes(&fixtures::conn(
                EventKind::Connect,
                999,
                [10, 0, 0, 1],
                5556,
                [10, 0, 0, 2],
                80,
            ))
            .expect("connect"),
        );
        assert!(unknown.get("guid").is_none(), "{unknown}");
    }

    #[test]
    fn a_script_exec_is_identified_by_its_own_file() {
        let mut p = pipeline();
        let dir = std::env::temp_dir().join(format!("vigil-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let script = dir.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").expect("script");
        let path = script.to_string_lossy().into_owned();
        let md = std::fs::metadata(&script).expect("stat");
        // As the kernel reports it: argv rewritten to `/bin/sh script`.
        let v = json(
            &p.on_bytes(&fixtures::exec(101, 1, &path, &["/bin/sh", &path]))
                .expect("exec"),
        );
        assert_eq!(v["script_file"]["ino"], md.ino(), "{v}");
        assert_eq!(v["script_file"]["dev"], md.dev(), "{v}");
        // A plain exec is not stat'ed.
        let v = json(
            &p.on_bytes(&fixtures::exec(102, 1, &path, &[&path]))
                .expect("exec"),
        );
        assert!(v.get("script_file").is_none(), "{v}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A memfd run through a descriptor path is named as the kernel names
    /// it, whatever path was handed over, and whether or not the process
    /// is still there to ask.
    #[test]
    fn a_memfd_exec_is_named_by_the_file_not_the_descriptor_path() {
        let mut p = pipeline();
        for path in ["/proc/self/fd/3", "/dev/fd/4", "/proc/4242/fd/5"] {
            let v = json(
                &p.on_bytes(&fixtures::exec_named(4_000_000, path, "memfd:payload", 0))
                    .expect("exec"),
            );
            assert_eq!(v["exe"], "/memfd:payload (deleted)", "{v}");
            assert_eq!(v["exe_arg"], path, "{v}");
        }
        // A file on disk keeps its path, and no exe_arg is added.
        let v = json(
            &p.on_bytes(&fixtures::exec_named(4_000_001, "/usr/bin/true", "true", 1))
                .expect("exec"),
        );
        assert_eq!(v["exe"], "/usr/bin/true");
        assert!(v.get("exe_arg").is_none(), "{v}");
        // An unlinked file run by descriptor, its process gone.
        let v = json(
            &p.on_bytes(&fixtures::exec_named(4_000_002, "/dev/fd/3", "dropper", 0))
                .expect("exec"),
        );
        assert_eq!(v["exe"], "dropper (deleted)", "{v}");
    }

    /// A close and the flow it carries share one hash of their tuple; a
    /// record whose flow key is not its close's (forged, or a kernel bug)
    /// gets the flow's own id, not the close's.
    #[test]
    fn a_close_and_its_flow_carry_the_id_of_their_own_tuples() {
        let mut p = pipeline();
        let bytes = fixtures::close_flow([10, 0, 0, 1], 40_000, [10, 0, 0, 2], 80, 3, 100);
        let ev = decode(&bytes).expect("decode");
        let Event::CloseFlow(c) = ev.clone() else {
            panic!("a close with its flow: {ev:?}")
        };
        let (close, flow) = p.on_event(ev);
        let flow = flow.expect("flow");
        let (local, remote) = key_addrs(&c.key);
        let want = community_id(0, 6, local, 40_000, remote, 80);
        assert_eq!(json(&close)["community_id"], want.as_str());
        assert_eq!(json(&flow)["community_id"], want.as_str());
        // The same close with a flow key for another port, and one for
        // another protocol number.
        for (port, proto) in [(40_001, 6), (40_000, 17)] {
            let mut forged = (*c).clone();
            forged.key.local_port = port;
            forged.key.proto = proto;
            let (close, flow) = p.on_event(Event::CloseFlow(Box::new(forged)));
            let flow = json(&flow.expect("flow"));
            assert_eq!(json(&close)["community_id"], want.as_str());
            assert_eq!(
                flow["community_id"],
                community_id(0, proto, local, port, remote, 80).as_str(),
                "{flow}"
            );
            assert_ne!(flow["community_id"], want.as_str());
        }
        // The flow key in the other direction is the same tuple.
        let mut reversed = (*c).clone();
        reversed.key.local_addr = c.key.remote_addr;
        reversed.key.remote_addr = c.key.local_addr;
        reversed.key.local_port = c.key.remote_port;
        reversed.key.remote_port = c.key.local_port;
        let (_, flow) = p.on_event(Event::CloseFlow(Box::new(reversed)));
        assert_eq!(json(&flow.expect("flow"))["community_id"], want.as_str());
    }

    /// A close and a flow take the tuple hash their connect or accept
    /// stored only for the same protocol: a UDP "connect" on the same
    /// endpoints leaves the TCP close and flow to hash their own tuple.
    #[test]
    fn a_stored_tuple_hash_serves_only_its_own_protocol() {
        let mut p = pipeline();
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let ev = |bytes: Vec<u8>, proto: u8| {
            let Event::Conn(mut c) = decode(&bytes).expect("decode") else {
                panic!("a connection record")
            };
            c.proto = proto;
            Event::Conn(c)
        };
        let key = super::flow_key_v4(a, 40_000, b, 53);
        let tcp = community_id(0, 6, IpAddr::from(a), 40_000, IpAddr::from(b), 53);
        let udp = community_id(0, 17, IpAddr::from(a), 40_000, IpAddr::from(b), 53);
        for (first, then) in [(17, 6), (6, 6), (6, 17)] {
            let connect = ev(
                fixtures::conn(EventKind::Connect, 7, a, 40_000, b, 53),
                first,
            );
            let (r, _) = p.on_event(connect);
            let want = |proto| if proto == 6 { &tcp } else { &udp };
            assert_eq!(json(&r)["community_id"], want(first).as_str());
            // The server side's close names the tuple the other way round.
            let close = ev(fixtures::conn(EventKind::Close, 0, b, 53, a, 40_000), then);
            let (r, _) = p.on_event(close);
            let close = ev(fixtures::conn(EventKind::Close, 0, a, 40_000, b, 53), then);
            let (r2, _) = p.on_event(close);
            assert_eq!(json(&r)["community_id"], want(then).as_str());
            assert_eq!(json(&r2)["community_id"], want(then).as_str());
            assert_eq!(json(&r2)["pid"], 7, "the owner is still found");
            let key = FlowKey { proto: then, ..key };
            let flow = json(&p.on_flow(&key, &FlowStats::default(), FlowEnd::Close));
            assert_eq!(
                flow["community_id"],
                want(then).as_str(),
                "{first} then {then}"
            );
        }
    }

    #[test]
    fn bad_records_are_counted() {
        let mut p = pipeline();
        assert!(p.on_bytes(&[0u8; 10]).is_err());
        assert_eq!(p.stats.decode_errors, 1);
    }
}
