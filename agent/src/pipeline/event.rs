//! Typed events owned by userspace, decoded from the kernel wire records.

use std::net::IpAddr;

use crate::record::FileId;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Exec(ExecEvent),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Conn(ConnEvent),
    Auth(AuthEvent),
    FileWrite(FileWriteEvent),
    /// A TCP close with the flow the kernel took out of its map at it.
    CloseFlow(Box<ClosedFlow>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClosedFlow {
    /// Of kind [`ConnKind::Close`].
    pub conn: ConnEvent,
    pub key: agent_common::FlowKey,
    pub stats: agent_common::FlowStats,
}

impl Event {
    pub fn ktime_ns(&self) -> u64 {
        match self {
            Event::Exec(e) => e.ktime_ns,
            Event::Exit(e) => e.ktime_ns,
            Event::Fork(e) => e.ktime_ns,
            Event::Conn(e) => e.ktime_ns,
            Event::Auth(e) => e.ktime_ns,
            Event::FileWrite(e) => e.ktime_ns,
            Event::CloseFlow(c) => c.conn.ktime_ns,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecEvent {
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// None when the kernel could not read the parent (no BTF offsets).
    pub ppid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    /// Path as passed to execve (may be relative).
    pub filename: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// argv could not be read in the kernel; empty is not the truth.
    pub argv_unavailable: bool,
    /// `task->start_boottime` in ns, when the kernel could read it.
    pub start_boottime_ns: Option<u64>,
    /// The executable the process maps (for a `#!` script, its interpreter).
    pub exe_file: Option<FileId>,
    /// Audit login uid; None when unset or not readable.
    pub auid: Option<u32>,
    /// That file's link count and own name (`memfd:NAME` for a memfd), read
    /// in the kernel whatever path the exec was handed.
    pub exe_links: Option<u32>,
    pub exe_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExitEvent {
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Raw `task_struct.exit_code` (status << 8 | signal), when known.
    pub raw_code: Option<u32>,
}

impl ExitEvent {
    /// Exit status passed to exit(2), when the process was not killed.
    pub fn exit_status(&self) -> Option<u32> {
        self.raw_code.map(|c| (c >> 8) & 0xff)
    }

    /// Signal that killed the process, if any.
    pub fn signal(&self) -> Option<u32> {
        self.raw_code.map(|c| c & 0x7f).filter(|&s| s != 0)
    }
}

/// A file a network-facing process opened for writing (the open succeeded).
#[derive(Debug, Clone, PartialEq)]
pub struct FileWriteEvent {
    pub ktime_ns: u64,
    pub pid: u32,
    pub comm: String,
    /// As given to openat; may be relative.
    pub path: String,
    /// The file the returned descriptor names; None when the kernel could
    /// not read it (unresolved offsets).
    pub file: Option<FileId>,
}

/// One `pam_authenticate` result.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthEvent {
    pub ktime_ns: u64,
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    pub retval: i32,
    /// None when libpam's private offsets could not be verified.
    pub service: Option<String>,
    pub user: Option<String>,
    pub rhost: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForkEvent {
    pub ktime_ns: u64,
    pub parent_pid: u32,
    pub child_pid: u32,
    /// Tracepoint tier: the child may be a thread rather than a process.
    pub maybe_thread: bool,
    /// The child's `task->start_boottime` in ns, when the kernel read it.
    pub start_boottime_ns: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    Connect,
    Accept,
    Close,
    ConnectFailed,
    Refused,
}

impl ConnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Connect => "net_connect",
            ConnKind::Accept => "net_accept",
            ConnKind::Close => "net_close",
            ConnKind::ConnectFailed => "net_connect_failed",
            ConnKind::Refused => "net_refused",
        }
    }
}

/// A TCP lifecycle event. `src` is this host's end of the socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnEvent {
    pub kind: ConnKind,
    pub ktime_ns: u64,
    /// Owning process; None when the kernel could not tell.
    pub pid: Option<u32>,
    pub uid: u32,
    pub comm: String,
    pub proto: u8,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// TCP state the socket left (close and failed connect).
    pub old_state: u32,
}

/// Name of a TCP state as the kernel numbers them.
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        12 => "new_syn_recv",
        _ => "unknown",
    }
}
