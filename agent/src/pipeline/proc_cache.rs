//! What the agent knows about live processes, for enrichment: seeded from
//! `/proc` at start-up, then kept current from exec, fork and exit events.
//! Bounded: past `max_entries` the least recently used process is evicted
//! and counted, so a fork bomb cannot grow the agent without limit.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::pipeline::event::{ExecEvent, ForkEvent};

#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    pub ppid: u32,
    pub uid: u32,
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    /// Arguments joined by spaces (Sigma's `ParentCommandLine` for children).
    pub cmdline: Arc<str>,
    /// Clock ticks since boot (`/proc/PID/stat` field 22); None when not
    /// known (a fork seen without its exec).
    pub start_time: Option<u64>,
}

pub struct ProcessCache {
    entries: LruCache<u32, ProcInfo>,
    /// Live processes pushed out by the bound.
    pub evicted: u64,
}

impl ProcessCache {
    pub fn new(max_entries: usize) -> Self {
        let cap = NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        ProcessCache {
            entries: LruCache::new(cap),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn insert(&mut self, pid: u32, info: ProcInfo) {
        if let Some((old_pid, _)) = self.entries.push(pid, info) {
            if old_pid != pid {
                self.evicted += 1;
            }
        }
    }

    pub fn get(&mut self, pid: u32) -> Option<&ProcInfo> {
        self.entries.get(&pid)
    }

    pub fn on_exec(&mut self, e: &ExecEvent, exe: &str, start_time: Option<u64>) -> ProcInfo {
        let ppid = e
            .ppid
            .or_else(|| self.entries.peek(&e.pid).map(|p| p.ppid))
            .unwrap_or(0);
        let info = ProcInfo {
            ppid,
            uid: e.uid,
            comm: Arc::from(e.comm.as_str()),
            exe: Arc::from(exe),
            cmdline: Arc::from(e.argv.join(" ")),
            start_time,
        };
        self.insert(e.pid, info.clone());
        info
    }

    pub fn on_fork(&mut self, f: &ForkEvent) {
        if f.maybe_thread && self.entries.contains(&f.child_pid) {
            return;
        }
        let parent = self.entries.peek(&f.parent_pid).cloned();
        let info = match parent {
            // The child's own start time is not the parent's.
            Some(p) => ProcInfo {
                ppid: f.parent_pid,
                start_time: None,
                ..p
            },
            None => ProcInfo {
                ppid: f.parent_pid,
                uid: 0,
                comm: Arc::from(""),
                exe: Arc::from(""),
                cmdline: Arc::from(""),
                start_time: None,
            },
        };
        self.insert(f.child_pid, info);
    }

    /// Returns what we knew of an exiting process. The entry stays (until
    /// the LRU bound or a fork/exec reusing the pid replaces it) so flows and
    /// closes reported after the exit can still name their process.
    pub fn on_exit(&mut self, pid: u32) -> Option<ProcInfo> {
        self.entries.peek(&pid).cloned()
    }

    /// Seeds the cache from `/proc`; returns how many processes were read.
    pub fn seed_from_proc(&mut self) -> usize {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut n = 0;
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(info) = read_proc(pid) {
                self.insert(pid, info);
                n += 1;
            }
        }
        n
    }
}

/// Reads one process from `/proc/<pid>`; None if it vanished meanwhile.
pub fn read_proc(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, ppid) = parse_stat(&stat)?;
    let start_time = crate::util::stat_start_time(&stat);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcInfo {
        ppid,
        uid,
        comm: Arc::from(comm),
        exe: Arc::from(exe),
        cmdline: Arc::from(cmdline.join(" ")),
        start_time,
    })
}

/// (comm, ppid) from `/proc/<pid>/stat`; comm may hold spaces and parens.
pub fn parse_stat(stat: &str) -> Option<(&str, u32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(ppid: u32, exe: &str) -> ProcInfo {
        ProcInfo {
            ppid,
            uid: 0,
            comm: Arc::from("x"),
            exe: Arc::from(exe),
            cmdline: Arc::from(exe),
            start_time: Some(7),
        }
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let stat = "123 (my (weird) proc) S 45 123 123 0 -1";
        assert_eq!(parse_stat(stat), Some(("my (weird) proc", 45)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn fork_inherits_parent_and_survives_exit_until_reuse() {
        let mut c = ProcessCache::new(8);
        c.insert(10, info(1, "/bin/bash"));
        c.on_fork(&ForkEvent {
            ktime_ns: 0,
            parent_pid: 10,
            child_pid: 11,
            maybe_thread: false,
        });
        let child = c.get(11).cloned().expect("child cached");
        assert_eq!(child.ppid, 10);
        assert_eq!(&*child.exe, "/bin/bash");
        assert_eq!(child.start_time, None, "a child is not its parent");
        assert!(c.on_exit(11).is_some());
        assert!(c.get(11).is_some(), "kept for late flows");
        c.on_fork(&ForkEvent {
            ktime_ns: 0,
            parent_pid: 1,
            child_pid: 11,
            maybe_thread: false,
        });
        assert_eq!(c.get(11).map(|p| p.ppid), Some(1), "pid reuse replaces");
    }

    #[test]
    fn bounded_and_counts_evictions() {
        let mut c = ProcessCache::new(100);
        for pid in 0..10_000 {
            c.insert(pid, info(1, "/x"));
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.evicted, 9_900);
    }

    #[test]
    fn seeds_from_proc_including_self() {
        let mut c = ProcessCache::new(100_000);
        assert!(c.seed_from_proc() > 0);
        let me = c.get(std::process::id()).expect("self in cache");
        assert!(!me.exe.is_empty());
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        assert_eq!(me.start_time, crate::util::stat_start_time(&stat));
        assert!(me.start_time.is_some());
    }
}
