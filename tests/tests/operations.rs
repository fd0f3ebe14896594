//! Running as a service: the systemd unit verifies, and the notify protocol
//! works against a real datagram socket (PID 1 here is not systemd).

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_integration::*;

#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/vigil.service");
    let text = std::fs::read_to_string(&unit).expect("unit");
    // Point ExecStart at the built binary; the rest is checked as shipped.
    let dir = TempDir::new("unit");
    let local = dir.0.join("vigil.service");
    std::fs::write(
        &local,
        text.replace("/usr/bin/vigil", &vigil_bin().to_string_lossy()),
    )
    .expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "StateDirectory=vigil",
        "RuntimeDirectory=vigil",
        "CapabilityBoundingSet=CAP_BPF",
        "LimitNOFILE=65536",
    ] {
        assert!(text.contains(key), "unit lacks {key}");
    }
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let sock_dir = TempDir::new("notify");
    let path = sock_dir.0.join("notify.sock");
    let server = UnixDatagram::bind(&path).expect("bind notify socket");
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let path_s = path.to_string_lossy().into_owned();
    let mut agent = Agent::start_env(
        None,
        TEST_CONFIG,
        TempDir::new("notify-agent"),
        &[("NOTIFY_SOCKET", &path_s), ("WATCHDOG_USEC", "1000000")],
    );
    let mut seen: Vec<String> = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < PATIENCE
        && !(seen.iter().any(|m| m.starts_with("READY=1"))
            && seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2)
    {
        if let Ok(n) = server.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    assert!(
        seen.first().is_some_and(|m| m.starts_with("READY=1")),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{seen:?}"
    );
    assert!(agent.stop());
    let mut stopping = false;
    while let Ok(n) = server.recv(&mut buf) {
        stopping |= &buf[..n] == b"STOPPING=1";
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
}

#[test]
fn check_config_never_prints_the_fleet_key() {
    let dir = TempDir::new("checkcfg");
    let cfg = dir.0.join("vigil.yaml");
    let key = "fleet-key-4d1f9b0c-do-not-print";
    std::fs::write(
        &cfg,
        format!("kafka:\n  brokers: \"127.0.0.1:9\"\n  hmac_key: {key}\n"),
    )
    .expect("config");
    let out = Command::new(vigil_bin())
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains(key) && !stderr.contains(key),
        "the key was printed:\n{stdout}{stderr}"
    );
    assert!(stdout.contains("hmac_key: <redacted>"), "{stdout}");
    assert!(
        stdout.contains("127.0.0.1:9"),
        "the rest is shown: {stdout}"
    );
}

/// Removes the package even when an assertion fails halfway.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "vigil"]).output();
    }
}

/// Ignored unless asked for, so a run without a package reports it as not
/// run instead of passed; `cargo xtask test` builds the .deb, sets
/// VIGIL_DEB and runs it with `--include-ignored`.
#[test]
#[ignore = "needs VIGIL_DEB (the .deb to install); cargo xtask test builds it and runs this"]
fn the_debian_package_installs_where_the_unit_expects_and_removes_cleanly() {
    require_root();
    let deb = std::env::var_os("VIGIL_DEB")
        .expect("VIGIL_DEB must name the .deb to install (cargo xtask test builds it and sets it)");
    let _ = Command::new("dpkg").args(["--purge", "vigil"]).output();
    let out = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("dpkg -i");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _installed = Installed;
    for path in [
        "/usr/bin/vigil",
        "/etc/vigil/vigil.yaml",
        "/lib/systemd/system/vigil.service",
        "/usr/share/vigil/playbooks/README.md",
        "/usr/share/vigil/playbooks/brute_force_response.yaml",
        "/usr/share/vigil/playbooks/malware_containment.yaml",
        "/usr/share/vigil/playbooks/data_exfiltration_block.yaml",
        "/usr/share/vigil/playbooks/lateral_movement_isolation.yaml",
        "/usr/share/doc/vigil/README.md",
    ] {
        assert!(std::path::Path::new(path).exists(), "{path} not installed");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/vigil.service").expect("unit");
    assert!(unit.contains("ExecStart=/usr/bin/vigil run --config /etc/vigil/vigil.yaml"));
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/vigil.service"])
        .output()
        .expect("verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let check = Command::new("/usr/bin/vigil")
        .args(["check-config", "/etc/vigil/vigil.yaml"])
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The installed config points the daemon at the installed playbooks.
    let books = Command::new("/usr/bin/vigil")
        .args(["playbook", "check", "/usr/share/vigil/playbooks"])
        .output()
        .expect("playbook check");
    assert!(
        books.status.success() && String::from_utf8_lossy(&books.stdout).contains("4 playbooks OK"),
        "{}{}",
        String::from_utf8_lossy(&books.stdout),
        String::from_utf8_lossy(&books.stderr)
    );
    let conffiles = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "vigil"])
        .output()
        .expect("dpkg-query");
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/vigil/vigil.yaml"));

    let out = Command::new("dpkg")
        .args(["-r", "vigil"])
        .output()
        .expect("dpkg -r");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for gone in [
        "/usr/bin/vigil",
        "/lib/systemd/system/vigil.service",
        "/usr/share/vigil/playbooks/README.md",
    ] {
        assert!(
            !std::path::Path::new(gone).exists(),
            "{gone} left after dpkg -r"
        );
    }
}
