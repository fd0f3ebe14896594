//! The kernel's per-program run-time accounting (`bpf_stats`). Enabled
//! through `BPF_ENABLE_STATS`, which holds it on only while the returned
//! descriptor is open, so an agent that exits (or crashes) leaves the host
//! as it found it, unlike writing `kernel.bpf_stats_enabled`. While on,
//! every run of every program on the host pays two clock reads and a
//! per-CPU counter update (measured in docs/performance.md), so the agent
//! asks for it only when `metrics.bpf_stats` is set.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
/// `enum bpf_stats_type`: the only kind the kernel has.
const BPF_STATS_RUN_TIME: u32 = 0;

/// Turns run-time accounting on until the descriptor is dropped.
pub fn enable_run_time() -> std::io::Result<OwnedFd> {
    // `enable_stats` member of union bpf_attr: one u32, the rest zero.
    let mut attr = [0u32; 2];
    attr[0] = BPF_STATS_RUN_TIME;
    // SAFETY: attr is a valid, zero-padded bpf_attr for BPF_ENABLE_STATS;
    // the kernel only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `struct bpf_prog_info` as far as `recursion_misses` (uapi, 5.12+).
const PROG_INFO_LEN: usize = 232;
const INFO_ID: usize = 4;
const INFO_RECURSION_MISSES: usize = 208;

/// What one `BPF_OBJ_GET_INFO_BY_FD` says of a program beyond aya's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    /// Runs the kernel skipped because a BPF program was already running
    /// on that CPU (tracepoint programs: any tracing program; `tp_btf`:
    /// the same one). Each is an event lost before the ring buffer, with
    /// no reserve failure to show for it. Counted whether or not
    /// `bpf_stats` is on; `None` on a kernel older than the counter.
    pub recursion_misses: Option<u64>,
}

/// The kernel's `struct bpf_prog_info` for `fd`, and the bytes it filled.
fn raw_info(fd: BorrowedFd<'_>) -> std::io::Result<([u8; PROG_INFO_LEN], usize)> {
    let mut bytes = [0u8; PROG_INFO_LEN];
    // `info` member of union bpf_attr: bpf_fd, info_len, info pointer.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: PROG_INFO_LEN as u32,
        info: bytes.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes, which the kernel
    // fills (up to the size it knows) and writes the length it used back.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((bytes, (attr.info_len as usize).min(PROG_INFO_LEN)))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_ne_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// Reads the program's info from the kernel.
pub fn prog_info(fd: BorrowedFd<'_>) -> std::io::Result<ProgInfo> {
    let (bytes, used) = raw_info(fd)?;
    Ok(ProgInfo {
        id: u32_at(&bytes, INFO_ID),
        recursion_misses: (used >= INFO_RECURSION_MISSES + 8)
            .then(|| u64_at(&bytes, INFO_RECURSION_MISSES)),
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    #[ignore = "needs root: loads a kernel program; cargo xtask test runs it"]
    fn prog_info_reads_the_kernels_layout() {
        let mut ebpf = crate::kernel::loader::load_detached().expect("load the kernel object");
        let prog: &mut aya::programs::CgroupSkb = ebpf
            .program_mut(agent_common::maps::prog::FLOW_CG_EGRESS)
            .expect("program")
            .try_into()
            .expect("cgroup_skb");
        prog.load().expect("load");
        let aya_info = prog.info().expect("aya info");
        let fd = prog.fd().expect("fd");
        let info = prog_info(fd.as_fd()).expect("info");
        assert_eq!(info.id, aya_info.id());
        assert_eq!(info.recursion_misses, Some(0), "a program never run");
        // recursion_misses sits between run_cnt (200) and verified_insns
        // (216): the neighbour read where aya reads it pins the layout.
        let (bytes, used) = raw_info(fd.as_fd()).expect("raw info");
        assert!(used >= 220, "{used}");
        assert_eq!(
            Some(u32_at(&bytes, 216)),
            aya_info.verified_instruction_count()
        );
        assert!(u32_at(&bytes, 216) > 0);
    }
}
