//! The `vigil` command: argument parsing and hand-off to the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_common::enforce::{BLOCK_EGRESS, BLOCK_INGRESS};
use clap::{Parser, Subcommand};

mod control_cli;
use vigil::config::Config;
use vigil::control::Request;
use vigil::enforce::actions::Action;
use vigil::enforce::cidr::{parse_duration, Cidr};
use vigil::enforce::containment::{direction, kill_action, Containment};

#[derive(Parser)]
#[command(name = "vigil", version, about = "eBPF host defense agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (as root): load the kernel programs and write JSON lines.
    Run {
        /// YAML config file; built-in defaults when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output file, or `-` for stdout (overrides the config's `output`).
        #[arg(long, short)]
        output: Option<String>,
    },
    /// Check a config file and print the effective configuration.
    CheckConfig { config: PathBuf },
    /// The kernel IP blocklist (XDP inbound, cgroup_skb outbound).
    Blocks {
        #[command(subcommand)]
        cmd: BlocksCmd,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Isolate the host with nftables for a TTL (renews a running isolation).
    Isolate {
        /// How long, e.g. 10m; isolation lapses by itself afterwards.
        #[arg(long)]
        ttl: String,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Remove the isolation table, restoring the prior ruleset exactly.
    Unisolate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// SIGKILL a process through a pidfd (or freeze its cgroup).
    Kill {
        pid: u32,
        /// Only act if the process started at this time (ticks since boot,
        /// /proc/PID/stat field 22): protects against pid reuse.
        #[arg(long)]
        start_time: Option<u64>,
        /// Freeze the process's cgroup instead of killing it.
        #[arg(long)]
        freeze: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Check playbooks: every problem with file, line and column; exits non-zero on any.
    Playbook {
        #[command(subcommand)]
        cmd: PlaybookCmd,
    },
    /// What the running agent is doing: programs, events, blocks, approvals, playbooks.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Recent alerts from the running agent; --follow streams new ones.
    Alerts {
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Pending approvals with their proposed actions and deadlines.
    Approvals {
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Approve a pending approval: its incident's remaining steps run.
    Approve {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Deny a pending approval: its incident's remaining steps are dropped.
    Deny {
        id: String,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Incidents: which playbook ran for which alert, and each step's state.
    Incidents {
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Undo every applied step of an incident, last first.
    Rollback {
        incident: String,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Reload the playbooks (as SIGHUP); a bad set is refused and the running one stays.
    Reload {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Enforcement counters: entries, drops, isolation state (JSON).
    EnforceStatus {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Detach the enforcement programs and delete their pinned maps.
    EnforceDetach {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PlaybookCmd {
    /// Validate playbook files (or every *.yaml in a directory).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the hash chain; reports the first broken link and exits non-zero.
    Verify {
        /// Audit file (default: audit.jsonl in the state directory).
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BlocksCmd {
    /// List blocks with their remaining TTL and drop counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Block an address or prefix.
    Add {
        target: String,
        /// e.g. 30s, 10m, 4h
        #[arg(long)]
        ttl: String,
        /// in, out or both
        #[arg(long, default_value = "both")]
        direction: String,
    },
    /// Remove a block.
    Remove { target: String },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config, output } => {
            let mut cfg = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            if let Some(o) = output {
                cfg.output = o;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(vigil::daemon::run(cfg))?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(&config)?;
            println!("{cfg:#?}");
            Ok(())
        }
        Command::Blocks { cmd, config } => cli::blocks(&load_config(&config)?, cmd),
        Command::Isolate { ttl, config } => {
            let cfg = load_config(&config)?;
            let ttl_s = parse_duration(&ttl)?;
            let (c, _) = open_containment(&cfg)?;
            finish(c.isolate(ttl_s))
        }
        Command::Unisolate { config } => {
            let cfg = load_config(&config)?;
            let (c, _) = open_containment(&cfg)?;
            finish(c.unisolate())
        }
        Command::Kill {
            pid,
            start_time,
            freeze,
            config,
        } => {
            let cfg = load_config(&config)?;
            finish(kill_action(&cfg, &host_name(&cfg), pid, start_time, freeze))
        }
        Command::Audit {
            cmd: AuditCmd::Verify { file },
            config,
        } => {
            let cfg = load_config(&config)?;
            let path = file.unwrap_or_else(|| cfg.state_dir.join(vigil::audit::FILE));
            let n = vigil::audit::verify(&path)?;
            println!("{}: {n} records, hash chain intact", path.display());
            Ok(())
        }
        Command::Playbook {
            cmd: PlaybookCmd::Check { files },
        } => check_playbooks(&files),
        Command::Status { json, config } => control_cli::status(&socket(&config)?, json),
        Command::Alerts {
            follow,
            json,
            config,
        } => control_cli::alerts(&socket(&config)?, follow, json),
        Command::Approvals { json, config } => control_cli::approvals(&socket(&config)?, json),
        Command::Incidents { json, config } => control_cli::incidents(&socket(&config)?, json),
        Command::Approve { id, json, config } => {
            control_cli::act(&socket(&config)?, Request::Approve { id }, json)
        }
        Command::Deny { id, json, config } => {
            control_cli::act(&socket(&config)?, Request::Deny { id }, json)
        }
        Command::Rollback {
            incident,
            json,
            config,
        } => control_cli::act(&socket(&config)?, Request::Rollback { incident }, json),
        Command::Reload { config } => control_cli::act(&socket(&config)?, Request::Reload, false),
        Command::EnforceStatus { config } => {
            let cfg = load_config(&config)?;
            let (c, report) = open_containment(&cfg)?;
            let now = vigil::clock::monotonic_ns();
            let entries = c.blocks.list();
            let live = entries.iter().filter(|e| e.expires_ns > now).count();
            let t = c.blocks.totals();
            println!(
                "{}",
                serde_json::json!({
                    "entries": entries.len(),
                    "entries_live": live,
                    "dropped": {"in_packets": t[0], "in_bytes": t[1], "out_packets": t[2], "out_bytes": t[3]},
                    "isolated": vigil::enforce::isolate::remaining_s().is_some(),
                    "isolation_remaining_s": vigil::enforce::isolate::remaining_s(),
                    "xdp": report.xdp,
                    "egress": report.egress,
                })
            );
            Ok(())
        }
        Command::EnforceDetach { config } => {
            let cfg = load_config(&config)?;
            let n = vigil::enforce::attach::detach_all(&cfg.enforce.pin_dir)?;
            println!("removed {n} pins under {}", cfg.enforce.pin_dir.display());
            Ok(())
        }
    }
}

fn socket(config: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let cfg = load_config(config)?;
    if cfg.control.socket.as_os_str().is_empty() {
        anyhow::bail!("the control socket is turned off in the config (control.socket is empty)");
    }
    Ok(cfg.control.socket)
}

/// Prints every problem of every file; Ok only when all are valid.
fn check_playbooks(paths: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    let mut good = 0;
    for p in paths {
        let result = if p.is_dir() {
            vigil::response::playbook::load_dir(p).map(|set| set.len())
        } else {
            vigil::response::playbook::load_file(p).map(|_| 1)
        };
        match result {
            Ok(n) => good += n,
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    if bad > 0 {
        anyhow::bail!("{bad} of {} playbook paths have problems", paths.len());
    }
    println!("{good} playbooks OK");
    Ok(())
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

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

fn open_containment(
    cfg: &Config,
) -> anyhow::Result<(Containment, vigil::enforce::containment::AttachReport)> {
    require_root()?;
    Ok(Containment::open(cfg, &host_name(cfg))?)
}

/// Prints the action record; refused or failed actions exit non-zero.
fn finish(a: Action) -> anyhow::Result<()> {
    println!("{}", a.to_line());
    match a.state {
        "applied" | "noop" | "expired" => Ok(()),
        _ => anyhow::bail!("{} {}: {}", a.action, a.state, a.detail),
    }
}

mod cli {
    use super::*;

    pub fn blocks(cfg: &Config, cmd: BlocksCmd) -> anyhow::Result<()> {
        let (mut c, _) = open_containment(cfg)?;
        match cmd {
            BlocksCmd::List { json } => {
                let now = vigil::clock::monotonic_ns();
                let entries = c.blocks.list();
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
                        serde_json::json!({"blocks": rows, "dropped": {
                            "in_packets": totals[0], "in_bytes": totals[1],
                            "out_packets": totals[2], "out_bytes": totals[3]}})
                    );
                } else {
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
                        totals[0],
                        totals[1],
                        totals[2],
                        totals[3]
                    );
                }
                Ok(())
            }
            BlocksCmd::Add {
                target,
                ttl,
                direction,
            } => {
                let target: Cidr = target.parse()?;
                let ttl_s = parse_duration(&ttl)?;
                let flags = match direction.as_str() {
                    "in" => BLOCK_INGRESS,
                    "out" => BLOCK_EGRESS,
                    "both" => BLOCK_INGRESS | BLOCK_EGRESS,
                    other => anyhow::bail!("--direction must be in, out or both, not {other:?}"),
                };
                finish(c.block(&target, ttl_s, flags))
            }
            BlocksCmd::Remove { target } => {
                let target: Cidr = target.parse()?;
                finish(c.unblock(&target))
            }
        }
    }
}
