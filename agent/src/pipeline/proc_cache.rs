//! What the agent knows about live processes, for enrichment: seeded from
//! `/proc` at start-up, then kept current from exec, fork and exit events.
//! Bounded: past `max_entries` the least recently used process is evicted
//! and counted, so a fork bomb cannot grow the agent without limit. Each
//! process it knows the start time of has a GUID ([`super::guid`]), and
//! each knows its parent's GUID as it was when the process started.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::pipeline::event::{ExecEvent, ForkEvent};
use crate::pipeline::guid::Guids;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    pub ppid: u32,
    pub uid: u32,
    pub comm: Arc<str>,
    pub exe: Arc<str>,
    /// Arguments joined by spaces (Sigma's `ParentCommandLine` for children).
    pub cmdline: Arc<str>,
    /// Clock ticks since boot (`/proc/PID/stat` field 22); None when not
    /// known (a fork the kernel could not read the child of).
    pub start_time: Option<u64>,
    /// From the pid and start time; None when the start time is unknown.
    pub guid: Option<Arc<str>>,
    /// The parent's GUID when this process started (or was first seen).
    pub parent_guid: Option<Arc<str>>,
}

pub struct ProcessCache {
    entries: LruCache<u32, ProcInfo>,
    guids: Guids,
    /// Live processes pushed out by the bound.
    pub evicted: u64,
}

impl ProcessCache {
    /// GUIDs from this host's boot id.
    pub fn new(max_entries: usize) -> Self {
        Self::with_guids(max_entries, Guids::from_host())
    }

    pub fn with_guids(max_entries: usize, guids: Guids) -> Self {
        let cap = NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        ProcessCache {
            entries: LruCache::new(cap),
            guids,
            evicted: 0,
        }
    }

    /// The GUID of a process, when its start time is known.
    pub fn guid_of(&self, pid: u32, start_time: Option<u64>) -> Option<Arc<str>> {
        start_time.map(|t| self.guids.guid(pid, t))
    }

    fn guid_of_live(&self, pid: u32) -> Option<Arc<str>> {
        self.entries.peek(&pid).and_then(|p| p.guid.clone())
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

    /// Like [`Self::get`], without marking the process recently used.
    pub fn peek(&self, pid: u32) -> Option<&ProcInfo> {
        self.entries.peek(&pid)
    }

    pub fn on_exec(&mut self, e: &ExecEvent, exe: &str, start_time: Option<u64>) -> ProcInfo {
        let before = self.entries.peek(&e.pid);
        let ppid = e.ppid.or_else(|| before.map(|p| p.ppid)).unwrap_or(0);
        // The process that forked keeps its parent across exec, even one
        // that exited since (its pid may be someone else's now).
        let parent_guid = before
            .filter(|p| p.ppid == ppid && p.start_time.is_some() && p.start_time == start_time)
            .and_then(|p| p.parent_guid.clone())
            .or_else(|| self.guid_of_live(ppid));
        let info = ProcInfo {
            ppid,
            uid: e.uid,
            comm: Arc::from(e.comm.as_str()),
            exe: Arc::from(exe),
            cmdline: Arc::from(e.argv.join(" ")),
            start_time,
            guid: self.guid_of(e.pid, start_time),
            parent_guid,
        };
        self.insert(e.pid, info.clone());
        info
    }

    pub fn on_fork(&mut self, f: &ForkEvent) {
        if f.maybe_thread && self.entries.contains(&f.child_pid) {
            return;
        }
        let parent = self.entries.peek(&f.parent_pid).cloned();
        let start_time = f.start_boottime_ns.map(crate::util::ns_to_clock_ticks);
        let guid = self.guid_of(f.child_pid, start_time);
        let info = match parent {
            // The child's own start time is not the parent's.
            Some(p) => ProcInfo {
                ppid: f.parent_pid,
                start_time,
                parent_guid: p.guid.clone(),
                guid,
                ..p
            },
            None => ProcInfo {
                ppid: f.parent_pid,
                uid: 0,
                comm: Arc::from(""),
                exe: Arc::from(""),
                cmdline: Arc::from(""),
                start_time,
                guid,
                parent_guid: None,
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
            if let Some(mut info) = read_proc(pid) {
                info.guid = self.guid_of(pid, info.start_time);
                self.insert(pid, info);
                n += 1;
            }
        }
        // Parents are read in no particular order: link them afterwards.
        let guids: std::collections::HashMap<u32, Arc<str>> = self
            .entries
            .iter()
            .filter_map(|(pid, p)| Some((*pid, p.guid.clone()?)))
            .collect();
        for (_, p) in self.entries.iter_mut() {
            p.parent_guid = guids.get(&p.ppid).cloned();
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
        guid: None,
        parent_guid: None,
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
            guid: None,
            parent_guid: None,
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
            start_boottime_ns: None,
        });
        let child = c.get(11).cloned().expect("child cached");
        assert_eq!(child.ppid, 10);
        assert_eq!(&*child.exe, "/bin/bash");
        assert_eq!(child.start_time, None, "a child is not its parent");
        assert_eq!(child.guid, None, "no start time, no GUID");
        assert!(c.on_exit(11).is_some());
        assert!(c.get(11).is_some(), "kept for late flows");
        c.on_fork(&ForkEvent {
            ktime_ns: 0,
            parent_pid: 1,
            child_pid: 11,
            maybe_thread: false,
            start_boottime_ns: None,
        });
        assert_eq!(c.get(11).map(|p| p.ppid), Some(1), "pid reuse replaces");
    }

    fn exec(pid: u32, ppid: u32, start_ns: u64) -> ExecEvent {
        ExecEvent {
            ktime_ns: 0,
            pid,
            tid: pid,
            ppid: Some(ppid),
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            comm: "sh".into(),
            filename: "/bin/sh".into(),
            argv: vec![],
            argv_truncated: false,
            argv_unavailable: false,
            start_boottime_ns: Some(start_ns),
            exe_file: None,
            auid: None,
            exe_links: None,
            exe_name: None,
        }
    }

    #[test]
    fn a_process_keeps_its_guid_across_exec_and_knows_its_parents() {
        let mut c = ProcessCache::with_guids(64, Guids::new("boot-a"));
        let tick = 1_000_000_000 / ticks_per_s();
        c.on_exec(&exec(10, 1, 500 * tick), "/bin/bash", Some(500));
        let parent = c.get(10).and_then(|p| p.guid.clone()).expect("parent guid");
        c.on_fork(&ForkEvent {
            ktime_ns: 0,
            parent_pid: 10,
            child_pid: 11,
            maybe_thread: false,
            start_boottime_ns: Some(900 * tick),
        });
        let forked = c.get(11).cloned().expect("child");
        assert_eq!(forked.start_time, Some(900));
        assert_eq!(forked.parent_guid.as_deref(), Some(&*parent));
        let child = forked.guid.clone().expect("child guid");
        assert_ne!(child, parent);
        // The parent exits and its pid is reused before the child execs:
        // the child's parent is still the bash that forked it.
        c.on_exec(&exec(10, 1, 950 * tick), "/usr/bin/imposter", Some(950));
        let after = c.on_exec(&exec(11, 10, 900 * tick), "/usr/bin/id", Some(900));
        assert_eq!(after.guid.as_deref(), Some(&*child), "exec keeps the GUID");
        assert_eq!(after.parent_guid.as_deref(), Some(&*parent));
        // A pid reused by another process gets another GUID.
        let reused = c.on_exec(&exec(11, 10, 990 * tick), "/usr/bin/id", Some(990));
        assert_ne!(reused.guid.as_deref(), Some(&*child));
        assert_ne!(reused.parent_guid.as_deref(), Some(&*parent));
    }

    fn ticks_per_s() -> u64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        hz as u64
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
        let me = me.clone();
        assert_eq!(me.guid, c.guid_of(std::process::id(), me.start_time));
        let parent = c.get(me.ppid).and_then(|p| p.guid.clone());
        assert!(parent.is_some(), "the test's parent is seeded too");
        assert_eq!(me.parent_guid, parent);
    }
}
