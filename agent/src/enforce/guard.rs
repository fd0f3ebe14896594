//! The never-block guard: addresses that containment must never cut off,
//! so an attacker (or a mistake) cannot make the agent lock out the
//! operators. Checked before every block and folded into every isolation.

use std::net::{IpAddr, ToSocketAddrs};

use super::cidr::Cidr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to block {target}: it covers {protected} ({why}); containment never cuts off {why}"
)]
pub struct GuardRefusal {
    pub target: Cidr,
    pub protected: Cidr,
    pub why: String,
}

/// A protected prefix and the reason it is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    pub cidr: Cidr,
    pub why: String,
}

#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub protected: Vec<Protected>,
}

/// What the guard is built from; `discover` fills the host facts.
#[derive(Debug, Clone, Default)]
pub struct GuardInputs {
    pub management: Vec<Cidr>,
    pub dns: Vec<IpAddr>,
    pub kafka_brokers: Vec<IpAddr>,
    pub own_addresses: Vec<IpAddr>,
    pub gateways: Vec<IpAddr>,
    pub operator_peers: Vec<IpAddr>,
}

impl Guard {
    pub fn new(inputs: &GuardInputs) -> Guard {
        let mut protected = vec![
            Protected {
                cidr: Cidr {
                    addr: IpAddr::from([127, 0, 0, 0]),
                    len: 8,
                },
                why: "loopback".to_string(),
            },
            Protected {
                cidr: Cidr::host(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
                why: "loopback".to_string(),
            },
        ];
        let mut add = |ips: &[IpAddr], why: &str| {
            for ip in ips {
                protected.push(Protected {
                    cidr: Cidr::host(*ip),
                    why: why.to_string(),
                });
            }
        };
        add(&inputs.own_addresses, "an address of this host");
        add(&inputs.gateways, "the default gateway");
        add(&inputs.dns, "a DNS resolver");
        add(&inputs.kafka_brokers, "a Kafka broker");
        add(&inputs.operator_peers, "the operator's current session");
        for m in &inputs.management {
            protected.push(Protected {
                cidr: *m,
                why: "a management network".to_string(),
            });
        }
        Guard { protected }
    }

    /// Ok when blocking `target` would cut off nothing protected.
    pub fn check(&self, target: &Cidr) -> Result<(), GuardRefusal> {
        for p in &self.protected {
            if target.overlaps(&p.cidr) {
                return Err(GuardRefusal {
                    target: *target,
                    protected: p.cidr,
                    why: p.why.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Addresses of this host's interfaces (in the agent's network namespace).
pub fn own_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and then free.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match (*sa).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = sa as *const libc::sockaddr_in;
                        out.push(IpAddr::from(
                            u32::from_be((*sin).sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = sa as *const libc::sockaddr_in6;
                        out.push(IpAddr::from((*sin6).sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// Default gateways from the kernel routing tables.
pub fn gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/net/route") {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 2 && f[1] == "00000000" {
                if let Ok(gw) = u32::from_str_radix(f[2], 16) {
                    if gw != 0 {
                        out.push(IpAddr::from(gw.to_le_bytes()));
                    }
                }
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 4 && f[0] == "00000000000000000000000000000000" && f[1] == "00" {
                if let Ok(gw) = u128::from_str_radix(f[4], 16) {
                    if gw != 0 {
                        out.push(IpAddr::from(gw.to_be_bytes()));
                    }
                }
            }
        }
    }
    out
}

/// Name servers from /etc/resolv.conf.
pub fn resolvers() -> Vec<IpAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

/// Broker addresses from `host:port,…`, resolving names.
pub fn broker_addresses(brokers: &str) -> Vec<IpAddr> {
    brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .flat_map(|b| {
            b.to_socket_addrs()
                .map(|it| it.map(|sa| sa.ip()).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

/// The operator's session: the SSH peer of whoever runs this command, and
/// every remote login recorded in utmp.
pub fn operator_peers() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for var in ["SSH_CONNECTION", "SSH_CLIENT"] {
        if let Ok(v) = std::env::var(var) {
            if let Some(ip) = v.split_whitespace().next().and_then(|s| s.parse().ok()) {
                out.push(ip);
            }
        }
    }
    // struct utmp on Linux: 384 bytes, ut_type at 0, ut_host at 76 (256 bytes).
    if let Ok(data) = std::fs::read("/var/run/utmp") {
        for rec in data.chunks_exact(384) {
            let ut_type = i16::from_ne_bytes([rec[0], rec[1]]);
            if ut_type != 7 {
                continue; // USER_PROCESS only
            }
            let host = &rec[76..76 + 256];
            let end = host.iter().position(|&b| b == 0).unwrap_or(host.len());
            if let Ok(s) = std::str::from_utf8(&host[..end]) {
                if let Ok(ip) = s.parse() {
                    out.push(ip);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn guard() -> Guard {
        Guard::new(&GuardInputs {
            management: vec!["10.50.0.0/24".parse().expect("cidr")],
            dns: vec![ip("10.0.0.53")],
            kafka_brokers: vec![ip("10.0.0.9")],
            own_addresses: vec![ip("10.0.0.10")],
            gateways: vec![ip("10.0.0.1")],
            operator_peers: vec![ip("192.0.2.7")],
        })
    }

    #[test]
    fn refuses_every_protected_kind_with_a_reason() {
        let g = guard();
        for (target, why) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.1", "gateway"),
            ("10.50.0.77", "management"),
            ("10.0.0.53", "DNS"),
            ("10.0.0.9", "Kafka"),
            ("10.0.0.10", "this host"),
            ("192.0.2.7", "operator"),
            ("10.0.0.0/8", "covers"),
            ("0.0.0.0/0", "loopback"),
        ] {
            let err = g.check(&target.parse().expect("cidr")).expect_err(target);
            assert!(err.to_string().contains(why), "{target}: {err}");
        }
    }

    #[test]
    fn allows_unrelated_attackers() {
        let g = guard();
        assert!(g.check(&"203.0.113.5".parse().expect("cidr")).is_ok());
        assert!(g.check(&"10.51.0.0/24".parse().expect("cidr")).is_ok());
        assert!(g.check(&"2001:db8::/32".parse().expect("cidr")).is_ok());
    }

    #[test]
    fn host_discovery_finds_loopback() {
        assert!(own_addresses().iter().any(|a| a.is_loopback()));
    }
}
