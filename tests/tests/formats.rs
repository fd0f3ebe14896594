//! The real agent writing OCSF and ECS: a real exec and a real TCP
//! connection on loopback, and every line the agent wrote meanwhile,
//! validated by the same registry tools as the golden tests (ocsf-emitter
//! 0.3.0, the @elastic/ecs 8.11.5 field set; `cargo xtask setup
//! --test-tools` installs them under target/tools). Also: the process GUID
//! of this test process is the same in both runs (two agents, one boot).
//! Run as root with `--test-threads=1`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use vigil_integration::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the format's validator over a file; panics with its report when
/// any line fails.
fn validate(format: &str, path: &Path) -> usize {
    let root = root();
    let out = match format {
        "ocsf" => Command::new(root.join("target/tools/ocsf-venv/bin/python3"))
            .arg(root.join("tools/ocsf_validate.py"))
            .arg(path)
            .output(),
        _ => Command::new("node")
            .arg(root.join("tools/ecs_validate.js"))
            .arg(root.join("target/tools/ecs/node_modules/@elastic/ecs"))
            .arg(path)
            .output(),
    }
    .unwrap_or_else(|e| {
        panic!("cannot run the {format} validator (cargo xtask setup --test-tools): {e}")
    });
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{format} lines the agent wrote are not valid:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report.lines().filter(|l| l.starts_with("ok")).count()
}

/// What one run saw: the exec's GUID, its parent's, and the GUID the
/// connect named this test process by.
struct Seen {
    child_guid: String,
    parent_guid: String,
    connector_guid: String,
    lines: usize,
}

/// Starts the agent in `format`, execs a uniquely named binary and opens a
/// TCP connection on loopback until both show up (the first may run
/// before the programs see it), then validates every line written.
fn run(
    format: &str,
    exec_of: impl Fn(&Value, &str) -> bool,
    connect_to: impl Fn(&Value, u16) -> bool,
    guids: impl Fn(&Value, &Value) -> (String, String, String),
) -> Seen {
    let mut agent = Agent::start_format(format);
    let dir = TempDir::new("format-exec");
    let unique = dir
        .0
        .join(format!("vigil-{format}-probe-{}", std::process::id()));
    std::fs::copy("/bin/true", &unique).expect("copy true");
    let path = unique.to_string_lossy().into_owned();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let start = Instant::now();
    let (exec, connect) = loop {
        let status = Command::new(&unique).status().expect("run the probe");
        assert!(status.success());
        let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _accepted = listener.accept().expect("accept");
        drop(conn);
        let lines: Vec<Value> = agent
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let exec = lines.iter().find(|v| exec_of(v, &path)).cloned();
        let connect = lines.iter().find(|v| connect_to(v, port)).cloned();
        if let (Some(e), Some(c)) = (exec, connect) {
            break (e, c);
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no {format} exec of {path} and connect to port {port} within {PATIENCE:?}:\n{}",
            agent.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        agent.stop(),
        "agent did not stop cleanly:\n{}",
        agent.stderr()
    );
    let (child_guid, parent_guid, connector_guid) = guids(&exec, &connect);
    let lines = validate(format, &agent.output);
    eprintln!("{format}: {lines} lines the agent wrote are valid");
    Seen {
        child_guid,
        parent_guid,
        connector_guid,
        lines,
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a GUID string, got {v}"))
        .to_string()
}

#[test]
fn the_real_agent_writes_valid_ocsf_and_ecs_with_stable_process_guids() {
    let ocsf = run(
        "ocsf",
        |v, path| v["class_uid"] == 1007 && v["activity_id"] == 1 && v["process"]["path"] == path,
        |v, port| {
            v["class_uid"] == 4001
                && v["activity_id"] == 1
                && v["dst_endpoint"]["port"] == port
                && v["connection_info"]["direction_id"] == 2
        },
        |exec, conn| {
            (
                text(&exec["process"]["uid"]),
                text(&exec["process"]["parent_process"]["uid"]),
                text(&conn["actor"]["process"]["uid"]),
            )
        },
    );
    let ecs = run(
        "ecs",
        |v, path| v["event"]["action"] == "process_exec" && v["process"]["executable"] == path,
        |v, port| v["event"]["action"] == "net_connect" && v["destination"]["port"] == port,
        |exec, conn| {
            (
                text(&exec["process"]["entity_id"]),
                text(&exec["process"]["parent"]["entity_id"]),
                text(&conn["process"]["entity_id"]),
            )
        },
    );
    for (name, seen) in [("ocsf", &ocsf), ("ecs", &ecs)] {
        assert!(
            seen.lines >= 2,
            "{name}: only {} lines validated",
            seen.lines
        );
        // The probe's parent is this test process, which also connected.
        assert_eq!(seen.parent_guid, seen.connector_guid, "{name}");
        assert_ne!(seen.child_guid, seen.parent_guid, "{name}");
    }
    // Another agent, the same boot: this process keeps its GUID; the two
    // probes (two processes) do not share one.
    assert_eq!(ocsf.parent_guid, ecs.parent_guid);
    assert_ne!(ocsf.child_guid, ecs.child_guid);
}
