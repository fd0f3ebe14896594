//! The probe table: every hook the agent may attach, as data (after kunai's
//! `compat.rs`). A row names the hook, its tier (1 preferred, 2 the
//! fallback for the same name), when it is tried, whether the agent can run
//! without it, what it provides and what is lost without it. The loader
//! walks the observation rows in order; the enforcement rows are attached
//! by `enforce::attach` and reported through `blocklist_rows`. The table in
//! docs/architecture.md is rendered from here (`markdown_table`).

use agent_common::{enforce as wire, maps::prog};

use crate::config::{Config, FlowAttach};
use crate::enforce::containment::AttachReport;
use crate::record::ProbeRow;

/// The kind of kernel hook, with what it attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A syscall's entry and exit tracepoints: the first program attaches
    /// to `enter`, the second to `exit`.
    SyscallPair {
        enter: &'static str,
        exit: &'static str,
    },
    /// BTF-enabled raw tracepoint, and the arguments its program reads by
    /// position (as `Btf::tp_btf_args` names them), checked before attach.
    TpBtf {
        name: &'static str,
        args: &'static [&'static str],
    },
    /// Entry and return probes on a function of the installed libpam.
    LibpamUprobe { symbol: &'static str },
    /// Ingress and egress on the cgroup v2 root (`flows.cgroup_path`).
    CgroupSkb,
    /// Socket creation on the same cgroup.
    CgroupSockCreate,
    /// clsact ingress and egress on every interface of the agent's netns.
    TcClsact,
    /// XDP on every blocklist interface, in the given mode.
    Xdp { mode: &'static str },
    /// cgroup_skb egress on the cgroup v2 root.
    CgroupSkbEgress,
    /// TC egress (TCX link) on each interface of the agent's namespace.
    TcEgress,
}

impl Hook {
    /// The hook as the documentation names it.
    pub fn describe(&self) -> String {
        match self {
            Hook::Tracepoint { category, name } => format!("tracepoint `{category}/{name}`"),
            Hook::SyscallPair { enter, exit } => {
                format!("tracepoints `syscalls/{enter}` + `syscalls/{exit}`")
            }
            Hook::TpBtf { name, .. } => format!("`tp_btf/{name}`"),
            Hook::LibpamUprobe { symbol } => {
                format!("uprobe + uretprobe on `{symbol}` in libpam.so.0")
            }
            Hook::CgroupSkb => "cgroup_skb ingress + egress on the cgroup v2 root".to_string(),
            Hook::CgroupSockCreate => {
                "`cgroup/sock_create` and `cgroup/sock_release` on the same cgroup".to_string()
            }
            Hook::TcClsact => "TC clsact ingress + egress on every interface".to_string(),
            Hook::Xdp { mode } => format!("XDP ({mode} mode) on each interface"),
            Hook::CgroupSkbEgress => "cgroup_skb egress on the cgroup v2 root".to_string(),
            Hook::TcEgress => {
                "TC egress on each interface of the agent's network namespace".to_string()
            }
        }
    }
}

/// When a row is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Always,
    /// `capture.file_writes`.
    FileWrites,
    /// `capture.tp_btf`.
    TpBtf,
    /// `flows.attach` is `auto` or `cgroup`.
    CgroupFlows,
    /// `flows.attach` is `auto` or `tc`.
    TcFlows,
    /// `enforce.enabled`: attached with the enforcement object.
    Enforce,
    /// `enforce.enabled` and the agent watches the whole host.
    EnforceHost,
    /// `enforce.enabled` and `scope.netns: self`.
    EnforceScoped,
    /// `enforce.enabled` and `enforce.xdp_mode` auto or driver.
    XdpNative,
    /// `enforce.enabled` and `enforce.xdp_mode` auto or skb.
    XdpGeneric,
}

impl Gate {
    pub fn open(self, cfg: &Config) -> bool {
        match self {
            Gate::Always => true,
            Gate::FileWrites => cfg.capture.file_writes,
            Gate::TpBtf => cfg.capture.tp_btf,
            // Scoped to one namespace, only TC on its own interfaces
            // counts just that namespace's traffic.
            Gate::CgroupFlows => cfg.flows.attach != FlowAttach::Tc && !cfg.scope.is_own_netns(),
            Gate::TcFlows => cfg.flows.attach != FlowAttach::Cgroup || cfg.scope.is_own_netns(),
            Gate::Enforce => cfg.enforce.enabled,
            Gate::EnforceHost => cfg.enforce.enabled && !cfg.scope.is_own_netns(),
            Gate::EnforceScoped => cfg.enforce.enabled && cfg.scope.is_own_netns(),
            Gate::XdpNative => cfg.enforce.enabled && cfg.enforce.xdp_mode != "skb",
            Gate::XdpGeneric => cfg.enforce.enabled && cfg.enforce.xdp_mode != "driver",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Gate::Always => "always",
            Gate::FileWrites => "`capture.file_writes`",
            Gate::TpBtf => "`capture.tp_btf`",
            Gate::CgroupFlows => "`flows.attach` auto or cgroup, `scope.netns` host",
            Gate::TcFlows => "`flows.attach` auto or tc, or `scope.netns` self",
            Gate::Enforce => "`enforce.enabled`",
            Gate::EnforceHost => "`enforce.enabled`, `scope.netns` host",
            Gate::EnforceScoped => "`enforce.enabled`, `scope.netns` self",
            Gate::XdpNative => "`enforce.enabled`, `enforce.xdp_mode` auto or driver",
            Gate::XdpGeneric => "`enforce.enabled`, `enforce.xdp_mode` auto or skb",
        }
    }

    /// Attached with the enforcement object, not by the loader.
    fn enforces(self) -> bool {
        matches!(
            self,
            Gate::Enforce
                | Gate::EnforceHost
                | Gate::EnforceScoped
                | Gate::XdpNative
                | Gate::XdpGeneric
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// The row name in `agent_start` and `vigil status`.
    pub name: &'static str,
    pub tier: u8,
    pub hook: Hook,
    /// Programs of the kernel object attached for this row.
    pub programs: &'static [&'static str],
    pub gate: Gate,
    /// The agent refuses to start when no tier of this name attaches.
    pub required: bool,
    pub provides: &'static str,
    /// What is missing when this row does not attach.
    pub without: &'static str,
}

impl Probe {
    /// Attached by the observation loader (the rest by `enforce::attach`).
    pub fn observes(&self) -> bool {
        !self.gate.enforces()
    }
}

/// Every hook, in the order the loader tries them (and reports them).
pub static PROBES: &[Probe] = &[
    Probe {
        name: "exec",
        tier: 1,
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exec",
        },
        programs: &[prog::EXEC],
        gate: Gate::Always,
        required: true,
        provides: "`process_exec`",
        without: "the agent does not start",
    },
    Probe {
        name: "exit",
        tier: 1,
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_exit",
        },
        programs: &[prog::EXIT],
        gate: Gate::Always,
        required: true,
        provides: "`process_exit`",
        without: "the agent does not start",
    },
    Probe {
        name: "tcp_state",
        tier: 1,
        hook: Hook::TpBtf {
            name: "inet_sock_set_state",
            args: &["void *", "struct sock *", "int32", "int32"],
        },
        programs: &[prog::SOCK_STATE_BTF],
        gate: Gate::TpBtf,
        required: true,
        provides: "`net_connect`, `net_accept`, `net_close`, `net_connect_failed`, \
                   reading the socket (no trace record is built for each transition)",
        without: "tier 2 is tried",
    },
    Probe {
        name: "tcp_state",
        tier: 2,
        hook: Hook::Tracepoint {
            category: "sock",
            name: "inet_sock_set_state",
        },
        programs: &[prog::SOCK_STATE],
        gate: Gate::Always,
        required: true,
        provides: "`net_connect`, `net_accept`, `net_close`, `net_connect_failed`",
        without: "the agent does not start",
    },
    Probe {
        name: "tcp_refused",
        tier: 1,
        hook: Hook::Tracepoint {
            category: "tcp",
            name: "tcp_send_reset",
        },
        programs: &[prog::TCP_RESET],
        gate: Gate::Always,
        required: false,
        provides: "`net_refused` (resets to closed ports)",
        without: "inbound scans of closed ports go unseen by the scan detector",
    },
    Probe {
        name: "file_write",
        tier: 1,
        hook: Hook::SyscallPair {
            enter: "sys_enter_openat",
            exit: "sys_exit_openat",
        },
        programs: &[prog::FILE_WRITE, prog::FILE_OPENED],
        gate: Gate::FileWrites,
        required: false,
        provides: "`file_write` by network-facing processes, when the open succeeded",
        without: "no written-then-executed (T1204.002) alerts",
    },
    Probe {
        name: "auth",
        tier: 1,
        hook: Hook::LibpamUprobe {
            symbol: "pam_authenticate",
        },
        programs: &[prog::PAM_ENTER, prog::PAM_EXIT],
        gate: Gate::Always,
        required: false,
        provides: "`auth_attempt`",
        without: "no password brute-force or spraying alerts (sshd connection counting remains)",
    },
    Probe {
        name: "fork",
        tier: 1,
        hook: Hook::TpBtf {
            name: "sched_process_fork",
            args: &["void *", "struct task_struct *", "struct task_struct *"],
        },
        programs: &[prog::FORK_BTF],
        gate: Gate::TpBtf,
        required: true,
        provides: "`process_fork`, telling threads from processes",
        without: "tier 2 is tried",
    },
    Probe {
        name: "fork",
        tier: 2,
        hook: Hook::Tracepoint {
            category: "sched",
            name: "sched_process_fork",
        },
        programs: &[prog::FORK_TP],
        gate: Gate::Always,
        required: true,
        provides: "`process_fork` flagged `maybe_thread`",
        without: "the agent does not start",
    },
    Probe {
        name: "flows",
        tier: 1,
        hook: Hook::CgroupSkb,
        programs: &[prog::FLOW_CG_INGRESS, prog::FLOW_CG_EGRESS],
        gate: Gate::CgroupFlows,
        required: true,
        provides: "`flow` for every local socket in every network namespace",
        without: "tier 2 is tried (when `flows.attach` allows)",
    },
    Probe {
        name: "socket_owner",
        tier: 1,
        hook: Hook::CgroupSockCreate,
        programs: &[prog::SOCK_CREATE, prog::SOCK_RELEASE],
        gate: Gate::CgroupFlows,
        required: false,
        provides: "the pid of a flow's socket, from its creation (forgotten at its release)",
        without: "flows get their pid from connect/accept events only",
    },
    Probe {
        name: "flows",
        tier: 2,
        hook: Hook::TcClsact,
        programs: &[prog::FLOW_TC_INGRESS, prog::FLOW_TC_EGRESS],
        gate: Gate::TcFlows,
        required: true,
        provides: "`flow` for traffic through the agent's network namespace",
        without: "the agent does not start",
    },
    Probe {
        name: "blocklist_in",
        tier: 1,
        hook: Hook::Xdp { mode: "native" },
        programs: &[wire::PROG_XDP],
        gate: Gate::XdpNative,
        required: false,
        provides: "inbound blocks, dropped in the driver",
        without: "tier 2 is tried",
    },
    Probe {
        name: "blocklist_in",
        tier: 2,
        hook: Hook::Xdp { mode: "generic" },
        programs: &[wire::PROG_XDP],
        gate: Gate::XdpGeneric,
        required: false,
        provides: "inbound blocks, dropped after the driver",
        without: "inbound blocks are not enforced on that interface",
    },
    Probe {
        name: "blocklist_out",
        tier: 1,
        hook: Hook::CgroupSkbEgress,
        programs: &[wire::PROG_EGRESS],
        gate: Gate::EnforceHost,
        required: false,
        provides: "outbound blocks for every local socket",
        without: "outbound blocks are not enforced",
    },
    Probe {
        name: "blocklist_out",
        tier: 2,
        hook: Hook::TcEgress,
        programs: &[wire::PROG_TC_EGRESS],
        gate: Gate::EnforceScoped,
        required: false,
        provides: "outbound blocks for the agent's own network namespace only",
        without: "outbound blocks are not enforced",
    },
];

/// The report row of one attempt.
pub fn row(name: &str, hook: &str, tier: u8, state: &str, detail: String) -> ProbeRow {
    ProbeRow {
        name: name.to_string(),
        hook: hook.to_string(),
        tier,
        state: state.to_string(),
        detail,
    }
}

/// The probe rows of the enforcement programs, from where
/// `Containment::open` attached them; `cgroup` is `Containment::cgroup()`.
pub fn blocklist_rows(report: &AttachReport) -> Vec<ProbeRow> {
    let mut rows: Vec<ProbeRow> = report
        .xdp
        .iter()
        .map(|x| {
            let state = if x.mode == "failed" {
                "failed"
            } else {
                "attached"
            };
            let sep = if x.detail.is_empty() { "" } else { ": " };
            row(
                "blocklist_in",
                &format!("xdp/{}", x.interface),
                if x.mode == "generic" { 2 } else { 1 },
                state,
                format!("{}{sep}{}", x.mode, x.detail),
            )
        })
        .collect();
    let state = if report.egress.starts_with("failed") {
        "failed"
    } else {
        "attached"
    };
    let tier = if report.egress_hook.starts_with("tc/") {
        2
    } else {
        1
    };
    rows.push(row(
        "blocklist_out",
        &report.egress_hook,
        tier,
        state,
        report.egress.clone(),
    ));
    rows
}

/// The probe table as markdown, for docs/architecture.md.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| name | tier | hook | programs | tried when | required | provides | without it |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in PROBES {
        let programs: Vec<String> = p.programs.iter().map(|n| format!("`{n}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.name,
            p.tier,
            p.hook.describe(),
            programs.join(", "),
            p.gate.describe(),
            if p.required { "yes" } else { "no" },
            p.provides,
            p.without
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::attach::XdpAttachment;

    #[test]
    fn the_file_write_probe_follows_capture_file_writes() {
        let row = PROBES.iter().find(|p| p.name == "file_write").expect("row");
        let mut cfg = Config::default();
        assert!(row.gate.open(&cfg), "on by default");
        cfg.capture.file_writes = false;
        assert!(!row.gate.open(&cfg));
    }

    #[test]
    fn the_btf_tiers_follow_capture_tp_btf_and_leave_the_tracepoints() {
        let mut cfg = Config::default();
        for name in ["fork", "tcp_state"] {
            let rows: Vec<&Probe> = PROBES.iter().filter(|p| p.name == name).collect();
            assert!(matches!(rows[0].hook, Hook::TpBtf { .. }), "{name}");
            assert!(rows[0].gate.open(&cfg), "{name}: on by default");
            cfg.capture.tp_btf = false;
            assert!(!rows[0].gate.open(&cfg), "{name}");
            assert!(matches!(rows[1].hook, Hook::Tracepoint { .. }), "{name}");
            assert!(rows[1].gate.open(&cfg), "{name}: the tracepoint remains");
            cfg.capture.tp_btf = true;
        }
    }

    #[test]
    fn tiers_of_a_name_are_contiguous_and_agree_on_required() {
        for (i, p) in PROBES.iter().enumerate() {
            let earlier: Vec<&Probe> = PROBES[..i].iter().filter(|q| q.name == p.name).collect();
            assert_eq!(
                usize::from(p.tier),
                earlier.len() + 1,
                "{} tier {}",
                p.name,
                p.tier
            );
            for q in earlier {
                assert_eq!(q.required, p.required, "{}", p.name);
                assert_eq!(q.observes(), p.observes(), "{}", p.name);
            }
            assert!(!p.programs.is_empty(), "{}", p.name);
        }
    }

    #[test]
    fn gates_follow_the_config() {
        let mut cfg = Config::default();
        let tried = |cfg: &Config| -> Vec<(&str, u8)> {
            PROBES
                .iter()
                .filter(|p| p.gate.open(cfg))
                .map(|p| (p.name, p.tier))
                .collect()
        };
        // Everything but the scoped egress row is tried on a default host.
        let all = tried(&cfg);
        assert_eq!(all.len(), PROBES.len() - 1);
        assert!(!all.contains(&("blocklist_out", 2)));
        let mut scoped = cfg.clone();
        scoped.scope.netns = crate::config::NetnsScope::Own;
        let t = tried(&scoped);
        assert!(t.contains(&("blocklist_out", 2)) && !t.contains(&("blocklist_out", 1)));
        assert!(t.contains(&("flows", 2)) && !t.contains(&("flows", 1)));
        assert!(!t.iter().any(|(n, _)| *n == "socket_owner"));
        cfg.flows.attach = FlowAttach::Tc;
        let t = tried(&cfg);
        assert!(t.contains(&("flows", 2)) && !t.contains(&("flows", 1)));
        assert!(!t.iter().any(|(n, _)| *n == "socket_owner"));
        cfg.flows.attach = FlowAttach::Cgroup;
        let t = tried(&cfg);
        assert!(t.contains(&("flows", 1)) && !t.contains(&("flows", 2)));
        cfg.enforce.xdp_mode = "skb".into();
        let t = tried(&cfg);
        assert!(t.contains(&("blocklist_in", 2)) && !t.contains(&("blocklist_in", 1)));
        cfg.enforce.enabled = false;
        assert!(tried(&cfg).iter().all(|(n, _)| !n.starts_with("blocklist")));
    }

    #[test]
    fn blocklist_rows_report_mode_tier_and_egress() {
        let report = AttachReport {
            xdp: vec![
                XdpAttachment {
                    interface: "eth0".into(),
                    mode: "native".into(),
                    detail: String::new(),
                },
                XdpAttachment {
                    interface: "veth1".into(),
                    mode: "generic".into(),
                    detail: "driver refused native".into(),
                },
                XdpAttachment {
                    interface: "wg0".into(),
                    mode: "failed".into(),
                    detail: "EPERM".into(),
                },
            ],
            egress_hook: "cgroup_skb/egress /sys/fs/cgroup".into(),
            egress: "attached".into(),
            restored: 0,
        };
        let rows = blocklist_rows(&report);
        let got: Vec<(&str, &str, u8, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.hook.as_str(),
                    r.tier,
                    r.state.as_str(),
                    r.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("blocklist_in", "xdp/eth0", 1, "attached", "native"),
                (
                    "blocklist_in",
                    "xdp/veth1",
                    2,
                    "attached",
                    "generic: driver refused native"
                ),
                ("blocklist_in", "xdp/wg0", 1, "failed", "failed: EPERM"),
                (
                    "blocklist_out",
                    "cgroup_skb/egress /sys/fs/cgroup",
                    1,
                    "attached",
                    "attached"
                ),
            ]
        );
        let failed = AttachReport {
            xdp: Vec::new(),
            egress_hook: "cgroup_skb/egress ?".into(),
            egress: "failed: no cgroup v2 mount".into(),
            restored: 0,
        };
        let rows = blocklist_rows(&failed);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].hook, "cgroup_skb/egress ?");
        assert_eq!(rows[0].state, "failed");
        let scoped = AttachReport {
            xdp: Vec::new(),
            egress_hook: "tc/egress veth0".into(),
            egress: "attached".into(),
            restored: 0,
        };
        let rows = blocklist_rows(&scoped);
        assert_eq!(
            (rows[0].hook.as_str(), rows[0].tier),
            ("tc/egress veth0", 2)
        );
    }

    const START: &str = "<!-- probe-table:start -->\n";
    const END: &str = "<!-- probe-table:end -->";

    /// The doc's table between the markers must be what `markdown_table`
    /// renders; `VIGIL_BLESS=1` rewrites it.
    #[test]
    fn probe_table_in_docs_is_generated() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
        let doc = std::fs::read_to_string(&path).expect("docs/architecture.md");
        let start = doc.find(START).expect("probe-table:start marker") + START.len();
        let end = doc[start..].find(END).expect("probe-table:end marker") + start;
        let want = markdown_table();
        if doc[start..end] == want {
            return;
        }
        if std::env::var_os("VIGIL_BLESS").is_some_and(|v| v == "1") {
            let updated = format!("{}{want}{}", &doc[..start], &doc[end..]);
            std::fs::write(&path, updated).expect("rewrite docs/architecture.md");
            return;
        }
        panic!(
            "docs/architecture.md: the probe table differs from agent/src/kernel/probes.rs.\n\
             Regenerate it with: VIGIL_BLESS=1 cargo test -p vigil --lib probe_table\n\
             --- in the doc\n{}--- generated\n{want}",
            &doc[start..end]
        );
    }
}
