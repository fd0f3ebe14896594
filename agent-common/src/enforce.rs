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

/// One slot of the per-CPU prefix cache (`PREFIX_CACHE4`/`PREFIX_CACHE6`,
/// direct-mapped by a keyed hash of the address): an exact address the
/// kernel recently dropped through a covering prefix, with that prefix
/// entry's expiry and directions. It is valid only while `generation`
/// equals `BLOCK_GEN`, which userspace bumps after every change to the
/// prefix tries, so an unblock or renew retires every cached verdict at
/// once. Drops served from the slot are counted in it and added to the
/// prefix entry when the slot is reused (userspace adds the slots still
/// holding counts when it reads an entry). Only XDP fills slots; every
/// enforcement program reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixSlot {
    pub generation: u64,
    /// The prefix entry's `expires_ns`: the cached verdict lapses with it.
    pub expires_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// The address (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// The prefix entry's directions and length.
    pub flags: u32,
    pub prefix_len: u32,
    /// Set by each hit, cleared by a colliding insert that it turns away:
    /// a source still being hit keeps its slot against a spray.
    pub referenced: u32,
    /// Odd while XDP rewrites the slot; a reader that sees it odd or
    /// changed across its read ignores the slot.
    pub seq: u32,
}

const _: () = assert!(core::mem::size_of::<PrefixSlot>() == 64);

/// The prefix cache's per-CPU counters and state (`PREFIX_CACHE_CPU`, one
/// entry). Every drop through a prefix found by the walk ends in exactly
/// one of `inserts`, `kept` or `over_budget`; `evictions` counts the
/// inserts that replaced another live source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefixCacheCpu {
    pub hits: u64,
    pub inserts: u64,
    pub evictions: u64,
    /// Colliding inserts turned away because the resident was hit since.
    pub kept: u64,
    /// Inserts refused because this CPU used its budget for the window.
    pub over_budget: u64,
    /// Kernel-private: start of the budget window and inserts in it.
    pub window_ns: u64,
    pub window_used: u64,
    /// Kernel-private: this CPU's hash key, drawn on first use, so a
    /// sender cannot aim its sources at one slot.
    pub seed: [u64; 4],
}

const _: () = assert!(core::mem::size_of::<PrefixCacheCpu>() == 88);

#[inline(always)]
fn word(a: &[u8], i: usize) -> u64 {
    u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64
}

/// The cache slot of an IPv4 address: multiply-shift hashing keyed by the
/// CPU's random odd multiplier (`PrefixCacheCpu::seed`).
#[inline(always)]
pub fn pcache_index4(addr: &[u8; 4], seed: &[u64; 4]) -> u32 {
    (word(addr, 0).wrapping_mul(seed[0]) >> (64 - PCACHE4_SLOTS.trailing_zeros())) as u32
}

/// The cache slot of an IPv6 address (multilinear: one key per word).
#[inline(always)]
pub fn pcache_index6(addr: &[u8; 16], seed: &[u64; 4]) -> u32 {
    let h = word(addr, 0)
        .wrapping_mul(seed[0])
        .wrapping_add(word(addr, 4).wrapping_mul(seed[1]))
        .wrapping_add(word(addr, 8).wrapping_mul(seed[2]))
        .wrapping_add(word(addr, 12).wrapping_mul(seed[3]));
    (h >> (64 - PCACHE6_SLOTS.trailing_zeros())) as u32
}

/// Slots per CPU (powers of two).
pub const PCACHE4_SLOTS: u32 = 4096;
pub const PCACHE6_SLOTS: u32 = 1024;
/// At most this many inserts per CPU per window: a spray through a broad
/// prefix can rewrite only a bounded share of the cache per second.
pub const PCACHE_BUDGET: u64 = 256;
pub const PCACHE_WINDOW_NS: u64 = 100_000_000;

/// Exact-match maps (checked first) and LPM tries for prefixes.
pub const BLOCK4: &str = "BLOCK4";
pub const BLOCK6: &str = "BLOCK6";
pub const BLOCK4_LPM: &str = "BLOCK4_LPM";
pub const BLOCK6_LPM: &str = "BLOCK6_LPM";
pub const BLOCK_STATS: &str = "BLOCK_STATS";
pub const PREFIX_CACHE4: &str = "PREFIX_CACHE4";
pub const PREFIX_CACHE6: &str = "PREFIX_CACHE6";
pub const PREFIX_CACHE_CPU: &str = "PREFIX_CACHE_CPU";
/// One u64 (an mmapable array, so userspace bumps it atomically): the
/// generation of the prefix tries.
pub const BLOCK_GEN: &str = "BLOCK_GEN";
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
