//! Who listens on a local TCP port, from /proc, for connections the kernel
//! accepted without an owner: a server that called listen() before the
//! agent started (services start at boot; the agent restarts) is in
//! neither of the kernel's owner maps. Read only on such an accept, and
//! remembered per port, so a busy pre-existing server costs one walk of
//! /proc per port and `TTL_NS`.

use std::collections::HashMap;

/// How long an answer (an owner, or that nobody was found) is trusted.
const TTL_NS: u64 = 60_000_000_000;
/// Ports remembered; a full table is cleared (ports with listeners are few).
const MAX_PORTS: usize = 4_096;
/// Least time between two walks of /proc: a local user who evicts the
/// kernel's listener entries (thousands of listeners) cannot make the agent
/// walk /proc without pause. An accept over budget stays without owner.
const WALK_GAP_NS: u64 = 100_000_000;

#[derive(Debug, Default)]
pub struct Listeners {
    /// Port → (owner, when it was looked up).
    by_port: HashMap<u16, (Option<u32>, u64)>,
    /// Walks of /proc made, for the agent's stats.
    pub lookups: u64,
    /// Accepts left without owner because a walk was too soon after the last.
    pub shed: u64,
    last_walk_ns: Option<u64>,
}

/// Socket inodes in LISTEN state on `port` in one `/proc/net/tcp{,6}` text.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local_port = f.get(1)?.rsplit(':').next()?;
            let listening = *f.get(3)? == "0A";
            let inode: u64 = f.get(9)?.parse().ok()?;
            (listening && u16::from_str_radix(local_port, 16).ok()? == port && inode != 0)
                .then_some(inode)
        })
        .collect()
}

/// The lowest pid holding one of `inodes` (a pre-forked server's parent,
/// as the kernel's listen-time owner would be).
fn holder(inodes: &[u64]) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    pids.into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str()))
                })
            })
            .unwrap_or(false)
    })
}

impl Listeners {
    /// The process listening on TCP `port` in the agent's network
    /// namespace, as of the last look within `TTL_NS` of `now_ns`.
    pub fn owner(&mut self, port: u16, now_ns: u64) -> Option<u32> {
        if let Some(&(pid, at)) = self.by_port.get(&port) {
            if now_ns.saturating_sub(at) < TTL_NS {
                return pid;
            }
        }
        if self
            .last_walk_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < WALK_GAP_NS)
        {
            self.shed += 1;
            return None;
        }
        self.last_walk_ns = Some(now_ns);
        self.lookups += 1;
        let mut inodes = Vec::new();
        for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
            if let Ok(text) = std::fs::read_to_string(table) {
                inodes.extend(listening_inodes(&text, port));
            }
        }
        let pid = if inodes.is_empty() {
            None
        } else {
            holder(&inodes)
        };
        if self.by_port.len() >= MAX_PORTS {
            self.by_port.clear();
        }
        self.by_port.insert(port, (pid, now_ns));
        pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 51240 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   3: garbage
";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(listening_inodes(TCP, 8000), [51234]);
        assert_eq!(listening_inodes(TCP, 22), [777]);
        assert!(listening_inodes(TCP, 443).is_empty());
        assert!(listening_inodes("", 22).is_empty());
    }

    #[test]
    fn finds_this_process_listening_and_remembers_the_answer() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut idx = Listeners::default();
        assert_eq!(idx.owner(port, 1), Some(std::process::id()));
        assert_eq!(idx.lookups, 1);
        // Within the TTL, no second walk, even after the listener closed.
        drop(l);
        assert_eq!(idx.owner(port, 2), Some(std::process::id()));
        assert_eq!(idx.lookups, 1);
        // After it, the port is looked up again and nobody listens.
        assert_eq!(idx.owner(port, 2 + TTL_NS), None);
        assert_eq!(idx.lookups, 2);
        // Another port right after a walk waits its turn, uncached.
        assert_eq!(idx.owner(port.wrapping_add(1), 3 + TTL_NS), None);
        assert_eq!((idx.lookups, idx.shed), (2, 1));
        assert!(!idx.by_port.contains_key(&port.wrapping_add(1)));
    }
}
