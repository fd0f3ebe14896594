//! Builds the kernel programs (agent-ebpf) with the nightly toolchain and
//! bpf-linker, so `include_bytes_aligned!` can embed them from OUT_DIR.
//!
//! aya_build turns every line of the nested cargo build into a
//! `cargo:warning`, which buries a normal build under a screen of
//! "warning: vigil@0.1.0: Compiling …". So this script runs aya_build in a
//! child copy of itself, passes the child's other `cargo:` directives on
//! (rerun-if-changed and friends), and shows the nested output only when
//! the build failed, or when it reports a warning of its own (a rustc
//! diagnostic in the kernel crate), or with `VIGIL_BUILD_VERBOSE=1`.

use std::process::Command;

use anyhow::{anyhow, bail, Context as _};

/// Set in the child: build the kernel programs instead of supervising.
const CHILD: &str = "VIGIL_BUILD_EBPF_CHILD";
const VERBOSE: &str = "VIGIL_BUILD_VERBOSE";

fn main() -> anyhow::Result<()> {
    if std::env::var_os(CHILD).is_some() {
        return build_ebpf();
    }
    println!("cargo:rerun-if-env-changed={VERBOSE}");
    let me = std::env::current_exe().context("locating the build script")?;
    let out = Command::new(&me)
        .env(CHILD, "1")
        .output()
        .with_context(|| format!("running {}", me.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut nested = Vec::new();
    for line in stdout.lines() {
        match line
            .strip_prefix("cargo:warning=")
            .or_else(|| line.strip_prefix("cargo::warning="))
        {
            Some(text) => nested.push(text),
            None => println!("{line}"),
        }
    }
    let diagnostics = nested
        .iter()
        .any(|l| l.starts_with("warning") || l.starts_with("error"));
    let verbose = std::env::var_os(VERBOSE).is_some_and(|v| v == "1");
    if !out.status.success() || diagnostics || verbose {
        for line in nested {
            println!("cargo:warning={line}");
        }
    }
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!(
            "the nested build of the kernel programs failed ({}); its output is above",
            out.status
        );
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = packages
        .iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("agent-ebpf manifest has no parent directory"))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the kernel programs failed; `cargo xtask setup` installs the \
         nightly toolchain with rust-src and bpf-linker",
    )
}
