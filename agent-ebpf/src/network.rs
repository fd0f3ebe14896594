//! TCP connection lifecycle from `sock/inet_sock_set_state`.
//!
//! Only the SYN_SENT and LISTEN transitions run in the owning process's
//! context; the outcome (established, refused, accepted) arrives in softirq
//! on whatever task was running. So the owner is remembered at SYN_SENT
//! (per socket) and at LISTEN (per netns and port) and looked up when the
//! outcome is known.

use agent_common::{
    CloseFlowEvent, ConnEvent, EventKind, FlowKey, FlowStats, ListenKey, SockOwner, AF_INET,
    AF_INET6, CONN_NO_FLOW, CONN_OWNER_UNKNOWN, IPPROTO_TCP, OFFSET_UNKNOWN,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel,
    },
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
    flow::FLOWS,
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

#[map]
static CONNECTING: LruHashMap<u64, SockOwner> =
    LruHashMap::with_max_entries(agent_common::maps::CONNECTING_MAX_ENTRIES, 0);

#[map]
static LISTENERS: LruHashMap<ListenKey, SockOwner> =
    LruHashMap::with_max_entries(agent_common::maps::LISTENERS_MAX_ENTRIES, 0);

#[inline(always)]
fn current_owner() -> SockOwner {
    SockOwner {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn listen_key(skaddr: u64, port: u16, family: u16) -> ListenKey {
    let off = conf!(sock_net);
    let netns = if off == OFFSET_UNKNOWN {
        0
    } else {
        unsafe { bpf_probe_read_kernel((skaddr + off as u64) as *const u64).unwrap_or(0) }
    };
    ListenKey {
        netns,
        port,
        family,
        _pad: 0,
    }
}

/// Bytes of `sock/inet_sock_set_state`'s record (72 on kernels 4.16–6.18).
const SOCK_STATE_REC: usize = 72;

/// The tracepoint's record, copied with one helper call instead of one
/// per field (a dozen reads made the event paths ~800 ns). A field the
/// tracefs format puts past the copy is read from the context instead.
struct SockStateRec<'a> {
    ctx: &'a TracePointContext,
    buf: [u8; SOCK_STATE_REC],
}

impl<'a> SockStateRec<'a> {
    #[inline(always)]
    fn read(ctx: &'a TracePointContext) -> Option<Self> {
        let buf = unsafe { ctx.read_at::<[u8; SOCK_STATE_REC]>(0) }.ok()?;
        Some(SockStateRec { ctx, buf })
    }

    #[inline(always)]
    fn get<T: Copy>(&self, off: u32) -> Option<T> {
        let off = off as usize;
        if off + core::mem::size_of::<T>() <= SOCK_STATE_REC {
            Some(unsafe { (self.buf.as_ptr().add(off) as *const T).read_unaligned() })
        } else {
            unsafe { self.ctx.read_at::<T>(off) }.ok()
        }
    }
}

/// The transitions `try_sock_state` acts on.
#[inline(always)]
fn wanted(old: i32, new: i32) -> bool {
    match new {
        TCP_CLOSE => old != TCP_LISTEN,
        TCP_SYN_SENT | TCP_LISTEN => old == TCP_CLOSE,
        TCP_ESTABLISHED => old == TCP_SYN_SENT || old == TCP_SYN_RECV,
        _ => false,
    }
}

#[tracepoint]
pub fn vigil_sock_state(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_sock_state(&ctx) };
    0
}

unsafe fn try_sock_state(ctx: &TracePointContext) -> Result<(), i64> {
    // Six of a short connection's ten transitions matter to nobody: leave
    // on the states alone.
    let rec = SockStateRec::read(ctx).ok_or(0i64)?;
    let old: i32 = rec.get(conf!(tp_sk_oldstate)).ok_or(0i64)?;
    let new: i32 = rec.get(conf!(tp_sk_newstate)).ok_or(0i64)?;
    if !wanted(old, new) {
        return Ok(());
    }
    let protocol: u16 = rec.get(conf!(tp_sk_protocol)).ok_or(0i64)?;
    if protocol != IPPROTO_TCP as u16 {
        return Ok(());
    }
    let skaddr: u64 = rec.get(conf!(tp_sk_skaddr)).ok_or(0i64)?;
    if !crate::scope::sock_in_scope(skaddr) {
        return Ok(());
    }
    let agent = conf!(agent_tgid);

    let (kind, owner) = match (old, new) {
        (TCP_CLOSE, TCP_SYN_SENT) => {
            let owner = current_owner();
            if owner.tgid != agent {
                let _ = CONNECTING.insert(&skaddr, &owner, 0);
            }
            return Ok(());
        }
        (TCP_CLOSE, TCP_LISTEN) => {
            let owner = current_owner();
            crate::file::mark_netfacing(owner.tgid);
            let sport: u16 = rec.get(conf!(tp_sk_sport)).ok_or(0i64)?;
            let family: u16 = rec.get(conf!(tp_sk_family)).ok_or(0i64)?;
            let _ = LISTENERS.insert(&listen_key(skaddr, sport, family), &owner, 0);
            return Ok(());
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) | (TCP_SYN_SENT, TCP_CLOSE) => {
            let Some(owner) = (unsafe { CONNECTING.get(&skaddr) }).copied() else {
                // Not seen at SYN_SENT: the agent's own socket, or older than us.
                return Ok(());
            };
            let _ = CONNECTING.remove(&skaddr);
            if new == TCP_ESTABLISHED {
                crate::file::mark_netfacing(owner.tgid);
            }
            let kind = if new == TCP_ESTABLISHED {
                EventKind::Connect
            } else {
                EventKind::ConnectFailed
            };
            (kind, Some(owner))
        }
        (TCP_SYN_RECV, TCP_ESTABLISHED) => {
            let sport: u16 = rec.get(conf!(tp_sk_sport)).ok_or(0i64)?;
            let family: u16 = rec.get(conf!(tp_sk_family)).ok_or(0i64)?;
            let owner = unsafe { LISTENERS.get(&listen_key(skaddr, sport, family)) }.copied();
            (EventKind::Accept, owner)
        }
        (TCP_LISTEN, TCP_CLOSE) => return Ok(()),
        (_, TCP_CLOSE) => (EventKind::Close, None),
        _ => return Ok(()),
    };
    if let Some(o) = owner {
        if o.tgid == agent {
            return Ok(());
        }
    }

    if kind == EventKind::Close {
        let Some(mut entry) = EVENTS.reserve::<CloseFlowEvent>(0) else {
            count_drop(EventKind::Close);
            return Ok(());
        };
        let ev = entry.as_mut_ptr();
        unsafe {
            write_conn(
                &rec,
                &mut (*ev).conn,
                EventKind::CloseFlow,
                owner,
                protocol,
                old,
            );
            (*ev).key = flow_key(&(*ev).conn);
            match FLOWS.get(&(*ev).key) {
                Some(stats) => {
                    // Map value to ring buffer, not through the stack.
                    core::ptr::copy_nonoverlapping(stats, &mut (*ev).stats, 1);
                    let _ = FLOWS.remove(&(*ev).key);
                }
                None => {
                    (*ev).conn.flags |= CONN_NO_FLOW;
                    (*ev).stats = FlowStats::default();
                }
            }
        }
        entry.submit(crate::events::batched());
        return Ok(());
    }
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count_drop(kind);
        return Ok(());
    };
    unsafe { write_conn(&rec, &mut *entry.as_mut_ptr(), kind, owner, protocol, old) };
    entry.submit(crate::events::batched());
    Ok(())
}

#[inline(always)]
unsafe fn write_conn(
    rec: &SockStateRec,
    ev: &mut ConnEvent,
    kind: EventKind,
    owner: Option<SockOwner>,
    protocol: u16,
    old: i32,
) {
    let (tgid, uid, comm, flags) = match owner {
        Some(o) => (o.tgid, o.uid, o.comm, 0),
        None => (0, 0, [0u8; 16], CONN_OWNER_UNKNOWN),
    };
    ev.header = header(kind, tgid, 0);
    ev.uid = uid;
    ev.comm = comm;
    ev.flags = flags;
    ev.protocol = protocol;
    ev.old_state = old as u32;
    ev._pad = 0;
    ev.sport = rec.get(conf!(tp_sk_sport)).unwrap_or(0);
    ev.dport = rec.get(conf!(tp_sk_dport)).unwrap_or(0);
    let family: u16 = rec.get(conf!(tp_sk_family)).unwrap_or(0);
    ev.family = family;
    ev.saddr = [0; 16];
    ev.daddr = [0; 16];
    if family == AF_INET {
        let s: [u8; 4] = rec.get(conf!(tp_sk_saddr)).unwrap_or([0; 4]);
        let d: [u8; 4] = rec.get(conf!(tp_sk_daddr)).unwrap_or([0; 4]);
        ev.saddr = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        ev.daddr = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    } else if family == AF_INET6 {
        ev.saddr = rec.get(conf!(tp_sk_saddr_v6)).unwrap_or([0; 16]);
        ev.daddr = rec.get(conf!(tp_sk_daddr_v6)).unwrap_or([0; 16]);
    }
}

/// The flow accounting's key for a TCP socket: a dual-stack socket
/// talking IPv4 (`::ffff:a.b.c.d`) sends IPv4 packets.
#[inline(always)]
fn flow_key(c: &ConnEvent) -> FlowKey {
    let mut key = FlowKey {
        local_addr: c.saddr,
        remote_addr: c.daddr,
        local_port: c.sport,
        remote_port: c.dport,
        proto: IPPROTO_TCP,
        ip_version: if c.family == AF_INET { 4 } else { 6 },
        _pad: [0; 2],
    };
    if c.family == AF_INET6 && v4_mapped(&c.saddr) && v4_mapped(&c.daddr) {
        to_v4(&mut key.local_addr);
        to_v4(&mut key.remote_addr);
        key.ip_version = 4;
    }
    key
}

/// `::ffff:a.b.c.d`, compared word by word (a slice comparison would call
/// memcmp, which BPF lacks).
#[inline(always)]
fn v4_mapped(a: &[u8; 16]) -> bool {
    let w = a.as_ptr() as *const u32;
    let (w0, w1, w2) = unsafe {
        (
            w.read_unaligned(),
            w.add(1).read_unaligned(),
            w.add(2).read_unaligned(),
        )
    };
    w0 == 0 && w1 == 0 && w2 == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// `::ffff:a.b.c.d` to the flow key's IPv4 form: a.b.c.d, then zeros.
#[inline(always)]
fn to_v4(a: &mut [u8; 16]) {
    let w = a.as_mut_ptr() as *mut u32;
    unsafe {
        w.write_unaligned(w.add(3).read_unaligned());
        w.add(1).write_unaligned(0);
        w.add(2).write_unaligned(0);
        w.add(3).write_unaligned(0);
    }
}

/// `tcp/tcp_send_reset` with no socket: an inbound SYN (or stray segment)
/// to a port nobody listens on, the footprint of a port scan. The tracepoint
/// reverses the packet's tuple, so `saddr` is this host.
#[tracepoint]
pub fn vigil_tcp_reset(ctx: TracePointContext) -> u32 {
    let _ = unsafe { try_tcp_reset(&ctx) };
    0
}

unsafe fn try_tcp_reset(ctx: &TracePointContext) -> Result<(), i64> {
    let skaddr: u64 = unsafe { ctx.read_at(conf!(tp_rst_skaddr) as usize)? };
    if skaddr != 0 {
        return Ok(());
    }
    let skb: u64 = unsafe { ctx.read_at(conf!(tp_rst_skbaddr) as usize)? };
    if !crate::scope::skb_in_scope(skb) {
        return Ok(());
    }
    let s_off = conf!(tp_rst_saddr) as usize;
    let d_off = conf!(tp_rst_daddr) as usize;
    let family: u16 = unsafe { ctx.read_at(s_off)? };
    let Some(mut entry) = EVENTS.reserve::<ConnEvent>(0) else {
        count_drop(EventKind::Refused);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EventKind::Refused, 0, 0);
        (*ev).uid = 0;
        (*ev).comm = [0; 16];
        (*ev).flags = CONN_OWNER_UNKNOWN;
        (*ev).protocol = IPPROTO_TCP as u16;
        (*ev).old_state = 0;
        (*ev)._pad = 0;
        (*ev).family = family;
        (*ev).sport = u16::from_be(ctx.read_at::<u16>(s_off + 2).unwrap_or(0));
        (*ev).dport = u16::from_be(ctx.read_at::<u16>(d_off + 2).unwrap_or(0));
        (*ev).saddr = [0; 16];
        (*ev).daddr = [0; 16];
        if family == AF_INET {
            let s: [u8; 4] = ctx.read_at(s_off + 4).unwrap_or([0; 4]);
            let d: [u8; 4] = ctx.read_at(d_off + 4).unwrap_or([0; 4]);
            (*ev).saddr = [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            (*ev).daddr = [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        } else {
            (*ev).saddr = ctx.read_at(s_off + 8).unwrap_or([0; 16]);
            (*ev).daddr = ctx.read_at(d_off + 8).unwrap_or([0; 16]);
        }
    }
    entry.submit(crate::events::batched());
    Ok(())
}
