//! The event ring buffer, the reserve-failure counters and helpers shared
//! by every program that emits an event.

use agent_common::{maps, EventHeader, EventKind, EVENT_KIND_SLOTS, WIRE_VERSION};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(maps::EVENTS_BYTES, 0);

/// Reserve failures per event kind: events the kernel had to drop.
#[map]
pub static EVENT_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_KIND_SLOTS, 0);

#[inline(always)]
pub fn count_drop(kind: EventKind) {
    if let Some(slot) = EVENT_DROPS.get_ptr_mut(kind as u32) {
        // Per-CPU slot: no other writer, a plain add is exact.
        unsafe { *slot += 1 };
    }
}

/// Submit flags for a high-rate event: no wake-up until
/// `EVENTS_WAKEUP_BYTES` are unread, then a forced one. A lone event is
/// picked up by the agent's periodic drain (`EVENTS_POLL_MS`). Events a
/// response waits on (authentication) submit with 0 instead.
#[inline(always)]
pub fn batched() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= maps::EVENTS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u16,
        version: WIRE_VERSION,
        size: kind.record_size() as u32,
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        tgid,
        tid,
    }
}
