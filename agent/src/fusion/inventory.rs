//! The fleet as its agents describe it (`fleet.inventory`, compacted by
//! host): which addresses belong to which host, and the allowlist built on
//! it. Every stage reads the whole table (a global table, not partitioned).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::config::FusionConfig;
use super::model::{Indicator, InventoryIn};
use crate::enforce::cidr::Cidr;

#[derive(Debug, Default, Clone)]
pub struct Inventory {
    hosts: BTreeMap<String, InventoryIn>,
    by_addr: HashMap<IpAddr, String>,
}

/// Hosts a single fleet may list; past it new hosts are ignored (counted by
/// the caller) so a flood of forged names cannot grow the table.
pub const MAX_HOSTS: usize = 100_000;
/// Addresses one host may claim.
pub const MAX_ADDRESSES: usize = 64;

impl Inventory {
    /// A host's entry (a newer one replaces it); `None` deletes it (a
    /// tombstone on the compacted topic). False when the table is full.
    pub fn put(&mut self, host: &str, entry: Option<InventoryIn>) -> bool {
        if let Some(old) = self.hosts.remove(host) {
            for a in &old.addresses {
                if self.by_addr.get(a).is_some_and(|h| h == host) {
                    self.by_addr.remove(a);
                }
            }
        }
        let Some(mut e) = entry else {
            return true;
        };
        if self.hosts.len() >= MAX_HOSTS {
            return false;
        }
        e.addresses.truncate(MAX_ADDRESSES);
        e.host = host.to_string();
        for a in &e.addresses {
            if usable(a) {
                self.by_addr.insert(*a, host.to_string());
            }
        }
        self.hosts.insert(host.to_string(), e);
        true
    }

    /// The fleet host that owns `ip`.
    pub fn host_of(&self, ip: &IpAddr) -> Option<&str> {
        self.by_addr.get(&canonical(*ip)).map(String::as_str)
    }

    pub fn get(&self, host: &str) -> Option<&InventoryIn> {
        self.hosts.get(host)
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Addresses that never name a host on the network: loopback, link-local,
/// multicast, unspecified, broadcast.
fn usable(ip: &IpAddr) -> bool {
    match canonical(*ip) {
        IpAddr::V4(a) => {
            !(a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_unspecified()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_multicast()
                || a.is_unspecified()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// What fusion never decides on.
#[derive(Debug, Clone)]
pub struct Allowlist {
    prefixes: Vec<Cidr>,
    block_fleet_hosts: bool,
}

impl Allowlist {
    pub fn new(cfg: &FusionConfig) -> Allowlist {
        Allowlist {
            prefixes: cfg
                .allowlist
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            block_fleet_hosts: cfg.block_fleet_hosts,
        }
    }

    /// Why `ind` is never decided on, if it is allowlisted.
    pub fn reason(&self, ind: &Indicator, fleet: &Inventory) -> Option<&'static str> {
        let ip = canonical(ind.ip()?);
        if !usable(&ip) {
            return Some("special-purpose address");
        }
        if self.prefixes.iter().any(|c| c.contains(&ip)) {
            return Some("allowlisted prefix");
        }
        if !self.block_fleet_hosts && fleet.host_of(&ip).is_some() {
            return Some("a fleet host");
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, addrs: &[&str]) -> InventoryIn {
        InventoryIn {
            host: name.into(),
            addresses: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            roles: vec!["web".into()],
            ts: String::new(),
        }
    }

    #[test]
    fn addresses_map_to_their_host_and_follow_updates() {
        let mut inv = Inventory::default();
        inv.put("h1", Some(host("h1", &["10.0.0.1", "127.0.0.1"])));
        assert_eq!(inv.host_of(&"10.0.0.1".parse().expect("ip")), Some("h1"));
        assert_eq!(
            inv.host_of(&"::ffff:10.0.0.1".parse().expect("ip")),
            Some("h1")
        );
        assert_eq!(inv.host_of(&"127.0.0.1".parse().expect("ip")), None);
        inv.put("h1", Some(host("h1", &["10.0.0.2"])));
        assert_eq!(inv.host_of(&"10.0.0.1".parse().expect("ip")), None);
        inv.put("h1", None);
        assert!(inv.is_empty());
    }

    #[test]
    fn the_allowlist_covers_prefixes_fleet_hosts_and_special_addresses() {
        let cfg = FusionConfig {
            allowlist: vec!["192.0.2.0/24".into()],
            ..FusionConfig::default()
        };
        let allow = Allowlist::new(&cfg);
        let mut inv = Inventory::default();
        inv.put("h1", Some(host("h1", &["10.0.0.1"])));
        let r = |s: &str| allow.reason(&Indicator::parse(s).expect("indicator"), &inv);
        assert_eq!(r("192.0.2.53"), Some("allowlisted prefix"));
        assert_eq!(r("10.0.0.1"), Some("a fleet host"));
        assert_eq!(r("169.254.1.1"), Some("special-purpose address"));
        assert_eq!(r("fe80::1"), Some("special-purpose address"));
        assert_eq!(r("203.0.113.9"), None);
        assert_eq!(r(&format!("sha256:{}", "a".repeat(64))), None);
    }
}
