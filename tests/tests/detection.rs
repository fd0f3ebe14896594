//! Detections from real attacks with real tools, in network namespaces:
//! hydra against a real sshd (T1110), nmap (T1046), a jittered beacon
//! (T1071), a bulk upload (T1048); and normal activity that raises nothing.
//! Test-mode windows and thresholds come from the agent's config.

use std::process::Command;

use serde_json::Value;
use vigil_integration::*;

const DETECT_CONFIG: &str = "\
stats_interval_s: 1
flows:
  sweep_interval_ms: 200
  udp_idle_timeout_s: 1
  close_linger_ms: 100
enforce:
  enabled: false
metrics:
  listen: \"\"
detect:
  update_interval_s: 1
  beacon:
    window_s: 20
    min_connections: 8
    scoring_period_s: 2
  exfil:
    absolute_bytes: 5000000
    absolute_window_s: 60
";

fn alerts(agent: &Agent) -> Vec<Value> {
    agent
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "alert")
        .collect()
}

fn mentions(a: &Value, ip: &str) -> bool {
    a["entities"].to_string().contains(&format!("\"{ip}\""))
}

#[test]
fn hydra_against_sshd_raises_t1110_with_the_attackers_address_and_logins_do_not() {
    let topo = Topology::new("dbf", 231);
    let agent_dir = TempDir::new("dbf");
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, agent_dir);
    let _sshd = Sshd::start(&topo);
    let scratch = TempDir::new("words");
    let (a, b) = (topo.peers[0].clone(), topo.peers[1].clone());

    // Normal activity first: a few successful logins from the peer.
    for _ in 0..3 {
        let out = hydra(&b, &topo.host_ip(2), &[PASSWORD], &scratch.0);
        assert!(
            out.contains("1 valid password found"),
            "login failed: {out}"
        );
    }
    agent.wait_for("auth_attempt", |r| {
        r["result"] == "success" && r["rhost"] == topo.peer_ip(2).as_str()
    });

    let wrong: Vec<String> = (0..12).map(|i| format!("guess-{i}")).collect();
    let refs: Vec<&str> = wrong.iter().map(String::as_str).collect();
    hydra(&a, &topo.host_ip(1), &refs, &scratch.0);
    let attacker = topo.peer_ip(1);
    let alert = agent.wait_for("alert", |r| {
        r["detector"] == "brute_force" && mentions(r, &attacker)
    });
    assert!(has_technique(&alert, "T1110"), "{alert}");
    assert_eq!(alert["entities"]["src_ip"], attacker.as_str());
    assert!(
        ["medium", "high"].contains(&alert["severity"].as_str().unwrap_or("")),
        "{alert}"
    );
    assert!(
        alert["evidence"]["failures"].as_u64().unwrap_or(0) >= 5,
        "{alert}"
    );
    let failed = agent
        .records()
        .iter()
        .filter(|r| {
            r["kind"] == "auth_attempt"
                && r["result"] == "failure"
                && r["rhost"] == attacker.as_str()
        })
        .count();
    assert!(failed >= 5, "only {failed} failures seen through PAM");
    let peer = topo.peer_ip(2);
    let noisy: Vec<Value> = alerts(&agent)
        .into_iter()
        .filter(|a| mentions(a, &peer))
        .collect();
    assert!(
        noisy.is_empty(),
        "successful logins raised alerts: {noisy:?}"
    );
    assert!(agent.stop());
}

#[test]
fn nmap_raises_t1046() {
    let topo = Topology::new("dsc", 232);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dsc"));
    nmap_scan(&topo.peers[0], &topo.host_ip(1));
    let scanner = topo.peer_ip(1);
    let alert = agent.wait_for("alert", |r| {
        r["detector"] == "scan" && mentions(r, &scanner)
    });
    assert!(has_technique(&alert, "T1046"), "{alert}");
    assert_eq!(alert["entities"]["direction"], "inbound");
    assert!(
        alert["evidence"]["ports_on_host"].as_u64().unwrap_or(0) >= 15,
        "{alert}"
    );
    // One scan, one alert (updates carry the same id).
    let ids: std::collections::HashSet<String> = alerts(&agent)
        .iter()
        .filter(|a| a["detector"] == "scan" && mentions(a, &scanner))
        .map(|a| a["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(agent.stop());
}

#[test]
fn a_jittered_beacon_raises_t1071_and_a_single_download_does_not() {
    let topo = Topology::new("dbc", 233);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dbc"));
    let b = topo.peers[1].clone();
    let _http = topo.spawn(&b, &["serve", "0.0.0.0:8080"]);
    let _srv = topo.spawn(&b, &["serve", "0.0.0.0:8081"]);
    // Normal: one short exchange with another service of the peer.
    assert!(topo.netpeer_ok(
        &topo.h,
        &["tcp-probe", &format!("{}:8081", topo.peer_ip(2)), "1000"]
    ));
    // Beacon: every 500 ms ±20 % for ~24 s, so it spans the 20 s test window.
    let out = netpeer_in(
        &topo.h,
        &[
            "beacon",
            &format!("{}:8080", topo.peer_ip(2)),
            "500",
            "20",
            "48",
        ],
    )
    .output()
    .expect("beacon");
    let v: Value = serde_json::from_slice(&out.stdout).expect("beacon output");
    assert_eq!(v["connections"], 48, "{v}");
    let peer = topo.peer_ip(2);
    let alert = agent.wait_for("alert", |r| r["detector"] == "beacon" && mentions(r, &peer));
    assert!(has_technique(&alert, "T1071"), "{alert}");
    assert_eq!(alert["entities"]["dst_port"], 8080);
    assert!(
        alert["evidence"]["score"].as_f64().unwrap_or(0.0) >= 0.70,
        "{alert}"
    );
    assert!(alert["confidence"].as_f64().unwrap_or(0.0) >= 0.70);
    let on_8081 = alerts(&agent)
        .into_iter()
        .filter(|a| a["entities"]["dst_port"] == 8081)
        .count();
    assert_eq!(on_8081, 0);
    assert!(agent.stop());
}

#[test]
fn a_bulk_upload_raises_t1048() {
    let topo = Topology::new("dex", 234);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dex"));
    let b = topo.peers[1].clone();
    let dst = format!("{}:9100", topo.peer_ip(2));
    let dst_small = format!("{}:9101", topo.peer_ip(2));
    // A normal request/response first: small upload, big download.
    let mut small_srv = topo.spawn_raw(&b, &["tcp-server", &dst_small, "1000000"]);
    read_json_line(&mut small_srv);
    let out = netpeer_in(&topo.h, &["tcp-client", &dst_small, "2000"])
        .output()
        .expect("download");
    assert!(out.status.success());
    let _ = small_srv.wait();
    // The exfiltration: 8 MB out to one destination.
    let mut srv = topo.spawn_raw(&b, &["tcp-server", &dst, "10"]);
    read_json_line(&mut srv);
    let out = netpeer_in(&topo.h, &["tcp-client", &dst, "8000000"])
        .output()
        .expect("upload");
    assert!(out.status.success());
    let _ = srv.wait();
    let peer = topo.peer_ip(2);
    let alert = agent.wait_for("alert", |r| r["detector"] == "exfil" && mentions(r, &peer));
    assert!(has_technique(&alert, "T1048"), "{alert}");
    assert!(
        alert["evidence"]["bytes_out"].as_u64().unwrap_or(0) >= 5_000_000,
        "{alert}"
    );
    assert_eq!(
        alert["entities"]["dst_port"], 9100,
        "the download must not be what fired: {alert}"
    );
    assert!(agent.stop());
}

#[test]
fn a_downloaded_file_that_is_then_run_raises_t1204() {
    let topo = Topology::new("dfx", 235);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dfx"));
    // Outside /tmp, so only the download-then-run rule can fire.
    let dir = format!("/var/cache/vigil-t1204-{}", std::process::id());
    std::fs::create_dir_all(&dir).expect("dir");
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let payload = format!("{dir}/payload.src");
    std::fs::write(&payload, "#!/bin/sh\nexit 0\n").expect("payload");
    let target = format!("{dir}/update.sh");
    topo.download(9200, &payload, &target);
    agent.wait_for("file_write", |r| r["path"] == target.as_str());
    assert!(Command::new(&target).status().expect("run").success());
    let alert = agent.wait_for("alert", |r| {
        r["detector"] == "process" && r["entities"]["exe"] == target.as_str()
    });
    assert!(has_technique(&alert, "T1204.002"), "{alert}");
    assert!(
        alert["evidence"]["writer"]
            .as_str()
            .is_some_and(|w| w.ends_with("netpeer")),
        "{alert}"
    );
    assert!(agent.stop());
}
