//! Process kill through a pidfd, after checking the process start time, so
//! a pid that was reused by an innocent process is never signalled. The
//! order matters: open the pidfd first, then verify; if the process is
//! replaced after the open, the pidfd still names the old one and the
//! signal fails instead of hitting the new one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::EnforceError;

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::util::stat_start_time(&stat)
}

fn pidfd_open(pid: u32) -> Result<OwnedFd, EnforceError> {
    // SAFETY: plain syscall; a non-negative return is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if fd < 0 {
        return Err(EnforceError::Kill(format!(
            "process {pid} not found: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends SIGKILL to `pid` if it is still the process that started at
/// `expected_start` (ticks). Returns the start time of what was killed.
pub fn kill(pid: u32, expected_start: Option<u64>) -> Result<u64, EnforceError> {
    if pid <= 1 {
        return Err(EnforceError::Kill(format!("refused to kill pid {pid}")));
    }
    if pid == std::process::id() {
        return Err(EnforceError::Kill(
            "refused to kill the agent itself".to_string(),
        ));
    }
    let fd = pidfd_open(pid)?;
    let started = start_time(pid)
        .ok_or_else(|| EnforceError::Kill(format!("process {pid} vanished before the check")))?;
    if let Some(want) = expected_start {
        if started != want {
            return Err(EnforceError::Kill(format!(
                "pid {pid} now belongs to another process (start time {started}, expected {want}); nothing was signalled"
            )));
        }
    }
    // SAFETY: valid pidfd, null siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        return Err(EnforceError::Kill(format!(
            "signalling {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(started)
}

/// Why freezing the cgroup at `path` (relative to the cgroup v2 root)
/// would take down more than one workload, if it would: the root, init's
/// scope, anything under system.slice (the host's services, sshd and the
/// agent among them) and any whole slice.
pub fn freeze_refusal(path: &str) -> Option<&'static str> {
    let leaf = path.rsplit('/').next().unwrap_or(path);
    if path == "/" {
        Some("the root cgroup holds the whole host")
    } else if path == "/init.scope" || path.starts_with("/init.scope/") {
        Some("init.scope holds PID 1")
    } else if path == "/system.slice" || path.starts_with("/system.slice/") {
        Some("system.slice holds the host's services (sshd, the agent, …)")
    } else if leaf.ends_with(".slice") {
        Some("a slice holds many units")
    } else {
        None
    }
}

/// Freezes the cgroup v2 of `pid` instead of killing it.
pub fn freeze(pid: u32, cgroup_root: &str) -> Result<String, EnforceError> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(|e| EnforceError::Kill(format!("process {pid}: {e}")))?;
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| EnforceError::Kill(format!("process {pid} has no cgroup v2 membership")))?;
    if let Some(why) = freeze_refusal(path) {
        return Err(EnforceError::Kill(format!(
            "refused to freeze cgroup {path} of process {pid}: {why}; nothing frozen"
        )));
    }
    let file = format!("{cgroup_root}{path}/cgroup.freeze");
    std::fs::write(&file, "1").map_err(|e| EnforceError::Kill(format!("{file}: {e}")))?;
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id();
        let a = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(a));
    }

    #[test]
    fn refuses_init_and_self() {
        assert!(kill(1, None).is_err());
        assert!(kill(std::process::id(), None).is_err());
    }

    #[test]
    fn freezing_the_host_or_its_services_is_refused() {
        for (path, refused) in [
            ("/", true),
            ("/init.scope", true),
            ("/system.slice", true),
            ("/system.slice/ssh.service", true),
            ("/system.slice/docker-1.scope/sub", true),
            ("/user.slice", true),
            ("/user.slice/user-1000.slice", true),
            ("/user.slice/user-1000.slice/session-3.scope", false),
            ("/vigil-test/app.service", false),
        ] {
            assert_eq!(freeze_refusal(path).is_some(), refused, "{path}");
        }
        // PID 1 is never frozen, wherever it lives.
        let err = freeze(1, "/sys/fs/cgroup").expect_err("pid 1");
        assert!(err.to_string().contains("nothing frozen"), "{err}");
    }

    #[test]
    fn a_reaped_pid_with_its_old_start_time_is_not_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let start = start_time(pid).expect("start");
        child.kill().expect("kill");
        child.wait().expect("reap");
        // The pid is free (or already someone else's): either way nothing
        // that started at `start` can be signalled, and a stranger is safe.
        let err = kill(pid, Some(start)).expect_err("reaped pid");
        assert!(
            err.to_string().contains("not found") || err.to_string().contains("another process"),
            "{err}"
        );
    }

    #[test]
    fn wrong_start_time_signals_nothing() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let real = start_time(pid).expect("start");
        let err = kill(pid, Some(real + 1)).expect_err("mismatch must refuse");
        assert!(err.to_string().contains("another process"), "{err}");
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "child must be alive"
        );
        kill(pid, Some(real)).expect("matching start time kills");
        let status = child.wait().expect("wait");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}
