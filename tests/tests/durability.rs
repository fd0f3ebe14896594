//! Disk full, crashes and bad state files, for real: the state directory
//! on a small tmpfs filled to the last byte, corrupt state files at start,
//! an audit log cut, deleted and torn, and the files' modes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_integration::*;

/// A tmpfs of `size` mounted on `dir`; unmounted on drop, on failure too.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes `path` until the file system says ENOSPC; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(w) => n += w as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
        assert!(n < 1 << 30, "the tmpfs never filled");
    }
    n
}

fn status(cfg: &Path) -> Value {
    let out = Command::new(vigil_bin())
        .args(["status", "--json", "--config"])
        .arg(cfg)
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `vigil blocks add IP --ttl 1m`, by the CLI (an audited action).
fn cli_block(cfg: &Path, ip: &str) -> std::process::Output {
    let out = Command::new(vigil_bin())
        .args(["blocks", "add", ip, "--ttl", "1m", "--config"])
        .arg(cfg)
        .output()
        .expect("blocks add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every line of the output must be one whole JSON record.
fn assert_whole_lines(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read output");
    for (i, l) in text.lines().enumerate() {
        assert!(
            serde_json::from_str::<Value>(l).is_ok(),
            "line {} of {} is not a whole record: {l:?}",
            i + 1,
            path.display()
        );
    }
}

/// The state directory (outputs, audit log, saved blocks, and the agent's
/// own stderr, which the harness keeps there) on a 2 MiB tmpfs, filled.
#[test]
fn a_full_disk_costs_output_not_detection_or_enforcement() {
    let s = 247;
    let topo = Topology::new("dfull", s);
    let pins = Pins::new("dfull");
    let books = TempDir::new("dfull-books");
    scan_block_playbook(&books.0);
    let run = TempDir::new("dfull-run");
    let socket = run.0.join("vigil.sock");
    let metrics_addr = "127.0.0.1:19196";
    let dir = TempDir::new("dfull");
    let _fs = Tmpfs::mount(&dir.0, "2m");
    let cfg_text = format!(
        "stats_interval_s: 1\nflows:\n  sweep_interval_ms: 200\n  close_linger_ms: 100\n\
         metrics:\n  listen: \"{metrics_addr}\"\ncontrol:\n  socket: \"{}\"\n\
         enforce:\n  pin_dir: {}\n  interfaces: [lo]\n  maintenance_interval_s: 1\n\
         response:\n  mode: enforce\nplaybooks:\n  dir: {}\n",
        socket.display(),
        pins.pin_dir,
        books.0.display()
    );
    let mut agent = Agent::start_in(None, &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");

    // The disk fills up.
    let filler = agent.dir.0.join("filler");
    let filled = fill(&filler);
    eprintln!("filled the 2 MiB state directory with {filled} bytes");

    // A scan: detected and blocked although nothing can be written.
    let attacker = topo.peer_ip(1);
    nmap_scan(&topo.peers[0], &topo.host_ip(1));
    let start = Instant::now();
    while !blocked(&cfg, &attacker) {
        assert!(
            start.elapsed() < PATIENCE,
            "the scan's block never landed while the disk was full:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status(&cfg);
    assert!(
        st["detectors"]["scan"].as_u64().is_some_and(|n| n >= 1),
        "{st}"
    );
    let jsonl = &st["outputs"]["jsonl"];
    assert!(
        jsonl["failures"]["errors"].as_u64().is_some_and(|e| e > 0),
        "no output failure counted: {st}"
    );
    assert!(
        jsonl["status"]["pending_bytes"]
            .as_u64()
            .is_some_and(|b| b > 0),
        "{st}"
    );
    assert!(st["audit_failures"].as_u64().is_some_and(|n| n > 0), "{st}");
    let human = Command::new(vigil_bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .expect("status");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("OUTPUTS") && human.contains("No space left on device"),
        "{human}"
    );
    let start = Instant::now();
    let text = loop {
        let (code, text) = http_get(metrics_addr, "/metrics");
        assert_eq!(code, 200);
        if metric(&text, "vigil_output_errors_total{output=\"jsonl\"}").is_some_and(|v| v > 0.0) {
            break text;
        }
        assert!(start.elapsed() < PATIENCE, "no output errors in\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metric(&text, "vigil_audit_failures_total").is_some_and(|v| v > 0.0),
        "{text}"
    );
    assert!(
        metric(&text, "vigil_state_write_errors_total").is_some_and(|v| v > 0.0),
        "blocks.json could not be saved, yet no state write error: {text}"
    );

    // Space returns: what waited is written, and so is what comes after.
    std::fs::remove_file(&filler).expect("free space");
    let alert = agent.wait_for("alert", |r| {
        r["detector"] == "scan" && r["entities"]["src_ip"] == attacker.as_str()
    });
    let block = agent.wait_for("action", |r| {
        r["action"] == "block" && r["state"] == "applied"
    });
    assert_eq!(
        block["audited"], false,
        "the block could not be audited on a full disk: {block}"
    );
    let after = agent.wait_for("agent_stats", |r| r["ts"].as_str() > alert["ts"].as_str());
    eprintln!(
        "after space returned: alert {} and stats at {} written",
        alert["id"], after["ts"]
    );
    // The block blocks.json could not take is saved once there is room,
    // so it would survive a reboot.
    let start = Instant::now();
    loop {
        let saved: Value = std::fs::read(agent.dir.0.join("blocks.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let has = saved.as_array().is_some_and(|l| {
            l.iter()
                .any(|b| b["target"].as_str().is_some_and(|t| t == attacker))
        });
        if has {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "blocks.json never caught up: {saved}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Audited again once there is room.
    let out = cli_block(&cfg, "203.0.113.77");
    let line: Value = serde_json::from_slice(&out.stdout).expect("action");
    assert_eq!(line["audited"], true, "{line}");
    assert!(agent.stop());
    assert_whole_lines(&agent.output);
    assert_audit_intact(&cfg);
}

#[test]
fn corrupt_state_files_are_moved_aside_and_the_agent_starts() {
    let pins = Pins::new("dcor");
    let dir = TempDir::new("dcor");
    for (name, junk) in [
        ("blocks.json", "[{\"target\": \"10.0.0."),
        ("response.json", "{\"incidents\": 7"),
        ("iforest.json", "{\"forest\": {\"trees\": []}}"),
    ] {
        std::fs::write(dir.0.join(name), junk).expect("write corrupt state");
    }
    let cfg = format!(
        "{TEST_CONFIG_BODY}enforce:\n  pin_dir: {}\n  interfaces: [lo]\n",
        pins.pin_dir
    );
    let mut agent = Agent::start_in(None, &cfg, dir);
    let names: Vec<String> = std::fs::read_dir(&agent.dir.0)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["blocks.json", "response.json", "iforest.json"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("{name}.corrupt-"))),
            "{name} was not moved aside: {names:?}"
        );
        assert!(!names.contains(&name.to_string()), "{name} left in place");
    }
    let log = agent.stderr();
    assert!(log.contains("blocks.json is corrupt"), "{log}");
    // It runs: a block is saved to a fresh blocks.json.
    cli_block(&agent.dir.0.join("vigil.yaml"), "203.0.113.78");
    let saved: Value = serde_json::from_slice(
        &std::fs::read(agent.dir.0.join("blocks.json")).expect("blocks.json"),
    )
    .expect("a whole blocks.json");
    assert!(saved.as_array().is_some_and(|a| a.len() == 1), "{saved}");
    assert!(agent.stop());
}

/// TEST_CONFIG without its `enforce` section.
const TEST_CONFIG_BODY: &str = "\
stats_interval_s: 1
flows:
  sweep_interval_ms: 200
  udp_idle_timeout_s: 1
  close_linger_ms: 100
metrics:
  listen: \"\"
";

fn verify(cfg: &Path) -> (bool, String) {
    let out = Command::new(vigil_bin())
        .args(["audit", "verify", "--config"])
        .arg(cfg)
        .output()
        .expect("audit verify");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn audit_verify_reports_truncation_deletion_and_torn_lines() {
    let pins = Pins::new("daud");
    let dir = TempDir::new("daud");
    let cfg = dir.0.join("vigil.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {}\nenforce:\n  pin_dir: {}\n  interfaces: [lo]\n",
            dir.0.display(),
            pins.pin_dir
        ),
    )
    .expect("config");
    // Real appends, by the CLI, under the audit log's lock.
    for n in 0..4 {
        cli_block(&cfg, &format!("203.0.113.{}", 90 + n));
    }
    let log = dir.0.join("audit.jsonl");
    let (ok, text) = verify(&cfg);
    assert!(ok && text.contains("4 records"), "{text}");
    // The log and its head are the owner's alone.
    for name in ["audit.jsonl", "audit.head"] {
        let mode = std::fs::metadata(dir.0.join(name))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let full = std::fs::read_to_string(&log).expect("audit log");
    let lines: Vec<&str> = full.lines().collect();

    // Torn: a crash mid-write is not tampering.
    std::fs::write(&log, format!("{full}{{\"kind\":\"action\",\"se")).expect("torn");
    let (ok, text) = verify(&cfg);
    assert!(ok && text.contains("torn"), "{text}");

    // Cut: the last two records removed.
    std::fs::write(&log, lines[..2].join("\n") + "\n").expect("cut");
    let (ok, text) = verify(&cfg);
    assert!(!ok && text.contains("cut off"), "truncation passed: {text}");

    // Deleted.
    std::fs::remove_file(&log).expect("rm");
    let (ok, text) = verify(&cfg);
    assert!(!ok && text.contains("deleted"), "deletion passed: {text}");

    // Put back whole, it verifies again.
    std::fs::write(&log, &full).expect("restore");
    let (ok, text) = verify(&cfg);
    assert!(ok, "{text}");
}

#[test]
fn the_state_directory_is_private_outside_systemd() {
    let dir = TempDir::new("dperm");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut agent = Agent::start_in(None, TEST_CONFIG, dir);
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&agent.dir.0), 0o700, "state directory");
    assert_eq!(mode(&agent.output), 0o600, "events.jsonl");
    assert!(agent.stop());
}
