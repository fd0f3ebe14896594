//! The `vigil` command: argument parsing and hand-off to the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil::config::Config;

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
    }
}
