//! Names of the maps and programs in the kernel object, defined once so the
//! loader and the kernel side cannot drift apart.

/// Ring buffer carrying every event to userspace.
pub const EVENTS: &str = "EVENTS";
/// Per-CPU array, one slot per [`crate::EventKind`], counting ring buffer
/// reserve failures (events lost in the kernel).
pub const EVENT_DROPS: &str = "EVENT_DROPS";
/// LRU hash of [`crate::FlowKey`] to [`crate::FlowStats`].
pub const FLOWS: &str = "FLOWS";
/// Per-CPU count of flows the kernel inserted into `FLOWS`: with what
/// userspace emitted and what is live, it gives the LRU evictions.
pub const FLOWS_CREATED: &str = "FLOWS_CREATED";
/// One u64: until when (`CLOCK_MONOTONIC` ns) the agent polls the ring
/// every [`EVENTS_POLL_MS`] anyway, so the kernel need not wake it.
pub const AGENT_BUSY: &str = "AGENT_BUSY";
/// Pending outbound connects: socket address to owner, filled at SYN_SENT.
pub const CONNECTING: &str = "CONNECTING";
/// Listening sockets: (netns, port) to owner, used to name the accepting process.
pub const LISTENERS: &str = "LISTENERS";
/// Socket cookie to owning process, filled at socket creation.
pub const SOCK_OWNER: &str = "SOCK_OWNER";
/// Name of the read-only global holding [`crate::AgentConfig`].
pub const CONFIG: &str = "CONFIG";

/// Default capacity of the flow map; `flows.max_entries` overrides it.
pub const FLOWS_MAX_ENTRIES: u32 = 131_072;
/// Capacity of the pending-connect, listener and socket owner maps.
pub const CONNECTING_MAX_ENTRIES: u32 = 16_384;
pub const LISTENERS_MAX_ENTRIES: u32 = 4_096;
pub const SOCK_OWNER_MAX_ENTRIES: u32 = 65_536;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 8 << 20;
/// Unread bytes at which a submit wakes the agent. Below it high-rate
/// events are submitted without a wake-up (an interrupt per event on a
/// virtual machine) and wait for the agent's periodic drain
/// ([`EVENTS_POLL_MS`]), except one that finds the ring empty; 1/64 of the
/// ring, far from a full one.
pub const EVENTS_WAKEUP_BYTES: u64 = 128 << 10;
/// While busy (a record read within [`EVENTS_BUSY_MS`]) the agent drains
/// the ring at least this often, readiness or not; the kernel wakes it at
/// most this often for a record that finds the ring empty.
pub const EVENTS_POLL_MS: u64 = 5;
/// How long after its last record the agent keeps polling every
/// [`EVENTS_POLL_MS`]; longer than that interval, so a record the kernel
/// did not wake it for is always read by a poll.
pub const EVENTS_BUSY_MS: u64 = 50;
/// The idle agent's safety-net drain: records that find the ring empty
/// wake it, so this only bounds a lost wake-up.
pub const EVENTS_IDLE_POLL_MS: u64 = 250;
/// Unread bytes up to which a submit counts as the ring's only record
/// (the largest record is under 1 KiB).
pub const EVENTS_LONE_BYTES: u64 = 1024;

/// Program names as they appear in the object file.
pub mod prog {
    pub const EXEC: &str = "vigil_exec";
    pub const EXIT: &str = "vigil_exit";
    pub const FORK_BTF: &str = "vigil_fork_btf";
    pub const FORK_TP: &str = "vigil_fork_tp";
    pub const SOCK_STATE_BTF: &str = "vigil_sock_state_btf";
    pub const SOCK_STATE: &str = "vigil_sock_state";
    pub const SOCK_CREATE: &str = "vigil_sock_create";
    pub const SOCK_RELEASE: &str = "vigil_sock_release";
    pub const FLOW_CG_INGRESS: &str = "vigil_flow_cg_in";
    pub const FLOW_CG_EGRESS: &str = "vigil_flow_cg_out";
    pub const FLOW_TC_INGRESS: &str = "vigil_flow_tc_in";
    pub const FLOW_TC_EGRESS: &str = "vigil_flow_tc_out";
    pub const PAM_ENTER: &str = "vigil_pam_enter";
    pub const PAM_EXIT: &str = "vigil_pam_exit";
    pub const TCP_RESET: &str = "vigil_tcp_reset";
    pub const FILE_WRITE: &str = "vigil_file_write";
    pub const FILE_OPENED: &str = "vigil_file_opened";
}
