//! Operator commands: thin clients of the running daemon (`control`) and of
//! the kernel and nftables state (`contain`), plus the offline checks.

pub mod contain;
pub mod control;

use std::path::{Path, PathBuf};

use vigil::config::Config;

/// The config at `path`, or the built-in defaults when none is given.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// The control socket named by the config; an error when it is turned off.
pub fn socket(config: Option<&Path>) -> anyhow::Result<PathBuf> {
    let cfg = load_config(config)?;
    if cfg.control.socket.as_os_str().is_empty() {
        anyhow::bail!("the control socket is turned off in the config (control.socket is empty)");
    }
    Ok(cfg.control.socket)
}

/// `vigil run`: the daemon on a single-threaded runtime.
pub fn run_daemon(config: Option<&Path>, output: Option<String>) -> anyhow::Result<()> {
    let mut cfg = load_config(config)?;
    if let Some(o) = output {
        cfg.output = o;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(vigil::daemon::run(cfg))?;
    Ok(())
}

/// `vigil check-config`: parses and prints the effective configuration.
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    println!("{cfg:#?}");
    Ok(())
}

/// `vigil playbook check`: prints every problem of every file; Ok only
/// when all are valid.
pub fn check_playbooks(paths: &[PathBuf]) -> anyhow::Result<()> {
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

/// `vigil audit verify`: walks the hash chain.
pub fn audit_verify(config: Option<&Path>, file: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_config(config)?;
    let path = file.unwrap_or_else(|| cfg.state_dir.join(vigil::enforce::audit::FILE));
    let n = vigil::enforce::audit::verify(&path)?;
    println!("{}: {n} records, hash chain intact", path.display());
    Ok(())
}
