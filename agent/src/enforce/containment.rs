//! The one entry point the daemon and the CLI use for containment: it owns
//! the loaded programs, the blocklist, the guard and the saved state, and
//! turns every request into an `action` record.

use std::net::IpAddr;
use std::path::PathBuf;

use agent_common::enforce::{BlockValue, BLOCK_EGRESS, BLOCK_INGRESS};

use super::actions::{Action, ActionState, Verb};
use super::attach::{Enforcer, XdpAttachment};
use super::blocklist::{BlockEntry, Blocklist};
use super::cidr::Cidr;
use super::guard::{self, Guard, GuardInputs};
use super::{isolate, kill, state, EnforceError};
use crate::config::Config;
use crate::util::clock::monotonic_ns;

pub struct Containment {
    host: String,
    state_dir: PathBuf,
    interfaces: Vec<String>,
    xdp_mode: String,
    cgroup: Option<String>,
    /// Scoped to its network namespace (`scope.netns: self`).
    scoped: bool,
    enforcer: Enforcer,
    pub blocks: Blocklist,
    pub guard: Guard,
    /// The last save of blocks.json failed (a full disk): maintenance
    /// retries it, so a block applied meanwhile survives a reboot.
    unsaved: bool,
}

/// Where the programs ended up, for the probe table and `vigil status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttachReport {
    pub xdp: Vec<XdpAttachment>,
    /// Where egress is enforced: `cgroup_skb/egress <root>` or, scoped to
    /// the agent's network namespace, `tc/egress <interfaces>`.
    pub egress_hook: String,
    pub egress: String,
    pub restored: usize,
}

pub fn guard_inputs(cfg: &Config) -> GuardInputs {
    let parse_all =
        |v: &[String]| -> Vec<Cidr> { v.iter().filter_map(|c| c.parse().ok()).collect() };
    let mut dns = guard::resolvers();
    dns.extend(
        parse_all(&cfg.enforce.dns_resolvers)
            .into_iter()
            .map(|c| c.addr),
    );
    GuardInputs {
        management: parse_all(&cfg.enforce.management_cidrs),
        dns,
        kafka_brokers: guard::broker_addresses(&cfg.kafka.brokers),
        own_addresses: guard::own_addresses(),
        gateways: guard::gateways(),
        operator_peers: guard::operator_peers(),
    }
}

impl Containment {
    pub fn open(cfg: &Config, host: &str) -> Result<(Containment, AttachReport), EnforceError> {
        let mut enforcer = Enforcer::load(&cfg.enforce.pin_dir)?;
        let mut blocks = Blocklist::open(&cfg.enforce.pin_dir)?;
        let xdp = enforcer.attach_interfaces(&cfg.enforce.interfaces, &cfg.enforce.xdp_mode);
        // Scoped to its namespace, the agent must not drop other
        // namespaces' traffic: egress at TC on its own interfaces.
        let scoped = cfg.scope.is_own_netns();
        let cgroup = (!scoped)
            .then(crate::kernel::loader::cgroup2_root)
            .flatten();
        let (egress_hook, egress) = if scoped {
            let (ok, failed) = enforcer.attach_tc_egress(&cfg.enforce.interfaces);
            let state = match (ok.is_empty(), failed.is_empty()) {
                (_, false) => format!("failed: {}", failed.join("; ")),
                (true, true) => "pinned".to_string(),
                (false, true) => "attached".to_string(),
            };
            let ifaces: Vec<String> = crate::enforce::attach::interfaces()
                .into_iter()
                .map(|(_, n)| n)
                .filter(|n| n != "lo")
                .collect();
            (format!("tc/egress {}", ifaces.join(",")), state)
        } else {
            let hook = format!("cgroup_skb/egress {}", cgroup.as_deref().unwrap_or("?"));
            let state = match &cgroup {
                Some(cg) => match enforcer.attach_egress(cg) {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("failed: {e}"),
                },
                None => "failed: no cgroup v2 mount".to_string(),
            };
            (hook, state)
        };
        // Pinned maps are the truth; the state file only refills empty maps.
        // A corrupt one is moved aside by `load` and restores nothing.
        let state_path = cfg.state_dir.join(state::FILE);
        let mut restored = 0;
        if blocks.list().is_empty() {
            if let Some(saved) = state::load(&state_path).found() {
                restored = state::restore(&mut blocks, &saved)?;
            }
        }
        let c = Containment {
            host: host.to_string(),
            state_dir: cfg.state_dir.clone(),
            interfaces: cfg.enforce.interfaces.clone(),
            xdp_mode: cfg.enforce.xdp_mode.clone(),
            cgroup,
            scoped,
            enforcer,
            blocks,
            guard: Guard::new(&guard_inputs(cfg)),
            unsaved: false,
        };
        Ok((
            c,
            AttachReport {
                xdp,
                egress_hook,
                egress,
                restored,
            },
        ))
    }

    fn record(&self, mut a: Action) -> Action {
        if let Err(e) = a.record(&self.state_dir) {
            tracing::warn!("could not append to the audit log: {e}");
        }
        a
    }

    fn save(&mut self) {
        let saved = state::to_saved(&self.blocks.list());
        match state::save(&self.state_dir.join(state::FILE), &saved) {
            Ok(()) => self.unsaved = false,
            Err(e) => {
                if !self.unsaved {
                    tracing::warn!("could not save blocks: {e}; retrying");
                }
                self.unsaved = true;
            }
        }
    }

    /// Attaches XDP (and, scoped to the namespace, TC egress) to
    /// interfaces that appeared since the last call.
    pub fn rescan_interfaces(&mut self) -> Vec<XdpAttachment> {
        if self.scoped {
            let (_, failed) = self.enforcer.attach_tc_egress(&self.interfaces);
            for f in failed {
                tracing::warn!("tc egress blocklist: {f}");
            }
        }
        self.enforcer
            .attach_interfaces(&self.interfaces, &self.xdp_mode)
            .into_iter()
            .filter(|a| a.mode != "pinned")
            .collect()
    }

    pub fn cgroup(&self) -> Option<&str> {
        self.cgroup.as_deref()
    }

    /// Blocks `target` for `ttl_s` seconds in the given directions. A
    /// request never weakens the live block already on exactly `target`:
    /// the entry keeps the union of both directions and the later expiry
    /// (a playbook's 1 h block must not cut an operator's 24 h one short).
    /// Shortening or narrowing takes an unblock first. Blocks on other
    /// prefixes are separate entries and the kernel honours each of them.
    pub fn block(&mut self, target: &Cidr, ttl_s: u64, flags: u32) -> Action {
        let label = target.to_string();
        if let Err(refusal) = self.guard.check(target) {
            return self.record(Action::new(
                &self.host,
                Verb::Block,
                label,
                Some(ttl_s),
                ActionState::Refused,
                refusal.to_string(),
            ));
        }
        let now = monotonic_ns();
        let asked = now.saturating_add(ttl_s.saturating_mul(1_000_000_000));
        let live = self.blocks.get(target).filter(|v| v.expires_ns > now);
        let (expires, merged) = renewal(live.as_ref(), asked, flags);
        let a = match self.blocks.insert(target, expires, merged) {
            Ok(()) => {
                let mut detail = direction(merged).to_string();
                if let Some(kept) = renewal_note(live.as_ref(), asked, flags, now) {
                    detail = format!("{detail} ({kept})");
                }
                Action::new(
                    &self.host,
                    Verb::Block,
                    label,
                    Some(ttl_s),
                    ActionState::Applied,
                    detail,
                )
            }
            Err(e) => Action::new(
                &self.host,
                Verb::Block,
                label,
                Some(ttl_s),
                ActionState::Failed,
                e.to_string(),
            ),
        };
        self.save();
        self.record(a)
    }

    pub fn unblock(&mut self, target: &Cidr) -> Action {
        let state = if self.blocks.remove(target) {
            ActionState::Applied
        } else {
            ActionState::Noop
        };
        self.save();
        self.record(Action::new(
            &self.host,
            Verb::Unblock,
            target.to_string(),
            None,
            state,
            "",
        ))
    }

    /// Removes lapsed entries (the kernel already ignores them). Each entry
    /// is read again just before its removal, so a block renewed since the
    /// listing (by the CLI, say) is not swept away with the old expiry.
    pub fn expire(&mut self) -> Vec<Action> {
        let now = monotonic_ns();
        let lapsed = |v: &BlockValue| v.expires_ns <= now;
        let candidates: Vec<Cidr> = self
            .blocks
            .list()
            .into_iter()
            .filter(|e| e.expires_ns <= now)
            .map(|e| e.target)
            .collect();
        let mut out = Vec::new();
        for target in &candidates {
            let Some(v) = self.blocks.get_counted(target).filter(lapsed) else {
                continue;
            };
            self.blocks.remove(target);
            let detail = format!("dropped {} packets, {} bytes", v.packets, v.bytes);
            out.push(self.record(Action::new(
                &self.host,
                Verb::Expire,
                target.to_string(),
                None,
                ActionState::Expired,
                detail,
            )));
        }
        if !out.is_empty() || self.unsaved {
            self.save();
        }
        out
    }

    /// Prefixes isolation must keep reachable: everything the guard protects.
    fn isolation_allow(&self) -> Vec<Cidr> {
        self.guard.protected.iter().map(|p| p.cidr).collect()
    }

    pub fn isolate(&self, ttl_s: u64) -> Action {
        let a = match isolate::isolate(ttl_s, &self.isolation_allow()) {
            Ok(true) => Action::new(
                &self.host,
                Verb::Isolate,
                "host",
                Some(ttl_s),
                ActionState::Applied,
                "",
            ),
            Ok(false) => Action::new(
                &self.host,
                Verb::Isolate,
                "host",
                Some(ttl_s),
                ActionState::Applied,
                "renewed",
            ),
            Err(e) => Action::new(
                &self.host,
                Verb::Isolate,
                "host",
                Some(ttl_s),
                ActionState::Failed,
                e.to_string(),
            ),
        };
        self.record(a)
    }

    pub fn unisolate(&self) -> Action {
        let a = match isolate::unisolate() {
            Ok(true) => Action::new(
                &self.host,
                Verb::Unisolate,
                "host",
                None,
                ActionState::Applied,
                "",
            ),
            Ok(false) => Action::new(
                &self.host,
                Verb::Unisolate,
                "host",
                None,
                ActionState::Noop,
                "not isolated",
            ),
            Err(e) => Action::new(
                &self.host,
                Verb::Unisolate,
                "host",
                None,
                ActionState::Failed,
                e.to_string(),
            ),
        };
        self.record(a)
    }
}

/// The expiry and directions a block request leaves on its entry, given
/// the live entry already there: never less than either.
pub fn renewal(live: Option<&BlockValue>, asked_ns: u64, flags: u32) -> (u64, u32) {
    match live {
        Some(v) => (v.expires_ns.max(asked_ns), v.flags | flags),
        None => (asked_ns, flags),
    }
}

/// What a renewal kept from the live entry beyond the request, if anything.
fn renewal_note(live: Option<&BlockValue>, asked_ns: u64, flags: u32, now: u64) -> Option<String> {
    let v = live?;
    let mut kept = Vec::new();
    if v.flags | flags != flags {
        kept.push(format!("direction {}", direction(v.flags)));
    }
    if v.expires_ns > asked_ns {
        kept.push(format!(
            "{}s left",
            v.expires_ns.saturating_sub(now) / 1_000_000_000
        ));
    }
    (!kept.is_empty()).then(|| {
        format!(
            "the live block's {} kept: a request never weakens a block",
            kept.join(" and ")
        )
    })
}

pub fn direction(flags: u32) -> &'static str {
    match (flags & BLOCK_INGRESS != 0, flags & BLOCK_EGRESS != 0) {
        (true, true) => "in+out",
        (true, false) => "in",
        (false, true) => "out",
        _ => "none",
    }
}

/// Kill needs no loaded programs; it is recorded like every other action.
pub fn kill_action(cfg: &Config, host: &str, pid: u32, start: Option<u64>, freeze: bool) -> Action {
    let (verb, result) = if freeze {
        let root =
            crate::kernel::loader::cgroup2_root().unwrap_or_else(|| "/sys/fs/cgroup".to_string());
        (
            Verb::Freeze,
            kill::freeze(pid, &root).map(|cg| format!("froze cgroup {cg}")),
        )
    } else {
        (
            Verb::Kill,
            kill::kill(pid, start).map(|st| format!("SIGKILL via pidfd, start time {st}")),
        )
    };
    let mut a = match result {
        Ok(detail) => Action::new(
            host,
            verb,
            pid.to_string(),
            None,
            ActionState::Applied,
            detail,
        ),
        Err(e) => Action::new(
            host,
            verb,
            pid.to_string(),
            None,
            ActionState::Refused,
            e.to_string(),
        ),
    };
    if let Err(e) = a.record(&cfg.state_dir) {
        tracing::warn!("could not append to the audit log: {e}");
    }
    a
}

/// Whether an address falls under any listed block that is live now.
pub fn is_blocked(entries: &[BlockEntry], ip: &IpAddr) -> bool {
    let now = monotonic_ns();
    entries
        .iter()
        .any(|e| e.expires_ns > now && e.target.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(expires_ns: u64, flags: u32) -> BlockValue {
        BlockValue {
            expires_ns,
            flags,
            ..BlockValue::default()
        }
    }

    #[test]
    fn a_renewal_never_weakens_the_live_block() {
        let both = BLOCK_INGRESS | BLOCK_EGRESS;
        // Nothing there: exactly what was asked.
        assert_eq!(renewal(None, 100, BLOCK_INGRESS), (100, BLOCK_INGRESS));
        // A shorter, one-direction request keeps the longer two-way block.
        assert_eq!(
            renewal(Some(&live(500, both)), 100, BLOCK_INGRESS),
            (500, both)
        );
        // A longer request extends; the directions add up.
        assert_eq!(
            renewal(Some(&live(50, BLOCK_EGRESS)), 100, BLOCK_INGRESS),
            (100, both)
        );
        let note =
            renewal_note(Some(&live(500_000_000_000, both)), 100, BLOCK_INGRESS, 0).expect("note");
        assert!(
            note.contains("direction in+out") && note.contains("500s left"),
            "{note}"
        );
        assert_eq!(renewal_note(Some(&live(50, both)), 100, both, 0), None);
    }
}
