//! The kernel blocklist: exact-match hashes for single addresses (checked
//! first) and LPM tries for prefixes, per address family, opened from their
//! pins so the daemon and the CLI edit the same live maps. Userspace reads
//! and writes entries exactly (one entry per target, never a covering
//! one); the kernel drops a packet when any live entry for its direction
//! covers it (`agent_common::enforce`).
//!
//! The kernel also caches, per CPU, exact sources it dropped through a
//! prefix. Every change to the prefix tries here bumps the tries'
//! generation (after the change), which retires every cached verdict at
//! once: the packet after an unblock or renew returns sees the new rule.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use agent_common::enforce::{self as wire, BlockValue, PrefixCacheCpu, PrefixSlot};
use aya::maps::lpm_trie::Key;
use aya::maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray};

use super::cidr::Cidr;
use super::EnforceError;

pub struct Blocklist {
    v4: HashMap<MapData, [u8; 4], BlockValue>,
    v6: HashMap<MapData, [u8; 16], BlockValue>,
    lpm4: LpmTrie<MapData, [u8; 4], BlockValue>,
    lpm6: LpmTrie<MapData, [u8; 16], BlockValue>,
    stats: PerCpuArray<MapData, u64>,
    cache4: PerCpuArray<MapData, PrefixSlot>,
    cache6: PerCpuArray<MapData, PrefixSlot>,
    cache_cpu: PerCpuArray<MapData, PrefixCacheCpu>,
    generation: Generation,
}

/// `BLOCK_GEN` mapped into this process, so a bump is one atomic add: two
/// writers (the daemon and the CLI) can neither lose a bump nor move the
/// generation back to a value a stale cached verdict carries.
struct Generation {
    word: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is shared memory touched only through the atomic.
unsafe impl Send for Generation {}
unsafe impl Sync for Generation {}

impl Generation {
    fn open(map: &MapData) -> Result<Generation, EnforceError> {
        // SAFETY: sysconf has no preconditions.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        // SAFETY: maps one page of an mmapable array map's fd (its only
        // value sits at offset 0); checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(EnforceError::Map {
                name: wire::BLOCK_GEN.to_string(),
                reason: format!("mmap: {}", std::io::Error::last_os_error()),
            });
        }
        let word = NonNull::new(p as *mut AtomicU64).ok_or_else(|| EnforceError::Map {
            name: wire::BLOCK_GEN.to_string(),
            reason: "mmap returned null".to_string(),
        })?;
        Ok(Generation { word, len })
    }

    fn bump(&self) {
        // SAFETY: the page stays mapped until drop; u64 at offset 0 is aligned.
        unsafe { self.word.as_ref() }.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what open mapped.
        unsafe { libc::munmap(self.word.as_ptr() as *mut libc::c_void, self.len) };
    }
}

/// The prefix cache's counters, summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefixCacheStats {
    /// Drops served from the cache (no trie walk).
    pub hits: u64,
    pub inserts: u64,
    /// Inserts that replaced another live source.
    pub evictions: u64,
    /// Inserts turned away by a resident hit since the last collision.
    pub kept: u64,
    /// Inserts refused by the per-CPU budget.
    pub over_budget: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockEntry {
    pub target: Cidr,
    pub expires_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub flags: u32,
}

fn open(dir: &Path, name: &str) -> Result<MapData, EnforceError> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|e| EnforceError::Map {
        name: name.to_string(),
        reason: format!("opening pin {}: {e}", path.display()),
    })
}

fn map_err(name: &str) -> impl Fn(aya::maps::MapError) -> EnforceError + '_ {
    move |e| EnforceError::Map {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// `c` with the host bits cleared, so prefixes compare by value.
fn masked(c: &Cidr) -> Cidr {
    let o = c.octets();
    let addr = match c.addr {
        IpAddr::V4(_) => IpAddr::from(arr4(&o)),
        IpAddr::V6(_) => IpAddr::from(arr16(&o)),
    };
    Cidr { addr, len: c.len }
}

fn arr4(o: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&o[..4]);
    a
}

fn arr16(o: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&o[..16]);
    a
}

impl Blocklist {
    /// Opens the pinned maps in `pin_dir` (created by loading the enforcement object).
    pub fn open(pin_dir: &Path) -> Result<Blocklist, EnforceError> {
        let mut b = Blocklist {
            v4: HashMap::try_from(Map::HashMap(open(pin_dir, wire::BLOCK4)?))
                .map_err(map_err(wire::BLOCK4))?,
            v6: HashMap::try_from(Map::HashMap(open(pin_dir, wire::BLOCK6)?))
                .map_err(map_err(wire::BLOCK6))?,
            lpm4: LpmTrie::try_from(Map::LpmTrie(open(pin_dir, wire::BLOCK4_LPM)?))
                .map_err(map_err(wire::BLOCK4_LPM))?,
            lpm6: LpmTrie::try_from(Map::LpmTrie(open(pin_dir, wire::BLOCK6_LPM)?))
                .map_err(map_err(wire::BLOCK6_LPM))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(pin_dir, wire::BLOCK_STATS)?))
                .map_err(map_err(wire::BLOCK_STATS))?,
            cache4: PerCpuArray::try_from(Map::PerCpuArray(open(pin_dir, wire::PREFIX_CACHE4)?))
                .map_err(map_err(wire::PREFIX_CACHE4))?,
            cache6: PerCpuArray::try_from(Map::PerCpuArray(open(pin_dir, wire::PREFIX_CACHE6)?))
                .map_err(map_err(wire::PREFIX_CACHE6))?,
            cache_cpu: PerCpuArray::try_from(Map::PerCpuArray(open(
                pin_dir,
                wire::PREFIX_CACHE_CPU,
            )?))
            .map_err(map_err(wire::PREFIX_CACHE_CPU))?,
            generation: Generation::open(&open(pin_dir, wire::BLOCK_GEN)?)?,
        };
        b.stamp_prefix_lengths()?;
        Ok(b)
    }

    /// Entries pinned by an agent older than `BlockValue::prefix_len` carry
    /// 0 there, which would end the kernel's walk to shorter prefixes at
    /// them; writes each entry's real length back once.
    fn stamp_prefix_lengths(&mut self) -> Result<(), EnforceError> {
        let stale: Vec<(Cidr, BlockValue)> = self
            .entries()
            .into_iter()
            .filter(|(c, v)| v.prefix_len != c.len as u32)
            .collect();
        for (c, v) in stale {
            self.write(
                &c,
                BlockValue {
                    prefix_len: c.len as u32,
                    ..v
                },
            )?;
        }
        Ok(())
    }

    /// The entry for exactly `c`, never one that merely covers it, as
    /// stored (its counters lack the drops still held in the kernel's
    /// prefix cache: [`get_counted`](Self::get_counted) adds them). An LPM
    /// lookup returns the longest entry of at most the key's length; the
    /// stored length tells whether that is `c` itself.
    pub fn get(&self, c: &Cidr) -> Option<BlockValue> {
        let o = c.octets();
        let v = match (c.addr, c.is_host()) {
            (IpAddr::V4(_), true) => self.v4.get(&arr4(&o), 0).ok(),
            (IpAddr::V6(_), true) => self.v6.get(&arr16(&o), 0).ok(),
            (IpAddr::V4(_), false) => self.lpm4.get(&Key::new(c.len as u32, arr4(&o)), 0).ok(),
            (IpAddr::V6(_), false) => self.lpm6.get(&Key::new(c.len as u32, arr16(&o)), 0).ok(),
        };
        v.filter(|v| c.is_host() || v.prefix_len == c.len as u32)
    }

    /// As [`get`](Self::get), with the drops the kernel's prefix cache
    /// still holds for the entry (reads every CPU's cache: for display).
    pub fn get_counted(&self, c: &Cidr) -> Option<BlockValue> {
        let mut v = self.get(c)?;
        if !c.is_host() {
            let (p, b) = self
                .cached_counts()
                .get(&masked(c))
                .copied()
                .unwrap_or_default();
            v.packets += p;
            v.bytes += b;
        }
        Some(v)
    }

    /// Sets the entry for exactly `c` to this expiry and these directions
    /// (a renewal keeps the drop counters). Entries for other prefixes,
    /// covering or covered, are left alone: the kernel consults them all.
    pub fn insert(&mut self, c: &Cidr, expires_ns: u64, flags: u32) -> Result<(), EnforceError> {
        // As stored: cached drops are added to the entry by the kernel when
        // their slot is reused; taking them here too would count them twice.
        let prev = self.get(c).unwrap_or_default();
        self.write(
            c,
            BlockValue {
                expires_ns,
                packets: prev.packets,
                bytes: prev.bytes,
                flags,
                prefix_len: c.len as u32,
            },
        )
    }

    fn write(&mut self, c: &Cidr, v: BlockValue) -> Result<(), EnforceError> {
        let o = c.octets();
        let r = match (c.addr, c.is_host()) {
            (IpAddr::V4(_), true) => self.v4.insert(arr4(&o), v, 0),
            (IpAddr::V6(_), true) => self.v6.insert(arr16(&o), v, 0),
            (IpAddr::V4(_), false) => self.lpm4.insert(&Key::new(c.len as u32, arr4(&o)), v, 0),
            (IpAddr::V6(_), false) => self.lpm6.insert(&Key::new(c.len as u32, arr16(&o)), v, 0),
        };
        if !c.is_host() {
            self.generation.bump();
        }
        r.map_err(|e| EnforceError::Map {
            name: "blocklist".to_string(),
            reason: format!(
                "inserting {c}: {e} (full? capacity {})",
                wire::BLOCK_MAX_ENTRIES
            ),
        })
    }

    /// Removes a block; false when there was none.
    pub fn remove(&mut self, c: &Cidr) -> bool {
        let o = c.octets();
        let removed = match (c.addr, c.is_host()) {
            (IpAddr::V4(_), true) => self.v4.remove(&arr4(&o)).is_ok(),
            (IpAddr::V6(_), true) => self.v6.remove(&arr16(&o)).is_ok(),
            (IpAddr::V4(_), false) => self.lpm4.remove(&Key::new(c.len as u32, arr4(&o))).is_ok(),
            (IpAddr::V6(_), false) => self.lpm6.remove(&Key::new(c.len as u32, arr16(&o))).is_ok(),
        };
        if !c.is_host() {
            self.generation.bump();
        }
        removed
    }

    /// Drops the kernel served from its prefix cache and has not yet added
    /// to their prefix entry, by prefix (masked), over every CPU's slots.
    fn cached_counts(&self) -> StdHashMap<Cidr, (u64, u64)> {
        let mut out: StdHashMap<Cidr, (u64, u64)> = StdHashMap::new();
        for (cache, v4) in [(&self.cache4, true), (&self.cache6, false)] {
            for per_cpu in cache.iter().flatten() {
                for s in per_cpu.iter().filter(|s| s.packets > 0) {
                    let addr = if v4 {
                        IpAddr::from(arr4(&s.addr))
                    } else {
                        IpAddr::from(s.addr)
                    };
                    let len = s.prefix_len.min(Cidr::max_len(&addr) as u32) as u8;
                    let e = out.entry(masked(&Cidr { addr, len })).or_default();
                    e.0 += s.packets;
                    e.1 += s.bytes;
                }
            }
        }
        out
    }

    /// The prefix cache's counters and state, one per possible CPU (the
    /// tests aim sources at one slot with the CPU's hash key).
    pub fn cache_per_cpu(&self) -> Vec<PrefixCacheCpu> {
        self.cache_cpu
            .get(&0, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The prefix cache's counters, summed over all CPUs.
    pub fn cache_stats(&self) -> PrefixCacheStats {
        let mut t = PrefixCacheStats::default();
        for c in self.cache_per_cpu() {
            t.hits += c.hits;
            t.inserts += c.inserts;
            t.evictions += c.evictions;
            t.kept += c.kept;
            t.over_budget += c.over_budget;
        }
        t
    }

    /// Every entry of every map with its key, as stored.
    fn entries(&self) -> Vec<(Cidr, BlockValue)> {
        let mut out = Vec::new();
        let cidr = |addr: IpAddr, len: u32| Cidr {
            addr,
            len: len as u8,
        };
        for (k, v) in self.v4.iter().flatten() {
            out.push((cidr(IpAddr::from(k), 32), v));
        }
        for (k, v) in self.v6.iter().flatten() {
            out.push((cidr(IpAddr::from(k), 128), v));
        }
        for (k, v) in self.lpm4.iter().flatten() {
            out.push((cidr(IpAddr::from(k.data()), k.prefix_len()), v));
        }
        for (k, v) in self.lpm6.iter().flatten() {
            out.push((cidr(IpAddr::from(k.data()), k.prefix_len()), v));
        }
        out
    }

    /// Every entry, one per target, counters as stored (see [`get`](Self::get)).
    pub fn list(&self) -> Vec<BlockEntry> {
        self.list_with(&StdHashMap::new())
    }

    /// Every entry with the drops still held in the kernel's prefix cache
    /// (`blocks list`, `vigil status`; reads every CPU's cache).
    pub fn list_counted(&self) -> Vec<BlockEntry> {
        self.list_with(&self.cached_counts())
    }

    fn list_with(&self, cached: &StdHashMap<Cidr, (u64, u64)>) -> Vec<BlockEntry> {
        let mut out: Vec<BlockEntry> = self
            .entries()
            .into_iter()
            .map(|(target, v)| {
                let (p, b) = match target.is_host() {
                    true => (0, 0),
                    false => cached.get(&masked(&target)).copied().unwrap_or_default(),
                };
                BlockEntry {
                    target,
                    expires_ns: v.expires_ns,
                    packets: v.packets + p,
                    bytes: v.bytes + b,
                    flags: v.flags,
                }
            })
            .collect();
        out.sort_by_key(|e| (e.target.addr, e.target.len));
        out
    }

    /// What the kernel dropped, summed over all CPUs.
    pub fn totals(&self) -> BlockTotals {
        let slot = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        BlockTotals {
            in_packets: slot(wire::STAT_IN_PACKETS),
            in_bytes: slot(wire::STAT_IN_BYTES),
            out_packets: slot(wire::STAT_OUT_PACKETS),
            out_bytes: slot(wire::STAT_OUT_BYTES),
        }
    }
}

/// Packets and bytes the blocklist dropped, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BlockTotals {
    pub in_packets: u64,
    pub in_bytes: u64,
    pub out_packets: u64,
    pub out_bytes: u64,
}
