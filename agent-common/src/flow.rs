//! Per-flow running sums kept by the flow accounting programs. Only sums go
//! into the map, so no per-packet event ever reaches userspace; userspace
//! derives variances and the 16 features from them (see docs/features.md).

/// A flow from the host's side: `local` is this host's end of the socket.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IPv4 in the first four bytes, the rest zero; IPv6 in all sixteen.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub local_port: u16,
    pub remote_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    pub _pad: [u8; 2],
}

/// Running sums of one flow. Counters are updated with atomic adds; the
/// timing fields are last-writer-wins, which is exact on one CPU and close
/// enough across CPUs for features that are logs and ratios anyway.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// `bpf_ktime_get_ns()` of the first and the latest packet.
    pub t_first_ns: u64,
    pub t_last_ns: u64,
    /// Packets (GSO segments counted one by one) per direction.
    pub n_out: u64,
    pub n_in: u64,
    /// L4 payload bytes per direction.
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Sum of squared per-segment payload sizes per direction.
    pub sq_out: u64,
    pub sq_in: u64,
    /// Inter-arrival times between packets of the flow, in microseconds.
    pub iat_n: u64,
    pub iat_sum: u64,
    pub iat_sq: u64,
    pub iat_max: u64,
    /// Packets carrying SYN, RST and FIN.
    pub syn: u64,
    pub rst: u64,
    pub fin: u64,
    /// Owner process when the kernel knew it (socket created by a process), else 0.
    pub pid: u32,
    /// [`FLOW_FIRST_OUT`] or [`FLOW_FIRST_IN`]: who sent the first packet seen.
    pub flags: u32,
}

/// The first packet of the flow left the host (we probably initiated it).
pub const FLOW_FIRST_OUT: u32 = 1;
/// The first packet of the flow arrived from the peer.
pub const FLOW_FIRST_IN: u32 = 2;

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<FlowStats>() == 15 * 8 + 8);

/// Owner of a socket as recorded in process context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    pub tgid: u32,
    pub uid: u32,
    pub comm: [u8; crate::event::COMM_LEN],
}

/// Key of the listener map: network namespace (the kernel `struct net`
/// address, an identity only) and local port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenKey {
    pub netns: u64,
    pub port: u16,
    pub family: u16,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<SockOwner>() == 24);
const _: () = assert!(core::mem::size_of::<ListenKey>() == 16);
