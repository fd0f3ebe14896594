//! `BPF_PROG_TEST_RUN` on the enforcement programs: runs a loaded program on
//! a crafted frame inside the kernel without attaching it anywhere. The
//! benchmark times the paths with it and the root tests check each verdict
//! against the real maps. Nothing in the daemon uses it.

use std::net::IpAddr;
use std::os::fd::RawFd;

use super::EnforceError;

/// What one test run reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (XDP: 1 = `XDP_DROP`, 2 = `XDP_PASS`;
    /// cgroup_skb: 0 = drop, 1 = pass).
    pub retval: u32,
    /// Mean nanoseconds per run, the test-run loop's own overhead included.
    pub ns_per_run: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Runs the program `prog_fd` `repeat` times on `frame` (an Ethernet frame;
/// for cgroup_skb the kernel strips the Ethernet header, as on egress).
pub fn test_run(prog_fd: RawFd, frame: &[u8], repeat: u32) -> Result<TestRun, EnforceError> {
    // The `test` member of union bpf_attr: prog_fd, retval, data_size_in,
    // data_size_out, data_in, data_out, repeat, duration, ... (zeroed).
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&repeat.to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr for BPF_PROG_TEST_RUN; data_in points
    // at `frame`, which outlives the call; data_out is null, so the kernel
    // writes nothing but attr itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if rc != 0 {
        return Err(EnforceError::Program {
            name: "BPF_PROG_TEST_RUN".to_string(),
            reason: std::io::Error::last_os_error().to_string(),
        });
    }
    let word = |at: usize| u32::from_ne_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]]);
    Ok(TestRun {
        retval: word(4),
        ns_per_run: word(36),
    })
}

/// A minimal Ethernet + IPv4/IPv6 + UDP frame from `src` to `dst`, padded
/// to 64 bytes. Mixed families are refused (None).
pub fn udp_frame(src: IpAddr, dst: IpAddr) -> Option<Vec<u8>> {
    let mut f = vec![0u8; 14];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    let udp_len = 8u16 + 4;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[8] = 64;
            ip[9] = 17;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = 17;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        _ => return None,
    }
    // UDP 40000 -> 9 (discard), checksum left 0 (optional for IPv4; the
    // programs never look at it).
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(b"vgil");
    if f.len() < 64 {
        f.resize(64, 0);
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_addresses_where_the_programs_read_them() {
        let f = udp_frame(
            "192.0.2.1".parse().expect("ip"),
            "203.0.113.5".parse().expect("ip"),
        )
        .expect("v4");
        assert_eq!(f.len(), 64);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14 + 12..14 + 16], &[192, 0, 2, 1]);
        assert_eq!(&f[14 + 16..14 + 20], &[203, 0, 113, 5]);
        let f = udp_frame(
            "fd00::1".parse().expect("ip"),
            "fd00::2".parse().expect("ip"),
        )
        .expect("v6");
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14 + 8], 0xfd);
        assert_eq!(f[14 + 39], 2);
        assert!(udp_frame(
            "fd00::1".parse().expect("ip"),
            "10.0.0.1".parse().expect("ip")
        )
        .is_none());
    }
}
