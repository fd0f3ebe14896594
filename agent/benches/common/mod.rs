//! Helpers every bench uses (`mod common;` in each bench file).
#![allow(dead_code)] // each bench uses its own subset

/// Keeps the measuring thread on CPU 0, so figures are one core's.
pub fn pin_to_one_core() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET on index 0 stays in bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU seconds used by this thread: wall time on a shared machine would
/// count the other processes' turns as ours.
pub fn thread_cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}
