//! Small helpers every component may use: clocks, record ids and atomic
//! state files. Nothing here depends on another module of the agent.

pub mod clock;
pub mod id;
pub mod statefile;

/// Shells worth a reverse-shell check at exec.
pub fn is_shell(exe: &str) -> bool {
    matches!(
        exe.rsplit('/').next().unwrap_or(""),
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "busybox" | "fish"
    )
}

/// Field 22 (starttime, clock ticks since boot) of a `/proc/<pid>/stat`
/// line; comm (field 2) may hold spaces and parentheses.
pub fn stat_start_time(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    // Fields after comm start at 3 (state).
    after.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Nanoseconds since boot as clock ticks, the unit of `/proc/<pid>/stat`
/// field 22 (the kernel's `nsec_to_clock_t` of `task->start_boottime`).
pub fn ns_to_clock_ticks(ns: u64) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    ns / (1_000_000_000 / hz)
}
