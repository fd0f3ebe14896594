//! The output record types (docs/events.md): every record a sink receives
//! serialises to one JSON object with `kind`, `ts` (RFC 3339) and `host`.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

/// The derived `Serialize` is the reference form of a record's native line
/// (docs/events.md); the sinks write it with sink/format/native.rs, which
/// its tests hold byte for byte to this derive.
#[derive(Debug, Serialize)]
pub struct Record {
    #[serde(flatten)]
    pub body: Body,
    /// GUID of the process the record is about (pipeline/guid.rs): stable
    /// for the process's life, unique across pid reuse, reboots and hosts.
    /// Absent when its start time is unknown or no process is involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guid: Option<Arc<str>>,
    /// GUID of that process's parent when it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_guid: Option<Arc<str>>,
    pub ts: String,
    pub host: Arc<str>,
    /// Wall-clock time in ns, for the detectors (not serialized: `ts` says it).
    #[serde(skip)]
    pub wall_ns: i64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    ProcessExec(ProcessExec),
    ProcessExit(ProcessExit),
    ProcessFork(ProcessFork),
    NetConnect(Conn),
    NetAccept(Conn),
    NetClose(Conn),
    NetConnectFailed(Conn),
    /// An inbound TCP attempt answered with a reset: no socket on that port.
    NetRefused(Conn),
    AuthAttempt(AuthAttempt),
    FileWrite(FileWrite),
    Flow(Box<Flow>),
    AgentStart(AgentStart),
    AgentStats(AgentStats),
    AgentStop(AgentStats),
    /// This host as fusion sees it: published on `fleet.inventory`.
    Inventory(Inventory),
}

/// The host's addresses and role tags (`roles` in the config).
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub addresses: Vec<IpAddr>,
    pub roles: Vec<String>,
}

impl Body {
    /// The process the record is about, when one is known.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Body::ProcessExec(e) => Some(e.pid),
            Body::ProcessExit(e) => Some(e.pid),
            Body::ProcessFork(e) => Some(e.pid),
            Body::NetConnect(c)
            | Body::NetAccept(c)
            | Body::NetClose(c)
            | Body::NetConnectFailed(c)
            | Body::NetRefused(c) => c.pid,
            Body::AuthAttempt(a) => Some(a.pid),
            Body::FileWrite(w) => Some(w.pid),
            Body::Flow(f) => f.pid,
            Body::AgentStart(_) | Body::AgentStats(_) | Body::AgentStop(_) | Body::Inventory(_) => {
                None
            }
        }
    }

    /// The record's `kind`, as serialized.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::ProcessExec(_) => "process_exec",
            Body::ProcessExit(_) => "process_exit",
            Body::ProcessFork(_) => "process_fork",
            Body::NetConnect(_) => "net_connect",
            Body::NetAccept(_) => "net_accept",
            Body::NetClose(_) => "net_close",
            Body::NetConnectFailed(_) => "net_connect_failed",
            Body::NetRefused(_) => "net_refused",
            Body::AuthAttempt(_) => "auth_attempt",
            Body::FileWrite(_) => "file_write",
            Body::Flow(_) => "flow",
            Body::AgentStart(_) => "agent_start",
            Body::AgentStats(_) => "agent_stats",
            Body::AgentStop(_) => "agent_stop",
            Body::Inventory(_) => "inventory",
        }
    }
}

/// A file's identity: device (numbered as `stat(2)` reports `st_dev`),
/// inode number, and the inode's generation when the kernel read it (an
/// inode number freed and reused gets another generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct ProcessExec {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub exe: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub cgroup_id: u64,
    /// For shells: standard input or output is a socket (a reverse shell's tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio_socket: Option<bool>,
    /// Executable of the parent process, from the process cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_exe: Option<Arc<str>>,
    /// Command line of the parent (arguments joined by spaces), from the
    /// process cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_cmdline: Option<Arc<str>>,
    /// Working directory at exec; null when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Audit login uid (`task->loginuid`): the user who logged in, kept
    /// across su and sudo; null when unset (4294967295) or not readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22),
    /// read in the kernel: with the pid, it names this process and no
    /// later one that reuses the pid.
    pub start_time: Option<u64>,
    /// The file the process maps (`mm->exe_file`; for a `#!` script, its
    /// interpreter).
    pub exe_file: Option<FileId>,
    /// For a `#!` script: the script itself (stat of `exe` at exec, so no
    /// generation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script_file: Option<FileId>,
    /// For an exec from a watched world-writable directory: the owner and
    /// link count of the file that runs (the script for a `#!` script), from
    /// a stat when the record is read; 0 links means it was deleted after
    /// start. Absent when the process was already gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_owner: Option<FileOwner>,
    /// The path handed to execve, when `exe` names the file differently
    /// (a descriptor path such as `/proc/self/fd/3`, or a relative path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_arg: Option<String>,
}

/// Owner and link count of an executed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileOwner {
    pub uid: u32,
    pub links: u64,
}

#[derive(Debug, Serialize)]
pub struct ProcessExit {
    pub pid: u32,
    /// Status given to exit(2); null when killed by a signal or unknown.
    pub exit_code: Option<u32>,
    pub signal: Option<u32>,
    pub comm: String,
    pub exe: Option<Arc<str>>,
}

/// A file a process that has talked to the network opened for writing;
/// only opens that returned a descriptor are reported.
#[derive(Debug, Serialize)]
pub struct FileWrite {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    /// Absolute when it could be resolved against the process's directory.
    pub path: String,
    /// The file opened, read from the descriptor; null when the kernel
    /// could not read it.
    pub file: Option<FileId>,
}

/// A `pam_authenticate` call and its result (uprobe on libpam).
#[derive(Debug, Serialize)]
pub struct AuthAttempt {
    pub pid: u32,
    /// Real uid of the calling process.
    pub uid: u32,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    /// PAM service (sshd, sudo, login, …), when the offsets were verified.
    pub service: Option<String>,
    pub user: Option<String>,
    /// Remote host as PAM saw it (an address for sshd).
    pub rhost: Option<String>,
    /// `success` or `failure`.
    pub result: &'static str,
    /// PAM return code (0 success, 7 auth error, 10 unknown user, …).
    pub code: i32,
    /// Whether `rhost` can be believed: the caller is a configured service
    /// (`detect.brute_force.services`) running as root, and `rhost` is the
    /// peer of a TCP connection it or its parent accepted. Anyone can call
    /// libpam with any rhost; only a trusted attempt names an address.
    pub trusted: bool,
    /// The accepted peer that `rhost` matched, when trusted.
    pub peer: Option<IpAddr>,
}

#[derive(Debug, Serialize)]
pub struct ProcessFork {
    pub pid: u32,
    pub ppid: u32,
    pub maybe_thread: bool,
}

#[derive(Debug, Serialize)]
pub struct Conn {
    pub pid: Option<u32>,
    pub comm: String,
    pub exe: Option<Arc<str>>,
    pub uid: Option<u32>,
    pub proto: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub community_id: String,
    /// State left, for close and failed connects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_state: Option<&'static str>,
}

/// Names of the 16 flow features, in vector order (docs/features.md).
pub const FEATURE_NAMES: [&str; 16] = [
    "duration",
    "packets_out",
    "packets_in",
    "bytes_out",
    "bytes_in",
    "upload_ratio",
    "mean_size_out",
    "size_std_out",
    "mean_size_in",
    "size_std_in",
    "iat_mean",
    "iat_cv",
    "burstiness",
    "iat_max",
    "syn_fraction",
    "rst_fraction",
];

/// A flow's feature vector.
pub type Features = [f64; 16];

#[derive(Debug, Serialize)]
pub struct Flow {
    pub community_id: String,
    pub proto: &'static str,
    /// `outbound` when the first packet seen left the host, else `inbound`.
    pub direction: &'static str,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub pid: Option<u32>,
    pub comm: Option<Arc<str>>,
    pub exe: Option<Arc<str>>,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: f64,
    pub syn: u64,
    pub rst: u64,
    pub fin: u64,
    /// Why the flow was emitted: close, idle, active_timeout or shutdown.
    pub end_reason: &'static str,
    pub features: [f64; 16],
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub name: String,
    pub hook: String,
    pub tier: u8,
    pub state: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct AgentStart {
    pub pid: u32,
    pub version: &'static str,
    pub probes: Vec<ProbeRow>,
    pub processes_seeded: usize,
    /// Sigma rules from `detect.sigma.dirs`.
    pub sigma_rules: SigmaRuleCounts,
}

/// How many Sigma rules a load compiled, and how many it skipped.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SigmaRuleCounts {
    pub loaded: usize,
    /// Valid Sigma that vigil cannot evaluate (`vigil rules check` lists why).
    pub unsupported: usize,
    pub errors: usize,
}

#[derive(Debug, Serialize, Default, Clone)]
pub struct AgentStats {
    pub events: std::collections::BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    /// Events the kernel could not reserve ring buffer space for.
    pub kernel_reserve_failures: u64,
    pub flows_emitted: u64,
    pub flows_tracked: u64,
    /// Flows the kernel's LRU map evicted before the sweep emitted them
    /// (a lower bound: created − emitted − live, taken at each sweep).
    pub flows_evicted: u64,
    pub process_cache_entries: usize,
    pub process_cache_evicted: u64,
    /// Listening processes whose accepted peers were forgotten (bound
    /// 4,096): PAM results of their sessions are then untrusted.
    pub accepters_evicted: u64,
    /// Walks of /proc for the owner of a listener older than the agent, and
    /// accepts left ownerless because a walk came too soon after the last.
    pub listener_lookups: u64,
    pub listener_lookups_shed: u64,
}
