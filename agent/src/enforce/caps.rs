//! Caps on what one block may cover and for how long, for blocks that
//! arrive from the fleet (signed commands and indicators): a holder of the
//! fleet key may block a host or a network, never half the Internet, and
//! never for longer than `enforce.max_ttl_s`. The never-block guard still
//! applies inside the caps.

use std::net::IpAddr;

use super::cidr::Cidr;
use crate::config::EnforceConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapRefusal {
    #[error("refused to block {target}: broader than /{max} ({key})")]
    TooBroad {
        target: Cidr,
        max: u8,
        key: &'static str,
    },
    #[error("refused to block {target} for {ttl_s}s: longer than enforce.max_ttl_s ({max_s}s)")]
    TooLong {
        target: Cidr,
        ttl_s: u64,
        max_s: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Shortest IPv4 prefix length allowed (16: at most a /16).
    pub max_prefix_v4: u8,
    /// Shortest IPv6 prefix length allowed.
    pub max_prefix_v6: u8,
    pub max_ttl_s: u64,
}

impl Caps {
    pub fn from_config(cfg: &EnforceConfig) -> Caps {
        Caps {
            max_prefix_v4: cfg.max_prefix_v4,
            max_prefix_v6: cfg.max_prefix_v6,
            max_ttl_s: cfg.max_ttl_s,
        }
    }

    /// Ok when `target` is no broader than the caps and `ttl_s` no longer.
    /// An IPv4-mapped IPv6 prefix (`::ffff:a.b.c.d/n`) is judged as the
    /// IPv4 prefix it covers.
    pub fn check(&self, target: &Cidr, ttl_s: u64) -> Result<(), CapRefusal> {
        let (len, max, key) = match target.addr {
            IpAddr::V4(_) => (target.len, self.max_prefix_v4, "enforce.max_prefix_v4"),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && target.len >= 96 => {
                (target.len - 96, self.max_prefix_v4, "enforce.max_prefix_v4")
            }
            IpAddr::V6(_) => (target.len, self.max_prefix_v6, "enforce.max_prefix_v6"),
        };
        if len < max {
            return Err(CapRefusal::TooBroad {
                target: *target,
                max,
                key,
            });
        }
        if ttl_s > self.max_ttl_s {
            return Err(CapRefusal::TooLong {
                target: *target,
                ttl_s,
                max_s: self.max_ttl_s,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Caps {
        Caps::from_config(&EnforceConfig::default())
    }

    fn c(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn broad_prefixes_are_refused_and_narrow_ones_pass() {
        let caps = caps();
        for broad in [
            "128.0.0.0/1",
            "0.0.0.0/0",
            "10.0.0.0/15",
            "2001:db8::/31",
            "::/0",
            "::ffff:0.0.0.0/96",
            "::ffff:10.0.0.0/104",
        ] {
            let e = caps.check(&c(broad), 60).expect_err(broad);
            assert!(e.to_string().contains("broader than"), "{broad}: {e}");
        }
        for ok in [
            "203.0.113.9",
            "10.1.0.0/16",
            "2001:db8::/32",
            "2001:db8::1",
            "::ffff:10.1.0.0/112",
        ] {
            assert_eq!(caps.check(&c(ok), 60), Ok(()), "{ok}");
        }
    }

    #[test]
    fn ttls_above_the_cap_are_refused_without_overflow() {
        let caps = caps();
        assert_eq!(caps.max_ttl_s, 7 * 86_400);
        assert!(caps.check(&c("203.0.113.9"), 7 * 86_400).is_ok());
        for ttl in [7 * 86_400 + 1, u64::MAX / 1_000_000_000 + 1, u64::MAX] {
            let e = caps.check(&c("203.0.113.9"), ttl).expect_err("too long");
            assert!(e.to_string().contains("max_ttl_s"), "{e}");
        }
    }
}
