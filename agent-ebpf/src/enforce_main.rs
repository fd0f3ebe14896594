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
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use agent_common::enforce::{
    pcache_index4, pcache_index6, BlockValue, PrefixCacheCpu, PrefixSlot, BLOCK_EGRESS,
    BLOCK_INGRESS, BLOCK_MAX_ENTRIES, LPM_WALK_V4, LPM_WALK_V6, PCACHE4_SLOTS, PCACHE6_SLOTS,
    PCACHE_BUDGET, PCACHE_WINDOW_NS, STAT_IN_BYTES, STAT_IN_PACKETS, STAT_OUT_BYTES,
    STAT_OUT_PACKETS, STAT_SLOTS,
};
use aya_ebpf::{
    bindings::{xdp_action, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{cgroup_skb, classifier, map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
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
#[map]
static PREFIX_CACHE4: PerCpuArray<PrefixSlot> = PerCpuArray::pinned(PCACHE4_SLOTS, 0);
#[map]
static PREFIX_CACHE6: PerCpuArray<PrefixSlot> = PerCpuArray::pinned(PCACHE6_SLOTS, 0);
#[map]
static PREFIX_CACHE_CPU: PerCpuArray<PrefixCacheCpu> = PerCpuArray::pinned(1, 0);
#[map]
static BLOCK_GEN: Array<u64> = Array::pinned(1, BPF_F_MMAPABLE);

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

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Counts the drop on the entry if it is live for `dir`. The clock is read
/// only for a matching entry, so the common pass path never pays for it.
#[inline(always)]
fn enforce(v: *mut BlockValue, dir: u32, len: u64) -> bool {
    let live = unsafe { (*v).flags & dir != 0 && now() < (*v).expires_ns };
    if live {
        unsafe {
            add(&raw mut (*v).packets, 1);
            add(&raw mut (*v).bytes, len);
        }
    }
    live
}

/// One address family: its maps and how its addresses sit in a cache slot.
trait Family: Copy + 'static {
    const BITS: u32;
    const STEPS: u32;
    fn exact() -> &'static HashMap<Self, BlockValue>;
    fn trie() -> &'static LpmTrie<Self, BlockValue>;
    fn cache() -> &'static PerCpuArray<PrefixSlot>;
    /// The address's slot, keyed by the CPU's random odd multipliers.
    fn slot_index(&self, seed: &[u64; 4]) -> u32;
    fn is(&self, slot: &[u8; 16]) -> bool;
    fn store(&self, slot: &mut [u8; 16]);
    fn from_slot(slot: &[u8; 16]) -> Self;
}

#[inline(always)]
fn word(a: &[u8], i: usize) -> u64 {
    u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64
}

impl Family for [u8; 4] {
    const BITS: u32 = 32;
    const STEPS: u32 = LPM_WALK_V4;
    fn exact() -> &'static HashMap<Self, BlockValue> {
        &BLOCK4
    }
    fn trie() -> &'static LpmTrie<Self, BlockValue> {
        &BLOCK4_LPM
    }
    fn cache() -> &'static PerCpuArray<PrefixSlot> {
        &PREFIX_CACHE4
    }
    #[inline(always)]
    fn slot_index(&self, seed: &[u64; 4]) -> u32 {
        pcache_index4(self, seed)
    }
    #[inline(always)]
    fn is(&self, slot: &[u8; 16]) -> bool {
        word(self, 0) == word(slot, 0)
    }
    #[inline(always)]
    fn store(&self, slot: &mut [u8; 16]) {
        slot[..4].copy_from_slice(self);
    }
    #[inline(always)]
    fn from_slot(slot: &[u8; 16]) -> Self {
        [slot[0], slot[1], slot[2], slot[3]]
    }
}

impl Family for [u8; 16] {
    const BITS: u32 = 128;
    const STEPS: u32 = LPM_WALK_V6;
    fn exact() -> &'static HashMap<Self, BlockValue> {
        &BLOCK6
    }
    fn trie() -> &'static LpmTrie<Self, BlockValue> {
        &BLOCK6_LPM
    }
    fn cache() -> &'static PerCpuArray<PrefixSlot> {
        &PREFIX_CACHE6
    }
    #[inline(always)]
    fn slot_index(&self, seed: &[u64; 4]) -> u32 {
        pcache_index6(self, seed)
    }
    #[inline(always)]
    fn is(&self, slot: &[u8; 16]) -> bool {
        word(self, 0) == word(slot, 0)
            && word(self, 4) == word(slot, 4)
            && word(self, 8) == word(slot, 8)
            && word(self, 12) == word(slot, 12)
    }
    #[inline(always)]
    fn store(&self, slot: &mut [u8; 16]) {
        *slot = *self;
    }
    #[inline(always)]
    fn from_slot(slot: &[u8; 16]) -> Self {
        *slot
    }
}

/// Walks the trie from the longest prefix covering `addr` to shorter ones
/// until an entry live for `dir` is found, and returns it. A lookup whose
/// key is shorter than the entry it last returned yields the longest entry
/// of at most that length, so each step is strictly shorter and `STEPS`
/// (one per possible length) bounds the walk. The pass path with no
/// covering entry, and a drop by the longest match, still cost one lookup.
#[inline(always)]
fn walk<A: Family>(addr: A, dir: u32, len: u64) -> Option<*mut BlockValue> {
    let mut key = Key::new(A::BITS, addr);
    for _ in 0..A::STEPS {
        let v = A::trie().get(&key)? as *const BlockValue as *mut BlockValue;
        if enforce(v, dir, len) {
            return Some(v);
        }
        // min() keeps the walk shrinking even if a value's length were wrong.
        let found = unsafe { (*v).prefix_len }.min(key.prefix_len);
        if found == 0 {
            return None;
        }
        key.prefix_len = found - 1;
    }
    None
}

/// The generation of the prefix tries. Read before the walk: a verdict
/// cached from a walk that saw an entry carries a generation older than the
/// bump userspace makes after removing or changing that entry.
#[inline(always)]
fn generation() -> u64 {
    match BLOCK_GEN.get_ptr(0) {
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

#[inline(always)]
fn random_odd() -> u64 {
    let (hi, lo) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    ((hi as u64) << 32) | lo as u64 | 1
}

/// This CPU's cache slot for `addr` (and its counters).
#[inline(always)]
fn cache_slot<A: Family>(addr: &A) -> Option<(*mut PrefixCacheCpu, *mut PrefixSlot)> {
    let cpu = PREFIX_CACHE_CPU.get_ptr_mut(0)?;
    let seed = unsafe { &mut (*cpu).seed };
    if seed[0] == 0 {
        for s in seed.iter_mut() {
            *s = random_odd();
        }
    }
    let slot = A::cache().get_ptr_mut(addr.slot_index(seed))?;
    Some((cpu, slot))
}

/// A cached drop: the slot holds this address, for this direction, from
/// the current generation, and the prefix entry it came from is unexpired.
#[inline(always)]
fn cached<A: Family>(s: *mut PrefixSlot, addr: &A, gen: u64, dir: u32, len: u64) -> bool {
    unsafe {
        // The egress program may run preemptible and be interrupted by XDP
        // rewriting this very slot: read the verdict between two equal,
        // even sequence numbers, or not at all.
        let seq = read_volatile(&raw const (*s).seq);
        if seq & 1 != 0 {
            return false;
        }
        compiler_fence(Ordering::SeqCst);
        let matches = (*s).generation == gen && (*s).flags & dir != 0 && addr.is(&(*s).addr);
        let expires = (*s).expires_ns;
        compiler_fence(Ordering::SeqCst);
        if !matches || read_volatile(&raw const (*s).seq) != seq {
            return false;
        }
        if now() >= expires {
            return false;
        }
        (*s).packets += 1;
        (*s).bytes += len;
        (*s).referenced = 1;
    }
    true
}

/// Remembers that `addr` was dropped through the prefix entry `v`. A slot
/// held by another live source that was hit since the last collision is
/// kept (its mark cleared); each CPU inserts at most `PCACHE_BUDGET` new
/// sources per window. Counts the slot's drops into its own prefix entry
/// before reusing it. Called from XDP only: in softirq, never interrupted
/// by another writer on its CPU, so one writer per slot at a time, which
/// the sequence number needs.
#[inline(always)]
fn remember<A: Family>(
    cpu: *mut PrefixCacheCpu,
    s: *mut PrefixSlot,
    addr: &A,
    gen: u64,
    v: *const BlockValue,
) {
    let t = now();
    unsafe {
        let same = addr.is(&(*s).addr);
        let resident = !same && (*s).generation == gen && (*s).flags != 0 && t < (*s).expires_ns;
        if resident && (*s).referenced != 0 {
            (*s).referenced = 0;
            (*cpu).kept += 1;
            return;
        }
        if !same {
            if t.wrapping_sub((*cpu).window_ns) >= PCACHE_WINDOW_NS {
                (*cpu).window_ns = t;
                (*cpu).window_used = 0;
            }
            if (*cpu).window_used >= PCACHE_BUDGET {
                (*cpu).over_budget += 1;
                return;
            }
            (*cpu).window_used += 1;
        }
        if resident {
            (*cpu).evictions += 1;
        }
        flush::<A>(s);
        let seq = (*s).seq;
        write_volatile(&raw mut (*s).seq, seq | 1);
        compiler_fence(Ordering::SeqCst);
        (*s).generation = gen;
        (*s).expires_ns = (*v).expires_ns;
        (*s).flags = (*v).flags;
        (*s).prefix_len = (*v).prefix_len;
        (*s).referenced = 0;
        addr.store(&mut (*s).addr);
        compiler_fence(Ordering::SeqCst);
        write_volatile(&raw mut (*s).seq, (seq | 1).wrapping_add(1));
        (*cpu).inserts += 1;
    }
}

/// Adds the drops a slot served to the prefix entry they belong to, if it
/// still exists (a lookup at the entry's own length returns it only then).
#[inline(always)]
fn flush<A: Family>(s: *mut PrefixSlot) {
    unsafe {
        if (*s).packets == 0 {
            return;
        }
        let len = (*s).prefix_len.min(A::BITS);
        let key = Key::new(len, A::from_slot(&(*s).addr));
        if let Some(v) = A::trie().get(&key) {
            let v = v as *const BlockValue as *mut BlockValue;
            if (*v).prefix_len == len {
                add(&raw mut (*v).packets, (*s).packets);
                add(&raw mut (*v).bytes, (*s).bytes);
            }
        }
        (*s).packets = 0;
        (*s).bytes = 0;
    }
}

/// This CPU's prefix cache first (a repeat source dropped through a prefix
/// costs no hash lookup and no walk; any live covering entry may take the
/// credit for a drop), then the exact entry (an expired or other-direction
/// one falls through), then every covering prefix.
#[inline(always)]
fn blocked<A: Family>(addr: A, dir: u32, len: u64) -> bool {
    let gen = generation();
    let slot = cache_slot(&addr);
    if let Some((cpu, s)) = slot {
        if cached(s, &addr, gen, dir, len) {
            unsafe { (*cpu).hits += 1 };
            return true;
        }
    }
    if let Some(v) = A::exact().get_ptr_mut(&addr) {
        if enforce(v, dir, len) {
            return true;
        }
    }
    match walk(addr, dir, len) {
        Some(v) => {
            // Only XDP fills the cache (see `remember`); egress reads it.
            if let (Some((cpu, s)), true) = (slot, dir == BLOCK_INGRESS) {
                remember(cpu, s, &addr, gen, v);
            }
            true
        }
        None => false,
    }
}

#[inline(always)]
fn blocked4(addr: [u8; 4], dir: u32, len: u64) -> bool {
    blocked(addr, dir, len)
}

#[inline(always)]
fn blocked6(addr: [u8; 16], dir: u32, len: u64) -> bool {
    blocked(addr, dir, len)
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
