//! The kernel blocklist's rule, program by program: a packet is dropped
//! when any live entry for its direction covers its address, whatever
//! narrower, expired or other-direction entries lie on top of it. The real
//! enforcement object is loaded into a scratch pin directory (attached
//! nowhere), entries go in through the real `Blocklist` API, and crafted
//! frames run through `BPF_PROG_TEST_RUN`: the XDP program for inbound
//! (source address), the cgroup_skb program for outbound (destination).
//! Run as root, under the kernel lock.
//!
//! The per-CPU prefix cache is checked the same way: the test thread is
//! pinned to one CPU so every run meets the same cache, and the cache's own
//! counters say whether a verdict came from it.

use std::path::PathBuf;

use agent_common::enforce::{
    pcache_index4, PrefixCacheCpu, BLOCK_EGRESS, BLOCK_INGRESS, PCACHE_BUDGET, PCACHE_WINDOW_NS,
    PROG_EGRESS, PROG_XDP,
};
use vigil::enforce::attach::{detach_all, Enforcer};
use vigil::enforce::blocklist::{Blocklist, PrefixCacheStats};
use vigil::enforce::cidr::Cidr;
use vigil::enforce::testrun::{test_run, udp_frame};
use vigil::util::clock::monotonic_ns;
use vigil_integration::require_root;

const IN: u32 = BLOCK_INGRESS;
const OUT: u32 = BLOCK_EGRESS;
const BOTH: u32 = BLOCK_INGRESS | BLOCK_EGRESS;
const LIVE: bool = true;
const LAPSED: bool = false;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Drop,
    Pass,
}
use Verdict::{Drop as D, Pass as P};

/// The enforcement object loaded into its own pin directory, removed on
/// drop (on failure too).
struct Kernel {
    list: Blocklist,
    xdp: i32,
    egress: i32,
    pin_dir: PathBuf,
    _enforcer: Enforcer,
}

impl Kernel {
    fn load(tag: &str) -> Kernel {
        require_root();
        pin_to_this_cpu();
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/vigil-test-{tag}-{}",
            std::process::id()
        ));
        let _ = detach_all(&pin_dir);
        let mut enforcer = Enforcer::load(&pin_dir).expect("load the enforcement object");
        let list = Blocklist::open(&pin_dir).expect("open the pinned maps");
        let xdp = enforcer.program_fd(PROG_XDP).expect("xdp fd");
        let egress = enforcer.program_fd(PROG_EGRESS).expect("egress fd");
        Kernel {
            list,
            xdp,
            egress,
            pin_dir,
            _enforcer: enforcer,
        }
    }

    /// A live (one hour) or already expired entry for exactly `target`.
    fn block(&mut self, target: &str, flags: u32, live: bool) {
        let c: Cidr = target.parse().expect("cidr");
        let expires = if live {
            monotonic_ns() + 3_600_000_000_000
        } else {
            monotonic_ns() - 1
        };
        self.list.insert(&c, expires, flags).expect("insert");
    }

    /// Several entries: (target, directions, live).
    fn blocks(&mut self, entries: &[(&str, u32, bool)]) {
        for (target, flags, live) in entries {
            self.block(target, *flags, *live);
        }
    }

    /// Runs one program on a packet between `addr` and a local address;
    /// `drop`/`pass` are that program's return values.
    fn verdict(&self, fd: i32, addr: &str, inbound: bool, (drop, pass): (u32, u32)) -> Verdict {
        let own = if addr.contains(':') {
            "fd00::1"
        } else {
            "192.0.2.1"
        };
        let (src, dst) = if inbound { (addr, own) } else { (own, addr) };
        let frame = udp_frame(src.parse().expect("ip"), dst.parse().expect("ip")).expect("frame");
        match test_run(fd, &frame, 1).expect("BPF_PROG_TEST_RUN").retval {
            r if r == drop => D,
            r if r == pass => P,
            other => panic!("program returned {other}"),
        }
    }

    /// XDP's verdict on a packet from `addr` (XDP_DROP 1, XDP_PASS 2).
    fn inbound(&self, addr: &str) -> Verdict {
        self.verdict(self.xdp, addr, true, (1, 2))
    }

    /// cgroup_skb egress's verdict on a packet to `addr` (0 drop, 1 pass).
    fn outbound(&self, addr: &str) -> Verdict {
        self.verdict(self.egress, addr, false, (0, 1))
    }

    /// (inbound, outbound) for `addr`.
    fn both(&self, addr: &str) -> (Verdict, Verdict) {
        (self.inbound(addr), self.outbound(addr))
    }

    fn packets(&self, target: &str) -> u64 {
        let c: Cidr = target.parse().expect("cidr");
        self.list.get_counted(&c).map(|v| v.packets).unwrap_or(0)
    }
}

impl Kernel {
    fn cache(&self) -> PrefixCacheStats {
        self.list.cache_stats()
    }

    /// The prefix cache's state on the CPU this thread is pinned to.
    fn this_cpu(&self) -> PrefixCacheCpu {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        self.list.cache_per_cpu()[cpu as usize]
    }

    fn renew(&mut self, target: &str, flags: u32, expires_ns: u64) {
        let c: Cidr = target.parse().expect("cidr");
        self.list.insert(&c, expires_ns, flags).expect("renew");
    }

    fn unblock(&mut self, target: &str) {
        let c: Cidr = target.parse().expect("cidr");
        assert!(self.list.remove(&c), "{target} was listed");
    }
}

/// Pins the test thread to the CPU it runs on, so `BPF_PROG_TEST_RUN`
/// always meets the same per-CPU cache.
fn pin_to_this_cpu() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity
    // get a pointer to it and its size.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity");
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = detach_all(&self.pin_dir);
    }
}

#[test]
fn a_narrower_other_direction_entry_does_not_hide_a_broader_live_block_v4() {
    let mut k = Kernel::load("bl-dir4");
    k.block("203.0.113.0/24", BOTH, LIVE);
    assert_eq!(k.both("203.0.113.5"), (D, D), "the /24 alone");
    // The case: an inbound-only /25 on top.
    k.block("203.0.113.0/25", IN, LIVE);
    assert_eq!(k.both("203.0.113.5"), (D, D), "the in-only /25 hid the /24");
    // Outbound drops are counted on the entry that dropped them.
    assert!(k.packets("203.0.113.0/24") >= 1);
    // And an outbound-only /26 on top of both, and a host entry for in only.
    k.blocks(&[("203.0.113.0/26", OUT, LIVE), ("203.0.113.5", IN, LIVE)]);
    let cases = [
        ("203.0.113.5", (D, D), "under all four"),
        ("203.0.113.200", (D, D), "outside the /25, inside the /24"),
        ("203.0.114.5", (P, P), "outside everything"),
    ];
    for (addr, want, why) in cases {
        assert_eq!(k.both(addr), want, "{addr}: {why}");
    }
}

#[test]
fn a_narrower_expired_entry_does_not_hide_a_broader_live_block_v4() {
    let mut k = Kernel::load("bl-exp4");
    k.blocks(&[
        ("198.51.100.0/24", BOTH, LIVE),
        ("198.51.100.0/25", BOTH, LAPSED),
        ("198.51.100.0/28", BOTH, LAPSED),
        // A chain of shadows, each of another kind, down to a live /8.
        ("10.0.0.0/8", BOTH, LIVE),
        ("10.1.0.0/16", IN, LAPSED),
        ("10.1.2.0/24", OUT, LIVE),
        ("10.1.2.0/30", IN, LIVE),
        ("10.1.2.3", OUT, LAPSED),
    ]);
    for (addr, want) in [
        ("198.51.100.5", (D, D)),
        ("10.1.2.3", (D, D)),
        ("11.1.2.3", (P, P)),
    ] {
        assert_eq!(k.both(addr), want, "{addr}");
    }
}

#[test]
fn an_expired_or_other_direction_exact_entry_falls_through_to_a_covering_prefix_v4() {
    let mut k = Kernel::load("bl-host4");
    let host = "192.0.2.77";
    k.block(host, BOTH, LAPSED);
    assert_eq!(k.both(host), (P, P), "an expired host entry alone");
    k.block("192.0.2.64/26", IN, LIVE);
    assert_eq!(k.both(host), (D, P), "expired host, live in-only prefix");
    k.block(host, OUT, LIVE);
    assert_eq!(k.both(host), (D, D), "out-only host, in-only prefix");
    assert_eq!(k.both("192.0.2.78"), (D, P));
}

#[test]
fn only_other_direction_or_lapsed_entries_let_the_packet_pass_v4() {
    let addr = "203.0.113.9";
    let mut k = Kernel::load("bl-pass4");
    assert_eq!(k.both(addr), (P, P), "empty maps");
    k.blocks(&[
        ("203.0.113.0/24", IN, LIVE),
        ("203.0.113.0/25", IN, LIVE),
        (addr, IN, LIVE),
    ]);
    assert_eq!(k.both(addr), (D, P), "only inbound entries");
    let mut k = Kernel::load("bl-pass4b");
    k.blocks(&[
        ("203.0.113.0/24", OUT, LIVE),
        ("203.0.113.0/25", BOTH, LAPSED),
        (addr, IN, LAPSED),
        // A sibling prefix never covers.
        ("203.0.114.128/25", BOTH, LIVE),
    ]);
    assert_eq!(k.both(addr), (P, D), "only outbound entries live");
    assert_eq!(k.both("203.0.114.5"), (P, P), "a sibling prefix");
}

#[test]
fn the_same_rule_holds_for_ipv6() {
    let a = "2001:db8:1:2::5";
    let mut k = Kernel::load("bl-v6");
    assert_eq!(k.both(a), (P, P), "no covering entry");
    k.blocks(&[
        ("2001:db8::/32", BOTH, LIVE),
        ("2001:db8:1::/48", IN, LIVE),
        ("2001:db8:1:2::/64", BOTH, LAPSED),
        (a, OUT, LAPSED),
    ]);
    assert_eq!(
        k.both(a),
        (D, D),
        "a /32 under an in-only /48, a lapsed /64 and host"
    );
    assert!(k.packets("2001:db8::/32") >= 1);
    assert_eq!(k.both("2001:db9::1"), (P, P));

    let mut k = Kernel::load("bl-v6b");
    k.blocks(&[
        ("2001:db8::/32", OUT, LIVE),
        ("2001:db8:1::/48", OUT, LIVE),
        (a, BOTH, LAPSED),
    ]);
    assert_eq!(k.both(a), (P, D), "only outbound entries");
    k.block("::/0", IN, LIVE);
    assert_eq!(k.both(a), (D, D), "the /0 at the end of the walk");
}

#[test]
fn userspace_reads_writes_and_removes_exactly_one_entry() {
    let mut k = Kernel::load("bl-exact");
    k.block("203.0.113.0/24", BOTH, LIVE);
    assert_eq!(k.both("203.0.113.5"), (D, D));
    assert!(k.packets("203.0.113.0/24") >= 2);
    let c = |s: &str| s.parse::<Cidr>().expect("cidr");
    // A lookup of a prefix that is not there is not answered by the /24.
    assert_eq!(k.list.get(&c("203.0.113.0/25")), None);
    // A new narrower entry starts its own counters.
    k.block("203.0.113.0/25", IN, LIVE);
    let v = k.list.get(&c("203.0.113.0/25")).expect("the /25");
    assert_eq!((v.packets, v.flags, v.prefix_len), (0, IN, 25));
    let listed: Vec<String> = k.list.list().iter().map(|e| e.target.to_string()).collect();
    assert_eq!(listed, ["203.0.113.0/24", "203.0.113.0/25"]);
    // Removing the /25 leaves the /24, and the other way round.
    assert!(k.list.remove(&c("203.0.113.0/25")));
    assert!(!k.list.remove(&c("203.0.113.0/25")));
    assert!(k.list.get(&c("203.0.113.0/24")).is_some());
    k.block("203.0.113.0/25", IN, LIVE);
    assert!(k.list.remove(&c("203.0.113.0/24")));
    assert_eq!(
        k.both("203.0.113.5"),
        (D, P),
        "only the in-only /25 remains"
    );
    assert_eq!(k.list.list().len(), 1);
}

/// (hits, inserts) the cache gained between two readings.
fn gained(before: PrefixCacheStats, after: PrefixCacheStats) -> (u64, u64) {
    (after.hits - before.hits, after.inserts - before.inserts)
}

#[test]
fn the_packet_after_an_unblock_passes_even_from_a_cached_source() {
    let mut k = Kernel::load("pc-unblock");
    k.block("203.0.113.0/24", BOTH, LIVE);
    k.block("2001:db8::/32", BOTH, LIVE);
    for addr in ["203.0.113.5", "2001:db8::5"] {
        let s0 = k.cache();
        assert_eq!(k.both(addr), (D, D), "{addr}: walked, then cached");
        assert_eq!(k.both(addr), (D, D), "{addr}: from the cache");
        assert_eq!(
            gained(s0, k.cache()),
            (3, 1),
            "{addr}: one walk, three hits"
        );
    }
    k.unblock("203.0.113.0/24");
    k.unblock("2001:db8::/32");
    let s0 = k.cache();
    for addr in ["203.0.113.5", "2001:db8::5"] {
        assert_eq!(k.both(addr), (P, P), "{addr}: the very next packet");
    }
    assert_eq!(
        gained(s0, k.cache()),
        (0, 0),
        "no stale hit, nothing cached"
    );
    // A covering entry left in place is found again by the walk.
    k.block("203.0.0.0/16", IN, LIVE);
    k.block("203.0.113.0/24", BOTH, LIVE);
    assert_eq!(k.both("203.0.113.5"), (D, D));
    k.unblock("203.0.113.0/24");
    assert_eq!(
        k.both("203.0.113.5"),
        (D, P),
        "only the in-only /16 is left"
    );
}

#[test]
fn a_renewal_retires_cached_verdicts_at_once() {
    let mut k = Kernel::load("pc-renew");
    k.block("198.51.100.0/24", BOTH, LIVE);
    assert_eq!(k.both("198.51.100.7"), (D, D));
    assert_eq!(k.both("198.51.100.7"), (D, D));
    assert!(k.cache().hits >= 2, "the verdict is cached");
    // Narrowed to inbound: the cached both-ways verdict must not drop out.
    let far = monotonic_ns() + 3_600_000_000_000;
    k.renew("198.51.100.0/24", IN, far);
    assert_eq!(k.both("198.51.100.7"), (D, P), "renewed for inbound only");
    assert_eq!(k.both("198.51.100.7"), (D, P));
    // Shortened to the past: the cache carried the old expiry.
    k.renew("198.51.100.0/24", IN, monotonic_ns() - 1);
    assert_eq!(k.both("198.51.100.7"), (P, P), "renewed into the past");
    // And a renewal of one prefix retires nothing it should not: a /16
    // elsewhere keeps dropping.
    k.block("10.20.0.0/16", IN, LIVE);
    assert_eq!(k.inbound("10.20.1.1"), D);
    k.renew("198.51.100.0/24", IN, far);
    assert_eq!(k.inbound("10.20.1.1"), D);
    assert_eq!(k.inbound("198.51.100.7"), D);
}

#[test]
fn a_cached_verdict_lapses_with_its_prefix_entry() {
    let mut k = Kernel::load("pc-expiry");
    let expires = monotonic_ns() + 300_000_000;
    k.renew("192.0.2.128/25", IN, expires);
    k.renew("2001:db8:77::/48", IN, expires);
    for addr in ["192.0.2.200", "2001:db8:77::9"] {
        assert_eq!(k.inbound(addr), D);
        assert_eq!(k.inbound(addr), D);
    }
    let s0 = k.cache();
    assert!(s0.hits >= 2, "both are served from the cache: {s0:?}");
    while monotonic_ns() <= expires {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for addr in ["192.0.2.200", "2001:db8:77::9"] {
        assert_eq!(k.inbound(addr), P, "{addr}: past the prefix's expiry");
    }
    assert_eq!(k.cache().hits, s0.hits, "no hit after the expiry");
}

#[test]
fn drops_served_from_the_cache_are_counted_on_their_prefix_entry() {
    let mut k = Kernel::load("pc-count");
    k.block("203.0.113.0/24", IN, LIVE);
    for _ in 0..10 {
        assert_eq!(k.inbound("203.0.113.5"), D);
    }
    assert_eq!(k.cache().hits, 9);
    assert_eq!(k.packets("203.0.113.0/24"), 10, "walk + cache");
    let listed = k.list.list_counted();
    assert_eq!(listed[0].packets, 10, "blocks list agrees");
    assert_eq!(k.list.list()[0].packets, 1, "as stored: the walk's drop");
    assert_eq!(k.list.totals().in_packets, 10);
    // The slot is reused by the next insert for it (a renewal retires the
    // verdict): its 9 cached drops move to the entry, not counted twice.
    k.renew("203.0.113.0/24", IN, monotonic_ns() + 3_600_000_000_000);
    assert_eq!(
        k.packets("203.0.113.0/24"),
        10,
        "renewal keeps the counters"
    );
    assert_eq!(k.inbound("203.0.113.5"), D);
    assert_eq!(k.packets("203.0.113.0/24"), 11);
    assert_eq!(k.list.list_counted()[0].packets, 11);
    assert_eq!(k.list.list()[0].packets, 11, "flushed into the entry");
}

/// A source of 10.0.0.0/8 whose IPv4 cache slot on this CPU is `slot`,
/// skipping `used`.
fn colliding(seed: &[u64; 4], slot: u32, used: &mut u32) -> String {
    loop {
        *used += 1;
        let a = [10, (*used >> 16) as u8, (*used >> 8) as u8, *used as u8];
        if pcache_index4(&a, seed) == slot {
            return format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
        }
    }
}

#[test]
fn a_spray_through_a_broad_prefix_cannot_evict_a_source_still_being_hit() {
    let mut k = Kernel::load("pc-spray");
    k.block("10.0.0.0/8", IN, LIVE);
    k.block("198.51.100.0/24", IN, LIVE);
    let useful = "198.51.100.7";
    assert_eq!(k.inbound(useful), D, "walked and cached");
    assert_eq!(k.inbound(useful), D, "hit: marked as in use");
    let seed = k.this_cpu().seed;
    assert_ne!(seed[0], 0, "the CPU drew its hash key");
    let slot = pcache_index4(&[198, 51, 100, 7], &seed);
    // Sources aimed at the useful source's slot, each followed by a packet
    // from it: every one is turned away.
    let mut n = 0;
    let s0 = k.cache();
    let rounds = 200;
    for _ in 0..rounds {
        let s = colliding(&seed, slot, &mut n);
        assert_eq!(k.inbound(&s), D, "{s} is dropped by the walk");
        assert_eq!(k.inbound(useful), D);
    }
    let s1 = k.cache();
    assert_eq!(
        s1.hits - s0.hits,
        rounds,
        "every packet of the useful source hit"
    );
    assert_eq!(
        s1.kept - s0.kept,
        rounds,
        "every colliding insert was turned away"
    );
    assert_eq!(s1.evictions, s0.evictions);
    // Second chance only: two colliding sources in a row evict it.
    for _ in 0..2 {
        let s = colliding(&seed, slot, &mut n);
        assert_eq!(k.inbound(&s), D);
    }
    let s2 = k.cache();
    assert_eq!((s2.kept - s1.kept, s2.evictions - s1.evictions), (1, 1));
    assert_eq!(k.inbound(useful), D);
    assert_eq!(k.cache().hits, s2.hits, "evicted: walked again");
}

#[test]
fn inserts_are_capped_per_cpu_and_every_prefix_drop_is_counted_once() {
    let mut k = Kernel::load("pc-budget");
    k.block("10.0.0.0/8", IN, LIVE);
    let spray: u32 = 20_000;
    let s0 = k.cache();
    let t0 = monotonic_ns();
    for i in 0..spray {
        let s = format!("10.{}.{}.{}", (i >> 16) as u8, (i >> 8) as u8, i as u8);
        assert_eq!(k.inbound(&s), D, "{s}");
    }
    let elapsed = monotonic_ns() - t0;
    let s1 = k.cache();
    let (ins, kept, over) = (
        s1.inserts - s0.inserts,
        s1.kept - s0.kept,
        s1.over_budget - s0.over_budget,
    );
    assert_eq!(ins + kept + over, spray as u64, "{s1:?}");
    assert_eq!(s1.hits, s0.hits, "every source was new");
    // At most one budget per window started during the spray (+1 for the
    // window it started in).
    let cap = PCACHE_BUDGET * (elapsed / PCACHE_WINDOW_NS + 2);
    assert!(ins <= cap, "{ins} inserts in {elapsed} ns (cap {cap})");
    if spray as u64 > cap {
        assert!(over > 0, "the budget refused some: {s1:?}");
    }
    // Whatever the spray did, a new source of another prefix still drops.
    k.block("198.51.100.0/24", IN, LIVE);
    assert_eq!(k.inbound("198.51.100.7"), D);
}

#[test]
fn only_xdp_fills_the_cache_and_egress_reads_it() {
    // The egress program may be preempted mid-write; XDP (softirq) is the
    // one writer per CPU the slots' sequence numbers rely on.
    let mut k = Kernel::load("pc-egress");
    k.block("198.51.100.0/24", OUT, LIVE);
    let s0 = k.cache();
    assert_eq!(k.outbound("198.51.100.7"), D);
    assert_eq!(k.outbound("198.51.100.7"), D);
    assert_eq!(
        gained(s0, k.cache()),
        (0, 0),
        "egress walks, inserts nothing"
    );
    k.block("203.0.113.0/24", BOTH, LIVE);
    assert_eq!(k.inbound("203.0.113.7"), D);
    assert_eq!(k.outbound("203.0.113.7"), D);
    assert_eq!(gained(s0, k.cache()), (1, 1), "XDP filled it, egress hit");
}
