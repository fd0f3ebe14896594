//! Loads the kernel object and attaches its programs through a probe table:
//! each hook has tiers, the first that attaches wins, and every outcome is
//! reported (what attached, what fell back, what is missing and why).

use std::collections::HashMap;
use std::fs::File;

use agent_common::{maps, maps::prog, AgentConfig, OFFSET_UNKNOWN};
use aya::programs::{
    tc, uprobe::UProbeScope, BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType,
    CgroupSock, SchedClassifier, TcAttachType, TracePoint, UProbe,
};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::config::{Config, FlowAttach};
use crate::kernel::btf::Btf as KernelBtf;
use crate::kernel::tracefs;
use crate::record::ProbeRow;

/// The kernel programs, built by build.rs from agent-ebpf.
static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(
        "loading the kernel programs failed: {0}. vigil needs root with CAP_BPF, CAP_PERFMON, \
         CAP_NET_ADMIN and CAP_SYS_ADMIN, and a kernel with BPF ring buffers (5.8+)"
    )]
    Load(#[from] aya::EbpfError),
    #[error("required hook {name} ({hook}) could not be attached: {reason}")]
    Required {
        name: &'static str,
        hook: String,
        reason: String,
    },
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeRow>,
    pub config: AgentConfig,
}

fn tp_offsets(root: &str, category: &str, name: &str) -> HashMap<String, (u32, u32)> {
    tracefs::read_format(root, category, name).unwrap_or_default()
}

/// Resolves every offset the kernel programs need on this kernel.
pub fn agent_config(root: &str) -> (AgentConfig, Vec<String>) {
    let mut c = AgentConfig::DEFAULT;
    let mut missing = Vec::new();
    c.agent_tgid = std::process::id();
    match KernelBtf::from_sys_fs() {
        Ok(btf) => {
            let mut field = |s: &str, f: &str| {
                btf.member_offset(s, f).unwrap_or_else(|| {
                    missing.push(format!("{s}.{f}"));
                    OFFSET_UNKNOWN
                })
            };
            c.task_real_parent = field("task_struct", "real_parent");
            c.task_tgid = field("task_struct", "tgid");
            c.task_pid = field("task_struct", "pid");
            c.task_mm = field("task_struct", "mm");
            c.task_exit_code = field("task_struct", "exit_code");
            c.mm_arg_start = field("mm_struct", "arg_start");
            c.mm_arg_end = field("mm_struct", "arg_end");
            let common = field("sock", "__sk_common");
            let net = field("sock_common", "skc_net");
            if common != OFFSET_UNKNOWN && net != OFFSET_UNKNOWN {
                c.sock_net = common + net;
            }
        }
        Err(e) => missing.push(format!("kernel BTF ({e})")),
    }
    let get = |m: &HashMap<String, (u32, u32)>, name: &str, default: u32| {
        m.get(name).map(|&(o, _)| o).unwrap_or(default)
    };
    let exec = tp_offsets(root, "sched", "sched_process_exec");
    c.tp_exec_filename = get(&exec, "filename", c.tp_exec_filename);
    let exit = tp_offsets(root, "sched", "sched_process_exit");
    c.tp_exit_group_dead = get(&exit, "group_dead", OFFSET_UNKNOWN);
    let fork = tp_offsets(root, "sched", "sched_process_fork");
    c.tp_fork_parent_pid = get(&fork, "parent_pid", c.tp_fork_parent_pid);
    c.tp_fork_child_pid = get(&fork, "child_pid", c.tp_fork_child_pid);
    let sk = tp_offsets(root, "sock", "inet_sock_set_state");
    c.tp_sk_skaddr = get(&sk, "skaddr", c.tp_sk_skaddr);
    c.tp_sk_oldstate = get(&sk, "oldstate", c.tp_sk_oldstate);
    c.tp_sk_newstate = get(&sk, "newstate", c.tp_sk_newstate);
    c.tp_sk_sport = get(&sk, "sport", c.tp_sk_sport);
    c.tp_sk_dport = get(&sk, "dport", c.tp_sk_dport);
    c.tp_sk_family = get(&sk, "family", c.tp_sk_family);
    c.tp_sk_protocol = get(&sk, "protocol", c.tp_sk_protocol);
    c.tp_sk_saddr = get(&sk, "saddr", c.tp_sk_saddr);
    c.tp_sk_daddr = get(&sk, "daddr", c.tp_sk_daddr);
    c.tp_sk_saddr_v6 = get(&sk, "saddr_v6", c.tp_sk_saddr_v6);
    c.tp_sk_daddr_v6 = get(&sk, "daddr_v6", c.tp_sk_daddr_v6);
    let rst = tp_offsets(root, "tcp", "tcp_send_reset");
    c.tp_rst_skaddr = get(&rst, "skaddr", c.tp_rst_skaddr);
    c.tp_rst_saddr = get(&rst, "saddr", c.tp_rst_saddr);
    c.tp_rst_daddr = get(&rst, "daddr", c.tp_rst_daddr);
    let openat = tp_offsets(root, "syscalls", "sys_enter_openat");
    c.tp_openat_filename = get(&openat, "filename", c.tp_openat_filename);
    c.tp_openat_flags = get(&openat, "flags", c.tp_openat_flags);
    (c, missing)
}

/// The first cgroup v2 mount, preferring the unified root at /sys/fs/cgroup.
pub fn cgroup2_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(str::to_string))?
        })
        .collect();
    found.sort_by_key(|p| p != "/sys/fs/cgroup");
    found.into_iter().next()
}

struct Probes {
    rows: Vec<ProbeRow>,
}

impl Probes {
    fn push(&mut self, name: &str, hook: &str, tier: u8, result: &Result<(), String>) {
        let (state, detail) = match result {
            Ok(()) => ("attached", String::new()),
            Err(e) => ("failed", e.clone()),
        };
        self.rows.push(ProbeRow {
            name: name.to_string(),
            hook: hook.to_string(),
            tier,
            state: state.to_string(),
            detail,
        });
    }

    fn note(&mut self, name: &str, hook: &str, state: &str, detail: String) {
        self.rows.push(ProbeRow {
            name: name.to_string(),
            hook: hook.to_string(),
            tier: 0,
            state: state.to_string(),
            detail,
        });
    }
}

fn tracepoint(ebpf: &mut Ebpf, prog_name: &str, category: &str, name: &str) -> Result<(), String> {
    let p: &mut TracePoint = ebpf
        .program_mut(prog_name)
        .ok_or("program missing from object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    p.load().map_err(|e| format!("load: {e}"))?;
    p.attach(category, name)
        .map_err(|e| format!("attach: {e}"))?;
    Ok(())
}

fn btf_tracepoint(ebpf: &mut Ebpf, prog_name: &str, name: &str) -> Result<(), String> {
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog_name)
        .ok_or("program missing from object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    p.load(name, &btf).map_err(|e| format!("load: {e}"))?;
    p.attach().map_err(|e| format!("attach: {e}"))?;
    Ok(())
}

fn pam_uprobes(ebpf: &mut Ebpf, lib: &std::path::Path) -> Result<(), String> {
    for name in [prog::PAM_ENTER, prog::PAM_EXIT] {
        let p: &mut UProbe = ebpf
            .program_mut(name)
            .ok_or("program missing from object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("load: {e}"))?;
        p.attach("pam_authenticate", lib, UProbeScope::AllProcesses)
            .map_err(|e| format!("attach: {e}"))?;
    }
    Ok(())
}

fn cgroup_flows(ebpf: &mut Ebpf, path: &str) -> Result<(), String> {
    for (prog_name, kind) in [
        (prog::FLOW_CG_INGRESS, CgroupSkbAttachType::Ingress),
        (prog::FLOW_CG_EGRESS, CgroupSkbAttachType::Egress),
    ] {
        let cgroup = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
        let p: &mut CgroupSkb = ebpf
            .program_mut(prog_name)
            .ok_or("program missing from object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("load: {e}"))?;
        p.attach(cgroup, kind, CgroupAttachMode::Single)
            .map_err(|e| format!("attach: {e}"))?;
    }
    Ok(())
}

fn sock_create(ebpf: &mut Ebpf, path: &str) -> Result<(), String> {
    let cgroup = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let p: &mut CgroupSock = ebpf
        .program_mut(prog::SOCK_CREATE)
        .ok_or("program missing from object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    p.load().map_err(|e| format!("load: {e}"))?;
    p.attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| format!("attach: {e}"))?;
    Ok(())
}

fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn tc_flows(ebpf: &mut Ebpf) -> Result<Vec<String>, String> {
    for (prog_name, _) in [
        (prog::FLOW_TC_INGRESS, TcAttachType::Ingress),
        (prog::FLOW_TC_EGRESS, TcAttachType::Egress),
    ] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog_name)
            .ok_or("program missing from object")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        p.load().map_err(|e| format!("load: {e}"))?;
    }
    let mut attached = Vec::new();
    for iface in interfaces() {
        // An existing clsact qdisc is fine; TCX links need none at all.
        let _ = tc::qdisc_add_clsact(&iface);
        let mut ok = true;
        for (prog_name, kind) in [
            (prog::FLOW_TC_INGRESS, TcAttachType::Ingress),
            (prog::FLOW_TC_EGRESS, TcAttachType::Egress),
        ] {
            let p: Result<&mut SchedClassifier, _> = ebpf
                .program_mut(prog_name)
                .ok_or("program missing from object")?
                .try_into();
            if let Ok(p) = p {
                ok &= p.attach(&iface, kind).is_ok();
            }
        }
        if ok {
            attached.push(iface);
        }
    }
    if attached.is_empty() {
        Err("no interface accepted the TC programs".to_string())
    } else {
        Ok(attached)
    }
}

pub fn load(cfg: &Config) -> Result<Loaded, LoaderError> {
    let root = tracefs::ensure_mounted()?;
    let (mut config, missing) = agent_config(root);
    // libpam's private layout, verified against the installed build first.
    let libpam = crate::kernel::pam::find_libpam();
    let pam_check = match &libpam {
        Some(lib) => crate::kernel::pam::verify_offsets(lib),
        None => Err("libpam.so.0 not installed".to_string()),
    };
    if let Ok(o) = &pam_check {
        config.pam_service = o.service;
        config.pam_user = o.user;
        config.pam_rhost = o.rhost;
    }
    let mut loader = EbpfLoader::new();
    loader
        .override_global(maps::CONFIG, &config, true)
        .map_max_entries(maps::FLOWS, cfg.flows.max_entries);
    let mut ebpf = loader.load(KERNEL_OBJECT)?;
    let mut probes = Probes { rows: Vec::new() };
    if !missing.is_empty() {
        probes.note(
            "kernel_offsets",
            "BTF",
            "degraded",
            format!("unresolved: {}", missing.join(", ")),
        );
    }

    // Required: the process and TCP lifecycle tracepoints.
    for (name, prog_name, category, tp) in [
        ("exec", prog::EXEC, "sched", "sched_process_exec"),
        ("exit", prog::EXIT, "sched", "sched_process_exit"),
        ("tcp_state", prog::SOCK_STATE, "sock", "inet_sock_set_state"),
    ] {
        let hook = format!("tracepoint/{category}/{tp}");
        let r = tracepoint(&mut ebpf, prog_name, category, tp);
        probes.push(name, &hook, 1, &r);
        if let Err(reason) = r {
            return Err(LoaderError::Required { name, hook, reason });
        }
    }

    // Optional: resets to closed ports (inbound scans).
    let r = tracepoint(&mut ebpf, prog::TCP_RESET, "tcp", "tcp_send_reset");
    probes.push("tcp_refused", "tracepoint/tcp/tcp_send_reset", 1, &r);

    // Optional: files written by network-facing processes.
    let r = tracepoint(&mut ebpf, prog::FILE_WRITE, "syscalls", "sys_enter_openat");
    probes.push("file_write", "tracepoint/syscalls/sys_enter_openat", 1, &r);

    // Optional: authentication results from libpam.
    match &libpam {
        Some(lib) => {
            let r = pam_uprobes(&mut ebpf, lib);
            let hook = format!("uprobe {}:pam_authenticate", lib.display());
            probes.push("auth", &hook, 1, &r);
            if let Err(e) = &pam_check {
                probes.note(
                    "auth_fields",
                    "libpam struct pam_handle",
                    "degraded",
                    format!("user and rhost not reported: {e}"),
                );
            }
        }
        None => probes.note(
            "auth",
            "uprobe pam_authenticate",
            "failed",
            "libpam.so.0 not found".into(),
        ),
    }

    // fork: tp_btf tells threads from processes; the tracepoint cannot.
    let r = btf_tracepoint(&mut ebpf, prog::FORK_BTF, "sched_process_fork");
    probes.push("fork", "tp_btf/sched_process_fork", 1, &r);
    if r.is_err() {
        let hook = "tracepoint/sched/sched_process_fork";
        let r2 = tracepoint(&mut ebpf, prog::FORK_TP, "sched", "sched_process_fork");
        probes.push("fork", hook, 2, &r2);
        if let Err(reason) = r2 {
            return Err(LoaderError::Required {
                name: "fork",
                hook: hook.to_string(),
                reason,
            });
        }
    }

    // Flow accounting: cgroup_skb sees every local socket in every netns.
    let cgroup = if cfg.flows.cgroup_path.is_empty() {
        cgroup2_root()
    } else {
        Some(cfg.flows.cgroup_path.clone())
    };
    let mut flows_ok = false;
    if cfg.flows.attach != FlowAttach::Tc {
        let r = match &cgroup {
            Some(path) => cgroup_flows(&mut ebpf, path),
            None => Err("no cgroup v2 mount found".to_string()),
        };
        let hook = format!("cgroup_skb/{}", cgroup.as_deref().unwrap_or("?"));
        probes.push("flows", &hook, 1, &r);
        flows_ok = r.is_ok();
        if let Some(path) = &cgroup {
            let r = sock_create(&mut ebpf, path);
            probes.push("socket_owner", &format!("cgroup/sock_create/{path}"), 1, &r);
        }
    }
    if !flows_ok && cfg.flows.attach != FlowAttach::Cgroup {
        let r = tc_flows(&mut ebpf);
        let hook = match &r {
            Ok(ifaces) => format!("tc/clsact {}", ifaces.join(",")),
            Err(_) => "tc/clsact".to_string(),
        };
        let r = r.map(|_| ());
        probes.push("flows", &hook, 2, &r);
        flows_ok = r.is_ok();
    }
    if !flows_ok {
        return Err(LoaderError::Required {
            name: "flows",
            hook: "cgroup_skb or tc".to_string(),
            reason: "no flow accounting hook attached (see the probe table)".to_string(),
        });
    }
    Ok(Loaded {
        ebpf,
        probes: probes.rows,
        config,
    })
}
