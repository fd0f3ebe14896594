//! The kernel blocklist: exact-match hashes for single addresses (checked
//! first) and LPM tries for prefixes, per address family, opened from their
//! pins so the daemon and the CLI edit the same live maps. Userspace reads
//! and writes entries exactly (one entry per target, never a covering
//! one); the kernel drops a packet when any live entry for its direction
//! covers it (`agent_common::enforce`).

use std::net::IpAddr;
use std::path::Path;

use agent_common::enforce::{self as wire, BlockValue};
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

    /// The entry for exactly `c`, never one that merely covers it. (An LPM
    /// lookup returns the longest entry of at most the key's length; the
    /// stored length tells whether that is `c` itself.)
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

    /// Sets the entry for exactly `c` to this expiry and these directions
    /// (a renewal keeps the drop counters). Entries for other prefixes,
    /// covering or covered, are left alone: the kernel consults them all.
    pub fn insert(&mut self, c: &Cidr, expires_ns: u64, flags: u32) -> Result<(), EnforceError> {
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
        match (c.addr, c.is_host()) {
            (IpAddr::V4(_), true) => self.v4.remove(&arr4(&o)).is_ok(),
            (IpAddr::V6(_), true) => self.v6.remove(&arr16(&o)).is_ok(),
            (IpAddr::V4(_), false) => self.lpm4.remove(&Key::new(c.len as u32, arr4(&o))).is_ok(),
            (IpAddr::V6(_), false) => self.lpm6.remove(&Key::new(c.len as u32, arr16(&o))).is_ok(),
        }
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

    /// Every entry, one per target (`blocks list`).
    pub fn list(&self) -> Vec<BlockEntry> {
        let mut out: Vec<BlockEntry> = self
            .entries()
            .into_iter()
            .map(|(target, v)| BlockEntry {
                target,
                expires_ns: v.expires_ns,
                packets: v.packets,
                bytes: v.bytes,
                flags: v.flags,
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
