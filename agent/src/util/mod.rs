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

/// Hex SHA-256 of a regular file up to `max` bytes; `None` when it cannot
/// be read, is not a regular file, or is larger. Opened without following
/// a final symlink, so a path swapped for a link hashes nothing.
pub fn file_sha256(path: &std::path::Path, max: u64) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut r = f.take(max + 1);
    loop {
        let n = r.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_hashed_links_and_large_files_are_not() {
        let dir = std::env::temp_dir().join(format!("vigil-sha-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("f");
        std::fs::write(&f, b"abc").expect("write");
        assert_eq!(
            file_sha256(&f, 3).as_deref(),
            Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(file_sha256(&f, 2), None, "over the cap");
        let l = dir.join("l");
        std::os::unix::fs::symlink(&f, &l).expect("link");
        assert_eq!(file_sha256(&l, 3), None, "a link is not followed");
        assert_eq!(file_sha256(&dir, 3), None, "a directory");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
