//! Operator commands: thin clients of the running daemon (`control`) and of
//! the kernel and nftables state (`contain`), plus the offline checks.

pub mod contain;
pub mod control;
pub mod fusion;
pub mod model;
pub mod rules;
pub mod simulate;

use std::path::{Path, PathBuf};

use vigil::config::Config;

/// The config at `path`, or the built-in defaults when none is given.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    Ok(cfg.with_scope_paths(vigil::kernel::loader::own_netns()))
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
pub fn run_daemon(
    config: Option<&Path>,
    output: Option<String>,
    format: Option<vigil::sink::format::Format>,
) -> anyhow::Result<()> {
    let mut cfg = load_config(config)?;
    if let Some(o) = output {
        cfg.output = o;
    }
    if let Some(f) = format {
        cfg.format = f;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(vigil::daemon::run(cfg))?;
    Ok(())
}

/// `vigil check-config`: parses and prints the effective configuration
/// as YAML, with `kafka.hmac_key` redacted (the output ends up in
/// terminals, tickets and CI logs).
pub fn check_config(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    print!("{}", serde_yaml::to_string(&cfg.redacted())?);
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

/// `vigil audit verify`: walks the hash chain and compares it with the
/// head kept next to it; tampering, truncation and deletion exit non-zero,
/// a torn last line (a crash mid-write) is reported and exits zero.
pub fn audit_verify(config: Option<&Path>, file: Option<PathBuf>) -> anyhow::Result<()> {
    use vigil::enforce::audit;
    let cfg = load_config(config)?;
    let path = file.unwrap_or_else(|| cfg.state_dir.join(audit::FILE));
    let r = audit::verify(&path)?;
    if !r.exists {
        println!(
            "{}: no audit log and no head: nothing has been recorded yet",
            path.display()
        );
        return Ok(());
    }
    println!(
        "{}: {} records, hash chain intact",
        path.display(),
        r.records
    );
    match &r.head {
        Some(h) if r.head_lag() == 0 => println!(
            "head ({}): record {} matches; nothing was cut off",
            audit::HEAD_FILE,
            h.seq
        ),
        Some(h) => println!(
            "head ({}): record {} matches; the log holds {} more (a crash between the log and head writes, or a failed head write)",
            audit::HEAD_FILE,
            h.seq,
            r.head_lag()
        ),
        None => println!(
            "no head ({}): records cut off the end cannot be detected here (compare audit_seq on defense.actions)",
            audit::HEAD_FILE
        ),
    }
    if r.torn_bytes > 0 {
        println!(
            "torn last line: {} bytes without a newline (a crash mid-write, not a record); the next append cuts it",
            r.torn_bytes
        );
    }
    Ok(())
}
