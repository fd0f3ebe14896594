//! Community ID v1 flow hashing (the hash Zeek, Suricata and Elastic share):
//! base64(sha1(seed ‖ addr_lo ‖ addr_hi ‖ proto ‖ 0 ‖ port_lo ‖ port_hi)).

use std::net::IpAddr;

use base64::Engine as _;
use sha1::{Digest, Sha1};

fn addr_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub fn community_id(
    seed: u16,
    proto: u8,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
) -> String {
    let (s, d) = (addr_bytes(&src), addr_bytes(&dst));
    // Order endpoints so both directions hash alike.
    let forward = (s.as_slice(), src_port) <= (d.as_slice(), dst_port);
    let (a, ap, b, bp) = if forward {
        (s, src_port, d, dst_port)
    } else {
        (d, dst_port, s, src_port)
    };
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update([proto, 0]);
    if proto == 6 || proto == 17 || proto == 132 {
        h.update(ap.to_be_bytes());
        h.update(bp.to_be_bytes());
    }
    let digest = h.finalize();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_baseline() {
        // community-id-spec baseline: TCP 128.232.110.120:34855 -> 66.35.250.204:80.
        let src: IpAddr = "128.232.110.120".parse().expect("ip");
        let dst: IpAddr = "66.35.250.204".parse().expect("ip");
        let id = community_id(0, 6, src, 34855, dst, 80);
        assert_eq!(id, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        // Direction does not matter.
        assert_eq!(community_id(0, 6, dst, 80, src, 34855), id);
    }
}
