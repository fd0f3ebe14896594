//! Containment commands run by an operator (root): the kernel blocklist,
//! nftables isolation, kill and the enforcement pins. Each prints the
//! action record it produced; refused or failed actions exit non-zero.

use std::path::Path;

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};
use vigil::config::Config;
use vigil::enforce::actions::{Action, ActionState};
use vigil::enforce::blocklist::BlockTotals;
use vigil::enforce::caps::Caps;
use vigil::enforce::cidr::{parse_duration, Cidr};
use vigil::enforce::containment::{direction, kill_action, AttachReport, Containment};
use vigil::util::clock::monotonic_ns;

use super::load_config;

fn host_name(cfg: &Config) -> String {
    if cfg.host.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    } else {
        cfg.host.clone()
    }
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("containment commands must run as root: use sudo");
    }
    Ok(())
}

fn open(cfg: &Config) -> anyhow::Result<(Containment, AttachReport)> {
    require_root()?;
    Ok(Containment::open(cfg, &host_name(cfg))?)
}

/// Prints the action record; refused or failed actions exit non-zero.
fn finish(a: Action) -> anyhow::Result<()> {
    println!("{}", a.to_line());
    match a.state {
        ActionState::Applied | ActionState::Noop | ActionState::Expired => Ok(()),
        _ => anyhow::bail!("{} {}: {}", a.action, a.state, a.detail),
    }
}

fn totals_json(t: &BlockTotals) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or_default()
}

pub fn blocks_list(config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let (c, _) = open(&load_config(config)?)?;
    let now = monotonic_ns();
    let entries = c.blocks.list_counted();
    let totals = c.blocks.totals();
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "target": e.target.to_string(),
                    "direction": direction(e.flags),
                    "ttl_remaining_s": e.expires_ns.saturating_sub(now) / 1_000_000_000,
                    "expired": e.expires_ns <= now,
                    "packets": e.packets,
                    "bytes": e.bytes,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"blocks": rows, "dropped": totals_json(&totals)})
        );
        return Ok(());
    }
    println!(
        "{:<40} {:<7} {:>10} {:>12} {:>14}",
        "TARGET", "DIR", "TTL LEFT", "PACKETS", "BYTES"
    );
    for e in &entries {
        let left = if e.expires_ns <= now {
            "expired".to_string()
        } else {
            format!("{}s", (e.expires_ns - now) / 1_000_000_000)
        };
        println!(
            "{:<40} {:<7} {:>10} {:>12} {:>14}",
            e.target.to_string(),
            direction(e.flags),
            left,
            e.packets,
            e.bytes
        );
    }
    println!(
        "{} entries; dropped in {} packets / {} bytes, out {} packets / {} bytes",
        entries.len(),
        totals.in_packets,
        totals.in_bytes,
        totals.out_packets,
        totals.out_bytes
    );
    Ok(())
}

/// An operator may block more than the fleet may, but only on purpose:
/// past the caps `--force` is needed (a /1 typed for a /31 is refused).
pub fn blocks_add(
    config: Option<&Path>,
    target: &str,
    ttl: &str,
    dir: &str,
    force: bool,
) -> anyhow::Result<()> {
    let target: Cidr = target.parse()?;
    let ttl_s = parse_duration(ttl)?;
    let cfg = load_config(config)?;
    if let Err(e) = Caps::from_config(&cfg.enforce).check(&target, ttl_s) {
        if !force {
            anyhow::bail!("{e} (add --force to block it anyway)");
        }
        eprintln!("vigil: {e}; blocking anyway (--force)");
    }
    let flags = match dir {
        "in" => BLOCK_INGRESS,
        "out" => BLOCK_EGRESS,
        "both" => BLOCK_INGRESS | BLOCK_EGRESS,
        other => anyhow::bail!("--direction must be in, out or both, not {other:?}"),
    };
    let (mut c, _) = open(&cfg)?;
    finish(c.block(&target, ttl_s, flags))
}

pub fn blocks_remove(config: Option<&Path>, target: &str) -> anyhow::Result<()> {
    let target: Cidr = target.parse()?;
    let (mut c, _) = open(&load_config(config)?)?;
    finish(c.unblock(&target))
}

pub fn isolate(config: Option<&Path>, ttl: &str) -> anyhow::Result<()> {
    let ttl_s = parse_duration(ttl)?;
    let (c, _) = open(&load_config(config)?)?;
    finish(c.isolate(ttl_s))
}

pub fn unisolate(config: Option<&Path>) -> anyhow::Result<()> {
    let (c, _) = open(&load_config(config)?)?;
    finish(c.unisolate())
}

pub fn kill(
    config: Option<&Path>,
    pid: u32,
    start_time: Option<u64>,
    freeze: bool,
) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    finish(kill_action(&cfg, &host_name(&cfg), pid, start_time, freeze))
}

pub fn status(config: Option<&Path>) -> anyhow::Result<()> {
    let (c, report) = open(&load_config(config)?)?;
    let now = monotonic_ns();
    let entries = c.blocks.list();
    let live = entries.iter().filter(|e| e.expires_ns > now).count();
    let remaining = vigil::enforce::isolate::remaining_s();
    println!(
        "{}",
        serde_json::json!({
            "entries": entries.len(),
            "entries_live": live,
            "dropped": totals_json(&c.blocks.totals()),
            "isolated": remaining.is_some(),
            "isolation_remaining_s": remaining,
            "xdp": report.xdp,
            "egress": report.egress,
        })
    );
    Ok(())
}

pub fn detach(config: Option<&Path>) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let n = vigil::enforce::attach::detach_all(&cfg.enforce.pin_dir)?;
    println!("removed {n} pins under {}", cfg.enforce.pin_dir.display());
    Ok(())
}
