//! Flow accounting: per-flow running sums in an LRU hash, updated for every
//! packet of every local socket (cgroup_skb on the cgroup v2 root, tier 1)
//! or of every interface (TC clsact, tier 2). Nothing is sent per packet.
//!
//! The socket owner is recorded at socket creation (cgroup/sock_create,
//! process context) under the socket cookie, so flows of sockets a process
//! created carry its pid from their first packet.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use agent_common::{
    maps, FlowKey, FlowStats, SockOwner, FLOW_FIRST_IN, FLOW_FIRST_OUT, IPPROTO_TCP, IPPROTO_UDP,
};
use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_UNSPEC},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated},
    macros::{cgroup_skb, cgroup_sock, classifier, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockContext, TcContext},
};

use crate::config::conf;

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

#[cgroup_sock(sock_create)]
pub fn vigil_sock_create(ctx: SockContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let cookie = unsafe { generated::bpf_get_socket_cookie(ctx.sock.cast()) };
    let owner = SockOwner {
        tgid,
        uid: bpf_get_current_uid_gid() as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = SOCK_OWNER.insert(&cookie, &owner, 0);
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

/// The subset of packet access both attach points offer.
trait Packet {
    fn load<T>(&self, off: usize) -> Option<T>;
    fn len(&self) -> u32;
    fn gso_segs(&self) -> u32;
    fn cookie(&self) -> u64;
    /// The packet's full socket has reached TCP_CLOSE.
    fn sock_closed(&self) -> bool;
}

const TCP_CLOSE: u32 = 7;
const SOCK_STREAM: u32 = 1;

/// A packet a socket sends after its close (the reset of an abortive
/// close) must not start a flow: the close already took the socket's
/// flow out of the map, and a new entry would come out later as a
/// one-packet flow of its own.
#[inline(always)]
fn closed(skb: *mut __sk_buff) -> bool {
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
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

/// Reads `T` at `off` straight from the packet's linear part, where the
/// headers of nearly every packet are; `None` past it. A helper call per
/// read (`bpf_skb_load_bytes`) was a third of the flow programs' cost.
#[inline(always)]
fn direct<T>(skb: *mut __sk_buff, off: usize) -> Option<T> {
    let data = unsafe { (*skb).data } as usize;
    let end = unsafe { (*skb).data_end } as usize;
    let at = data + off;
    // Opaque to LLVM, a constant to the verifier: otherwise `at + 1 > end`
    // becomes `at >= end`, which proves no readable byte to the verifier.
    let size = core::hint::black_box(core::mem::size_of::<T>());
    if at + size > end {
        return None;
    }
    Some(unsafe { (at as *const T).read_unaligned() })
}

impl Packet for SkBuffContext {
    fn load<T>(&self, off: usize) -> Option<T> {
        direct(self.skb.skb, off).or_else(|| SkBuffContext::load(self, off).ok())
    }
    fn len(&self) -> u32 {
        SkBuffContext::len(self)
    }
    fn gso_segs(&self) -> u32 {
        unsafe { (*self.skb.skb).gso_segs }
    }
    fn cookie(&self) -> u64 {
        unsafe { generated::bpf_get_socket_cookie(self.skb.skb.cast()) }
    }
    fn sock_closed(&self) -> bool {
        closed(self.skb.skb)
    }
}

impl Packet for TcContext {
    fn load<T>(&self, off: usize) -> Option<T> {
        direct(self.skb.skb, off).or_else(|| TcContext::load(self, off).ok())
    }
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
    fn gso_segs(&self) -> u32 {
        unsafe { (*self.skb.skb).gso_segs }
    }
    fn cookie(&self) -> u64 {
        unsafe { generated::bpf_get_socket_cookie(self.skb.skb.cast()) }
    }
    fn sock_closed(&self) -> bool {
        closed(self.skb.skb)
    }
}

#[cgroup_skb(ingress)]
pub fn vigil_flow_cg_in(ctx: SkBuffContext) -> i32 {
    account(&ctx, 0, false);
    1
}

#[cgroup_skb(egress)]
pub fn vigil_flow_cg_out(ctx: SkBuffContext) -> i32 {
    account(&ctx, 0, true);
    1
}

#[classifier]
pub fn vigil_flow_tc_in(ctx: TcContext) -> i32 {
    tc_account(&ctx, false);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn vigil_flow_tc_out(ctx: TcContext) -> i32 {
    tc_account(&ctx, true);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn tc_account(ctx: &TcContext, egress: bool) {
    let Some(proto) = Packet::load::<u16>(ctx, 12) else {
        return;
    };
    let proto = u16::from_be(proto);
    if proto == ETH_P_IP || proto == ETH_P_IPV6 {
        account(ctx, ETH_HLEN, egress);
    }
}

struct Parsed {
    key: FlowKey,
    payload: u64,
    flags: u8,
}

#[inline(always)]
fn parse<P: Packet>(p: &P, l3: usize, egress: bool) -> Option<Parsed> {
    let b0: u8 = p.load(l3)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    // Each field read is a helper call under cgroup_skb: one load per
    // header instead of one per field (the same bytes must be present).
    let (proto, l4, ip_version) = match b0 >> 4 {
        4 => {
            let h: [u8; 20] = p.load(l3)?;
            let ihl = ((b0 & 0x0f) as usize) * 4;
            let frag = u16::from_be_bytes([h[6], h[7]]);
            src[..4].copy_from_slice(&h[12..16]);
            dst[..4].copy_from_slice(&h[16..20]);
            // Later fragments carry no L4 header: account them without ports.
            let proto = if frag & 0x1fff != 0 { 0 } else { h[9] };
            (proto, l3 + ihl, 4u8)
        }
        6 => {
            let h: [u8; 40] = p.load(l3)?;
            src.copy_from_slice(&h[8..24]);
            dst.copy_from_slice(&h[24..40]);
            (h[6], l3 + 40, 6u8)
        }
        _ => return None,
    };
    let len = p.len() as usize;
    let (sport, dport, hdr, flags) = match proto {
        IPPROTO_TCP => {
            let t: [u8; 14] = p.load(l4)?;
            let sport = u16::from_be_bytes([t[0], t[1]]);
            let dport = u16::from_be_bytes([t[2], t[3]]);
            (sport, dport, ((t[12] >> 4) as usize) * 4, t[13])
        }
        IPPROTO_UDP => {
            let u: [u8; 4] = p.load(l4)?;
            let sport = u16::from_be_bytes([u[0], u[1]]);
            let dport = u16::from_be_bytes([u[2], u[3]]);
            (sport, dport, 8, 0)
        }
        _ => (0, 0, 0, 0),
    };
    let payload = len.saturating_sub(l4 + hdr) as u64;
    let (local_addr, remote_addr, local_port, remote_port) = if egress {
        (src, dst, sport, dport)
    } else {
        (dst, src, dport, sport)
    };
    Some(Parsed {
        key: FlowKey {
            local_addr,
            remote_addr,
            local_port,
            remote_port,
            proto,
            ip_version,
            _pad: [0; 2],
        },
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
fn account<P: Packet>(p: &P, l3: usize, egress: bool) {
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
            let fresh = FlowStats {
                t_first_ns: now,
                t_last_ns: now,
                pid: owner,
                flags: if egress {
                    FLOW_FIRST_OUT
                } else {
                    FLOW_FIRST_IN
                },
                ..FlowStats::default()
            };
            if FLOWS
                .insert(&parsed.key, &fresh, BPF_NOEXIST as u64)
                .is_ok()
            {
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
