//! Events sent from the kernel through the `EVENTS` ring buffer. Each record
//! starts with [`EventHeader`]; userspace dispatches on `kind` and checks
//! `size` against the record length before reading the body.

use core::mem::size_of;

pub const COMM_LEN: usize = 16;
pub const PATH_LEN: usize = 256;
pub const ARGV_LEN: usize = 256;

/// Kinds on the wire. Values are stable: never renumber, only append.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Exec = 1,
    Exit = 2,
    Fork = 3,
    Connect = 4,
    Accept = 5,
    Close = 6,
    ConnectFailed = 7,
    /// `pam_authenticate` returned (libpam uprobe).
    Auth = 8,
    /// The kernel answered an inbound TCP packet with a reset: no socket.
    Refused = 9,
    /// A network-facing process created or truncated a file for writing
    /// (the open succeeded).
    FileWrite = 10,
    /// A TCP socket closed, with its flow taken out of the flow map in the
    /// same step ([`CloseFlowEvent`]). The kernel sends this, not `Close`.
    CloseFlow = 11,
}

/// One more than the largest kind: the size of the reserve-failure array.
pub const EVENT_KIND_SLOTS: u32 = 12;

impl TryFrom<u16> for EventKind {
    type Error = u16;
    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            1 => Self::Exec,
            2 => Self::Exit,
            3 => Self::Fork,
            4 => Self::Connect,
            5 => Self::Accept,
            6 => Self::Close,
            7 => Self::ConnectFailed,
            8 => Self::Auth,
            9 => Self::Refused,
            10 => Self::FileWrite,
            11 => Self::CloseFlow,
            other => return Err(other),
        })
    }
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        Self::Exec,
        Self::Exit,
        Self::Fork,
        Self::Connect,
        Self::Accept,
        Self::Close,
        Self::ConnectFailed,
        Self::Auth,
        Self::Refused,
        Self::FileWrite,
        Self::CloseFlow,
    ];

    /// Size of the full record of this kind, header included.
    pub const fn record_size(self) -> usize {
        match self {
            Self::Exec => size_of::<ExecEvent>(),
            Self::Exit => size_of::<ExitEvent>(),
            Self::Fork => size_of::<ForkEvent>(),
            Self::Connect | Self::Accept | Self::Close | Self::ConnectFailed | Self::Refused => {
                size_of::<ConnEvent>()
            }
            Self::Auth => size_of::<AuthEvent>(),
            Self::FileWrite => size_of::<FileEvent>(),
            Self::CloseFlow => size_of::<CloseFlowEvent>(),
        }
    }
}

/// Common prefix of every event (after tetragon's `msg_common`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    /// Wire version of the record; bumped when a body layout changes.
    pub version: u16,
    /// Total record size in bytes, header included.
    pub size: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ktime_ns: u64,
    /// Process (thread group) the event belongs to; 0 when unknown.
    pub tgid: u32,
    /// Thread that caused it; 0 when unknown.
    pub tid: u32,
}

/// 2: exec carries the start time and the executable's identity; file
/// writes are reported when the open succeeded, with the file's identity.
/// 3: fork carries the child's start time (its process GUID); exec
/// carries the audit login uid and the executed file's link count and name.
pub const WIRE_VERSION: u16 = 3;

/// The parent pid could not be read (no BTF offsets).
pub const EXEC_PPID_UNKNOWN: u32 = 1;
/// argv could not be read from the new mm.
pub const EXEC_ARGV_UNAVAILABLE: u32 = 2;
/// argv was longer than [`ARGV_LEN`] bytes.
pub const EXEC_ARGV_TRUNCATED: u32 = 4;
/// `start_boottime_ns` was read.
pub const EXEC_START_KNOWN: u32 = 8;
/// `exe` holds the identity of `mm->exe_file`.
pub const EXEC_FILE_KNOWN: u32 = 16;
/// `auid` holds `task->loginuid` (which may itself be the unset value).
pub const EXEC_AUID_KNOWN: u32 = 32;
/// `exe_links` and `exe_name` describe `mm->exe_file`.
pub const EXEC_NAME_KNOWN: u32 = 0x100;
/// Bytes kept of the executed file's name.
pub const EXE_NAME_LEN: usize = 64;

/// A file's identity as the kernel sees it: `inode->i_sb->s_dev` (kernel
/// encoding, major << 20 | minor), `i_ino` and `i_generation`, which
/// changes when an inode number is reused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileId {
    pub ino: u64,
    pub dev: u32,
    pub generation: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    /// Bytes of `filename` used (without the NUL).
    pub filename_len: u32,
    /// Bytes of `argv` used: arguments separated by NUL.
    pub argv_len: u32,
    /// `task->loginuid` (the audit login uid), when `EXEC_AUID_KNOWN`.
    pub auid: u32,
    pub _pad: u32,
    pub cgroup_id: u64,
    /// `task->start_boottime` (ns since boot), when `EXEC_START_KNOWN`.
    pub start_boottime_ns: u64,
    /// The executable mapped (`mm->exe_file`), when `EXEC_FILE_KNOWN`: for
    /// a `#!` script, its interpreter.
    pub exe: FileId,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; PATH_LEN],
    pub argv: [u8; ARGV_LEN],
    /// When `EXEC_NAME_KNOWN`: the link count of `mm->exe_file`'s inode
    /// (0: a memfd, or unlinked) and its dentry's own name (`memfd:NAME`
    /// for a memfd), whatever path the exec was handed (`/proc/self/fd/N`,
    /// `fexecve`, `execveat` with `AT_EMPTY_PATH`).
    pub exe_links: u32,
    /// Bytes of `exe_name` used (without the NUL).
    pub exe_name_len: u32,
    pub exe_name: [u8; EXE_NAME_LEN],
}

/// `exit_code` holds the kernel's `task_struct.exit_code` (status << 8 | signal).
pub const EXIT_CODE_KNOWN: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub exit_code: u32,
    pub flags: u32,
    pub comm: [u8; COMM_LEN],
}

/// The program could not tell a new process from a new thread (tracepoint tier).
pub const FORK_MAYBE_THREAD: u32 = 1;
/// `child_start_boottime_ns` was read from the child's task.
pub const FORK_START_KNOWN: u32 = 2;

/// A new process. The header names the parent; the body the child.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_tgid: u32,
    pub child_tid: u32,
    pub flags: u32,
    pub _pad: u32,
    /// The child's `task->start_boottime` (ns since boot), when
    /// `FORK_START_KNOWN`: with the pid, the process's identity for life.
    pub child_start_boottime_ns: u64,
}

/// The owning process is unknown (header tgid is 0).
pub const CONN_OWNER_UNKNOWN: u32 = 1;
/// A [`CloseFlowEvent`] whose flow was not in the flow map (flow
/// accounting off, or the flow evicted): its key and stats are empty.
pub const CONN_NO_FLOW: u32 = 2;

/// TCP connection lifecycle: connect, accept, close and failed connect.
/// Addresses are from the local socket's view: `saddr:sport` is this host.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ConnEvent {
    pub header: EventHeader,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    /// IP protocol number (6 for TCP).
    pub protocol: u16,
    pub sport: u16,
    pub dport: u16,
    pub uid: u32,
    pub flags: u32,
    /// IPv4 in the first four bytes, the rest zero; IPv6 in all sixteen.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub comm: [u8; COMM_LEN],
    /// TCP state the socket left (for close and failed connect).
    pub old_state: u32,
    pub _pad: u32,
}

/// Every TCP close, with the flow the kernel found and removed from the
/// flow map in the same step: the agent gets the flow's final sums
/// without a map call per flow (two per short connection, a fifth of its
/// CPU under a connection storm). `conn.header.kind` is
/// [`EventKind::CloseFlow`]; [`CONN_NO_FLOW`] when there was none.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CloseFlowEvent {
    pub conn: ConnEvent,
    pub key: crate::FlowKey,
    pub stats: crate::FlowStats,
}

const _: () = assert!(size_of::<CloseFlowEvent>() == 96 + 40 + 128);

/// service, user and rhost were read at verified offsets.
pub const AUTH_FIELDS_KNOWN: u32 = 1;
pub const AUTH_STR_LEN: usize = 64;

/// The result of one `pam_authenticate` call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AuthEvent {
    pub header: EventHeader,
    /// PAM return code: 0 success, 7 auth error, 10 user unknown, …
    pub retval: i32,
    pub flags: u32,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    pub service: [u8; 32],
    pub user: [u8; AUTH_STR_LEN],
    pub rhost: [u8; AUTH_STR_LEN],
}

/// `file` holds the identity of the opened file.
pub const FILE_ID_KNOWN: u32 = 1;

/// A file opened with O_CREAT for writing by a process that has talked to
/// the network (connected, accepted or listened), reported when the open
/// returned a descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: EventHeader,
    /// The flags given to openat.
    pub open_flags: u32,
    /// `FILE_ID_KNOWN`.
    pub flags: u32,
    pub path_len: u32,
    /// The descriptor openat returned.
    pub fd: u32,
    /// The file the descriptor names, read from the fd table at exit.
    pub file: FileId,
    pub comm: [u8; COMM_LEN],
    /// As passed to openat (may be relative to the process's directory).
    pub path: [u8; PATH_LEN],
}

const _: () = assert!(size_of::<FileId>() == 16);
const _: () = assert!(size_of::<FileEvent>() == 24 + 16 + 16 + 16 + 256);
const _: () = assert!(size_of::<AuthEvent>() == 24 + 16 + 16 + 32 + 64 + 64);
const _: () = assert!(size_of::<EventHeader>() == 24);
const _: () = assert!(size_of::<ExecEvent>() == 24 + 24 + 8 + 8 + 8 + 16 + 16 + 256 + 256 + 8 + 64);
const _: () = assert!(size_of::<ExitEvent>() == 24 + 8 + 16);
const _: () = assert!(size_of::<ForkEvent>() == 24 + 16 + 8);
const _: () = assert!(size_of::<ConnEvent>() == 24 + 16 + 32 + 16 + 8);

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
