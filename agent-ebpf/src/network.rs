//! TCP connection lifecycle from `sock/inet_sock_set_state`.
//!
//! Only the SYN_SENT and LISTEN transitions run in the owning process's
//! context; the outcome (established, refused, accepted) arrives in softirq
//! on whatever task was running. So the owner is remembered at SYN_SENT
//! (per socket) and at LISTEN (per netns and port) and looked up when the
//! outcome is known.

use core::{ffi::c_void, mem::MaybeUninit};

use agent_common::{
    CloseFlowEvent, ConnEvent, EventKind, FlowKey, ListenKey, SockOwner, AF_INET, AF_INET6,
    CONN_NO_FLOW, CONN_OWNER_UNKNOWN, IPPROTO_TCP, OFFSET_UNKNOWN,
};
use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, generated},
    macros::{btf_tracepoint, map, tracepoint},
    maps::LruHashMap,
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};

use crate::{
    config::conf,
    events::{count_drop, header, EVENTS},
    flow::{current_owner, FLOWS},
    mem,
    process::read_field,
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

/// A socket's fields at a state change: what `try_sock_state` reads.
#[derive(Clone, Copy)]
enum Field {
    Sport,
    Dport,
    Family,
    Saddr,
    Daddr,
    SaddrV6,
    DaddrV6,
}

/// Where a state change's fields come from: the tracepoint's record, or
/// the socket itself under `tp_btf`.
trait SockFields {
    /// Ports are in network order in the socket, in host order in the
    /// record (addresses are in network order in both).
    const PORTS_BE: bool;
    /// A field as stored (ports through [`port`]).
    fn get<T: Copy>(&self, f: Field) -> Option<T>;
}

/// A copy of the first `N` bytes at `base`, with one helper call instead
/// of one per field (a dozen reads made the event paths ~800 ns); a field
/// past the copy is read on its own. Read in place and borrowed: a byte
/// array moved by value is copied byte by byte.
#[repr(C, align(8))]
struct Copied<const N: usize> {
    buf: [u8; N],
    base: u64,
}

impl<const N: usize> Copied<N> {
    #[inline(always)]
    fn read(slot: &mut MaybeUninit<Self>, base: u64) -> Option<&Self> {
        let p = slot.as_mut_ptr();
        // SAFETY: the helper writes all N bytes or fails; `base` is then set.
        unsafe {
            let rc = generated::bpf_probe_read_kernel(
                (&raw mut (*p).buf).cast(),
                N as u32,
                base as *const c_void,
            );
            if rc != 0 {
                return None;
            }
            (&raw mut (*p).base).write(base);
            Some(&*p)
        }
    }

    #[inline(always)]
    fn at<T: Copy>(&self, off: u32) -> Option<T> {
        if off == OFFSET_UNKNOWN {
            return None;
        }
        let off = off as usize;
        if off + core::mem::size_of::<T>() <= N {
            Some(unsafe { (self.buf.as_ptr().add(off) as *const T).read_unaligned() })
        } else {
            unsafe { bpf_probe_read_kernel((self.base + off as u64) as *const T) }.ok()
        }
    }
}

/// Bytes of `sock/inet_sock_set_state`'s record (72 on kernels 4.16–6.18).
const SOCK_STATE_REC: usize = 72;

/// Tier 2: the tracepoint's record, at offsets tracefs gave the loader.
impl SockFields for Copied<SOCK_STATE_REC> {
    const PORTS_BE: bool = false;

    #[inline(always)]
    fn get<T: Copy>(&self, f: Field) -> Option<T> {
        self.at(match f {
            Field::Sport => conf!(tp_sk_sport),
            Field::Dport => conf!(tp_sk_dport),
            Field::Family => conf!(tp_sk_family),
            Field::Saddr => conf!(tp_sk_saddr),
            Field::Daddr => conf!(tp_sk_daddr),
            Field::SaddrV6 => conf!(tp_sk_saddr_v6),
            Field::DaddrV6 => conf!(tp_sk_daddr_v6),
        })
    }
}

/// Bytes of `struct sock_common` copied under `tp_btf`: up to and with
/// both IPv6 addresses (88 on 6.x); the `inet_sock` fields, far past it,
/// are read alone.
const SOCK_COMMON_COPY: usize = 88;

/// Tier 1: the socket, at offsets kernel BTF gave the loader: the fields
/// the tracepoint builds its record from, its ports in network order.
struct Sock<'a>(&'a Copied<SOCK_COMMON_COPY>);

impl SockFields for Sock<'_> {
    const PORTS_BE: bool = true;

    #[inline(always)]
    fn get<T: Copy>(&self, f: Field) -> Option<T> {
        self.0.at(match f {
            Field::Sport => conf!(sk_sport),
            Field::Dport => conf!(sk_dport),
            Field::Family => conf!(sk_family),
            Field::Saddr => conf!(sk_saddr),
            Field::Daddr => conf!(sk_daddr),
            Field::SaddrV6 => conf!(sk_v6_rcv_saddr),
            Field::DaddrV6 => conf!(sk_v6_daddr),
        })
    }
}

/// A port in host order, from either source.
#[inline(always)]
fn port<S: SockFields>(src: &S, f: Field) -> Option<u16> {
    let p: u16 = src.get(f)?;
    Some(if S::PORTS_BE { u16::from_be(p) } else { p })
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

/// Tier 1: `tp_btf/inet_sock_set_state(sk, oldstate, newstate)`. No
/// record is built for us: the classic tracepoint fills a perf buffer
/// with every field before the program runs, on all ten transitions of a
/// connection.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn vigil_sock_state_btf(ctx: BtfTracePointContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    // Six of a short connection's ten transitions matter to nobody: leave
    // on the states alone, before reading anything.
    if !wanted(old, new) {
        return 0;
    }
    let protocol = unsafe { read_field::<u16>(sk, conf!(sk_protocol)) };
    if protocol != Some(IPPROTO_TCP as u16) {
        return 0;
    }
    let mut slot = MaybeUninit::uninit();
    if let Some(c) = Copied::<SOCK_COMMON_COPY>::read(&mut slot, sk) {
        let _ = unsafe { try_sock_state(&Sock(c), sk, old, new) };
    }
    0
}

/// Tier 2: the plain tracepoint.
#[tracepoint]
pub fn vigil_sock_state(ctx: TracePointContext) -> u32 {
    let mut slot = MaybeUninit::uninit();
    let Some(rec) = Copied::<SOCK_STATE_REC>::read(&mut slot, ctx.as_ptr() as u64) else {
        return 0;
    };
    let (Some(old), Some(new)) = (
        rec.at::<i32>(conf!(tp_sk_oldstate)),
        rec.at::<i32>(conf!(tp_sk_newstate)),
    ) else {
        return 0;
    };
    if !wanted(old, new) || rec.at::<u16>(conf!(tp_sk_protocol)) != Some(IPPROTO_TCP as u16) {
        return 0;
    }
    if let Some(skaddr) = rec.at::<u64>(conf!(tp_sk_skaddr)) {
        let _ = unsafe { try_sock_state(rec, skaddr, old, new) };
    }
    0
}

/// A wanted TCP transition of socket `skaddr`.
#[inline(always)]
unsafe fn try_sock_state<S: SockFields>(
    rec: &S,
    skaddr: u64,
    old: i32,
    new: i32,
) -> Result<(), i64> {
    let protocol = IPPROTO_TCP as u16;
    if !crate::scope::sock_in_scope(skaddr) {
        return Ok(());
    }
    let agent = conf!(agent_tgid);

    // The owner is copied out of its map (before its entry is deleted, or
    // reused) and borrowed from here. A by-value `Option<SockOwner>` let
    // LLVM copy its undefined payload on the `None` path, which the
    // verifier refuses.
    let mut held = core::mem::MaybeUninit::<SockOwner>::uninit();
    let (kind, owner): (EventKind, Option<&SockOwner>) = match (old, new) {
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
            let sport = port(rec, Field::Sport).ok_or(0i64)?;
            let family: u16 = rec.get(Field::Family).ok_or(0i64)?;
            let _ = LISTENERS.insert(&listen_key(skaddr, sport, family), &owner, 0);
            return Ok(());
        }
        (TCP_SYN_SENT, TCP_ESTABLISHED) | (TCP_SYN_SENT, TCP_CLOSE) => {
            let Some(connecting) = (unsafe { CONNECTING.get(&skaddr) }) else {
                // Not seen at SYN_SENT: the agent's own socket, or older than us.
                return Ok(());
            };
            let owner: &SockOwner = held.write(*connecting);
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
            let sport = port(rec, Field::Sport).ok_or(0i64)?;
            let family: u16 = rec.get(Field::Family).ok_or(0i64)?;
            // Copied now: an LRU map reuses a freed element at once, so a
            // listen() flood could rewrite it under a borrowed pointer.
            let owner = unsafe { LISTENERS.get(&listen_key(skaddr, sport, family)) }
                .map(|o| &*held.write(*o));
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
                rec,
                &raw mut (*ev).conn,
                EventKind::CloseFlow,
                owner,
                protocol,
                old,
            );
            write_flow_key(&raw const (*ev).conn, &raw mut (*ev).key);
            match FLOWS.get(&(*ev).key) {
                Some(stats) => {
                    // Map value to ring buffer, not through the stack.
                    core::ptr::copy_nonoverlapping(stats, &mut (*ev).stats, 1);
                    let _ = FLOWS.remove(&(*ev).key);
                }
                None => {
                    (*ev).conn.flags |= CONN_NO_FLOW;
                    mem::zero(&raw mut (*ev).stats);
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
    unsafe { write_conn(rec, entry.as_mut_ptr(), kind, owner, protocol, old) };
    entry.submit(crate::events::batched());
    Ok(())
}

// `mem::store16` and `mem::load16` need 4-aligned fields.
const _: () = assert!(
    core::mem::align_of::<SockOwner>() >= 4 && core::mem::offset_of!(SockOwner, comm) % 4 == 0
);
const _: () = assert!(
    core::mem::align_of::<ConnEvent>() >= 4
        && core::mem::offset_of!(ConnEvent, saddr) % 4 == 0
        && core::mem::offset_of!(ConnEvent, daddr) % 4 == 0
        && core::mem::offset_of!(ConnEvent, comm) % 4 == 0
);

#[inline(always)]
unsafe fn write_conn<S: SockFields>(
    rec: &S,
    ev: *mut ConnEvent,
    kind: EventKind,
    owner: Option<&SockOwner>,
    protocol: u16,
    old: i32,
) {
    let family: u16 = rec.get(Field::Family).unwrap_or(0);
    let (saddr, daddr) = if family == AF_INET {
        let s: u32 = rec.get(Field::Saddr).unwrap_or(0);
        let d: u32 = rec.get(Field::Daddr).unwrap_or(0);
        ([s, 0, 0, 0], [d, 0, 0, 0])
    } else if family == AF_INET6 {
        (
            rec.get(Field::SaddrV6).unwrap_or([0; 4]),
            rec.get(Field::DaddrV6).unwrap_or([0; 4]),
        )
    } else {
        ([0; 4], [0; 4])
    };
    // SAFETY: `ev` is a reserved ring record; every field is written.
    unsafe {
        match owner {
            Some(o) => {
                (*ev).header = header(kind, o.tgid, 0);
                (*ev).uid = o.uid;
                mem::store16(&raw mut (*ev).comm, mem::load16(&o.comm));
                (*ev).flags = 0;
            }
            None => {
                (*ev).header = header(kind, 0, 0);
                (*ev).uid = 0;
                mem::store16(&raw mut (*ev).comm, [0; 4]);
                (*ev).flags = CONN_OWNER_UNKNOWN;
            }
        }
        (*ev).protocol = protocol;
        (*ev).old_state = old as u32;
        (*ev)._pad = 0;
        (*ev).sport = port(rec, Field::Sport).unwrap_or(0);
        (*ev).dport = port(rec, Field::Dport).unwrap_or(0);
        (*ev).family = family;
        mem::store16(&raw mut (*ev).saddr, saddr);
        mem::store16(&raw mut (*ev).daddr, daddr);
    }
}

/// The flow accounting's key for a TCP socket: a dual-stack socket
/// talking IPv4 (`::ffff:a.b.c.d`) sends IPv4 packets.
///
/// # Safety
/// `c` is a ring record written by [`write_conn`]; `key` is valid for writes.
#[inline(always)]
unsafe fn write_flow_key(c: *const ConnEvent, key: *mut FlowKey) {
    let (mut local, mut remote) = unsafe {
        (
            mem::load16(&raw const (*c).saddr),
            mem::load16(&raw const (*c).daddr),
        )
    };
    let family = unsafe { (*c).family };
    let mut version = if family == AF_INET { 4 } else { 6 };
    if family == AF_INET6 && v4_mapped(&local) && v4_mapped(&remote) {
        local = [local[3], 0, 0, 0];
        remote = [remote[3], 0, 0, 0];
        version = 4;
    }
    unsafe {
        mem::store16(&raw mut (*key).local_addr, local);
        mem::store16(&raw mut (*key).remote_addr, remote);
        (*key).local_port = (*c).sport;
        (*key).remote_port = (*c).dport;
        (*key).proto = IPPROTO_TCP;
        (*key).ip_version = version;
        (*key)._pad = [0; 2];
    }
}

/// `::ffff:a.b.c.d`.
#[inline(always)]
fn v4_mapped(w: &[u32; 4]) -> bool {
    w[0] == 0 && w[1] == 0 && w[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
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
        mem::store16(&raw mut (*ev).comm, [0; 4]);
        (*ev).flags = CONN_OWNER_UNKNOWN;
        (*ev).protocol = IPPROTO_TCP as u16;
        (*ev).old_state = 0;
        (*ev)._pad = 0;
        (*ev).family = family;
        (*ev).sport = u16::from_be(ctx.read_at::<u16>(s_off + 2).unwrap_or(0));
        (*ev).dport = u16::from_be(ctx.read_at::<u16>(d_off + 2).unwrap_or(0));
        let (saddr, daddr) = if family == AF_INET {
            let s: u32 = ctx.read_at(s_off + 4).unwrap_or(0);
            let d: u32 = ctx.read_at(d_off + 4).unwrap_or(0);
            ([s, 0, 0, 0], [d, 0, 0, 0])
        } else {
            (
                ctx.read_at(s_off + 8).unwrap_or([0; 4]),
                ctx.read_at(d_off + 8).unwrap_or([0; 4]),
            )
        };
        mem::store16(&raw mut (*ev).saddr, saddr);
        mem::store16(&raw mut (*ev).daddr, daddr);
    }
    entry.submit(crate::events::batched());
    Ok(())
}
