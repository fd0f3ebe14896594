//! Flow accounting: per-flow running sums in an LRU hash, updated for every
//! packet of every local socket (cgroup_skb on the cgroup v2 root, tier 1)
//! or of every interface (TC clsact, tier 2). Nothing is sent per packet.
//!
//! The socket owner is recorded at socket creation (cgroup/sock_create,
//! process context) under the socket cookie, so flows of sockets a process
//! created carry its pid from their first packet.

use core::{
    ffi::c_void,
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::MaybeUninit,
};

use agent_common::{
    maps, FlowKey, FlowStats, SockOwner, FLOW_FIRST_IN, FLOW_FIRST_OUT, IPPROTO_TCP, IPPROTO_UDP,
};
use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::{cgroup_skb, cgroup_sock, classifier, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockContext, TcContext},
};

use crate::{config::conf, mem};

/// Also taken from at a TCP socket's close (network.rs), so the agent
/// gets each closed flow with its close, without a map call.
#[map]
pub(crate) static FLOWS: LruHashMap<FlowKey, FlowStats> =
    LruHashMap::with_max_entries(maps::FLOWS_MAX_ENTRIES, 0);

/// Flows inserted, per CPU (slot 0); userspace derives evictions from it.
#[map]
static FLOWS_CREATED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SOCK_OWNER: LruHashMap<u64, SockOwner> =
    LruHashMap::with_max_entries(maps::SOCK_OWNER_MAX_ENTRIES, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// The current task as a socket's owner (process context only).
#[inline(always)]
pub(crate) fn current_owner() -> SockOwner {
    let mut o = MaybeUninit::<SockOwner>::uninit();
    let p = o.as_mut_ptr();
    // SAFETY: all three fields are written.
    unsafe {
        (*p).tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        (*p).uid = bpf_get_current_uid_gid() as u32;
        mem::comm_into(&raw mut (*p).comm);
        o.assume_init()
    }
}

#[cgroup_sock(sock_create)]
pub fn vigil_sock_create(ctx: SockContext) -> i32 {
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = SOCK_OWNER.insert(&cookie, &current_owner(), 0);
    1 // never deny: this program only observes
}

/// A closed socket gives up its place: any user can create and close
/// sockets by the hundred thousand, and without this such a flood evicted
/// the owner of a socket made just before it, leaving its flows with no
/// process.
#[cgroup_sock(sock_release)]
pub fn vigil_sock_release(ctx: SockContext) -> i32 {
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.sock.cast()) };
    let _ = SOCK_OWNER.remove(&cookie);
    1
}

/// The socket buffer both attach points hand us.
#[derive(Clone, Copy)]
struct Skb(*mut __sk_buff);

impl Skb {
    /// `N` readable bytes at `off`: in place in the packet's linear part,
    /// where the headers of nearly every packet are, else copied into `buf`
    /// by the helper. Fields are then read from the returned bytes one by
    /// one: copying whole headers to the stack and from there into the key
    /// was most of the programs' instructions.
    #[inline(always)]
    fn bytes<const N: usize>(
        self,
        off: usize,
        buf: &mut MaybeUninit<[u8; N]>,
    ) -> Option<*const u8> {
        let data = unsafe { (*self.0).data } as usize;
        let end = unsafe { (*self.0).data_end } as usize;
        let at = data + off;
        // Opaque to LLVM, a constant to the verifier: otherwise `at + 1 > end`
        // becomes `at >= end`, which proves no readable byte to the verifier.
        let size = core::hint::black_box(N);
        if at + size <= end {
            return Some(at as *const u8);
        }
        let rc = unsafe {
            generated::bpf_skb_load_bytes(
                self.0 as *const c_void,
                off as u32,
                buf.as_mut_ptr().cast(),
                N as u32,
            )
        };
        (rc == 0).then(|| buf.as_ptr().cast())
    }

    #[inline(always)]
    fn len(self) -> u32 {
        unsafe { (*self.0).len }
    }

    #[inline(always)]
    fn gso_segs(self) -> u32 {
        unsafe { (*self.0).gso_segs }
    }

    #[inline(always)]
    fn cookie(self) -> u64 {
        unsafe { generated::bpf_get_socket_cookie(self.0.cast()) }
    }

    /// A packet a socket sends after its close (the reset of an abortive
    /// close) must not start a flow: the close already took the socket's
    /// flow out of the map, and a new entry would come out later as a
    /// one-packet flow of its own.
    #[inline(always)]
    fn sock_closed(self) -> bool {
        let sk = unsafe { (*self.0).__bindgen_anon_2.sk };
        if sk.is_null() {
            return false;
        }
        let full = unsafe { generated::bpf_sk_fullsock(sk) };
        // A TCP socket only: raw sockets (which can write any TCP header) and
        // unconnected UDP sockets also sit in TCP_CLOSE, and their packets
        // must keep starting flows.
        !full.is_null()
            && unsafe { (*full).type_ } == SOCK_STREAM
            && unsafe { (*full).protocol } == IPPROTO_TCP as u32
            && unsafe { (*full).state } == TCP_CLOSE
    }
}

const TCP_CLOSE: u32 = 7;
const SOCK_STREAM: u32 = 1;

#[inline(always)]
unsafe fn byte(p: *const u8, i: usize) -> u8 {
    unsafe { *p.add(i) }
}

#[inline(always)]
unsafe fn be16(p: *const u8, i: usize) -> u16 {
    unsafe { u16::from_be_bytes([*p.add(i), *p.add(i + 1)]) }
}

/// Four address bytes as the native-order word the key stores.
#[inline(always)]
unsafe fn word(p: *const u8, i: usize) -> u32 {
    unsafe { u32::from_ne_bytes([*p.add(i), *p.add(i + 1), *p.add(i + 2), *p.add(i + 3)]) }
}

#[cgroup_skb(ingress)]
pub fn vigil_flow_cg_in(ctx: SkBuffContext) -> i32 {
    account(Skb(ctx.skb.skb), 0, false);
    1
}

#[cgroup_skb(egress)]
pub fn vigil_flow_cg_out(ctx: SkBuffContext) -> i32 {
    account(Skb(ctx.skb.skb), 0, true);
    1
}

#[classifier]
pub fn vigil_flow_tc_in(ctx: TcContext) -> i32 {
    tc_account(Skb(ctx.skb.skb), false);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn vigil_flow_tc_out(ctx: TcContext) -> i32 {
    tc_account(Skb(ctx.skb.skb), true);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn tc_account(skb: Skb, egress: bool) {
    let mut buf = MaybeUninit::<[u8; ETH_HLEN]>::uninit();
    let Some(eth) = skb.bytes(0, &mut buf) else {
        return;
    };
    let proto = unsafe { be16(eth, 12) };
    if proto == ETH_P_IP || proto == ETH_P_IPV6 {
        account(skb, ETH_HLEN, egress);
    }
}

struct Parsed {
    key: FlowKey,
    payload: u64,
    flags: u8,
}

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers stepped over before giving up on the ports.
const V6_EXTENSIONS: usize = 4;

#[inline(always)]
fn is_v6_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
    )
}

/// The upper-layer protocol of an IPv6 packet (high word) and where its
/// header starts (low word), past up to [`V6_EXTENSIONS`] hop-by-hop,
/// routing, fragment and destination-options headers. A socket's owner
/// can add such headers (destination options with CAP_NET_RAW, which a
/// user namespace grants); read as the protocol, they would strip the
/// flow of its ports and flags. A later fragment, a header cut short or a
/// longer chain gives protocol 0: counted without ports, as an IPv4 later
/// fragment is. A function of its own, called only when an extension
/// header is there, so the common path stays short.
#[inline(never)]
fn v6_upper_layer(skb: Skb, mut next: u8, mut off: usize) -> u64 {
    let at = |proto: u8, off: usize| ((proto as u64) << 32) | (off as u32 as u64);
    for _ in 0..V6_EXTENSIONS {
        let mut b = MaybeUninit::<[u8; 4]>::uninit();
        let Some(e) = skb.bytes(off, &mut b) else {
            return at(0, off);
        };
        if next == IPPROTO_FRAGMENT {
            if unsafe { be16(e, 2) } & 0xfff8 != 0 {
                return at(0, off + 8);
            }
            next = unsafe { byte(e, 0) };
            off += 8;
        } else {
            next = unsafe { byte(e, 0) };
            off += (unsafe { byte(e, 1) } as usize + 1) * 8;
        }
        if !is_v6_extension(next) {
            return at(next, off);
        }
    }
    at(0, off)
}

#[inline(always)]
fn parse(skb: Skb, l3: usize, egress: bool) -> Option<Parsed> {
    let mut first = MaybeUninit::<[u8; 1]>::uninit();
    let b0 = unsafe { byte(skb.bytes(l3, &mut first)?, 0) };
    let (src, dst, proto, l4, ip_version, ports_known) = match b0 >> 4 {
        4 => {
            let mut v4 = MaybeUninit::<[u8; 20]>::uninit();
            let h = skb.bytes(l3, &mut v4)?;
            let ihl = ((b0 & 0x0f) as usize) * 4;
            let frag = unsafe { be16(h, 6) };
            // Later fragments carry no L4 header: account them without ports.
            let proto = if frag & 0x1fff != 0 {
                0
            } else {
                unsafe { byte(h, 9) }
            };
            let (s, d) = unsafe { (word(h, 12), word(h, 16)) };
            // A header length under 20 (a raw socket's, or one arriving on
            // the TC tier before the IP stack drops it) would put the
            // "ports" inside the addresses: such a packet is counted
            // under its protocol without ports.
            let ports_known = ihl >= 20;
            let l4 = l3 + if ports_known { ihl } else { 20 };
            ([s, 0, 0, 0], [d, 0, 0, 0], proto, l4, 4u8, ports_known)
        }
        6 => {
            let mut v6 = MaybeUninit::<[u8; 40]>::uninit();
            let h = skb.bytes(l3, &mut v6)?;
            let a = |i| unsafe { [word(h, i), word(h, i + 4), word(h, i + 8), word(h, i + 12)] };
            let next = unsafe { byte(h, 6) };
            let (proto, l4) = if is_v6_extension(next) {
                let at = v6_upper_layer(skb, next, l3 + 40);
                ((at >> 32) as u8, at as u32 as usize)
            } else {
                (next, l3 + 40)
            };
            (a(8), a(24), proto, l4, 6u8, true)
        }
        _ => return None,
    };
    let len = skb.len() as usize;
    let mut l4buf = MaybeUninit::<[u8; 14]>::uninit();
    let l4_proto = if ports_known { proto } else { 0 };
    // An L4 header cut short (a raw socket can send one, and so can a
    // remote sender on the TC tier) is counted without ports: left out, it
    // would be traffic that leaves no flow.
    let mut ubuf = MaybeUninit::<[u8; 4]>::uninit();
    let (sport, dport, hdr, flags) = match l4_proto {
        IPPROTO_TCP => match skb.bytes(l4, &mut l4buf) {
            Some(t) => {
                // A data offset under 5 is not valid TCP: the header is
                // 20 bytes at least, whatever the field says.
                let off = ((unsafe { byte(t, 12) } >> 4) as usize * 4).max(20);
                unsafe { (be16(t, 0), be16(t, 2), off, byte(t, 13)) }
            }
            None => (0, 0, 0, 0),
        },
        IPPROTO_UDP => match skb.bytes(l4, &mut ubuf) {
            Some(u) => unsafe { (be16(u, 0), be16(u, 2), 8, 0) },
            None => (0, 0, 0, 0),
        },
        _ => (0, 0, 0, 0),
    };
    let payload = len.saturating_sub(l4 + hdr) as u64;
    let (local, remote, local_port, remote_port) = if egress {
        (src, dst, sport, dport)
    } else {
        (dst, src, dport, sport)
    };
    let mut key = MaybeUninit::<FlowKey>::uninit();
    let k = key.as_mut_ptr();
    // SAFETY: every byte of the key is written; FlowKey is 8-aligned.
    let key = unsafe {
        mem::store16(&raw mut (*k).local_addr, local);
        mem::store16(&raw mut (*k).remote_addr, remote);
        (&raw mut (*k).local_port).write_volatile(local_port);
        (&raw mut (*k).remote_port).write_volatile(remote_port);
        (&raw mut (*k).proto).write_volatile(proto);
        (&raw mut (*k).ip_version).write_volatile(ip_version);
        (&raw mut (*k)._pad).write_volatile([0; 2]);
        key.assume_init()
    };
    Some(Parsed {
        key,
        payload,
        flags,
    })
}

#[inline(always)]
fn add(field: &mut u64, v: u64) {
    // Several CPUs update one flow at once; the counters must stay exact.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

#[inline(always)]
fn account(p: Skb, l3: usize, egress: bool) {
    let Some(parsed) = parse(p, l3, egress) else {
        return;
    };
    let now = unsafe { generated::bpf_ktime_get_ns() };
    let segs = match p.gso_segs() {
        0 => 1u64,
        n => n as u64,
    };

    let stats = match FLOWS.get_ptr_mut(&parsed.key) {
        Some(s) => s,
        None => {
            if parsed.key.proto == IPPROTO_TCP && p.sock_closed() {
                return;
            }
            let owner = unsafe { SOCK_OWNER.get(&p.cookie()) }
                .map(|o| o.tgid)
                .unwrap_or(0);
            if owner != 0 && owner == conf!(agent_tgid) {
                return;
            }
            let mut fresh = MaybeUninit::<FlowStats>::uninit();
            let f = fresh.as_mut_ptr();
            // SAFETY: zeroed whole, then the four fields a new flow starts with.
            let fresh = unsafe {
                mem::zero(f);
                (*f).t_first_ns = now;
                (*f).t_last_ns = now;
                (*f).pid = owner;
                (*f).flags = if egress {
                    FLOW_FIRST_OUT
                } else {
                    FLOW_FIRST_IN
                };
                fresh.assume_init_ref()
            };
            if FLOWS.insert(&parsed.key, fresh, BPF_NOEXIST as u64).is_ok() {
                if let Some(n) = FLOWS_CREATED.get_ptr_mut(0) {
                    // Per-CPU slot: no other writer.
                    unsafe { *n += 1 };
                }
            }
            match FLOWS.get_ptr_mut(&parsed.key) {
                Some(s) => s,
                None => return,
            }
        }
    };

    let s = unsafe { &mut *stats };
    if s.pid != 0 && s.pid == conf!(agent_tgid) {
        return;
    }
    // Inter-arrival time against the previous packet of this flow.
    let prev = s.t_last_ns;
    if now > prev && (s.n_out + s.n_in) > 0 {
        let iat = (now - prev) / 1000;
        add(&mut s.iat_n, 1);
        add(&mut s.iat_sum, iat);
        add(&mut s.iat_sq, iat * iat);
        if iat > s.iat_max {
            s.iat_max = iat;
        }
    }
    if now > prev {
        s.t_last_ns = now;
    }
    // A GSO packet stands for `segs` wire packets of about equal payload.
    let seg = parsed.payload / segs;
    let sq = seg * seg * segs;
    if egress {
        add(&mut s.n_out, segs);
        add(&mut s.bytes_out, parsed.payload);
        add(&mut s.sq_out, sq);
    } else {
        add(&mut s.n_in, segs);
        add(&mut s.bytes_in, parsed.payload);
        add(&mut s.sq_in, sq);
    }
    if parsed.flags & TCP_SYN != 0 {
        add(&mut s.syn, 1);
    }
    if parsed.flags & TCP_RST != 0 {
        add(&mut s.rst, 1);
    }
    if parsed.flags & TCP_FIN != 0 {
        add(&mut s.fin, 1);
    }
}
