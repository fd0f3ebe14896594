//! The kernel's per-program run-time accounting (`bpf_stats`). Enabled
//! through `BPF_ENABLE_STATS`, which holds it on only while the returned
//! descriptor is open, so an agent that exits (or crashes) leaves the host
//! as it found it, unlike writing `kernel.bpf_stats_enabled`. While on,
//! every run of every program on the host pays two clock reads and a
//! per-CPU counter update (measured in docs/performance.md), so the agent
//! asks for it only when `metrics.bpf_stats` is set.

use std::os::fd::{FromRawFd, OwnedFd};

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
