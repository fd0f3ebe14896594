//! The `vigil` command: argument parsing and dispatch to `cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil::service::control::Request;

mod cli;

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
        /// What the output holds (overrides the config's `format`).
        #[arg(long, value_enum)]
        format: Option<vigil::sink::format::Format>,
    },
    /// Check a config file and print the effective configuration (secrets redacted).
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
    /// Sigma rules: which load, and why the others do not (file:line).
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
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
    /// Stage safe stand-ins for the detectors next to the running agent and
    /// report what it raised, how fast, and what the playbooks would do (dry-run).
    Simulate {
        #[arg(long)]
        json: bool,
        /// How long to wait for each detection.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
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
    /// The agent's Isolation Forest on vectors from a CSV file (one per
    /// line, numbers only), with the agent's settings.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Fleet fusion on Kafka: consensus, cross-host chains, incidents.
    Fusion {
        #[command(subcommand)]
        cmd: FusionCmd,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FusionCmd {
    /// Run fusion stages until SIGINT/SIGTERM (all by default).
    Run {
        /// Comma-separated subset of rekey,consensus,chains,incidents.
        #[arg(long, value_delimiter = ',')]
        stages: Vec<String>,
    },
    /// Current incidents, most recent first.
    Incidents {
        #[arg(long)]
        json: bool,
    },
    /// One incident with its narrative.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Lift a fleet decision now (and hold off the same evidence).
    Unblock { indicator: String },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Train on every vector of a CSV; writes the model in the agent's
    /// baseline format (iforest.json).
    Train {
        #[arg(long)]
        csv: PathBuf,
        #[arg(long, default_value = "iforest.json")]
        out: PathBuf,
        /// Take detect.anomaly (trees, samples, seed) from this agent config
        /// instead of the defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Score every vector of a CSV: one score per line, in order (blank
    /// lines and a header line get none).
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        csv: PathBuf,
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
enum RulesCmd {
    /// Compile Sigma rules (files, or directories searched recursively);
    /// exits non-zero only on errors (unreadable, not YAML, not Sigma).
    Check {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
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
        /// Block even when broader than enforce.max_prefix_v4/v6 or longer
        /// than enforce.max_ttl_s (the never-block guard still applies).
        #[arg(long)]
        force: bool,
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
        // On a failed write (stderr on a full disk) tracing-subscriber
        // would report it with eprintln!, which panics: the agent must
        // outlive its log.
        .log_internal_errors(false)
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
    use cli::{contain, control, socket};
    match cli.command {
        Command::Run {
            config,
            output,
            format,
        } => cli::run_daemon(config.as_deref(), output, format),
        Command::CheckConfig { config } => cli::check_config(&config),
        Command::Blocks { cmd, config } => {
            let config = config.as_deref();
            match cmd {
                BlocksCmd::List { json } => contain::blocks_list(config, json),
                BlocksCmd::Add {
                    target,
                    ttl,
                    direction,
                    force,
                } => contain::blocks_add(config, &target, &ttl, &direction, force),
                BlocksCmd::Remove { target } => contain::blocks_remove(config, &target),
            }
        }
        Command::Isolate { ttl, config } => contain::isolate(config.as_deref(), &ttl),
        Command::Unisolate { config } => contain::unisolate(config.as_deref()),
        Command::Kill {
            pid,
            start_time,
            freeze,
            config,
        } => contain::kill(config.as_deref(), pid, start_time, freeze),
        Command::Audit {
            cmd: AuditCmd::Verify { file },
            config,
        } => cli::audit_verify(config.as_deref(), file),
        Command::Playbook {
            cmd: PlaybookCmd::Check { files },
        } => cli::check_playbooks(&files),
        Command::Rules {
            cmd: RulesCmd::Check { dirs },
        } => cli::rules::check(&dirs),
        Command::Status { json, config } => control::status(&socket(config.as_deref())?, json),
        Command::Alerts {
            follow,
            json,
            config,
        } => control::alerts(&socket(config.as_deref())?, follow, json),
        Command::Simulate {
            json,
            timeout_s,
            config,
        } => {
            if !cli::simulate::run(config.as_deref(), json, timeout_s)? {
                anyhow::bail!("not every attempted stand-in was detected");
            }
            Ok(())
        }
        Command::Approvals { json, config } => {
            control::approvals(&socket(config.as_deref())?, json)
        }
        Command::Incidents { json, config } => {
            control::incidents(&socket(config.as_deref())?, json)
        }
        Command::Approve { id, json, config } => {
            control::act(&socket(config.as_deref())?, Request::Approve { id }, json)
        }
        Command::Deny { id, json, config } => {
            control::act(&socket(config.as_deref())?, Request::Deny { id }, json)
        }
        Command::Rollback {
            incident,
            json,
            config,
        } => control::act(
            &socket(config.as_deref())?,
            Request::Rollback { incident },
            json,
        ),
        Command::Reload { config } => {
            control::act(&socket(config.as_deref())?, Request::Reload, false)
        }
        Command::EnforceStatus { config } => contain::status(config.as_deref()),
        Command::EnforceDetach { config } => contain::detach(config.as_deref()),
        Command::Model { cmd } => match cmd {
            ModelCmd::Train { csv, out, config } => {
                cli::model::train(&csv, &out, config.as_deref())
            }
            ModelCmd::Score { model, csv } => cli::model::score(&model, &csv),
        },
        Command::Fusion { cmd, config } => {
            let config = config.as_deref();
            match cmd {
                FusionCmd::Run { stages } => cli::fusion::run(config, stages),
                FusionCmd::Incidents { json } => cli::fusion::incidents(config, json),
                FusionCmd::Show { id, json } => cli::fusion::show(config, &id, json),
                FusionCmd::Unblock { indicator } => cli::fusion::unblock(config, &indicator),
            }
        }
    }
}
