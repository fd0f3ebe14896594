//! `vigil simulate` against the real agent (dry-run, the repository's
//! playbooks): every stand-in it attempts must be detected, and it leaves
//! no namespace, veth, address or scratch file behind.

use std::process::Command;

use serde_json::Value;
use vigil_integration::*;

fn links() -> String {
    String::from_utf8_lossy(&run("ip", &["-o", "link", "show"]).stdout).into_owned()
}

#[test]
fn simulate_raises_every_attempted_stand_in_and_cleans_up() {
    let dir = TempDir::new("sim");
    let socket = dir.0.join("vigil.sock");
    let playbooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    // The beacon windows of the detection tests, so the beacon row runs
    // (with the shipped 15-minute window it is reported as skipped), and
    // an absolute exfil volume of 50 MB instead of 1 GiB, so the bulk
    // upload is light on a shared test machine (the shipped one also runs).
    let config = format!(
        "{TEST_CONFIG}control:\n  socket: {}\nplaybooks:\n  dir: {}\nresponse:\n  mode: dry-run\n\
         detect:\n  beacon:\n    window_s: 20\n    min_connections: 8\n    scoring_period_s: 2\n\
         \x20 exfil:\n    absolute_bytes: 50000000\n",
        socket.display(),
        playbooks.display()
    );
    let agent = Agent::start_in(None, &config, dir);
    let out = Command::new(vigil_bin())
        .args(["simulate", "--json", "--timeout-s", "30", "--config"])
        .arg(agent.dir.0.join("vigil.yaml"))
        .output()
        .expect("vigil simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rows = report["rows"].as_array().expect("rows");
    let attempted: Vec<&Value> = rows
        .iter()
        .filter(|r| matches!(r["outcome"]["state"].as_str(), Some("passed" | "failed")))
        .collect();
    assert_eq!(attempted.len(), 8, "{report:#}");
    // On failure, what the agent saw of the simulation.
    let trail = || -> Vec<String> {
        agent
            .records()
            .iter()
            .filter(|a| a.to_string().contains("vigil-simulate"))
            .map(|a| a.to_string())
            .collect()
    };
    for r in &attempted {
        assert_eq!(r["outcome"]["state"], "passed", "{r:#}\n{:#?}", trail());
        assert!(r["seconds"].as_f64().is_some(), "{r:#}");
        assert!(r["alert"]["id"].as_str().is_some(), "{r:#}");
    }
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["passed"], true);
    assert_eq!(report["response_mode"], "dry-run");
    // The memfd exec would be contained by malware_containment, in dry-run.
    let memfd = rows
        .iter()
        .find(|r| r["standin"] == "memfd exec")
        .expect("memfd row");
    assert_eq!(
        memfd["response"][0]["playbook"], "malware_containment",
        "{memfd:#}"
    );
    assert_eq!(memfd["response"][0]["mode"], "dry-run", "{memfd:#}");
    // The bulk upload would block the sink, an address only the
    // simulation uses; the equal-size chunks (medium) trigger no playbook.
    let bulk = rows
        .iter()
        .find(|r| r["standin"] == "bulk upload")
        .expect("bulk row");
    assert_eq!(
        bulk["response"][0]["playbook"], "data_exfiltration_block",
        "{bulk:#}"
    );
    assert!(
        bulk["response"][0]["steps"][0]["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("block 198.18.86.3 ")),
        "{bulk:#}"
    );
    assert!(
        bulk["alert"]["techniques"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "T1048")),
        "{bulk:#}"
    );
    let chunks = rows
        .iter()
        .find(|r| r["standin"] == "equal-size chunks")
        .expect("chunks row");
    assert_eq!(chunks["alert"]["severity"], "medium", "{chunks:#}");
    assert!(
        chunks["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("10 of 10 ")),
        "{chunks:#}"
    );
    // The admin-port sweep would only isolate the host after approval.
    let lateral = rows
        .iter()
        .find(|r| r["standin"] == "admin-port sweep")
        .expect("lateral row");
    let steps: Vec<(String, String)> = lateral["response"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["action"].to_string(), s["fate"].to_string()))
        .collect();
    assert!(
        steps.contains(&("\"isolate_host\"".into(), "\"after approval\"".into())),
        "{lateral:#}"
    );
    // The agent raised them (its own record, not only simulate's word).
    for r in &attempted {
        let id = r["alert"]["id"].as_str().unwrap_or_default();
        assert!(
            agent
                .records()
                .iter()
                .any(|a| a["kind"] == "alert" && a["id"] == id),
            "{id} not in the agent's output"
        );
    }
    // Nothing left behind.
    assert!(!links().contains("vsim"), "{}", links());
    let addrs = String::from_utf8_lossy(&run("ip", &["-o", "addr", "show"]).stdout).into_owned();
    assert!(!addrs.contains("198.18.86."), "{addrs}");
    let left: Vec<_> = std::fs::read_dir(&agent.dir.0)
        .expect("state dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("vigil-simulate-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Ctrl-C while a stand-in waits: the namespace, the veth pair and its
/// addresses are gone when simulate exits, and it does not claim success.
#[test]
fn ctrl_c_removes_what_simulate_created() {
    let dir = TempDir::new("simint");
    let socket = dir.0.join("vigil.sock");
    // Detection off: the sweep's row waits for its whole timeout.
    let config = format!(
        "{TEST_CONFIG}control:\n  socket: {}\ndetect:\n  enabled: false\n",
        socket.display()
    );
    let agent = Agent::start_in(None, &config, dir);
    let mut sim = Command::new(vigil_bin())
        .args(["simulate", "--json", "--timeout-s", "600", "--config"])
        .arg(agent.dir.0.join("vigil.yaml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vigil simulate");
    // Bounded: 6000 looks at the link table.
    let mut up = false;
    for _ in 0..6000 {
        if links().contains("vsim") {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(sim.id() as i32, libc::SIGINT) };
    let status = sim.wait().expect("wait");
    assert!(up, "the stand-in namespace never appeared");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(sim.stderr.as_mut().expect("stderr"), &mut err).expect("read");
    assert!(err.contains("interrupted"), "{err}");
    assert!(!links().contains("vsim"), "{}", links());
    let addrs = String::from_utf8_lossy(&run("ip", &["-o", "addr", "show"]).stdout).into_owned();
    assert!(!addrs.contains("198.18.86."), "{addrs}");
}
