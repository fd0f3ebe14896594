//! Untrusted triggers, end to end with the real kernel: a local
//! unprivileged user must not choose whom Vigil blocks, kills or
//! quarantines. libpam called by `nobody` with a forged PAM_RHOST; a
//! listener that fails to open a system binary; protected files; a pid
//! reused while a kill waits for approval; `vigil kill --freeze` on the
//! host's services.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vigil_integration::*;

const NOBODY: u32 = 65534;

/// The agent's config: test-mode intervals, playbooks from `books` in
/// `mode`, and a control socket in its state directory.
fn config(mode: &str, books: &Path, dir: &TempDir, extra: &str) -> String {
    format!(
        "stats_interval_s: 1\nflows:\n  sweep_interval_ms: 200\n  close_linger_ms: 100\n\
         metrics:\n  listen: \"\"\ndetect:\n  update_interval_s: 1\n\
         response:\n  mode: {mode}\nplaybooks:\n  dir: {}\ncontrol:\n  socket: {}\n{extra}",
        books.display(),
        dir.0.join("vigil.sock").display()
    )
}

/// `cmd` run as `nobody` (uid and gid 65534; std drops root's
/// supplementary groups when it sets the uid).
fn as_nobody(cmd: &mut Command) -> &mut Command {
    cmd.uid(NOBODY).gid(NOBODY)
}

/// Python against the real libpam: `pam_start(service, user)`, PAM_RHOST
/// set to `rhost`, then `tries` calls of pam_authenticate with a wrong
/// password (a no-op PAM_FAIL_DELAY keeps pam_unix from sleeping 2 s
/// each). Prints each return code.
const PAM_CLIENT: &str = r#"
import ctypes, sys
service, user, rhost, tries = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3].encode(), int(sys.argv[4])
pam = ctypes.CDLL("libpam.so.0")
libc = ctypes.CDLL("libc.so.6")
libc.calloc.restype = ctypes.c_void_p
libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
libc.strdup.restype = ctypes.c_void_p
libc.strdup.argtypes = [ctypes.c_char_p]
class Message(ctypes.Structure):
    _fields_ = [("style", ctypes.c_int), ("msg", ctypes.c_char_p)]
class Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("retcode", ctypes.c_int)]
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(Message)),
                        ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)
class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata", ctypes.c_void_p)]
def answer(n, msgs, resp, _data):
    out = ctypes.cast(libc.calloc(n, ctypes.sizeof(Response)), ctypes.POINTER(Response))
    for i in range(n):
        if msgs[i].contents.style in (1, 2):
            out[i].resp = libc.strdup(b"not-the-password")
    resp[0] = out
    return 0
conv = Conv(CONV(answer), None)
DELAY = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
no_delay = DELAY(lambda status, usec, data: None)
handle = ctypes.c_void_p()
rc = pam.pam_start(service, user, ctypes.byref(conv), ctypes.byref(handle))
assert rc == 0, rc
assert pam.pam_set_item(handle, 4, rhost) == 0
assert pam.pam_set_item(handle, 10, no_delay) == 0
for _ in range(tries):
    print(pam.pam_authenticate(handle, 0), flush=True)
pam.pam_end(handle, 0)
"#;

#[test]
fn libpam_called_by_a_local_user_with_a_forged_rhost_blocks_nobody_and_names_the_uid() {
    let topo = Topology::new("tpam", 241);
    let pins = Pins::new("tpam");
    let dir = TempDir::new("tpam");
    let extra = format!(
        "enforce:\n  pin_dir: {}\n  maintenance_interval_s: 1\n",
        pins.pin_dir
    );
    let cfg_text = config("enforce", &shipped_playbooks(), &dir, &extra);
    let mut agent = Agent::start_in(Some(&topo.h), &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    let forged = "198.51.100.7";

    let out = as_nobody(&mut Command::new("/usr/bin/python3"))
        .args(["-c", PAM_CLIENT, "sshd", "root", forged, "6"])
        .output()
        .expect("python3");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && codes.lines().count() == 6 && !codes.lines().any(|c| c == "0"),
        "the PAM client did not fail six times: {codes} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Seen and alerted on; given a playbook every chance to act, nothing
    // names the address.
    agent.wait_for("auth_attempt", |r| r["rhost"] == forged);
    let alert = agent.wait_for("alert", |r| r["detector"] == "brute_force");
    std::thread::sleep(Duration::from_secs(3));
    let acted: Vec<Value> = agent
        .records()
        .into_iter()
        .filter(|r| {
            (r["kind"] == "action" || r["kind"] == "decision") && r.to_string().contains(forged)
        })
        .collect();
    assert!(
        acted.is_empty(),
        "the forged address was acted on: {acted:?}"
    );
    let opened: Vec<Value> = agent
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "decision" && r["playbook"] == "brute_force_response")
        .collect();
    assert!(
        opened.is_empty(),
        "a brute-force incident was opened: {opened:?}"
    );

    // Judged: nobody's claim of a remote host is not believed, and the
    // alert names who made it.
    let attempt = agent.wait_for("auth_attempt", |r| r["rhost"] == forged);
    assert_eq!(attempt["uid"], NOBODY, "{attempt}");
    assert_eq!(attempt["trusted"], false, "{attempt}");
    assert!(attempt["peer"].is_null(), "{attempt}");
    assert!(has_technique(&alert, "T1110"), "{alert}");
    assert_eq!(alert["entities"]["uid"], NOBODY, "{alert}");
    assert!(alert["entities"].get("src_ip").is_none(), "{alert}");
    assert!(alert["entities"].get("dst_ip").is_none(), "{alert}");
    assert_eq!(alert["evidence"]["rhost_claimed"], forged, "{alert}");
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("uid {NOBODY}"))),
        "{alert}"
    );
    let blocks = vigil_json(&cfg, &["blocks", "list"]);
    assert!(!blocks.to_string().contains(forged), "{blocks}");
    assert!(agent.stop());
}

#[test]
fn a_listener_failing_to_open_a_system_binary_does_not_make_its_next_run_a_download() {
    let dir = TempDir::new("tfw");
    let books = TempDir::new("tfw-books");
    std::fs::copy(
        shipped_playbooks().join("malware_containment.yaml"),
        books.0.join("malware_containment.yaml"),
    )
    .expect("copy playbook");
    // Dry-run: on a build without the fix this test must fail by an
    // alert, not by quarantining /usr/bin/id.
    let cfg_text = config("dry-run", &books.0, &dir, "enforce:\n  enabled: false\n");
    let mut agent = Agent::start_in(None, &cfg_text, dir);

    // A directory nobody may write to, for the open that does succeed.
    let scratch = TempDir::new("tfw-scratch");
    let mut perms = std::fs::metadata(&scratch.0)
        .expect("scratch")
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o777);
    std::fs::set_permissions(&scratch.0, perms).expect("chmod");
    let allowed = scratch.0.join("own-file");
    let script = format!(
        "import os, socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         try:\n    os.open('/usr/bin/id', os.O_WRONLY | os.O_CREAT)\n    print('opened')\n\
         except PermissionError:\n    print('denied')\n\
         fd = os.open({:?}, os.O_WRONLY | os.O_CREAT, 0o644); os.close(fd)\n",
        allowed.display().to_string()
    );
    let out = as_nobody(&mut Command::new("/usr/bin/python3"))
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "denied",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The probe is live: the open that succeeded is reported.
    let own = allowed.display().to_string();
    let w = agent.wait_for("file_write", |r| r["path"] == own.as_str());

    // Root runs the binary the listener could not write.
    let id = Command::new("/usr/bin/id").output().expect("id");
    assert!(id.status.success());
    agent.wait_for("process_exec", |r| {
        r["exe"] == "/usr/bin/id" && r["uid"] == 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let records = agent.records();
    let alerts: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "alert" && has_technique(r, "T1204.002"))
        .collect();
    assert!(
        alerts.is_empty(),
        "T1204.002 from a failed open: {alerts:?}"
    );
    let writes: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "file_write" && r["path"] == "/usr/bin/id")
        .collect();
    assert!(writes.is_empty(), "a refused open was reported: {writes:?}");
    // What was written is known by its identity, not its name.
    assert!(w["file"]["ino"].as_u64().is_some_and(|i| i > 0), "{w}");
    let actions: Vec<&Value> = records.iter().filter(|r| r["kind"] == "action").collect();
    assert!(actions.is_empty(), "{actions:?}");
    assert!(agent.stop());
}

/// A copy of /bin/sleep downloaded by a network-facing process into `target`.
fn download_sleep(topo: &Topology, port: u16, target: &str, scratch: &Path) {
    let payload = scratch.join(format!("payload-{port}"));
    std::fs::copy("/bin/sleep", &payload).expect("payload");
    topo.download(port, &payload.to_string_lossy(), target);
}

/// Files removed on drop.
struct Remove(Vec<String>);

impl Drop for Remove {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A playbook that kills and quarantines what a T1204.002 alert names,
/// with `allow` (a step line) on both steps.
fn contain_playbook(books: &Path, allow: &str) {
    std::fs::write(
        books.join("contain.yaml"),
        format!(
            "# Test playbook — ATT&CK T1204.002 Malicious File\nversion: 1\nname: contain\n\
             trigger:\n  detectors: [process]\n  techniques: [T1204.002]\nsteps:\n\
             \x20 - id: kill\n    action: kill_process\n{allow}\
             \x20 - id: quarantine\n    action: quarantine_file\n{allow}"
        ),
    )
    .expect("playbook");
}

#[test]
fn protected_files_are_neither_killed_nor_quarantined_unless_the_playbook_names_them() {
    let topo = Topology::new("tpr", 242);
    // Under /usr/, protected by default: where a real download would
    // never be contained by deleting it on an alert's word.
    let pid = std::process::id();
    let (refused, named) = (
        format!("/usr/local/bin/vigil-tpr-{pid}-refused"),
        format!("/usr/local/bin/vigil-tpr-{pid}-named"),
    );
    let _rm = Remove(vec![refused.clone(), named.clone()]);
    let scratch = TempDir::new("tpr-scratch");
    let enforce_off = "enforce:\n  enabled: false\n";

    // A playbook that does not name the file: both steps refused, the
    // file and the process stay.
    let books = TempDir::new("tpr-books");
    contain_playbook(&books.0, "");
    let dir = TempDir::new("tpr");
    let mut agent = Agent::start_in(
        Some(&topo.h),
        &config("enforce", &books.0, &dir, enforce_off),
        dir,
    );
    download_sleep(&topo, 9301, &refused, &scratch.0);
    agent.wait_for("file_write", |r| r["path"] == refused.as_str());
    let mut victim = GroupGuard::spawn(Command::new(&refused).arg("60"));
    let kill = agent.wait_for("action", |r| r["action"] == "kill");
    assert_eq!(kill["state"], "refused", "{kill}");
    assert!(
        kill["detail"]
            .as_str()
            .is_some_and(|d| d.contains("protected prefix /usr/")),
        "{kill}"
    );
    let q = agent.wait_for("action", |r| r["action"] == "quarantine");
    assert_eq!(q["state"], "refused", "{q}");
    assert!(Path::new(&refused).exists(), "a protected file was moved");
    assert!(victim.0.try_wait().expect("try_wait").is_none(), "killed");
    let _ = victim.0.kill();
    assert!(agent.stop());

    // A playbook that names it exactly may act on it.
    let books = TempDir::new("tpr-books2");
    contain_playbook(&books.0, &format!("    allow_protected: [{named}]\n"));
    let dir = TempDir::new("tpr2");
    let mut agent = Agent::start_in(
        Some(&topo.h),
        &config("enforce", &books.0, &dir, enforce_off),
        dir,
    );
    download_sleep(&topo, 9302, &named, &scratch.0);
    agent.wait_for("file_write", |r| r["path"] == named.as_str());
    let mut named_victim = GroupGuard::spawn(Command::new(&named).arg("60"));
    let kill = agent.wait_for("action", |r| r["action"] == "kill");
    assert_eq!(kill["state"], "applied", "{kill}");
    use std::os::unix::process::ExitStatusExt;
    let status = named_victim.0.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let q = agent.wait_for("action", |r| r["action"] == "quarantine");
    assert_eq!(q["state"], "applied", "{q}");
    assert!(!Path::new(&named).exists());
    assert!(agent.stop());
}

/// Starts `exe 600` and returns it.
fn spawn(exe: &Path) -> Child {
    Command::new(exe)
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn")
}

#[test]
fn an_approved_kill_does_not_hit_a_process_that_reused_the_pid() {
    let dir = TempDir::new("tkid");
    let books = TempDir::new("tkid-books");
    std::fs::write(
        books.0.join("ask_then_kill.yaml"),
        "# Test playbook — ATT&CK T1204 User Execution\nversion: 1\nname: ask_then_kill\n\
         trigger:\n  detectors: [process]\n  techniques: [T1204]\nsteps:\n\
         \x20 - id: ask\n    action: require_approval\n    timeout: 10m\n    on_timeout: deny\n\
         \x20 - id: kill\n    action: kill_process\n",
    )
    .expect("playbook");
    let cfg_text = config("enforce", &books.0, &dir, "enforce:\n  enabled: false\n");
    let mut agent = Agent::start_in(None, &cfg_text, dir);
    let cfg = agent.dir.0.join("vigil.yaml");
    // Run a hidden file from /tmp: an exec from a world-writable directory
    // with a second signal, so an alert, not evidence (T1204).
    let scratch = TempDir::new("tkid-exe");
    let exe = scratch.0.join(".worker");
    std::fs::copy("/bin/sleep", &exe).expect("copy");
    let first = spawn(&exe);
    let pid = first.id();
    let mut first = ChildGuard(first);
    let asked = agent.wait_for("decision", |r| r["decision"] == "approval_requested");
    let alert = agent
        .records()
        .into_iter()
        .find(|r| r["kind"] == "alert" && r["id"] == asked["alert"])
        .expect("the alert behind the approval");
    assert_eq!(alert["entities"]["pid"], pid, "{alert}");

    // While the approval waits, the process ends and another one, running
    // the same executable, takes its pid.
    let _ = first.0.kill();
    let _ = first.0.wait();
    // Start times tick every 10 ms: let one pass so the two can differ.
    std::thread::sleep(Duration::from_millis(30));
    let mut innocent = None;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).expect("ns_last_pid");
        let mut c = spawn(&exe);
        if c.id() == pid {
            innocent = Some(c);
            break;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let mut innocent = ChildGuard(innocent.expect("could not reuse the pid in 50 tries"));

    let approvals = vigil_json(&cfg, &["approvals"]);
    let id = approvals
        .as_array()
        .and_then(|l| l.iter().find(|a| a["incident"] == asked["incident"]))
        .and_then(|a| a["id"].as_str())
        .unwrap_or_else(|| panic!("approval not listed: {approvals}"))
        .to_string();
    vigil_json(&cfg, &["approve", &id]);
    let kill = agent.wait_for("action", |r| r["action"] == "kill");
    assert_eq!(kill["state"], "refused", "{kill}");
    assert!(
        kill["detail"]
            .as_str()
            .is_some_and(|d| d.contains("another process")),
        "{kill}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        innocent.0.try_wait().expect("try_wait").is_none(),
        "the process that reused the pid was killed"
    );
    // The alert carried the identity the kill checked.
    assert!(alert["entities"]["start_time"].is_u64(), "{alert}");
    assert!(agent.stop());
}

/// The cgroup v2 hierarchy (`/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_root() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// A cgroup made for the test (and system.slice, if the host had none),
/// emptied, thawed and removed on drop.
struct TestCgroup {
    path: PathBuf,
    made_parent: Option<PathBuf>,
    root: PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.freeze"), "0");
        if let Ok(procs) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
        if let Some(p) = &self.made_parent {
            let _ = std::fs::remove_dir(p);
        }
    }
}

#[test]
fn kill_freeze_refuses_the_hosts_service_slices() {
    require_root();
    let root = cgroup2_root();
    let slice = root.join("system.slice");
    let made_parent = (!slice.exists()).then(|| {
        std::fs::create_dir(&slice).expect("system.slice");
        slice.clone()
    });
    let cg = TestCgroup {
        path: slice.join(format!("vigil-test-{}.service", std::process::id())),
        made_parent,
        root: root.clone(),
    };
    std::fs::create_dir(&cg.path).expect("test service cgroup");
    let mut service = ChildGuard(
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let pid = service.0.id();
    std::fs::write(cg.path.join("cgroup.procs"), pid.to_string()).expect("move into the service");

    let dir = TempDir::new("tfz");
    let cfg = dir.0.join("c.yaml");
    std::fs::write(&cfg, format!("state_dir: {}\n", dir.0.display())).expect("cfg");
    let out = Command::new(vigil_bin())
        .args(["kill", &pid.to_string(), "--freeze", "--config"])
        .arg(&cfg)
        .output()
        .expect("vigil kill --freeze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "froze a system service: {text}");
    let act: Value = serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "no action record ({e}): {text} / {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(act["action"], "freeze", "{act}");
    assert_eq!(act["state"], "refused", "{act}");
    assert!(
        act["detail"]
            .as_str()
            .is_some_and(|d| d.contains("system.slice")),
        "{act}"
    );
    let frozen = std::fs::read_to_string(cg.path.join("cgroup.freeze")).expect("cgroup.freeze");
    assert_eq!(frozen.trim(), "0", "the service's cgroup was frozen");
    // And PID 1 is never frozen, wherever it lives.
    let out = Command::new(vigil_bin())
        .args(["kill", "1", "--freeze", "--config"])
        .arg(&cfg)
        .output()
        .expect("vigil kill --freeze 1");
    assert!(!out.status.success());
    let _ = service.0.kill();
}

#[test]
fn a_local_user_cannot_use_the_control_socket() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    // The socket and a client config in a directory anyone may enter (the
    // agent's own state directory is private).
    let open = TempDir::new("tctl-open");
    std::fs::set_permissions(&open.0, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let books = open.0.join("books");
    std::fs::create_dir(&books).expect("playbooks dir");
    let sock = open.0.join("vigil.sock");
    let agent = Agent::start_in(
        None,
        &format!(
            "stats_interval_s: 1\nmetrics:\n  listen: \"\"\nenforce:\n  enabled: false\n\
             playbooks:\n  dir: {}\ncontrol:\n  socket: {}\n",
            books.display(),
            sock.display()
        ),
        TempDir::new("tctl"),
    );
    let client = open.0.join("client.yaml");
    std::fs::write(&client, format!("control:\n  socket: {}\n", sock.display())).expect("cfg");
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let status = |nobody: bool| {
        let mut c = Command::new(vigil_bin());
        c.args(["status", "--json", "--config"]).arg(&client);
        if nobody {
            as_nobody(&mut c);
        }
        c.output().expect("vigil status")
    };
    // The socket's mode (0600) keeps other users out.
    let out = status(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody reached the socket: {err}");
    assert!(err.contains("ermission denied"), "{err}");
    // Opened up by mistake, the peer's credentials still do.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = status(true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody was answered: {err}");
    assert!(err.contains("root-only"), "{err}");
    assert!(
        agent.stderr().contains("refused a request from uid 65534"),
        "{}",
        agent.stderr()
    );
    // Root is answered.
    let out = status(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
