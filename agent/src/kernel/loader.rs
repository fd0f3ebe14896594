//! Loads the kernel object and attaches its programs by walking the probe
//! table (`probes.rs`): each hook has tiers, the first that attaches wins,
//! and every outcome is reported (what attached, what fell back, what is
//! missing and why).

use std::collections::HashMap;
use std::path::PathBuf;

use agent_common::{maps, AgentConfig, OFFSET_UNKNOWN};
use aya::{Ebpf, EbpfLoader};

use crate::config::Config;
use crate::kernel::attach::{self, ProbeError};
use crate::kernel::btf::Btf as KernelBtf;
use crate::kernel::pam::{self, PamError};
use crate::kernel::probes::{self, Hook, Probe, PROBES};
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
    /// No tier of a required row attached; `hook` lists the hooks tried.
    /// Boxed: aya's ProgramError is large, and this error travels up
    /// through the daemon's Result types.
    #[error("required hook {name} ({hook}) could not be attached: {source}")]
    Required {
        name: &'static str,
        hook: String,
        source: Box<ProbeError>,
    },
    #[error(
        "scope.netns: self needs to tell namespaces apart in the kernel, but {0} could not be \
         resolved from kernel BTF; run with scope.netns: host"
    )]
    Scope(String),
}

/// The inode number of this process's network namespace.
pub fn own_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
}

/// Sets the namespace the kernel keeps events of, when scoped; refuses to
/// run scoped on a kernel where it could not filter.
fn apply_scope(cfg: &Config, c: &mut AgentConfig) -> Result<(), LoaderError> {
    if !cfg.scope.is_own_netns() {
        return Ok(());
    }
    let needed = [
        ("task_struct.nsproxy", c.task_nsproxy),
        ("nsproxy.net_ns", c.nsproxy_net_ns),
        ("net.ns.inum", c.net_inum),
        ("sock_common.skc_net", c.sock_net),
    ];
    if let Some((name, _)) = needed.iter().find(|(_, o)| *o == OFFSET_UNKNOWN) {
        return Err(LoaderError::Scope(name.to_string()));
    }
    c.scope_netns = own_netns().ok_or_else(|| LoaderError::Scope("/proc/self/ns/net".into()))?;
    Ok(())
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub probes: Vec<ProbeRow>,
    pub config: AgentConfig,
}

fn tp_offsets(root: &str, category: &str, name: &str) -> HashMap<String, (u32, u32)> {
    tracefs::read_format(root, category, name).unwrap_or_default()
}

/// What the loader resolves on the running kernel before load.
pub struct Resolved {
    pub config: AgentConfig,
    /// Offsets not found, for the `kernel_offsets` row.
    pub missing: Vec<String>,
    /// The arguments kernel BTF gives each `tp_btf` hook of the table.
    pub tp_btf_args: HashMap<&'static str, Vec<String>>,
}

/// Resolves every offset the kernel programs need on this kernel.
pub fn agent_config(root: &str) -> Resolved {
    let mut c = AgentConfig::DEFAULT;
    let mut missing = Vec::new();
    let mut tp_btf_args = HashMap::new();
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
            c.task_start_boottime = field("task_struct", "start_boottime");
            c.task_loginuid = field("task_struct", "loginuid");
            c.task_files = field("task_struct", "files");
            c.mm_arg_start = field("mm_struct", "arg_start");
            c.mm_arg_end = field("mm_struct", "arg_end");
            c.mm_exe_file = field("mm_struct", "exe_file");
            c.files_fdt = field("files_struct", "fdt");
            c.fdt_max_fds = field("fdtable", "max_fds");
            c.fdt_fd = field("fdtable", "fd");
            c.file_inode = field("file", "f_inode");
            c.inode_ino = field("inode", "i_ino");
            c.inode_sb = field("inode", "i_sb");
            c.inode_generation = field("inode", "i_generation");
            c.sb_dev = field("super_block", "s_dev");
            c.inode_nlink = field("inode", "i_nlink");
            let sum = |a: u32, b: u32| {
                if a == OFFSET_UNKNOWN || b == OFFSET_UNKNOWN {
                    OFFSET_UNKNOWN
                } else {
                    a + b
                }
            };
            c.file_dentry = sum(field("file", "f_path"), field("path", "dentry"));
            c.dentry_name = sum(field("dentry", "d_name"), field("qstr", "name"));
            let common = field("sock", "__sk_common");
            let net = field("sock_common", "skc_net");
            if common != OFFSET_UNKNOWN && net != OFFSET_UNKNOWN {
                c.sock_net = common + net;
            }
            c.task_nsproxy = field("task_struct", "nsproxy");
            c.nsproxy_net_ns = field("nsproxy", "net_ns");
            let ns = field("net", "ns");
            let inum = field("ns_common", "inum");
            if ns != OFFSET_UNKNOWN && inum != OFFSET_UNKNOWN {
                c.net_inum = ns + inum;
            }
            // tp_btf/inet_sock_set_state only: an unresolved one fails that
            // tier's row ("kernel BTF lacks …") and the tracepoint serves,
            // so none of them degrades the offsets row.
            let sk = |s: &str, f: &str| btf.member_offset(s, f).unwrap_or(OFFSET_UNKNOWN);
            let in_common = |f: &str| sum(common, sk("sock_common", f));
            // struct inet_sock begins with its struct sock.
            c.sk_sport = sk("inet_sock", "inet_sport");
            c.sk_saddr = sk("inet_sock", "inet_saddr");
            c.sk_dport = in_common("skc_dport");
            c.sk_family = in_common("skc_family");
            c.sk_daddr = in_common("skc_daddr");
            c.sk_v6_rcv_saddr = in_common("skc_v6_rcv_saddr");
            c.sk_v6_daddr = in_common("skc_v6_daddr");
            // Read as a u16 by the program: a bit-field (before 5.6) is left
            // unresolved.
            c.sk_protocol = btf
                .int_member_offset("sock", "sk_protocol", 2)
                .unwrap_or(OFFSET_UNKNOWN);
            for p in PROBES {
                if let Hook::TpBtf { name, .. } = p.hook {
                    if let Some(args) = btf.tp_btf_args(name) {
                        tp_btf_args.insert(name, args);
                    }
                }
            }
            c.skb_dev = field("sk_buff", "dev");
            // possible_net_t holds the pointer as its first member.
            let nd = field("net_device", "nd_net");
            let ptr = field("possible_net_t", "net");
            if nd != OFFSET_UNKNOWN && ptr != OFFSET_UNKNOWN {
                c.dev_net = nd + ptr;
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
    c.tp_rst_skbaddr = get(&rst, "skbaddr", c.tp_rst_skbaddr);
    c.tp_rst_saddr = get(&rst, "saddr", c.tp_rst_saddr);
    c.tp_rst_daddr = get(&rst, "daddr", c.tp_rst_daddr);
    let openat = tp_offsets(root, "syscalls", "sys_enter_openat");
    c.tp_openat_filename = get(&openat, "filename", c.tp_openat_filename);
    c.tp_openat_flags = get(&openat, "flags", c.tp_openat_flags);
    let openat_exit = tp_offsets(root, "syscalls", "sys_exit_openat");
    c.tp_openat_exit_ret = get(&openat_exit, "ret", c.tp_openat_exit_ret);
    Resolved {
        config: c,
        missing,
        tp_btf_args,
    }
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

/// What the loader needs to attach a row besides the object.
struct Env {
    cgroup: Option<String>,
    libpam: Option<PathBuf>,
    /// Socket offsets `tp_btf/inet_sock_set_state` needs that BTF did
    /// not give; the program would see no TCP socket without them.
    sock_unresolved: Vec<&'static str>,
    /// The arguments kernel BTF gives each `tp_btf` hook.
    tp_btf_args: HashMap<&'static str, Vec<String>>,
}

/// The socket fields the `tp_btf` form of `tcp_state` reads, unresolved.
fn sock_unresolved(c: &AgentConfig) -> Vec<&'static str> {
    [
        ("inet_sock.inet_sport", c.sk_sport),
        ("inet_sock.inet_saddr", c.sk_saddr),
        ("sock_common.skc_dport", c.sk_dport),
        ("sock_common.skc_family", c.sk_family),
        ("sock_common.skc_daddr", c.sk_daddr),
        ("sock_common.skc_v6_rcv_saddr", c.sk_v6_rcv_saddr),
        ("sock_common.skc_v6_daddr", c.sk_v6_daddr),
        ("sock.sk_protocol", c.sk_protocol),
    ]
    .into_iter()
    .filter(|(_, o)| *o == OFFSET_UNKNOWN)
    .map(|(name, _)| name)
    .collect()
}

/// One row of the table tried: the hook as reported, and the outcome.
struct Attempt {
    hook: String,
    tier: u8,
    result: Result<(), ProbeError>,
}

/// Tries `probe`; `None` when there is nothing to try (socket_owner
/// without a cgroup v2 mount), which reports no row.
fn attempt(ebpf: &mut Ebpf, probe: &Probe, env: &Env) -> Option<Attempt> {
    let tried = |hook: String, result| {
        Some(Attempt {
            hook,
            tier: probe.tier,
            result,
        })
    };
    match probe.hook {
        Hook::Tracepoint { category, name } => {
            let result = probe
                .programs
                .iter()
                .try_for_each(|&p| attach::tracepoint(ebpf, p, category, name));
            tried(format!("tracepoint/{category}/{name}"), result)
        }
        Hook::SyscallPair { enter, exit } => {
            let result = probe
                .programs
                .iter()
                .zip([enter, exit])
                .try_for_each(|(&p, name)| attach::tracepoint(ebpf, p, "syscalls", name));
            tried(format!("tracepoint/syscalls/{enter}+{exit}"), result)
        }
        Hook::TpBtf { name, args } => {
            let needs_sock = probe.programs.contains(&maps::prog::SOCK_STATE_BTF);
            // Without the typedef, aya's attach says so itself.
            let moved = env
                .tp_btf_args
                .get(name)
                .filter(|found| !found.iter().map(String::as_str).eq(args.iter().copied()));
            let result = if let Some(found) = moved {
                Err(ProbeError::TpBtfArgs {
                    found: found.join(", "),
                    wanted: args.join(", "),
                })
            } else if needs_sock && !env.sock_unresolved.is_empty() {
                Err(ProbeError::Offsets(env.sock_unresolved.join(", ")))
            } else {
                probe
                    .programs
                    .iter()
                    .try_for_each(|&p| attach::btf_tracepoint(ebpf, p, name))
            };
            tried(format!("tp_btf/{name}"), result)
        }
        Hook::LibpamUprobe { symbol } => match &env.libpam {
            Some(lib) => tried(
                format!("uprobe {}:{symbol}", lib.display()),
                attach::uprobes(ebpf, probe.programs, symbol, lib),
            ),
            // Reported as a note (tier 0), as it always has been.
            None => Some(Attempt {
                hook: format!("uprobe {symbol}"),
                tier: 0,
                result: Err(ProbeError::NoLibpam),
            }),
        },
        Hook::CgroupSkb => {
            let result = match &env.cgroup {
                Some(path) => attach::cgroup_skb(ebpf, probe.programs, path),
                None => Err(ProbeError::NoCgroup2),
            };
            let path = env.cgroup.as_deref().unwrap_or("?");
            tried(format!("cgroup_skb/{path}"), result)
        }
        Hook::CgroupSockCreate => {
            let path = env.cgroup.as_deref()?;
            let result = probe
                .programs
                .iter()
                .try_for_each(|&p| attach::sock_create(ebpf, p, path));
            tried(format!("cgroup/sock_create+release/{path}"), result)
        }
        Hook::TcClsact => match attach::tc_clsact(ebpf, probe.programs) {
            Ok(ifaces) => tried(format!("tc/clsact {}", ifaces.join(",")), Ok(())),
            Err(e) => tried("tc/clsact".to_string(), Err(e)),
        },
        // Attached with the enforcement object (`blocklist_rows`).
        Hook::Xdp { .. } | Hook::CgroupSkbEgress | Hook::TcEgress => None,
    }
}

pub fn load(cfg: &Config) -> Result<Loaded, LoaderError> {
    let root = tracefs::ensure_mounted()?;
    let Resolved {
        mut config,
        missing,
        tp_btf_args,
    } = agent_config(root);
    // libpam's private layout, verified against the installed build first.
    let libpam = pam::find_libpam();
    let pam_check = match &libpam {
        Some(lib) => pam::verify_offsets(lib),
        None => Err(PamError::NotInstalled),
    };
    if let Ok(o) = &pam_check {
        config.pam_service = o.service;
        config.pam_user = o.user;
        config.pam_rhost = o.rhost;
    }
    apply_scope(cfg, &mut config)?;
    let mut loader = EbpfLoader::new();
    loader
        .override_global(maps::CONFIG, &config, true)
        .map_max_entries(maps::FLOWS, cfg.flows.max_entries);
    let mut ebpf = loader.load(KERNEL_OBJECT)?;
    let mut rows = Vec::new();
    if !missing.is_empty() {
        rows.push(probes::row(
            "kernel_offsets",
            "BTF",
            0,
            "degraded",
            format!("unresolved: {}", missing.join(", ")),
        ));
    }
    let env = Env {
        // Flow accounting: cgroup_skb sees every local socket in every netns.
        cgroup: if cfg.flows.cgroup_path.is_empty() {
            cgroup2_root()
        } else {
            Some(cfg.flows.cgroup_path.clone())
        },
        libpam,
        sock_unresolved: sock_unresolved(&config),
        tp_btf_args,
    };
    let observed: Vec<&Probe> = PROBES.iter().filter(|p| p.observes()).collect();
    // Hooks tried so far per name, and whether one of them attached.
    let mut tried: HashMap<&str, (Vec<String>, bool)> = HashMap::new();
    for (i, probe) in observed.iter().enumerate() {
        // The first tier that attaches wins; a tier the config rules out
        // is not tried.
        let done = tried.get(probe.name).is_some_and(|(_, ok)| *ok);
        if done || !probe.gate.open(cfg) {
            continue;
        }
        let Some(a) = attempt(&mut ebpf, probe, &env) else {
            continue;
        };
        let (state, detail) = match &a.result {
            Ok(()) => ("attached", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        rows.push(probes::row(probe.name, &a.hook, a.tier, state, detail));
        if matches!(probe.hook, Hook::LibpamUprobe { .. }) && env.libpam.is_some() {
            if let Err(e) = &pam_check {
                rows.push(probes::row(
                    "auth_fields",
                    "libpam struct pam_handle",
                    0,
                    "degraded",
                    format!("user and rhost not reported: {e}"),
                ));
            }
        }
        let entry = tried.entry(probe.name).or_default();
        entry.0.push(a.hook);
        entry.1 = a.result.is_ok();
        if let Err(source) = a.result {
            let fallback = observed[i + 1..]
                .iter()
                .any(|q| q.name == probe.name && q.gate.open(cfg));
            if probe.required && !fallback {
                return Err(LoaderError::Required {
                    name: probe.name,
                    hook: entry.0.join(" or "),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(Loaded {
        ebpf,
        probes: rows,
        config,
    })
}

/// The kernel object with nothing attached and the default config, for
/// benches that run one program through `BPF_PROG_TEST_RUN` (the flow
/// programs' per-packet cost without `bpf_stats`).
pub fn load_detached() -> Result<Ebpf, LoaderError> {
    Ok(EbpfLoader::new().load(KERNEL_OBJECT)?)
}
