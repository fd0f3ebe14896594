//! The event ring buffer, the reserve-failure counters and helpers shared
//! by every program that emits an event.

use agent_common::{maps, EventHeader, EventKind, EVENT_KIND_SLOTS, WIRE_VERSION};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
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

/// `bpf_ktime_get_ns()` of the last wake-up `batched` asked for (one slot,
/// shared: a racing write only moves it by a few ns).
#[map]
static LAST_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Written by the agent: until when it polls every `EVENTS_POLL_MS`.
#[map]
static AGENT_BUSY: Array<u64> = Array::with_max_entries(1, 0);

/// Submit flags for a high-rate event. A forced wake-up once
/// `EVENTS_WAKEUP_BYTES` are unread. Otherwise no wake-up while the agent
/// says it is polling every `EVENTS_POLL_MS` (`AGENT_BUSY`), and an event
/// that finds the ring empty of an idle agent wakes it, at most once per
/// `EVENTS_POLL_MS` (a wake-up is an interrupt on a virtual machine, paid
/// here). An idle agent thus sleeps: its polling had woken it 200 times a
/// second, which cost a UDP flood 8 % of its packets on this VM. Events a
/// response waits on (authentication) submit with 0 instead.
#[inline(always)]
pub fn batched() -> u64 {
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if unread >= maps::EVENTS_WAKEUP_BYTES {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    if unread > maps::EVENTS_LONE_BYTES {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(&busy_until) = AGENT_BUSY.get(0) {
        if now < busy_until {
            return BPF_RB_NO_WAKEUP as u64;
        }
    }
    let Some(last) = LAST_WAKE.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP as u64;
    };
    if now.wrapping_sub(unsafe { *last }) < maps::EVENTS_POLL_MS * 1_000_000 {
        return BPF_RB_NO_WAKEUP as u64;
    }
    unsafe { *last = now };
    BPF_RB_FORCE_WAKEUP as u64
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
