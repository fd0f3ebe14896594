//! Vigil's enforcement programs, a separate object from the observation
//! programs so the CLI can load it alone: an XDP program dropping inbound
//! packets from blocked sources and a cgroup_skb egress program dropping
//! outbound packets to blocked destinations. Maps are pinned by name; each
//! entry's expiry is checked here, so blocks lapse even with no agent.
//! A packet is dropped when any live entry for its direction covers its
//! address (see `agent_common::enforce`).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use agent_common::enforce::{
    BlockValue, BLOCK_EGRESS, BLOCK_INGRESS, BLOCK_MAX_ENTRIES, LPM_WALK_V4, LPM_WALK_V6,
    STAT_IN_BYTES, STAT_IN_PACKETS, STAT_OUT_BYTES, STAT_OUT_PACKETS, STAT_SLOTS,
};
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_NO_PREALLOC},
    helpers::generated::bpf_ktime_get_ns,
    macros::{cgroup_skb, classifier, map, xdp},
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuArray},
    programs::{sk_buff::SkBuff, SkBuffContext, TcContext, XdpContext},
};

#[map]
static BLOCK4: HashMap<[u8; 4], BlockValue> = HashMap::pinned(BLOCK_MAX_ENTRIES, 0);
#[map]
static BLOCK6: HashMap<[u8; 16], BlockValue> = HashMap::pinned(BLOCK_MAX_ENTRIES, 0);
#[map]
static BLOCK4_LPM: LpmTrie<[u8; 4], BlockValue> =
    LpmTrie::pinned(BLOCK_MAX_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK6_LPM: LpmTrie<[u8; 16], BlockValue> =
    LpmTrie::pinned(BLOCK_MAX_ENTRIES, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_STATS: PerCpuArray<u64> = PerCpuArray::pinned(STAT_SLOTS, 0);

#[inline(always)]
fn add(p: *mut u64, v: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

#[inline(always)]
fn stat(slot: u32, v: u64) {
    if let Some(p) = BLOCK_STATS.get_ptr_mut(slot) {
        unsafe { *p += v };
    }
}

/// Counts the drop on the entry if it is live for `dir`. The clock is read
/// only for a matching entry, so the common pass path never pays for it.
#[inline(always)]
fn enforce(v: *mut BlockValue, dir: u32, len: u64) -> bool {
    let live = unsafe { (*v).flags & dir != 0 && bpf_ktime_get_ns() < (*v).expires_ns };
    if live {
        unsafe {
            add(&raw mut (*v).packets, 1);
            add(&raw mut (*v).bytes, len);
        }
    }
    live
}

/// Walks the trie from the longest prefix covering `addr` to shorter ones
/// until an entry live for `dir` is found. A lookup whose key is shorter
/// than the entry it last returned yields the longest entry of at most that
/// length, so each step is strictly shorter and `steps` (one per possible
/// length) bounds the walk. The pass path with no covering entry, and a
/// drop by the longest match, still cost one lookup.
#[inline(always)]
fn walk<K: Copy>(
    trie: &LpmTrie<K, BlockValue>,
    addr: K,
    bits: u32,
    steps: u32,
    dir: u32,
    len: u64,
) -> bool {
    let mut key = Key::new(bits, addr);
    for _ in 0..steps {
        let v = match trie.get(&key) {
            Some(v) => v as *const BlockValue as *mut BlockValue,
            None => return false,
        };
        if enforce(v, dir, len) {
            return true;
        }
        // min() keeps the walk shrinking even if a value's length were wrong.
        let found = unsafe { (*v).prefix_len }.min(key.prefix_len);
        if found == 0 {
            return false;
        }
        key.prefix_len = found - 1;
    }
    false
}

/// The exact entry first (an expired or other-direction one falls through),
/// then every covering prefix.
#[inline(always)]
fn blocked4(addr: [u8; 4], dir: u32, len: u64) -> bool {
    if let Some(v) = BLOCK4.get_ptr_mut(&addr) {
        if enforce(v, dir, len) {
            return true;
        }
    }
    walk(&BLOCK4_LPM, addr, 32, LPM_WALK_V4, dir, len)
}

#[inline(always)]
fn blocked6(addr: [u8; 16], dir: u32, len: u64) -> bool {
    if let Some(v) = BLOCK6.get_ptr_mut(&addr) {
        if enforce(v, dir, len) {
            return true;
        }
    }
    walk(&BLOCK6_LPM, addr, 128, LPM_WALK_V6, dir, len)
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *const T)
}

#[xdp]
pub fn vigil_xdp_block(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Some(true) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

fn try_xdp(ctx: &XdpContext) -> Option<bool> {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let mut proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12)? });
    let mut l3 = 14;
    if proto == 0x8100 || proto == 0x88a8 {
        proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 16)? });
        l3 = 18;
    }
    let hit = match proto {
        0x0800 => blocked4(
            unsafe { *ptr_at::<[u8; 4]>(ctx, l3 + 12)? },
            BLOCK_INGRESS,
            len,
        ),
        0x86dd => blocked6(
            unsafe { *ptr_at::<[u8; 16]>(ctx, l3 + 8)? },
            BLOCK_INGRESS,
            len,
        ),
        _ => false,
    };
    if hit {
        stat(STAT_IN_PACKETS, 1);
        stat(STAT_IN_BYTES, len);
    }
    Some(hit)
}

#[cgroup_skb(egress)]
pub fn vigil_egress_block(ctx: SkBuffContext) -> i32 {
    match try_egress(&ctx) {
        Some(true) => 0,
        _ => 1,
    }
}

fn try_egress(ctx: &SkBuffContext) -> Option<bool> {
    egress_at(&ctx.skb, 0)
}

/// The egress check on the IP header at `l3` (0 under cgroup_skb, after
/// the Ethernet header under TC).
#[inline(always)]
fn egress_at(ctx: &SkBuff, l3: usize) -> Option<bool> {
    let len = ctx.len() as u64;
    let b0: u8 = ctx.load(l3).ok()?;
    let hit = match b0 >> 4 {
        4 => blocked4(ctx.load::<[u8; 4]>(l3 + 16).ok()?, BLOCK_EGRESS, len),
        6 => blocked6(ctx.load::<[u8; 16]>(l3 + 24).ok()?, BLOCK_EGRESS, len),
        _ => false,
    };
    if hit {
        stat(STAT_OUT_PACKETS, 1);
        stat(STAT_OUT_BYTES, len);
    }
    Some(hit)
}

/// The same egress check at TC on each interface of the agent's own
/// network namespace (`scope.netns: self`), where a cgroup program would
/// see every namespace's sockets.
#[classifier]
pub fn vigil_tc_egress_block(ctx: TcContext) -> i32 {
    match try_tc_egress(&ctx) {
        Some(true) => TC_ACT_SHOT,
        _ => TC_ACT_OK,
    }
}

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

fn try_tc_egress(ctx: &TcContext) -> Option<bool> {
    let proto = u16::from_be(ctx.load::<u16>(12).ok()?);
    match proto {
        0x0800 | 0x86dd => egress_at(&ctx.skb, 14),
        0x8100 | 0x88a8 => egress_at(&ctx.skb, 18),
        _ => Some(false),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// Baseline for the benchmark only (never attached): the cheapest possible
/// XDP program, to put the blocklist's per-packet cost in proportion.
#[xdp]
pub fn vigil_xdp_bare_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
