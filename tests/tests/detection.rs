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

/// Starts the web server in `ns` on `port`, serving `dir`; returns its pid.
fn web_server(
    ns: &str,
    port: u16,
    dir: &std::path::Path,
    script: &std::path::Path,
) -> (GroupGuard, u64) {
    let mut guard = GroupGuard::spawn(
        Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3"])
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .stdout(std::process::Stdio::piped()),
    );
    let ready = read_json_line(&mut guard.0);
    let pid = ready["pid"].as_u64().expect("server pid");
    (guard, pid)
}

fn curl_in(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "20",
        ])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn served_flows_name_the_server_and_only_pushed_equal_transfers_raise_t1030() {
    let topo = Topology::new("dsv", 225);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dsv"));
    let scratch = TempDir::new("dsv-www");
    let script = scratch.0.join("web.py");
    std::fs::write(&script, web_server_script(false)).expect("script");
    let www = scratch.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("file.bin"), vec![b'f'; 200_000]).expect("file");
    let chunk = scratch.0.join("chunk.bin");
    std::fs::write(&chunk, vec![b'c'; 200_000]).expect("chunk");

    // A server here, and one client fetching the same file ten times,
    // each from its own port so every flow can be waited for.
    let (_here, here_pid) = web_server(&topo.h, 8000, &www, &script);
    let client = topo.peer_ip(1);
    let url = format!("http://{}:8000/file.bin", topo.host_ip(1));
    let ports: Vec<u16> = (41001..=41010).collect();
    for port in &ports {
        let p = port.to_string();
        curl_in(
            &topo.peers[0],
            &["-o", "/dev/null", "--local-port", &p, &url],
        );
    }
    for port in &ports {
        let flow = agent.wait_for("flow", |r| {
            r["dst_ip"] == client.as_str() && r["dst_port"] == *port && r["src_port"] == 8000
        });
        assert_eq!(
            flow["pid"], here_pid,
            "the server's flow has no owner: {flow}"
        );
        assert!(
            flow["exe"].as_str().is_some_and(|e| e.contains("python")),
            "{flow}"
        );
        assert_eq!(flow["direction"], "inbound", "{flow}");
        assert!(flow["bytes_out"].as_u64().unwrap_or(0) >= 200_000, "{flow}");
    }

    // An upload of ten equal chunks from here to a server on the peer.
    let (_there, _) = web_server(&topo.peers[1], 8001, &www, &script);
    let target = format!("http://{}:8001/up", topo.peer_ip(2));
    for _ in 0..10 {
        curl_in(
            &topo.h,
            &["-o", "/dev/null", "-T", &chunk.to_string_lossy(), &target],
        );
    }
    let peer = topo.peer_ip(2);
    let alert = agent.wait_for("alert", |r| has_technique(r, "T1030") && mentions(r, &peer));
    assert!(
        alert["entities"]["exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("curl")),
        "{alert}"
    );
    // The uploads' alert came after the downloads were judged.
    let pulled: Vec<Value> = alerts(&agent)
        .into_iter()
        .filter(|a| has_technique(a, "T1030") && mentions(a, &client))
        .collect();
    assert!(
        pulled.is_empty(),
        "a file clients pulled raised T1030: {pulled:?}"
    );
    assert!(agent.stop());
}

/// A scratch directory under /tmp (where build trees live), removed on drop.
struct TmpTree(std::path::PathBuf);

impl TmpTree {
    fn new(tag: &str) -> TmpTree {
        let p = std::path::PathBuf::from(format!("/tmp/vigil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("tmp tree");
        TmpTree(p)
    }
}

impl Drop for TmpTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn process_alerts_under(agent: &Agent, dir: &str) -> Vec<Value> {
    alerts(agent)
        .into_iter()
        .filter(|a| {
            a["detector"] == "process"
                && a["entities"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.starts_with(dir))
        })
        .collect()
}

#[test]
fn a_cargo_build_under_tmp_is_evidence_not_an_alert() {
    let net = NetPair::new("dcb", 226);
    let mut agent = Agent::start_in(Some(&net.a), DETECT_CONFIG, TempDir::new("dcb"));
    let tree = TmpTree::new("cargo-build");
    let dir = tree.0.to_string_lossy().into_owned();
    std::fs::create_dir_all(tree.0.join("src")).expect("src");
    std::fs::write(
        tree.0.join("Cargo.toml"),
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .expect("manifest");
    std::fs::write(
        tree.0.join("build.rs"),
        "fn main() { println!(\"cargo:rerun-if-changed=build.rs\"); }\n",
    )
    .expect("build script");
    std::fs::write(
        tree.0.join("src/main.rs"),
        "fn main() { println!(\"tiny\"); }\n",
    )
    .expect("main");
    // A real offline build in the agent's namespace, then the binary it made.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            &cargo,
            "build",
            "--offline",
            "--quiet",
        ])
        .current_dir(&tree.0)
        .env("CARGO_TARGET_DIR", tree.0.join("target"))
        .output()
        .expect("cargo build");
    assert!(
        out.status.success(),
        "cargo build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = format!("{dir}/target/debug/tiny");
    let out = Command::new("ip")
        .args(["netns", "exec", &net.a, &bin])
        .output()
        .expect("run tiny");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tiny\n");
    // Both are kept as evidence...
    for exe in ["build-script-build", "debug/tiny"] {
        let a = agent.wait_for("alert", |r| {
            r["detector"] == "process"
                && r["entities"]["exe"]
                    .as_str()
                    .is_some_and(|e| e.starts_with(&dir) && e.ends_with(exe))
        });
        assert_eq!(a["severity"], "info", "{a}");
        assert_eq!(a["evidence"]["signals"], serde_json::json!([]), "{a}");
    }
    // ...and nothing of the build is an alert.
    let raised: Vec<Value> = process_alerts_under(&agent, &dir)
        .into_iter()
        .filter(|a| a["severity"] != "info")
        .collect();
    assert!(raised.is_empty(), "the build raised alerts: {raised:?}");
    assert!(agent.stop());
}

#[test]
fn a_tmp_binary_another_user_owns_is_an_alert() {
    let net = NetPair::new("dco", 227);
    let mut agent = Agent::start_in(Some(&net.a), DETECT_CONFIG, TempDir::new("dco"));
    let tree = TmpTree::new("planted");
    let planted = tree.0.join("napper");
    std::fs::copy("/bin/sleep", &planted).expect("copy");
    // Owned by nobody, run by root: the planted-binary trap.
    std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown");
    let planted = planted.to_string_lossy().into_owned();
    let mut child = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &net.a, &planted, "60"])
            .spawn()
            .expect("run planted"),
    );
    let a = agent.wait_for("alert", |r| {
        r["detector"] == "process" && r["entities"]["exe"] == planted.as_str()
    });
    let _ = child.0.kill();
    assert_eq!(a["severity"], "medium", "{a}");
    assert_eq!(
        a["evidence"]["signals"],
        serde_json::json!(["other_owner"]),
        "{a}"
    );
    assert_eq!(a["evidence"]["file_owner"]["uid"], 65534, "{a}");
    assert!(agent.stop());
}

/// Services start at boot, before the agent (or the agent restarts): the
/// kernel saw neither the listener's creation nor its listen(), so its
/// accepted connections are attributed from /proc.
#[test]
fn a_server_older_than_the_agent_owns_its_accepted_flows() {
    let topo = Topology::new("dso", 224);
    let scratch = TempDir::new("dso-www");
    let script = scratch.0.join("web.py");
    std::fs::write(&script, web_server_script(false)).expect("script");
    let www = scratch.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("file.bin"), vec![b'f'; 200_000]).expect("file");
    let (_here, here_pid) = web_server(&topo.h, 8000, &www, &script);
    let mut agent = Agent::start_in(Some(&topo.h), DETECT_CONFIG, TempDir::new("dso"));
    let client = topo.peer_ip(1);
    let url = format!("http://{}:8000/file.bin", topo.host_ip(1));
    curl_in(
        &topo.peers[0],
        &["-o", "/dev/null", "--local-port", "41001", &url],
    );
    let ours = |r: &Value| r["dst_ip"] == client.as_str() && r["dst_port"] == 41001;
    let accept = agent.wait_for("net_accept", ours);
    assert_eq!(accept["pid"], here_pid, "{accept}");
    let flow = agent.wait_for("flow", ours);
    assert_eq!(flow["pid"], here_pid, "{flow}");
    assert!(
        flow["exe"].as_str().is_some_and(|e| e.contains("python")),
        "{flow}"
    );
    assert!(agent.stop());
}

/// Runs a copy of /bin/true from a memfd three ways: `execv` of
/// `/proc/self/fd/N`, `fexecve`, and a raw `execveat(fd, "",
/// AT_EMPTY_PATH)`. The payload exits at once, so only what the kernel
/// read at exec can name it.
const FILELESS: &str = r#"
import ctypes, os, sys
variant = sys.argv[1]
fd = os.memfd_create("vigil-" + variant, 0)
os.write(fd, open("/bin/true", "rb").read())
if variant == "execv":
    os.execv("/proc/self/fd/%d" % fd, ["payload"])
elif variant == "fexecve":
    os.execve(fd, ["payload"], {})
else:
    libc = ctypes.CDLL(None, use_errno=True)
    argv = (ctypes.c_char_p * 2)(b"payload", None)
    envp = (ctypes.c_char_p * 1)(None)
    libc.syscall(322, fd, b"", argv, envp, 0x1000)  # SYS_execveat, AT_EMPTY_PATH
    raise OSError(ctypes.get_errno(), "execveat")
"#;

#[test]
fn fileless_execs_are_named_by_the_file_that_runs_and_raise_t1620() {
    let net = NetPair::new("dml", 228);
    let mut agent = Agent::start_in(Some(&net.a), DETECT_CONFIG, TempDir::new("dml"));
    let scratch = TempDir::new("dml-py");
    let script = scratch.0.join("fileless.py");
    std::fs::write(&script, FILELESS).expect("script");
    for variant in ["execv", "fexecve", "execveat"] {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.a, "/usr/bin/python3"])
            .arg(&script)
            .arg(variant)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{variant}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let exe = format!("/memfd:vigil-{variant} (deleted)");
        let exec = agent.wait_for("process_exec", |r| r["exe"] == exe.as_str());
        assert!(
            exec["exe_arg"]
                .as_str()
                .is_some_and(|a| a.starts_with("/proc/self/fd/") || a.starts_with("/dev/fd/")),
            "{variant}: {exec}"
        );
        let alert = agent.wait_for("alert", |r| r["entities"]["exe"] == exe.as_str());
        assert!(has_technique(&alert, "T1620"), "{variant}: {alert}");
    }
    assert!(agent.stop());
}
