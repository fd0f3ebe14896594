//! Addresses and prefixes (`ADDR` or `ADDR/LEN`), and TTL durations.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address or prefix {input:?}: {reason}")]
pub struct CidrError {
    pub input: String,
    pub reason: &'static str,
}

impl Cidr {
    pub fn max_len(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    pub fn host(addr: IpAddr) -> Cidr {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        Cidr {
            addr,
            len: Cidr::max_len(&addr),
        }
    }

    pub fn is_host(&self) -> bool {
        self.len == Cidr::max_len(&self.addr)
    }

    fn bits(addr: &IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u32::from(*a) as u128,
            IpAddr::V6(a) => u128::from(*a),
        }
    }

    fn mask(&self) -> u128 {
        let width = Cidr::max_len(&self.addr) as u32;
        if self.len == 0 {
            0
        } else {
            let ones = u128::MAX << (128 - self.len as u32);
            ones >> (128 - width)
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        Cidr::bits(&self.addr) & self.mask() == Cidr::bits(ip) & self.mask()
    }

    /// Two prefixes overlap when one contains the other's network address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(&other.addr) || other.contains(&self.addr)
    }

    /// Address bytes, network order, masked to the prefix.
    pub fn octets(&self) -> Vec<u8> {
        let masked = Cidr::bits(&self.addr) & self.mask();
        match self.addr {
            IpAddr::V4(_) => (masked as u32).to_be_bytes().to_vec(),
            IpAddr::V6(_) => masked.to_be_bytes().to_vec(),
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |reason| CidrError {
            input: s.to_string(),
            reason,
        };
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                Some(l.parse::<u8>().map_err(|_| err("bad prefix length"))?),
            ),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err("not an IP address"))?;
        let max = Cidr::max_len(&addr);
        let len = len.unwrap_or(max);
        if len > max {
            return Err(err("prefix length longer than the address"));
        }
        Ok(Cidr { addr, len })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Cidr, CidrError> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?}: use a number with s, m, h or d (e.g. 30s, 10m, 4h)")]
pub struct DurationError(pub String);

/// Parses `30s`, `10m`, `4h`, `2d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, DurationError> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| DurationError(s.to_string()))?;
    if n == 0 {
        return Err(DurationError(s.to_string()));
    }
    n.checked_mul(mult)
        .ok_or_else(|| DurationError(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().expect("cidr")
    }

    #[test]
    fn parses_hosts_and_prefixes() {
        assert_eq!(c("10.1.2.3").len, 32);
        assert!(c("10.1.2.3").is_host());
        assert_eq!(c("10.1.0.0/16").to_string(), "10.1.0.0/16");
        assert_eq!(c("fd00::1").len, 128);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn containment_and_overlap() {
        assert!(c("10.1.0.0/16").contains(&"10.1.200.3".parse().expect("ip")));
        assert!(!c("10.1.0.0/16").contains(&"10.2.0.1".parse().expect("ip")));
        assert!(c("0.0.0.0/0").contains(&"8.8.8.8".parse().expect("ip")));
        assert!(!c("0.0.0.0/0").contains(&"::1".parse().expect("ip")));
        assert!(c("10.0.0.0/8").overlaps(&c("10.9.9.9")));
        assert!(c("10.9.9.9").overlaps(&c("10.0.0.0/8")));
        assert!(!c("10.0.0.0/8").overlaps(&c("11.0.0.0/8")));
        assert!(c("fd00::/64").contains(&"fd00::5".parse().expect("ip")));
    }

    #[test]
    fn octets_are_masked() {
        assert_eq!(c("10.1.2.3/16").octets(), vec![10, 1, 0, 0]);
        assert_eq!(c("fd00::1/16").octets()[..3], [0xfd, 0x00, 0x00]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("4h"), Ok(14_400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("").is_err());
    }
}
