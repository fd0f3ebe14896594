//! Playbooks end to end, in network namespaces with the real kernel:
//! hydra against a real sshd is blocked by the shipped brute-force
//! playbook while a legitimate peer still logs in; an approval-gated
//! isolation waits for `vigil approve` and is undone by `vigil rollback`;
//! dry-run changes nothing in the kernel or nftables.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use vigil_integration::*;

fn config(s: u8, pins: &Pins, mode: &str, playbooks: &Path, dir: &TempDir) -> String {
    format!(
        "stats_interval_s: 1\nflows:\n  sweep_interval_ms: 200\n  close_linger_ms: 100\n\
         metrics:\n  listen: \"\"\ndetect:\n  update_interval_s: 1\n\
         enforce:\n  pin_dir: {}\n  maintenance_interval_s: 1\n  management_cidrs: [\"10.{s}.3.0/24\"]\n\
         response:\n  mode: {mode}\nplaybooks:\n  dir: {}\ncontrol:\n  socket: {}\n",
        pins.pin_dir,
        playbooks.display(),
        dir.0.join("vigil.sock").display()
    )
}

/// hydra in the background, so the test can watch the agent meanwhile.
fn hydra_background(ns: &str, host_ip: &str, n: usize, dir: &Path) -> GroupGuard {
    let list = dir.join(format!("words-{ns}.txt"));
    let words: Vec<String> = (0..n).map(|i| format!("guess-{i}")).collect();
    std::fs::write(&list, words.join("\n") + "\n").expect("wordlist");
    GroupGuard::spawn(
        Command::new("ip")
            .args([
                "netns", "exec", ns, "hydra", "-I", "-t", "4", "-l", USER, "-P",
            ])
            .arg(&list)
            .arg(format!("ssh://{host_ip}:2222"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn nft_table_exists(topo: &Topology) -> bool {
    topo.in_host("nft", &["list", "table", "inet", "vigil"])
        .status
        .success()
}

#[test]
fn brute_force_playbook_blocks_hydra_and_a_legitimate_peer_still_logs_in() {
    let topo = Topology::new("rbf", 236);
    let pins = Pins::new("rbf");
    let dir = TempDir::new("rbf");
    let cfg_text = config(236, &pins, "enforce", &shipped_playbooks(), &dir);
    let mut agent = Agent::start_in(Some(&topo.h), &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    let _sshd = Sshd::start(&topo);
    let scratch = TempDir::new("rbf-words");
    let (a, b) = (topo.peers[0].clone(), topo.peers[1].clone());
    let ssh_a = format!("{}:2222", topo.host_ip(1));
    assert!(port_open_from(&a, &ssh_a), "sshd not reachable before");

    let attacker = topo.peer_ip(1);
    let attack = hydra_background(&a, &topo.host_ip(1), 40, &scratch.0);
    let block = agent.wait_for("action", |r| {
        r["action"] == "block"
            && r["state"] == "applied"
            && r["target"]
                .as_str()
                .is_some_and(|t| t.starts_with(&attacker))
    });
    drop(attack);
    let incident = block["incident"].as_str().expect("block has an incident");
    let opened = agent.wait_for("decision", |r| {
        r["decision"] == "incident_opened" && r["incident"] == incident
    });
    assert_eq!(opened["playbook"], "brute_force_response");

    // The attacker's further attempts fail at the kernel; the peer logs in.
    assert!(
        !port_open_from(&a, &ssh_a),
        "the attacker still reaches sshd"
    );
    let out = hydra(&b, &topo.host_ip(2), &[PASSWORD], &scratch.0);
    assert!(
        out.contains("1 valid password found"),
        "legitimate login failed: {out}"
    );

    let blocks = vigil_json(&cfg, &["blocks", "list"]);
    assert!(
        blocks["blocks"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["target"]
                .as_str()
                .is_some_and(|t| t.starts_with(&attacker)))),
        "{blocks}"
    );
    let incidents = vigil_json(&cfg, &["incidents"]);
    let inc = incidents
        .as_array()
        .and_then(|l| l.iter().find(|i| i["id"] == incident))
        .unwrap_or_else(|| panic!("incident {incident} not listed: {incidents}"));
    assert_eq!(inc["state"], "done", "{inc}");
    assert_audit_intact(&cfg);
    assert!(agent.stop());
}

#[test]
fn approval_gated_isolation_waits_for_approve_and_rollback_undoes_it() {
    let topo = Topology::new("rap", 237);
    let pins = Pins::new("rap");
    let dir = TempDir::new("rap");
    let books = TempDir::new("rap-books");
    std::fs::write(
        books.0.join("scan_isolation.yaml"),
        "# Test playbook — ATT&CK T1046 Network Service Discovery\nversion: 1\nname: scan_isolation\n\
         trigger:\n  detectors: [scan]\n  techniques: [T1046]\nsteps:\n  - id: ask\n    action: require_approval\n\
         \x20   timeout: 10m\n    on_timeout: deny\n  - id: isolate\n    action: isolate_host\n    ttl: 5m\n",
    )
    .expect("write playbook");
    let cfg_text = config(237, &pins, "enforce", &books.0, &dir);
    let mut agent = Agent::start_in(Some(&topo.h), &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    let sock = agent.dir.0.join("vigil.sock");
    let md = std::fs::metadata(&sock).expect("control socket");
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(md.uid(), 0);

    let _srv = topo.spawn(&topo.h, &["serve", "0.0.0.0:7500"]);
    let from_b = format!("{}:7500", topo.host_ip(2));
    // `vigil alerts --follow` streams the alert the scan is about to raise.
    let mut follow = GroupGuard::spawn(
        Command::new(vigil_bin())
            .args(["alerts", "--follow", "--json", "--config"])
            .arg(&cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = follow.0.stdout.take().expect("follow stdout");
    let (tx, followed) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    nmap_scan(&topo.peers[0], &topo.host_ip(1));
    let asked = agent.wait_for("decision", |r| r["decision"] == "approval_requested");
    // Other alerts may come first (a checkout under /tmp runs netpeer from there).
    let deadline = std::time::Instant::now() + PATIENCE;
    let streamed = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let v = followed
            .recv_timeout(left)
            .expect("alerts --follow streamed no scan alert");
        assert_eq!(v["kind"], "alert", "{v}");
        if v["detector"] == "scan" {
            break v;
        }
    };
    assert_eq!(streamed["id"], asked["alert"], "{streamed}");
    drop(follow);

    // Waiting: nothing isolated yet, and it stays that way without a person.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!nft_table_exists(&topo), "isolated before approval");
    assert!(topo.netpeer_ok(&topo.peers[1], &["tcp-probe", &from_b, "700"]));
    let pending = vigil_json(&cfg, &["approvals"]);
    let list = pending.as_array().expect("approvals list");
    assert_eq!(list.len(), 1, "{pending}");
    assert_eq!(list[0]["incident"], asked["incident"]);
    assert!(list[0]["proposed"][0]
        .as_str()
        .is_some_and(|p| p.contains("isolate")));
    let id = list[0]["id"].as_str().expect("approval id").to_string();

    let bogus = Command::new(vigil_bin())
        .args(["approve", "apr-nope", "--config"])
        .arg(&cfg)
        .output()
        .expect("approve");
    assert!(!bogus.status.success());
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("no pending approval apr-nope"));

    let approved = vigil_json(&cfg, &["approve", &id]);
    assert!(
        approved.as_array().is_some_and(|r| r
            .iter()
            .any(|v| v["decision"] == "approved" && v["by_uid"] == 0)),
        "{approved}"
    );
    agent.wait_for("action", |r| {
        r["action"] == "isolate" && r["state"] == "applied"
    });
    assert!(
        nft_table_exists(&topo),
        "approved isolation not in nftables"
    );
    assert!(
        !topo.netpeer_ok(&topo.peers[1], &["tcp-probe", &from_b, "700"]),
        "isolated host still reachable"
    );

    let incident = asked["incident"].as_str().expect("incident id");
    let undone = vigil_json(&cfg, &["rollback", incident]);
    assert!(
        undone.as_array().is_some_and(|r| r
            .iter()
            .any(|v| v["action"] == "unisolate" && v["state"] == "applied")),
        "{undone}"
    );
    assert!(
        !nft_table_exists(&topo),
        "rollback left the isolation table"
    );
    assert!(
        topo.netpeer_ok(&topo.peers[1], &["tcp-probe", &from_b, "700"]),
        "rollback did not restore access"
    );
    let incidents = vigil_json(&cfg, &["incidents"]);
    assert!(
        incidents.as_array().is_some_and(|l| l
            .iter()
            .any(|i| i["id"] == incident && i["state"] == "rolled_back")),
        "{incidents}"
    );
    assert!(agent.stop());
}

#[test]
fn dry_run_records_what_it_would_do_and_changes_nothing() {
    let topo = Topology::new("rdr", 238);
    let pins = Pins::new("rdr");
    let dir = TempDir::new("rdr");
    let cfg_text = config(238, &pins, "dry-run", &shipped_playbooks(), &dir);
    let mut agent = Agent::start_in(Some(&topo.h), &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    let _sshd = Sshd::start(&topo);
    let scratch = TempDir::new("rdr-words");
    let a = topo.peers[0].clone();
    let ruleset_before = topo.in_host("nft", &["list", "ruleset"]).stdout;

    let attacker = topo.peer_ip(1);
    let words: Vec<String> = (0..12).map(|i| format!("guess-{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    hydra(&a, &topo.host_ip(1), &refs, &scratch.0);
    let would = agent.wait_for("action", |r| {
        r["action"] == "block_ip" && r["state"] == "dry-run"
    });
    assert!(
        would["target"]
            .as_str()
            .is_some_and(|t| t.contains(&attacker)),
        "{would}"
    );

    let blocks = vigil_json(&cfg, &["blocks", "list"]);
    assert_eq!(blocks["blocks"], serde_json::json!([]), "{blocks}");
    assert!(!nft_table_exists(&topo));
    assert_eq!(
        String::from_utf8_lossy(&ruleset_before),
        String::from_utf8_lossy(&topo.in_host("nft", &["list", "ruleset"]).stdout)
    );
    let out = hydra(&a, &topo.host_ip(1), &[PASSWORD], &scratch.0);
    assert!(
        out.contains("1 valid password found"),
        "dry-run blocked the source: {out}"
    );
    let status = vigil_json(&cfg, &["status"]);
    assert_eq!(status["response_mode"], "dry-run");
    assert!(agent.stop());
}

#[test]
fn bad_playbooks_stop_start_and_a_bad_reload_keeps_the_running_set() {
    let pins = Pins::new("rpb");
    let books = TempDir::new("rpb-books");
    let broken = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/playbooks-broken/unknown_key.yaml");
    std::fs::copy(&broken, books.0.join("bad.yaml")).expect("copy");
    let dir = TempDir::new("rpb");
    let cfg_text = format!(
        "state_dir: {}\nmetrics:\n  listen: \"\"\nenforce:\n  enabled: false\n  pin_dir: {}\n\
         playbooks:\n  dir: {}\ncontrol:\n  socket: {}\n",
        dir.0.display(),
        pins.pin_dir,
        books.0.display(),
        dir.0.join("vigil.sock").display()
    );
    let cfg = dir.0.join("refuse.yaml");
    std::fs::write(&cfg, &cfg_text).expect("config");
    let out = Command::new(vigil_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("vigil run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a bad playbook");
    assert!(
        err.contains("bad.yaml:6:1: unknown key `trigerr`") && err.contains("bad.yaml:13:5"),
        "{err}"
    );

    // With a good set it starts; a bad reload is refused and the set stays.
    std::fs::remove_file(books.0.join("bad.yaml")).expect("rm");
    std::fs::copy(
        shipped_playbooks().join("brute_force_response.yaml"),
        books.0.join("bf.yaml"),
    )
    .expect("copy");
    let cfg_text = cfg_text.replace(&format!("state_dir: {}\n", dir.0.display()), "");
    let mut agent = Agent::start_in(None, &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    std::fs::copy(&broken, books.0.join("zz-bad.yaml")).expect("copy");
    let out = Command::new(vigil_bin())
        .args(["reload", "--config"])
        .arg(&cfg)
        .output()
        .expect("reload");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("zz-bad.yaml:6:1"));
    let status = vigil_json(&cfg, &["status"]);
    let names: Vec<&str> = status["playbooks"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["brute_force_response"], "{status}");
    std::fs::remove_file(books.0.join("zz-bad.yaml")).expect("rm");
    let out = Command::new(vigil_bin())
        .args(["reload", "--config"])
        .arg(&cfg)
        .output()
        .expect("reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(agent.stop());
}

#[test]
fn malware_playbook_kills_quarantines_blocks_the_source_and_rollback_restores() {
    let topo = Topology::new("rmc", 239);
    let pins = Pins::new("rmc");
    let dir = TempDir::new("rmc");
    let books = TempDir::new("rmc-books");
    std::fs::copy(
        shipped_playbooks().join("malware_containment.yaml"),
        books.0.join("malware_containment.yaml"),
    )
    .expect("copy playbook");
    let cfg_text = config(239, &pins, "enforce", &books.0, &dir);
    let mut agent = Agent::start_in(Some(&topo.h), &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    // A real binary (sleep) served by a peer, fetched by a network-facing process.
    let drop_dir = format!("/var/cache/vigil-rmc-{}", std::process::id());
    std::fs::create_dir_all(&drop_dir).expect("dir");
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(drop_dir.clone());
    let original = std::fs::read("/bin/sleep").expect("sleep");
    let payload = format!("{drop_dir}/payload.src");
    std::fs::write(&payload, &original).expect("payload");
    let source = topo.peer_ip(2);
    let target = format!("{drop_dir}/update.bin");
    topo.download(9201, &payload, &target);
    agent.wait_for("file_write", |r| r["path"] == target.as_str());
    let mode_before = std::fs::metadata(&target)
        .expect("fetched")
        .permissions()
        .mode();

    let mut victim = GroupGuard::spawn(Command::new(&target).arg("60"));
    let kill = agent.wait_for("action", |r| r["action"] == "kill");
    assert_eq!(kill["state"], "applied", "{kill}");
    let status = victim.0.wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let q = agent.wait_for("action", |r| r["action"] == "quarantine");
    assert_eq!(q["state"], "applied", "{q}");
    assert!(
        !Path::new(&target).exists(),
        "quarantined file still in place"
    );
    let block = agent.wait_for("action", |r| r["action"] == "block");
    assert_eq!(block["state"], "applied", "{block}");
    assert!(
        block["target"]
            .as_str()
            .is_some_and(|t| t.starts_with(&source)),
        "{block}"
    );
    let incident = block["incident"].as_str().expect("incident").to_string();

    let undone = vigil_json(&cfg, &["rollback", &incident]);
    assert!(
        undone.as_array().is_some_and(|r| r
            .iter()
            .any(|v| v["action"] == "restore" && v["state"] == "applied")),
        "{undone}"
    );
    assert_eq!(std::fs::read(&target).expect("restored"), original);
    let mode_after = std::fs::metadata(&target)
        .expect("restored")
        .permissions()
        .mode();
    assert_eq!(mode_after & 0o7777, mode_before & 0o7777);
    let blocks = vigil_json(&cfg, &["blocks", "list"]);
    assert!(
        !blocks["blocks"].as_array().is_some_and(|l| l
            .iter()
            .any(|e| e["target"].as_str().is_some_and(|t| t.starts_with(&source)))),
        "rollback left the block: {blocks}"
    );
    assert!(agent.stop());
}
