//! Enforcement maps shared with the XDP and egress programs. They are pinned
//! under the pin directory (default `/sys/fs/bpf/vigil/`) so blocks survive
//! agent restarts, and every entry carries its own expiry, checked by the
//! kernel program itself, so a block lapses on time even with no agent.
//!
//! The rule the programs enforce: a packet is dropped when ANY live entry
//! for its direction covers its address (the exact address, or a prefix of
//! any length). A narrower, expired or other-direction entry never hides a
//! broader live one: the programs walk from the longest matching prefix to
//! shorter ones until a live entry for the direction is found.

/// Drop inbound packets from the address (XDP).
pub const BLOCK_INGRESS: u32 = 1;
/// Drop outbound packets to the address (cgroup_skb egress).
pub const BLOCK_EGRESS: u32 = 2;

/// Value of every blocklist map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockValue {
    /// CLOCK_MONOTONIC (`bpf_ktime_get_ns`) after which the entry is inert.
    pub expires_ns: u64,
    /// Packets and bytes this entry dropped (atomic adds in the kernel).
    pub packets: u64,
    pub bytes: u64,
    /// [`BLOCK_INGRESS`] | [`BLOCK_EGRESS`].
    pub flags: u32,
    /// The entry's own prefix length (32/128 in the exact hashes). An LPM
    /// lookup returns the value, not the key it matched; the kernel needs
    /// the length to look again for the next shorter covering prefix, and
    /// userspace to tell an exact hit from a covering one.
    pub prefix_len: u32,
}

const _: () = assert!(core::mem::size_of::<BlockValue>() == 32);

/// Slots of the per-CPU `BLOCK_STATS` array.
pub const STAT_IN_PACKETS: u32 = 0;
pub const STAT_IN_BYTES: u32 = 1;
pub const STAT_OUT_PACKETS: u32 = 2;
pub const STAT_OUT_BYTES: u32 = 3;
pub const STAT_SLOTS: u32 = 4;

/// Exact-match maps (checked first) and LPM tries for prefixes.
pub const BLOCK4: &str = "BLOCK4";
pub const BLOCK6: &str = "BLOCK6";
pub const BLOCK4_LPM: &str = "BLOCK4_LPM";
pub const BLOCK6_LPM: &str = "BLOCK6_LPM";
pub const BLOCK_STATS: &str = "BLOCK_STATS";
/// Capacity of each blocklist map.
pub const BLOCK_MAX_ENTRIES: u32 = 262_144;
/// Upper bound of the kernel's walk to shorter prefixes: one lookup per
/// possible prefix length (0..=32, 0..=128), each strictly shorter.
pub const LPM_WALK_V4: u32 = 33;
pub const LPM_WALK_V6: u32 = 129;

pub const PROG_XDP: &str = "vigil_xdp_block";
pub const PROG_EGRESS: &str = "vigil_egress_block";
/// The egress check at TC, for an agent scoped to its network namespace.
pub const PROG_TC_EGRESS: &str = "vigil_tc_egress_block";
