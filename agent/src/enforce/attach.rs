//! Loads the enforcement object with its maps pinned under the pin
//! directory and attaches it: XDP on every non-loopback interface of this
//! network namespace (native mode, generic when the driver refuses) and
//! cgroup_skb egress on the cgroup v2 root — or, for an agent scoped to its
//! network namespace, TC egress on its interfaces. Links are pinned too, so the
//! programs stay attached when the agent dies and blocks still lapse on
//! their own expiry; a later agent finds the pins and leaves them in force.

use std::ffi::CStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use agent_common::enforce as wire;
use aya::programs::links::{FdLink, LinkOrder};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use aya::{Ebpf, EbpfLoader};

use super::EnforceError;

static ENFORCE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vigil-enforce"));

/// How an interface got its XDP program.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XdpAttachment {
    pub interface: String,
    /// `native`, `generic`, `pinned` (already in force) or `failed`.
    pub mode: String,
    pub detail: String,
}

pub struct Enforcer {
    pub pin_dir: PathBuf,
    ebpf: Ebpf,
}

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there.
pub fn ensure_bpffs() -> Result<(), EnforceError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    std::fs::create_dir_all("/sys/fs/bpf")?;
    // SAFETY: valid NUL-terminated strings, null data.
    let rc = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(EnforceError::Bpffs(format!(
            "mounting bpffs at /sys/fs/bpf failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Interfaces of the caller's network namespace (not /sys, which may show
/// another namespace's view).
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut cur = list;
        while (*cur).if_index != 0 && !(*cur).if_name.is_null() {
            let name = CStr::from_ptr((*cur).if_name)
                .to_string_lossy()
                .into_owned();
            out.push(((*cur).if_index, name));
            cur = cur.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

fn netns_id() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0)
}

impl Enforcer {
    /// Loads (or re-opens) the enforcement maps and programs.
    pub fn load(pin_dir: &Path) -> Result<Enforcer, EnforceError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(pin_dir.join("links"))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(ENFORCE_OBJECT)?;
        let mut e = Enforcer {
            pin_dir: pin_dir.to_path_buf(),
            ebpf,
        };
        e.load_programs()?;
        Ok(e)
    }

    fn load_programs(&mut self) -> Result<(), EnforceError> {
        let prog_err = |name: &str, e: String| EnforceError::Program {
            name: name.to_string(),
            reason: e,
        };
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(wire::PROG_XDP)
            .ok_or_else(|| prog_err(wire::PROG_XDP, "missing from object".into()))?
            .try_into()
            .map_err(|e| prog_err(wire::PROG_XDP, format!("{e}")))?;
        xdp.load()
            .map_err(|e| prog_err(wire::PROG_XDP, format!("{e}")))?;
        let eg: &mut CgroupSkb = self
            .ebpf
            .program_mut(wire::PROG_EGRESS)
            .ok_or_else(|| prog_err(wire::PROG_EGRESS, "missing from object".into()))?
            .try_into()
            .map_err(|e| prog_err(wire::PROG_EGRESS, format!("{e}")))?;
        eg.load()
            .map_err(|e| prog_err(wire::PROG_EGRESS, format!("{e}")))?;
        Ok(())
    }

    /// The fd of a program of the object, for `BPF_PROG_TEST_RUN`; an XDP
    /// program that is not loaded by default (the benchmark's bare
    /// XDP_DROP baseline) is loaded first.
    pub fn program_fd(&mut self, name: &str) -> Result<std::os::fd::RawFd, EnforceError> {
        use std::os::fd::{AsFd, AsRawFd};
        let err = |e: String| EnforceError::Program {
            name: name.to_string(),
            reason: e,
        };
        let p = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| err("missing from object".into()))?;
        if p.fd().is_err() {
            let xdp: &mut Xdp = p.try_into().map_err(|e| err(format!("{e}")))?;
            xdp.load().map_err(|e| err(format!("{e}")))?;
        }
        let p = self
            .ebpf
            .program(name)
            .ok_or_else(|| err("missing from object".into()))?;
        let fd = p.fd().map_err(|e| err(format!("{e}")))?;
        Ok(fd.as_fd().as_raw_fd())
    }

    fn xdp_pin(&self, ifindex: u32) -> PathBuf {
        self.pin_dir
            .join("links")
            .join(format!("xdp-{}-{ifindex}", netns_id()))
    }

    /// Attaches XDP where it is not attached yet. `only` limits the
    /// interfaces (empty: every non-loopback interface).
    pub fn attach_interfaces(&mut self, only: &[String], mode: &str) -> Vec<XdpAttachment> {
        let mut out = Vec::new();
        for (ifindex, name) in interfaces() {
            if name == "lo" || (!only.is_empty() && !only.contains(&name)) {
                continue;
            }
            let pin = self.xdp_pin(ifindex);
            if pin.exists() {
                out.push(XdpAttachment {
                    interface: name,
                    mode: "pinned".to_string(),
                    detail: String::new(),
                });
                continue;
            }
            let tries: &[(XdpMode, &str)] = match mode {
                "driver" => &[(XdpMode::Driver, "native")],
                "skb" => &[(XdpMode::Skb, "generic")],
                _ => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            };
            let mut result = Err("not tried".to_string());
            for (m, label) in tries {
                result = self
                    .attach_xdp(ifindex, &name, *m, &pin)
                    .map(|_| label.to_string());
                if result.is_ok() {
                    break;
                }
            }
            out.push(match result {
                Ok(mode) => XdpAttachment {
                    interface: name,
                    mode,
                    detail: String::new(),
                },
                Err(detail) => XdpAttachment {
                    interface: name,
                    mode: "failed".to_string(),
                    detail,
                },
            });
        }
        out
    }

    fn attach_xdp(
        &mut self,
        ifindex: u32,
        name: &str,
        mode: XdpMode,
        pin: &Path,
    ) -> Result<(), String> {
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(wire::PROG_XDP)
            .ok_or("xdp program missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let id = xdp
            .attach_to_if_index(ifindex, mode)
            .map_err(|e| format!("attach to {name}: {e}"))?;
        let link = xdp.take_link(id).map_err(|e| format!("{e}"))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|e| format!("{name}: netlink-attached XDP cannot be pinned: {e}"))?;
        fd.pin(pin)
            .map_err(|e| format!("pin {}: {e}", pin.display()))?;
        Ok(())
    }

    /// Attaches the TC egress program (TCX link, pinned) to every
    /// interface of this network namespace not attached yet: egress
    /// enforcement for an agent scoped to its namespace. Returns the
    /// interfaces attached now and those that failed, with the reason.
    pub fn attach_tc_egress(&mut self, only: &[String]) -> (Vec<String>, Vec<String>) {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        let prog = wire::PROG_TC_EGRESS;
        let loaded = (|| -> Result<(), String> {
            let p: &mut SchedClassifier = self
                .ebpf
                .program_mut(prog)
                .ok_or("missing from object")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            if p.fd().is_err() {
                p.load().map_err(|e| format!("load: {e}"))?;
            }
            Ok(())
        })();
        if let Err(e) = loaded {
            failed.push(format!("{prog}: {e}"));
            return (ok, failed);
        }
        for (ifindex, name) in interfaces() {
            if name == "lo" || (!only.is_empty() && !only.contains(&name)) {
                continue;
            }
            let pin = self
                .pin_dir
                .join("links")
                .join(format!("tc-egress-{}-{ifindex}", netns_id()));
            if pin.exists() {
                continue;
            }
            let attached = (|| -> Result<(), String> {
                let p: &mut SchedClassifier = self
                    .ebpf
                    .program_mut(prog)
                    .ok_or("missing from object")?
                    .try_into()
                    .map_err(|e| format!("{e}"))?;
                let id = p
                    .attach_with_options(
                        &name,
                        TcAttachType::Egress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| format!("attach: {e}"))?;
                let link = p.take_link(id).map_err(|e| format!("{e}"))?;
                let fd: FdLink = link.try_into().map_err(|e| format!("{e}"))?;
                fd.pin(&pin)
                    .map_err(|e| format!("pin {}: {e}", pin.display()))?;
                Ok(())
            })();
            match attached {
                Ok(()) => ok.push(name),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        (ok, failed)
    }

    /// Attaches the egress program to the cgroup v2 root unless pinned already.
    pub fn attach_egress(&mut self, cgroup: &str) -> Result<&'static str, EnforceError> {
        let pin = self.pin_dir.join("links").join("egress-cgroup");
        if pin.exists() {
            return Ok("pinned");
        }
        let err = |e: String| EnforceError::Program {
            name: wire::PROG_EGRESS.to_string(),
            reason: e,
        };
        let file = File::open(cgroup).map_err(|e| err(format!("open {cgroup}: {e}")))?;
        let eg: &mut CgroupSkb = self
            .ebpf
            .program_mut(wire::PROG_EGRESS)
            .ok_or_else(|| err("missing".into()))?
            .try_into()
            .map_err(|e| err(format!("{e}")))?;
        let id = eg
            .attach(file, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
            .map_err(|e| err(format!("attach: {e}")))?;
        let link = eg.take_link(id).map_err(|e| err(format!("{e}")))?;
        let fd: FdLink = link.try_into().map_err(|e| err(format!("{e}")))?;
        fd.pin(&pin).map_err(|e| err(format!("pin: {e}")))?;
        Ok("attached")
    }
}

/// Removes every pin (links first, which detaches the programs; then the
/// maps, which frees them once nothing uses them).
pub fn detach_all(pin_dir: &Path) -> Result<usize, EnforceError> {
    let mut n = 0;
    let links = pin_dir.join("links");
    for dir in [links.as_path(), pin_dir] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().is_file() || e.file_type().map(|t| !t.is_dir()).unwrap_or(false) {
                    std::fs::remove_file(e.path())?;
                    n += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir(&links);
    let _ = std::fs::remove_dir(pin_dir);
    Ok(n)
}
