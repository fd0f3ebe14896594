//! Attaches one row of the probe table (`probes.rs`) to the running kernel:
//! a helper per kind of hook, each failing with a typed `ProbeError` whose
//! text is what the probe table reports as the row's `detail`.

use std::fs::File;
use std::path::Path;

use aya::programs::{
    tc, uprobe::UProbeScope, BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType,
    CgroupSock, ProgramError, SchedClassifier, TcAttachType, TracePoint, UProbe,
};
use aya::{Btf, Ebpf};

/// Why one hook did not attach. `Load` and `Attach` both wrap aya's
/// `ProgramError` and say which step failed, so neither takes `#[from]`:
/// a bare `?` must not pick the step for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("program missing from object")]
    MissingProgram(&'static str),
    /// The object has the program under another type than the table says.
    #[error("{0}")]
    ProgramType(#[source] ProgramError),
    #[error("load: {0}")]
    Load(#[source] ProgramError),
    #[error("attach: {0}")]
    Attach(#[source] ProgramError),
    #[error("kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("no cgroup v2 mount found")]
    NoCgroup2,
    #[error("no interface accepted the TC programs")]
    NoInterface,
    #[error("libpam.so.0 not found")]
    NoLibpam,
    /// The program needs struct offsets kernel BTF did not give.
    #[error("kernel BTF lacks {0}")]
    Offsets(String),
    /// The kernel hands the program other arguments than it reads.
    #[error("the kernel's arguments are ({found}), the program reads ({wanted})")]
    TpBtfArgs { found: String, wanted: String },
}

/// The program `name` of the object as the concrete type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, ProbeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(ProbeError::ProgramType)
}

fn open_cgroup(path: &str) -> Result<File, ProbeError> {
    File::open(path).map_err(|source| ProbeError::Open {
        path: path.to_string(),
        source,
    })
}

pub fn tracepoint(
    ebpf: &mut Ebpf,
    prog_name: &'static str,
    category: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let p: &mut TracePoint = program(ebpf, prog_name)?;
    p.load().map_err(ProbeError::Load)?;
    p.attach(category, name).map_err(ProbeError::Attach)?;
    Ok(())
}

pub fn btf_tracepoint(
    ebpf: &mut Ebpf,
    prog_name: &'static str,
    name: &str,
) -> Result<(), ProbeError> {
    let btf = Btf::from_sys_fs()?;
    let p: &mut BtfTracePoint = program(ebpf, prog_name)?;
    p.load(name, &btf).map_err(ProbeError::Load)?;
    p.attach().map_err(ProbeError::Attach)?;
    Ok(())
}

/// Attaches every program in `progs` (entry and return probes) to `symbol`.
pub fn uprobes(
    ebpf: &mut Ebpf,
    progs: &[&'static str],
    symbol: &str,
    lib: &Path,
) -> Result<(), ProbeError> {
    for &name in progs {
        let p: &mut UProbe = program(ebpf, name)?;
        p.load().map_err(ProbeError::Load)?;
        p.attach(symbol, lib, UProbeScope::AllProcesses)
            .map_err(ProbeError::Attach)?;
    }
    Ok(())
}

/// cgroup_skb: the first program on ingress, the second on egress.
pub fn cgroup_skb(ebpf: &mut Ebpf, progs: &[&'static str], path: &str) -> Result<(), ProbeError> {
    let kinds = [CgroupSkbAttachType::Ingress, CgroupSkbAttachType::Egress];
    for (&prog_name, kind) in progs.iter().zip(kinds) {
        let cgroup = open_cgroup(path)?;
        let p: &mut CgroupSkb = program(ebpf, prog_name)?;
        p.load().map_err(ProbeError::Load)?;
        p.attach(cgroup, kind, CgroupAttachMode::Single)
            .map_err(ProbeError::Attach)?;
    }
    Ok(())
}

pub fn sock_create(ebpf: &mut Ebpf, prog_name: &'static str, path: &str) -> Result<(), ProbeError> {
    let cgroup = open_cgroup(path)?;
    let p: &mut CgroupSock = program(ebpf, prog_name)?;
    p.load().map_err(ProbeError::Load)?;
    p.attach(cgroup, CgroupAttachMode::Single)
        .map_err(ProbeError::Attach)?;
    Ok(())
}

/// Interfaces of this process's network namespace (not /sys, which shows
/// the namespace sysfs was mounted in).
fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = crate::enforce::attach::interfaces()
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    names.sort();
    names
}

/// TC clsact: the first program on ingress, the second on egress, on every
/// interface that takes both; returns those interfaces.
pub fn tc_clsact(ebpf: &mut Ebpf, progs: &[&'static str]) -> Result<Vec<String>, ProbeError> {
    let kinds = [TcAttachType::Ingress, TcAttachType::Egress];
    for &prog_name in progs {
        let p: &mut SchedClassifier = program(ebpf, prog_name)?;
        p.load().map_err(ProbeError::Load)?;
    }
    let mut attached = Vec::new();
    for iface in interfaces() {
        let mut ok = true;
        for (&prog_name, kind) in progs.iter().zip(kinds) {
            let p: &mut SchedClassifier = program(ebpf, prog_name)?;
            // TCX links (6.6+) need no qdisc, and one added would outlive
            // the agent: a clsact qdisc is added only for a netlink attach
            // that failed without one (an existing one is fine).
            ok &= p.attach(&iface, kind).is_ok() || {
                let _ = tc::qdisc_add_clsact(&iface);
                p.attach(&iface, kind).is_ok()
            };
        }
        if ok {
            attached.push(iface);
        }
    }
    if attached.is_empty() {
        Err(ProbeError::NoInterface)
    } else {
        Ok(attached)
    }
}
