//! The executor that changes this host: kernel blocklist and nftables
//! through [`Containment`], pidfd kill, and the quarantine. Every change is
//! an `action` in the audit log before it is reported. A kill or quarantine
//! of a protected file ([`Protection`]) is refused unless the step names it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};

use super::engine::{Executor, Outcome, Undo};
use super::protect::Protection;
use super::quarantine;
use super::record::ResponseRecord;
use crate::enforce::actions::{Action, ActionState, Verb};
use crate::enforce::cidr::Cidr;
use crate::enforce::containment::Containment;
use crate::enforce::{isolate, kill};
use crate::util::clock::monotonic_ns;

pub struct HostExecutor<'a> {
    pub containment: Option<&'a mut Containment>,
    pub state_dir: &'a Path,
    pub host: &'a str,
    pub protection: &'a mut Protection,
    /// `response.quarantine_max_bytes`.
    pub quarantine_max_bytes: u64,
}

impl HostExecutor<'_> {
    fn record(&self, mut a: Action, undo: Option<Undo>) -> Outcome {
        if let Err(e) = a.record(self.state_dir) {
            tracing::warn!("could not append to the audit log: {e}");
        }
        let undo = if a.state == ActionState::Applied {
            undo
        } else {
            None
        };
        Outcome { action: a, undo }
    }

    /// A refusal recorded as an action, with why.
    fn refuse(&self, verb: Verb, target: String, detail: String) -> Outcome {
        self.record(
            Action::new(self.host, verb, target, None, ActionState::Refused, detail),
            None,
        )
    }

    fn disabled(&self, verb: Verb, target: String) -> Outcome {
        self.record(
            Action::new(
                self.host,
                verb,
                target,
                None,
                ActionState::Failed,
                "enforcement is disabled (enforce.enabled: false)",
            ),
            None,
        )
    }
}

/// The exe of a live pid, to refuse killing a pid that was reused.
fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `path` is among the first arguments of `pid` (`sh script`).
fn runs_script(pid: u32, path: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).take(3).any(|a| a == path.as_bytes()))
        .unwrap_or(false)
}

impl Executor for HostExecutor<'_> {
    fn block(&mut self, ip: IpAddr, ttl_s: u64) -> Outcome {
        let cidr = Cidr::host(ip);
        let Some(c) = self.containment.as_deref_mut() else {
            return self.disabled(Verb::Block, cidr.to_string());
        };
        let prior = c
            .blocks
            .get(&cidr)
            .filter(|v| v.expires_ns > monotonic_ns());
        let a = c.block(&cidr, ttl_s, BLOCK_INGRESS | BLOCK_EGRESS);
        let undo = Undo::Unblock {
            target: cidr.to_string(),
            prior_expires_ns: prior.map(|p| p.expires_ns),
            prior_flags: prior.map(|p| p.flags).unwrap_or(0),
        };
        // Containment already audited the action.
        let undo = (a.state == ActionState::Applied).then_some(undo);
        Outcome { action: a, undo }
    }

    fn isolate(&mut self, ttl_s: u64) -> Outcome {
        let Some(c) = self.containment.as_deref_mut() else {
            return self.disabled(Verb::Isolate, "host".into());
        };
        let was = isolate::remaining_s().is_some();
        let a = c.isolate(ttl_s);
        // Never undo an isolation someone else put in place.
        let undo = (a.state == ActionState::Applied && !was).then_some(Undo::Unisolate);
        Outcome { action: a, undo }
    }

    fn kill(
        &mut self,
        pid: u32,
        exe: Option<&str>,
        start_time: Option<u64>,
        allow_protected: &[String],
    ) -> Outcome {
        let target = pid.to_string();
        if let Some(why) = exe.and_then(|e| self.protection.refusal(e, allow_protected)) {
            return self.refuse(Verb::Kill, target, format!("nothing signalled: {why}"));
        }
        if let (Some(want), Some(have)) = (exe, exe_of(pid)) {
            let have_s = have.to_string_lossy();
            let have_s = have_s.strip_suffix(" (deleted)").unwrap_or(&have_s);
            // A script runs as its interpreter: then its path is in argv.
            if have_s != want && !runs_script(pid, want) {
                let detail = format!("pid {pid} now runs {have_s}, not {want}; nothing signalled");
                return self.refuse(Verb::Kill, target, detail);
            }
        }
        // With the start time the alert saw, a pid reused since (same
        // executable or not) is refused by the kill itself.
        let a = match kill::kill(pid, start_time) {
            Ok(st) => Action::new(
                self.host,
                Verb::Kill,
                target,
                None,
                ActionState::Applied,
                format!("SIGKILL via pidfd, start time {st}"),
            ),
            Err(e) => Action::new(
                self.host,
                Verb::Kill,
                target,
                None,
                ActionState::Refused,
                e.to_string(),
            ),
        };
        self.record(a, None)
    }

    fn quarantine(&mut self, path: &str, allow_protected: &[String]) -> Outcome {
        if let Some(why) = self.protection.refusal(path, allow_protected) {
            return self.refuse(Verb::Quarantine, path.to_string(), why);
        }
        match quarantine::quarantine(self.state_dir, Path::new(path), self.quarantine_max_bytes) {
            Ok(m) => {
                let detail = format!(
                    "sha256 {} mode {:o} uid {} moved to quarantine/{}",
                    m.sha256, m.mode, m.uid, m.id
                );
                let a = Action::new(
                    self.host,
                    Verb::Quarantine,
                    path,
                    None,
                    ActionState::Applied,
                    detail,
                );
                self.record(
                    a,
                    Some(Undo::Restore {
                        quarantine_id: m.id,
                    }),
                )
            }
            Err(e) => {
                let a = Action::new(
                    self.host,
                    Verb::Quarantine,
                    path,
                    None,
                    ActionState::Failed,
                    e.to_string(),
                );
                self.record(a, None)
            }
        }
    }

    fn undo(&mut self, undo: &Undo) -> Outcome {
        match undo {
            Undo::Unblock {
                target,
                prior_expires_ns,
                prior_flags,
            } => {
                let Ok(cidr) = target.parse::<Cidr>() else {
                    let a = Action::new(
                        self.host,
                        Verb::Unblock,
                        target.clone(),
                        None,
                        ActionState::Failed,
                        "bad target",
                    );
                    return self.record(a, None);
                };
                let Some(c) = self.containment.as_deref_mut() else {
                    return self.disabled(Verb::Unblock, target.clone());
                };
                match prior_expires_ns.filter(|e| *e > monotonic_ns()) {
                    // Put back the block this one replaced, with its own expiry.
                    Some(exp) => {
                        let a = match c.blocks.insert(&cidr, exp, *prior_flags) {
                            Ok(()) => Action::new(
                                self.host,
                                Verb::Unblock,
                                target.clone(),
                                None,
                                ActionState::Applied,
                                "restored the earlier block",
                            ),
                            Err(e) => Action::new(
                                self.host,
                                Verb::Unblock,
                                target.clone(),
                                None,
                                ActionState::Failed,
                                e.to_string(),
                            ),
                        };
                        self.record(a, None)
                    }
                    None => Outcome {
                        action: c.unblock(&cidr),
                        undo: None,
                    },
                }
            }
            Undo::Unisolate => match self.containment.as_deref_mut() {
                Some(c) => Outcome {
                    action: c.unisolate(),
                    undo: None,
                },
                None => self.disabled(Verb::Unisolate, "host".into()),
            },
            Undo::Restore { quarantine_id } => {
                let a = match quarantine::restore(self.state_dir, quarantine_id) {
                    Ok(m) => Action::new(
                        self.host,
                        Verb::Restore,
                        m.path.display().to_string(),
                        None,
                        ActionState::Applied,
                        format!("sha256 {}", m.sha256),
                    ),
                    Err(e) => Action::new(
                        self.host,
                        Verb::Restore,
                        quarantine_id.clone(),
                        None,
                        ActionState::Failed,
                        e.to_string(),
                    ),
                };
                self.record(a, None)
            }
        }
    }

    fn active_blocks(&self) -> usize {
        self.containment
            .as_deref()
            .map(|c| c.blocks.list().len())
            .unwrap_or(0)
    }

    fn audit(&mut self, record: &ResponseRecord) {
        let v = serde_json::to_value(record).unwrap_or_default();
        if let Err(e) = crate::enforce::audit::append(self.state_dir, &v) {
            tracing::warn!("could not append to the audit log: {e}");
        }
    }

    fn host(&self) -> &str {
        self.host
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};

    use super::*;

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("vigil-exec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch");
        Scratch(d)
    }

    /// A copy of sleep outside every protected prefix, running.
    fn sleeper(dir: &Path) -> (String, Child) {
        let exe = dir.join("sleeper");
        std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
        // A test forking elsewhere in this process holds the copy's write
        // descriptor until its child execs: exec fails with ETXTBSY then.
        let mut tries = 0;
        let child = loop {
            match Command::new(&exe).arg("30").spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.expect("spawn"),
            }
        };
        // spawn returns before the child has exec'd: until then its exe and
        // start are the test binary's, and a kill check would see another
        // process (a flaky refusal under load).
        let proc_exe = format!("/proc/{}/exe", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(&proc_exe).ok().as_deref() != Some(exe.as_path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeper never exec'd"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        (exe.to_string_lossy().into_owned(), child)
    }

    fn executor<'a>(dir: &'a Path, protection: &'a mut Protection) -> HostExecutor<'a> {
        HostExecutor {
            containment: None,
            state_dir: dir,
            host: "test-host",
            protection,
            quarantine_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_protected_executable_is_not_killed_unless_the_step_names_it() {
        let s = scratch("kill-protected");
        let (exe, mut child) = sleeper(&s.0);
        let prefix = format!("{}/", s.0.display());
        let mut protection = Protection::with_dpkg_info(vec![prefix], s.0.join("no-dpkg"));
        let mut ex = executor(&s.0, &mut protection);
        let o = ex.kill(child.id(), Some(&exe), None, &[]);
        assert_eq!(o.action.state, ActionState::Refused, "{:?}", o.action);
        assert!(
            o.action.detail.contains("protected prefix"),
            "{}",
            o.action.detail
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "killed anyway"
        );
        let o = ex.kill(child.id(), Some(&exe), None, std::slice::from_ref(&exe));
        assert_eq!(o.action.state, ActionState::Applied, "{:?}", o.action);
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_pid_that_is_not_the_alerts_process_any_more_is_not_killed() {
        let s = scratch("kill-recycled");
        let (exe, mut child) = sleeper(&s.0);
        let mut protection = Protection::with_dpkg_info(Vec::new(), s.0.join("no-dpkg"));
        let mut ex = executor(&s.0, &mut protection);
        let start = kill::start_time(child.id()).expect("start time");
        // Same pid, same executable, another start: a recycled pid.
        let o = ex.kill(child.id(), Some(&exe), Some(start + 1), &[]);
        assert_eq!(o.action.state, ActionState::Refused, "{:?}", o.action);
        assert!(
            o.action.detail.contains("another process"),
            "{}",
            o.action.detail
        );
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "killed anyway"
        );
        let o = ex.kill(child.id(), Some(&exe), Some(start), &[]);
        assert_eq!(o.action.state, ActionState::Applied, "{:?}", o.action);
        assert_eq!(child.wait().expect("wait").signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_protected_file_is_not_quarantined_unless_the_step_names_it() {
        let s = scratch("quarantine-protected");
        let state = s.0.join("state");
        std::fs::create_dir_all(&state).expect("state");
        let owned = s.0.join("tool");
        std::fs::write(&owned, b"#!/bin/sh\n").expect("tool");
        let owned = owned.to_string_lossy().into_owned();
        // A package lists the file.
        let info = s.0.join("info");
        std::fs::create_dir_all(&info).expect("info");
        std::fs::write(info.join("tool.list"), format!("{owned}\n")).expect("list");
        let mut protection = Protection::with_dpkg_info(Vec::new(), info);
        let mut ex = executor(&state, &mut protection);
        let o = ex.quarantine(&owned, &[]);
        assert_eq!(o.action.state, ActionState::Refused, "{:?}", o.action);
        assert!(o.action.detail.contains("package"), "{}", o.action.detail);
        assert!(Path::new(&owned).exists(), "moved anyway");
        let o = ex.quarantine(&owned, std::slice::from_ref(&owned));
        assert_eq!(o.action.state, ActionState::Applied, "{:?}", o.action);
        assert!(!Path::new(&owned).exists());
    }
}
